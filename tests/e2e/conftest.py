"""A real server for black-box scenarios: uvicorn on a free loopback port, in a background thread.

The server is built by the same composition root as production and runs its worker. It sends email to
a real SMTP server of the test's own (`server.mailbox`), where scenarios read their links. On
PostgreSQL its events travel through NATS JetStream (the production pairing); on SQLite, in-process.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import httpx
import pytest
import uvicorn

from splitstone.bootstrap import MODULES
from splitstone.kernel.app import create_app
from splitstone.kernel.container import Container
from splitstone.kernel.events import EventRecorder
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


@dataclass
class RunningServer:
    base_url: str
    events: EventRecorder
    mailbox: Mailbox


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
    client = await connect(NATS_URL)
    try:
        await delete_streams(client, await stream_names(client, f"{prefix}.events.>"))
    finally:
        await client.close()


@pytest.fixture
def server(e2e_settings: Settings, mailbox: Mailbox) -> Iterator[RunningServer]:
    events = EventRecorder()
    notifications = NotificationsSettings(
        email_backend="smtp", smtp_host="127.0.0.1", smtp_port=mailbox.port, smtp_security="none"
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
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_config=None, access_log=False, lifespan="on"
    )
    uv = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: asyncio.run(uv.serve()), name="e2e-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not uv.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the e2e server did not start")
        time.sleep(0.02)
    try:
        yield RunningServer(base_url=f"http://127.0.0.1:{port}", events=events, mailbox=mailbox)
    finally:
        uv.should_exit = True
        thread.join(timeout=20)


@pytest.fixture
async def http(server: RunningServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
        yield client
