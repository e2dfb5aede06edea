"""Split mode benchmark: what a remote contract call adds, and what splitting costs a request.

1. **A contract call, in-process and remote.** `AuthApi.authorize(principal, org_id, projects:read)` on a
   real auth module (a real user, owner of a real organization), called N times on the auth
   implementation in this process, and N times through `RemoteContracts` against auth's internal route,
   served by `splitstone serve` (uvicorn) in another process on loopback. The calls alternate, one at a
   time, after a warm-up. Also timed: `RemoteContracts.ping` (`GET /internal/auth`, no database), the
   HTTP round trip alone. Target: the remote call adds under 2 ms at p50.
2. **A request that crosses modules, monolith and split.** `GET /api/v1/orgs/{org_id}/projects`
   (projects asks auth to authorize), driven by concurrent clients for a fixed time against (a) the
   monolith (`splitstone serve`, every module in one process) and (b) the split: an identity service
   (auth) and a core service (projects, billing), each its own process, the request sent to core, core
   calling identity; then (a) again, which shows the machine's drift, and the monolith's figure is the
   mean of both. Same data: it is seeded through the monolith's public API, and each mode is started on
   the same database. Both serve without their workers (`--no-worker`); the split's events
   go through NATS JetStream (a stream prefix of the run's own, deleted at the end) since its services
   would otherwise refuse to start. Reported: requests/s, p50, p99, the split/monolith ratio, and the
   CPU time each serving process spent per request (from /proc), which the machine's load hides less.

    .venv/bin/python -m bench.split [--quick] [--calls 2000] [--seconds 10] [--concurrency 1,16]
                                    [--driver auto|wrk|httpx] [--database-url postgresql://root@127.0.0.1/test]

SQLite in a temporary folder by default; with --database-url, a fresh database is created on that
PostgreSQL server and dropped at the end. Needs NATS JetStream (SPLITSTONE_BENCH_NATS_URL, default
nats://127.0.0.1:4222). Uses `wrk` to drive the load when it is installed, else httpx clients in this
process. Results: bench/results/split.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from rich.console import Console
from rich.table import Table

from bench.common import NATS_URL, commit, delete_streams
from splitstone.bootstrap import MODULES
from splitstone.kernel.container import Container
from splitstone.kernel.remote import RemoteContracts
from splitstone.kernel.settings import Environment, Settings
from splitstone.modules.auth.api import AuthApi, Permission

RESULTS = Path(__file__).parent / "results" / "split.json"
TARGET_ADDED_P50_MS = 2.0
START_SECONDS = 60.0
PASSWORD = "granite quarry splits 7 ways"
SPLITSTONE = (sys.executable, "-m", "splitstone")
PROJECTS = 3  # the free plan's limit
TASKS_PER_PROJECT = 10

console = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 140)


@dataclass(frozen=True)
class Options:
    calls: int
    warmup_calls: int
    seconds: float
    concurrency: list[int]
    wrk: str | None
    """wrk's path, to drive the load with it; None: httpx clients in this process."""
    database_url: str | None
    """A PostgreSQL server's URL (a database is made there for the run); None: SQLite."""


@dataclass
class Latency:
    name: str
    calls: int
    p50_ms: float
    p99_ms: float
    mean_ms: float
    caller_cpu_ms: float | None = None
    """CPU time this process spent per call."""
    server_cpu_ms: float | None = None
    """CPU time the identity service spent per call."""


@dataclass
class Throughput:
    mode: str
    driver: str
    concurrency: int
    seconds: float
    requests: int
    errors: int
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    run: int = 1
    """Which run of the mode: the monolith runs before the split and after it."""
    server_cpu_ms: dict[str, float] | None = None
    """CPU time (user + system) each serving process of the mode spent per request."""
    client_cpu_ms: float | None = None
    """CPU time this process (the httpx clients) spent per request."""


@dataclass
class Seeded:
    access_token: str
    org_id: uuid.UUID

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}

    @property
    def path(self) -> str:
        return f"/api/v1/orgs/{self.org_id}/projects"


# -- processes --------------------------------------------------------------------------------------------


