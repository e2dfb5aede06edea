"""Durable jobs: work scheduled for a time, claimed safely, retried with backoff, dead-lettered.

A job is staged with `uow.schedule(job(...))`, so it exists only if the transaction that wanted it
commits. An idempotency key makes scheduling the same job twice a no-op. The runner claims due jobs
(`FOR UPDATE SKIP LOCKED` on PostgreSQL) and runs each handler in one transaction with its `done` mark.
Time comes from the injected clock.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import structlog
from pydantic import BaseModel
from sqlalchemy import Select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection
from uuid6 import uuid7

from splitstone.kernel.clock import Clock
from splitstone.kernel.db import ModuleDatabase, ScheduledJob, UnitOfWork, UnitOfWorkFactory
from splitstone.kernel.messaging.execution import run_in_savepoint
from splitstone.kernel.messaging.queues import DEAD, DONE, PENDING, due_query, seconds_until_due
from splitstone.kernel.messaging.retry import RetryPolicy
from splitstone.kernel.messaging.signals import Wakeup
from splitstone.kernel.messaging.tables import jobs

log = structlog.get_logger("splitstone.jobs")


@dataclass(frozen=True)
class Job:
    """What a job handler receives."""

    id: UUID
    kind: str
    payload: dict[str, Any]
    attempt: int
    run_at: datetime


JobHandler = Callable[[Job], Awaitable[None]]


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


async def stage_jobs(
    session: AsyncConnection, scheduled: Sequence[ScheduledJob], *, now: datetime, default_attempts: int
) -> None:
    rows = [
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
        }
        for j in scheduled
    ]
    insert = pg_insert if session.dialect.name == "postgresql" else sqlite_insert
    # A repeated (kind, idempotency key) is ignored: scheduling is idempotent.
    await session.execute(insert(jobs).on_conflict_do_nothing(), rows)


class JobRunner:
    """Runs one module's due jobs until cancelled."""

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
    ) -> None:
        self._db = db
        self._uow = uow
        self._handlers = dict(handlers)
        self._clock = clock
        self._wakeup = wakeup
        self._retry = retry
        self._idle_poll = idle_poll.total_seconds()

    @property
    def module(self) -> str:
        return self._db.schema

    async def run(self) -> None:
        while True:
            try:
                ran = await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("job pass failed", module=self.module)
                ran = False
            if not ran:
                await self._wakeup.wait(await self._seconds_until_due())

    async def drain(self, *, limit: int = 1_000_000) -> int:
        runs = 0
        while runs < limit and await self.run_once():
            runs += 1
        return runs

    async def run_once(self) -> bool:
        async with UnitOfWork(self._db, self._uow.sink) as uow:
            row = (await uow.session.execute(self._due_query())).mappings().first()
            if row is None:
                return False
            attempts = row["attempts"] + 1
            handler = self._handlers.get(row["kind"])
            if handler is None:
                error: str | None = f"no handler for job kind {row['kind']!r} in module {self.module}"
            else:
                current = Job(row["id"], row["kind"], json.loads(row["payload"]), attempts, row["run_at"])
                error = await run_in_savepoint(uow, lambda: handler(current))
            now = self._clock.now()
            this = update(jobs).where(jobs.c.id == row["id"])
            if error is None:
                await uow.session.execute(
                    this.values(status=DONE, attempts=attempts, finished_at=now, last_error=None)
                )
            else:
                dead = attempts >= row["max_attempts"]
                log.warning(
                    "job failed",
                    kind=row["kind"],
                    job_id=str(row["id"]),
                    attempt=attempts,
                    dead=dead,
                    error=error,
                )
                await uow.session.execute(
                    this.values(
                        status=DEAD if dead else PENDING,
                        attempts=attempts,
                        next_attempt_at=now + self._retry.delay(attempts),
                        finished_at=now if dead else None,
                        last_error=error[:4000],
                    )
                )
            await uow.commit()
            return True

    def _due_query(self) -> Select[Any]:
        return due_query(self._db, jobs, self._clock, 1, jobs.c.id)

    async def _seconds_until_due(self) -> float:
        return await seconds_until_due(self._db, jobs, self._clock, self._idle_poll)
