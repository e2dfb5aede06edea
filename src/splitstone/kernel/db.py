"""Per-module persistence: one engine per module, its tables in its own schema (rule 3).

PostgreSQL: a schema named after the module. SQLite: every connection of a module's engine attaches
`<data dir>/<module>.db AS <module>`, so the same `schema="<module>"` table definitions work unchanged
and a module's connections cannot even see another module's tables.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, Self

from sqlalchemy import DateTime, Dialect, MetaData, TypeDecorator, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from splitstone.kernel.events import Event

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UtcDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on every backend (SQLite drops the zone; this puts it back)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; time is timezone-aware UTC everywhere")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def module_metadata(schema: str) -> MetaData:
    """The MetaData a module declares its tables on: its own schema, stable constraint names."""
    return MetaData(schema=schema, naming_convention=NAMING_CONVENTION)


class ModuleDatabase:
    """A module's database handle: its engine, its schema and its sessions."""

    def __init__(self, schema: str, engine: AsyncEngine) -> None:
        self.schema = schema
        self._raw_engine = engine
        # Tables declared without a schema (the kernel's outbox, inbox, jobs) land in this module's schema.
        self.engine = engine.execution_options(schema_translate_map={None: schema})
        # The same pool; on SQLite its transactions begin IMMEDIATE (see _sqlite_engine).
        self.write_engine = self.engine.execution_options(**{_SQLITE_IMMEDIATE: True})

    @classmethod
    def connect(cls, schema: str, url: str, *, pool_size: int = 5, echo: bool = False) -> Self:
        return cls(schema, create_module_engine(schema, url, pool_size=pool_size, echo=echo))

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncConnection]:
        """A connection for reads; nothing is committed."""
        async with self.engine.connect() as connection:
            yield connection

    async def ensure_schema(self) -> None:
        """Create the module's schema where that is a separate step (PostgreSQL)."""
        if self.engine.dialect.name == "postgresql":
            async with self.engine.begin() as conn:
                await conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"'))

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        await self._raw_engine.dispose()


def create_module_engine(schema: str, url: str, *, pool_size: int = 5, echo: bool = False) -> AsyncEngine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(schema, url, echo=echo)
    return create_async_engine(
        url, pool_size=pool_size, max_overflow=pool_size * 2, pool_pre_ping=True, echo=echo
    )


def sqlite_module_file(url: str, schema: str) -> Path:
    """Where a module's SQLite database lives: beside the main file, named after the module."""
    database = make_url(url).database
    if not database or database == ":memory:":
        raise ValueError("SQLite needs a file URL (sqlite+aiosqlite:///path/main.db), not an in-memory one")
    return Path(database).parent / f"{schema}.db"


