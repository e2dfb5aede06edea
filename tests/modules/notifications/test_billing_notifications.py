"""Billing's events become emails, in-app items and webhooks for the organization's billing contacts.

The billing module's use cases are not driven here: each test publishes billing's events on billing's
own unit of work, as its services do, and lets the worker relay and handle them. Emails are read back
from the file backend's `.eml` files, in-app items through the inbox API.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from email.utils import parseaddr
from pathlib import Path
from typing import Any, cast
from uuid import UUID

import httpx
import pytest
from standardwebhooks.webhooks import Webhook
from uuid6 import uuid7

from splitstone.kernel.clock import ManualClock
from splitstone.kernel.container import Container
from splitstone.kernel.events import Envelope, Event, EventRecorder
from splitstone.kernel.messaging.worker import Worker
from splitstone.modules.billing.api import (
    InvoiceFinalized,
    InvoicePaid,
    PaymentFailed,
    SubscriptionChanged,
    SubscriptionStatus,
    TrialEnding,
)
from splitstone.modules.notifications.api import Channel, InvalidNotificationData
from splitstone.modules.notifications.catalog import KINDS
from splitstone.modules.notifications.handlers import NOTIFIED_CHANGES, SUBSCRIPTIONS
from splitstone.modules.notifications.service import NotificationsService
from splitstone.modules.notifications.templates import Templates
from tests.modules.auth.conftest import SignedIn, Users
from tests.modules.auth.org_helpers import add_member
from tests.modules.notifications.webhook_support import (  # fixtures are used by name
    Receiver,
    create_endpoint,
    organization,
    receiver_fixture,  # noqa: F401
    webhook_settings_fixture,  # noqa: F401
)

BILLING_EMAIL = "billing@example.com"
PERIOD_END = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
NEXT_ATTEMPT = datetime(2026, 12, 3, 9, 30, tzinfo=UTC)
BILLING_EVENT_TYPES = [
    "billing.SubscriptionChanged",
    "billing.InvoiceFinalized",
    "billing.InvoicePaid",
    "billing.PaymentFailed",
    "billing.TrialEnding",
]


# -- set-up ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Org:
    id: UUID
    owner: SignedIn
    admin: SignedIn
    member: SignedIn
    billing_url: str
    now: datetime  # when its billing events occur

    @property
    def admins(self) -> set[str]:
        return {self.owner.email, self.admin.email}


@pytest.fixture
async def org(
    client: httpx.AsyncClient,
    users: Users,
    worker: Worker,
    events: EventRecorder,
    container: Container,
    clock: ManualClock,
) -> Org:
    """An organization with an owner, an admin and a plain member, its sign-up mail already sent."""
    owner, org_id = await organization(client, users, worker)
    admin = await add_member(client, events, users, owner, org_id, "admin")
    member = await add_member(client, events, users, owner, org_id, "member")
    await worker.settle()
    billing_url = f"{container.settings.public_base_url}/orgs/{org_id}/billing"
    return Org(UUID(org_id), owner, admin, member, billing_url, clock.now())


class Outbox:
    """The emails the file backend writes from now on."""

    def __init__(self, mail_dir: Path) -> None:
        self._dir = mail_dir
        self._before = self._files()

    def _files(self) -> set[Path]:
        return set(self._dir.glob("*.eml")) if self._dir.exists() else set()

    def new(self) -> list[EmailMessage]:
        return [
            message_from_bytes(path.read_bytes(), policy=policy.default)
            for path in sorted(self._files() - self._before)
        ]

    def to(self, address: str) -> list[EmailMessage]:
        return [m for m in self.new() if parseaddr(str(m["To"]))[1] == address]


@pytest.fixture
def outbox(org: Org, mail_dir: Path) -> Outbox:
    return Outbox(mail_dir)


def text(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("plain",))
    assert part is not None
    return cast(str, part.get_content()).replace("\r\n", "\n")


def html(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("html",))
    assert part is not None
    return cast(str, part.get_content())


async def billing_items(client: httpx.AsyncClient, who: SignedIn) -> list[dict[str, Any]]:
    """`who`'s in-app items about billing, newest first."""
    response = await client.get("/api/v1/notifications", headers=who.headers)
    assert response.status_code == 200, response.text
    return [i for i in response.json()["items"] if i["kind"].startswith("billing.")]


