"""Billing's rules, with no I/O: the subscription state machine, billing periods and proration."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from dateutil.relativedelta import relativedelta

from splitstone.modules.billing.api import IllegalTransition, Interval, InvoiceStatus, SubscriptionStatus
from splitstone.modules.billing.catalog import round_half_up

S = SubscriptionStatus


class Trigger(StrEnum):
    """What moves a subscription from one status to another."""

    START_TRIAL = "start_trial"  # a paid plan with a trial, from the free plan or an ended subscription
    START_PAID = "start_paid"  # a paid plan without a trial: incomplete until the first invoice is paid
    START_FREE = "start_free"  # back on the default plan after a subscription ended
    CHANGE_PLAN = "change_plan"  # another plan or interval, now or at the period's end
    SCHEDULE_CANCEL = "schedule_cancel"
    RESUME = "resume"  # undo a scheduled cancellation or downgrade
    CANCEL_NOW = "cancel_now"
    TRIAL_END = "trial_end"
    RENEW = "renew"  # a period ended and the next began
    PERIOD_END_CANCEL = "period_end_cancel"  # a period ended with a cancellation scheduled
    PAYMENT_SUCCEEDED = "payment_succeeded"
    PAYMENT_FAILED = "payment_failed"
    DUNNING_EXHAUSTED = "dunning_exhausted"  # the last retry failed
    INCOMPLETE_EXPIRED = "incomplete_expired"  # the first payment never succeeded in time


_LIVE = frozenset({S.TRIALING, S.ACTIVE, S.PAST_DUE})
"""Statuses whose plan grants its entitlements."""

TRANSITIONS: dict[Trigger, dict[SubscriptionStatus, frozenset[SubscriptionStatus]]] = {
    Trigger.START_TRIAL: {S.ACTIVE: frozenset({S.TRIALING}), S.CANCELED: frozenset({S.TRIALING})},
    Trigger.START_PAID: {S.ACTIVE: frozenset({S.INCOMPLETE}), S.CANCELED: frozenset({S.INCOMPLETE})},
    Trigger.START_FREE: {S.CANCELED: frozenset({S.ACTIVE})},
    # A trial that switches to the default plan ends there and then.
    Trigger.CHANGE_PLAN: {S.TRIALING: frozenset({S.TRIALING, S.ACTIVE}), S.ACTIVE: frozenset({S.ACTIVE})},
    Trigger.SCHEDULE_CANCEL: {s: frozenset({s}) for s in _LIVE},
    Trigger.RESUME: {s: frozenset({s}) for s in _LIVE},
    Trigger.CANCEL_NOW: {s: frozenset({S.CANCELED}) for s in (*_LIVE, S.UNPAID, S.INCOMPLETE)},
    Trigger.TRIAL_END: {S.TRIALING: frozenset({S.ACTIVE})},
    # An unpaid subscription's periods still advance (uninvoiced), so paying its open invoice later
    # resumes it on the current calendar.
    Trigger.RENEW: {
        S.ACTIVE: frozenset({S.ACTIVE}),
        S.PAST_DUE: frozenset({S.PAST_DUE}),
        S.UNPAID: frozenset({S.UNPAID}),
    },
    Trigger.PERIOD_END_CANCEL: {s: frozenset({S.CANCELED}) for s in _LIVE},
    Trigger.PAYMENT_SUCCEEDED: {
        S.INCOMPLETE: frozenset({S.ACTIVE}),
        S.PAST_DUE: frozenset({S.ACTIVE}),
        S.UNPAID: frozenset({S.ACTIVE}),
        S.ACTIVE: frozenset({S.ACTIVE}),
        S.TRIALING: frozenset({S.TRIALING}),
        S.CANCELED: frozenset({S.CANCELED}),
    },
    Trigger.PAYMENT_FAILED: {
        S.ACTIVE: frozenset({S.PAST_DUE}),
        S.PAST_DUE: frozenset({S.PAST_DUE}),
        S.INCOMPLETE: frozenset({S.INCOMPLETE}),
        S.UNPAID: frozenset({S.UNPAID}),
        S.TRIALING: frozenset({S.TRIALING}),
        S.CANCELED: frozenset({S.CANCELED}),
    },
    Trigger.DUNNING_EXHAUSTED: {S.PAST_DUE: frozenset({S.UNPAID, S.CANCELED})},
    Trigger.INCOMPLETE_EXPIRED: {S.INCOMPLETE: frozenset({S.CANCELED})},
}

_ADVICE = {
    Trigger.CHANGE_PLAN: "Pay the open invoice first, or cancel.",
    Trigger.START_PAID: "Change the plan of the current subscription instead.",
    Trigger.START_TRIAL: "Change the plan of the current subscription instead.",
    Trigger.RESUME: "An ended subscription cannot be resumed; choose a plan to start a new one.",
}


def transition(
    trigger: Trigger, status: SubscriptionStatus, target: SubscriptionStatus | None = None
) -> SubscriptionStatus:
    """The status after `trigger` (or `target`, when the trigger allows several); raises
    `IllegalTransition` (409) when the trigger is not allowed from `status`."""
    allowed = TRANSITIONS[trigger].get(status)
    if not allowed:
        advice = _ADVICE.get(trigger, "")
        raise IllegalTransition(
            f"A {status.value} subscription cannot {trigger.value.replace('_', ' ')}. {advice}".strip(),
            subscription_status=status.value,
            trigger=trigger.value,
        )
    if target is None:
        if len(allowed) != 1:
            raise ValueError(f"{trigger} from {status} needs a target among {sorted(allowed)}")
        return next(iter(allowed))
    if target not in allowed:
        raise IllegalTransition(
            f"A {status.value} subscription cannot become {target.value} by {trigger.value}.",
            subscription_status=status.value,
            trigger=trigger.value,
        )
    return target


def grants_plan(status: SubscriptionStatus) -> bool:
    """Whether a subscription in `status` gets its plan's entitlements (else the default plan's)."""
    return status in _LIVE


# -- invoices ------------------------------------------------------------------------------------------

Inv = InvoiceStatus

INVOICE_TRANSITIONS: dict[InvoiceStatus, frozenset[InvoiceStatus]] = {
    Inv.DRAFT: frozenset({Inv.OPEN, Inv.PAID}),  # finalized: open, or paid at once when nothing is due
    Inv.OPEN: frozenset({Inv.PAID, Inv.UNCOLLECTIBLE, Inv.VOID}),
    Inv.UNCOLLECTIBLE: frozenset({Inv.PAID, Inv.VOID}),
    Inv.PAID: frozenset(),
    Inv.VOID: frozenset(),
}


def invoice_transition(status: InvoiceStatus, target: InvoiceStatus) -> InvoiceStatus:
    if target not in INVOICE_TRANSITIONS[status]:
        raise IllegalTransition(
            f"A {status.value} invoice cannot become {target.value}.",
            invoice_status=status.value,
            target=target.value,
        )
    return target


# -- periods ---------------------------------------------------------------------------------------------


def add_intervals(anchor: datetime, interval: Interval, count: int) -> datetime:
    """`anchor` plus `count` months or years, kept on the anchor's day where the month has it (an
    anchor on the 31st bills on Feb 28 or 29, then on Mar 31 again), as Stripe's billing anchors."""
    months = count if interval is Interval.MONTH else 12 * count
    moved: datetime = anchor + relativedelta(months=months)
    return moved


