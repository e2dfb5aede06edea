"""Test fixtures shared by every suite.

Every test that uses a database runs on SQLite and on PostgreSQL (`--backend` picks; default both).
PostgreSQL tests skip when the server is absent, unless SPLITSTONE_REQUIRE_SERVICES=1 (as in CI),
which turns that skip into a failure. Each test gets a fresh database copied from a migrated template.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import httpx
import pytest
import structlog
from fastapi import FastAPI

from splitstone.kernel import migrations
from splitstone.kernel.app import create_app
from splitstone.kernel.clock import ManualClock
from splitstone.kernel.container import Container
from splitstone.kernel.db import ModuleDatabase
from splitstone.kernel.events import EventRecorder
from splitstone.kernel.module import Module
from splitstone.kernel.ratelimit import RateLimiter
from splitstone.kernel.settings import Environment, ModuleSettings, Settings
from tests.support.passwords import CHEAP_ARGON2

PG_ADMIN_DSN = os.environ.get("SPLITSTONE_TEST_PG_DSN", "postgresql://root@127.0.0.1:5432/test")
REQUIRE_SERVICES = os.environ.get("SPLITSTONE_REQUIRE_SERVICES") == "1"
BACKENDS = ("sqlite", "postgres")
# A test that takes `deployment` runs once per deployment: the monolith on each backend, and the split
# topology (three services, NATS, nginx), which needs PostgreSQL for its per-module roles.
DEPLOYMENTS = (("sqlite", "monolith"), ("postgres", "monolith"), ("postgres", "split"))
# Fake projects that tests read as text (tests/fixtures/README.md); their own test_*.py are never run.
collect_ignore_glob = ["fixtures/*"]


def pytest_configure(config: pytest.Config) -> None:
    # structlog's default console renderer prints a rich traceback with every frame's locals: a second or
    # more per logged error (a test of a failing route took 10 s). Plain tracebacks, as the server logs.
    *processors, _renderer = structlog.get_config()["processors"]
    structlog.configure(
        processors=[
            *processors,
            structlog.dev.ConsoleRenderer(exception_formatter=structlog.dev.plain_traceback),
        ]
    )


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--backend",
        default=os.environ.get("SPLITSTONE_TEST_BACKEND", "sqlite,postgres"),
        help="comma-separated database backends to run on: sqlite, postgres",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" in metafunc.fixturenames or "deployment" in metafunc.fixturenames:
        chosen = [b.strip() for b in metafunc.config.getoption("--backend").split(",") if b.strip()]
        unknown = set(chosen) - set(BACKENDS)
        if unknown:
            raise pytest.UsageError(f"unknown --backend {', '.join(unknown)}; use {', '.join(BACKENDS)}")
        only = metafunc.definition.get_closest_marker("backends")
        if only is not None:  # a test that is meaningful on some backends only is not generated for others
            chosen = [b for b in chosen if b in only.args]
        if "deployment" in metafunc.fixturenames:
            pairs = [(b, d) for b, d in DEPLOYMENTS if b in chosen]
            metafunc.parametrize(
                ("backend", "deployment"), pairs, ids=[f"{b}-{d}" for b, d in pairs], scope="session"
            )
            return
        metafunc.parametrize("backend", chosen, scope="session")


async def _probe_postgres() -> bool:
    try:
        conn = await asyncpg.connect(PG_ADMIN_DSN, timeout=3)
    except (OSError, asyncpg.PostgresError):
        return False
    await conn.close()
    return True


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> pytest.TestReport:
    """In CI (SPLITSTONE_REQUIRE_SERVICES=1) a skipped test is a failure: CI runs everything."""
    report: pytest.TestReport = yield
    if REQUIRE_SERVICES and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped, and CI runs every test: {report.longrepr}"
    return report


def _postgres_available() -> bool:
    """For synchronous fixtures; async ones await `_probe_postgres()` (asyncio.run inside a loop fails)."""
    return asyncio.run(_probe_postgres())


def require_service(available: bool, what: str) -> None:
    if available:
        return
    if REQUIRE_SERVICES:
        pytest.fail(f"{what} is required (SPLITSTONE_REQUIRE_SERVICES=1) but not reachable")
    pytest.skip(f"{what} not reachable")


def _asyncpg_dsn(database: str) -> str:
    base = PG_ADMIN_DSN.rsplit("/", 1)[0]
    return f"{base}/{database}"


def _sqlalchemy_url(dsn: str) -> str:
    return dsn.replace("postgresql://", "postgresql+asyncpg://", 1)


def _modules() -> tuple[Module, ...]:
    # Imported here, not at the top, so suites that never use the real modules (tests/kernel) still
    # run while a module is broken or half-written.
    from splitstone.bootstrap import MODULES

    return MODULES


async def _migrate_all(url: str) -> None:
    for module in _modules():
        db = ModuleDatabase.connect(module.name, url)
        try:
            await migrations.upgrade_module(db, module.migrations)
        finally:
            await db.dispose()


def _test_database_name(kind: str) -> str:
    """Names carry the test process's pid, so a later run can drop what a killed run left behind."""
    return f"splitstone_{kind}_{os.getpid()}_{uuid.uuid4().hex[:8]}"


