"""The Stripe adapter, through the official SDK, against a fake Stripe API on a real socket."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

import pytest
import stripe

from splitstone.modules.billing.api import InvalidPaymentMethod, WebhookRejected
from splitstone.modules.billing.provider import (
    CardSummary,
    PaymentOutcome,
    PaymentResult,
    ProviderEventType,
    ProviderUnavailable,
)
from splitstone.modules.billing.provider_signatures import sign
from splitstone.modules.billing.provider_stripe import StripeProvider
from tests.modules.billing.fake_stripe import API_KEY, FAIL_AMOUNT, FakeStripe
from tests.support.mailbox import free_port

# The SDK's HTTPXClient hands httpx its form body as `data=`, which httpx deprecates.
pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")

WEBHOOK_SECRET = "whsec_stripe_test"
NOW = datetime(2030, 5, 17, 12, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def quick_sdk(monkeypatch: pytest.MonkeyPatch) -> None:
    """The SDK's own retries without their half-second sleeps, and no telemetry file in $HOME."""
    monkeypatch.setattr(stripe.HTTPClient, "INITIAL_DELAY", 0.001)
    monkeypatch.setattr(stripe.HTTPClient, "MAX_DELAY", 0.002)
    monkeypatch.setattr(stripe, "enable_telemetry", False)


@pytest.fixture
async def fake() -> AsyncIterator[FakeStripe]:
    async with FakeStripe() as server:
        yield server


def stripe_provider(api_base: str, api_key: str = API_KEY) -> StripeProvider:
    return StripeProvider(
        api_key=api_key, webhook_secret=WEBHOOK_SECRET, api_base=api_base, tolerance_seconds=300
    )


@pytest.fixture
async def provider(fake: FakeStripe) -> AsyncIterator[StripeProvider]:
    adapter = stripe_provider(fake.url)
    yield adapter
    await adapter.aclose()


async def customer_with(provider: StripeProvider, token: str) -> tuple[str, str]:
    customer_id = await provider.create_customer(
        org_id=uuid4(), name="Acme", email=None, idempotency_key=f"customer:{uuid4()}"
    )
    method = await provider.attach_payment_method(customer_id=customer_id, token=token)
    return customer_id, method.id


async def charge(
    provider: StripeProvider,
    customer_id: str,
    method_id: str,
    *,
    amount: int = 2900,
    invoice_id: UUID | None = None,
    key: str = "invoice:1:1",
) -> PaymentResult:
    return await provider.charge(
        customer_id=customer_id,
        payment_method_id=method_id,
        amount=amount,
        currency="EUR",
        invoice_id=invoice_id or uuid4(),
        description="Invoice INV-0001",
        idempotency_key=key,
    )


class TestCustomers:
    async def test_a_customer_is_created_with_the_org_and_the_key(
        self, provider: StripeProvider, fake: FakeStripe
    ) -> None:
        org_id = uuid4()

        customer_id = await provider.create_customer(
            org_id=org_id, name="Acme", email="billing@acme.test", idempotency_key="customer:acme"
        )

        [request] = fake.requests
        assert request.path == "/v1/customers"
        assert request.headers["authorization"] == f"Bearer {API_KEY}"
        assert request.headers["content-type"] == "application/x-www-form-urlencoded"
        assert request.idempotency_key == "customer:acme"
        assert request.form == {
            "name": "Acme",
            "email": "billing@acme.test",
            "metadata": {"org_id": str(org_id)},
        }
        assert fake.customers[customer_id]["metadata"] == {"org_id": str(org_id)}

    async def test_without_email_none_is_sent(self, provider: StripeProvider, fake: FakeStripe) -> None:
        await provider.create_customer(org_id=uuid4(), name="Acme", email=None, idempotency_key="k")

        assert "email" not in fake.requests[0].form

    async def test_a_repeated_key_gets_the_same_customer(
        self, provider: StripeProvider, fake: FakeStripe
    ) -> None:
        org_id = uuid4()

        first = await provider.create_customer(org_id=org_id, name="Acme", email=None, idempotency_key="k")
        again = await provider.create_customer(org_id=org_id, name="Acme", email=None, idempotency_key="k")

        assert first == again
        assert len(fake.customers) == 1

    async def test_a_wrong_api_key_is_unavailable_not_a_crash(self, fake: FakeStripe) -> None:
        adapter = stripe_provider(fake.url, api_key="sk_test_wrong")
        try:
            with pytest.raises(ProviderUnavailable, match="AuthenticationError"):
                await adapter.create_customer(org_id=uuid4(), name="Acme", email=None, idempotency_key="k")
        finally:
            await adapter.aclose()