class Servers:
    """`splitstone` processes of this run, in a folder of its own; stops only those it started."""

    def __init__(self, root: Path, database_url: str | None) -> None:
        self.root = root
        self.data = root / "data"
        self.data.mkdir(parents=True, exist_ok=True)
        self.database_url = database_url
        self.prefix = f"benchsplit{secrets.token_hex(4)}"
        self.token = secrets.token_urlsafe(32)
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SPLITSTONE_")}
        env.update(
            SPLITSTONE_ENV="test",
            SPLITSTONE_DATA_DIR=str(self.data),
            SPLITSTONE_LOG_FORMAT="json",
            # The seeded token must outlive a long run.
            SPLITSTONE_AUTH_ACCESS_TOKEN_TTL_SECONDS="7200",
            NO_COLOR="1",
            **extra,
        )
        if self.database_url:
            env["SPLITSTONE_DATABASE_URL"] = self.database_url
        return env

    def split_env(self, topology: Path, service: str) -> dict[str, str]:
        return self.env(
            SPLITSTONE_TOPOLOGY=str(topology),
            SPLITSTONE_SERVICE=service,
            SPLITSTONE_SERVICE_TOKEN=self.token,
            SPLITSTONE_EVENT_TRANSPORT="nats",
            SPLITSTONE_NATS_URL=NATS_URL,
            SPLITSTONE_NATS_STREAM_PREFIX=self.prefix,
        )

    def migrate(self) -> None:
        done = subprocess.run(
            [*SPLITSTONE, "db", "upgrade"],
            env=self.env(),
            cwd=self.root,
            capture_output=True,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"splitstone db upgrade failed:\n{done.stdout.decode()}{done.stderr.decode()}")

    def start(self, name: str, port: int, env: dict[str, str]) -> str:
        """`splitstone serve --no-worker` on 127.0.0.1:`port`, logging to `<name>.log`; its URL."""
        with (self.root / f"{name}.log").open("ab") as log:  # the child writes to its own copy
            self.processes[name] = subprocess.Popen(
                [*SPLITSTONE, "serve", "--host", "127.0.0.1", "--port", str(port), "--no-worker"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.root,
                start_new_session=True,
            )
        return f"http://127.0.0.1:{port}"

    async def wait_ready(self, name: str, url: str) -> None:
        deadline = time.monotonic() + START_SECONDS
        last = ""
        async with httpx.AsyncClient(timeout=3, trust_env=False) as http:
            while True:
                process = self.processes[name]
                if process.poll() is not None:
                    raise RuntimeError(f"{name} exited with {process.returncode}:\n{self.log(name)}")
                try:
                    response = await http.get(f"{url}/readyz")
                    if response.status_code == 200:
                        return
                    last = response.text
                except httpx.HTTPError as error:
                    last = repr(error)
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{name} not ready within {START_SECONDS} s: {last}\n{self.log(name)}")
                await asyncio.sleep(0.2)

    def stop(self, name: str) -> None:
        process = self.processes.pop(name, None)
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)

    def cpu_seconds(self) -> dict[str, float] | None:
        """CPU time (user + system) each running server has used so far; None where /proc is not."""
        used = {}
        for name, process in self.processes.items():
            try:
                stat = Path(f"/proc/{process.pid}/stat").read_text()
            except OSError:
                return None
            fields = stat.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
            used[name] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime
        return used

    def stop_all(self) -> None:
        for name in list(self.processes):
            self.stop(name)

    def log(self, name: str, tail: int = 40) -> str:
        path = self.root / f"{name}.log"
        lines = path.read_text(errors="replace").splitlines()[-tail:] if path.exists() else []
        return "\n".join(lines)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _write_topology(path: Path, ports: dict[str, int]) -> None:
    """identity = auth, core = projects + billing, notify = notifications (never started: not called)."""
    services = {"identity": ["auth"], "core": ["projects", "billing"], "notify": ["notifications"]}
    lines = ["version = 1", f'public_url = "http://127.0.0.1:{ports["public"]}"', 'events = "nats"', ""]
    for name, modules in services.items():
        listed = ", ".join(f'"{m}"' for m in modules)
        lines += [
            f"[services.{name}]",
            f"modules = [{listed}]",
            f'url = "http://127.0.0.1:{ports[name]}"',
            "",
        ]
    path.write_text("\n".join(lines))


@contextmanager
def _postgres(server_url: str | None) -> Iterator[str | None]:
    """A fresh database on the PostgreSQL server of `server_url` (its SQLAlchemy URL), dropped after."""
    if server_url is None:
        yield None
        return
    dsn = re.sub(r"^postgresql\+asyncpg://", "postgresql://", server_url)
    name = f"splitstone_bench_split_{uuid.uuid4().hex[:8]}"

    async def admin(statement: str) -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    try:
        yield dsn.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1) + f"/{name}"
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


