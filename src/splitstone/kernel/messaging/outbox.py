"""The outbox: events written with the state change, and the relay that hands them to the transport."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from uuid import UUID

import structlog
from sqlalchemy import RowMapping, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from splitstone.kernel.clock import Clock
from splitstone.kernel.db import ModuleDatabase, Rows, ScheduledJob
from splitstone.kernel.events import Envelope, Event
from splitstone.kernel.messaging.crashpoints import crashpoint
from splitstone.kernel.messaging.jobs import insert_jobs, job_rows
from splitstone.kernel.messaging.retry import RetryPolicy
from splitstone.kernel.messaging.signals import Wakeup
from splitstone.kernel.messaging.staging import staging
from splitstone.kernel.messaging.tables import outbox
from splitstone.kernel.messaging.traces import hop
from splitstone.kernel.messaging.transport import Transport
from splitstone.kernel.tracing import TraceContext

log = structlog.get_logger("splitstone.outbox")

CommitListener = Callable[[Sequence[Event], Sequence[ScheduledJob]], None]


class OutboxSink:
    """A module's `TransactionSink`: events into its outbox, jobs into its job table, same transaction."""

    def __init__(
        self,
        db: ModuleDatabase,
        clock: Clock,
        *,
        default_job_attempts: int,
        on_commit: Sequence[CommitListener] = (),
    ) -> None:
        self._db = db
        self._clock = clock
        self._default_job_attempts = default_job_attempts
        self._on_commit = list(on_commit)
        self.outbox_ready = Wakeup()
        self.jobs_ready = Wakeup()

    def add_commit_listener(self, listener: CommitListener) -> None:
        self._on_commit.append(listener)

    async def stage(
        self,
        session: AsyncConnection,
        events: Sequence[Event],
        jobs: Sequence[ScheduledJob],
        traces: Mapping[UUID, TraceContext],
        rows: Sequence[Rows] = (),
    ) -> None:
        now = self._clock.now()
        event_rows = [_outbox_row(e, traces.get(e.id), now) for e in events]
        scheduled = job_rows(jobs, now=now, default_attempts=self._default_job_attempts)
        if session.dialect.name == "postgresql":
            if rows or event_rows or scheduled:
                await session.execute(*staging(self._db.schema, rows, event_rows, scheduled))
            return
        for table, group in rows:
            await session.execute(insert(table), group)
        if event_rows:
            await session.execute(insert(outbox), event_rows)
        if scheduled:
            await session.execute(insert_jobs(session.dialect), scheduled)

    def committed(self, events: Sequence[Event], jobs: Sequence[ScheduledJob]) -> None:
        if events:
            self.outbox_ready.set()
        if jobs:
            self.jobs_ready.set()
        for listener in self._on_commit:
            listener(events, jobs)


def _outbox_row(event: Event, trace: TraceContext | None, now: datetime) -> dict[str, object]:
    traceparent, request_id = hop(trace)
    return {
        "event_id": event.id,
        "event_name": event.name,
        "event_version": event.version,
        "aggregate_id": event.aggregate_id,
        "occurred_at": event.occurred_at,
        "payload": event.model_dump_json(),
        "created_at": now,
        "traceparent": traceparent,
        "request_id": request_id,
    }


