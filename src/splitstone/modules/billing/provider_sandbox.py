"""The sandbox payment provider: simulated customers, payment methods and payments, with test tokens,
and asynchronous outcomes delivered as signed webhooks to ourselves.

It behaves like Stripe in test mode, so billing runs end to end without an account: ids look like
Stripe's, the test tokens are Stripe's names, and its webhooks are Stripe-shaped events signed with
Stripe's scheme (`Sandbox-Signature`). Every object is a row of `sandbox_objects` (kinds: customer,
payment_method, payment, event, idempotency), written in the same transaction as the jobs that act
on it: `SANDBOX_SETTLE` decides an asynchronous payment later, `SANDBOX_WEBHOOK` posts one event.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import string
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import httpx
import structlog
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from splitstone.kernel.clock import Clock
from splitstone.kernel.db import UnitOfWork, UnitOfWorkFactory, upsert_insert
from splitstone.kernel.messaging.jobs import Job, RetryJob, job
from splitstone.modules.billing.api import InvalidPaymentMethod
from splitstone.modules.billing.provider import (
    AttachedMethod,
    CardSummary,
    PaymentOutcome,
    PaymentResult,
    ProviderEvent,
)
from splitstone.modules.billing.provider_signatures import header_value, normalize_event, sign, verify
from splitstone.modules.billing.storage import sandbox_objects

SANDBOX_SETTLE = "billing.sandbox_settle"
SANDBOX_WEBHOOK = "billing.sandbox_webhook"
SIGNATURE_HEADER = "Sandbox-Signature"

CUSTOMER = "customer"
PAYMENT_METHOD = "payment_method"
PAYMENT = "payment"
EVENT = "event"
IDEMPOTENCY = "idempotency"

WEBHOOK_TIMEOUT_SECONDS = 10.0
_RETRY_FIRST = timedelta(seconds=5)
_RETRY_MAX = timedelta(hours=1)
_ID_ALPHABET = string.ascii_letters + string.digits

log = structlog.get_logger("splitstone.billing.sandbox")


@dataclass(frozen=True)
class SandboxCard:
    """What a test token attaches, and how charges to it end."""

    brand: str
    last4: str
    failure_code: str | None = None
    failure_message: str | None = None
    asynchronous: bool = False  # charges answer PROCESSING and settle later


TEST_TOKENS: dict[str, SandboxCard] = {
    "pm_card_visa": SandboxCard("visa", "4242"),
    "pm_card_mastercard": SandboxCard("mastercard", "4444"),
    "pm_card_chargeDeclined": SandboxCard("visa", "0002", "card_declined", "Your card was declined."),
    "pm_card_insufficient_funds": SandboxCard(
        "visa", "9995", "insufficient_funds", "Your card has insufficient funds."
    ),
    "pm_card_chargeDeclinedExpiredCard": SandboxCard(
        "visa", "0069", "expired_card", "Your card has expired."
    ),
    "pm_debit_success": SandboxCard("debit", "6789", asynchronous=True),
    "pm_debit_failure": SandboxCard(
        "debit", "6789", "debit_refused", "The bank refused the debit.", asynchronous=True
    ),
}


class SandboxProvider:
    name = "sandbox"

    def __init__(
        self,
        *,
        uow: UnitOfWorkFactory,
        clock: Clock,
        secret: str,
        webhook_url: str | None,
        settle_seconds: float,
        tolerance_seconds: int,
    ) -> None:
        self._uow = uow
        self._clock = clock
        self._secret = secret
        self._webhook_url = webhook_url
        self._settle_seconds = settle_seconds
        self._tolerance_seconds = tolerance_seconds
        self._client: httpx.AsyncClient | None = None

    async def create_customer(
        self, *, org_id: UUID, name: str, email: str | None, idempotency_key: str
    ) -> str:
        now = self._clock.now()
        async with self._uow() as uow:
            session = uow.session
            key = _idempotency_id("customer", idempotency_key)
            earlier = await _claim(session, key, now)
            if earlier is not None:
                await uow.commit()  # nothing written; inside a handler, no commit would abandon its work
                return str(earlier["customer_id"])
            customer_id = _new_id("cus")
            customer = {
                "id": customer_id,
                "object": "customer",
                "name": name,
                "email": email,
                "metadata": {"org_id": str(org_id)},
                "invoice_settings": {"default_payment_method": None},
                "created": _unix(now),
            }
            await _insert(session, customer_id, CUSTOMER, customer, now)
            await _save(session, key, {"customer_id": customer_id}, now)
            await uow.commit()
        return customer_id

    async def attach_payment_method(self, *, customer_id: str, token: str) -> AttachedMethod:
        card = TEST_TOKENS.get(token)
        if card is None:
            raise InvalidPaymentMethod(
                f"Unknown test token {token!r}; the sandbox knows {', '.join(TEST_TOKENS)}."
            )
        now = self._clock.now()
        summary = CardSummary(brand=card.brand, last4=card.last4, exp_month=12, exp_year=now.year + 3)
        method_id = _new_id("pm")
        async with self._uow() as uow:
            session = uow.session
            customer = await _load(session, customer_id, CUSTOMER)
            if customer is None:
                raise InvalidPaymentMethod(f"No such customer: {customer_id!r}.")
            method = {
                "id": method_id,
                "object": "payment_method",
                "type": "card",
                "customer": customer_id,
                "card": {
                    "brand": summary.brand,
                    "last4": summary.last4,
                    "exp_month": summary.exp_month,
                    "exp_year": summary.exp_year,
                },
                "sandbox_token": token,
                "created": _unix(now),
            }
            await _insert(session, method_id, PAYMENT_METHOD, method, now)
            customer["invoice_settings"] = {"default_payment_method": method_id}
            await _save(session, customer_id, customer, now)
            await uow.commit()
        return AttachedMethod(id=method_id, card=summary)

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
        if amount <= 0:
            raise ValueError(f"the sandbox charges positive amounts only, not {amount}")
        now = self._clock.now()
        async with self._uow() as uow:
            session = uow.session
            key = _idempotency_id("charge", idempotency_key)
            earlier = await _claim(session, key, now)
            if earlier is not None:
                await uow.commit()  # nothing written; inside a handler, no commit would abandon its work
                return _result(earlier)
            method = await _load(session, payment_method_id, PAYMENT_METHOD)
            card = None if method is None else TEST_TOKENS.get(method["sandbox_token"])
            if await _load(session, customer_id, CUSTOMER) is None:
                failure: tuple[str, str] | None = (
                    "invalid_payment_method",
                    f"No such customer: {customer_id!r}.",
                )
            elif method is None or card is None or method["customer"] != customer_id:
                failure = (
                    "invalid_payment_method",
                    f"No such payment method {payment_method_id!r} for customer {customer_id!r}.",
                )
            elif card.failure_code is not None and not card.asynchronous:
                failure = (card.failure_code, card.failure_message or card.failure_code)
            else:
                failure = None
            processing = failure is None and card is not None and card.asynchronous
            payment_id = _new_id("pi")
            payment = {
                "id": payment_id,
                "object": "payment_intent",
                "amount": amount,
                "currency": currency.lower(),
                "customer": customer_id,
                "payment_method": payment_method_id,
                "description": description,
                "metadata": {"invoice_id": str(invoice_id)},
                "status": "processing",
                "last_payment_error": None,
                "created": _unix(now),
            }
            if not processing:
                _decide(payment, failure)
            await _insert(session, payment_id, PAYMENT, payment, now)
            if processing:
                uow.schedule(
                    job(
                        SANDBOX_SETTLE,
                        {"payment_id": payment_id},
                        run_at=now + timedelta(seconds=self._settle_seconds),
                        idempotency_key=payment_id,
                    )
                )
            else:
                await self._announce(uow, payment, now)
            result = _payment_result(payment)
            await _save(session, key, _result_json(result), now)
            await uow.commit()
        return result

    def parse_webhook(self, body: bytes, headers: Mapping[str, str], now: datetime) -> ProviderEvent:
        verify(self._secret, body, header_value(headers, SIGNATURE_HEADER), now, self._tolerance_seconds)
        return normalize_event(body)

    async def settle(self, job: Job) -> None:
        """Job `billing.sandbox_settle`: an asynchronous payment's outcome is decided."""
        now = self._clock.now()
        payment_id = str(job.payload["payment_id"])
        async with self._uow() as uow:
            session = uow.session
            payment = await _load(session, payment_id, PAYMENT)
            if payment is None or payment["status"] != "processing":
                if payment is None:
                    log.warning("sandbox payment to settle not found", payment_id=payment_id)
                await uow.commit()  # nothing written; inside a handler, no commit would abandon its work
                return
            method = await _load(session, payment["payment_method"], PAYMENT_METHOD)
            card = None if method is None else TEST_TOKENS.get(method["sandbox_token"])
            if card is None or card.failure_code is None:
                failure = None
            else:
                failure = (card.failure_code, card.failure_message or card.failure_code)
            _decide(payment, failure)
            await _save(session, payment_id, payment, now)
            await self._announce(uow, payment, now)
            await uow.commit()

    async def deliver_webhook(self, job: Job) -> None:
        """External job `billing.sandbox_webhook`: POST one signed event to the webhook URL."""
        event_id = str(job.payload["event_id"])
        async with self._uow(read_only=True) as uow:
            event = await _load(uow.session, event_id, EVENT)
        if event is None:
            log.warning("sandbox webhook event not found", event_id=event_id)
            return
        url = self._webhook_url
        if url is None:  # configured away since the event was created
            log.info("sandbox webhook not sent: no webhook URL", event_id=event_id)
            return
        body = json.dumps(event, separators=(",", ":")).encode()
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(self._secret, body, self._clock.now()),
        }
        try:
            response = await self._http().post(url, content=body, headers=headers)
        except httpx.HTTPError as error:
            failure = f"POST {url} failed: {type(error).__name__}" + (f": {error}" if str(error) else "")
        else:
            if response.is_success:
                return
            failure = f"POST {url} answered {response.status_code}"
        if job.is_last_attempt:
            log.warning(
                "sandbox webhook not delivered, giving up",
                event_id=event_id,
                attempt=job.attempt,
                error=failure,
            )
            return
        raise RetryJob(failure, after=_backoff(job.attempt))

    async def aclose(self) -> None:
        """Close the webhook HTTP client, if one was created."""
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    async def _announce(self, uow: UnitOfWork, payment: dict[str, Any], now: datetime) -> None:
        """The event for a payment's outcome, and the job that posts it, if webhooks are on."""
        if self._webhook_url is None:
            return
        event_id = _new_id("evt")
        succeeded = payment["status"] == "succeeded"
        event = {
            "id": event_id,
            "object": "event",
            "type": "payment_intent.succeeded" if succeeded else "payment_intent.payment_failed",
            "created": _unix(now),
            "livemode": False,
            "data": {"object": payment},
        }
        await _insert(uow.session, event_id, EVENT, event, now)
        uow.schedule(job(SANDBOX_WEBHOOK, {"event_id": event_id}, run_at=now, idempotency_key=event_id))

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(WEBHOOK_TIMEOUT_SECONDS), follow_redirects=False, trust_env=False
            )
        return self._client


