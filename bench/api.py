"""`make bench`: our API against a bare baseline, endpoint by endpoint, on one busy organization.

Prepares (or reuses) the dataset of bench/dataset.py (3,000 members, 100k tasks on PostgreSQL), starts
`splitstone serve --no-worker` and the baseline (`python -m bench.baseline`: Starlette and asyncpg doing
the same work by hand) both pinned to core 0, and drives them from core 1 with wrk (1 thread, Lua
scripts under bench/lua/). Per endpoint: a fresh access token (the owner's, from our login), a check
that both servers answer the same request alike (status, JSON, headers; for writes, the rows they
leave), a warm-up of each, then rounds that alternate the servers; the median round counts. Login is
also set against the raw argon2 verify rate of one core; then the server's memory, and the time
`splitstone serve` takes to answer /healthz on a fresh SQLite data dir.

    .venv/bin/python -m bench.api [--quick] [--duration 10] [--connections 16] [--rounds 3]
                                  [--endpoints me,task] [--only ours] [--fresh] [--verify-only]

Writes bench/results/latest.json and the table in docs/performance.md (a full run; a partial or quick
one writes bench/results/partial-latest.json and leaves the docs alone unless --docs).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from bench import dataset as datasets
from bench import servers, verify, wrk
from bench.common import commit
from bench.dataset import Dataset

ROOT = Path(__file__).parent.parent
RESULTS = ROOT / "bench" / "results"
DOCS = ROOT / "docs" / "performance.md"
DOCS_START, DOCS_END = "<!-- bench:api:start -->", "<!-- bench:api:end -->"
BIN = Path(sys.executable).parent
BASELINE = Path(__file__).parent / "baseline" / "__main__.py"
TOKEN_MAX_AGE = 600  # seconds; access tokens live 900
RSS_TARGET_MB = 200
STARTUP_TARGET_S = 2.0
LOGIN_TARGET = 0.85  # of the raw argon2 verify rate
TASK_MASK = frozenset({"id", "number", "key", "created_at", "updated_at"})
LOGIN_MASK = frozenset({"access_token", "refresh_token", "session_id"})
RATE_LIMITS_OFF = (
    "measured with `SPLITSTONE_RATE_LIMITS_ENABLED=false`: login's limits (30/minute per IP, 10 per "
    "15 minutes per account) would refuse wrk's requests after the first few; the baseline has none. "
    "Every other endpoint ran with the rate limits as configured (only auth's account routes, such as "
    "register, login and password reset, have any)."
)


@dataclass(frozen=True)
class Endpoint:
    name: str
    label: str
    method: str
    path: str  # {org}, {project}, {task}, {cursor}, {q} come from the dataset
    script: str  # bench/lua/<script>.lua
    target: float | None  # least ratio of our requests/s to the baseline's
    authorized: bool = True
    mask: frozenset[str] = frozenset()  # answer keys whose values differ between two writes
    writes: tuple[list[tuple[str, str]], str] | None = None  # the rows it writes, by the answer's key

    def url_path(self, data: Dataset, task: str = "") -> str:
        return self.path.format(
            org=data.org_id, project=data.project_id, task=task, cursor=data.deep_cursor, q=data.search_query
        )


TASKS = "/api/v1/orgs/{org}/projects/{project}/tasks"
ENDPOINTS = [
    Endpoint("healthz", "`GET /healthz`", "GET", "/healthz", "get", None, authorized=False),
    Endpoint("me", "`GET /auth/me`", "GET", "/api/v1/auth/me", "get", 0.50),
    Endpoint("task", "get a task", "GET", "/api/v1/orgs/{org}/tasks/{task}", "task", 0.50),
    Endpoint("list", "list, first page", "GET", TASKS + "?limit=50", "get", 0.50),
    Endpoint("list_deep", "list, page at 90%", "GET", TASKS + "?limit=50&cursor={cursor}", "get", 0.50),
    Endpoint("search", "search (1 task in 8)", "GET", TASKS + "?limit=50&q={q}", "get", 0.50),
    Endpoint(
        "create",
        "create a task",
        "POST",
        TASKS,
        "create",
        0.40,
        mask=TASK_MASK,
        writes=(verify.CREATE_ROWS, "id"),
    ),
    Endpoint(
        "login",
        "login ¹",
        "POST",
        "/api/v1/auth/login",
        "login",
        None,
        authorized=False,
        mask=LOGIN_MASK,
        writes=(verify.LOGIN_ROWS, "session_id"),
    ),
]
BY_NAME = {e.name: e for e in ENDPOINTS}


@dataclass(frozen=True)
class Config:
    duration: float
    connections: int
    rounds: int
    warmup: float
    endpoints: list[str]
    only: str | None
    port: int
    name: str
    users: int
    tasks: int
    fresh: bool
    verify_only: bool
    docs: bool

    @property
    def full(self) -> bool:
        return self.endpoints == [e.name for e in ENDPOINTS] and self.only is None and self.rounds >= 3


class BenchError(Exception):
    """The run cannot give comparable numbers (the servers differ, a server failed); says why."""


@dataclass
class Side:
    """One server's rounds of one endpoint."""

    rounds: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        def median(key: str) -> float:
            return round(float(statistics.median(r[key] for r in self.rounds)), 2)

        return {
            "rps": median("rps"),
            "p50_ms": median("p50_ms"),
            "p99_ms": median("p99_ms"),
            "cpu_ms_per_request": median("cpu_ms_per_request"),
            "errors": sum(r["failed"] for r in self.rounds),
            "rounds": self.rounds,
        }


