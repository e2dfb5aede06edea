"""Usage metering: recording events once per key, validation, closed periods, and every aggregation
over a period (start included, end excluded)."""

from __future__ import annotations

from datetime import datetime, timedelta
from uuid import UUID

import pytest
from uuid6 import uuid7

from splitstone.kernel.clock import ManualClock
from splitstone.kernel.errors import InvalidInput
from splitstone.modules.billing.api import InvalidUsage, UnknownMetric, UsagePeriodClosed
from splitstone.modules.billing.catalog import Aggregation, Metric
from splitstone.modules.billing.service import BillingService
from splitstone.modules.billing.usage import Usage, UsageEvent, aggregate
from tests.modules.billing.usage_support import (
    METRIC_OF,
    FakeStates,
    every_aggregation_catalog,
    past_period,
    usage_with,
)

US = timedelta(microseconds=1)


@pytest.fixture
def states(clock: ManualClock) -> FakeStates:
    return FakeStates(every_aggregation_catalog(), *past_period(clock))


@pytest.fixture
def usage(billing: BillingService, clock: ManualClock, states: FakeStates) -> Usage:
    return usage_with(billing, clock, states)


async def _record_all(
    usage: Usage, org_id: UUID, metric: str, events: list[tuple[datetime, int, str]]
) -> None:
    for occurred_at, quantity, unique_value in events:
        await usage.record(org_id, metric, quantity, f"{metric}-{uuid7()}", occurred_at, unique_value)


# -- aggregation ---------------------------------------------------------------------------------------


async def test_each_aggregation_counts_the_period_only(
    billing: BillingService, usage: Usage, states: FakeStates
) -> None:
    start, end = states.period_start, states.period_end
    states.period_start -= timedelta(days=1)  # so the instant before the period may be recorded
    org, other_org = uuid7(), uuid7()
    events = [
        (start - US, 100, "early"),  # before the period
        (start, 4, "a"),  # its first instant counts
        (start + timedelta(hours=1), 7, "b"),
        (start + timedelta(hours=2), 2, "a"),
        (end - US, 3, "c"),  # its last instant counts, and is the latest
        (end, 50, "late"),  # the next period's first instant
    ]
    # Every metric gets the same events, and another organization gets some too: none may leak in.
    for metric in METRIC_OF.values():
        await _record_all(usage, org, metric, events)
        await _record_all(usage, other_org, metric, [(start + timedelta(hours=3), 1000, "z")])

    async with billing.usage._uow(read_only=True) as uow:
        values = {
            a: await aggregate(uow.session, org, METRIC_OF[a], Aggregation(a), start, end) for a in METRIC_OF
        }
    assert values == {"count": 4, "sum": 16, "max": 7, "unique_count": 3, "latest": 3}
    assert {a: await usage.value(org, m, start, end) for a, m in METRIC_OF.items()} == values
    assert await usage.values(other_org, METRIC_OF.values(), start, end) == {
        "events": 1,
        "calls": 1000,
        "peak": 1000,
        "users": 1,
        "seats": 1000,
    }
    assert await usage.values(uuid7(), METRIC_OF.values(), start, end) == dict.fromkeys(METRIC_OF.values(), 0)


async def test_latest_is_the_last_by_time_then_by_recording(usage: Usage, states: FakeStates) -> None:
    org = uuid7()
    moment = states.period_start + timedelta(days=3)
    await usage.record(org, "seats", 9, "later", moment + timedelta(seconds=1))
    await usage.record(org, "seats", 5, "first", moment)
    await usage.record(org, "seats", 6, "second", moment)  # the same instant, recorded after: it wins
    assert await usage.value(org, "seats", states.period_start, states.period_end) == 9
    assert await usage.value(org, "seats", states.period_start, moment + timedelta(seconds=1)) == 6


async def test_sum_is_exact_for_large_quantities(usage: Usage, states: FakeStates) -> None:
    org = uuid7()
    at = states.period_start
    await usage.record(org, "calls", 10**12, "a", at)
    await usage.record(org, "calls", 10**12, "b", at)
    assert await usage.value(org, "calls", states.period_start, states.period_end) == 2 * 10**12


# -- recording -----------------------------------------------------------------------------------------


