"""The inbox: a subscribing module's record of every event it received, and the loop that handles them.

A delivered envelope becomes one `pending` row per handler (inserting twice is a no-op, so redelivery
adds nothing). The processor claims a due row and runs its handler in one transaction with the row's
`done` mark: the handler's writes and the mark commit together or not at all, so each handler has an
effect exactly once per event. A failing handler is retried with backoff; after the policy's attempts
the row is `dead` (a dead letter) and the others keep flowing. Each handler runs in the trace that
published its event, in a span of its own (see `kernel.messaging.traces`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import structlog
from sqlalchemy import RowMapping, Select, bindparam, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from splitstone.kernel import tracing
from splitstone.kernel.clock import Clock
from splitstone.kernel.db import ModuleDatabase, UnitOfWork, UnitOfWorkFactory, ambient, upsert_insert
from splitstone.kernel.events import Envelope, Event, EventCatalog
from splitstone.kernel.messaging.crashpoints import crashpoint
from splitstone.kernel.messaging.execution import run_in_savepoint
from splitstone.kernel.messaging.queues import DEAD, DONE, PENDING, due_query, seconds_until_due
from splitstone.kernel.messaging.retry import RetryPolicy
from splitstone.kernel.messaging.signals import Wakeup
from splitstone.kernel.messaging.tables import inbox
from splitstone.kernel.messaging.traces import continued_from, storable

log = structlog.get_logger("splitstone.inbox")

EventHandler = Callable[[Any], Awaitable[None]]


def handler_name(module: str, event_name: str) -> str:
    """The stable name of a module's handler for an event: the inbox key, and the NATS consumer."""
    return f"{module}:{event_name}"


@dataclass(frozen=True)
class Handlers:
    """A subscribing module's handlers, by event name."""

    module: str
    by_event: Mapping[str, EventHandler]

    @property
    def event_names(self) -> frozenset[str]:
        return frozenset(self.by_event)