def _backoff(attempt: int) -> timedelta:
    """5 s after the first failed attempt, doubling, at most an hour."""
    return min(_RETRY_FIRST * (1 << min(max(attempt - 1, 0), 20)), _RETRY_MAX)


def _decide(payment: dict[str, Any], failure: tuple[str, str] | None) -> None:
    """Set a payment intent's final status, as Stripe shows it."""
    if failure is None:
        payment["status"] = "succeeded"
        payment["last_payment_error"] = None
        return
    code, message = failure
    payment["status"] = "requires_payment_method"  # Stripe's status for a failed attempt
    payment["last_payment_error"] = {"type": "card_error", "code": code, "message": message}


def _payment_result(payment: dict[str, Any]) -> PaymentResult:
    status = payment["status"]
    if status == "succeeded":
        return PaymentResult(payment["id"], PaymentOutcome.SUCCEEDED)
    if status == "processing":
        return PaymentResult(payment["id"], PaymentOutcome.PROCESSING)
    error = payment["last_payment_error"] or {}
    return PaymentResult(payment["id"], PaymentOutcome.FAILED, error.get("code"), error.get("message"))


def _result_json(result: PaymentResult) -> dict[str, Any]:
    return {
        "payment_id": result.payment_id,
        "outcome": result.outcome.value,
        "failure_code": result.failure_code,
        "failure_message": result.failure_message,
    }


