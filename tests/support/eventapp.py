"""Two small modules for event tests: `ledger` publishes, `tally` subscribes and schedules jobs.

`tally`'s handler is deliberately *not* idempotent on its own (it increments a counter and appends to a
log without a unique key), so a second application of one event would show; only the inbox prevents it.
It can be told to fail for some events (poison messages) through `TallySettings`-like knobs on the
implementation. Also runnable as a worker process for crash tests:

    python -m tests.support.eventapp worker --database-url URL [--transport nats --nats-url URL --prefix P]
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import Sequence
from datetime import datetime
from typing import ClassVar, Protocol
from uuid import UUID

from sqlalchemy import Column, Integer, String, Table, Uuid, func, insert, select, update
from uuid6 import uuid7

from splitstone.kernel import migrations
from splitstone.kernel.container import Container
from splitstone.kernel.db import module_metadata
from splitstone.kernel.events import Event
from splitstone.kernel.messaging.jobs import Job, job
from splitstone.kernel.module import Module, ModuleContext
from splitstone.kernel.settings import Environment, Settings

# --- ledger: publishes --------------------------------------------------------------------------


class Posted(Event):
    name: ClassVar[str] = "ledger.Posted"
    amount: int
    poison: bool = False


class LedgerApi(Protocol):
    async def post(self, amount: int, *, poison: bool = False, fail_after_publish: bool = False) -> UUID: ...

    async def post_many(self, amounts: Sequence[int]) -> list[UUID]: ...


ledger_metadata = module_metadata("ledger")
entries = Table(
    "entries",
    ledger_metadata,
    Column("id", Uuid, primary_key=True),
    Column("amount", Integer, nullable=False),
)


class Ledger:
    def __init__(self, ctx: ModuleContext) -> None:
        self._uow = ctx.uow
        self._clock = ctx.clock

    async def post(self, amount: int, *, poison: bool = False, fail_after_publish: bool = False) -> UUID:
        entry_id = uuid7()
        async with self._uow() as uow:
            await uow.session.execute(insert(entries).values(id=entry_id, amount=amount))
            uow.publish(
                Posted(occurred_at=self._clock.now(), aggregate_id=entry_id, amount=amount, poison=poison)
            )
            if fail_after_publish:
                raise RuntimeError("the use case failed after publishing")
            await uow.commit()
        return entry_id

    async def post_many(self, amounts: Sequence[int]) -> list[UUID]:
        """Many entries and events in one transaction."""
        ids: list[UUID] = []
        async with self._uow() as uow:
            for amount in amounts:
                entry_id = uuid7()
                ids.append(entry_id)
                await uow.session.execute(insert(entries).values(id=entry_id, amount=amount))
                uow.publish(Posted(occurred_at=self._clock.now(), aggregate_id=entry_id, amount=amount))
            await uow.commit()
        return ids


ledger = Module(
    name="ledger",
    description="Test publisher.",
    contract=LedgerApi,
    factory=Ledger,
    metadata=ledger_metadata,
    publishes=[Posted],
)

# --- tally: subscribes ----------------------------------------------------------------------------


class Tallied(Event):
    name: ClassVar[str] = "tally.Tallied"
    event_id: UUID


class TallyApi(Protocol):
    async def total(self) -> int: ...

    async def applications(self) -> int: ...

    async def distinct_events(self) -> int: ...


tally_metadata = module_metadata("tally")
counter = Table(
    "counter",
    tally_metadata,
    Column("id", Integer, primary_key=True),
    Column("total", Integer, nullable=False),
    Column("applications", Integer, nullable=False),
)
applied = Table(  # no unique key on purpose: a double application would leave two rows
    "applied",
    tally_metadata,
    Column("row_id", Uuid, primary_key=True),
    Column("event_id", Uuid, nullable=False),
    Column("kind", String(20), nullable=False),
)


class Tally:
    def __init__(self, ctx: ModuleContext) -> None:
        self._uow = ctx.uow
        self._db = ctx.db
        self._clock = ctx.clock
        self.fail_always: bool = False  # tests flip these
        self.handled_job_payloads: list[dict[str, object]] = []

    async def on_posted(self, event: Posted) -> None:
        if event.poison or self.fail_always:
            raise ValueError(f"cannot tally {event.id}")
        async with self._uow() as uow:
            await uow.session.execute(
                update(counter)
                .where(counter.c.id == 1)
                .values(total=counter.c.total + event.amount, applications=counter.c.applications + 1)
            )
            await uow.session.execute(insert(applied).values(row_id=uuid7(), event_id=event.id, kind="event"))
            uow.publish(
                Tallied(occurred_at=self._clock.now(), aggregate_id=event.aggregate_id, event_id=event.id)
            )
            await uow.commit()

    async def run_job(self, current: Job) -> None:
        self.handled_job_payloads.append(current.payload)
        if current.payload.get("fail"):
            raise RuntimeError("job failed on purpose")
        async with self._uow() as uow:
            await uow.session.execute(insert(applied).values(row_id=uuid7(), event_id=current.id, kind="job"))
            await uow.commit()

    async def schedule(self, at: datetime, key: str | None = None, *, fail: bool = False) -> None:
        async with self._uow() as uow:
            uow.schedule(job("tally.recount", {"fail": fail}, run_at=at, idempotency_key=key))
            await uow.commit()

    async def total(self) -> int:
        async with self._db.session() as session:
            return int((await session.execute(select(counter.c.total))).scalar_one())

    async def applications(self) -> int:
        async with self._db.session() as session:
            return int((await session.execute(select(func.count()).select_from(applied))).scalar_one())

    async def distinct_events(self) -> int:
        async with self._db.session() as session:
            query = select(func.count(func.distinct(applied.c.event_id))).where(applied.c.kind == "event")
            return int((await session.execute(query)).scalar_one())


tally = Module(
    name="tally",
    description="Test subscriber.",
    contract=TallyApi,
    factory=Tally,
    metadata=tally_metadata,
    publishes=[Tallied],
    subscriptions={Posted: lambda t: t.on_posted},
    jobs={"tally.recount": lambda t: t.run_job},
)

MODULES = (ledger, tally)


async def prepare(container: Container) -> None:
    """Kernel migrations, the test tables, and tally's single counter row (idempotent)."""
    for module in container.modules:
        db = container.databases[module.name]
        await migrations.upgrade_module(db, None)
        if module.metadata is not None:
            async with db.engine.begin() as conn:
                await conn.run_sync(module.metadata.create_all)
    async with container.databases["tally"].engine.begin() as conn:
        if (await conn.execute(select(func.count()).select_from(counter))).scalar_one() == 0:
            await conn.execute(insert(counter).values(id=1, total=0, applications=0))


def settings_for(url: str, *, transport: str = "inprocess", nats_url: str = "", prefix: str = "") -> Settings:
    options: dict[str, object] = {
        "env": Environment.TEST,
        "database_url": url,
        "event_transport": transport,
        "worker_poll_seconds": 0.2,
        "event_retry_base_seconds": 0.05,
    }
    if nats_url:
        options["nats_url"] = nats_url
    if prefix:
        options["nats_stream_prefix"] = prefix
    return Settings(**options)  # type: ignore[arg-type]


async def _run_worker(settings: Settings) -> None:
    container = Container.build(settings, MODULES)
    await prepare(container)
    worker = container.worker()
    await worker.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print("worker ready", flush=True)
    await stop.wait()
    await worker.stop()
    await container.aclose()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["worker"])
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--transport", default="inprocess")
    parser.add_argument("--nats-url", default="")
    parser.add_argument("--prefix", default="")
    args = parser.parse_args()
    asyncio.run(
        _run_worker(
            settings_for(
                args.database_url, transport=args.transport, nats_url=args.nats_url, prefix=args.prefix
            )
        )
    )


if __name__ == "__main__":
    main()
