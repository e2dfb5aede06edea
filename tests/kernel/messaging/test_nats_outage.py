"""The broker goes away: producers keep working, the outbox holds the events, and all of them arrive once
the broker is back.

Every test here runs its own nats-server (`dedicated_nats`) and stops it; the shared server is never
touched. The server comes back on the same port with the same store, as a restarted broker does.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from sqlalchemy import func, select

from splitstone.kernel.container import Container
from splitstone.kernel.messaging.inbox import inbox_counts
from splitstone.kernel.messaging.nats import NatsTransport, stream_name
from splitstone.kernel.messaging.tables import outbox
from splitstone.kernel.messaging.worker import Worker
from tests.kernel.messaging.conftest import DedicatedNats, stream_messages
from tests.support.eventapp import MODULES, Ledger, Tally, prepare, settings_for

PREFIX = "outage"  # the server is the test's own: no other test shares its streams


async def wait_until(check: Callable[[], Awaitable[bool]], what: str, *, within: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not await check():
        if loop.time() > deadline:
            raise AssertionError(f"not true within {within}s: {what}")
        await asyncio.sleep(0.05)


@pytest.fixture
async def app(empty_database_url: str, dedicated_nats: DedicatedNats) -> AsyncIterator[Container]:
    container = Container.build(
        settings_for(empty_database_url, transport="nats", nats_url=dedicated_nats.url, prefix=PREFIX),
        MODULES,
    )
    await prepare(container)
    try:
        yield container
    finally:
        await container.aclose()


def parts(app: Container) -> tuple[Ledger, Tally]:
    ledger, tally = app.implementations["ledger"], app.implementations["tally"]
    assert isinstance(ledger, Ledger)
    assert isinstance(tally, Tally)
    return ledger, tally


async def backlog(app: Container, module: str) -> tuple[int, int]:
    """(unpublished rows, unpublished rows the relay failed to publish) of a module's outbox."""
    async with app.databases[module].session() as conn:
        row = (
            await conn.execute(
                select(func.count(), func.count(outbox.c.last_error)).where(outbox.c.published_at.is_(None))
            )
        ).one()
    return int(row[0]), int(row[1])


async def applications(tally: Tally, expected: int) -> bool:
    return await tally.applications() == expected


async def drained(app: Container) -> bool:
    return await backlog(app, "ledger") == (0, 0) and await backlog(app, "tally") == (0, 0)


async def assert_all_applied_once(app: Container, broker: DedicatedNats, count: int, total: int) -> None:
    _, tally = parts(app)
    assert await tally.applications() == count
    assert await tally.distinct_events() == count
    assert await tally.total() == total
    async with app.databases["tally"].session() as conn:
        assert await inbox_counts(conn) == {"done": count}
    assert await stream_messages(broker.url, stream_name(PREFIX, "ledger")) == count
    assert await stream_messages(broker.url, stream_name(PREFIX, "tally")) == count


@pytest.mark.parametrize("how", ["stopped", "killed"])
async def test_events_wait_in_the_outbox_while_the_broker_is_down(
    app: Container, dedicated_nats: DedicatedNats, how: str
) -> None:
    await dedicated_nats.start()
    worker = app.worker()
    await worker.start()
    try:
        ledger, tally = parts(app)
        await ledger.post_many([1] * 20)
        await wait_until(lambda: applications(tally, 20), "the first 20 events applied")

        await dedicated_nats.stop(kill=how == "killed")
        for _ in range(10):
            await ledger.post(2)  # the use case does not notice the broker is gone
        await ledger.post_many([3] * 20)

        await wait_until(lambda: _equals(backlog(app, "ledger"), (30, 30)), "the outbox refused 30 events")
        assert await tally.applications() == 20

        await dedicated_nats.start()  # same port, same store

        await wait_until(lambda: applications(tally, 50), "all 50 events applied", within=45)
        await wait_until(lambda: drained(app), "both outboxes drained")
        await assert_all_applied_once(app, dedicated_nats, count=50, total=20 + 20 + 60)
    finally:
        await worker.stop()


async def test_a_worker_starts_while_the_broker_is_down_and_catches_up(
    app: Container, dedicated_nats: DedicatedNats
) -> None:
    # The broker has never run: the transport waits briefly, then keeps connecting in the background.
    transport = NatsTransport(
        dedicated_nats.url,
        prefix=PREFIX,
        publishers=[m.name for m in app.modules],
        connect_wait=0.2,
    )
    worker = Worker.for_container(app, transport=transport)
    await worker.start()
    try:
        assert not transport.ready
        ledger, tally = parts(app)
        await ledger.post_many([4] * 15)
        await wait_until(lambda: _equals(backlog(app, "ledger"), (15, 15)), "the outbox refused 15 events")

        await dedicated_nats.start()

        await wait_until(lambda: applications(tally, 15), "all 15 events applied", within=45)
        await wait_until(lambda: drained(app), "both outboxes drained")
        assert transport.ready
        await assert_all_applied_once(app, dedicated_nats, count=15, total=60)
    finally:
        await worker.stop()


async def _equals(value: Awaitable[object], expected: object) -> bool:
    return await value == expected
