"""The sandbox payment provider: test tokens, idempotency, asynchronous settlement and signed webhooks.

Webhooks go to a real HTTP receiver on 127.0.0.1 (not billing's own route), and are checked with
`parse_webhook`, as billing's route does.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any
from uuid import UUID, uuid4

import pytest
from sqlalchemy import select
from uuid6 import uuid7

from splitstone.kernel.clock import ManualClock
from splitstone.kernel.container import Container
from splitstone.kernel.messaging.jobs import Job, RetryJob
from splitstone.kernel.messaging.tables import jobs
from splitstone.kernel.messaging.worker import Worker
from splitstone.modules.billing.api import InvalidPaymentMethod, WebhookRejected
from splitstone.modules.billing.provider import (
    CardSummary,
    PaymentOutcome,
    PaymentResult,
    ProviderEvent,
    ProviderEventType,
)
from splitstone.modules.billing.provider_sandbox import (
    SANDBOX_SETTLE,
    SANDBOX_WEBHOOK,
    TEST_TOKENS,
    SandboxProvider,
)
from splitstone.modules.billing.service import BillingService
from splitstone.modules.billing.settings import BillingSettings
from splitstone.modules.billing.storage import sandbox_objects
from tests.modules.notifications.webhook_support import Received, Receiver, Reply


@pytest.fixture
def provider(billing: BillingService) -> SandboxProvider:
    assert isinstance(billing.provider, SandboxProvider)
    return billing.provider


async def customer_with(provider: SandboxProvider, token: str) -> tuple[str, str]:
    """A new customer and the id of the payment method `token` attached to it."""
    customer_id = await provider.create_customer(
        org_id=uuid4(), name="Acme", email="billing@acme.test", idempotency_key=f"org:{uuid4()}"
    )
    method = await provider.attach_payment_method(customer_id=customer_id, token=token)
    return customer_id, method.id


async def charge(
    provider: SandboxProvider,
    customer_id: str,
    method_id: str,
    *,
    invoice_id: UUID | None = None,
    amount: int = 2900,
    key: str | None = None,
) -> PaymentResult:
    return await provider.charge(
        customer_id=customer_id,
        payment_method_id=method_id,
        amount=amount,
        currency="EUR",
        invoice_id=invoice_id or uuid7(),
        description="Invoice INV-0001",
        idempotency_key=key or f"invoice:{uuid4()}:1",
    )


async def objects(container: Container, kind: str) -> list[dict[str, Any]]:
    async with container.databases["billing"].session() as connection:
        rows = await connection.execute(
            select(sandbox_objects.c.data)
            .where(sandbox_objects.c.kind == kind)
            .order_by(sandbox_objects.c.id)
        )
        return [json.loads(data) for (data,) in rows]


async def job_rows(container: Container, kind: str) -> list[dict[str, Any]]:
    async with container.databases["billing"].session() as connection:
        rows = await connection.execute(select(jobs).where(jobs.c.kind == kind))
        return [dict(r) for r in rows.mappings()]


def parsed(provider: SandboxProvider, request: Received, clock: ManualClock) -> ProviderEvent:
    return provider.parse_webhook(request.body, request.headers, clock.now())


class TestTestTokens:
    @pytest.mark.parametrize(
        ("token", "brand", "last4", "failure_code", "failure_message"),
        [
            ("pm_card_visa", "visa", "4242", None, None),
            ("pm_card_mastercard", "mastercard", "4444", None, None),
            ("pm_card_chargeDeclined", "visa", "0002", "card_declined", "Your card was declined."),
            (
                "pm_card_insufficient_funds",
                "visa",
                "9995",
                "insufficient_funds",
                "Your card has insufficient funds.",
            ),
            ("pm_card_chargeDeclinedExpiredCard", "visa", "0069", "expired_card", "Your card has expired."),
        ],
    )
    async def test_a_card_charge_ends_at_once_as_its_token_says(
        self,
        provider: SandboxProvider,
        clock: ManualClock,
        container: Container,
        token: str,
        brand: str,
        last4: str,
        failure_code: str | None,
        failure_message: str | None,
    ) -> None:
        customer_id = await provider.create_customer(
            org_id=uuid4(), name="Acme", email=None, idempotency_key="org:1"
        )
        method = await provider.attach_payment_method(customer_id=customer_id, token=token)
        invoice_id = uuid7()

        result = await charge(provider, customer_id, method.id, invoice_id=invoice_id)

        assert method.id.startswith("pm_")
        assert len(method.id) == len("pm_") + 24
        assert method.card == CardSummary(
            brand=brand, last4=last4, exp_month=12, exp_year=clock.now().year + 3
        )
        assert result.payment_id.startswith("pi_")
        if failure_code is None:
            assert result == PaymentResult(result.payment_id, PaymentOutcome.SUCCEEDED)
        else:
            assert result == PaymentResult(
                result.payment_id, PaymentOutcome.FAILED, failure_code, failure_message
            )
        [payment] = await objects(container, "payment")
        assert payment["id"] == result.payment_id
        assert payment["status"] == ("succeeded" if failure_code is None else "requires_payment_method")
        assert payment["metadata"] == {"invoice_id": str(invoice_id)}
        assert payment["currency"] == "eur"
        assert payment["amount"] == 2900
        [stored] = await objects(container, "customer")
        assert stored["invoice_settings"]["default_payment_method"] == method.id

    @pytest.mark.parametrize("token", ["pm_debit_success", "pm_debit_failure"])
    async def test_a_debit_charge_is_processing_until_settled(
        self, provider: SandboxProvider, container: Container, clock: ManualClock, token: str
    ) -> None:
        customer_id, method_id = await customer_with(provider, token)

        result = await charge(provider, customer_id, method_id)

        assert result == PaymentResult(result.payment_id, PaymentOutcome.PROCESSING)
        [settle] = await job_rows(container, SANDBOX_SETTLE)
        assert settle["run_at"] == clock.now() + timedelta(seconds=5)
        assert settle["idempotency_key"] == result.payment_id
        assert json.loads(settle["payload"]) == {"payment_id": result.payment_id}

    async def test_the_known_tokens_are_the_documented_ones(self) -> None:
        assert set(TEST_TOKENS) == {
            "pm_card_visa",
            "pm_card_mastercard",
            "pm_card_chargeDeclined",
            "pm_card_insufficient_funds",
            "pm_card_chargeDeclinedExpiredCard",
            "pm_debit_success",
            "pm_debit_failure",
        }
        assert {(c.brand, c.last4) for c in TEST_TOKENS.values() if c.asynchronous} == {("debit", "6789")}


class TestRefusals:
    async def test_an_unknown_token_is_refused_naming_the_known_ones(self, provider: SandboxProvider) -> None:
        customer_id = await provider.create_customer(
            org_id=uuid4(), name="Acme", email=None, idempotency_key="org:1"
        )

        with pytest.raises(InvalidPaymentMethod) as caught:
            await provider.attach_payment_method(customer_id=customer_id, token="tok_visa")

        assert caught.value.status == 422
        assert "'tok_visa'" in caught.value.detail
        assert all(token in caught.value.detail for token in TEST_TOKENS)

    async def test_an_unknown_customer_is_refused(self, provider: SandboxProvider) -> None:
        with pytest.raises(InvalidPaymentMethod, match="No such customer"):
            await provider.attach_payment_method(customer_id="cus_missing", token="pm_card_visa")

    async def test_charging_an_unknown_payment_method_fails_without_raising(
        self, provider: SandboxProvider
    ) -> None:
        customer_id, _ = await customer_with(provider, "pm_card_visa")
        _, others_method = await customer_with(provider, "pm_card_visa")

        unknown = await charge(provider, customer_id, "pm_missing")
        not_theirs = await charge(provider, customer_id, others_method)
        no_customer = await charge(provider, "cus_missing", others_method)

        for result in (unknown, not_theirs, no_customer):
            assert result.outcome is PaymentOutcome.FAILED
            assert result.failure_code == "invalid_payment_method"
            assert result.payment_id.startswith("pi_")
        assert "pm_missing" in (unknown.failure_message or "")
        assert "No such customer" in (no_customer.failure_message or "")

    @pytest.mark.parametrize("amount", [0, -100])
    async def test_nothing_is_charged_for_a_non_positive_amount(
        self, provider: SandboxProvider, container: Container, amount: int
    ) -> None:
        customer_id, method_id = await customer_with(provider, "pm_card_visa")

        with pytest.raises(ValueError, match="positive amounts"):
            await charge(provider, customer_id, method_id, amount=amount)

        assert await objects(container, "payment") == []


class TestIdempotency:
    async def test_a_repeated_key_returns_the_same_customer(
        self, provider: SandboxProvider, container: Container
    ) -> None:
        org_id = uuid4()

        first = await provider.create_customer(
            org_id=org_id, name="Acme", email="a@acme.test", idempotency_key="k"
        )
        again = await provider.create_customer(
            org_id=org_id, name="Acme", email="a@acme.test", idempotency_key="k"
        )
        other = await provider.create_customer(org_id=org_id, name="Acme", email=None, idempotency_key="k2")

        assert first == again != other
        assert first.startswith("cus_")
        assert len(first) == len("cus_") + 24
        customers = await objects(container, "customer")
        assert len(customers) == 2
        assert {c["metadata"]["org_id"] for c in customers} == {str(org_id)}

    async def test_keys_are_per_operation(self, provider: SandboxProvider) -> None:
        customer_id = await provider.create_customer(
            org_id=uuid4(), name="Acme", email=None, idempotency_key="same"
        )
        method = await provider.attach_payment_method(customer_id=customer_id, token="pm_card_visa")

        result = await charge(provider, customer_id, method.id, key="same")

        assert result.outcome is PaymentOutcome.SUCCEEDED

    async def test_a_repeated_charge_returns_the_first_result_and_charges_nothing_more(
        self, provider: SandboxProvider, container: Container
    ) -> None:
        customer_id, method_id = await customer_with(provider, "pm_card_insufficient_funds")

        first = await charge(provider, customer_id, method_id, key="invoice:1:1")
        again = await charge(provider, customer_id, method_id, key="invoice:1:1")
        retry = await charge(provider, customer_id, method_id, key="invoice:1:2")

        assert again == first
        assert first.outcome is PaymentOutcome.FAILED
        assert retry.payment_id != first.payment_id
        assert len(await objects(container, "payment")) == 2

    async def test_concurrent_first_uses_of_a_key_act_once(
        self, provider: SandboxProvider, container: Container
    ) -> None:
        customer_id, method_id = await customer_with(provider, "pm_card_visa")

        results = await asyncio.gather(
            *(charge(provider, customer_id, method_id, key="invoice:1:1") for _ in range(5))
        )

        assert len(set(results)) == 1
        assert len(await objects(container, "payment")) == 1

    async def test_a_repeated_debit_charge_schedules_one_settlement(
        self, provider: SandboxProvider, container: Container
    ) -> None:
        customer_id, method_id = await customer_with(provider, "pm_debit_success")

        first = await charge(provider, customer_id, method_id, key="invoice:1:1")
        again = await charge(provider, customer_id, method_id, key="invoice:1:1")

        assert again == first
        assert len(await job_rows(container, SANDBOX_SETTLE)) == 1


class TestWithoutWebhookUrl:
    """The conftest's settings: `sandbox_webhook_url=None`."""

    async def test_no_event_and_no_webhook_job(
        self, provider: SandboxProvider, container: Container, worker: Worker, clock: ManualClock
    ) -> None:
        customer_id, card = await customer_with(provider, "pm_card_visa")
        await charge(provider, customer_id, card)
        debit_customer, debit = await customer_with(provider, "pm_debit_success")
        processing = await charge(provider, debit_customer, debit)

        clock.advance(timedelta(seconds=5))
        await worker.settle()

        assert await job_rows(container, SANDBOX_WEBHOOK) == []
        assert await objects(container, "event") == []
        [settle] = await job_rows(container, SANDBOX_SETTLE)
        assert settle["status"] == "done"
        settled = [p for p in await objects(container, "payment") if p["id"] == processing.payment_id]
        assert settled[0]["status"] == "succeeded"