class Inbox:
    """One subscribing module's inbox: takes deliveries, runs handlers, keeps dead letters."""

    def __init__(
        self,
        db: ModuleDatabase,
        uow: UnitOfWorkFactory,
        handlers: Handlers,
        catalog: EventCatalog,
        clock: Clock,
        *,
        retry: RetryPolicy,
        idle_poll: timedelta = timedelta(seconds=1),
        batch_size: int = 100,
    ) -> None:
        self._db = db
        self._uow = uow
        self._batch_size = batch_size
        self._handlers = handlers
        self._catalog = catalog
        self._clock = clock
        self._retry = retry
        self._idle_poll = idle_poll.total_seconds()
        self.ready = Wakeup()

    @property
    def module(self) -> str:
        return self._handlers.module

    async def deliver(self, envelopes: Sequence[Envelope]) -> None:
        """Record envelopes as pending for each of this module's handlers; repeats change nothing."""
        now = self._clock.now()
        rows = []
        for e in envelopes:
            if e.name not in self._handlers.by_event:
                continue
            traceparent, request_id = storable(e.traceparent, e.request_id)
            rows.append(
                {
                    "event_id": e.id,
                    "handler": handler_name(self.module, e.name),
                    "event_name": e.name,
                    "event_version": e.version,
                    "aggregate_id": e.aggregate_id,
                    "occurred_at": e.occurred_at,
                    "payload": e.payload,
                    "status": PENDING,
                    "attempts": 0,
                    "received_at": now,
                    "next_attempt_at": now,
                    "traceparent": traceparent,
                    "request_id": request_id,
                }
            )
        if not rows:
            return
        async with self._uow() as uow:
            await uow.session.execute(
                upsert_insert(inbox, uow.session.dialect).on_conflict_do_nothing(), rows
            )
            await uow.commit()
        self.ready.set()

    async def run(self) -> None:
        """Handle due rows until cancelled."""
        while True:
            try:
                handled = await self.process_batch(self._batch_size)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("inbox pass failed", module=self.module)
                handled = 0
            if handled < self._batch_size:
                await self.ready.wait(await self._seconds_until_due())

    async def drain(self, *, limit: int = 1_000_000) -> int:
        """Handle every row that is due now (tests, CLI); the number of handler runs."""
        runs = 0
        while runs < limit and (handled := await self.process_batch(min(self._batch_size, limit - runs))):
            runs += handled
        return runs

    async def process_once(self) -> bool:
        """Claim one due row and run its handler; False when nothing was due."""
        return await self.process_batch(1) > 0

    async def process_batch(self, limit: int) -> int:
        """Claim up to `limit` due rows and run their handlers in one transaction; how many ran.

        First attempts run together with no savepoints (one statement per handler, plus one to mark
        them all done). If any of them fails, that transaction is rolled back and the batch runs again
        the careful way: each handler behind its own savepoint, so a failure rolls back only its own
        writes and is recorded as an attempt while the rest commit. Retries always run the careful way.
        """
        async with UnitOfWork(self._db, self._uow.sink) as uow:
            rows = (await uow.session.execute(self._due_query(limit))).mappings().all()
            if not rows:
                return 0
            if all(row["attempts"] == 0 for row in rows) and await self._run_together(uow, rows):
                crashpoint("inbox.after_handler")
                await uow.commit()
                return len(rows)
        async with UnitOfWork(self._db, self._uow.sink) as uow:
            rows = (await uow.session.execute(self._due_query(limit))).mappings().all()
            for row in rows:
                with tracing.activated(continued_from(row)):
                    error = await self._run_handler(uow, row)
                    await self._record(uow, row, error)
                crashpoint("inbox.after_handler")
            await uow.commit()
            return len(rows)

    async def _run_together(self, uow: UnitOfWork, rows: Sequence[RowMapping]) -> bool:
        """Run every row's handler in `uow` and mark them done; False (nothing kept) if any failed."""
        try:
            events = [
                (self._handlers.by_event[row["event_name"]], self._catalog.decode(_envelope(row)), row)
                for row in rows
            ]
            with ambient(uow):
                for handler, event, row in events:
                    with tracing.activated(continued_from(row)):
                        await handler(event)
                if uow.abandoned is not None:
                    return False  # a handler's unit of work needs a savepoint to be undone alone
                await uow.stage()
        except asyncio.CancelledError:
            raise
        except Exception:
            return False
        now = self._clock.now()
        await uow.session.execute(
            update(inbox)
            .where(inbox.c.event_id == bindparam("row_event_id"), inbox.c.handler == bindparam("row_handler"))
            .values(status=DONE, attempts=inbox.c.attempts + 1, handled_at=now, last_error=None),
            [{"row_event_id": row["event_id"], "row_handler": row["handler"]} for row in rows],
        )
        return True

    async def _record(self, uow: UnitOfWork, row: RowMapping, error: str | None) -> None:
        now = self._clock.now()
        attempts = row["attempts"] + 1
        if error is None:
            await uow.session.execute(
                _this(row).values(status=DONE, attempts=attempts, handled_at=now, last_error=None)
            )
            return
        dead = self._retry.exhausted(attempts)
        log.warning(
            "event handler failed",
            handler=row["handler"],
            event_id=str(row["event_id"]),
            attempt=attempts,
            dead=dead,
            error=error,
        )
        await uow.session.execute(
            _this(row).values(
                status=DEAD if dead else PENDING,
                attempts=attempts,
                next_attempt_at=now + self._retry.delay(attempts),
                last_error=error[:4000],
            )
        )

    async def _run_handler(self, uow: UnitOfWork, row: RowMapping) -> str | None:
        """Run the handler inside `uow` behind a savepoint; the error text, or None on success."""
        handler = self._handlers.by_event.get(row["event_name"])
        if handler is None:
            return f"no handler for {row['event_name']} in module {self.module}"
        try:
            event = self._catalog.decode(_envelope(row))
        except Exception as error:
            return f"cannot decode the event: {type(error).__name__}: {error}"
        return await run_in_savepoint(uow, lambda: handler(event))

    def _due_query(self, limit: int) -> Select[Any]:
        return due_query(self._db, inbox, self._clock, limit, inbox.c.received_at)

    async def _seconds_until_due(self) -> float:
        return await seconds_until_due(self._db, inbox, self._clock, self._idle_poll)


def _this(row: RowMapping) -> Any:
    return update(inbox).where(inbox.c.event_id == row["event_id"], inbox.c.handler == row["handler"])


def _envelope(row: RowMapping) -> Envelope:
    return Envelope(
        id=row["event_id"],
        name=row["event_name"],
        version=row["event_version"],
        aggregate_id=row["aggregate_id"],
        occurred_at=row["occurred_at"],
        payload=row["payload"],
        traceparent=row["traceparent"],
        request_id=row["request_id"],
    )


async def inbox_counts(session: AsyncConnection) -> dict[str, int]:
    """Rows per status in the inbox of the session's module."""
    result = await session.execute(select(inbox.c.status, func.count()).group_by(inbox.c.status))
    return {status: int(count) for status, count in result.all()}


__all__ = ["DEAD", "DONE", "PENDING", "Event", "Handlers", "Inbox", "handler_name", "inbox_counts"]