def _sqlite_engine(schema: str, url: str, *, echo: bool) -> AsyncEngine:
    module_file = sqlite_module_file(url, schema)
    module_file.parent.mkdir(parents=True, exist_ok=True)
    engine = create_async_engine(url, echo=echo, connect_args={"timeout": 30})

    @event.listens_for(engine.sync_engine, "connect")
    def _attach(dbapi_connection: Any, _record: Any) -> None:
        # SQLAlchemy emits BEGIN itself (below), so the driver must not open transactions on its own.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA busy_timeout = 30000")
        cursor.execute("ATTACH DATABASE ? AS " + _quote(schema), (str(module_file),))
        cursor.execute(f"PRAGMA {_quote(schema)}.journal_mode = WAL")
        cursor.execute(f"PRAGMA {_quote(schema)}.synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _begin(connection: Any) -> None:
        # A deferred transaction that reads and then writes fails at once with SQLITE_BUSY when another
        # writer committed in between; busy_timeout cannot help it. Units of work therefore take the
        # write lock up front (BEGIN IMMEDIATE) and wait for it; plain reads stay deferred.
        immediate = connection.get_execution_options().get(_SQLITE_IMMEDIATE, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


_SQLITE_IMMEDIATE = "splitstone_sqlite_begin_immediate"


def _quote(identifier: str) -> str:
    if not identifier.isidentifier():
        raise ValueError(f"not a valid schema name: {identifier!r}")
    return f'"{identifier}"'


@dataclass(frozen=True)
class ScheduledJob:
    """Work to run later in this module (see `kernel.messaging.jobs`), staged with the state change."""

    kind: str
    payload: str
    run_at: datetime
    idempotency_key: str | None = None
    max_attempts: int | None = None


class TransactionSink(Protocol):
    """Where a unit of work writes its events and jobs: inside its transaction, then after commit."""

    async def stage(
        self, session: AsyncConnection, events: Sequence[Event], jobs: Sequence[ScheduledJob]
    ) -> None: ...

    def committed(self, events: Sequence[Event], jobs: Sequence[ScheduledJob]) -> None: ...


class UnitOfWork:
    """One transaction in one module's schema, plus the events and jobs it stages.

    Rolls back unless `commit()` is called. `commit()` writes the events to the module's outbox (and the
    jobs to its job table) in the same transaction as the state change: no event without the change,
    no change without the event. Inside an event or job handler, `uow()` joins the handler's
    transaction instead (see `ambient`), so the handler's writes and its inbox record commit together.
    """

    def __init__(self, db: ModuleDatabase, sink: TransactionSink, *, read_only: bool = False) -> None:
        self._db = db
        self._sink = sink
        self._read_only = read_only
        self._pending: list[Event] = []
        self._jobs: list[ScheduledJob] = []
        # Written into this transaction already (by handlers' savepoints); announced after the commit.
        self._staged_events: list[Event] = []
        self._staged_jobs: list[ScheduledJob] = []
        self._connection: AsyncConnection | None = None

    @property
    def db(self) -> ModuleDatabase:
        return self._db

    @property
    def session(self) -> AsyncConnection:
        """The transaction's connection (SQLAlchemy Core: `await uow.session.execute(statement)`)."""
        if self._connection is None:
            raise RuntimeError("UnitOfWork used outside 'async with'")
        return self._connection

    async def __aenter__(self) -> Self:
        bind = self._db.engine if self._read_only else self._db.write_engine
        self._connection = await bind.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        connection = self.session
        try:
            if connection.in_transaction():
                await connection.rollback()
        finally:
            await connection.close()
            self._connection = None
            self.discard_staged()

    def publish(self, *events: Event) -> None:
        if self._read_only:
            raise RuntimeError("a read-only unit of work publishes nothing")
        self._pending.extend(events)

    def schedule(self, job: ScheduledJob) -> None:
        if self._read_only:
            raise RuntimeError("a read-only unit of work schedules nothing")
        self._jobs.append(job)

    def staged_mark(self) -> tuple[int, int]:
        """A bookmark of what is staged so far, for `discard_staged(since=...)`."""
        return len(self._staged_events), len(self._staged_jobs)

    def discard_staged(self, since: tuple[int, int] = (0, 0)) -> None:
        """Forget unstaged events and jobs, and those staged after `since` (their savepoint rolled back)."""
        self._pending.clear()
        self._jobs.clear()
        del self._staged_events[since[0] :]
        del self._staged_jobs[since[1] :]

    async def stage(self) -> None:
        """Write pending events and jobs into this transaction; they are announced after the commit."""
        events, self._pending = self._pending, []
        jobs, self._jobs = self._jobs, []
        if events or jobs:
            await self._sink.stage(self.session, events, jobs)
            self._staged_events.extend(events)
            self._staged_jobs.extend(jobs)

    async def commit(self) -> None:
        await self.stage()
        await self.session.commit()
        events, self._staged_events = self._staged_events, []
        jobs, self._staged_jobs = self._staged_jobs, []
        if events or jobs:
            self._sink.committed(events, jobs)


class _JoinedUnitOfWork:
    """A handler's `uow()`: the ambient transaction, which the handler's runner commits or rolls back."""

    def __init__(self, outer: UnitOfWork) -> None:
        self._outer = outer

    @property
    def session(self) -> AsyncConnection:
        return self._outer.session

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        return None

    def publish(self, *events: Event) -> None:
        self._outer.publish(*events)

    def schedule(self, job: ScheduledJob) -> None:
        self._outer.schedule(job)

    async def commit(self) -> None:
        return None  # the runner commits the whole transaction


_ambient: ContextVar[UnitOfWork | None] = ContextVar("splitstone_ambient_uow", default=None)


@contextmanager
def ambient(uow: UnitOfWork) -> Iterator[None]:
    """Within this block, the module's `uow()` joins `uow` (used by event and job runners)."""
    token = _ambient.set(uow)
    try:
        yield
    finally:
        _ambient.reset(token)


class UnitOfWorkFactory:
    """What a module's service receives: `async with self.uow() as uow: ...; await uow.commit()`."""

    def __init__(self, db: ModuleDatabase, sink: TransactionSink) -> None:
        self.db = db
        self.sink = sink

    def __call__(self, *, read_only: bool = False) -> UnitOfWork:
        """A unit of work; `read_only=True` for pure reads (on SQLite they need not take the write lock)."""
        outer = _ambient.get()
        if outer is not None and outer.db is self.db:
            return _JoinedUnitOfWork(outer)  # type: ignore[return-value]  # same interface, joined
        return UnitOfWork(self.db, self.sink, read_only=read_only)


async def dispose_all(databases: Iterable[ModuleDatabase]) -> None:
    for db in databases:
        await db.dispose()