async def test_a_record_is_returned_with_its_values(usage: Usage, clock: ManualClock) -> None:
    org = uuid7()
    record = await usage.record(org, "calls", 25, "req-1")
    assert (record.org_id, record.metric, record.quantity, record.idempotency_key) == (
        org,
        "calls",
        25,
        "req-1",
    )
    assert record.occurred_at == clock.now()  # by default, now
    assert record.recorded_at == clock.now()
    assert record.unique_value is None
    assert record.duplicate is False


async def test_a_repeated_key_returns_the_first_record_and_counts_once(
    usage: Usage, states: FakeStates, clock: ManualClock
) -> None:
    org = uuid7()
    first = await usage.record(org, "calls", 25, "req-1", states.period_start)
    clock.advance(timedelta(minutes=1))
    # The repeat differs in everything but the key: the first record wins, as with Lago's or Stripe's.
    again = await usage.record(org, "users", 99, "req-1", states.period_start + timedelta(days=1), "u1")
    assert again.duplicate is True
    assert again.model_dump(exclude={"duplicate"}) == first.model_dump(exclude={"duplicate"})
    assert await usage.value(org, "calls", states.period_start, states.period_end) == 25
    assert await usage.value(org, "users", states.period_start, states.period_end) == 0


async def test_keys_belong_to_one_organization(usage: Usage, states: FakeStates) -> None:
    one, two = uuid7(), uuid7()
    await usage.record(one, "calls", 1, "req-1", states.period_start)
    record = await usage.record(two, "calls", 2, "req-1", states.period_start)
    assert record.duplicate is False
    assert await usage.value(two, "calls", states.period_start, states.period_end) == 2


async def test_a_batch_records_in_order_and_all_or_none(usage: Usage, states: FakeStates) -> None:
    org = uuid7()
    at = states.period_start
    existing = await usage.record(org, "calls", 1, "k-old", at)
    records = await usage.record_many(
        org,
        [
            UsageEvent("calls", 10, "k-2", at),
            UsageEvent("calls", 20, "k-old", at),
            UsageEvent("calls", 30, "k-1", at),
            UsageEvent("calls", 40, "k-2", at),  # repeats the batch's first event
        ],
    )
    assert [(r.idempotency_key, r.quantity, r.duplicate) for r in records] == [
        ("k-2", 10, False),
        ("k-old", 1, True),
        ("k-1", 30, False),
        ("k-2", 10, True),
    ]
    assert records[1].id == existing.id
    assert records[3].id == records[0].id
    assert await usage.value(org, "calls", at, states.period_end) == 41

    with pytest.raises(UnknownMetric) as refused:
        await usage.record_many(org, [UsageEvent("calls", 5, "k-3", at), UsageEvent("nope", 1, "k-4", at)])
    assert refused.value.extra["index"] == 1
    assert refused.value.detail.startswith("events[1]: ")
    with pytest.raises(UsagePeriodClosed) as closed:
        await usage.record_many(
            org, [UsageEvent("calls", 5, "k-3", at), UsageEvent("calls", 1, "k-4", at - US)]
        )
    assert closed.value.extra["index"] == 1
    assert await usage.value(org, "calls", at, states.period_end) == 41  # nothing of either batch
    assert await usage.record_many(org, []) == []
    # A repeat of the batch's own key is a duplicate, even when it claims a closed period.
    mixed = await usage.record_many(
        org, [UsageEvent("calls", 2, "k-5", at), UsageEvent("calls", 3, "k-5", at - US)]
    )
    assert [r.duplicate for r in mixed] == [False, True]


INVALID: list[tuple[dict[str, object], type[InvalidInput], str | None]] = [
    ({"metric": "tasks"}, UnknownMetric, None),
    ({"quantity": -1}, InvalidUsage, "quantity"),
    ({"quantity": 10**12 + 1}, InvalidUsage, "quantity"),
    ({"quantity": True}, InvalidUsage, "quantity"),
    ({"quantity": 1.5}, InvalidUsage, "quantity"),
    ({"idempotency_key": ""}, InvalidUsage, "idempotency_key"),
    ({"idempotency_key": "k" * 256}, InvalidUsage, "idempotency_key"),
    ({"idempotency_key": "line\nbreak"}, InvalidUsage, "idempotency_key"),
    ({"metric": "users", "unique_value": None}, InvalidUsage, "unique_value"),
    ({"metric": "users", "unique_value": ""}, InvalidUsage, "unique_value"),
    ({"metric": "users", "unique_value": "u" * 256}, InvalidUsage, "unique_value"),
    ({"occurred_at": datetime(2030, 1, 1)}, InvalidUsage, "occurred_at"),  # naive
    ({"occurred_at": "future"}, InvalidUsage, "occurred_at"),
]


