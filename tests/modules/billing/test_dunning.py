"""Dunning end to end on the sandbox provider, with the emails in a real (test) SMTP server:
a declined renewal → past due → retries on the schedule → recovery on a good card, or → unpaid or
canceled when every retry fails."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import pytest

from splitstone.kernel.clock import ManualClock
from splitstone.kernel.events import EventRecorder
from splitstone.kernel.messaging.worker import Worker
from splitstone.kernel.settings import ModuleSettings
from splitstone.modules.billing.api import PaymentFailed
from splitstone.modules.billing.service import BillingService
from splitstone.modules.billing.settings import BillingSettings
from splitstone.modules.notifications.settings import NotificationsSettings
from tests.modules.billing.conftest import Org
from tests.modules.billing.support import call, change_plan, invoices, set_card, subscription
from tests.support.mailbox import Mailbox, smtp_server

CONTACT = "billing@acme.example"


@pytest.fixture
def mailbox() -> Iterator[Mailbox]:
    with smtp_server() as box:
        yield box


@pytest.fixture
def final_action() -> str:
    return "unpaid"


@pytest.fixture
def module_settings(mailbox: Mailbox, final_action: str, tmp_path: Path) -> dict[str, ModuleSettings]:
    return {
        "billing": BillingSettings(
            sandbox_webhook_url=None,
            invoice_finalize_delay_seconds=0,
            dunning_retry_days=[1, 3, 5],
            dunning_final_action=final_action,  # type: ignore[arg-type]
        ),
        "notifications": NotificationsSettings(
            email_backend="smtp", smtp_port=mailbox.port, smtp_security="none", mail_dir=tmp_path / "mail"
        ),
    }


async def _renewal_declined(
    client: httpx.AsyncClient, org: Org, worker: Worker, clock: ManualClock
) -> tuple[dict, datetime]:  # type: ignore[type-arg]
    """A paid pro subscription whose card declines at the first renewal; returns it and the renewal time."""
    await call(client, org, "PATCH", "/account", json={"billing_email": CONTACT})
    await change_plan(client, org, "pro")
    await call(client, org, "POST", "/subscription/cancel", json={"at_period_end": False})
    await set_card(client, org)
    started = await change_plan(client, org, "pro")
    await worker.settle()
    await set_card(client, org, "pm_card_chargeDeclined")
    renewal = datetime.fromisoformat(started["current_period_end"])
    clock.set(renewal + timedelta(seconds=1))
    await worker.settle()
    return started, renewal


async def _at(clock: ManualClock, worker: Worker, moment: datetime) -> None:
    clock.set(moment)
    await worker.settle()


async def test_decline_past_due_retries_then_recovery_on_a_good_card(
    new_org,
    client: httpx.AsyncClient,
    worker: Worker,
    clock: ManualClock,
    events: EventRecorder,
    mailbox: Mailbox,  # type: ignore[no-untyped-def]
) -> None:
    org: Org = await new_org()
    _, renewal = await _renewal_declined(client, org, worker, clock)
    sub = await subscription(client, org)
    assert sub["status"] == "past_due"
    assert sub["effective_plan"] == "pro"
    _, invoice = await invoices(client, org)
    assert invoice["status"] == "open"
    assert invoice["attempt_count"] == 1
    finalized = datetime.fromisoformat(invoice["finalized_at"])
    assert datetime.fromisoformat(invoice["next_payment_attempt_at"]) == finalized + timedelta(days=1)
    [first] = await mailbox.wait_for(CONTACT, containing="declined")
    assert "19.00 USD" in first.subject
    assert invoice["number"] in first.text

    await _at(clock, worker, renewal + timedelta(days=1, seconds=2))  # retry 1 fails
    _, invoice = await invoices(client, org)
    assert invoice["attempt_count"] == 2
    assert datetime.fromisoformat(invoice["next_payment_attempt_at"]) == finalized + timedelta(days=3)
    await mailbox.wait_for(CONTACT, containing="declined", count=2)
    assert [e.attempt for e in events.of_type(PaymentFailed)] == [1, 2]

    await set_card(client, org, "pm_card_visa")  # the customer fixes it: tried again at once
    await worker.settle()
    sub = await subscription(client, org)
    assert sub["status"] == "active"
    _, invoice = await invoices(client, org)
    assert invoice["status"] == "paid"
    assert invoice["attempt_count"] == 3
    assert invoice["next_payment_attempt_at"] is None
    *_, receipt = await mailbox.wait_for(CONTACT, containing=invoice["number"], count=3)
    assert "declined" not in receipt.text
    assert "19.00 USD" in receipt.text
    print(receipt.subject)

    await _at(clock, worker, renewal + timedelta(days=3, seconds=2))  # the scheduled retry finds it paid
    assert [e.attempt for e in events.of_type(PaymentFailed)] == [1, 2]


async def test_every_retry_fails_and_the_subscription_becomes_unpaid(
    new_org,
    client: httpx.AsyncClient,
    worker: Worker,
    clock: ManualClock,
    events: EventRecorder,
    mailbox: Mailbox,
    billing: BillingService,  # type: ignore[no-untyped-def]
) -> None:
    org: Org = await new_org()
    _, renewal = await _renewal_declined(client, org, worker, clock)
    for day in (1, 3, 5):
        await _at(clock, worker, renewal + timedelta(days=day, seconds=2))
    failures = events.of_type(PaymentFailed)
    assert [f.attempt for f in failures] == [1, 2, 3, 4]
    assert failures[-1].next_attempt_at is None
    sub = await subscription(client, org)
    assert sub["status"] == "unpaid"
    assert sub["effective_plan"] == "free"
    assert not (await billing.check_entitlement(org.id, "webhooks")).allowed
    _, invoice = await invoices(client, org)
    assert invoice["status"] == "open"  # still payable: paying it reactivates
    await mailbox.wait_for(CONTACT, containing="declined", count=4)
    assert mailbox.messages(CONTACT, containing="last attempt") or mailbox.messages(
        CONTACT, containing="no further"
    )

    await set_card(client, org, "pm_card_visa")
    await worker.settle()
    sub = await subscription(client, org)
    assert sub["status"] == "active"
    assert (await billing.check_entitlement(org.id, "webhooks")).allowed


@pytest.mark.parametrize("final_action", ["cancel"])
async def test_with_cancel_as_the_final_action_the_subscription_ends(
    new_org,
    client: httpx.AsyncClient,
    worker: Worker,
    clock: ManualClock,
    mailbox: Mailbox,
    final_action: str,  # type: ignore[no-untyped-def]
) -> None:
    org: Org = await new_org()
    _, renewal = await _renewal_declined(client, org, worker, clock)
    for day in (1, 3, 5):
        await _at(clock, worker, renewal + timedelta(days=day, seconds=2))
    sub = await subscription(client, org)
    assert sub["status"] == "canceled"
    assert sub["effective_plan"] == "free"
    bills = await invoices(client, org)
    assert bills[1]["status"] == "uncollectible"
    await mailbox.wait_for(CONTACT, containing="declined", count=4)
