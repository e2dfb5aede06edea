"""What an operator sees and does with the messaging tables: backlogs, dead letters, retry and discard.

Free of any command-line framework: `splitstone events ...` and `splitstone jobs ...` render what this
returns, and a test or an admin endpoint can call it alike.

A dead letter is never deleted here:

- **retry** sets a dead row back to `pending`, with its attempts reset to 0 and `next_attempt_at` now,
  and keeps its `last_error` for history (a later success clears it). The module's inbox processor or
  job runner then runs it again. Retries always run from the inbox table, whatever the transport, so
  nothing needs to be republished.
- **discard** marks a dead row `discarded` and stamps `handled_at` (`finished_at` for a job) with the
  time. It is never run again, and the row stays for audit. For the inbox this also matters for
  correctness: the row is the dedupe record, so a redelivery of the same event stays ignored, whereas a
  deleted row would let a redelivered event run its handler after all.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Generic, TypeVar
from uuid import UUID

from sqlalchemy import ColumnElement, RowMapping, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from splitstone.kernel.clock import Clock
from splitstone.kernel.db import ModuleDatabase
from splitstone.kernel.messaging.queues import DEAD, DISCARDED, DONE, PENDING
from splitstone.kernel.messaging.tables import inbox, jobs, outbox
from splitstone.kernel.messaging.traces import trace_id
from splitstone.kernel.messaging.wakeups import INBOX, JOBS, notify

if TYPE_CHECKING:
    from splitstone.kernel.container import Container


STATUSES = (PENDING, DONE, DEAD, DISCARDED)


class UnknownModule(LookupError):
    """A module name that is not part of this process."""


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def _age(now: datetime, since: datetime | None) -> float | None:
    return None if since is None else max(0.0, (now - since).total_seconds())


@dataclass(frozen=True)
class OutboxStatus:
    """A module's unpublished events: how many, how old the oldest is, and whether the transport refuses."""

    unpublished: int
    oldest_unpublished_at: datetime | None
    lag_seconds: float | None
    failing: int
    """Unpublished rows whose last publish attempt failed (the transport refused them)."""
    last_error: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "unpublished": self.unpublished,
            "oldest_unpublished_at": _iso(self.oldest_unpublished_at),
            "lag_seconds": self.lag_seconds,
            "failing": self.failing,
            "last_error": self.last_error,
        }


@dataclass(frozen=True)
class QueueStatus:
    """Rows of an inbox or a job table by status, and how long the oldest due row has waited."""

    pending: int
    retrying: int
    """Pending rows that failed at least once (waiting for their next attempt, not dead yet)."""
    done: int
    dead: int
    discarded: int
    lag_seconds: float | None
    """How long ago the oldest pending row became due; None when nothing is due."""

    def to_json(self) -> dict[str, Any]:
        return {
            "pending": self.pending,
            "retrying": self.retrying,
            "done": self.done,
            "dead": self.dead,
            "discarded": self.discarded,
            "lag_seconds": self.lag_seconds,
        }


@dataclass(frozen=True)
class ModuleStatus:
    module: str
    outbox: OutboxStatus
    inbox: QueueStatus
    jobs: QueueStatus

    def to_json(self) -> dict[str, Any]:
        return {
            "module": self.module,
            "outbox": self.outbox.to_json(),
            "inbox": self.inbox.to_json(),
            "jobs": self.jobs.to_json(),
        }


