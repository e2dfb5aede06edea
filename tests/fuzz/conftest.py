"""Fixtures for fuzzing the whole API from its OpenAPI schema, in-process, as two real tenants."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from schemathesis.python import asgi

from splitstone.kernel.events import EventRecorder
from splitstone.kernel.settings import ModuleSettings
from splitstone.modules.auth.settings import AuthSettings
from splitstone.modules.billing.settings import BillingSettings
from splitstone.modules.notifications.settings import NotificationsSettings
from tests.fuzz.engine import Seed
from tests.fuzz.tenants import Tenant, sign_up


@pytest.fixture
def module_settings(tmp_path: Path) -> dict[str, ModuleSettings]:
    """No outgoing sandbox webhooks, mail written to files: nothing leaves the process. Sign-in limits
    raised (still on): a fuzzed logout ends the owner's session, who then signs in again, more often
    than a person would; the other limits stay as shipped (a 429 is an accepted answer)."""
    return {
        "auth": AuthSettings(login_rate_per_ip="10000/minute", login_rate_per_account="10000/minute"),
        "billing": BillingSettings(sandbox_webhook_url=None),
        "notifications": NotificationsSettings(email_backend="file", mail_dir=tmp_path / "mail"),
    }


@pytest.fixture
def served(app: FastAPI) -> Iterator[FastAPI]:
    """The app served by schemathesis' ASGI transport: one event loop thread runs every request (and
    the app's lifespan), so the databases are opened, used and closed on that loop."""
    yield app
    asgi.shutdown_lifespans()


@pytest.fixture
def tenants(served: FastAPI, events: EventRecorder) -> tuple[Tenant, Tenant]:
    """Org A and org B, each with its own owner, made through the public API."""
    with asgi.get_client(served) as http:
        return sign_up(http, events, "alpha"), sign_up(http, events, "bravo")


@pytest.fixture
def max_examples() -> int:
    """Examples per operation and phase: small in CI, `make fuzz` sets FUZZ_MAX_EXAMPLES much higher."""
    return int(os.environ.get("FUZZ_MAX_EXAMPLES", "5"))


@pytest.fixture
def fuzz_seed() -> Seed:
    """CI: seed 9, derandomized, no example database: a red run is the same run again, on any machine.
    `make fuzz` sets FUZZ_SEED=random: new inputs each time, the seed printed; FUZZ_SEED=<that seed>
    replays the run."""
    chosen = os.environ.get("FUZZ_SEED")
    if chosen is None:
        return Seed(9, derandomize=True)
    value = random.randrange(2**32) if chosen == "random" else int(chosen)
    print(f"\nFUZZ_SEED={value}")
    return Seed(value, derandomize=False)