class TestPaymentMethods:
    async def test_a_card_is_attached_and_made_the_default(
        self, provider: StripeProvider, fake: FakeStripe
    ) -> None:
        customer_id = await provider.create_customer(
            org_id=uuid4(), name="Acme", email=None, idempotency_key="k"
        )

        method = await provider.attach_payment_method(customer_id=customer_id, token="pm_card_mastercard")

        assert method.id.startswith("pm_")
        assert method.card == CardSummary(brand="mastercard", last4="4444", exp_month=12, exp_year=2034)
        _, attach, update = fake.requests
        assert attach.path == "/v1/payment_methods/pm_card_mastercard/attach"
        assert attach.form == {"customer": customer_id}
        assert update.path == f"/v1/customers/{customer_id}"
        assert update.form == {"invoice_settings": {"default_payment_method": method.id}}
        assert fake.customers[customer_id]["invoice_settings"]["default_payment_method"] == method.id

    async def test_a_card_declined_on_attach_is_refused_with_stripes_message(
        self, provider: StripeProvider, fake: FakeStripe
    ) -> None:
        customer_id = await provider.create_customer(
            org_id=uuid4(), name="Acme", email=None, idempotency_key="k"
        )

        with pytest.raises(InvalidPaymentMethod) as caught:
            await provider.attach_payment_method(customer_id=customer_id, token="pm_card_chargeDeclined")

        assert caught.value.status == 422
        assert caught.value.detail == "Your card was declined."
        assert fake.customers[customer_id]["invoice_settings"]["default_payment_method"] is None

    async def test_an_unknown_token_is_refused(self, provider: StripeProvider) -> None:
        customer_id = await provider.create_customer(
            org_id=uuid4(), name="Acme", email=None, idempotency_key="k"
        )

        with pytest.raises(InvalidPaymentMethod, match="No such PaymentMethod: 'pm_bogus'"):
            await provider.attach_payment_method(customer_id=customer_id, token="pm_bogus")

    async def test_a_method_that_is_not_a_card_is_refused_and_not_made_the_default(
        self, provider: StripeProvider, fake: FakeStripe
    ) -> None:
        customer_id = await provider.create_customer(
            org_id=uuid4(), name="Acme", email=None, idempotency_key="k"
        )

        with pytest.raises(InvalidPaymentMethod, match="us_bank_account"):
            await provider.attach_payment_method(customer_id=customer_id, token="pm_usBankAccount")

        assert fake.customers[customer_id]["invoice_settings"]["default_payment_method"] is None