@dataclass(frozen=True)
class InboxEntry:
    """One (event, handler) row of a module's inbox."""

    module: str
    handler: str
    event_id: UUID
    event_name: str
    status: str
    attempts: int
    last_error: str | None
    occurred_at: datetime
    received_at: datetime
    next_attempt_at: datetime
    handled_at: datetime | None
    request_id: str | None = None
    trace_id: str | None = None
    """Of the trace that published the event: its handler's log lines carry the same."""

    @classmethod
    def of(cls, module: str, row: RowMapping) -> InboxEntry:
        return cls(
            module=module,
            handler=row["handler"],
            event_id=row["event_id"],
            event_name=row["event_name"],
            status=row["status"],
            attempts=row["attempts"],
            last_error=row["last_error"],
            occurred_at=row["occurred_at"],
            received_at=row["received_at"],
            next_attempt_at=row["next_attempt_at"],
            handled_at=row["handled_at"],
            request_id=row["request_id"],
            trace_id=trace_id(row["traceparent"]),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "module": self.module,
            "handler": self.handler,
            "event_id": str(self.event_id),
            "event_name": self.event_name,
            "status": self.status,
            "attempts": self.attempts,
            "last_error": self.last_error,
            "occurred_at": _iso(self.occurred_at),
            "received_at": _iso(self.received_at),
            "next_attempt_at": _iso(self.next_attempt_at),
            "handled_at": _iso(self.handled_at),
            "request_id": self.request_id,
            "trace_id": self.trace_id,
        }


@dataclass(frozen=True)
class JobEntry:
    """One row of a module's job table."""

    module: str
    id: UUID
    kind: str
    idempotency_key: str | None
    status: str
    attempts: int
    max_attempts: int
    last_error: str | None
    run_at: datetime
    created_at: datetime
    next_attempt_at: datetime
    finished_at: datetime | None
    request_id: str | None = None
    trace_id: str | None = None
    """Of the trace that scheduled the job: its handler's log lines carry the same."""

    @classmethod
    def of(cls, module: str, row: RowMapping) -> JobEntry:
        return cls(
            module=module,
            id=row["id"],
            kind=row["kind"],
            idempotency_key=row["idempotency_key"],
            status=row["status"],
            attempts=row["attempts"],
            max_attempts=row["max_attempts"],
            last_error=row["last_error"],
            run_at=row["run_at"],
            created_at=row["created_at"],
            next_attempt_at=row["next_attempt_at"],
            finished_at=row["finished_at"],
            request_id=row["request_id"],
            trace_id=trace_id(row["traceparent"]),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "module": self.module,
            "id": str(self.id),
            "kind": self.kind,
            "idempotency_key": self.idempotency_key,
            "status": self.status,
            "attempts": self.attempts,
            "max_attempts": self.max_attempts,
            "last_error": self.last_error,
            "run_at": _iso(self.run_at),
            "created_at": _iso(self.created_at),
            "next_attempt_at": _iso(self.next_attempt_at),
            "finished_at": _iso(self.finished_at),
            "request_id": self.request_id,
            "trace_id": self.trace_id,
        }


T = TypeVar("T")


@dataclass(frozen=True)
class Page(Generic[T]):
    """Some of the matching rows (at most the limit), and how many matched in all."""

    items: list[T]
    total: int