class TestWebhooks:
    @pytest.fixture
    async def receiver(self) -> AsyncIterator[Receiver]:
        async with Receiver() as running:
            yield running

    @pytest.fixture
    def billing_settings(self, receiver: Receiver) -> BillingSettings:
        return BillingSettings(sandbox_webhook_url=receiver.url, invoice_finalize_delay_seconds=0)

    @pytest.mark.parametrize(
        ("token", "event_type", "failure_code", "failure_message"),
        [
            ("pm_debit_success", ProviderEventType.PAYMENT_SUCCEEDED, None, None),
            (
                "pm_debit_failure",
                ProviderEventType.PAYMENT_FAILED,
                "debit_refused",
                "The bank refused the debit.",
            ),
        ],
    )
    async def test_a_debit_settles_later_and_a_signed_webhook_says_how(
        self,
        provider: SandboxProvider,
        receiver: Receiver,
        worker: Worker,
        clock: ManualClock,
        container: Container,
        token: str,
        event_type: ProviderEventType,
        failure_code: str | None,
        failure_message: str | None,
    ) -> None:
        customer_id, method_id = await customer_with(provider, token)
        invoice_id = uuid7()
        result = await charge(provider, customer_id, method_id, invoice_id=invoice_id)
        assert result.outcome is PaymentOutcome.PROCESSING

        clock.advance(timedelta(seconds=4))
        await worker.settle()
        assert receiver.requests == []

        clock.advance(timedelta(seconds=1))
        await worker.settle()

        [request] = receiver.requests
        assert request.method == "POST"
        assert request.path == "/hooks"
        assert request.headers["content-type"] == "application/json"
        event = parsed(provider, request, clock)
        assert event.type is event_type
        assert event.payment_id == result.payment_id
        assert event.invoice_id == invoice_id
        assert event.failure_code == failure_code
        assert event.failure_message == failure_message
        body = request.json()
        assert body["id"] == event.id
        assert body["id"].startswith("evt_")
        assert body["data"]["object"]["amount"] == 2900
        assert body["data"]["object"]["currency"] == "eur"
        [stored] = await objects(container, "event")
        assert stored == body

    async def test_settling_twice_changes_nothing(
        self, provider: SandboxProvider, worker: Worker, clock: ManualClock, container: Container
    ) -> None:
        customer_id, method_id = await customer_with(provider, "pm_debit_failure")
        result = await charge(provider, customer_id, method_id)
        clock.advance(timedelta(seconds=5))
        await worker.settle()

        await provider.settle(
            Job(uuid7(), SANDBOX_SETTLE, {"payment_id": result.payment_id}, 1, clock.now(), 10)
        )
        await worker.settle()

        assert len(await objects(container, "event")) == 1
        assert len(await job_rows(container, SANDBOX_WEBHOOK)) == 1

    async def test_a_card_charge_is_announced_at_once(
        self, provider: SandboxProvider, receiver: Receiver, worker: Worker, clock: ManualClock
    ) -> None:
        customer_id, method_id = await customer_with(provider, "pm_card_chargeDeclined")
        invoice_id = uuid7()
        result = await charge(provider, customer_id, method_id, invoice_id=invoice_id)

        await worker.settle()

        [request] = receiver.requests
        event = parsed(provider, request, clock)
        assert event.type is ProviderEventType.PAYMENT_FAILED
        assert event.provider_type == "payment_intent.payment_failed"
        assert event.payment_id == result.payment_id
        assert event.invoice_id == invoice_id
        assert event.failure_code == "card_declined"
        assert event.failure_message == "Your card was declined."
        error = request.json()["data"]["object"]["last_payment_error"]
        assert error["code"] == "card_declined"
        assert error["message"] == "Your card was declined."

    async def test_a_failed_delivery_is_retried_after_the_backoff(
        self,
        provider: SandboxProvider,
        receiver: Receiver,
        worker: Worker,
        clock: ManualClock,
        container: Container,
    ) -> None:
        receiver.reply(Reply(status=500))
        customer_id, method_id = await customer_with(provider, "pm_card_visa")
        result = await charge(provider, customer_id, method_id)

        await worker.settle()
        assert len(receiver.requests) == 1
        [webhook] = await job_rows(container, SANDBOX_WEBHOOK)
        assert webhook["status"] == "pending"
        assert webhook["next_attempt_at"] == clock.now() + timedelta(seconds=5)
        assert "answered 500" in webhook["last_error"]

        clock.advance(timedelta(seconds=4))
        await worker.settle()
        assert len(receiver.requests) == 1

        clock.advance(timedelta(seconds=1))
        await worker.settle()

        first, second = receiver.requests
        assert second.body == first.body
        assert parsed(provider, second, clock).payment_id == result.payment_id
        [webhook] = await job_rows(container, SANDBOX_WEBHOOK)
        assert webhook["status"] == "done"

    async def test_the_backoff_doubles_up_to_an_hour(
        self, provider: SandboxProvider, receiver: Receiver, clock: ManualClock, container: Container
    ) -> None:
        receiver.default = Reply(status=302)  # redirects are not followed: a failure
        customer_id, method_id = await customer_with(provider, "pm_card_visa")
        await charge(provider, customer_id, method_id)
        [webhook] = await job_rows(container, SANDBOX_WEBHOOK)
        payload = json.loads(webhook["payload"])

        delays = []
        for attempt in (1, 2, 3, 1000):
            with pytest.raises(RetryJob) as caught:
                await provider.deliver_webhook(
                    Job(webhook["id"], SANDBOX_WEBHOOK, payload, attempt, clock.now(), 2000)
                )
            delays.append(caught.value.after)

        assert delays == [timedelta(seconds=s) for s in (5, 10, 20, 3600)]
        assert "answered 302" in str(caught.value)
        assert len(receiver.requests) == 4

    async def test_the_last_attempt_gives_up_without_raising(
        self, provider: SandboxProvider, receiver: Receiver, clock: ManualClock, container: Container
    ) -> None:
        receiver.default = Reply(status=503)
        customer_id, method_id = await customer_with(provider, "pm_card_visa")
        await charge(provider, customer_id, method_id)
        [webhook] = await job_rows(container, SANDBOX_WEBHOOK)

        await provider.deliver_webhook(
            Job(webhook["id"], SANDBOX_WEBHOOK, json.loads(webhook["payload"]), 5, clock.now(), 5)
        )

        assert len(receiver.requests) == 1

    async def test_parse_webhook_checks_the_signature_whatever_the_header_case(
        self, provider: SandboxProvider, receiver: Receiver, worker: Worker, clock: ManualClock
    ) -> None:
        customer_id, method_id = await customer_with(provider, "pm_card_visa")
        await charge(provider, customer_id, method_id)
        await worker.settle()
        [request] = receiver.requests
        signature = request.headers["sandbox-signature"]

        event = provider.parse_webhook(request.body, {"Sandbox-Signature": signature}, clock.now())

        assert event.type is ProviderEventType.PAYMENT_SUCCEEDED
        with pytest.raises(WebhookRejected, match="No v1 signature matches"):
            provider.parse_webhook(request.body + b" ", {"SANDBOX-SIGNATURE": signature}, clock.now())
        with pytest.raises(WebhookRejected, match="missing"):
            provider.parse_webhook(request.body, {"Stripe-Signature": signature}, clock.now())
        with pytest.raises(WebhookRejected, match="replayed or delayed"):
            provider.parse_webhook(
                request.body, {"sandbox-signature": signature}, clock.now() + timedelta(seconds=301)
            )