async def test_invalid_usage_is_refused(usage: Usage, clock: ManualClock) -> None:
    org = uuid7()
    for change, error, field in INVALID:
        event: dict[str, object] = {
            "metric": "calls",
            "quantity": 1,
            "idempotency_key": "k",
            "unique_value": "u1",
        }
        event |= change
        if event.get("occurred_at") == "future":
            event["occurred_at"] = clock.now() + timedelta(minutes=5, microseconds=1)
        with pytest.raises(error) as refused:
            await usage.record(org, **event)  # type: ignore[arg-type]
        assert refused.value.status == 422
        assert refused.value.extra.get("field") == field, change
    window = (clock.now() - timedelta(days=1), clock.now() + timedelta(days=1))
    assert await usage.values(org, METRIC_OF.values(), *window) == dict.fromkeys(METRIC_OF.values(), 0)


async def test_an_unknown_metric_names_the_known_ones(usage: Usage) -> None:
    with pytest.raises(UnknownMetric) as refused:
        await usage.record(uuid7(), "tasks", 1, "k")
    assert refused.value.extra == {"metric": "tasks", "known": ["events", "calls", "peak", "users", "seats"]}
    assert "events, calls, peak, users, seats" in refused.value.detail


async def test_usage_up_to_five_minutes_ahead_is_accepted(usage: Usage, clock: ManualClock) -> None:
    record = await usage.record(uuid7(), "calls", 1, "k", clock.now() + timedelta(minutes=5))
    assert record.occurred_at == clock.now() + timedelta(minutes=5)


async def test_occurred_at_is_stored_in_utc(usage: Usage, states: FakeStates) -> None:
    from datetime import timezone

    local = (states.period_start + timedelta(hours=5)).astimezone(timezone(timedelta(hours=2)))
    record = await usage.record(uuid7(), "calls", 1, "k", local)
    assert record.occurred_at == local
    assert record.occurred_at.utcoffset() == timedelta(0)


async def test_usage_of_an_invoiced_period_is_refused(usage: Usage, states: FakeStates) -> None:
    org = uuid7()
    open_from = states.period_start + timedelta(days=10)
    states.set(org, usage_open_from=open_from)
    with pytest.raises(UsagePeriodClosed) as closed:
        await usage.record(org, "calls", 1, "late", open_from - US)
    assert closed.value.extra == {"open_from": open_from.isoformat()}
    assert closed.value.status == 422
    assert (await usage.record(org, "calls", 1, "in-time", open_from)).duplicate is False


async def test_a_retry_after_the_period_closed_is_still_a_duplicate(usage: Usage, states: FakeStates) -> None:
    org = uuid7()
    at = states.period_start + timedelta(days=1)
    first = await usage.record(org, "calls", 7, "sent-in-time", at)
    states.set(org, usage_open_from=states.period_end)  # its invoice is final now
    again = await usage.record(org, "calls", 7, "sent-in-time", at)
    assert (again.id, again.duplicate) == (first.id, True)


async def test_a_real_organization_records_from_its_subscription_start(
    billing: BillingService, new_org, clock: ManualClock
) -> None:  # type: ignore[no-untyped-def]
    org = await new_org()
    state = await billing.subscriptions.state(org.id)
    assert state.usage_open_from <= clock.now()
    with pytest.raises(UsagePeriodClosed):
        await billing.usage.record(org.id, "tasks", 1, "before", state.usage_open_from - US)
    record = await billing.record_usage(org.id, "tasks", 1, "now")
    assert record.duplicate is False
    assert (await billing.record_usage(org.id, "tasks", 1, "now")).duplicate is True
    assert await billing.usage.value(org.id, "tasks", state.period_start, state.period_end) == 1


# -- summaries -----------------------------------------------------------------------------------------