class Progress:
    def __init__(self) -> None:
        self.began = time.perf_counter()

    def __call__(self, message: str) -> None:
        minutes, seconds = divmod(time.perf_counter() - self.began, 60)
        print(f"[{int(minutes):2d}:{seconds:04.1f}] {message}", flush=True)


class Bench:
    """One run: the servers, tokens and data file it shares between endpoints, and what it found."""

    def __init__(self, config: Config, data: Dataset, workdir: Path, say: Progress) -> None:
        self.config = config
        self.data = data
        self.workdir = workdir
        self.say = say
        self.run_id = uuid.uuid4().hex[:8]
        self.data_file = workdir / "data.lua"
        self.data_file.write_text(
            wrk.lua_table(
                {
                    "task_ids": data.task_ids,
                    "login_bodies": [
                        json.dumps({"email": email, "password": data.password}) for email in data.user_emails
                    ],
                }
            )
        )
        self.ids = asyncio.run(_known_ids(data))
        self.token: tuple[str, float, str] | None = None  # token, issued at, for which endpoint
        self.results: dict[str, dict[str, Any]] = {}
        self.notes: list[str] = []
        self.mismatches: list[str] = []  # endpoints the baseline answers otherwise (not measured)
        self.memory: dict[str, dict[str, float]] = {}
        self.argon2: list[float] = []  # raw verifies/s, before and after the login rounds

    # -- servers ------------------------------------------------------------------------------------------

    def start_ours(self, *, rate_limits: bool) -> servers.Server:
        port = self.config.port + (0 if rate_limits else 1)
        env = self.data.server_env()
        if not rate_limits:
            env["SPLITSTONE_RATE_LIMITS_ENABLED"] = "false"
        command = [str(BIN / "splitstone"), "serve", "--no-worker", "--port", str(port)]
        name = "ours" if rate_limits else "ours-no-rate-limits"
        self.say(f"starting {name} on port {port} (core 0)")
        return servers.start(name, command, port, env, self.workdir)

    def start_baseline(self) -> servers.Server:
        port = self.config.port + 2
        command = [sys.executable, "-m", "bench.baseline", "--port", str(port)]
        self.say(f"starting the baseline on port {port} (core 0)")
        return servers.start("baseline", command, port, self.data.server_env(), self.workdir)

    def owner_token(self, ours: servers.Server, endpoint: Endpoint) -> str:
        """The owner's access token for `endpoint`, from our login: a new one per endpoint, and again
        when it is 10 minutes old (tokens live 15)."""
        if self.token is not None:
            token, issued, issued_for = self.token
            if issued_for == endpoint.name and time.monotonic() - issued < TOKEN_MAX_AGE:
                return token
        body = {"email": self.data.owner_email, "password": self.data.password}
        response = httpx.post(f"{ours.url}/api/v1/auth/login", json=body, timeout=30)
        if response.status_code != 200:
            raise BenchError(f"the owner's login answered {response.status_code}: {response.text}")
        self.token = (str(response.json()["access_token"]), time.monotonic(), endpoint.name)
        return self.token[0]

    # -- an endpoint --------------------------------------------------------------------------------------

    def check_and_measure(
        self, endpoint: Endpoint, ours: servers.Server, baseline: servers.Server | None
    ) -> bool:
        """Check that the servers answer alike (else print why and skip it), then measure; whether it
        was measured."""
        try:
            self.check(endpoint, ours, baseline)
        except BenchError as error:
            print(f"\n{error}\n", file=sys.stderr, flush=True)
            self.mismatches.append(endpoint.name)
            return False
        if self.config.verify_only:
            return False
        if endpoint.name == "login":
            seconds = min(3.0, self.config.duration)
            self.argon2.append(argon2_rate(self.data, seconds))
            self.measure(endpoint, ours, baseline)
            self.argon2.append(argon2_rate(self.data, seconds))
            rates = ", ".join(f"{rate:.1f}/s" for rate in self.argon2)
            self.say(f"login: raw argon2 verifies on core 0, before and after: {rates}")
        else:
            self.measure(endpoint, ours, baseline)
        return True

    def check(self, endpoint: Endpoint, ours: servers.Server, baseline: servers.Server | None) -> None:
        """Both servers answer `endpoint`'s request alike (or ours answers it, without a baseline)."""
        token = self.owner_token(ours, endpoint) if endpoint.authorized else None
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        problems: list[str] = []
        notes: list[str] = []
        requests = self._sample_requests(endpoint)
        for method, path, body in requests:
            answers = [_ask(server, method, path, body, headers) for server in (ours, baseline) if server]
            if not 200 <= answers[0].status < 300:
                raise BenchError(
                    f"ours answered {method} {path} with {answers[0].status}: {answers[0].body!r}"
                )
            if baseline is None:
                continue
            found = verify.compare(answers[0], answers[1], mask=endpoint.mask)
            problems += [f"{method} {path}: {p}" for p in found.problems]
            notes += found.notes
            if endpoint.writes and not found.problems:
                problems += asyncio.run(self._compare_rows(endpoint.writes, answers[0], answers[1]))
        if problems:
            raise BenchError(
                f"{endpoint.name}: the baseline does not answer as ours does:\n" + "\n".join(problems)
            )
        verdict = "same answers" if baseline else "ours answers 2xx (no baseline to compare)"
        for note in sorted(set(notes)):
            self.notes.append(f"{endpoint.name}: {note}")
        self.say(f"{endpoint.name}: {verdict}" + (f" ({'; '.join(sorted(set(notes)))})" if notes else ""))

    def _sample_requests(self, endpoint: Endpoint) -> list[tuple[str, str, dict[str, Any] | None]]:
        if endpoint.name == "task":
            return [("GET", endpoint.url_path(self.data, task), None) for task in self.data.task_ids[:3]]
        if endpoint.name == "create":
            body = {"title": f"Bench task check-{self.run_id}", "priority": "high", "labels": ["bench"]}
            return [("POST", endpoint.url_path(self.data), body)]
        if endpoint.name == "login":
            return [
                (
                    "POST",
                    endpoint.url_path(self.data),
                    {"email": self.data.user_emails[1], "password": self.data.password},
                )
            ]
        return [("GET", endpoint.url_path(self.data), None)]

    async def _compare_rows(
        self, writes: tuple[list[tuple[str, str]], str], ours: verify.Answer, theirs: verify.Answer
    ) -> list[str]:
        tables, key = writes
        written = []
        for answer in (ours, theirs):
            body = json.loads(answer.body)
            extra = {body["key"]: "<key>"} if "key" in body else {}
            written.append(
                await verify.rows_written(self.data.dsn, tables, uuid.UUID(body[key]), self.ids, extra)
            )
        return verify.compare_rows(written[0], written[1])

    def measure(
        self, endpoint: Endpoint, ours: servers.Server, baseline: servers.Server | None
    ) -> dict[str, Any]:
        """Warm each server up, then alternate them for the configured rounds."""
        config = self.config
        token = self.owner_token(ours, endpoint) if endpoint.authorized else ""
        env = {
            "BENCH_TOKEN": token,
            "BENCH_DATA": str(self.data_file),
            "BENCH_PATH": endpoint.url_path(self.data),
        }
        contenders = [("ours", ours)] + ([("baseline", baseline)] if baseline else [])
        url_path = (
            endpoint.url_path(self.data, self.data.task_ids[0])
            if endpoint.name == "task"
            else endpoint.url_path(self.data)
        )
        for name, server in contenders:
            wrk.run(
                endpoint.script,
                server.url + url_path,
                seconds=config.warmup,
                connections=config.connections,
                env={**env, "BENCH_RUN": f"{self.run_id}-warm-{name}"},
            )
        sides = {name: Side() for name, _ in contenders}
        for round_number in range(config.rounds):
            order = contenders if round_number % 2 == 0 else contenders[::-1]
            for name, server in order:
                cpu_before = server.cpu_seconds()
                result = wrk.run(
                    endpoint.script,
                    server.url + url_path,
                    seconds=config.duration,
                    connections=config.connections,
                    env={**env, "BENCH_RUN": f"{self.run_id}-{name}-{round_number}"},
                )
                cpu = server.cpu_seconds() - cpu_before
                sides[name].rounds.append(_round(result, cpu))
                failed = f", {result.failed} FAILED ({result.errors})" if result.failed else ""
                self.say(
                    f"{endpoint.name}: {name:8} round {round_number + 1}: {result.rps:8.1f} req/s  "
                    f"p50 {result.latency_ms['p50']:7.2f} ms  p99 {result.latency_ms['p99']:7.2f} ms{failed}"
                )
        found: dict[str, Any] = {
            "path": url_path if endpoint.name != "task" else endpoint.path,
            "method": endpoint.method,
            "rate_limits": "disabled" if endpoint.name == "login" else "as configured",
            "target": endpoint.target,
        }
        for name, side in sides.items():
            found[name] = side.summary()
        if "baseline" in found and found["baseline"]["rps"]:
            found["ratio"] = round(found["ours"]["rps"] / found["baseline"]["rps"], 3)
        self.results[endpoint.name] = found
        return found