async def _drop_orphaned_test_databases() -> None:
    conn = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        names = [
            r["datname"]
            for r in await conn.fetch("SELECT datname FROM pg_database WHERE datname LIKE 'splitstone\\_%'")
        ]
        for name in names:
            parts = name.split("_")
            if len(parts) == 4 and parts[2].isdigit() and not _process_alive(int(parts[2])):
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(autouse=True)
def _structlog_config_restored() -> Iterator[None]:
    """A CLI command under test configures logging for its process (`demo seed` to warnings only); the
    next test must not inherit it, or `capture_logs` would miss every info line."""
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


@pytest.fixture(scope="session")
def migrated_template(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A migrated database to copy: a PostgreSQL template database, or a folder of SQLite files."""
    if backend == "sqlite":
        folder = tmp_path_factory.mktemp("sqlite-template")
        asyncio.run(_migrate_all(f"sqlite+aiosqlite:///{folder / 'splitstone.db'}"))
        yield str(folder)
        return
    require_service(_postgres_available(), "PostgreSQL")
    asyncio.run(_drop_orphaned_test_databases())
    name = _test_database_name("tpl")
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    asyncio.run(_migrate_all(_sqlalchemy_url(_asyncpg_dsn(name))))
    yield name
    asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


class _TemplateCopies:
    """Fresh copies of a PostgreSQL template database, each made while the test before runs.

    `CREATE DATABASE ... TEMPLATE` costs the server some 0.1 s of CPU a test. Made one ahead by a thread
    of its own, it runs on the machine's other core while the test (one Python thread) runs on its
    own; used copies are dropped the same way. Every test still gets a database nobody used before.
    """

    def __init__(self, template: str) -> None:
        self._template = template
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="template-copies")
        self._next = self._thread.submit(self._create)
        self._drops: list[Future[None]] = []

    def take(self) -> str:
        name = self._next.result()
        self._next = self._thread.submit(self._create)
        return name

    def discard(self, name: str) -> None:
        self._drops.append(self._thread.submit(asyncio.run, _drop_database(name)))

    def close(self) -> None:
        try:
            self.discard(self._next.result())
            for dropped in self._drops:
                dropped.result()  # a failed drop fails the run, as it did in each test's teardown
        finally:
            self._thread.shutdown(wait=True)

    def _create(self) -> str:
        name = _test_database_name("t")
        asyncio.run(_admin(f'CREATE DATABASE "{name}" TEMPLATE "{self._template}"'))
        return name


async def _drop_database(name: str) -> None:
    await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def _template_copies(migrated_template: str) -> Iterator[_TemplateCopies]:
    copies = _TemplateCopies(migrated_template)
    try:
        yield copies
    finally:
        copies.close()


@pytest.fixture
async def database_url(
    backend: str, migrated_template: str, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[str]:
    """A fresh, migrated database for one test."""
    if backend == "sqlite":
        folder = tmp_path / "db"
        shutil.copytree(migrated_template, folder)
        yield f"sqlite+aiosqlite:///{folder / 'splitstone.db'}"
        return
    copies: _TemplateCopies = request.getfixturevalue("_template_copies")
    name = await asyncio.to_thread(copies.take)
    try:
        yield _sqlalchemy_url(_asyncpg_dsn(name))
    finally:
        copies.discard(name)


@pytest.fixture
async def empty_database_url(backend: str, tmp_path: Path) -> AsyncIterator[str]:
    """A fresh database with nothing migrated."""
    if backend == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'empty' / 'splitstone.db'}"
        return
    require_service(await _probe_postgres(), "PostgreSQL")
    name = _test_database_name("e")
    await _admin(f'CREATE DATABASE "{name}"')
    try:
        yield _sqlalchemy_url(_asyncpg_dsn(name))
    finally:
        await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def clock() -> ManualClock:
    now = datetime.now(UTC).replace(microsecond=0)
    return ManualClock(now)


@pytest.fixture
def events() -> EventRecorder:
    return EventRecorder()


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(env=Environment.TEST, data_dir=tmp_path / "data", database_url=database_url)


@pytest.fixture
def module_settings() -> dict[str, ModuleSettings]:
    """Per-module settings for this test; override the fixture (or mutate the dict) to change them.

    Without "auth" here, the container hashes passwords with argon2 at its smallest cost."""
    return {}


@pytest.fixture
async def container(
    settings: Settings,
    clock: ManualClock,
    events: EventRecorder,
    module_settings: dict[str, ModuleSettings],
) -> AsyncIterator[Container]:
    built = Container.build(
        settings,
        _modules(),
        clock=clock,
        recorder=events,
        rate_limiter=RateLimiter("memory://"),
        module_settings={**_cheap_password_hashing(), **module_settings},
    )
    try:
        yield built
    finally:
        await built.aclose()


def _cheap_password_hashing() -> dict[str, ModuleSettings]:
    """Auth settings for a test that gives none: argon2 at its smallest cost (tests/support/passwords.py)."""
    from splitstone.modules.auth.settings import AuthSettings  # lazily, as `_modules()`

    return {"auth": AuthSettings(**CHEAP_ARGON2)}


@pytest.fixture
def app(container: Container) -> FastAPI:
    return create_app(container)


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 4711))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http