def period_end_after(anchor: datetime, interval: Interval, moment: datetime) -> datetime:
    """The first period boundary of a cycle anchored at `anchor` that lies after `moment`."""
    months = 1 if interval is Interval.MONTH else 12
    passed = (moment.year - anchor.year) * 12 + (moment.month - anchor.month)
    count = max(1, passed // months - 1)
    while (end := add_intervals(anchor, interval, count)) <= moment:
        count += 1
    while count > 1 and add_intervals(anchor, interval, count - 1) > moment:
        count -= 1
        end = add_intervals(anchor, interval, count)
    return end


# -- proration -------------------------------------------------------------------------------------------


def _seconds(delta: timedelta) -> int:
    return delta // timedelta(seconds=1)


def share(amount: int, part: timedelta, whole: timedelta) -> int:
    """The part of `amount` that `part` of `whole` is worth, to the nearest minor unit (per second)."""
    whole_seconds = _seconds(whole)
    if whole_seconds <= 0:
        return 0
    part_seconds = min(max(_seconds(part), 0), whole_seconds)
    return round_half_up(amount * part_seconds, whole_seconds)


@dataclass(frozen=True)
class Proration:
    """A mid-period plan change: give back the unused part of what was paid for the rest of the
    period (`credit`, zero or negative), and charge the new plan for it (`charge`, zero or positive).

    `prepaid` is what was charged for the current plan from `prepaid_from` to the period's end (the
    plan's price at the period's start, or the charge of an earlier change). Credits come out of that
    amount, never out of thin air: the used part (`prepaid + credit`) is never negative and the
    credit never exceeds the prepaid amount.
    """

    credit: int
    charge: int

    @property
    def net(self) -> int:
        return self.credit + self.charge


def prorate(
    *,
    prepaid: int,
    prepaid_from: datetime,
    new_price: int,
    at: datetime,
    period_start: datetime,
    period_end: datetime,
) -> Proration:
    remaining = period_end - at
    credit = -share(prepaid, remaining, period_end - prepaid_from)
    charge = share(new_price, remaining, period_end - period_start)
    return Proration(credit=credit, charge=charge)
