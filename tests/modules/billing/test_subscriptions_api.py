"""Subscriptions through the API: trials, paid starts, upgrades, downgrades, cancellations, and the
rules on who may do what."""

from __future__ import annotations

from datetime import timedelta

import httpx

from splitstone.kernel.clock import ManualClock
from splitstone.kernel.events import EventRecorder
from splitstone.kernel.messaging.worker import Worker
from splitstone.modules.billing.api import PaymentFailed, SubscriptionChanged, TrialEnding
from splitstone.modules.billing.service import BillingService
from tests.modules.auth.conftest import Users
from tests.modules.auth.org_helpers import add_member, assert_problem
from tests.modules.billing.conftest import Org
from tests.modules.billing.support import call, change_plan, invoices, lines, set_card, subscription


async def test_a_new_organization_is_on_the_free_plan(new_org, client: httpx.AsyncClient) -> None:  # type: ignore[no-untyped-def]
    org: Org = await new_org("Acme Inc.")
    sub = await subscription(client, org)
    assert sub["status"] == "active"
    assert sub["plan"]["code"] == sub["effective_plan"] == "free"
    assert sub["price"] == {"amount": 0, "currency": "USD", "interval": "month"}
    account = await call(client, org, "GET", "/account")
    assert account["name"] == "Acme Inc."
    assert account["payment_method"] is None
    assert account["credit_balance"] == 0
    history = await call(client, org, "GET", "/subscription/history")
    assert [h["change"] for h in history["items"]] == ["created"]


async def test_a_trial_then_the_first_payment_at_its_end(
    new_org,
    client: httpx.AsyncClient,
    worker: Worker,
    clock: ManualClock,
    events: EventRecorder,  # type: ignore[no-untyped-def]
) -> None:
    org: Org = await new_org()
    sub = await change_plan(client, org, "pro")
    assert sub["status"] == "trialing"
    assert sub["effective_plan"] == "pro"
    trial_end = sub["trial_end"]
    assert sub["current_period_end"] == trial_end
    await worker.settle()
    assert events.of_type(TrialEnding) == []

    clock.advance(timedelta(days=11, minutes=1))  # three days before the end of the 14-day trial
    await worker.settle()
    notice = events.last(TrialEnding)
    assert notice.plan == "pro"
    assert notice.has_payment_method is False

    await set_card(client, org)
    clock.advance(timedelta(days=3))
    await worker.settle()
    sub = await subscription(client, org)
    assert sub["status"] == "active"
    assert sub["current_period_start"] == trial_end
    [invoice] = await invoices(client, org)
    assert invoice["status"] == "paid"
    assert invoice["billing_reason"] == "subscription_cycle"
    assert lines(invoice) == [("subscription", 1900)]
    assert invoice["lines"][0]["period_start"] == trial_end
    assert events.last(SubscriptionChanged).change == "activated"


async def test_a_trial_ends_past_due_without_a_payment_method(
    new_org,
    client: httpx.AsyncClient,
    worker: Worker,
    clock: ManualClock,
    events: EventRecorder,  # type: ignore[no-untyped-def]
) -> None:
    org: Org = await new_org()
    await change_plan(client, org, "pro")
    clock.advance(timedelta(days=14, seconds=1))
    await worker.settle()
    sub = await subscription(client, org)
    assert sub["status"] == "past_due"
    assert sub["effective_plan"] == "pro"  # past due keeps the plan while dunning runs
    failed = events.last(PaymentFailed)
    assert failed.failure_code == "no_payment_method"
    assert failed.next_attempt_at is not None

    await set_card(client, org)  # a new card retries the open invoice at once
    await worker.settle()
    assert (await subscription(client, org))["status"] == "active"
    [invoice] = await invoices(client, org)
    assert invoice["status"] == "paid"
    assert invoice["attempt_count"] == 2