# -- seeding ----------------------------------------------------------------------------------------------


async def _seed(base_url: str) -> Seeded:
    """A user who owns an organization with projects and tasks, made through the public API."""
    async with httpx.AsyncClient(base_url=base_url, timeout=30, trust_env=False) as http:
        credentials = {"email": "bench@example.com", "password": PASSWORD}
        _expect(await http.post("/api/v1/auth/register", json={**credentials, "display_name": "Bench"}), 202)
        token = _expect(await http.post("/api/v1/auth/login", json=credentials), 200)["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        org = _expect(await http.post("/api/v1/orgs", json={"name": "Bench"}, headers=headers), 201)
        org_id = uuid.UUID(org["id"])
        for p in range(1, PROJECTS + 1):
            body = {"key": f"P{p}", "name": f"Project {p}", "description": "Seeded by bench/split.py."}
            _expect(await http.post(f"/api/v1/orgs/{org_id}/projects", json=body, headers=headers), 201)
            for t in range(1, TASKS_PER_PROJECT + 1):
                task = {"title": f"Task {t} of project {p}", "priority": "medium"}
                path = f"/api/v1/orgs/{org_id}/projects/P{p}/tasks"
                _expect(await http.post(path, json=task, headers=headers), 201)
    return Seeded(access_token=token, org_id=org_id)


def _expect(response: httpx.Response, status: int) -> Any:
    if response.status_code != status:
        raise RuntimeError(f"{response.request.method} {response.request.url.path}: {response.text}")
    return response.json()


# -- 1. a contract call, in-process and remote ------------------------------------------------------------


async def _contract_call(
    servers: Servers, identity_url: str, seeded: Seeded, calls: int, warmup: int
) -> list[Latency]:
    settings = Settings(
        _env_file=None,
        env=Environment.TEST,
        data_dir=servers.data,
        database_url=servers.database_url,
        log_level="warning",
    )
    local_container = Container.build(settings, [m for m in MODULES if m.name == "auth"])
    remote = RemoteContracts(service_token=servers.token, caller="bench")
    try:
        local: AuthApi = local_container.contracts[AuthApi]  # type: ignore[assignment]
        client: AuthApi = remote.client(AuthApi, "auth", identity_url)
        principal = await local.resolve_principal(f"Bearer {seeded.access_token}")
        org_id, permission = seeded.org_id, Permission.PROJECTS_READ
        here = await local.authorize(principal, org_id, permission)
        there = await client.authorize(principal, org_id, permission)
        assert here == there, (here, there)  # the same answer, or the comparison means nothing

        async def in_process() -> None:
            await local.authorize(principal, org_id, permission)

        async def remote_call() -> None:
            await client.authorize(principal, org_id, permission)

        async def ping() -> None:
            await remote.ping("auth", identity_url)

        timed: dict[str, Callable[[], Awaitable[None]]] = {
            "in-process": in_process,
            "remote (RemoteContracts)": remote_call,
            "HTTP round trip (ping, no database)": ping,
        }
        samples: dict[str, list[float]] = {name: [] for name in timed}
        order = list(timed.items())
        for i in range(warmup + calls):
            # One call of each in turn, the order rotating, so drift and caches favour none of them.
            for name, call in order[i % len(order) :] + order[: i % len(order)]:
                began = time.perf_counter()
                await call()
                if i >= warmup:
                    samples[name].append(time.perf_counter() - began)
        results = []
        for name, call in timed.items():
            # Apart from the timed calls (reading /proc takes time): the CPU one call costs each side.
            count = min(calls, 500)
            caller, served = time.process_time(), servers.cpu_seconds()
            for _ in range(count):
                await call()
            caller_ms = _per_request(time.process_time() - caller, count)
            server_ms = None
            if served is not None and (now := servers.cpu_seconds()) is not None:
                server_ms = _per_request(now["identity"] - served["identity"], count)
            results.append(
                replace(_latency(name, samples[name]), caller_cpu_ms=caller_ms, server_cpu_ms=server_ms)
            )
        return results
    finally:
        await remote.aclose()
        await local_container.aclose()


def _latency(name: str, samples: list[float]) -> Latency:
    ordered = sorted(samples)
    return Latency(
        name,
        len(ordered),
        round(statistics.median(ordered) * 1000, 3),
        round(_p99(ordered) * 1000, 3),
        round(statistics.fmean(ordered) * 1000, 3),
    )


def _p99(ordered: list[float]) -> float:
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


# -- 2. a request across modules, monolith and split ------------------------------------------------------


async def _throughput(
    mode: str, url: str, seeded: Seeded, concurrency: int, seconds: float, servers: Servers, wrk: str | None
) -> Throughput:
    """Requests/s and latency of GET projects at `url` (driven by `wrk` if given, else httpx), with the
    CPU the serving processes spent on each."""
    warmup = min(1.0, seconds / 3)  # connections, JWKS keys, caches
    if wrk is not None:
        await asyncio.to_thread(_wrk, wrk, url, seeded, concurrency, warmup)
    else:
        await _drive(url + seeded.path, seeded.headers, concurrency, warmup)
    server_cpu, client_cpu = servers.cpu_seconds(), time.process_time()
    if wrk is not None:
        result = await asyncio.to_thread(_wrk, wrk, url, seeded, concurrency, seconds, mode)
        client_cpu_ms = None  # wrk's own, not measured
    else:
        requests, errors, latencies, elapsed = await _drive(
            url + seeded.path, seeded.headers, concurrency, seconds
        )
        client_cpu_ms = _per_request(time.process_time() - client_cpu, requests)
        ordered = sorted(latencies) or [0.0]
        result = Throughput(
            mode=mode,
            driver="httpx",
            concurrency=concurrency,
            seconds=round(elapsed, 2),
            requests=requests,
            errors=errors,
            requests_per_second=round(requests / elapsed, 1),
            p50_ms=round(statistics.median(ordered) * 1000, 2),
            p99_ms=round(_p99(ordered) * 1000, 2),
        )
    server_cpu_ms = None
    served = result.requests + result.errors
    if server_cpu is not None and (now := servers.cpu_seconds()) is not None and served:
        server_cpu_ms = {name: round((now[name] - server_cpu[name]) * 1000 / served, 3) for name in now}
    return replace(result, server_cpu_ms=server_cpu_ms, client_cpu_ms=client_cpu_ms)


def _per_request(cpu_seconds: float, requests: int) -> float | None:
    return round(cpu_seconds * 1000 / requests, 3) if requests else None


def _cpu_text(used: dict[str, float] | None) -> str:
    if used is None:
        return "-"
    total = f"{sum(used.values()):.2f}"
    if len(used) == 1:
        return total
    return f"{total} = " + " + ".join(f"{ms:.2f} {name}" for name, ms in used.items())


async def _drive(
    url: str, headers: dict[str, str], concurrency: int, seconds: float
) -> tuple[int, int, list[float], float]:
    """`concurrency` clients sending GET `url` back to back for `seconds`: (200s, others, latencies, time)."""
    latencies: list[float] = []
    errors = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=30, trust_env=False, headers=headers) as http:
        started = time.perf_counter()
        deadline = started + seconds

        async def client() -> None:
            nonlocal errors
            while (began := time.perf_counter()) < deadline:
                response = await http.get(url)
                if response.status_code == 200:
                    latencies.append(time.perf_counter() - began)
                else:
                    errors += 1

        await asyncio.gather(*(client() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return len(latencies), errors, latencies, elapsed


def _wrk(
    wrk: str, url: str, seeded: Seeded, concurrency: int, seconds: float, mode: str = "warm-up"
) -> Throughput:
    threads = max(1, min(concurrency, (os.cpu_count() or 2) // 2))
    done = subprocess.run(
        [
            *(wrk, f"-t{threads}", f"-c{concurrency}", f"-d{max(1, round(seconds))}s", "--latency"),
            *("-H", f"Authorization: Bearer {seeded.access_token}", url + seeded.path),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return _parse_wrk(done.stdout, mode, concurrency)


def _parse_wrk(output: str, mode: str, concurrency: int) -> Throughput:
    """Throughput from `wrk --latency` output."""
    total = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", output)
    if total is None:
        raise RuntimeError(f"unexpected wrk output:\n{output}")
    requests, elapsed = int(total.group(1)), _seconds(total.group(2), total.group(3))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    errors = (int(non_2xx.group(1)) if non_2xx else 0) + (
        sum(int(n) for n in socket_errors.groups()) if socket_errors else 0
    )

    def percentile(label: str) -> float:
        found = re.search(rf"^\s*{label}%\s+([\d.]+)(us|ms|s|m)\s*$", output, re.MULTILINE)
        return round(_seconds(found.group(1), found.group(2)) * 1000, 2) if found else float("nan")

    return Throughput(
        mode=mode,
        driver="wrk",
        concurrency=concurrency,
        seconds=round(elapsed, 2),
        requests=requests - errors,
        errors=errors,
        requests_per_second=round((requests - errors) / elapsed, 1),
        p50_ms=percentile("50"),
        p99_ms=percentile("99"),
    )


def _seconds(value: str, unit: str) -> float:
    return float(value) * {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[unit]


# -- the run ----------------------------------------------------------------------------------------------


async def _run(servers: Servers, options: Options) -> tuple[list[Latency], list[Throughput]]:
    """Monolith, split, monolith again: drift of the machine over the run shows, and the monolith's
    mean cancels a steady one. One mode at a time, so that a SQLite file has one set of processes."""
    ports = {name: _free_port() for name in ("monolith", "identity", "core", "notify", "public")}
    servers.migrate()
    console.print("monolith: starting, seeding through its public API")
    url = servers.start("monolith", ports["monolith"], servers.env())
    await servers.wait_ready("monolith", url)
    seeded = await _seed(url)
    rates = await _load("monolith", url, seeded, servers, options)
    servers.stop("monolith")

    topology = servers.root / "split.toml"
    _write_topology(topology, ports)
    console.print("split: starting identity (auth) and core (projects, billing)")
    identity = servers.start("identity", ports["identity"], servers.split_env(topology, "identity"))
    await servers.wait_ready("identity", identity)
    core = servers.start("core", ports["core"], servers.split_env(topology, "core"))
    await servers.wait_ready("core", core)
    console.print(f"contract call: {options.warmup_calls} warm-up then {options.calls} each, alternating")
    latencies = await _contract_call(servers, identity, seeded, options.calls, options.warmup_calls)
    rates += await _load("split", core, seeded, servers, options)
    servers.stop("core")
    servers.stop("identity")

    console.print("monolith: starting again")
    url = servers.start("monolith", ports["monolith"], servers.env())
    await servers.wait_ready("monolith", url)
    rates += await _load("monolith", url, seeded, servers, options, run=2)
    servers.stop("monolith")
    return latencies, rates


async def _load(
    mode: str, url: str, seeded: Seeded, servers: Servers, options: Options, run: int = 1
) -> list[Throughput]:
    rates = []
    for clients in options.concurrency:
        console.print(f"{mode}: {options.seconds:g} s of GET {seeded.path}, {clients} clients")
        rate = await _throughput(mode, url, seeded, clients, options.seconds, servers, options.wrk)
        rates.append(replace(rate, run=run))
    return rates


def _report(latencies: list[Latency], rates: list[Throughput], options: Options, load: float) -> bool:
    local, remote = latencies[0], latencies[1]
    added = round(remote.p50_ms - local.p50_ms, 3)
    passed = added < TARGET_ADDED_P50_MS

    calls = Table(title="AuthApi.authorize(principal, org_id, projects:read)")
    for column in ("call", "n", "p50 ms", "p99 ms", "mean ms", "caller CPU ms", "identity CPU ms"):
        calls.add_column(column, justify="left" if column == "call" else "right")
    for row in latencies:
        calls.add_row(
            row.name,
            str(row.calls),
            f"{row.p50_ms:.3f}",
            f"{row.p99_ms:.3f}",
            f"{row.mean_ms:.3f}",
            "-" if row.caller_cpu_ms is None else f"{row.caller_cpu_ms:.3f}",
            "-" if row.server_cpu_ms is None else f"{row.server_cpu_ms:.3f}",
        )
    console.print(calls)
    verdict = "[green]PASS[/]" if passed else "[red]FAIL[/]"
    console.print(
        f"added by the remote call: p50 {added:.3f} ms, p99 {remote.p99_ms - local.p99_ms:.3f} ms, "
        f"mean {remote.mean_ms - local.mean_ms:.3f} ms (target: p50 under {TARGET_ADDED_P50_MS:g} ms) "
        f"{verdict}"
    )

    comparisons = []
    for clients in sorted({r.concurrency for r in rates}):
        monoliths = [r for r in rates if r.mode == "monolith" and r.concurrency == clients]
        [split] = [r for r in rates if r.mode == "split" and r.concurrency == clients]
        monolith_rps = statistics.fmean(r.requests_per_second for r in monoliths)
        monolith_p50 = statistics.fmean(r.p50_ms for r in monoliths)
        comparisons.append(
            {
                "concurrency": clients,
                "monolith_rps_mean": round(monolith_rps, 1),
                "split_rps": split.requests_per_second,
                "split_to_monolith_rps": round(split.requests_per_second / monolith_rps, 3),
                "added_p50_ms": round(split.p50_ms - monolith_p50, 2),
            }
        )
    table = Table(title=f"GET /api/v1/orgs/{{org_id}}/projects ({rates[0].driver} clients)")
    columns = ("mode", "clients", "requests", "errors", "requests/s", "p50 ms", "p99 ms")
    for column in (*columns, "server CPU ms/req", "client CPU ms/req"):
        table.add_column(column, justify="left" if column == "mode" else "right")
    for r in rates:
        table.add_row(
            r.mode if r.mode == "split" else f"{r.mode} ({'before' if r.run == 1 else 'after'})",
            str(r.concurrency),
            str(r.requests),
            str(r.errors),
            f"{r.requests_per_second:.0f}",
            f"{r.p50_ms:.2f}",
            f"{r.p99_ms:.2f}",
            _cpu_text(r.server_cpu_ms),
            "-" if r.client_cpu_ms is None else f"{r.client_cpu_ms:.2f}",
        )
    console.print(table)
    for c in comparisons:
        console.print(
            f"{c['concurrency']} clients: split / monolith (mean of before and after) "
            f"{c['split_to_monolith_rps']:.2f}x the requests/s, p50 {c['added_p50_ms']:+.2f} ms"
        )

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "commit": commit(),
                "at": datetime.now(UTC).isoformat(),
                "machine": {
                    "platform": platform.platform(),
                    "cpus": os.cpu_count(),
                    "python": platform.python_version(),
                    "load_average_at_start": round(load, 2),
                },
                "options": {
                    **{k: v for k, v in asdict(options).items() if k not in ("wrk", "database_url")},
                    "driver": "wrk" if options.wrk else "httpx",
                    "database": "postgresql" if options.database_url else "sqlite",
                    "events": "split: NATS JetStream; monolith: in-process; workers off",
                },
                "contract_call": {
                    "operation": "AuthApi.authorize",
                    "results": [asdict(row) for row in latencies],
                    "added_p50_ms": added,
                    "target_added_p50_ms": TARGET_ADDED_P50_MS,
                    "passed": passed,
                },
                "cross_module_request": {
                    "request": "GET /api/v1/orgs/{org_id}/projects",
                    "results": [asdict(r) for r in rates],
                    "split_vs_monolith": comparisons,
                },
            },
            indent=2,
        )
        + "\n"
    )
    console.print(f"written: {RESULTS}")
    return passed


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, help="timed contract calls of each kind (default 2000)")
    parser.add_argument("--seconds", type=float, help="load time of each mode and concurrency (default 10)")
    parser.add_argument(
        "--concurrency", default="1,16", help="comma-separated numbers of concurrent clients (default 1,16)"
    )
    parser.add_argument("--quick", action="store_true", help="300 calls and 3 s of load")
    parser.add_argument(
        "--driver",
        choices=["auto", "wrk", "httpx"],
        default="auto",
        help="what sends the load: auto is wrk when installed, else httpx",
    )
    parser.add_argument(
        "--database-url",
        help="a PostgreSQL server to run on (a database is created there and dropped); default SQLite",
    )
    args = parser.parse_args()
    calls = args.calls or (300 if args.quick else 2000)
    wrk = shutil.which("wrk") if args.driver != "httpx" else None
    if args.driver == "wrk" and wrk is None:
        parser.error("--driver wrk: wrk is not installed")
    options = Options(
        calls=calls,
        warmup_calls=max(50, calls // 10),
        seconds=args.seconds or (3.0 if args.quick else 10.0),
        concurrency=[int(n) for n in args.concurrency.split(",")],
        wrk=wrk,
        database_url=args.database_url,
    )
    load = os.getloadavg()[0]
    if load > 0.5:
        console.print(f"[yellow]the machine is busy (load average {load:.2f}): the numbers will show it[/]")
    with (
        tempfile.TemporaryDirectory(prefix="splitstone-bench-split-") as folder,
        _postgres(args.database_url) as database_url,
    ):
        servers = Servers(Path(folder), database_url)
        try:
            latencies, rates = asyncio.run(_run(servers, options))
        except BaseException:
            for name in servers.processes:
                console.print(f"--- {name}.log\n{servers.log(name)}", markup=False)
            raise
        finally:
            servers.stop_all()
            asyncio.run(delete_streams(servers.prefix))
    _report(latencies, rates, options, load)


if __name__ == "__main__":
    main()