async def publish(container: Container, worker: Worker, *events: Event) -> None:
    """Publish as billing's services do (on its unit of work), then let the worker deliver."""
    async with container.units_of_work["billing"]() as uow:
        uow.publish(*events)
        await uow.commit()
    await worker.settle()


# -- billing's events, with what a test does not care about filled in -----------------------------------


def _contact(org: Org, billing_email: str | None) -> dict[str, Any]:
    return {"occurred_at": org.now, "org_id": org.id, "org_name": "Acme", "billing_email": billing_email}


def payment_failed(org: Org, billing_email: str | None = None, **changes: Any) -> PaymentFailed:
    invoice_id = uuid7()
    values: dict[str, Any] = {
        "aggregate_id": invoice_id,
        "invoice_id": invoice_id,
        "number": "ACME-0042",
        "amount_due": 1900,
        "currency": "USD",
        "attempt": 1,
        "failure_code": "card_declined",
        "failure_message": "Your card was declined.",
        "next_attempt_at": NEXT_ATTEMPT,
    }
    return PaymentFailed(**{**_contact(org, billing_email), **values, **changes})


def invoice_paid(org: Org, billing_email: str | None = None, **changes: Any) -> InvoicePaid:
    invoice_id = uuid7()
    values: dict[str, Any] = {
        "aggregate_id": invoice_id,
        "invoice_id": invoice_id,
        "number": "ACME-0042",
        "amount_paid": 1900,
        "currency": "USD",
        "paid_at": datetime(2026, 11, 2, 14, 5, tzinfo=UTC),
    }
    return InvoicePaid(**{**_contact(org, billing_email), **values, **changes})


def invoice_finalized(org: Org, billing_email: str | None = None, **changes: Any) -> InvoiceFinalized:
    invoice_id = uuid7()
    values: dict[str, Any] = {
        "aggregate_id": invoice_id,
        "invoice_id": invoice_id,
        "number": "ACME-0042",
        "total": 4900,
        "amount_due": 4900,
        "currency": "USD",
        "period_start": datetime(2026, 11, 1, tzinfo=UTC),
        "period_end": PERIOD_END,
    }
    return InvoiceFinalized(**{**_contact(org, billing_email), **values, **changes})


def subscription_changed(
    org: Org, change: str, billing_email: str | None = None, **changes: Any
) -> SubscriptionChanged:
    subscription_id = uuid7()
    values: dict[str, Any] = {
        "aggregate_id": subscription_id,
        "subscription_id": subscription_id,
        "change": change,
        "status": SubscriptionStatus.ACTIVE,
        "previous_status": SubscriptionStatus.ACTIVE,
        "plan": "pro",
        "plan_name": "Pro",
        "previous_plan": "free",
        "effective_plan": "pro",
        "current_period_end": PERIOD_END,
    }
    return SubscriptionChanged(**{**_contact(org, billing_email), **values, **changes})


def trial_ending(org: Org, billing_email: str | None = None, **changes: Any) -> TrialEnding:
    subscription_id = uuid7()
    values: dict[str, Any] = {
        "aggregate_id": subscription_id,
        "subscription_id": subscription_id,
        "plan": "pro",
        "plan_name": "Pro",
        "trial_end": PERIOD_END,
        "has_payment_method": False,
    }
    return TrialEnding(**{**_contact(org, billing_email), **values, **changes})


# -- who hears what -------------------------------------------------------------------------------------