class Relay:
    """Claims unpublished outbox rows in order and hands them to the transport.

    PostgreSQL: rows are claimed `FOR UPDATE SKIP LOCKED` for the length of the publish, so several
    relays share the work without publishing a row twice. SQLite has one writer; its relay reads,
    publishes, then marks, and a crash in between republishes (the inbox makes that harmless).
    A transport failure leaves the rows in the outbox with a backoff: nothing is lost while the broker
    is down.
    """

    def __init__(
        self,
        db: ModuleDatabase,
        transport: Transport,
        clock: Clock,
        wakeup: Wakeup,
        *,
        batch_size: int = 200,
        idle_poll: timedelta = timedelta(seconds=1),
        retry: RetryPolicy = RetryPolicy(max_attempts=1_000_000, max_delay=timedelta(seconds=30)),
        park_after: int = 10,
    ) -> None:
        self._db = db
        self._transport = transport
        self._clock = clock
        self._wakeup = wakeup
        self._batch_size = batch_size
        self._idle_poll = idle_poll.total_seconds()
        self._retry = retry
        self._park_after = park_after

    @property
    def module(self) -> str:
        return self._db.schema

    async def run(self) -> None:
        """Relay until cancelled."""
        while True:
            try:
                relayed = await self.relay_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("relay pass failed", module=self.module)
                relayed = 0
            if relayed < self._batch_size:
                await self._wakeup.wait(self._idle_poll)

    async def relay_once(self) -> int:
        """Publish one batch of due rows; the number published."""
        now = self._clock.now()
        # The oldest unpublished rows, due or not: a row still backing off holds back the rows behind
        # it, so events reach the transport in the order they were committed (a filter on
        # next_attempt_at would let a newer event overtake one whose publish failed).
        due = (
            select(outbox)
            .where(outbox.c.published_at.is_(None))
            .order_by(outbox.c.position)
            .limit(self._batch_size)
        )
        postgres = self._db.engine.dialect.name == "postgresql"
        if postgres:
            due = due.with_for_update(skip_locked=True)
        async with (self._db.write_engine if postgres else self._db.engine).connect() as session:
            oldest = (await session.execute(due)).mappings().all()
            rows = _in_order_due(oldest, now, park_after=self._park_after)
            if not rows:
                return 0
            envelopes = [_envelope(row) for row in rows]
            positions = [row["position"] for row in rows]
            try:
                await self._transport.publish(envelopes)
            except Exception as error:
                accepted: frozenset[UUID] = getattr(error, "accepted", frozenset())
                refused = [row for row in rows if row["event_id"] not in accepted]
                log.warning(
                    "transport refused events; they stay in the outbox",
                    module=self.module,
                    count=len(refused),
                    error=repr(error),
                )
                await self._record_failure(session, refused, error)
                if accepted:
                    await self._mark_published(
                        session, [r["position"] for r in rows if r["event_id"] in accepted]
                    )
                return len(rows) - len(refused)
            crashpoint("relay.after_publish")
            if not postgres:
                await session.rollback()  # end the read; the write below takes the lock briefly
            await self._mark_published(session, positions)
            return len(rows)

    async def _mark_published(self, session: AsyncConnection, positions: Sequence[int]) -> None:
        await session.execute(
            update(outbox)
            .where(outbox.c.position.in_(positions))
            .values(published_at=self._clock.now(), last_error=None)
        )
        await session.commit()

    async def _record_failure(
        self, session: AsyncConnection, rows: Sequence[object], error: Exception
    ) -> None:
        now = self._clock.now()
        if self._db.engine.dialect.name != "postgresql":
            await session.rollback()
        for row in rows:
            attempts = int(row["attempts"]) + 1  # type: ignore[index]
            await session.execute(
                update(outbox)
                .where(outbox.c.position == row["position"])  # type: ignore[index]
                .values(
                    attempts=attempts,
                    next_attempt_at=now + self._retry.delay(attempts),
                    last_error=f"{type(error).__name__}: {error}"[:2000],
                )
            )
        await session.commit()


async def outbox_backlog(db: ModuleDatabase) -> tuple[int, object]:
    """(unpublished rows, oldest unpublished created_at) of a module's outbox."""
    async with db.session() as session:
        row = (
            await session.execute(
                select(func.count(), func.min(outbox.c.created_at)).where(outbox.c.published_at.is_(None))
            )
        ).one()
    return int(row[0]), row[1]


def _in_order_due(rows: Sequence[RowMapping], now: datetime, *, park_after: int) -> list[RowMapping]:
    """The leading due rows, in commit order.

    A row still backing off holds back the rows behind it, so events reach the transport in the order
    they were committed. Once it has failed `park_after` times it is parked instead: skipped while it
    waits, so that one event the transport always refuses (say, over the broker's size limit) cannot
    stop the module's whole outbox. `splitstone events status` shows it among the transport errors.
    """
    taken: list[RowMapping] = []
    for row in rows:
        if row["next_attempt_at"] is None or row["next_attempt_at"] <= now:
            taken.append(row)
        elif row["attempts"] < park_after:
            break
    return taken


def _envelope(row: object) -> Envelope:
    r = row  # a RowMapping
    return Envelope(
        id=r["event_id"],  # type: ignore[index]
        name=r["event_name"],  # type: ignore[index]
        version=r["event_version"],  # type: ignore[index]
        aggregate_id=r["aggregate_id"],  # type: ignore[index]
        occurred_at=r["occurred_at"],  # type: ignore[index]
        payload=r["payload"],  # type: ignore[index]
        traceparent=r["traceparent"],  # type: ignore[index]
        request_id=r["request_id"],  # type: ignore[index]
    )