async def test_one_trial_per_organization_then_a_paid_start(
    new_org,
    client: httpx.AsyncClient,
    worker: Worker,  # type: ignore[no-untyped-def]
) -> None:
    org: Org = await new_org()
    await change_plan(client, org, "pro")
    ended = await call(client, org, "POST", "/subscription/cancel", json={"at_period_end": False})
    assert ended["status"] == "canceled"
    assert ended["effective_plan"] == "free"
    problem = await call(client, org, "POST", "/subscription/change", 409, json={"plan": "business"})
    assert problem["code"] == "payment-method-required"

    await set_card(client, org)
    started = await change_plan(client, org, "business")
    assert started["status"] == "incomplete"
    assert started["effective_plan"] == "free"  # until the first invoice is paid
    await worker.settle()
    sub = await subscription(client, org)
    assert sub["status"] == "active"
    assert sub["effective_plan"] == "business"
    [invoice] = await invoices(client, org)
    assert invoice["billing_reason"] == "subscription_create"
    assert invoice["status"] == "paid"
    assert lines(invoice) == [("subscription", 9900)]


async def test_a_declined_first_payment_leaves_the_subscription_incomplete_until_it_expires(
    new_org,
    client: httpx.AsyncClient,
    worker: Worker,
    clock: ManualClock,
    billing: BillingService,  # type: ignore[no-untyped-def]
) -> None:
    org: Org = await new_org()
    await billing.subscriptions.open_account(org.id, "Acme")
    await _use_up_trial(client, org)
    await set_card(client, org, "pm_card_chargeDeclined")
    await change_plan(client, org, "pro")
    await worker.settle()
    sub = await subscription(client, org)
    assert sub["status"] == "incomplete"
    [invoice] = await invoices(client, org)
    assert invoice["status"] == "open"
    assert invoice["next_payment_attempt_at"] is None  # no automatic retries: the customer acts

    clock.advance(timedelta(hours=23, seconds=1))
    await worker.settle()
    sub = await subscription(client, org)
    assert sub["status"] == "canceled"
    assert sub["effective_plan"] == "free"
    [invoice] = await invoices(client, org)
    assert invoice["status"] == "void"