async def test_a_failed_payment_reaches_owners_and_admins_by_email_and_in_the_app(
    org: Org, outbox: Outbox, container: Container, worker: Worker, client: httpx.AsyncClient
) -> None:
    await publish(container, worker, payment_failed(org))

    mails = outbox.new()
    assert {parseaddr(str(m["To"]))[1] for m in mails} == org.admins  # not the plain member
    for mail in mails:
        assert mail["Subject"] == "The payment of 19.00 USD for Acme failed"
        body = text(mail)
        assert "We could not collect the payment of 19.00 USD for invoice ACME-0042 of Acme" in body
        assert "Reason: Your card was declined." in body
        assert "We will try again on 3 December 2026, 09:30 UTC." in body
        assert org.billing_url in body
        assert f'href="{org.billing_url}"' in html(mail)
        assert mail["List-Unsubscribe"] is None  # transactional: about keeping access to the plan
    for who in (org.owner, org.admin):
        [item] = await billing_items(client, who)
        assert item["kind"] == "billing.payment_failed"
        assert item["category"] == "billing"
        assert item["title"] == "The payment of 19.00 USD failed"
        assert "we will try again on 3 December 2026, 09:30 UTC" in item["body"]
        assert item["link"] == org.billing_url
        assert item["org_id"] == str(org.id)
        assert item["data"]["amount_due"] == 1900  # raw minor units for clients that render items
    assert await billing_items(client, org.member) == []


async def test_with_a_billing_email_the_email_goes_there_and_not_to_owners_and_admins(
    org: Org, outbox: Outbox, container: Container, worker: Worker
) -> None:
    await publish(container, worker, payment_failed(org, BILLING_EMAIL), invoice_paid(org, BILLING_EMAIL))

    mails = outbox.new()
    assert {parseaddr(str(m["To"]))[1] for m in mails} == {BILLING_EMAIL}
    assert sorted(str(m["Subject"]) for m in mails) == [
        "Receipt for invoice ACME-0042 of Acme",
        "The payment of 19.00 USD for Acme failed",
    ]
    for mail in mails:
        assert text(mail).startswith("Hello,\n")  # an address without an account: no name to greet
        assert org.billing_url in text(mail)


async def test_a_billing_email_that_cannot_receive_mail_falls_back_to_owners_and_admins(
    org: Org, outbox: Outbox, container: Container, worker: Worker
) -> None:
    """Billing may hold an address `notify` refuses; the notice must not be lost (nor fail for ever)."""
    await publish(container, worker, payment_failed(org, "billing@acme.test"))

    assert {parseaddr(str(m["To"]))[1] for m in outbox.new()} == org.admins


async def test_with_a_billing_email_owners_and_admins_still_get_the_in_app_item(
    org: Org, outbox: Outbox, container: Container, worker: Worker, client: httpx.AsyncClient
) -> None:
    await publish(container, worker, payment_failed(org, BILLING_EMAIL))

    assert {parseaddr(str(m["To"]))[1] for m in outbox.new()} == {BILLING_EMAIL}
    for who in (org.owner, org.admin):
        assert [i["kind"] for i in await billing_items(client, who)] == ["billing.payment_failed"]


async def test_a_new_invoice_with_an_amount_due_is_announced_in_the_app_only(
    org: Org, outbox: Outbox, container: Container, worker: Worker, client: httpx.AsyncClient
) -> None:
    await publish(container, worker, invoice_finalized(org, BILLING_EMAIL, amount_due=4400))

    assert outbox.new() == []
    for who in (org.owner, org.admin):  # in-app items go to owners and admins, billing email or not
        [item] = await billing_items(client, who)
        assert item["kind"] == "billing.invoice_finalized"
        assert item["title"] == "Invoice ACME-0042 for 49.00 USD"
        assert (
            item["body"]
            == "Invoice ACME-0042 of Acme for 49.00 USD was issued; 44.00 USD is due after credits."
        )
        assert item["link"] == org.billing_url
    assert await billing_items(client, org.member) == []


async def test_a_paid_invoice_gets_an_emailed_receipt_and_no_in_app_item(
    org: Org, outbox: Outbox, container: Container, worker: Worker, client: httpx.AsyncClient
) -> None:
    await publish(container, worker, invoice_paid(org, amount_paid=250000, currency="JPY"))

    mails = outbox.new()
    assert {parseaddr(str(m["To"]))[1] for m in mails} == org.admins
    for mail in mails:
        assert mail["Subject"] == "Receipt for invoice ACME-0042 of Acme"
        body = text(mail)
        assert "Invoice:     ACME-0042" in body
        assert "Amount paid: 250,000 JPY" in body  # the yen has no minor unit
        assert "Paid on:     2 November 2026, 14:05 UTC" in body
        assert "<strong>250,000 JPY</strong>" in html(mail)
        assert mail["List-Unsubscribe"] is None  # a receipt is transactional
    assert await billing_items(client, org.owner) == []


