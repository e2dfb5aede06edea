"""Per-module persistence: one engine per module, its tables in its own schema (rule 3).

PostgreSQL: a schema named after the module. SQLite: every connection of a module's engine attaches
`<data dir>/<module>.db AS <module>`, so the same `schema="<module>"` table definitions work unchanged
and a module's connections cannot even see another module's tables.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, Self
from uuid import UUID

import structlog
from sqlalchemy import DateTime, Dialect, MetaData, Table, TypeDecorator, event, text
from sqlalchemy.dialects import postgresql as pg
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from splitstone.kernel import tracing
from splitstone.kernel.events import Event
from splitstone.kernel.reads import FetchedRow, PreparedQuery
from splitstone.kernel.tracing import TraceContext

_log = structlog.get_logger("splitstone.db")

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

    def result_processor(self, dialect: Dialect, coltype: object) -> Callable[[Any], Any] | None:
        # asyncpg already returns every timestamptz as an aware UTC datetime: nothing to do per value.
        if dialect.driver == "asyncpg":
            return None
        return super().result_processor(dialect, coltype)


def upsert_insert(table: Table, dialect: Dialect) -> pg.Insert | sqlite.Insert:
    """`INSERT` with `on_conflict_do_nothing` / `on_conflict_do_update`, for this connection's dialect.

    PostgreSQL and SQLite spell upserts alike (`ON CONFLICT`), and SQLAlchemy offers them per dialect.
    """
    if dialect.name == "postgresql":
        return pg.insert(table)
    return sqlite.insert(table)


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
        # Read-only units of work on PostgreSQL run without BEGIN and ROLLBACK: at READ COMMITTED each
        # statement reads its own snapshot inside a transaction too, so it only cost two round trips.
        # SQLite keeps its deferred transaction (one snapshot for the unit's reads, as WAL gives it).
        self.read_engine = (
            self.engine.execution_options(isolation_level="AUTOCOMMIT")
            if engine.dialect.name == "postgresql"
            else self.engine
        )

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
        """Create the module's schema where that is a separate step (PostgreSQL).

        A schema that exists is left alone: a module's own role may own its schema without the right
        to create schemas, which even `CREATE SCHEMA IF NOT EXISTS` requires.
        """
        if self.engine.dialect.name == "postgresql":
            async with self.engine.begin() as conn:
                exists = await conn.scalar(
                    text("SELECT 1 FROM pg_namespace WHERE nspname = :schema"), {"schema": self.schema}
                )
                if not exists:
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
    # Up to 3 x pool_size connections, each kept once opened (no overflow): an asyncio process holds
    # its connections while requests wait for the event loop, so an overflow connection was closed on
    # return and opened again moments later, a connect for every few requests under load.
    engine = create_async_engine(url, pool_size=pool_size * 3, max_overflow=0, echo=echo)
    event.listen(engine.sync_engine, "checkout", _refuse_closed)
    return engine


def _refuse_closed(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
    """Replace a pooled connection the server has closed (a restart, an idle timeout) before use.

    asyncpg notices the server closing a connection while it sits in the pool, so this check costs no
    round trip, where `pool_pre_ping` costs three (BEGIN, a ping, ROLLBACK) on every checkout. The pool
    answers `DisconnectionError` by connecting afresh.
    """
    if dbapi_connection.driver_connection.is_closed():
        raise DisconnectionError("the server closed this pooled connection")


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

    @event.listens_for(engine.sync_engine, "do_connect")
    def _private_main(_dialect: Any, _record: Any, cargs: list[Any], _cparams: Any) -> None:
        # The module's tables are in the attached file; "main" holds nothing, so each connection gets a
        # private in-memory one. A shared main file would be locked by every BEGIN IMMEDIATE (it locks
        # all of a connection's databases): two modules' write transactions would exclude each other,
        # and a use case that calls another module's inside its own would wait for itself.
        cargs[0] = ":memory:"

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
    trace: TraceContext | None = field(default=None, compare=False)
    """The trace the job continues: the one current when it was scheduled (set by `uow.schedule`)."""


Rows = tuple[Table, list[dict[str, Any]]]
"""Rows for one table, every one with the same keys (see `UnitOfWork.insert`)."""


class TransactionSink(Protocol):
    """Where a unit of work writes its events and jobs: inside its transaction, then after commit.

    `traces` holds, by event id, the trace context current when each event was published (none for
    events published outside a trace). `rows` are the rows given to `UnitOfWork.insert`, written in
    the same go. On PostgreSQL `stage` writes everything in one statement: a unit of work that wrote
    nothing else sends it alone, outside any transaction block.
    """

    async def stage(
        self,
        session: AsyncConnection,
        events: Sequence[Event],
        jobs: Sequence[ScheduledJob],
        traces: Mapping[UUID, TraceContext],
        rows: Sequence[Rows] = (),
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
        self._rows: list[Rows] = []
        # Written into this transaction already (by handlers' savepoints); announced after the commit.
        self._staged_events: list[Event] = []
        self._staged_jobs: list[ScheduledJob] = []
        self._after_commit: list[Callable[[], None]] = []
        # The trace each event was published in, by event id: a handler's events continue its trace
        # even when the runner stages a whole batch of handlers' events at once.
        self._traces: dict[UUID, TraceContext] = {}
        self._connection: AsyncConnection | None = None
        # The handler's units of work joined to this one, innermost last (see _JoinedUnitOfWork).
        self._joined: list[_JoinedUnitOfWork] = []
        self.abandoned: str | None = None

    @property
    def db(self) -> ModuleDatabase:
        return self._db

    @property
    def session(self) -> AsyncConnection:
        """The transaction's connection (SQLAlchemy Core: `await uow.session.execute(statement)`)."""
        if self._connection is None:
            raise RuntimeError("UnitOfWork used outside 'async with'")
        return self._connection

    async def fetch_all(self, query: PreparedQuery, **params: Any) -> Sequence[FetchedRow]:
        """The rows of a prepared read (`kernel.reads`); a read-only unit runs it on the driver itself."""
        return await query.fetch_all(self.session, params, direct=self._read_only)

    async def fetch_one(self, query: PreparedQuery, **params: Any) -> FetchedRow | None:
        """The first row of a prepared read, or None."""
        return await query.fetch_one(self.session, params, direct=self._read_only)

    async def __aenter__(self) -> Self:
        bind = self._db.read_engine if self._read_only else self._db.write_engine
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
            self._traces.clear()
            self.abandoned = None

    def publish(self, *events: Event) -> None:
        if self._read_only:
            raise RuntimeError("a read-only unit of work publishes nothing")
        self._pending.extend(events)
        context = tracing.current()
        if context is not None:
            for event in events:
                self._traces[event.id] = context

    def insert(self, table: Table, rows: Iterable[Mapping[str, Any]]) -> None:
        """Insert `rows` into `table` with this unit's events and jobs, when it stages them (at commit).

        For rows nothing later in the transaction reads or counts on: the append-only kind (a new
        task's labels, an activity entry). On PostgreSQL they reach the server in the one statement
        that writes the outbox, a round trip per table fewer; a constraint they break fails the commit.
        """
        if self._read_only:
            raise RuntimeError("a read-only unit of work writes nothing")
        self._rows.extend(_grouped(table, rows))

    def schedule(self, job: ScheduledJob) -> None:
        if self._read_only:
            raise RuntimeError("a read-only unit of work schedules nothing")
        if job.trace is None:
            context = tracing.current()
            if context is not None:
                job = replace(job, trace=context)
        self._jobs.append(job)

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Call `callback` once this transaction has committed (never if it rolls back).

        For in-process nudges about the committed data, such as waking live streams. Inside a handler
        it waits for the handler's transaction. A failing callback is logged, not raised.
        """
        self._after_commit.append(callback)

    def staged_mark(self) -> tuple[int, int, int]:
        """A bookmark of what is staged so far, for `discard_staged(since=...)`."""
        return len(self._staged_events), len(self._staged_jobs), len(self._after_commit)

    def discard_staged(self, since: tuple[int, int, int] = (0, 0, 0)) -> None:
        """Forget unstaged events and jobs, and what was staged after `since` (its savepoint rolled back)."""
        self._pending.clear()
        self._jobs.clear()
        self._rows.clear()
        del self._staged_events[since[0] :]
        del self._staged_jobs[since[1] :]
        del self._after_commit[since[2] :]

    async def stage(self) -> None:
        """Write pending rows, events and jobs into this transaction; events and jobs are announced after
        the commit."""
        events, self._pending = self._pending, []
        jobs, self._jobs = self._jobs, []
        rows, self._rows = self._rows, []
        if events or jobs or rows:
            await self._sink.stage(self.session, events, jobs, self._traces, rows)
            self._staged_events.extend(events)
            self._staged_jobs.extend(jobs)

    def abandon(self, reason: str) -> None:
        """Mark this transaction as one that must not commit: part of it cannot be undone alone."""
        if self.abandoned is None:
            self.abandoned = reason

    async def commit(self) -> None:
        if self.abandoned is not None:
            raise RuntimeError(f"this unit of work cannot commit: {self.abandoned}")
        connection = self.session
        if not self._db.is_sqlite and not connection.in_transaction():
            # Nothing was written before the commit: what is staged is the whole transaction, and on
            # PostgreSQL the sink writes it in one statement, atomic by itself. Sent without BEGIN and
            # COMMIT, it costs one round trip instead of three.
            await connection.execution_options(isolation_level="AUTOCOMMIT")
        await self.stage()
        await connection.commit()
        events, self._staged_events = self._staged_events, []
        jobs, self._staged_jobs = self._staged_jobs, []
        callbacks, self._after_commit = self._after_commit, []
        if events or jobs:
            self._sink.committed(events, jobs)
        for callback in callbacks:
            try:
                callback()
            except Exception:
                _log.exception("an after-commit callback failed", module=self._db.schema)


class _JoinedUnitOfWork:
    """A handler's `uow()`: it joins the handler's transaction, which the handler's runner commits.

    It keeps the contract of every unit of work, "rolled back unless committed", so a handler may call
    its module's use cases and carry on when one fails. Its events and jobs go to the enclosing unit of
    work only through `commit()`. Its writes, when it ends without a commit, are undone by rolling back
    to a savepoint of its own if the runner asked for savepoints (`ambient(..., savepoints=True)`). If
    it did not (the inbox's fast path spares those statements), they cannot be undone alone: the
    ambient unit of work is marked abandoned, and the runner runs the handler again with savepoints.
    What it does after its `commit()` goes with the handler's transaction (as a standalone unit's
    reads after a commit are harmless; writes there without a second commit are a bug either way).
    """

    def __init__(self, outer: UnitOfWork, *, savepoints: bool, read_only: bool) -> None:
        self._outer = outer
        self._savepoints = savepoints and not read_only
        self._read_only = read_only
        self._events: list[Event] = []
        self._jobs: list[ScheduledJob] = []
        self._rows: list[Rows] = []
        self._callbacks: list[Callable[[], None]] = []
        self._savepoint_open = False
        self._touched = False  # its connection was handed out (or a nested one committed) since a commit

    @property
    def session(self) -> AsyncConnection:
        self._touched = True
        return self._outer.session

    async def fetch_all(self, query: PreparedQuery, **params: Any) -> Sequence[FetchedRow]:
        return await query.fetch_all(self.session, params, direct=False)

    async def fetch_one(self, query: PreparedQuery, **params: Any) -> FetchedRow | None:
        return await query.fetch_one(self.session, params, direct=False)

    async def __aenter__(self) -> Self:
        if self._savepoints:
            await self._outer.session.exec_driver_sql(f"SAVEPOINT {_JOINED_SAVEPOINT}")
            self._savepoint_open = True
        self._outer._joined.append(self)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._outer._joined.remove(self)
        self._events.clear()
        self._jobs.clear()
        self._rows.clear()
        self._callbacks.clear()
        if self._savepoint_open:
            self._savepoint_open = False
            connection = self._outer.session
            await connection.exec_driver_sql(f"ROLLBACK TO SAVEPOINT {_JOINED_SAVEPOINT}")
            await connection.exec_driver_sql(f"RELEASE SAVEPOINT {_JOINED_SAVEPOINT}")
        elif self._touched and not self._read_only and not self._savepoints:
            self._outer.abandon(
                "a unit of work in a handler ended without commit, with no savepoint to undo it"
            )

    def publish(self, *events: Event) -> None:
        if self._read_only:
            raise RuntimeError("a read-only unit of work publishes nothing")
        self._events.extend(events)

    def insert(self, table: Table, rows: Iterable[Mapping[str, Any]]) -> None:
        if self._read_only:
            raise RuntimeError("a read-only unit of work writes nothing")
        self._rows.extend(_grouped(table, rows))

    def schedule(self, job: ScheduledJob) -> None:
        if self._read_only:
            raise RuntimeError("a read-only unit of work schedules nothing")
        self._jobs.append(job)

    def after_commit(self, callback: Callable[[], None]) -> None:
        self._callbacks.append(callback)

    async def commit(self) -> None:
        """Keep this unit's work: its runner commits it with the handler's transaction."""
        if self._savepoint_open:
            self._savepoint_open = False
            await self._outer.session.exec_driver_sql(f"RELEASE SAVEPOINT {_JOINED_SAVEPOINT}")
        # Its events share the fate of its writes: those of the unit it is nested in, if any.
        position = self._outer._joined.index(self)
        enclosing = self._outer._joined[position - 1] if position else None
        if enclosing is None:
            self._outer.publish(*self._events)
            for job in self._jobs:
                self._outer.schedule(job)
            self._outer._rows.extend(self._rows)
            for callback in self._callbacks:
                self._outer.after_commit(callback)
        else:
            enclosing._events.extend(self._events)
            enclosing._jobs.extend(self._jobs)
            enclosing._rows.extend(self._rows)
            enclosing._callbacks.extend(self._callbacks)
            enclosing._touched = enclosing._touched or self._touched
        self._events.clear()
        self._jobs.clear()
        self._rows.clear()
        self._callbacks.clear()
        self._touched = False


def _grouped(table: Table, rows: Iterable[Mapping[str, Any]]) -> list[Rows]:
    """`rows` as runs of rows with the same keys (each run is one INSERT)."""
    runs: list[Rows] = []
    keys: tuple[str, ...] | None = None
    for row in rows:
        row_keys = tuple(row)
        if row_keys != keys:
            runs.append((table, []))
            keys = row_keys
        runs[-1][1].append(dict(row))
    return runs


_JOINED_SAVEPOINT = "splitstone_uow"
_ambient: ContextVar[tuple[UnitOfWork, bool] | None] = ContextVar("splitstone_ambient_uow", default=None)


@contextmanager
def ambient(uow: UnitOfWork, *, savepoints: bool = False) -> Iterator[None]:
    """Within this block, the module's `uow()` joins `uow` (used by event and job runners).

    With `savepoints`, each joined unit of work runs behind a savepoint of its own, so one that ends
    without a commit undoes its writes alone; without, such a unit marks `uow` abandoned instead
    (see `_JoinedUnitOfWork`), and the runner must then not commit `uow`.
    """
    token = _ambient.set((uow, savepoints))
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
        joined = _ambient.get()
        if joined is not None and joined[0].db is self.db:
            outer, savepoints = joined
            # The same interface, joined to the handler's transaction.
            return _JoinedUnitOfWork(outer, savepoints=savepoints, read_only=read_only)  # type: ignore[return-value]
        return UnitOfWork(self.db, self.sink, read_only=read_only)


async def dispose_all(databases: Iterable[ModuleDatabase]) -> None:
    for db in databases:
        await db.dispose()