async def test_the_summary_prices_the_period_on_the_subscribed_plan(
    billing: BillingService, clock: ManualClock
) -> None:
    states = FakeStates(billing.catalog, *past_period(clock), plan="pro")
    usage = usage_with(billing, clock, states)
    org = uuid7()
    at = states.period_start + timedelta(days=2)
    await usage.record(org, "api_calls", 123_456, "calls", at)
    await usage.record(org, "tasks", 1, "t1", at)
    await usage.record(org, "tasks", 1, "t2", at)
    await usage.record(org, "api_calls", 1_000_000, "next-period", states.period_end)

    summary = await usage.summary(org)
    assert (summary.plan, summary.currency) == ("pro", "USD")
    assert (summary.period_start, summary.period_end) == (states.period_start, states.period_end)
    by_metric = {m.metric: m for m in summary.metrics}
    assert list(by_metric) == list(billing.catalog.metrics)
    calls = by_metric["api_calls"]
    assert (calls.name, calls.unit, calls.aggregation) == ("API calls", "call", Aggregation.SUM)
    # 100,000 included; 23,456 over at 0.50 per 1,000 = 11.728 -> 11.73.
    assert (calls.value, calls.included, calls.billable, calls.amount) == (123_456, 100_000, 23_456, 1173)
    assert (calls.entitlement, calls.limit) == (None, None)
    tasks = by_metric["tasks"]
    assert (tasks.value, tasks.included, tasks.amount) == (2, None, None)  # not priced on Pro
    assert (tasks.entitlement, tasks.limit) == ("tasks_per_month", 10_000)
    assert summary.amount == 1173


async def test_the_summary_uses_the_metrics_of_the_subscribed_plan_version(
    billing: BillingService, clock: ManualClock
) -> None:
    states = FakeStates(billing.catalog, *past_period(clock))
    # An older version of Pro, when API calls were billed by their peak: the subscription keeps it.
    peak = Metric(name="API calls (peak)", aggregation=Aggregation.MAX, unit="call")
    older = billing.catalog.definition("pro").model_copy(update={"metrics": {"api_calls": peak}})
    org = uuid7()
    states.set(org, plan=older)
    usage = usage_with(billing, clock, states)
    await usage.record(org, "api_calls", 150_000, "a", states.period_start)
    await usage.record(org, "api_calls", 120_000, "b", states.period_start)
    calls = next(m for m in (await usage.summary(org)).metrics if m.metric == "api_calls")
    # The peak, 150,000: 50,000 over the included at 0.50 per 1,000 (not the sum's 170,000 over).
    assert (calls.name, calls.aggregation, calls.value, calls.amount) == (
        "API calls (peak)",
        "max",
        150_000,
        2500,
    )


async def test_limits_come_from_the_effective_plan_and_prices_from_the_subscribed_one(
    billing: BillingService, clock: ManualClock
) -> None:
    states = FakeStates(billing.catalog, *past_period(clock))
    org = uuid7()
    states.set(org, plan="business", effective="free")  # unpaid: back on the free plan's limits
    usage = usage_with(billing, clock, states)
    await usage.record(org, "active_users", 1, "u", states.period_start, "user-1")
    summary = await usage.summary(org)
    by_metric = {m.metric: m for m in summary.metrics}
    assert summary.plan == "business"
    assert (by_metric["active_users"].included, by_metric["active_users"].amount) == (100, 0)
    assert by_metric["tasks"].limit == 500


async def test_a_summary_of_an_explicit_range_has_values_only(usage: Usage, states: FakeStates) -> None:
    org = uuid7()
    start = states.period_start
    await usage.record(org, "calls", 5, "a", start)
    await usage.record(org, "calls", 6, "b", start + timedelta(days=1))
    summary = await usage.summary_between(org, start, start + timedelta(days=1))
    calls = next(m for m in summary.metrics if m.metric == "calls")
    assert (calls.value, calls.included, calls.amount) == (5, None, None)
    assert (summary.plan, summary.amount, summary.currency) == (None, None, "EUR")
    assert summary.period_end == start + timedelta(days=1)


async def test_an_explicit_range_is_checked(usage: Usage, states: FakeStates) -> None:
    start = states.period_start
    for length in (timedelta(0), -timedelta(days=1), timedelta(days=366, microseconds=1)):
        with pytest.raises(InvalidInput):
            await usage.summary_between(uuid7(), start, start + length)
    with pytest.raises(InvalidInput):
        await usage.summary_between(uuid7(), start.replace(tzinfo=None), start + timedelta(days=1))
    assert await usage.summary_between(uuid7(), start, start + timedelta(days=366))