async def test_a_scheduled_cancellation_is_announced_with_its_date(
    org: Org, outbox: Outbox, container: Container, worker: Worker, client: httpx.AsyncClient
) -> None:
    await publish(container, worker, subscription_changed(org, "cancel_scheduled"))

    mails = outbox.new()
    assert {parseaddr(str(m["To"]))[1] for m in mails} == org.admins
    for mail in mails:
        assert mail["Subject"] == "The Pro subscription of Acme ends on 1 December 2026, 09:00 UTC"
        assert "was canceled and ends on 1 December 2026, 09:00 UTC" in text(mail)
        # Not transactional: each user can opt out of billing email with one click.
        assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    [item] = await billing_items(client, org.admin)
    assert item["kind"] == "billing.subscription_changed"
    assert item["title"] == "The Pro subscription of Acme ends on 1 December 2026, 09:00 UTC"


@pytest.mark.parametrize("notifications_settings", [{"default_locale": "de"}], indirect=True)
async def test_a_german_recipient_reads_german_with_german_amounts(
    org: Org, outbox: Outbox, container: Container, worker: Worker, client: httpx.AsyncClient
) -> None:
    """A recipient's locale is the configured default (auth keeps none per user yet)."""
    await publish(container, worker, payment_failed(org, amount_due=123456, next_attempt_at=None))

    [mail, *_] = outbox.to(org.owner.email)
    assert mail["Subject"] == "Die Zahlung von 1.234,56 USD für Acme ist fehlgeschlagen"
    body = text(mail)
    assert "Die Zahlung von 1.234,56 USD für die Rechnung ACME-0042 von Acme" in body
    assert "Das war der letzte Versuch." in body
    assert '<html lang="de">' in html(mail)
    [item] = await billing_items(client, org.owner)
    assert item["title"] == "Die Zahlung von 1.234,56 USD ist fehlgeschlagen"

    await publish(container, worker, trial_ending(org))
    [trial] = [m for m in outbox.to(org.admin.email) if "Testphase" in str(m["Subject"])]
    assert trial["Subject"] == "Die Testphase von Pro für Acme endet am 1. Dezember 2026, 09:00 UTC"
    assert "Für Acme ist noch keine Zahlungsmethode hinterlegt." in text(trial)


# -- what only goes to webhooks -------------------------------------------------------------------------


async def test_routine_changes_and_invoices_with_nothing_due_only_go_to_webhooks(
    org: Org,
    outbox: Outbox,
    container: Container,
    worker: Worker,
    client: httpx.AsyncClient,
    receiver: Receiver,
    notifications: NotificationsService,
) -> None:
    await create_endpoint(client, org.owner, str(org.id), receiver.url, event_types=BILLING_EVENT_TYPES)
    quiet = [
        subscription_changed(org, "created"),
        subscription_changed(org, "renewed"),
        subscription_changed(org, "past_due", status=SubscriptionStatus.PAST_DUE),
        invoice_finalized(org, amount_due=0),
    ]

    await publish(container, worker, *quiet)

    assert outbox.new() == []
    for who in (org.owner, org.admin):
        assert await billing_items(client, who) == []
    billing_deliveries = [
        d for d in await notifications.delivery_log.recent() if d.kind.startswith("billing.")
    ]
    assert billing_deliveries == []
    received = sorted(
        (r.json()["type"], r.json()["data"].get("change"), r.json()["data"].get("amount_due"))
        for r in receiver.requests
    )
    assert received == [
        ("billing.InvoiceFinalized", None, 0),
        ("billing.SubscriptionChanged", "created", None),
        ("billing.SubscriptionChanged", "past_due", None),
        ("billing.SubscriptionChanged", "renewed", None),
    ]


