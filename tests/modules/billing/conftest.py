"""Fixtures for billing tests: the module's settings, its service, organizations and the worker."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from uuid import UUID

import httpx
import pytest

from splitstone.kernel.clock import ManualClock
from splitstone.kernel.container import Container
from splitstone.kernel.events import EventRecorder
from splitstone.kernel.messaging.worker import Worker
from splitstone.kernel.settings import ModuleSettings
from splitstone.modules.billing.service import BillingService
from splitstone.modules.billing.settings import BillingSettings
from splitstone.modules.notifications.settings import NotificationsSettings
from tests.modules.auth.conftest import SignedIn, Users
from tests.modules.auth.org_helpers import create_org


@pytest.fixture
def billing_settings() -> BillingSettings:
    """The sandbox without outgoing webhooks (tests that need them start a server and set the URL),
    invoices finalized as soon as a period ends."""
    return BillingSettings(sandbox_webhook_url=None, invoice_finalize_delay_seconds=0)


@pytest.fixture
def module_settings(billing_settings: BillingSettings, tmp_path: Path) -> dict[str, ModuleSettings]:
    return {
        "billing": billing_settings,
        "notifications": NotificationsSettings(email_backend="file", mail_dir=tmp_path / "mail"),
    }


@pytest.fixture
def billing(container: Container) -> BillingService:
    service = container.implementations["billing"]
    assert isinstance(service, BillingService)
    return service


@pytest.fixture
def worker(container: Container) -> Worker:
    """Not started: call `await worker.settle()` to relay, handle and run everything due now."""
    return container.worker()


@pytest.fixture
def users(client: httpx.AsyncClient, events: EventRecorder) -> Users:
    return Users(client, events)


@dataclass
class Org:
    id: UUID
    owner: SignedIn
    users: Users
    clock: ManualClock
    _token: tuple[str, datetime] | None = None

    @property
    def base(self) -> str:
        return f"/api/v1/orgs/{self.id}/billing"

    async def headers(self) -> dict[str, str]:
        """The owner's `Authorization`, signed in again once the test clock has passed its expiry."""
        if self._token is None or self.clock.now() >= self._token[1]:
            tokens = await self.users.login(self.owner.email, self.owner.password)
            self._token = (tokens["access_token"], self.clock.now() + timedelta(minutes=10))
        return {"Authorization": f"Bearer {self._token[0]}"}


@pytest.fixture
def new_org(client: httpx.AsyncClient, users: Users, worker: Worker, clock: ManualClock):  # type: ignore[no-untyped-def]
    """`await new_org()`: an organization with a signed-in owner, its billing account opened (free plan)."""

    async def make(name: str = "Acme") -> Org:
        owner = await users.signed_in()
        org_id = UUID(await create_org(client, owner, name))
        await worker.settle()
        return Org(id=org_id, owner=owner, users=users, clock=clock)

    return make