class TestCharges:
    async def test_a_successful_charge(self, provider: StripeProvider, fake: FakeStripe) -> None:
        customer_id, method_id = await customer_with(provider, "pm_card_visa")
        invoice_id = uuid4()

        result = await charge(provider, customer_id, method_id, invoice_id=invoice_id, key="invoice:7:1")

        assert result == PaymentResult(result.payment_id, PaymentOutcome.SUCCEEDED)
        assert result.payment_id in fake.payment_intents
        request = fake.requests[-1]
        assert request.path == "/v1/payment_intents"
        assert request.idempotency_key == "invoice:7:1"
        assert request.form == {
            "amount": "2900",
            "currency": "eur",
            "customer": customer_id,
            "payment_method": method_id,
            "off_session": "true",
            "confirm": "true",
            "description": "Invoice INV-0001",
            "metadata": {"invoice_id": str(invoice_id)},
            "automatic_payment_methods": {"enabled": "true", "allow_redirects": "never"},
        }

    async def test_a_declined_charge_fails_with_the_decline_code(
        self, provider: StripeProvider, fake: FakeStripe
    ) -> None:
        customer_id, method_id = await customer_with(provider, "pm_card_insufficient_funds")

        result = await charge(provider, customer_id, method_id)

        assert result.outcome is PaymentOutcome.FAILED
        assert result.failure_code == "insufficient_funds"
        assert result.failure_message == "Your card has insufficient funds."
        assert fake.payment_intents[result.payment_id]["status"] == "requires_payment_method"

    async def test_a_test_token_charged_directly_is_declined_like_stripe_does(
        self, provider: StripeProvider, fake: FakeStripe
    ) -> None:
        customer_id, _ = await customer_with(provider, "pm_card_visa")

        result = await charge(provider, customer_id, "pm_card_chargeDeclined")

        assert result.outcome is PaymentOutcome.FAILED
        assert result.failure_code == "generic_decline"
        assert result.failure_message == "Your card was declined."
        assert result.payment_id in fake.payment_intents

    async def test_a_bank_debit_is_processing(self, provider: StripeProvider) -> None:
        customer_id, _ = await customer_with(provider, "pm_card_visa")

        result = await charge(provider, customer_id, "pm_usBankAccount")

        assert result == PaymentResult(result.payment_id, PaymentOutcome.PROCESSING)

    async def test_a_missing_payment_method_fails_without_a_payment_intent(
        self, provider: StripeProvider, fake: FakeStripe
    ) -> None:
        customer_id, _ = await customer_with(provider, "pm_card_visa")
        invoice_id = uuid4()

        result = await charge(provider, customer_id, "pm_gone", invoice_id=invoice_id, key="invoice:9:1")
        again = await charge(provider, customer_id, "pm_gone", invoice_id=invoice_id, key="invoice:9:1")

        assert result.outcome is PaymentOutcome.FAILED
        assert result.failure_code == "resource_missing"
        assert result.failure_message == "No such PaymentMethod: 'pm_gone'"
        assert result.payment_id == ""  # Stripe created no payment intent
        assert again == result
        assert fake.payment_intents == {}

    async def test_a_retried_charge_sends_the_same_key_and_charges_once(
        self, provider: StripeProvider, fake: FakeStripe
    ) -> None:
        customer_id, method_id = await customer_with(provider, "pm_card_visa")
        invoice_id = uuid4()

        first = await charge(provider, customer_id, method_id, invoice_id=invoice_id, key="invoice:3:1")
        again = await charge(provider, customer_id, method_id, invoice_id=invoice_id, key="invoice:3:1")

        assert again == first
        assert len(fake.payment_intents) == 1
        assert [r.idempotency_key for r in fake.requests[-2:]] == ["invoice:3:1", "invoice:3:1"]

    async def test_the_sdk_retries_a_5xx_with_the_same_key(
        self, provider: StripeProvider, fake: FakeStripe
    ) -> None:
        customer_id, method_id = await customer_with(provider, "pm_card_visa")
        fake.fail(503, 500)

        result = await charge(provider, customer_id, method_id, key="invoice:4:1")

        assert result.outcome is PaymentOutcome.SUCCEEDED
        assert [r.idempotency_key for r in fake.requests[-3:]] == ["invoice:4:1"] * 3

    async def test_a_5xx_that_persists_is_unavailable(
        self, provider: StripeProvider, fake: FakeStripe
    ) -> None:
        customer_id, method_id = await customer_with(provider, "pm_card_visa")
        fake.fail(500, 500, 500)

        with pytest.raises(ProviderUnavailable, match="APIError"):
            await charge(provider, customer_id, method_id)

        assert len([r for r in fake.requests if r.path == "/v1/payment_intents"]) == 3  # 1 + 2 retries

    async def test_a_500_from_the_endpoint_is_unavailable(self, provider: StripeProvider) -> None:
        customer_id, method_id = await customer_with(provider, "pm_card_visa")

        with pytest.raises(ProviderUnavailable):
            await charge(provider, customer_id, method_id, amount=FAIL_AMOUNT)

    async def test_a_rate_limit_is_unavailable(self, provider: StripeProvider, fake: FakeStripe) -> None:
        customer_id, method_id = await customer_with(provider, "pm_card_visa")
        fake.fail(429)

        with pytest.raises(ProviderUnavailable, match="RateLimitError"):
            await charge(provider, customer_id, method_id)

    async def test_an_unreachable_stripe_is_unavailable(self) -> None:
        adapter = stripe_provider(f"http://127.0.0.1:{free_port()}")
        try:
            with pytest.raises(ProviderUnavailable, match="APIConnectionError"):
                await adapter.create_customer(org_id=uuid4(), name="Acme", email=None, idempotency_key="k")
        finally:
            await adapter.aclose()