class MessagingAdmin:
    """Queries and repairs over the outbox, inbox and job table of each module of this process."""

    def __init__(self, databases: Mapping[str, ModuleDatabase], clock: Clock) -> None:
        self._databases = dict(databases)
        self._clock = clock

    @classmethod
    def for_container(cls, container: Container) -> MessagingAdmin:
        return cls({m.name: container.databases[m.name] for m in container.modules}, container.clock)

    @property
    def modules(self) -> list[str]:
        return list(self._databases)

    def now(self) -> datetime:
        """The time by the container's clock (what lags are measured against)."""
        return self._clock.now()

    # --- status ----------------------------------------------------------------------------------

    async def status(self) -> list[ModuleStatus]:
        """Every module's outbox backlog, inbox and job counts, in dependency order."""
        now = self._clock.now()
        result = []
        for module, db in self._databases.items():
            async with db.session() as session:
                result.append(
                    ModuleStatus(
                        module=module,
                        outbox=await _outbox_status(session, now),
                        inbox=await _queue_status(session, inbox, now),
                        jobs=await _queue_status(session, jobs, now),
                    )
                )
        return result

    # --- the inbox's dead letters ------------------------------------------------------------------

    async def dead_events(self, *, module: str | None = None, limit: int = 50) -> Page[InboxEntry]:
        """Dead inbox rows, oldest received first."""
        order = (inbox.c.received_at, inbox.c.event_id, inbox.c.handler)
        found: list[InboxEntry] = []
        total = 0
        for name, db in self._select(module):
            async with db.session() as session:
                dead = inbox.c.status == DEAD
                total += int((await session.execute(select(func.count()).where(dead))).scalar_one())
                rows = await session.execute(select(inbox).where(dead).order_by(*order).limit(limit))
                found.extend(InboxEntry.of(name, row) for row in rows.mappings())
        found.sort(key=lambda e: (e.received_at, str(e.event_id), e.handler))
        return Page(found[:limit], total)

    async def retry_events(
        self,
        event_id: UUID | None = None,
        *,
        handler: str | None = None,
        module: str | None = None,
        every: bool = False,
    ) -> list[InboxEntry]:
        """Set dead inbox rows back to pending, attempts 0, due now; the rows changed.

        One event's rows (in every handler that gave up on it, unless `handler` narrows), or with
        `every=True` all dead rows (of `module`, if given).
        """
        now = self._clock.now()
        changes = {"status": PENDING, "attempts": 0, "next_attempt_at": now, "handled_at": None}
        return await self._change_dead_events(changes, event_id, handler, module, every)

    async def discard_events(
        self,
        event_id: UUID | None = None,
        *,
        handler: str | None = None,
        module: str | None = None,
        every: bool = False,
    ) -> list[InboxEntry]:
        """Mark dead inbox rows discarded: never run again, kept for audit and deduplication."""
        changes = {"status": DISCARDED, "handled_at": self._clock.now()}
        return await self._change_dead_events(changes, event_id, handler, module, every)

    async def find_event(self, event_id: UUID, *, module: str | None = None) -> list[InboxEntry]:
        """Every inbox row of an event, whatever its status (to explain why nothing matched)."""
        found: list[InboxEntry] = []
        for name, db in self._select(module):
            async with db.session() as session:
                rows = await session.execute(select(inbox).where(inbox.c.event_id == event_id))
                found.extend(InboxEntry.of(name, row) for row in rows.mappings())
        return found

    async def _change_dead_events(
        self,
        changes: Mapping[str, object],
        event_id: UUID | None,
        handler: str | None,
        module: str | None,
        every: bool,
    ) -> list[InboxEntry]:
        _check_selection(event_id, every)
        where: list[ColumnElement[bool]] = [inbox.c.status == DEAD]
        if event_id is not None:
            where.append(inbox.c.event_id == event_id)
        if handler is not None:
            where.append(inbox.c.handler == handler)
        statement = update(inbox).where(*where).values(**changes).returning(*inbox.c)
        changed: list[InboxEntry] = []
        for name, db in self._select(module):
            changed.extend(InboxEntry.of(name, row) for row in await _write(db, statement, wake=INBOX))
        return changed

    # --- the job table's dead letters --------------------------------------------------------------

    async def dead_jobs(self, *, module: str | None = None, limit: int = 50) -> Page[JobEntry]:
        """Dead jobs, oldest created first."""
        found: list[JobEntry] = []
        total = 0
        for name, db in self._select(module):
            async with db.session() as session:
                dead = jobs.c.status == DEAD
                total += int((await session.execute(select(func.count()).where(dead))).scalar_one())
                query = select(jobs).where(dead).order_by(jobs.c.created_at, jobs.c.id).limit(limit)
                found.extend(JobEntry.of(name, row) for row in (await session.execute(query)).mappings())
        found.sort(key=lambda j: (j.created_at, str(j.id)))
        return Page(found[:limit], total)

    async def retry_jobs(
        self,
        job_id: UUID | None = None,
        *,
        kind: str | None = None,
        module: str | None = None,
        every: bool = False,
    ) -> list[JobEntry]:
        """Set dead jobs back to pending, attempts 0, due now; the jobs changed."""
        now = self._clock.now()
        changes = {"status": PENDING, "attempts": 0, "next_attempt_at": now, "finished_at": None}
        return await self._change_dead_jobs(changes, job_id, kind, module, every)

    async def discard_jobs(
        self,
        job_id: UUID | None = None,
        *,
        kind: str | None = None,
        module: str | None = None,
        every: bool = False,
    ) -> list[JobEntry]:
        """Mark dead jobs discarded: never run again, kept for audit."""
        changes = {"status": DISCARDED, "finished_at": self._clock.now()}
        return await self._change_dead_jobs(changes, job_id, kind, module, every)

    async def find_job(self, job_id: UUID, *, module: str | None = None) -> list[JobEntry]:
        found: list[JobEntry] = []
        for name, db in self._select(module):
            async with db.session() as session:
                rows = await session.execute(select(jobs).where(jobs.c.id == job_id))
                found.extend(JobEntry.of(name, row) for row in rows.mappings())
        return found

    async def _change_dead_jobs(
        self,
        changes: Mapping[str, object],
        job_id: UUID | None,
        kind: str | None,
        module: str | None,
        every: bool,
    ) -> list[JobEntry]:
        _check_selection(job_id, every)
        where: list[ColumnElement[bool]] = [jobs.c.status == DEAD]
        if job_id is not None:
            where.append(jobs.c.id == job_id)
        if kind is not None:
            where.append(jobs.c.kind == kind)
        statement = update(jobs).where(*where).values(**changes).returning(*jobs.c)
        changed: list[JobEntry] = []
        for name, db in self._select(module):
            changed.extend(JobEntry.of(name, row) for row in await _write(db, statement, wake=JOBS))
        return changed

    # --- helpers ---------------------------------------------------------------------------------

    def _select(self, module: str | None) -> list[tuple[str, ModuleDatabase]]:
        if module is None:
            return list(self._databases.items())
        if module not in self._databases:
            known = ", ".join(self._databases) or "none"
            raise UnknownModule(f"no module named {module!r} (modules: {known})")
        return [(module, self._databases[module])]


