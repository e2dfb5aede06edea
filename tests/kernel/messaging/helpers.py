"""Helpers for the in-process messaging tests: the eventapp modules on one database, table readers,
bounded waits, and a transport fake at the broker boundary.

Scenarios run on the test modules of `tests.support.eventapp`: `ledger` publishes `ledger.Posted`,
`tally` handles it (with a deliberately non-idempotent effect), publishes `tally.Tallied` from its
handler and runs `tally.recount` jobs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import pytest
from sqlalchemy import Table, insert, select
from uuid6 import uuid7

from splitstone.kernel.clock import Clock, ManualClock
from splitstone.kernel.container import Container
from splitstone.kernel.db import ModuleDatabase
from splitstone.kernel.events import Envelope, Event, EventRecorder
from splitstone.kernel.messaging.inbox import Inbox
from splitstone.kernel.messaging.jobs import JobRunner
from splitstone.kernel.messaging.outbox import Relay
from splitstone.kernel.messaging.tables import inbox, jobs, outbox
from splitstone.kernel.messaging.transport import (
    InProcessTransport,
    Subscription,
    Transport,
    TransportUnavailable,
)
from splitstone.kernel.messaging.worker import Worker
from tests.support import eventapp
from tests.support.eventapp import Ledger, Posted, Tally, applied

START = datetime(2030, 1, 1, tzinfo=UTC)
Row = dict[str, Any]


class FlakyTransport:
    """The in-process transport behind a switch: while `down`, every publish raises (a broker outage).

    Keeps every batch it accepted, so a test can check what reached the broker and in which order.
    """

    def __init__(self) -> None:
        self._inner = InProcessTransport()
        self.down = False
        self.accepted: list[list[Envelope]] = []
        self.refused = 0

    async def start(self, subscriptions: Sequence[Subscription]) -> None:
        await self._inner.start(subscriptions)

    async def publish(self, envelopes: Sequence[Envelope]) -> None:
        if self.down:
            self.refused += 1
            raise TransportUnavailable("broker down")
        await self._inner.publish(envelopes)
        self.accepted.append(list(envelopes))

    async def close(self) -> None:
        await self._inner.close()

    @property
    def accepted_ids(self) -> list[Any]:
        return [envelope.id for batch in self.accepted for envelope in batch]


@dataclass
class EventApp:
    """The eventapp modules built by the container, with the handles a scenario needs."""

    container: Container
    clock: ManualClock
    recorder: EventRecorder
    worker: Worker
    transport: Transport

    @property
    def ledger(self) -> Ledger:
        return cast(Ledger, self.container.implementations["ledger"])

    @property
    def tally(self) -> Tally:
        return cast(Tally, self.container.implementations["tally"])

    @property
    def settings(self) -> Any:
        return self.container.settings

    def db(self, module: str) -> ModuleDatabase:
        return self.container.databases[module]

    def inbox(self, module: str = "tally") -> Inbox:
        return next(i for i in self.worker.inboxes if i.module == module)

    def relay(self, module: str = "ledger") -> Relay:
        return next(r for r in self.worker.relays if r.module == module)

    def job_runner(self, module: str = "tally") -> JobRunner:
        return next(j for j in self.worker.job_runners if j.module == module)

    async def start_transport(self) -> None:
        """Connect the transport to the inboxes, for tests that drive relays and inboxes one by one."""
        await self.transport.start(self.worker.subscriptions())

    async def rows(self, module: str, table: Table, *order_by: Any) -> list[Row]:
        """Every row of one of the kernel's tables in a module's schema, read on a fresh connection."""
        async with self.db(module).session() as connection:
            query = select(table).order_by(*order_by) if order_by else select(table)
            return [dict(row) for row in (await connection.execute(query)).mappings()]

    async def outbox(self, module: str = "ledger") -> list[Row]:
        return await self.rows(module, outbox, outbox.c.position)

    async def inbox_rows(self, module: str = "tally") -> list[Row]:
        return await self.rows(module, inbox, inbox.c.received_at, inbox.c.event_id)

    async def jobs(self, module: str = "tally") -> list[Row]:
        return await self.rows(module, jobs, jobs.c.created_at, jobs.c.id)

    async def effects(self) -> tuple[int, int, int]:
        """tally's (total, applications, distinct events applied): what its handler has done."""
        return await self.tally.total(), await self.tally.applications(), await self.tally.distinct_events()


@asynccontextmanager
async def event_app(
    url: str,
    data_dir: Path,
    *,
    clock: Clock | None = None,
    transport: Transport | None = None,
    prepare: bool = True,
    **settings: Any,
) -> AsyncIterator[EventApp]:
    """The eventapp modules on `url`, migrated; `settings` override `eventapp.settings_for`'s.

    The worker is built but not started: drive it with `settle()`, or `start()`/`stop()` it.
    """
    base = eventapp.settings_for(url)
    options = {**base.model_dump(), "data_dir": data_dir, **settings}
    clock = clock or ManualClock(START)  # a SystemClock for background runs that retry in real time
    recorder = EventRecorder()
    container = Container.build(type(base)(**options), eventapp.MODULES, clock=clock, recorder=recorder)
    worker: Worker | None = None
    try:
        if prepare:
            await eventapp.prepare(container)
        worker = Worker.for_container(container, transport=transport)
        yield EventApp(container, cast(ManualClock, clock), recorder, worker, worker.transport)
    finally:
        if worker is not None:
            await worker.stop()
        await container.aclose()


async def wait_until(
    condition: Callable[[], Awaitable[bool]], *, within: float, interval: float = 0.01, what: str = ""
) -> float:
    """Poll `condition` until it holds; the seconds it took. Fails after `within` seconds."""
    started = time.monotonic()
    deadline = started + within
    while True:
        if await condition():
            return time.monotonic() - started
        if time.monotonic() >= deadline:
            raise AssertionError(f"not true within {within} s: {what or condition}")
        await asyncio.sleep(interval)


_ON_POSTED = Tally.on_posted


async def _on_posted_then_fail(self: Tally, event: Posted) -> None:
    """tally's handler, then (if `self.fail_after_writes` says so) a failure after all its writes."""
    await _ON_POSTED(self, event)
    failure = getattr(self, "fail_after_writes", None)
    if failure == "exception":
        raise RuntimeError("failed after its writes")
    if failure == "database":  # an SQL error: on PostgreSQL it aborts the transaction it happens in
        async with self._uow() as uow:
            duplicate = {"row_id": uuid7(), "event_id": event.id, "kind": "event"}
            await uow.session.execute(insert(applied), [duplicate, duplicate])
            await uow.commit()


def fail_tally_after_its_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make tally's handler fail after writing (set `tally.fail_after_writes` to "exception" or
    "database"); call before `event_app`, whose worker takes the handler when it is built."""
    monkeypatch.setattr(Tally, "on_posted", _on_posted_then_fail)


def decode_payloads(rows: Sequence[Row], event_type: type[Event]) -> list[Event]:
    return [event_type.model_validate_json(row["payload"]) for row in rows]
