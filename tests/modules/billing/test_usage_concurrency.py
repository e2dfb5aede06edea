"""Usage recorded concurrently is counted exactly once per key (PostgreSQL: real concurrent writers)."""

from __future__ import annotations

import asyncio
import random

import pytest
from sqlalchemy import func, select

from splitstone.modules.billing.service import BillingService
from splitstone.modules.billing.storage import usage_events
from splitstone.modules.billing.usage import UsageEvent

pytestmark = pytest.mark.backends("postgres")


async def test_concurrent_repeats_of_keys_are_recorded_once(billing: BillingService, new_org) -> None:  # type: ignore[no-untyped-def]
    org = await new_org()
    rng = random.Random(7)
    quantities = {f"key-{i}": rng.randint(1, 1000) for i in range(50)}
    # 200 calls: every key 4 times, shuffled, and each repeat claiming another quantity.
    calls = [(key, quantities[key] + repeat) for repeat in range(4) for key in quantities]
    rng.shuffle(calls)

    records = await asyncio.gather(
        *(billing.usage.record(org.id, "api_calls", quantity, key) for key, quantity in calls)
    )

    by_key: dict[str, set[object]] = {}
    for record in records:
        by_key.setdefault(record.idempotency_key, set()).add(record.id)
    assert all(len(ids) == 1 for ids in by_key.values())  # every call got the key's first record
    assert len(by_key) == 50
    assert sum(not r.duplicate for r in records) == 50
    firsts = {r.idempotency_key: r.quantity for r in records if not r.duplicate}
    assert all(r.quantity == firsts[r.idempotency_key] for r in records)

    state = await billing.subscriptions.state(org.id)
    total = await billing.usage.value(org.id, "api_calls", state.period_start, state.period_end)
    assert total == sum(firsts.values())
    async with billing.usage._uow(read_only=True) as uow:
        rows = await uow.session.scalar(
            select(func.count()).select_from(usage_events).where(usage_events.c.org_id == org.id)
        )
    assert rows == 50


async def test_concurrent_batches_with_overlapping_keys_do_not_deadlock(
    billing: BillingService, new_org
) -> None:  # type: ignore[no-untyped-def]
    org = await new_org()
    keys = [f"k-{i}" for i in range(60)]
    batches = []
    for seed in range(8):
        order = keys[:]
        random.Random(seed).shuffle(order)  # each batch meets the same keys in another order
        batches.append([UsageEvent("tasks", 1, key) for key in order[:40]])

    results = await asyncio.gather(*(billing.usage.record_many(org.id, batch) for batch in batches))

    firsts = [r for records in results for r in records if not r.duplicate]
    assert sorted(r.idempotency_key for r in firsts) == sorted(
        {e.idempotency_key for b in batches for e in b}
    )
    state = await billing.subscriptions.state(org.id)
    assert await billing.usage.value(org.id, "tasks", state.period_start, state.period_end) == len(firsts)
