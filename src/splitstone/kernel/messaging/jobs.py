"""Durable jobs: work scheduled for a time, claimed safely, retried with backoff, dead-lettered.

A job is staged with `uow.schedule(job(...))`, so it exists only if the transaction that wanted it
commits. An idempotency key makes scheduling the same job twice a no-op. Time comes from the injected
clock. A job kind runs in one of two ways:

- **transactional** (`Module.jobs`): the runner claims the job (`FOR UPDATE SKIP LOCKED` on
  PostgreSQL) and runs its handler inside the transaction that marks it done, so its database writes
  happen exactly once. One at a time per module.
- **external** (`Module.external_jobs`), for work with effects outside the database (an email, an
  HTTP call): the runner leases the job in a short transaction (attempts + 1, due again when the lease
  ends), runs up to `concurrency` handlers at once *outside* any transaction, then records the outcome
  in another short one. No database lock is held while a handler waits on the network. A crash during a
  handler leaves the job to run again when its lease ends: at-least-once, so such handlers make their
  effect idempotent (webhook ids, message ids).

A handler asks for a specific delay before its next attempt by raising `RetryJob(after=...)`. It runs in
the trace that scheduled its job (a span of its own), or in a fresh one (see `kernel.messaging.traces`).

**Recurring** kinds (`Module.recurring`, `Every(kind, interval)`) get one job per interval, aligned to
the Unix epoch in UTC: the runner keeps the current and the next slot's job scheduled, each keyed by
its slot, so any number of workers schedule each slot once. A slot missed while no worker ran is not
caught up: the next run should do whatever is due by then (purge what is old, invoice what ended).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import structlog
from pydantic import BaseModel
from sqlalchemy import ColumnElement, Dialect, Insert, RowMapping, Select, update
from sqlalchemy.ext.asyncio import AsyncConnection
from uuid6 import uuid7

from splitstone.kernel import tracing
from splitstone.kernel.clock import Clock
from splitstone.kernel.db import ModuleDatabase, ScheduledJob, UnitOfWork, UnitOfWorkFactory, upsert_insert
from splitstone.kernel.messaging.execution import run_in_savepoint
from splitstone.kernel.messaging.queues import DEAD, DONE, PENDING, due_query, seconds_until_due
from splitstone.kernel.messaging.retry import RetryPolicy
from splitstone.kernel.messaging.signals import Wakeup
from splitstone.kernel.messaging.tables import jobs
from splitstone.kernel.messaging.traces import continued_from, hop

log = structlog.get_logger("splitstone.jobs")

RECORD_RETRY_SECONDS = 60.0
"""How long an external job keeps trying to record its outcome (at most half its lease)."""


@dataclass(frozen=True)
class Job:
    """What a job handler receives."""

    id: UUID
    kind: str
    payload: dict[str, Any]
    attempt: int
    run_at: datetime
    max_attempts: int = 1

    @property
    def is_last_attempt(self) -> bool:
        """No retry follows if this attempt fails."""
        return self.attempt >= self.max_attempts


class RetryJob(Exception):
    """Raised by a handler to fail this attempt and choose the delay before the next one."""

    def __init__(self, reason: str, *, after: timedelta) -> None:
        super().__init__(reason)
        self.after = after


JobHandler = Callable[[Job], Awaitable[None]]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Every:
    """A job of `kind` once per `interval` (slots aligned to the Unix epoch, UTC)."""

    kind: str
    interval: timedelta

    def __post_init__(self) -> None:
        if self.interval < timedelta(seconds=1):
            raise ValueError(f"recurring job {self.kind!r}: the interval must be at least 1 second")

    def slot(self, moment: datetime) -> datetime:
        """The start of the slot `moment` falls in."""
        return moment - (moment - _EPOCH) % self.interval

    def scheduled(self, slot: datetime) -> ScheduledJob:
        return job(
            self.kind, {"slot": slot.isoformat()}, run_at=slot, idempotency_key=f"every:{slot.isoformat()}"
        )


def job(
    kind: str,
    payload: BaseModel | Mapping[str, Any],
    *,
    run_at: datetime,
    idempotency_key: str | None = None,
    max_attempts: int | None = None,
) -> ScheduledJob:
    """A job to stage with `uow.schedule(...)`. `kind` is "<module>.<what>", handled by that module."""
    if run_at.tzinfo is None:
        raise ValueError("run_at must be timezone-aware")
    body = payload.model_dump_json() if isinstance(payload, BaseModel) else json.dumps(payload, default=str)
    return ScheduledJob(kind, body, run_at, idempotency_key, max_attempts)


def job_rows(
    scheduled: Sequence[ScheduledJob], *, now: datetime, default_attempts: int
) -> list[dict[str, Any]]:
    """The `jobs` rows of scheduled jobs, pending from their `run_at`."""
    rows = []
    for j in scheduled:
        traceparent, request_id = hop(j.trace)
        rows.append(
            {
                "id": uuid7(),
                "kind": j.kind,
                "idempotency_key": j.idempotency_key,
                "payload": j.payload,
                "status": PENDING,
                "attempts": 0,
                "max_attempts": j.max_attempts or default_attempts,
                "run_at": j.run_at,
                "next_attempt_at": j.run_at,
                "created_at": now,
                "traceparent": traceparent,
                "request_id": request_id,
            }
        )
    return rows


def insert_jobs(dialect: Dialect) -> Insert:
    """The INSERT of job rows; a repeated (kind, idempotency key) is ignored: scheduling is idempotent."""
    return upsert_insert(jobs, dialect).on_conflict_do_nothing()


class JobRunner:
    """Runs one module's due jobs, transactional and external, until cancelled."""

    def __init__(
        self,
        db: ModuleDatabase,
        uow: UnitOfWorkFactory,
        handlers: Mapping[str, JobHandler],
        clock: Clock,
        wakeup: Wakeup,
        *,
        retry: RetryPolicy,
        idle_poll: timedelta = timedelta(seconds=1),
        external: Mapping[str, JobHandler] | None = None,
        concurrency: int = 8,
        lease: timedelta = timedelta(minutes=5),
        recurring: Sequence[Every] = (),
    ) -> None:
        self._db = db
        self._uow = uow
        self._handlers = dict(handlers)
        self._external = dict(external or {})
        overlap = self._handlers.keys() & self._external.keys()
        if overlap:
            raise ValueError(f"job kinds both transactional and external: {', '.join(sorted(overlap))}")
        self._clock = clock
        self._wakeup = wakeup
        self._retry = retry
        self._idle_poll = idle_poll.total_seconds()
        self._concurrency = concurrency
        self._lease = lease
        self._running: set[asyncio.Task[None]] = set()
        unknown = [r.kind for r in recurring if r.kind not in self._handlers and r.kind not in self._external]
        if unknown:
            raise ValueError(f"recurring job kinds without a handler: {', '.join(unknown)}")
        self._recurring = tuple(recurring)
        self._recurring_checked_until: datetime | None = None  # next slot start: check again from then

    @property
    def module(self) -> str:
        return self._db.schema

    async def run(self) -> None:
        try:
            while True:
                try:
                    await self.schedule_recurring()
                    ran = await self.run_once()
                    started = await self._start_external()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("job pass failed", module=self.module)
                    ran, started = False, 0
                if not ran and not started:
                    await self._wakeup.wait(await self._seconds_until_due())
        finally:
            for task in self._running:
                task.cancel()
            if self._running:
                await asyncio.gather(*self._running, return_exceptions=True)

    async def drain(self, *, limit: int = 1_000_000) -> int:
        """Run every job due now (external ones to completion), without background tasks."""
        runs = 0
        await self.schedule_recurring()
        while runs < limit:
            ran = await self.run_once()
            started = await self._start_external()
            if self._running:
                await asyncio.gather(*self._running, return_exceptions=True)
            if not ran and not started:
                break
            runs += int(ran) + started
        return runs

    async def schedule_recurring(self) -> None:
        """Make sure the current and the next slot of every recurring kind have their job."""
        now = self._clock.now()
        if not self._recurring or (
            self._recurring_checked_until is not None and now < self._recurring_checked_until
        ):
            return
        async with UnitOfWork(self._db, self._uow.sink) as uow:
            for every in self._recurring:
                current = every.slot(now)
                uow.schedule(every.scheduled(current))
                uow.schedule(every.scheduled(current + every.interval))
            await uow.commit()
        self._recurring_checked_until = min(r.slot(now) + r.interval for r in self._recurring)

    async def run_once(self) -> bool:
        """Run one due transactional job; False when none is due."""
        async with UnitOfWork(self._db, self._uow.sink) as uow:
            only_transactional = [~jobs.c.kind.in_(self._external)] if self._external else []
            row = (await uow.session.execute(self._due_query(1, *only_transactional))).mappings().first()
            if row is None:
                return False
            attempts = row["attempts"] + 1
            handler = self._handlers.get(row["kind"])
            delay: timedelta | None = None
            with tracing.activated(continued_from(row)):
                if handler is None:
                    error: str | None = f"no handler for job kind {row['kind']!r} in module {self.module}"
                else:
                    current = self._job(row, attempts)
                    retry_after: list[timedelta] = []
                    error = await run_in_savepoint(uow, lambda: _noting_retry(handler, current, retry_after))
                    delay = retry_after[0] if retry_after else None
                await self._record(uow.session, row, attempts, error, delay)
            await uow.commit()
            return True

    async def _start_external(self) -> int:
        """Lease as many due external jobs as there are free slots and start them; how many started."""
        free = self._concurrency - len(self._running)
        if not self._external or free <= 0:
            return 0
        async with UnitOfWork(self._db, self._uow.sink) as uow:
            rows = (
                (await uow.session.execute(self._due_query(free, jobs.c.kind.in_(self._external))))
                .mappings()
                .all()
            )
            if not rows:
                return 0
            leased_until = self._clock.now() + self._lease
            for row in rows:
                await uow.session.execute(
                    update(jobs)
                    .where(jobs.c.id == row["id"])
                    .values(attempts=row["attempts"] + 1, next_attempt_at=leased_until)
                )
            await uow.commit()
        for row in rows:
            with tracing.activated(continued_from(row)):  # the task runs in a copy of this context
                task = asyncio.create_task(self._run_external(row, row["attempts"] + 1))
            self._running.add(task)
            task.add_done_callback(self._finished)
        return len(rows)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        self._wakeup.set()  # a slot is free

    async def _run_external(self, row: RowMapping, attempts: int) -> None:
        current = self._job(row, attempts)
        delay: timedelta | None = None
        error: str | None = None
        try:
            # A handler may not outlive its lease, or a second runner could start the same job.
            async with asyncio.timeout(self._lease.total_seconds() * 0.9):
                await self._external[row["kind"]](current)
        except asyncio.CancelledError:
            raise
        except RetryJob as retry:
            error, delay = str(retry), retry.after
        except Exception as failure:
            error = f"{type(failure).__name__}: {failure}" if str(failure) else type(failure).__name__
        await self._record_external(row, attempts, error, delay)

    async def _record_external(
        self, row: RowMapping, attempts: int, error: str | None, delay: timedelta | None
    ) -> None:
        """Record an external job's outcome, retried through a short database outage: given up, the
        job runs again only when its lease ends (minutes), and a done email or webhook goes out twice."""
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + min(RECORD_RETRY_SECONDS, self._lease.total_seconds() / 2)
        wait = 0.25
        while True:
            try:
                async with UnitOfWork(self._db, self._uow.sink) as uow:
                    await self._record(uow.session, row, attempts, error, delay, leased=True)
                    await uow.commit()
                return
            except Exception as failure:
                if loop.time() + wait > give_up_at:
                    # The lease ends and the job runs again: at-least-once, as external jobs promise.
                    log.exception("could not record a job's outcome", kind=row["kind"], job_id=str(row["id"]))
                    return
                log.debug(
                    "recording a job's outcome failed; retrying", job_id=str(row["id"]), error=repr(failure)
                )
            await asyncio.sleep(wait)
            wait = min(wait * 2, 5.0)

    async def _record(
        self,
        session: AsyncConnection,
        row: RowMapping,
        attempts: int,
        error: str | None,
        delay: timedelta | None,
        *,
        leased: bool = False,
    ) -> None:
        now = self._clock.now()
        this = update(jobs).where(jobs.c.id == row["id"])
        if leased:  # only while the lease is still ours: an operator or a later lease may have moved it
            this = this.where(jobs.c.status == PENDING, jobs.c.attempts == attempts)
        if error is None:
            await session.execute(
                this.values(status=DONE, attempts=attempts, finished_at=now, last_error=None)
            )
            return
        dead = attempts >= row["max_attempts"]
        log.warning(
            "job failed", kind=row["kind"], job_id=str(row["id"]), attempt=attempts, dead=dead, error=error
        )
        await session.execute(
            this.values(
                status=DEAD if dead else PENDING,
                attempts=attempts,
                next_attempt_at=now + (delay if delay is not None else self._retry.delay(attempts)),
                finished_at=now if dead else None,
                last_error=error[:4000],
            )
        )

    @staticmethod
    def _job(row: RowMapping, attempts: int) -> Job:
        payload = json.loads(row["payload"])
        return Job(row["id"], row["kind"], payload, attempts, row["run_at"], row["max_attempts"])

    def _due_query(self, limit: int, *where: ColumnElement[bool]) -> Select[Any]:
        return due_query(self._db, jobs, self._clock, limit, jobs.c.id).where(*where)

    async def _seconds_until_due(self) -> float:
        return await seconds_until_due(self._db, jobs, self._clock, self._idle_poll)


async def _noting_retry(handler: JobHandler, current: Job, retry_after: list[timedelta]) -> None:
    try:
        await handler(current)
    except RetryJob as retry:
        retry_after.append(retry.after)
        raise
