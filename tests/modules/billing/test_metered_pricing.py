"""Usage overage priced correctly for each aggregation: events are recorded, aggregated over the period
and priced by the plan's metered price, against amounts worked out by hand."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import pytest
from uuid6 import uuid7

from splitstone.kernel.clock import ManualClock
from splitstone.modules.billing.catalog import Aggregation, parse_catalog
from splitstone.modules.billing.service import BillingService
from splitstone.modules.billing.usage import aggregate
from tests.modules.billing.usage_support import FakeStates, past_period, usage_with

DAY = timedelta(days=1)


@dataclass(frozen=True)
class Case:
    price: str  # the TOML of the plan's [[plans.metered.metered]] entry, without `metric`
    events: list[tuple[timedelta, int, str | None]]  # (after the period's start, quantity, unique value)
    value: int  # the period's aggregate
    amount: int  # its price, in minor units


OUTSIDE = [(-DAY, 10**6, "before"), (30 * DAY, 10**6, "after")]
"""Events just outside the period (which is 30 days long), added to every case: they never count."""

TWO_TIERS = """model = "graduated"
included = 500
per_units = 10
tiers = [
  { up_to = 1000, unit_amount = 3 },
  { up_to = "inf", unit_amount = 2, flat_amount = 50 },
]"""

CASES: dict[Aggregation, list[Case]] = {
    Aggregation.COUNT: [
        # 10 events, 3 included: 7 at 0.07.
        Case('model = "unit"\nincluded = 3\nunit_amount = 7', [(DAY, 0, None)] * 10, 10, 49),
        # 7 events at 0.05 per 2: 17.5 cents, rounded half up to 18.
        Case('model = "unit"\nunit_amount = 5\nper_units = 2', [(DAY, 1, None)] * 7, 7, 18),
    ],
    Aggregation.SUM: [
        # 2,505 calls, 500 included: 2,005 over, per 10 calls: 1,000 at 0.03 (300), 1,000 at 0.02 plus
        # a flat 0.50 (250), and 5 at 0.01 per 10 (0.5, rounded up to 1).
        Case(
            """model = "graduated"
            included = 500
            per_units = 10
            tiers = [
              { up_to = 1000, unit_amount = 3 },
              { up_to = 2000, unit_amount = 2, flat_amount = 50 },
              { up_to = "inf", unit_amount = 1 },
            ]""",
            [(DAY, 2000, None), (2 * DAY, 500, None), (3 * DAY, 5, None)],
            2505,
            551,
        ),
        # Exactly at a tier's end: the next tier (and its flat amount) is not charged.
        Case(
            TWO_TIERS,
            [(DAY, 1500, None)],
            1500,
            300,
        ),
        # One unit into the next tier: its flat amount, and 0.2 cents rounded down.
        Case(
            TWO_TIERS,
            [(DAY, 1501, None)],
            1501,
            350,
        ),
        # Shipped Pro: 123,456 calls, 100,000 included, 0.50 per 1,000: 11.728 -> 11.73.
        Case(
            'model = "unit"\nincluded = 100000\nunit_amount = 50\nper_units = 1000',
            [(DAY, 100_000, None), (29 * DAY, 23_456, None)],
            123_456,
            1173,
        ),
    ],
    Aggregation.MAX: [
        # Peak 812 GB, 500 included: 312 at 0.10.
        Case(
            'model = "unit"\nincluded = 500\nunit_amount = 10',
            [(DAY, 300, None), (2 * DAY, 812, None), (3 * DAY, 650, None)],
            812,
            3120,
        ),
        # Included more than the peak: nothing to pay.
        Case(
            'model = "unit"\nincluded = 500\nunit_amount = 10', [(DAY, 100, None), (DAY, 200, None)], 200, 0
        ),
    ],
    Aggregation.UNIQUE_COUNT: [
        # 4 distinct users (a, b, c, d), 2 included: 2 at 3.00.
        Case(
            'model = "unit"\nincluded = 2\nunit_amount = 300',
            [(DAY * i, 1, user) for i, user in enumerate("abacdb", start=1)],
            4,
            600,
        ),
        # Graduated per user: the first 2 over at 5.00, the rest at 4.00 (a flat 1.00 with them).
        Case(
            """model = "graduated"
            included = 1
            tiers = [
              { up_to = 2, unit_amount = 500 },
              { up_to = "inf", unit_amount = 400, flat_amount = 100 },
            ]""",
            [(DAY, 1, f"user-{i % 5}") for i in range(12)],
            5,
            500 * 2 + 100 + 400 * 2,
        ),
    ],
    Aggregation.LATEST: [
        # The last report says 8 seats (an earlier one said 20): 5 at 10.00, 3 at 8.00.
        Case(
            """model = "graduated"
            tiers = [{ up_to = 5, unit_amount = 1000 }, { up_to = "inf", unit_amount = 800 }]""",
            [(DAY, 20, None), (10 * DAY, 8, None)],
            8,
            7400,
        ),
        # 3 seats with 5 included: nothing to pay.
        Case('model = "unit"\nincluded = 5\nunit_amount = 1000', [(DAY, 9, None), (2 * DAY, 3, None)], 3, 0),
    ],
}


def _catalog(aggregation: Aggregation, price: str) -> str:
    return f"""
currency = "USD"
default_plan = "free"

[metrics.meter]
name = "The meter"
aggregation = "{aggregation.value}"

[plans.free]
name = "Free"
prices = {{ month = 0 }}

[plans.metered]
name = "Metered"
prices = {{ month = 1000 }}

[[plans.metered.metered]]
metric = "meter"
{price}
"""


@pytest.mark.parametrize("aggregation", list(Aggregation), ids=str)
async def test_usage_overage_is_priced_for_each_aggregation(
    billing: BillingService, clock: ManualClock, aggregation: Aggregation
) -> None:
    for case in CASES[aggregation]:
        catalog = parse_catalog(_catalog(aggregation, case.price))
        states = FakeStates(catalog, *past_period(clock), plan="metered")
        states.period_start -= DAY  # usage before the period is still open, so OUTSIDE is recorded
        start = states.period_start + DAY
        states.period_end = start + 30 * DAY
        usage = usage_with(billing, clock, states)
        org = uuid7()
        for offset, quantity, unique in [*case.events, *OUTSIDE]:
            await usage.record(org, "meter", quantity, str(uuid7()), start + offset, unique or "-")
        states.set(org, period_start=start)

        async with billing.usage._uow(read_only=True) as uow:
            value = await aggregate(uow.session, org, "meter", aggregation, start, states.period_end)
        price = catalog.plans["metered"].metered[0]
        assert (value, price.amount(value)) == (case.value, case.amount), case
        summary = await usage.summary(org)
        assert (summary.metrics[0].value, summary.metrics[0].amount, summary.amount) == (
            case.value,
            case.amount,
            case.amount,
        )
