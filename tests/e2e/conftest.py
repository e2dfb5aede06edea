"""A real deployment for black-box scenarios, reached over HTTP only.

Every scenario runs against three deployments (the `deployment` parameter, see tests/conftest.py):
- `sqlite-monolith`: one uvicorn server in a background thread, events in-process;
- `postgres-monolith`: the same on PostgreSQL, events through NATS JetStream (the production pairing);
- `postgres-split`: `splitstone up` of a three-service topology (identity = auth, core = projects +
  billing, notify = notifications), each service with its API and its worker as processes of their own,
  each module connected as a role that owns only its schema, events through NATS, real nginx in front.

Each sends email to a real SMTP server of the test's own (`server.mailbox`), where scenarios read their
links. Scenarios use only `http` and `server.mailbox`, so nothing of a deployment's insides leaks in.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from splitstone.bootstrap import MODULES
from splitstone.kernel.app import create_app
from splitstone.kernel.container import Container
from splitstone.kernel.events import EventRecorder
from splitstone.kernel.proxy.nginx import find_nginx
from splitstone.kernel.settings import Settings
from splitstone.modules.billing.settings import BillingSettings
from splitstone.modules.notifications.settings import NotificationsSettings
from tests.conftest import require_service
from tests.kernel.messaging.conftest import (
    NATS_URL,
    connect,
    delete_streams,
    jetstream_answers,
    stream_names,
)
from tests.support.mailbox import Mailbox, free_port, smtp_server
from tests.support.servers import serve_in_thread
from tests.support.split import split_deployment


@dataclass
class RunningServer:
    base_url: str
    mailbox: Mailbox
    deployment: str
    events: EventRecorder | None = None
    """Events committed in the server's process: only the monoliths have one to look into."""


@pytest.fixture
def mailbox() -> Iterator[Mailbox]:
    with smtp_server() as received:
        yield received


@pytest.fixture
async def e2e_settings(settings: Settings, backend: str) -> AsyncIterator[Settings]:
    """On PostgreSQL, events through NATS JetStream under a prefix of the test's own."""
    if backend != "postgres":
        yield settings
        return
    require_service(await jetstream_answers(NATS_URL), f"NATS with JetStream at {NATS_URL}")
    prefix = f"t{os.getpid()}x{secrets.token_hex(5)}"
    yield settings.model_copy(
        update={"event_transport": "nats", "nats_url": NATS_URL, "nats_stream_prefix": prefix}
    )
    await _delete_streams(prefix)


@pytest.fixture
def server(
    request: pytest.FixtureRequest, backend: str, deployment: str, mailbox: Mailbox, tmp_path: Path
) -> Iterator[RunningServer]:
    if deployment == "split":
        require_service(asyncio.run(jetstream_answers(NATS_URL)), f"NATS with JetStream at {NATS_URL}")
        require_service(find_nginx() is not None, "nginx")
        with split_deployment(tmp_path / "split", mailbox.port, NATS_URL) as split:
            try:
                split.up(split.env())
                yield RunningServer(base_url=split.public_url, mailbox=mailbox, deployment=deployment)
            except BaseException:
                print(split.logs())  # shown with the failure
                raise
            finally:
                split.shutdown()
                asyncio.run(_delete_streams(split.prefix))
        return
    yield from _monolith(request.getfixturevalue("e2e_settings"), mailbox, deployment)


async def _delete_streams(prefix: str) -> None:
    client = await connect(NATS_URL)
    try:
        await delete_streams(client, await stream_names(client, f"{prefix}.events.>"))
    finally:
        await client.close()


def _monolith(e2e_settings: Settings, mailbox: Mailbox, deployment: str) -> Iterator[RunningServer]:
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
        e2e_settings,
        MODULES,
        recorder=events,
        module_settings={"notifications": notifications, "billing": billing},
    )
    app = create_app(container, run_worker=True)
    with serve_in_thread(app, port=port, lifespan="on", name="e2e-server") as running:
        yield RunningServer(base_url=running.base_url, mailbox=mailbox, deployment=deployment, events=events)


@pytest.fixture
async def http(server: RunningServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
        yield client