def _result(data: Mapping[str, Any]) -> PaymentResult:
    return PaymentResult(
        payment_id=data["payment_id"],
        outcome=PaymentOutcome(data["outcome"]),
        failure_code=data["failure_code"],
        failure_message=data["failure_message"],
    )


def _new_id(prefix: str) -> str:
    return f"{prefix}_" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(24))


def _idempotency_id(operation: str, key: str) -> str:
    """A row id for an idempotency key of one operation (keys may be longer than the id column)."""
    return "idem_" + hashlib.sha256(f"{operation}\0{key}".encode()).hexdigest()[:59]


def _unix(moment: datetime) -> int:
    return int(moment.timestamp())


async def _claim(session: AsyncConnection, key_id: str, now: datetime) -> dict[str, Any] | None:
    """Claim an idempotency key for this transaction: None, or what the first use of the key stored.

    The row is inserted first, so of two concurrent first uses one waits on it (PostgreSQL) or on the
    write lock (SQLite), then finds the other's committed result instead of acting a second time.
    """
    inserted = await session.execute(
        upsert_insert(sandbox_objects, session.dialect)
        .values(id=key_id, kind=IDEMPOTENCY, data="{}", created_at=now, updated_at=now)
        .on_conflict_do_nothing(index_elements=["id"])
    )
    if inserted.rowcount == 1:
        return None
    earlier = await _load(session, key_id, IDEMPOTENCY)
    if earlier is None:
        raise RuntimeError(f"sandbox object {key_id} exists but is not an idempotency record")
    return earlier


async def _load(session: AsyncConnection, object_id: str, kind: str) -> dict[str, Any] | None:
    row = (
        await session.execute(
            select(sandbox_objects.c.data).where(
                sandbox_objects.c.id == object_id, sandbox_objects.c.kind == kind
            )
        )
    ).first()
    if row is None:
        return None
    data: dict[str, Any] = json.loads(row.data)
    return data


async def _insert(
    session: AsyncConnection, object_id: str, kind: str, data: Mapping[str, Any], now: datetime
) -> None:
    await session.execute(
        sandbox_objects.insert().values(
            id=object_id, kind=kind, data=json.dumps(data), created_at=now, updated_at=now
        )
    )


async def _save(session: AsyncConnection, object_id: str, data: Mapping[str, Any], now: datetime) -> None:
    await session.execute(
        update(sandbox_objects)
        .where(sandbox_objects.c.id == object_id)
        .values(data=json.dumps(data), updated_at=now)
    )
