"""An ASGI app served by uvicorn on a loopback port, for tests that need a real socket.

`serve_in_thread` runs the server in a thread of its own (with its own event loop): for apps whose
state is not tied to the test's loop. `serve_in_loop` runs it as a task in the test's own event loop:
for apps whose connection pools or events belong to that loop, as in `splitstone serve`.
`start_in_thread` is `serve_in_thread` without the block, for servers a test starts and stops itself.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass

import uvicorn
from starlette.types import ASGIApp
from uvicorn.config import LifespanType

from tests.support.mailbox import free_port

HOST = "127.0.0.1"


def _server(app: ASGIApp, port: int, lifespan: LifespanType, graceful_seconds: int | None) -> uvicorn.Server:
    config = uvicorn.Config(
        app,
        host=HOST,
        port=port,
        log_config=None,
        access_log=False,
        lifespan=lifespan,
        timeout_graceful_shutdown=graceful_seconds,
    )
    return uvicorn.Server(config)


async def _serve(server: uvicorn.Server) -> None:
    try:
        await server.serve()
    except SystemExit as exc:  # uvicorn's way to say it could not bind or start: not for the test's loop
        raise RuntimeError(f"uvicorn exited with status {exc.code}") from exc


@dataclass
class RunningApp:
    """A server running in `thread`; `stop()` ends it (again: nothing happens)."""

    port: int
    server: uvicorn.Server
    thread: threading.Thread
    stop_timeout: float = 20

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=self.stop_timeout)
        if self.thread.is_alive():
            raise RuntimeError(f"{self.thread.name} did not stop within {self.stop_timeout} s")


def start_in_thread(
    app: ASGIApp,
    *,
    port: int | None = None,
    lifespan: LifespanType = "off",
    name: str = "test-server",
    start_timeout: float = 20,
    stop_timeout: float = 20,
    graceful_seconds: int | None = None,
) -> RunningApp:
    """`app` served on `port` (a free one if None) by a thread named `name`, once it accepts connections."""
    port = free_port() if port is None else port
    server = _server(app, port, lifespan, graceful_seconds)
    failures: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(_serve(server))
        except BaseException as exc:
            failures.append(exc)
            raise

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout
    while not server.started:
        if not thread.is_alive():
            cause = failures[0] if failures else None
            raise RuntimeError(f"{name} on port {port} did not start: its thread ended") from cause
        if time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError(f"{name} on port {port} did not start within {start_timeout} s")
        time.sleep(0.01)
    return RunningApp(port, server, thread, stop_timeout)


@contextmanager
def serve_in_thread(
    app: ASGIApp,
    *,
    port: int | None = None,
    lifespan: LifespanType = "off",
    name: str = "test-server",
    start_timeout: float = 20,
    stop_timeout: float = 20,
    graceful_seconds: int | None = None,
) -> Iterator[RunningApp]:
    """`start_in_thread` for the length of the block; stopped at its end unless stopped already."""
    running = start_in_thread(
        app,
        port=port,
        lifespan=lifespan,
        name=name,
        start_timeout=start_timeout,
        stop_timeout=stop_timeout,
        graceful_seconds=graceful_seconds,
    )
    try:
        yield running
    finally:
        running.stop()


@dataclass
class RunningTask:
    """A server running as `task` in the test's event loop; `await stop()` ends it (again: nothing)."""

    port: int
    server: uvicorn.Server
    task: asyncio.Task[None]
    stop_timeout: float = 15

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    async def stop(self) -> None:
        self.server.should_exit = True
        await asyncio.wait_for(self.task, self.stop_timeout)


@asynccontextmanager
async def serve_in_loop(
    app: ASGIApp,
    *,
    port: int | None = None,
    lifespan: LifespanType = "off",
    start_timeout: float = 10,
    stop_timeout: float = 15,
    graceful_seconds: int | None = None,
) -> AsyncIterator[RunningTask]:
    """`app` served on `port` (a free one if None) by a task of the running loop, for the block."""
    port = free_port() if port is None else port
    server = _server(app, port, lifespan, graceful_seconds)
    task = asyncio.create_task(_serve(server))
    deadline = time.monotonic() + start_timeout
    while not server.started:
        if task.done():
            cause = None if task.cancelled() else task.exception()
            raise RuntimeError(f"the server on port {port} did not start") from cause
        if time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError(f"the server on port {port} did not start within {start_timeout} s")
        await asyncio.sleep(0.01)
    running = RunningTask(port, server, task, stop_timeout)
    try:
        yield running
    finally:
        await running.stop()
