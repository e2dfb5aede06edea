"""The Stripe payment provider, through the official `stripe` SDK (async, over httpx).

The SDK retries connection errors, 409s and 5xx itself (twice, with the same idempotency key); what
still fails after that, and rate limits, become `ProviderUnavailable`. Webhooks are verified with our
own `provider_signatures`, against the injected clock rather than the SDK's wall clock.
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from datetime import datetime
from typing import Any, TypeVar
from uuid import UUID

import stripe
from stripe.params import CustomerCreateParams

from splitstone.modules.billing.api import InvalidPaymentMethod
from splitstone.modules.billing.provider import (
    AttachedMethod,
    CardSummary,
    PaymentOutcome,
    PaymentResult,
    ProviderEvent,
    ProviderUnavailable,
)
from splitstone.modules.billing.provider_signatures import header_value, normalize_event, verify

SIGNATURE_HEADER = "Stripe-Signature"
REQUEST_TIMEOUT_SECONDS = 30.0
MAX_NETWORK_RETRIES = 2

# Worth trying again later: the network, Stripe itself (5xx, 409 after the SDK's retries), rate limits,
# and our API key refused (an operator fixes that; the payment itself is not at fault).
_UNAVAILABLE = (
    stripe.APIConnectionError,
    stripe.APIError,
    stripe.RateLimitError,
    stripe.AuthenticationError,
    stripe.PermissionError,
)

T = TypeVar("T")


class StripeProvider:
    name = "stripe"

    def __init__(self, *, api_key: str, webhook_secret: str, api_base: str, tolerance_seconds: int) -> None:
        self._api_key = api_key
        self._webhook_secret = webhook_secret
        self._api_base = api_base
        self._tolerance_seconds = tolerance_seconds
        self._http: stripe.HTTPXClient | None = None
        self._client: stripe.StripeClient | None = None

    async def create_customer(
        self, *, org_id: UUID, name: str, email: str | None, idempotency_key: str
    ) -> str:
        params: CustomerCreateParams = {"name": name, "metadata": {"org_id": str(org_id)}}
        if email:
            params["email"] = email
        customer = await _available(
            self._stripe().v1.customers.create_async(
                params=params, options={"idempotency_key": idempotency_key}
            )
        )
        return customer.id

    async def attach_payment_method(self, *, customer_id: str, token: str) -> AttachedMethod:
        client = self._stripe()
        try:
            method = await _available(
                client.v1.payment_methods.attach_async(token, params={"customer": customer_id})
            )
            card = _get(method, "card")
            if card is None:
                raise InvalidPaymentMethod(
                    f"Only cards are accepted; this payment method is of type {_get(method, 'type')!r}."
                )
            await _available(
                client.v1.customers.update_async(
                    customer_id, params={"invoice_settings": {"default_payment_method": method.id}}
                )
            )
        except (stripe.CardError, stripe.InvalidRequestError) as refused:
            raise InvalidPaymentMethod(
                refused.user_message or "Stripe refused the payment method."
            ) from refused
        return AttachedMethod(
            id=method.id,
            card=CardSummary(
                brand=str(card["brand"]),
                last4=str(card["last4"]),
                exp_month=int(card["exp_month"]),
                exp_year=int(card["exp_year"]),
            ),
        )

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
        request = self._stripe().v1.payment_intents.create_async(
            params={
                "amount": amount,
                "currency": currency.lower(),
                "customer": customer_id,
                "payment_method": payment_method_id,
                "off_session": True,
                "confirm": True,
                "description": description,
                "metadata": {"invoice_id": str(invoice_id)},
                # No customer is present to follow a redirect: such methods fail instead of waiting.
                "automatic_payment_methods": {"enabled": True, "allow_redirects": "never"},
            },
            options={"idempotency_key": idempotency_key},
        )
        try:
            intent = await _available(request)
        except (stripe.CardError, stripe.InvalidRequestError) as refused:
            # A decline (402) names the payment intent Stripe created; a refused request (a payment
            # method that is gone, say) may have none, and then the payment id is empty.
            fallback = "card_declined" if isinstance(refused, stripe.CardError) else "invalid_request"
            return PaymentResult(
                payment_id=_get(_get(refused.error, "payment_intent"), "id") or "",
                outcome=PaymentOutcome.FAILED,
                failure_code=_get(refused.error, "decline_code") or refused.code or fallback,
                failure_message=refused.user_message,
            )
        if intent.status == "succeeded":
            return PaymentResult(intent.id, PaymentOutcome.SUCCEEDED)
        if intent.status == "processing":
            return PaymentResult(intent.id, PaymentOutcome.PROCESSING)
        error = _get(intent, "last_payment_error")
        return PaymentResult(
            intent.id,
            PaymentOutcome.FAILED,
            failure_code=_get(error, "decline_code") or _get(error, "code") or intent.status,
            failure_message=_get(error, "message") or f"The payment is {intent.status}.",
        )

    def parse_webhook(self, body: bytes, headers: Mapping[str, str], now: datetime) -> ProviderEvent:
        verify(
            self._webhook_secret,
            body,
            header_value(headers, SIGNATURE_HEADER),
            now,
            self._tolerance_seconds,
        )
        return normalize_event(body)

    async def aclose(self) -> None:
        """Close the SDK's HTTP client, if one was created."""
        if self._http is not None:
            http, self._http, self._client = self._http, None, None
            await http.close_async()  # type: ignore[no-untyped-call]

    def _stripe(self) -> stripe.StripeClient:
        if self._client is None:
            self._http = stripe.HTTPXClient(timeout=REQUEST_TIMEOUT_SECONDS)
            self._client = stripe.StripeClient(
                self._api_key,
                base_addresses={"api": self._api_base},
                http_client=self._http,
                max_network_retries=MAX_NETWORK_RETRIES,
            )
        return self._client


async def _available(request: Awaitable[T]) -> T:
    """The answer to `request`; `ProviderUnavailable` when Stripe cannot give one now."""
    try:
        return await request
    except _UNAVAILABLE as failure:
        raise ProviderUnavailable(
            f"Stripe: {type(failure).__name__}: {failure.user_message or 'no message'}"
        ) from failure


def _get(obj: Any, key: str) -> Any:
    """`obj[key]` of a Stripe object that may be absent, or lack the key."""
    return obj[key] if obj is not None and key in obj else None