async def test_every_billing_event_reaches_the_endpoints_subscribed_to_it(
    org: Org,
    container: Container,
    worker: Worker,
    client: httpx.AsyncClient,
    receiver: Receiver,
) -> None:
    everything = await create_endpoint(client, org.owner, str(org.id), receiver.url)
    failed = payment_failed(org, BILLING_EMAIL)
    async with Receiver() as failures:
        await create_endpoint(
            client, org.owner, str(org.id), failures.url, event_types=["billing.PaymentFailed"]
        )

        await publish(
            container,
            worker,
            subscription_changed(org, "upgraded", BILLING_EMAIL),
            invoice_finalized(org, BILLING_EMAIL),
            invoice_paid(org, BILLING_EMAIL),
            failed,
            trial_ending(org, BILLING_EMAIL),
        )

    assert sorted(r.json()["type"] for r in receiver.requests) == sorted(BILLING_EVENT_TYPES)
    for request in receiver.requests:
        payload = Webhook(everything["secret"]).verify(request.body, request.headers)
        assert payload["data"]["org_id"] == str(org.id)
        assert "billing_email" not in payload["data"]  # the contact's address is not the endpoint's business
    [only] = failures.requests
    assert only.json()["type"] == "billing.PaymentFailed"
    assert only.json()["data"] == {
        "org_id": str(org.id),
        "org_name": "Acme",
        "invoice_id": str(failed.invoice_id),
        "number": "ACME-0042",
        "amount_due": 1900,
        "currency": "USD",
        "attempt": 1,
        "failure_code": "card_declined",
        "failure_message": "Your card was declined.",
        "next_attempt_at": "2026-12-03T09:30:00Z",
    }


async def test_a_redelivered_billing_event_sends_nothing_twice(
    org: Org,
    outbox: Outbox,
    container: Container,
    worker: Worker,
    client: httpx.AsyncClient,
    receiver: Receiver,
    notifications: NotificationsService,
) -> None:
    await create_endpoint(client, org.owner, str(org.id), receiver.url)
    event = payment_failed(org)
    await publish(container, worker, event)
    assert len(outbox.new()) == 2
    assert len(receiver.requests) == 1

    # The broker delivers it again; then the handler runs again as if the inbox had forgotten it.
    inbox = next(i for i in worker.inboxes if i.module == "notifications")
    await inbox.deliver([Envelope.of(event)])
    await SUBSCRIPTIONS[PaymentFailed](notifications)(event)
    await worker.settle()

    assert len(outbox.new()) == 2
    assert len(receiver.requests) == 1
    for who in (org.owner, org.admin):
        assert len(await billing_items(client, who)) == 1


# -- the templates --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def templates() -> Templates:
    return Templates(product_name="Splitstone", app_url="https://app.example", default_locale="en")


def _invoice_title(templates: Templates, locale: str, total: int, currency: str) -> str:
    data = {
        **KINDS["billing.invoice_finalized"].example,
        "total": total,
        "amount_due": total,
        "currency": currency,
    }
    return templates.render_in_app("billing.invoice_finalized", locale, data).title


@pytest.mark.parametrize(
    ("amount", "currency", "english", "german"),
    [
        (1900, "USD", "19.00 USD", "19,00 USD"),
        (5, "EUR", "0.05 EUR", "0,05 EUR"),
        (0, "EUR", "0.00 EUR", "0,00 EUR"),
        (-500, "USD", "-5.00 USD", "-5,00 USD"),
        (-5, "USD", "-0.05 USD", "-0,05 USD"),
        (123456789, "EUR", "1,234,567.89 EUR", "1.234.567,89 EUR"),
        (1900, "JPY", "1,900 JPY", "1.900 JPY"),
        (50000, "KRW", "50,000 KRW", "50.000 KRW"),
        (1500, "KWD", "1.500 KWD", "1,500 KWD"),
        (7, "BHD", "0.007 BHD", "0,007 BHD"),
        (12345, "CLF", "1.2345 CLF", "1,2345 CLF"),
    ],
)
def test_amounts_are_written_with_the_currency_s_decimals_in_the_reader_s_language(
    templates: Templates, amount: int, currency: str, english: str, german: str
) -> None:
    assert _invoice_title(templates, "en", amount, currency) == f"Invoice ACME-0007 for {english}"
    assert _invoice_title(templates, "de", amount, currency) == f"Rechnung ACME-0007 über {german}"