async def test_an_upgrade_mid_period_is_prorated_on_the_next_invoice(
    new_org,
    client: httpx.AsyncClient,
    worker: Worker,
    clock: ManualClock,  # type: ignore[no-untyped-def]
) -> None:
    org: Org = await new_org()
    await _use_up_trial(client, org)
    await set_card(client, org)
    start = await change_plan(client, org, "pro")
    await worker.settle()
    period = _seconds(start["current_period_start"], start["current_period_end"])
    clock.advance(timedelta(seconds=period // 4))
    upgraded = await change_plan(client, org, "business")
    assert upgraded["status"] == "active"
    assert upgraded["plan"]["code"] == upgraded["effective_plan"] == "business"
    remaining = period - period // 4
    credit = -_round(1900 * remaining, period)
    charge = _round(9900 * remaining, period)

    clock.advance(timedelta(seconds=remaining))
    await worker.settle()
    _, renewal = await invoices(client, org)
    assert renewal["billing_reason"] == "subscription_cycle"
    assert lines(renewal) == [("subscription", 9900), ("proration", credit), ("proration", charge)]
    assert renewal["total"] == 9900 + credit + charge
    assert renewal["status"] == "paid"


async def test_a_downgrade_waits_for_the_period_end(
    new_org,
    client: httpx.AsyncClient,
    worker: Worker,
    clock: ManualClock,
    billing: BillingService,  # type: ignore[no-untyped-def]
) -> None:
    org: Org = await new_org()
    await _use_up_trial(client, org)
    await set_card(client, org)
    start = await change_plan(client, org, "business")
    await worker.settle()
    scheduled = await change_plan(client, org, "pro")
    assert scheduled["plan"]["code"] == "business"
    assert scheduled["scheduled_change"]["plan"]["code"] == "pro"
    assert scheduled["scheduled_change"]["at"] == start["current_period_end"]
    assert (await billing.check_entitlement(org.id, "audit_log")).allowed

    clock.advance(timedelta(seconds=_seconds(start["current_period_start"], start["current_period_end"])))
    await worker.settle()
    sub = await subscription(client, org)
    assert sub["plan"]["code"] == "pro"
    assert sub["scheduled_change"] is None
    _, renewal = await invoices(client, org)
    assert lines(renewal) == [("subscription", 1900)]
    assert not (await billing.check_entitlement(org.id, "audit_log")).allowed


async def test_cancel_at_period_end_resume_and_cancel_for_good(
    new_org,
    client: httpx.AsyncClient,
    worker: Worker,
    clock: ManualClock,  # type: ignore[no-untyped-def]
) -> None:
    org: Org = await new_org()
    trial = await change_plan(client, org, "pro")
    scheduled = await call(client, org, "POST", "/subscription/cancel", json={})
    assert scheduled["cancel_at_period_end"] is True
    assert scheduled["status"] == "trialing"
    resumed = await call(client, org, "POST", "/subscription/resume")
    assert resumed["cancel_at_period_end"] is False
    problem = await call(client, org, "POST", "/subscription/resume", 409)
    assert problem["code"] == "illegal-transition"

    await call(client, org, "POST", "/subscription/cancel", json={"at_period_end": True})
    clock.advance(timedelta(seconds=_seconds(trial["current_period_start"], trial["current_period_end"]) + 1))
    await worker.settle()
    sub = await subscription(client, org)
    assert sub["status"] == "canceled"
    assert sub["effective_plan"] == "free"
    assert await invoices(client, org) == []  # nothing was owed for a trial
    problem = await call(client, org, "POST", "/subscription/resume", 409)
    assert problem["code"] == "illegal-transition"
    history = await call(client, org, "GET", "/subscription/history")
    assert [h["change"] for h in reversed(history["items"])] == [
        "created",
        "trial_started",
        "cancel_scheduled",
        "resumed",
        "cancel_scheduled",
        "canceled",
    ]


async def test_an_interval_change_starts_a_new_period_invoiced_at_once(
    new_org,
    client: httpx.AsyncClient,
    worker: Worker,
    clock: ManualClock,  # type: ignore[no-untyped-def]
) -> None:
    org: Org = await new_org()
    await _use_up_trial(client, org)
    await set_card(client, org)
    start = await change_plan(client, org, "pro")
    await worker.settle()
    period = _seconds(start["current_period_start"], start["current_period_end"])
    clock.advance(timedelta(seconds=period // 2))
    yearly = await change_plan(client, org, "pro", interval="year")
    assert yearly["price"] == {"amount": 19000, "currency": "USD", "interval": "year"}
    await worker.settle()
    _, update = await invoices(client, org)
    assert update["billing_reason"] == "subscription_update"
    credit = -_round(1900 * (period - period // 2), period)
    assert lines(update) == [("subscription", 19000), ("proration", credit)]
    assert update["status"] == "paid"
    assert update["amount_paid"] == 19000 + credit


async def test_illegal_changes_are_409_problems(
    new_org,
    client: httpx.AsyncClient,
    worker: Worker,
    clock: ManualClock,  # type: ignore[no-untyped-def]
) -> None:
    org: Org = await new_org()
    problem = await call(client, org, "POST", "/subscription/cancel", 409, json={})
    assert problem["code"] == "illegal-transition"
    assert "free plan" in problem["detail"]
    await change_plan(client, org, "pro")
    clock.advance(timedelta(days=14, seconds=1))  # no payment method: past due
    await worker.settle()
    problem = await change_plan(client, org, "business", 409)
    assert problem["code"] == "illegal-transition"
    assert problem["trigger"] == "change_plan"
    assert problem["subscription_status"] == "past_due"
    unknown = await change_plan(client, org, "platinum", 422)
    assert unknown["code"] == "unknown-plan"
    free_yearly = await call(
        client, org, "POST", "/subscription/change", 422, json={"plan": "pro", "interval": "week"}
    )
    assert free_yearly["code"] == "validation-failed" or free_yearly["status"] == 422


async def test_only_owners_and_admins_manage_billing(
    new_org,
    client: httpx.AsyncClient,
    users: Users,
    events: EventRecorder,  # type: ignore[no-untyped-def]
) -> None:
    org: Org = await new_org()
    member = await add_member(client, events, users, org.owner, str(org.id), "member")
    read = await client.get(f"{org.base}/subscription", headers=member.headers)
    assert read.status_code == 200
    for path, body in [
        ("/subscription/change", {"plan": "pro"}),
        ("/subscription/cancel", {}),
        ("/subscription/resume", None),
        ("/payment-method", {"token": "pm_card_visa"}),
    ]:
        assert_problem(
            await client.post(f"{org.base}{path}", json=body, headers=member.headers),
            403,
            "missing-permission",
        )
    admin = await add_member(client, events, users, org.owner, str(org.id), "admin")
    changed = await client.post(
        f"{org.base}/subscription/change", json={"plan": "pro"}, headers=admin.headers
    )
    assert changed.status_code == 200, changed.text

    stranger: Org = await new_org("Other")
    for method, path in [("GET", "/subscription"), ("POST", "/subscription/resume"), ("GET", "/invoices")]:
        response = await client.request(method, f"{org.base}{path}", headers=stranger.owner.headers)
        assert response.status_code == 404, (path, response.text)


async def test_a_retried_change_with_an_idempotency_key_acts_once(
    new_org,
    client: httpx.AsyncClient,
    events: EventRecorder,  # type: ignore[no-untyped-def]
) -> None:
    org: Org = await new_org()
    headers = {**await org.headers(), "Idempotency-Key": "upgrade-1"}
    first = await client.post(f"{org.base}/subscription/change", json={"plan": "pro"}, headers=headers)
    again = await client.post(f"{org.base}/subscription/change", json={"plan": "pro"}, headers=headers)
    assert first.status_code == again.status_code == 200
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    reused = await client.post(f"{org.base}/subscription/change", json={"plan": "business"}, headers=headers)
    assert_problem(reused, 422, "idempotency-key-reused")
    assert [e.change for e in events.of_type(SubscriptionChanged)].count("trial_started") == 1


# -- helpers -------------------------------------------------------------------------------------------


async def _use_up_trial(client: httpx.AsyncClient, org: Org) -> None:
    """Start and end a trial, so the next paid plan starts without one."""
    await change_plan(client, org, "pro")
    await call(client, org, "POST", "/subscription/cancel", json={"at_period_end": False})


def _seconds(start: str, end: str) -> int:
    from datetime import datetime

    return int((datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds())


def _round(numerator: int, denominator: int) -> int:
    return (2 * numerator + denominator) // (2 * denominator)


async def test_the_upcoming_invoice_shows_what_the_period_end_will_bill(
    new_org,
    client: httpx.AsyncClient,
    worker: Worker,
    clock: ManualClock,
    billing: BillingService,  # type: ignore[no-untyped-def]
) -> None:
    org: Org = await new_org()
    await _use_up_trial(client, org)
    await set_card(client, org)
    start = await change_plan(client, org, "pro")
    await worker.settle()
    period = _seconds(start["current_period_start"], start["current_period_end"])
    clock.advance(timedelta(seconds=period // 2))
    await billing.record_usage(org.id, "api_calls", 102_000, "half-way")
    preview = await call(client, org, "GET", "/upcoming-invoice")
    assert preview["period_end"] == start["current_period_end"]
    assert lines(preview) == [("subscription", 1900), ("usage", 100)]
    assert preview["lines"][0]["period_start"] == start["current_period_end"]
    assert preview["total"] == 2000
    assert len(await invoices(client, org)) == 1, "a preview writes nothing"

    await change_plan(client, org, "business")
    credit = -_round(1900 * (period - period // 2), period)
    charge = _round(9900 * (period - period // 2), period)
    preview = await call(client, org, "GET", "/upcoming-invoice")
    # Usage is priced on the plan in force when the period ends: Business includes a million calls.
    assert lines(preview) == [
        ("subscription", 9900),
        ("proration", credit),
        ("proration", charge),
        ("usage", 0),
    ]

    await call(client, org, "POST", "/subscription/cancel", json={})
    problem = await call(client, org, "GET", "/upcoming-invoice", 404)
    assert problem["code"] == "no-upcoming-invoice"
