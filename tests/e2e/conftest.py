"""A real server for black-box scenarios: uvicorn on a free loopback port, in a background thread.

The server is built by the same composition root as production, with an event recorder so scenarios
can read the tokens that the notifications module would otherwise email.
"""

from __future__ import annotations

import asyncio
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


@dataclass
class RunningServer:
    base_url: str
    events: EventRecorder


@pytest.fixture
def server(settings: Settings) -> Iterator[RunningServer]:
    events = EventRecorder()
    container = Container.build(settings, MODULES, recorder=events)
    app = create_app(container)
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None, access_log=False, lifespan="on")
    uv = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: asyncio.run(uv.serve()), name="e2e-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not uv.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the e2e server did not start")
        time.sleep(0.02)
    port = uv.servers[0].sockets[0].getsockname()[1]
    try:
        yield RunningServer(base_url=f"http://127.0.0.1:{port}", events=events)
    finally:
        uv.should_exit = True
        thread.join(timeout=20)


@pytest.fixture
async def http(server: RunningServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
        yield client
