"""The payment-provider port: what billing needs from Stripe, the sandbox, or any other provider.

Billing calls a provider to create a customer, attach a payment method from a token, and charge an
invoice; a provider tells billing about asynchronous outcomes through signed webhooks, which
`parse_webhook` verifies and normalizes. Adapters: `provider_sandbox` (the embedded default) and
`provider_stripe` (the official SDK).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Protocol
from uuid import UUID


class ProviderUnavailable(Exception):
    """The provider could not be reached or failed (5xx, timeout): try again later."""


class PaymentOutcome(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    PROCESSING = "processing"  # the outcome arrives later, by webhook


@dataclass(frozen=True)
class CardSummary:
    """What may be shown of a payment method."""

    brand: str
    last4: str
    exp_month: int
    exp_year: int


@dataclass(frozen=True)
class AttachedMethod:
    id: str
    card: CardSummary


@dataclass(frozen=True)
class PaymentResult:
    payment_id: str
    outcome: PaymentOutcome
    failure_code: str | None = None
    failure_message: str | None = None


class ProviderEventType(StrEnum):
    PAYMENT_SUCCEEDED = "payment.succeeded"
    PAYMENT_FAILED = "payment.failed"
    OTHER = "other"  # verified, recorded, and otherwise ignored


@dataclass(frozen=True)
class ProviderEvent:
    """A verified inbound webhook, normalized."""

    id: str
    type: ProviderEventType
    provider_type: str  # the provider's own name for it, e.g. "payment_intent.succeeded"
    payment_id: str | None = None
    invoice_id: UUID | None = None  # from the payment's metadata
    failure_code: str | None = None
    failure_message: str | None = None


class PaymentProvider(Protocol):
    name: str

    async def create_customer(
        self, *, org_id: UUID, name: str, email: str | None, idempotency_key: str
    ) -> str:
        """The provider's customer id for an organization."""
        ...

    async def attach_payment_method(self, *, customer_id: str, token: str) -> AttachedMethod:
        """Attach a payment method (from a client-side token, such as `pm_card_visa`) and make it the
        customer's default. Raises `InvalidPaymentMethod` when the provider refuses it."""
        ...

    async def charge(
        self,
        *,
        customer_id: str,
        payment_method_id: str,
        amount: int,
        currency: str,
        invoice_id: UUID,
        description: str,
        idempotency_key: str,
    ) -> PaymentResult:
        """Charge `amount` minor units off-session. A repeated `idempotency_key` returns the first
        attempt's result and charges nothing again. A decline is a `FAILED` result, not an error."""
        ...

    def parse_webhook(self, body: bytes, headers: Mapping[str, str], now: datetime) -> ProviderEvent:
        """Verify a webhook's signature and timestamp (against `now`, the injected clock) and normalize
        it. Raises `WebhookRejected` (400) for a bad signature, an old timestamp or a malformed body."""
        ...

    async def aclose(self) -> None: ...