class TestWebhooks:
    def event(self, invoice_id: UUID) -> bytes:
        return json.dumps(
            {
                "id": "evt_1NG8Du2eZvKYlo2CUI79vXWy",
                "object": "event",
                "type": "payment_intent.payment_failed",
                "created": int(NOW.timestamp()),
                "data": {
                    "object": {
                        "id": "pi_3MtwBwLkdIwHu7ix28a3tqPa",
                        "object": "payment_intent",
                        "metadata": {"invoice_id": str(invoice_id)},
                        "last_payment_error": {
                            "code": "card_declined",
                            "decline_code": "insufficient_funds",
                            "message": "Your card has insufficient funds.",
                        },
                    }
                },
            }
        ).encode()

    def test_a_webhook_signed_with_the_secret_is_parsed(self) -> None:
        invoice_id = uuid4()
        body = self.event(invoice_id)
        header = sign(WEBHOOK_SECRET, body, NOW - timedelta(seconds=10))

        event = stripe_provider("http://unused").parse_webhook(body, {"Stripe-Signature": header}, NOW)

        assert event.id == "evt_1NG8Du2eZvKYlo2CUI79vXWy"
        assert event.type is ProviderEventType.PAYMENT_FAILED
        assert event.payment_id == "pi_3MtwBwLkdIwHu7ix28a3tqPa"
        assert event.invoice_id == invoice_id
        assert event.failure_code == "insufficient_funds"

    def test_a_webhook_signed_otherwise_or_too_old_is_rejected(self) -> None:
        body = self.event(uuid4())
        adapter = stripe_provider("http://unused")

        with pytest.raises(WebhookRejected, match="No v1 signature matches"):
            adapter.parse_webhook(body, {"stripe-signature": sign("whsec_other", body, NOW)}, NOW)
        with pytest.raises(WebhookRejected, match="missing"):
            adapter.parse_webhook(body, {"Sandbox-Signature": sign(WEBHOOK_SECRET, body, NOW)}, NOW)
        with pytest.raises(WebhookRejected, match="replayed or delayed"):
            adapter.parse_webhook(
                body, {"stripe-signature": sign(WEBHOOK_SECRET, body, NOW - timedelta(minutes=6))}, NOW
            )

    def test_our_scheme_is_the_sdks(self) -> None:
        """Headers the SDK makes verify with us, and ours with the SDK (its clock check left out)."""
        body = self.event(uuid4())
        seconds = int(NOW.timestamp())
        theirs = stripe.WebhookSignature.generate_signature_header(body.decode(), WEBHOOK_SECRET, seconds)

        event = stripe_provider("http://unused").parse_webhook(body, {"Stripe-Signature": theirs}, NOW)

        assert event.type is ProviderEventType.PAYMENT_FAILED
        assert sign(WEBHOOK_SECRET, body, NOW) == theirs
        assert stripe.WebhookSignature.verify_header(body, sign(WEBHOOK_SECRET, body, NOW), WEBHOOK_SECRET)