def _round(result: wrk.WrkResult, cpu_seconds: float) -> dict[str, Any]:
    return {
        "rps": round(result.rps, 1),
        "p50_ms": round(result.latency_ms["p50"], 2),
        "p90_ms": round(result.latency_ms["p90"], 2),
        "p99_ms": round(result.latency_ms["p99"], 2),
        "requests": result.requests,
        "seconds": round(result.seconds, 2),
        "failed": result.failed,
        "errors": result.errors,
        "cpu_ms_per_request": round(cpu_seconds * 1000 / result.requests, 3) if result.requests else 0.0,
    }


def _ask(server: servers.Server, method: str, path: str, body: Any, headers: dict[str, str]) -> verify.Answer:
    response = httpx.request(method, server.url + path, json=body, headers=headers, timeout=30)
    kept = {name: response.headers[name] for name in verify.COMPARED_HEADERS if name in response.headers}
    return verify.Answer(response.status_code, kept, response.content)


async def _known_ids(data: Dataset) -> dict[str, str]:
    """Ids a write may name, by what they are (for comparing the rows two servers wrote)."""
    conn = await asyncpg.connect(data.dsn)
    try:
        rows = await conn.fetch(
            "SELECT id, email FROM auth.users WHERE email = ANY($1::text[])",
            [data.owner_email, data.user_emails[1]],
        )
    finally:
        await conn.close()
    named = {str(r["id"]): "<owner>" if r["email"] == data.owner_email else "<user>" for r in rows}
    return {data.org_id: "<org>", data.project_id: "<project>", **named}


