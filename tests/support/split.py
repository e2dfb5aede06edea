"""The split topology for tests: three services on PostgreSQL (each module with its own role that owns
only its schema), NATS JetStream, and real nginx in front, as `splitstone up` would run them.

`SplitDeployment` prepares the database, roles and topology file; `up()` runs the whole thing through
`splitstone up`, while `start(service)` / `stop(service)` run services one by one (with nginx from
`splitstone topology nginx`), so a test can stop one and start it again.
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
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx

from splitstone.kernel.provisioning import provision_module_roles
from splitstone.kernel.proxy.nginx import find_nginx
from splitstone.kernel.topology import Topology
from tests.support.mailbox import free_port
from tests.support.passwords import CHEAP_ARGON2_ENV

PG_ADMIN_DSN = os.environ.get("SPLITSTONE_TEST_PG_DSN", "postgresql://root@127.0.0.1:5432/test")
# The services of the shipped split topology, and their modules.
SERVICES = {
    name: service.modules
    for name, service in Topology.load(
        Path(__file__).parents[2] / "topologies" / "split.toml", environ={}
    ).services.items()
}
MODULES = [m for modules in SERVICES.values() for m in modules]
START_SECONDS = 90.0


def _dsn(database: str, user: str = "root") -> str:
    base = PG_ADMIN_DSN.rsplit("/", 1)[0].split("://", 1)[1].split("@", 1)[1]
    return f"postgresql://{user}@{base}/{database}"


async def create_module_roles(database: str) -> dict[str, str]:
    """A database whose module schemas each belong to a role of their own; {module: SQLAlchemy URL}.

    Made by `splitstone db provision`'s function: a module's role owns its schema and nothing else. Role
    names begin with the database's name, so the run that made them drops them.
    """
    admin = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await admin.execute(f'CREATE DATABASE "{database}"')
    finally:
        await admin.close()
    urls = {
        m: _dsn(database, f"{database}_{m}").replace("postgresql://", "postgresql+asyncpg://", 1)
        for m in MODULES
    }
    await provision_module_roles(PG_ADMIN_DSN, urls)
    return urls


async def drop_module_roles(database: str) -> None:
    admin = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        for module in MODULES:
            await admin.execute(f'DROP ROLE IF EXISTS "{database}_{module}"')
    finally:
        await admin.close()


def write_topology(path: Path, urls: Mapping[str, str], ports: Mapping[str, int], public_port: int) -> None:
    lines = ["version = 1", f'public_url = "http://127.0.0.1:{public_port}"', 'events = "nats"', ""]
    for service, modules in SERVICES.items():
        listed = ", ".join(f'"{m}"' for m in modules)
        lines += [
            f"[services.{service}]",
            f"modules = [{listed}]",
            f'url = "http://127.0.0.1:{ports[service]}"',
            "",
            f"[services.{service}.database_urls]",
            *(f'{m} = "{urls[m]}"' for m in modules),
            "",
        ]
    path.write_text("\n".join(lines))


@dataclass
class SplitDeployment:
    """One split deployment in a folder of its own; see the module docstring."""

    root: Path
    smtp_port: int
    nats_url: str
    database: str = field(default_factory=lambda: f"splitstone_s_{os.getpid()}_{secrets.token_hex(4)}")
    prefix: str = field(default_factory=lambda: f"s{os.getpid()}x{secrets.token_hex(4)}")
    ports: dict[str, int] = field(default_factory=lambda: {s: free_port() for s in SERVICES})
    public_port: int = field(default_factory=free_port)
    service_token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    processes: dict[str, list[subprocess.Popen[bytes]]] = field(default_factory=dict)
    proxy: subprocess.Popen[bytes] | None = None

    @property
    def topology(self) -> Path:
        return self.root / "split.toml"

    @property
    def public_url(self) -> str:
        return f"http://127.0.0.1:{self.public_port}"

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.ports[service]}"

    async def prepare(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        urls = await create_module_roles(self.database)
        write_topology(self.topology, urls, self.ports, self.public_port)

    async def destroy(self) -> None:
        self.shutdown()
        await drop_module_roles(self.database)

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SPLITSTONE_")}
        env.update(
            SPLITSTONE_ENV="test",
            SPLITSTONE_DATA_DIR=str(self.root / "data"),
            SPLITSTONE_LOG_FORMAT="console",
            SPLITSTONE_NATS_URL=self.nats_url,
            SPLITSTONE_NATS_STREAM_PREFIX=self.prefix,
            SPLITSTONE_EVENT_TRANSPORT="nats",
            # Links in emails name the public URL; the scenarios expect the default, as on the monoliths.
            SPLITSTONE_PUBLIC_BASE_URL="http://127.0.0.1:8000",
            SPLITSTONE_SERVICE_TOKEN=self.service_token,
            SPLITSTONE_WORKER_POLL_SECONDS="0.5",
            SPLITSTONE_NOTIFICATIONS_EMAIL_BACKEND="smtp",
            SPLITSTONE_NOTIFICATIONS_SMTP_HOST="127.0.0.1",
            SPLITSTONE_NOTIFICATIONS_SMTP_PORT=str(self.smtp_port),
            SPLITSTONE_NOTIFICATIONS_SMTP_SECURITY="none",
            SPLITSTONE_NOTIFICATIONS_WEBHOOK_ALLOW_PRIVATE_TARGETS="true",
            SPLITSTONE_BILLING_SANDBOX_WEBHOOK_URL=f"{self.public_url}/api/v1/billing/webhooks/sandbox",
            SPLITSTONE_BILLING_SANDBOX_SETTLE_SECONDS="0.5",
            NO_COLOR="1",
            **CHEAP_ARGON2_ENV,
        )
        return env

    # --- the whole deployment through `splitstone up` ---------------------------------------------------

    def up(self, env: dict[str, str]) -> None:
        log = (self.root / "up.log").open("ab")
        self.processes["up"] = [
            subprocess.Popen(  # noqa: S603 (our own CLI)
                [sys.executable, "-m", "splitstone", "up", str(self.topology), "--proxy", "nginx"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.root,
                start_new_session=True,
            )
        ]
        self.wait_ready([*SERVICES], log_name="up.log")

    # --- service by service -----------------------------------------------------------------------------

    def migrate(self, env: dict[str, str]) -> None:
        for service in SERVICES:
            self._run(["db", "upgrade", "--topology", str(self.topology), "--service", service], env)

    def start(self, service: str, env: dict[str, str]) -> None:
        """The service's API (without worker) and its worker, as two processes."""
        log = (self.root / f"{service}.log").open("ab")
        common = ["--topology", str(self.topology), "--service", service]
        api = [*common, "--host", "127.0.0.1", "--port", str(self.ports[service]), "--no-worker"]
        self.processes[service] = [
            subprocess.Popen(  # noqa: S603 (our own CLI)
                [sys.executable, "-m", "splitstone", *argv],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.root,
                start_new_session=True,
            )
            for argv in (["serve", *api], ["worker", *common])
        ]

    def stop(self, service: str, sig: signal.Signals = signal.SIGTERM) -> None:
        for process in self.processes.pop(service, []):
            _end(process, sig)

    def start_proxy(self, env: dict[str, str]) -> None:
        nginx = find_nginx() or "nginx"
        prefix = self.root / "nginx"
        prefix.mkdir(exist_ok=True)
        config = prefix / "nginx.conf"
        self._run(["topology", "nginx", str(self.topology), "-o", str(config), "--prefix", str(prefix)], env)
        self.proxy = subprocess.Popen(  # noqa: S603 (nginx with our generated config)
            [nginx, "-p", str(prefix), "-c", str(config), "-g", "daemon off;"],
            stdout=(self.root / "nginx.log").open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self, services: list[str], *, log_name: str | None = None) -> None:
        deadline = time.monotonic() + START_SECONDS
        pending = list(services)
        last = ""
        while pending:
            service = pending[0]
            try:
                response = httpx.get(f"{self.url(service)}/readyz", timeout=2)
                if response.status_code == 200:
                    pending.pop(0)
                    continue
                last = response.text
            except httpx.HTTPError as error:
                last = repr(error)
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"service {service} not ready within {START_SECONDS} s: {last}\n{self.logs(log_name)}"
                )
            time.sleep(0.2)
        while True:  # and the proxy in front of them
            try:
                if httpx.get(f"{self.public_url}/api/v1/billing/plans", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError as error:
                last = repr(error)
            if time.monotonic() > deadline:
                raise RuntimeError(f"the proxy did not answer within {START_SECONDS} s: {last}")
            time.sleep(0.2)

    def logs(self, name: str | None = None, tail: int = 80) -> str:
        files = [self.root / name] if name else sorted(self.root.glob("*.log"))
        parts = []
        for path in files:
            if path.exists():
                lines = path.read_text(errors="replace").splitlines()[-tail:]
                parts.append(f"--- {path.name}\n" + "\n".join(lines))
        return "\n".join(parts)

    def shutdown(self) -> None:
        for service in list(self.processes):
            self.stop(service)
        if self.proxy is not None:
            _end(self.proxy, signal.SIGQUIT)
            self.proxy = None

    def _run(self, argv: list[str], env: dict[str, str]) -> None:
        done = subprocess.run(  # noqa: S603 (our own CLI)
            [sys.executable, "-m", "splitstone", *argv],
            env=env,
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"splitstone {' '.join(argv)} failed:\n{done.stdout}\n{done.stderr}")


def _end(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


@contextlib.contextmanager
def split_deployment(root: Path, smtp_port: int, nats_url: str) -> Iterator[SplitDeployment]:
    deployment = SplitDeployment(root=root, smtp_port=smtp_port, nats_url=nats_url)
    asyncio.run(deployment.prepare())
    try:
        yield deployment
    finally:
        asyncio.run(deployment.destroy())