def _check_selection(key: UUID | None, every: bool) -> None:
    # Changing every dead letter at once must be asked for, never the result of a missing id.
    if key is None and not every:
        raise ValueError("name a dead letter by id, or ask for every one")
    if key is not None and every:
        raise ValueError("name a dead letter by id, or ask for every one, not both")


async def _write(db: ModuleDatabase, statement: Any, *, wake: str) -> Sequence[RowMapping]:
    """One statement in its own transaction (on SQLite, holding the write lock from the start).

    Rows set back to pending wake the running workers' `wake` loop at commit (PostgreSQL NOTIFY).
    """
    async with db.write_engine.begin() as connection:
        rows: Sequence[RowMapping] = (await connection.execute(statement)).mappings().all()
        if rows:
            await notify(connection, db.schema, wake)
    return rows


async def _outbox_status(session: AsyncConnection, now: datetime) -> OutboxStatus:
    unpublished = outbox.c.published_at.is_(None)
    count, oldest, failing = (
        await session.execute(
            select(
                func.count(),
                func.min(outbox.c.created_at),
                func.count().filter(outbox.c.last_error.is_not(None)),
            ).where(unpublished)
        )
    ).one()
    last_error = (
        await session.execute(
            select(outbox.c.last_error)
            .where(unpublished, outbox.c.last_error.is_not(None))
            .order_by(outbox.c.position.desc())
            .limit(1)
        )
    ).scalar()
    return OutboxStatus(int(count), oldest, _age(now, oldest), int(failing), last_error)


async def _queue_status(session: AsyncConnection, table: Any, now: datetime) -> QueueStatus:
    counts = dict.fromkeys(STATUSES, 0)
    grouped = await session.execute(select(table.c.status, func.count()).group_by(table.c.status))
    for status, count in grouped.all():
        counts[status] = int(count)
    retrying, oldest_due = (
        await session.execute(
            select(
                func.count().filter(table.c.attempts > 0),
                func.min(table.c.next_attempt_at).filter(table.c.next_attempt_at <= now),
            ).where(table.c.status == PENDING)
        )
    ).one()
    return QueueStatus(
        pending=counts[PENDING],
        retrying=int(retrying),
        done=counts[DONE],
        dead=counts[DEAD],
        discarded=counts[DISCARDED],
        lag_seconds=_age(now, oldest_due),
    )
