"""Proration to the cent, and the property that credits and charges never create or lose money."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from splitstone.modules.billing.api import Interval
from splitstone.modules.billing.domain import add_intervals, period_end_after, prorate, share

START = datetime(2026, 3, 1, tzinfo=UTC)  # March: 31 days
END = datetime(2026, 4, 1, tzinfo=UTC)


def test_an_upgrade_halfway_through_credits_half_and_charges_half() -> None:
    halfway = START + (END - START) / 2
    p = prorate(
        prepaid=1900, prepaid_from=START, new_price=9900, at=halfway, period_start=START, period_end=END
    )
    assert (p.credit, p.charge, p.net) == (-950, 4950, 4000)


def test_proration_to_the_cent_on_several_dates() -> None:
    # 31-day period (2,678,400 s). Remaining fraction r: credit = -round(1900 r), charge = round(9900 r).
    cases = {
        datetime(2026, 3, 2, tzinfo=UTC): (-1839, 9581),  # 30/31 left
        datetime(2026, 3, 11, 12, tzinfo=UTC): (-1256, 6547),  # 20.5/31
        datetime(2026, 3, 31, tzinfo=UTC): (-61, 319),  # 1/31
        datetime(2026, 3, 31, 23, 59, 59, tzinfo=UTC): (0, 0),  # 1 s left: 0.0007 and 0.0037 cents
    }
    for at, expected in cases.items():
        p = prorate(
            prepaid=1900, prepaid_from=START, new_price=9900, at=at, period_start=START, period_end=END
        )
        assert (p.credit, p.charge) == expected, at


def test_a_downgrade_now_nets_a_credit() -> None:
    at = datetime(2026, 3, 16, 12, tzinfo=UTC)  # exactly half of March left
    p = prorate(prepaid=9900, prepaid_from=START, new_price=1900, at=at, period_start=START, period_end=END)
    assert (p.credit, p.charge, p.net) == (-4950, 950, -4000)


def test_a_second_change_credits_what_the_first_charged() -> None:
    first_at = datetime(2026, 3, 11, tzinfo=UTC)
    first = prorate(
        prepaid=1900, prepaid_from=START, new_price=9900, at=first_at, period_start=START, period_end=END
    )
    second_at = datetime(2026, 3, 21, tzinfo=UTC)
    second = prorate(
        prepaid=first.charge,
        prepaid_from=first_at,
        new_price=1900,
        at=second_at,
        period_start=START,
        period_end=END,
    )
    # The second credit is the unused part of the first charge: 11 of the 21 days it paid for.
    assert second.credit == -round(first.charge * 11 / 21)
    assert second.charge == round(1900 * 11 / 31)


def test_share_is_bounded_and_exact_at_the_ends() -> None:
    month = END - START
    assert share(1900, month, month) == 1900
    assert share(1900, timedelta(0), month) == 0
    assert share(1900, month * 2, month) == 1900  # never more than the whole
    assert share(1900, -month, month) == 0
    assert share(1900, month, timedelta(0)) == 0


def test_billing_periods_keep_the_anchor_day() -> None:
    anchor = datetime(2026, 1, 31, 9, tzinfo=UTC)
    ends = [add_intervals(anchor, Interval.MONTH, n) for n in range(1, 5)]
    assert [e.date().isoformat() for e in ends] == ["2026-02-28", "2026-03-31", "2026-04-30", "2026-05-31"]
    assert add_intervals(datetime(2028, 2, 29, tzinfo=UTC), Interval.YEAR, 1) == datetime(
        2029, 2, 28, tzinfo=UTC
    )
    assert period_end_after(anchor, Interval.MONTH, datetime(2026, 2, 28, 9, tzinfo=UTC)) == ends[1]
    assert period_end_after(anchor, Interval.MONTH, datetime(2026, 2, 28, 8, tzinfo=UTC)) == ends[0]


@settings(max_examples=300, deadline=None)
@given(
    prices=st.lists(st.integers(min_value=0, max_value=10_000_000), min_size=2, max_size=6),
    cuts=st.lists(st.integers(min_value=1, max_value=2_678_399), min_size=1, max_size=5, unique=True),
)
def test_credits_and_charges_never_create_or_lose_money(prices: list[int], cuts: list[int]) -> None:
    """A period paid in advance, then changed plan at several moments: each credit gives back only
    what was prepaid and not used, and what the customer ends up paying for each stretch of time is
    within one cent of its exact share of that plan's price."""
    moments = [START + timedelta(seconds=s) for s in sorted(cuts)]
    plans = prices[: len(moments) + 1] + prices[-1:] * (len(moments) + 1 - len(prices))
    prepaid, prepaid_from = plans[0], START
    paid = plans[0]
    used_total = 0
    exact_total = 0.0
    boundaries = [START, *moments]
    for index, at in enumerate(moments):
        p = prorate(
            prepaid=prepaid,
            prepaid_from=prepaid_from,
            new_price=plans[index + 1],
            at=at,
            period_start=START,
            period_end=END,
        )
        assert -prepaid <= p.credit <= 0, "a credit gives back at most what was prepaid"
        assert p.charge >= 0
        used = prepaid + p.credit  # what this stretch cost
        assert used >= 0
        used_total += used
        exact_total += plans[index] * (at - boundaries[index]) / (END - START)
        paid += p.net
        prepaid, prepaid_from = p.charge, at
    used_total += prepaid  # the last plan runs to the period's end
    exact_total += plans[len(moments)] * (END - moments[-1]) / (END - START)
    assert paid == used_total, "every cent paid is accounted for by a stretch of time"
    assert abs(paid - exact_total) <= len(moments) * 2 + 1, "rounding is bounded by the number of changes"
