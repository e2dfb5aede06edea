"""Every transition of the subscription and invoice state machines, including the illegal ones."""

from __future__ import annotations

import pytest

from splitstone.modules.billing.api import IllegalTransition, InvoiceStatus, SubscriptionStatus
from splitstone.modules.billing.domain import (
    INVOICE_TRANSITIONS,
    TRANSITIONS,
    Trigger,
    grants_plan,
    invoice_transition,
    transition,
)

S = SubscriptionStatus

# What each trigger does from each status: the expected table, written out by hand (not derived from
# the code's), so a change of the rules shows up here as a failing row.
EXPECTED: dict[Trigger, dict[S, set[S]]] = {
    Trigger.START_TRIAL: {S.ACTIVE: {S.TRIALING}, S.CANCELED: {S.TRIALING}},
    Trigger.START_PAID: {S.ACTIVE: {S.INCOMPLETE}, S.CANCELED: {S.INCOMPLETE}},
    Trigger.START_FREE: {S.CANCELED: {S.ACTIVE}},
    Trigger.CHANGE_PLAN: {S.TRIALING: {S.TRIALING, S.ACTIVE}, S.ACTIVE: {S.ACTIVE}},
    Trigger.SCHEDULE_CANCEL: {S.TRIALING: {S.TRIALING}, S.ACTIVE: {S.ACTIVE}, S.PAST_DUE: {S.PAST_DUE}},
    Trigger.RESUME: {S.TRIALING: {S.TRIALING}, S.ACTIVE: {S.ACTIVE}, S.PAST_DUE: {S.PAST_DUE}},
    Trigger.CANCEL_NOW: {
        S.TRIALING: {S.CANCELED},
        S.ACTIVE: {S.CANCELED},
        S.PAST_DUE: {S.CANCELED},
        S.UNPAID: {S.CANCELED},
        S.INCOMPLETE: {S.CANCELED},
    },
    Trigger.TRIAL_END: {S.TRIALING: {S.ACTIVE}},
    Trigger.RENEW: {S.ACTIVE: {S.ACTIVE}, S.PAST_DUE: {S.PAST_DUE}, S.UNPAID: {S.UNPAID}},
    Trigger.PERIOD_END_CANCEL: {S.TRIALING: {S.CANCELED}, S.ACTIVE: {S.CANCELED}, S.PAST_DUE: {S.CANCELED}},
    Trigger.PAYMENT_SUCCEEDED: {
        S.INCOMPLETE: {S.ACTIVE},
        S.PAST_DUE: {S.ACTIVE},
        S.UNPAID: {S.ACTIVE},
        S.ACTIVE: {S.ACTIVE},
        S.TRIALING: {S.TRIALING},
        S.CANCELED: {S.CANCELED},
    },
    Trigger.PAYMENT_FAILED: {
        S.ACTIVE: {S.PAST_DUE},
        S.PAST_DUE: {S.PAST_DUE},
        S.INCOMPLETE: {S.INCOMPLETE},
        S.UNPAID: {S.UNPAID},
        S.TRIALING: {S.TRIALING},
        S.CANCELED: {S.CANCELED},
    },
    Trigger.DUNNING_EXHAUSTED: {S.PAST_DUE: {S.UNPAID, S.CANCELED}},
    Trigger.INCOMPLETE_EXPIRED: {S.INCOMPLETE: {S.CANCELED}},
}

CASES = [(trigger, status) for trigger in Trigger for status in S]


def test_the_table_covers_every_trigger() -> None:
    assert set(TRANSITIONS) == set(Trigger) == set(EXPECTED)


@pytest.mark.parametrize(("trigger", "status"), CASES, ids=[f"{t.value}-from-{s.value}" for t, s in CASES])
def test_each_trigger_from_each_status(trigger: Trigger, status: S) -> None:
    allowed = EXPECTED[trigger].get(status, set())
    if not allowed:
        with pytest.raises(IllegalTransition) as refused:
            transition(trigger, status)
        assert refused.value.status == 409
        assert refused.value.extra == {"subscription_status": status.value, "trigger": trigger.value}
        assert status.value in refused.value.detail
        return
    for target in allowed:
        assert transition(trigger, status, target) is target
    if len(allowed) == 1:
        assert transition(trigger, status) is next(iter(allowed))
    else:
        with pytest.raises(ValueError, match="needs a target"):
            transition(trigger, status)
    for other in set(S) - allowed:
        with pytest.raises(IllegalTransition):
            transition(trigger, status, other)


def test_only_live_statuses_grant_the_plan() -> None:
    assert {s for s in S if grants_plan(s)} == {S.TRIALING, S.ACTIVE, S.PAST_DUE}


INVOICE_EXPECTED = {
    InvoiceStatus.DRAFT: {InvoiceStatus.OPEN, InvoiceStatus.PAID},
    InvoiceStatus.OPEN: {InvoiceStatus.PAID, InvoiceStatus.UNCOLLECTIBLE, InvoiceStatus.VOID},
    InvoiceStatus.UNCOLLECTIBLE: {InvoiceStatus.PAID, InvoiceStatus.VOID},
    InvoiceStatus.PAID: set(),
    InvoiceStatus.VOID: set(),
}
INVOICE_CASES = [(a, b) for a in InvoiceStatus for b in InvoiceStatus]


@pytest.mark.parametrize(
    ("source", "target"), INVOICE_CASES, ids=[f"{a.value}-to-{b.value}" for a, b in INVOICE_CASES]
)
def test_each_invoice_transition(source: InvoiceStatus, target: InvoiceStatus) -> None:
    assert set(INVOICE_TRANSITIONS[source]) == INVOICE_EXPECTED[source]
    if target in INVOICE_EXPECTED[source]:
        assert invoice_transition(source, target) is target
    else:
        with pytest.raises(IllegalTransition) as refused:
            invoice_transition(source, target)
        assert refused.value.status == 409
        assert refused.value.extra == {"invoice_status": source.value, "target": target.value}
