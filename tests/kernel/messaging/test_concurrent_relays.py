"""Two workers on one database at once: they share the work and never double it.

Two containers stand for two processes of the same deployment (same database, same NATS prefix): two
relays per module, two inbox processors, and over NATS two fetchers bound to each durable consumer.
Producers in both keep posting while the workers run. In the end every event is applied exactly once,
every outbox row is published and every inbox row is done. On PostgreSQL the relays claim rows with
`FOR UPDATE SKIP LOCKED`, so no event is even published twice; SQLite's relay does not lock (one
writer, see `Relay`), so there a row may go out twice, and JetStream's dedupe and the inbox absorb it.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager

from sqlalchemy import func, select

from splitstone.kernel.container import Container
from splitstone.kernel.events import Envelope
from splitstone.kernel.messaging.inbox import inbox_counts
from splitstone.kernel.messaging.nats import stream_name
from splitstone.kernel.messaging.tables import outbox
from splitstone.kernel.messaging.transport import Subscription, Transport
from splitstone.kernel.messaging.worker import Worker, build_transport
from tests.kernel.messaging.conftest import stream_messages
from tests.support.eventapp import MODULES, Ledger, Tally, prepare, settings_for

ROUNDS = 12
BATCH = 10

Apps = tuple[Container, Container]


async def wait_until(check: Callable[[], Awaitable[bool]], what: str, *, within: float = 45.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not await check():
        if loop.time() > deadline:
            raise AssertionError(f"not true within {within}s: {what}")
        await asyncio.sleep(0.05)


class Counting:
    """Wraps a transport and counts, per event id, how often a publish that included it succeeded."""

    def __init__(self, inner: Transport, accepted: Counter[str]) -> None:
        self._inner = inner
        self._accepted = accepted

    async def start(self, subscriptions: Sequence[Subscription]) -> None:
        await self._inner.start(subscriptions)

    async def publish(self, envelopes: Sequence[Envelope]) -> None:
        await self._inner.publish(envelopes)
        self._accepted.update(str(e.id) for e in envelopes)

    async def close(self) -> None:
        await self._inner.close()


@asynccontextmanager
async def two_apps(url: str, transport: str, nats_url: str = "", prefix: str = "") -> AsyncIterator[Apps]:
    """Two containers on one database (and one NATS prefix)."""
    settings = settings_for(url, transport=transport, nats_url=nats_url, prefix=prefix)
    first = Container.build(settings, MODULES)
    second = Container.build(settings, MODULES)
    try:
        await prepare(first)
        yield first, second
    finally:
        await first.aclose()
        await second.aclose()


def parts(app: Container) -> tuple[Ledger, Tally]:
    ledger, tally = app.implementations["ledger"], app.implementations["tally"]
    assert isinstance(ledger, Ledger)
    assert isinstance(tally, Tally)
    return ledger, tally


async def produce(ledger: Ledger) -> int:
    """Keep posting for a while, alone and in batches; how many events."""
    posted = 0
    for _ in range(ROUNDS):
        await ledger.post_many([1] * BATCH)
        await ledger.post(1)
        posted += BATCH + 1
        await asyncio.sleep(0.01)  # let the workers interleave with the producers
    return posted


async def outbox_state(app: Container, module: str) -> tuple[int, int]:
    """(rows, unpublished rows)."""
    async with app.databases[module].session() as conn:
        row = (
            await conn.execute(
                select(func.count(), func.count().filter(outbox.c.published_at.is_(None))).select_from(outbox)
            )
        ).one()
    return int(row[0]), int(row[1])


async def test_two_workers_in_process_share_the_work_without_doubling_it(
    empty_database_url: str, backend: str
) -> None:
    async with two_apps(empty_database_url, "inprocess") as (first, second):
        await run_two_workers(first, second, exclusive_claims=backend == "postgres")


async def test_two_workers_over_nats_share_the_work_without_doubling_it(
    empty_database_url: str, backend: str, nats_url: str, nats_prefix: str
) -> None:
    async with two_apps(empty_database_url, "nats", nats_url, nats_prefix) as (first, second):
        posted = await run_two_workers(first, second, exclusive_claims=backend == "postgres")
    # JetStream stored each event once, whichever relay published it (and however often).
    assert await stream_messages(nats_url, stream_name(nats_prefix, "ledger")) == posted
    assert await stream_messages(nats_url, stream_name(nats_prefix, "tally")) == posted


async def run_two_workers(first: Container, second: Container, *, exclusive_claims: bool) -> int:
    """Produce in both while both workers run; check everything was applied once. How many events."""
    accepted: Counter[str] = Counter()
    publishers = [m.name for m in first.modules]
    workers = [
        Worker.for_container(app, transport=Counting(build_transport(app.settings, publishers), accepted))
        for app in (first, second)
    ]
    for worker in workers:
        await worker.start()
    try:
        posted = sum(await asyncio.gather(produce(parts(first)[0]), produce(parts(second)[0])))
        _, tally = parts(first)

        async def settled() -> bool:
            return (
                await tally.applications() == posted
                and await outbox_state(first, "ledger") == (posted, 0)
                and await outbox_state(first, "tally") == (posted, 0)
            )

        await wait_until(settled, f"{posted} events applied and both outboxes published")
    finally:
        for worker in workers:
            await worker.stop()

    assert await tally.applications() == posted
    assert await tally.distinct_events() == posted
    assert await tally.total() == posted
    async with first.databases["tally"].session() as conn:
        assert await inbox_counts(conn) == {"done": posted}
    assert len(accepted) == 2 * posted  # every Posted and every Tallied event went out
    if exclusive_claims:
        assert max(accepted.values()) == 1, "a row was claimed by both relays"
    return posted
