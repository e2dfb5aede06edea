"""A real deployment for black-box scenarios, reached over HTTP only.

Every scenario runs against three deployments (the `deployment` parameter, see tests/conftest.py):
- `sqlite-monolith`: one uvicorn server in a background thread, events in-process;
- `postgres-monolith`: the same on PostgreSQL, events through NATS JetStream (the production pairing);
- `postgres-split`: `splitstone up` of a three-service topology (identity = auth, core = projects +
  billing, notify = notifications), each service with its API and its worker as processes of their own,
  each module connected as a role that owns only its schema, events through NATS, real nginx in front.

Each sends email to a real SMTP server of its own (`server.mailbox`), where scenarios read their links.
Scenarios use only `http` and `server.mailbox`, so nothing of a deployment's insides leaks in.

A deployment is started once for the run of consecutive scenarios on it, not once a scenario (a split
one takes some 14 s to start): scenarios share it, so each uses email addresses and names of its own.
It stops when the next test is on another deployment, or needs none.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from splitstone.bootstrap import MODULES
from splitstone.kernel.app import create_app
from splitstone.kernel.container import Container
from splitstone.kernel.events import EventRecorder
from splitstone.kernel.proxy.nginx import find_nginx
from splitstone.kernel.settings import Environment, Settings
from splitstone.modules.auth.settings import AuthSettings
from splitstone.modules.billing.settings import BillingSettings
from splitstone.modules.notifications.settings import NotificationsSettings
from tests.conftest import _admin, _asyncpg_dsn, _sqlalchemy_url, _test_database_name, require_service
from tests.kernel.messaging.conftest import (
    NATS_URL,
    connect,
    delete_streams,
    jetstream_answers,
    stream_names,
)
from tests.support.mailbox import Mailbox, free_port, smtp_server
from tests.support.passwords import CHEAP_ARGON2
from tests.support.servers import serve_in_thread
from tests.support.split import split_deployment


@dataclass
class RunningServer:
    base_url: str
    mailbox: Mailbox
    deployment: str
    events: EventRecorder | None = None
    """Events committed in the server's process: only the monoliths have one to look into."""


@dataclass
class _Shared:
    """The deployment the current run of scenarios shares, and what stops it."""

    key: tuple[str, str]
    server: RunningServer
    resources: contextlib.ExitStack


_shared: _Shared | None = None


@pytest.fixture
def server(request: pytest.FixtureRequest, backend: str, deployment: str) -> RunningServer:
    """The running deployment for (`backend`, `deployment`), started by the first scenario that needs it."""
    global _shared
    key = (backend, deployment)
    if _shared is not None and _shared.key == key:
        return _shared.server
    _stop_shared()
    resources = contextlib.ExitStack()
    try:
        mailbox = resources.enter_context(smtp_server())
        root = request.getfixturevalue("tmp_path_factory").mktemp(f"e2e-{backend}-{deployment}")
        if deployment == "split":
            running = _split(resources, root, mailbox)
        else:
            template = request.getfixturevalue("migrated_template")
            running = _monolith(resources, backend, template, root, mailbox, deployment)
    except BaseException:
        resources.close()
        raise
    _shared = _Shared(key, running, resources)
    return running


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    if _shared is not None and (nextitem is None or _deployment_of(nextitem) != _shared.key):
        _stop_shared()


def pytest_sessionfinish() -> None:
    _stop_shared()  # a run stopped early (-x, Ctrl-C) leaves no processes behind


def _deployment_of(item: pytest.Item) -> tuple[str, str] | None:
    callspec = getattr(item, "callspec", None)
    if callspec is None or "server" not in getattr(item, "fixturenames", ()):
        return None
    return (callspec.params.get("backend"), callspec.params.get("deployment"))


def _stop_shared() -> None:
    global _shared
    if _shared is not None:
        stopping, _shared = _shared, None
        stopping.resources.close()


def _split(resources: contextlib.ExitStack, root: Path, mailbox: Mailbox) -> RunningServer:
    require_service(asyncio.run(jetstream_answers(NATS_URL)), f"NATS with JetStream at {NATS_URL}")
    require_service(find_nginx() is not None, "nginx")
    split = resources.enter_context(split_deployment(root / "split", mailbox.port, NATS_URL))
    resources.callback(lambda: asyncio.run(_delete_streams(split.prefix)))
    resources.callback(split.shutdown)
    try:
        split.up(split.env())
    except BaseException:
        print(split.logs())  # shown with the failure
        raise
    return RunningServer(base_url=split.public_url, mailbox=mailbox, deployment="split")


async def _delete_streams(prefix: str) -> None:
    client = await connect(NATS_URL)
    try:
        await delete_streams(client, await stream_names(client, f"{prefix}.events.>"))
    finally:
        await client.close()


def _monolith(
    resources: contextlib.ExitStack,
    backend: str,
    template: str,
    root: Path,
    mailbox: Mailbox,
    deployment: str,
) -> RunningServer:
    database_url = _database_copy(resources, backend, template, root)
    settings = Settings(env=Environment.TEST, data_dir=root / "data", database_url=database_url)
    if backend == "postgres":  # events through NATS JetStream under a prefix of the deployment's own
        require_service(asyncio.run(jetstream_answers(NATS_URL)), f"NATS with JetStream at {NATS_URL}")
        prefix = f"t{os.getpid()}x{secrets.token_hex(5)}"
        settings = settings.model_copy(
            update={"event_transport": "nats", "nats_url": NATS_URL, "nats_stream_prefix": prefix}
        )
        resources.callback(lambda: asyncio.run(_delete_streams(prefix)))
    events = EventRecorder()
    notifications = NotificationsSettings(
        email_backend="smtp",
        smtp_host="127.0.0.1",
        smtp_port=mailbox.port,
        smtp_security="none",
        webhook_allow_private_targets=True,  # the scenarios' webhook receivers listen on loopback
    )
    port = free_port()
    billing = BillingSettings(  # the sandbox's webhooks come back to this server, as in production
        sandbox_webhook_url=f"http://127.0.0.1:{port}/api/v1/billing/webhooks/sandbox",
        sandbox_settle_seconds=0.5,
    )
    container = Container.build(
        settings,
        MODULES,
        recorder=events,
        module_settings={
            "notifications": notifications,
            "billing": billing,
            "auth": AuthSettings(**CHEAP_ARGON2),
        },
    )
    app = create_app(container, run_worker=True)
    running = resources.enter_context(serve_in_thread(app, port=port, lifespan="on", name="e2e-server"))
    return RunningServer(base_url=running.base_url, mailbox=mailbox, deployment=deployment, events=events)


def _database_copy(resources: contextlib.ExitStack, backend: str, template: str, root: Path) -> str:
    """A database of the deployment's own, copied from the migrated template (as `database_url`)."""
    if backend == "sqlite":
        folder = root / "db"
        shutil.copytree(template, folder)
        return f"sqlite+aiosqlite:///{folder / 'splitstone.db'}"
    name = _test_database_name("t")
    asyncio.run(_admin(f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))
    resources.callback(lambda: asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')))
    return _sqlalchemy_url(_asyncpg_dsn(name))


@pytest.fixture
async def http(server: RunningServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
        yield client