def test_an_amount_writes_only_the_letters_of_the_currency_code_into_html(templates: Templates) -> None:
    data = {**KINDS["billing.invoice_paid"].example, "currency": 'U"><script>S'}

    email = templates.render_email(
        "billing.invoice_paid", "en", data, recipient_name=None, unsubscribe_url=None
    )

    assert "<script>" not in email.html
    assert "19.00 US<" in email.html


@pytest.mark.parametrize("locale", ["en", "de"])
@pytest.mark.parametrize("change", sorted(NOTIFIED_CHANGES))
def test_every_notified_change_has_its_own_words(templates: Templates, change: str, locale: str) -> None:
    data = {**KINDS["billing.subscription_changed"].example, "change": change}

    email = templates.render_email(
        "billing.subscription_changed", locale, data, recipient_name="Ada", unsubscribe_url=None
    )
    entry = templates.render_in_app("billing.subscription_changed", locale, data)

    assert "Acme <Inc>" in email.subject
    assert entry.title == email.subject
    assert entry.body in " ".join(email.text.split())
    assert "Acme &lt;Inc&gt;" in email.html
    summaries = {
        other: templates.render_in_app("billing.subscription_changed", locale, {**data, "change": other}).body
        for other in NOTIFIED_CHANGES
    }
    assert list(summaries.values()).count(entry.body) == 1


def test_an_unknown_change_has_no_words(templates: Templates) -> None:
    data = {**KINDS["billing.subscription_changed"].example, "change": "renewed"}

    with pytest.raises(InvalidNotificationData, match="renewed"):
        templates.render_in_app("billing.subscription_changed", "en", data)


def test_the_handlers_decide_about_every_change_billing_announces() -> None:
    """A change billing adds must be sorted here: notified (and given words) or webhook only."""
    description = SubscriptionChanged.model_fields["change"].description
    assert description is not None
    announced = {c.strip() for c in description.split(",")}

    assert announced == NOTIFIED_CHANGES | {"created", "renewed", "past_due"}


@pytest.mark.parametrize(
    ("next_attempt_at", "expected"),
    [
        (None, "This was the last attempt."),
        ("2026-12-03T09:30:00+00:00", "We will try again on 3 December 2026, 09:30 UTC."),
    ],
)
def test_payment_failed_says_whether_another_attempt_follows(
    templates: Templates, next_attempt_at: str | None, expected: str
) -> None:
    data = {**KINDS["billing.payment_failed"].example, "next_attempt_at": next_attempt_at}

    email = templates.render_email(
        "billing.payment_failed", "en", data, recipient_name=None, unsubscribe_url=None
    )

    assert expected in email.text


@pytest.mark.parametrize(
    ("has_payment_method", "expected"),
    [
        (False, "Acme <Inc> has no payment method yet. To keep Pro after the trial, add one"),
        (True, "There is nothing you need to do to keep Pro"),
    ],
)
def test_trial_ending_asks_for_a_payment_method_only_when_there_is_none(
    templates: Templates, has_payment_method: bool, expected: str
) -> None:
    data = {**KINDS["billing.trial_ending"].example, "has_payment_method": has_payment_method}

    email = templates.render_email(
        "billing.trial_ending", "en", data, recipient_name=None, unsubscribe_url=None
    )

    assert expected in email.text
    assert ("no payment method" in email.text) is not has_payment_method


def test_billing_kinds_are_billing_with_the_channels_their_purpose_needs() -> None:
    kinds = {
        name: (k.category.value, k.transactional, set(k.channels))
        for name, k in KINDS.items()
        if name.startswith("billing.")
    }

    assert kinds == {
        "billing.trial_ending": ("billing", False, {Channel.EMAIL, Channel.IN_APP}),
        "billing.payment_failed": ("billing", True, {Channel.EMAIL, Channel.IN_APP}),
        "billing.invoice_paid": ("billing", True, {Channel.EMAIL}),
        "billing.invoice_finalized": ("billing", False, {Channel.IN_APP}),
        "billing.subscription_changed": ("billing", False, {Channel.EMAIL, Channel.IN_APP}),
    }