# -- login, memory, startup -------------------------------------------------------------------------------


def argon2_rate(data: Dataset, seconds: float) -> float:
    """Raw argon2 verifies per second of the seeded hash, on core 0 (where the server runs)."""
    password_hash = asyncio.run(_password_hash(data))
    command = ["taskset", "-c", "0", sys.executable, "-m", "bench.argon2_rate", password_hash, data.password]
    done = subprocess.run(
        [*command, "--seconds", str(seconds)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **data.server_env()},
    )
    return float(json.loads(done.stdout)["per_second"])


async def _password_hash(data: Dataset) -> str:
    conn = await asyncpg.connect(data.dsn)
    try:
        return str(
            await conn.fetchval("SELECT password_hash FROM auth.users WHERE email = $1", data.owner_email)
        )
    finally:
        await conn.close()


def startup_seconds(port: int, workdir: Path, attempts: int = 3) -> list[float]:
    """Seconds from spawning `splitstone serve` to its first 200 from /healthz, each on a fresh SQLite
    data dir migrated first (`splitstone db upgrade`)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPLITSTONE_")}
    took = []
    for attempt in range(attempts):
        data_dir = workdir / f"startup-{attempt}"
        sqlite_env = {"SPLITSTONE_DATA_DIR": str(data_dir), "SPLITSTONE_LOG_LEVEL": "warning"}
        subprocess.run(
            [str(BIN / "splitstone"), "db", "upgrade"],
            env={**env, **sqlite_env},
            check=True,
            capture_output=True,
        )
        command = [str(BIN / "splitstone"), "serve", "--port", str(port)]
        took.append(
            servers.time_to_healthy(command, port, {**env, **sqlite_env}, workdir / f"startup-{attempt}.log")
        )
    return took


# -- the run ----------------------------------------------------------------------------------------------


def load_or_prepare(config: Config, say: Progress) -> Dataset:
    path = datasets.default_path(config.name)
    if not config.fresh and os.path.exists(path):
        data = Dataset.load(path)
        if (
            len(data.user_emails) == config.users
            and data.tasks == config.tasks
            and asyncio.run(datasets.exists(data))
        ):
            gone = asyncio.run(datasets.forget_writes(data))
            say(f"reusing the dataset {config.name} ({path}); removed {gone:,} tasks of earlier runs")
            return data
    say(f"preparing the dataset {config.name}: {config.users:,} users, {config.tasks:,} tasks")
    data = asyncio.run(datasets.prepare(name=config.name, users=config.users, tasks=config.tasks))
    data.save(path)
    return data


def run(config: Config) -> int:
    say = Progress()
    if not wrk.installed():
        say("wrk is missing: installing it with apt-get")
        wrk.install()
    with_baseline = config.only != "ours"
    if with_baseline and not BASELINE.exists():
        say("bench/baseline/ is not there yet: measuring ours alone (--only ours)")
        with_baseline = False
    data = load_or_prepare(config, say)
    with tempfile.TemporaryDirectory(prefix="bench-api-") as tmp:
        workdir = Path(tmp)
        bench = Bench(config, data, workdir, say)
        startup: list[float] = []
        if not config.verify_only:
            say("startup: `splitstone serve` to the first 200 from /healthz, fresh SQLite, 3 times")
            startup = startup_seconds(config.port + 3, workdir)
            say(f"startup: {', '.join(f'{s:.2f} s' for s in startup)}")
        try:
            _serve_and_measure(bench, with_baseline)
        except (BenchError, servers.ServerError, wrk.WrkError) as error:
            print(f"\nFAILED: {error}", file=sys.stderr)
            return 1
        finally:
            gone = asyncio.run(datasets.forget_writes(data))
            say(f"removed the {gone:,} tasks this run created")
    failed = 1 if bench.mismatches else 0
    if bench.mismatches:
        print(f"\nFAILED: the baseline answers otherwise: {', '.join(bench.mismatches)} (not measured)")
    if config.verify_only:
        say("every endpoint answers alike" if not failed else "verification failed")
        return failed
    full = config.full and not failed
    out = RESULTS / ("latest.json" if full else "partial-latest.json")
    report = _report(config, data, bench, startup)
    report["results_file"] = str(out.relative_to(ROOT))
    out.write_text(json.dumps(report, indent=2) + "\n")
    table = markdown(report)
    print("\n" + table)
    if full or config.docs:
        _rewrite_docs(table)
        say(f"written: {out.relative_to(ROOT)} and the table in {DOCS.relative_to(ROOT)}")
    else:
        say(f"written: {out.relative_to(ROOT)} (a partial run: docs unchanged; --docs to write them)")
    return failed


def _serve_and_measure(bench: Bench, with_baseline: bool) -> None:
    """Ours (rate limits on) for every endpoint but login, then ours without them for login; the
    baseline throughout. Memory is read from each server after its runs."""
    selected = [BY_NAME[name] for name in bench.config.endpoints]
    baseline = bench.start_baseline() if with_baseline else None
    try:
        others = [e for e in selected if e.name != "login"]
        if others:
            ours = bench.start_ours(rate_limits=True)
            try:
                measured = False
                for endpoint in others:
                    measured = bench.check_and_measure(endpoint, ours, baseline) or measured
                if measured:
                    bench.memory["ours"] = ours.memory_mb()
            finally:
                ours.stop()
        if BY_NAME["login"] in selected:
            ours = bench.start_ours(rate_limits=False)
            try:
                # Login's floor is the raw argon2 verify rate (measured around it), not a baseline server.
                if bench.check_and_measure(BY_NAME["login"], ours, None):
                    bench.memory["ours_login"] = ours.memory_mb()
            finally:
                ours.stop()
        if baseline is not None and bench.results:
            bench.memory["baseline"] = baseline.memory_mb()
    finally:
        if baseline is not None:
            baseline.stop()


def _report(config: Config, data: Dataset, bench: Bench, startup: list[float]) -> dict[str, Any]:
    report: dict[str, Any] = {
        "commit": commit(),
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": asyncio.run(_machine()),
        "config": {
            "duration_s": config.duration,
            "connections": config.connections,
            "rounds": config.rounds,
            "warmup_s": config.warmup,
            "wrk_threads": 1,
            "server_core": 0,
            "wrk_core": 1,
            "server_workers": 1,
        },
        "dataset": {"name": data.name, "users": len(data.user_emails), "tasks": data.tasks},
        "endpoints": bench.results,
        "notes": bench.notes,
        "memory_mb": bench.memory,
        "not_measured": bench.mismatches,
        "rss_target_mb": RSS_TARGET_MB,
    }
    if startup:
        report["startup"] = {
            "seconds": [round(s, 3) for s in startup],
            "median_s": round(statistics.median(startup), 3),
            "target_s": STARTUP_TARGET_S,
        }
    login = bench.results.get("login")
    argon2 = bench.argon2
    if login and argon2:
        raw = statistics.mean(argon2)
        report["login"] = {
            "logins_per_second": login["ours"]["rps"],
            "argon2_verifies_per_second": [round(a, 2) for a in argon2],
            "ratio_to_argon2": round(login["ours"]["rps"] / raw, 3),
            "target": LOGIN_TARGET,
            "rate_limits": RATE_LIMITS_OFF,
        }
    return report


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


async def _machine() -> dict[str, Any]:
    conn = await asyncpg.connect(datasets.ADMIN_DSN)
    try:
        postgres = str(await conn.fetchval("SHOW server_version"))
    finally:
        await conn.close()
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "postgresql": postgres,
        "wrk": wrk.version(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


# -- the table --------------------------------------------------------------------------------------------


def _verdict(ratio: float | None, target: float | None) -> str:
    if ratio is None or target is None:
        return "—"
    return "met" if ratio >= target else f"missed by {target - ratio:.2f}"


def _number(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "—"
    return f"{value:,.{digits}f}"


def markdown(report: dict[str, Any]) -> str:
    """The docs' table of a run (`report` as written to latest.json)."""
    machine, config, data = report["machine"], report["config"], report["dataset"]
    plural = "" if config["rounds"] == 1 else "s"
    lines = [
        f"Last run: commit `{report['commit']}`, {report['at'][:10]}, {machine['cpu']} ({machine['cores']} "
        f"cores), Python {machine['python']}, PostgreSQL {machine['postgresql']}, {machine['wrk']}. "
        f"Data: {data['users']:,} members, {data['tasks']:,} tasks. wrk: {config['connections']} "
        f"connections, {config['rounds']} round{plural} of {config['duration_s']:g} s per server, "
        f"alternating (medians). `{report['results_file']}` has every round.",
        "",
        "| endpoint | ours req/s | p50 ms | p99 ms | baseline req/s | p50 ms | p99 ms | ratio | target "
        "| result |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for endpoint in ENDPOINTS:
        found = report["endpoints"].get(endpoint.name)
        if found is None:
            continue
        ours, theirs = found["ours"], found.get("baseline", {})
        ratio = found.get("ratio")
        errors = ours["errors"] + theirs.get("errors", 0)
        flag = f" ({errors} failed requests)" if errors else ""
        target = f"≥ {endpoint.target:.2f}" if endpoint.target else "—"
        cells = [
            endpoint.label,
            _number(ours["rps"]),
            _number(ours["p50_ms"], 2),
            _number(ours["p99_ms"], 2),
            _number(theirs.get("rps")),
            _number(theirs.get("p50_ms"), 2),
            _number(theirs.get("p99_ms"), 2),
            _number(ratio, 2),
            target,
            _verdict(ratio, endpoint.target) + flag,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    if report.get("not_measured"):
        lines += ["", f"Not measured, the baseline answering otherwise: {', '.join(report['not_measured'])}."]
    if "login" in report["endpoints"]:
        lines += ["", f"¹ Login was {RATE_LIMITS_OFF}"]
    checks = ["", "| check | measured | target | result |", "| --- | --- | --- | --- |"]
    login = report.get("login")
    if login:
        raw = statistics.mean(login["argon2_verifies_per_second"])
        checks.append(
            f"| logins/s against raw argon2 verifies/s (one core) | {login['logins_per_second']:,.1f} / "
            f"{raw:,.1f} = {login['ratio_to_argon2']:.2f} | ≥ {LOGIN_TARGET:.2f} | "
            f"{_verdict(login['ratio_to_argon2'], LOGIN_TARGET)} |"
        )
    for name, label in (("ours", "the server"), ("ours_login", "the login run's server")):
        memory = report["memory_mb"].get(name)
        if memory:
            met = (
                "met"
                if memory["VmRSS"] < RSS_TARGET_MB
                else f"missed by {memory['VmRSS'] - RSS_TARGET_MB:.0f} MB"
            )
            checks.append(
                f"| RSS of {label} after its runs (peak) | {memory['VmRSS']:.0f} MB "
                f"({memory['VmHWM']:.0f} MB) | < {RSS_TARGET_MB} MB | {met} |"
            )
    startup = report.get("startup")
    if startup:
        median = startup["median_s"]
        met = "met" if median < STARTUP_TARGET_S else f"missed by {median - STARTUP_TARGET_S:.2f} s"
        checks.append(
            f"| `splitstone serve` to the first 200 from `/healthz`, fresh SQLite (median of "
            f"{len(startup['seconds'])}) | {median:.2f} s | < {STARTUP_TARGET_S:g} s | {met} |"
        )
    if len(checks) > 3:
        lines += checks
    return "\n".join(lines)


def _rewrite_docs(table: str) -> None:
    text = DOCS.read_text()
    start, end = text.find(DOCS_START), text.find(DOCS_END)
    if start < 0 or end < start:
        raise BenchError(f"{DOCS} has no {DOCS_START} ... {DOCS_END} markers")
    DOCS.write_text(text[: start + len(DOCS_START)] + "\n" + table + "\n" + text[end:])


def parse_args(argv: list[str] | None = None) -> Config:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run: 3 s per round, 1 round, 1 s warm-up"
    )
    parser.add_argument("--duration", type=float, help="seconds per round and server (default 10; quick 3)")
    parser.add_argument("--rounds", type=int, help="rounds per endpoint (default 3; quick 1)")
    parser.add_argument("--warmup", type=float, help="seconds of warm-up per endpoint and server (default 2)")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections (default 16)")
    parser.add_argument(
        "--endpoints", default=",".join(BY_NAME), help=f"comma-separated, of: {', '.join(BY_NAME)}"
    )
    parser.add_argument("--only", choices=["ours"], help="measure ours alone, without the baseline")
    parser.add_argument("--port", type=int, default=18100, help="first of the 4 ports the run uses")
    parser.add_argument("--name", default="splitstone_bench", help="the dataset's database")
    parser.add_argument("--users", type=int, default=3000)
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument(
        "--fresh", action="store_true", help="prepare the dataset even if a saved one matches"
    )
    parser.add_argument(
        "--verify-only", action="store_true", help="only check that both servers answer alike"
    )
    parser.add_argument(
        "--docs", action="store_true", help="rewrite the docs' table even after a partial run"
    )
    args = parser.parse_args(argv)
    endpoints = [name.strip() for name in args.endpoints.split(",") if name.strip()]
    unknown = [name for name in endpoints if name not in BY_NAME]
    if unknown:
        parser.error(f"unknown endpoints {', '.join(unknown)}: choose among {', '.join(BY_NAME)}")
    return Config(
        duration=args.duration or (3.0 if args.quick else 10.0),
        connections=args.connections,
        rounds=args.rounds or (1 if args.quick else 3),
        warmup=args.warmup or (1.0 if args.quick else 2.0),
        endpoints=[e.name for e in ENDPOINTS if e.name in endpoints],
        only=args.only,
        port=args.port,
        name=args.name,
        users=args.users,
        tasks=args.tasks,
        fresh=args.fresh,
        verify_only=args.verify_only,
        docs=args.docs,
    )


if __name__ == "__main__":
    sys.exit(run(parse_args()))
