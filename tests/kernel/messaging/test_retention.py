"""Retention: finished rows are purged after the retention period; dead letters and pending work stay."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from splitstone.kernel.clock import ManualClock
from splitstone.kernel.container import Container
from splitstone.kernel.http.idempotency_records import Claim, IdempotencyRecords, KeyUse
from splitstone.kernel.messaging.retention import purge
from splitstone.kernel.messaging.tables import idempotency_keys, inbox, outbox
from tests.support import eventapp


@pytest.fixture
async def app(empty_database_url: str) -> AsyncIterator[tuple[Container, ManualClock]]:
    clock = ManualClock(datetime(2030, 1, 1, tzinfo=UTC))
    settings = eventapp.settings_for(empty_database_url).model_copy(update={"event_max_attempts": 1})
    container = Container.build(settings, eventapp.MODULES, clock=clock)
    await eventapp.prepare(container)
    try:
        yield container, clock
    finally:
        await container.aclose()


async def count(container: Container, module: str, table: object, *where: object) -> int:
    async with container.databases[module].session() as session:
        query = select(func.count()).select_from(table).where(*where)  # type: ignore[arg-type]
        return int((await session.execute(query)).scalar_one())


async def test_finished_rows_go_after_the_retention_period_dead_letters_stay(
    app: tuple[Container, ManualClock],
) -> None:
    container, clock = app
    ledger = container.implementations["ledger"]
    await ledger.post_many([1, 2, 3])  # type: ignore[attr-defined]
    await ledger.post(5, poison=True)  # type: ignore[attr-defined]
    await container.worker().settle()
    assert await count(container, "ledger", outbox, outbox.c.published_at.is_not(None)) == 4
    assert await count(container, "tally", inbox, inbox.c.status == "done") == 3
    assert await count(container, "tally", inbox, inbox.c.status == "dead") == 1

    keep = timedelta(days=7)
    clock.advance(timedelta(days=6))
    nothing = await purge(container.databases["ledger"], clock, keep)
    assert (nothing.outbox, nothing.inbox, nothing.jobs) == (0, 0, 0)

    clock.advance(timedelta(days=2))
    await ledger.post(7)  # type: ignore[attr-defined]  # new and unpublished: must survive
    ledger_purged = await purge(container.databases["ledger"], clock, keep)
    tally_purged = await purge(container.databases["tally"], clock, keep)
    assert ledger_purged.outbox == 4
    assert tally_purged.inbox == 3
    assert await count(container, "ledger", outbox) == 1  # the unpublished one
    assert await count(container, "tally", inbox, inbox.c.status == "dead") == 1
    # tally's own outbox (Tallied events from its handler) was published and is purged too.
    assert tally_purged.outbox == 3


async def test_expired_idempotency_keys_go_and_live_ones_stay(app: tuple[Container, ManualClock]) -> None:
    container, clock = app
    records = IdempotencyRecords(container.units_of_work["tally"], clock, ttl=timedelta(hours=24))
    for key in ("old", "new"):
        claimed = await records.claim(KeyUse("user:ada", key, "POST", "/things", "f" * 64))
        assert isinstance(claimed, Claim)
        clock.advance(timedelta(hours=12))

    purged = await purge(container.databases["tally"], clock, timedelta(days=7))  # 24 h after "old"

    assert purged.idempotency_keys == 1
    async with container.databases["tally"].session() as session:
        left = (await session.execute(select(idempotency_keys.c.key))).scalars().all()
    assert left == ["new"]
