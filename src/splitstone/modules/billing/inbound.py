"""Inbound provider webhooks: verified, deduplicated by the provider's event id, and applied once.

The event's id is recorded in the same transaction as its effect, so a replayed event (the provider's
retry, or an attacker's replay of a captured one within the signature tolerance) changes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import structlog
from sqlalchemy import select

from splitstone.kernel.clock import Clock
from splitstone.kernel.db import UnitOfWork, UnitOfWorkFactory, upsert_insert
from splitstone.kernel.errors import NotFound
from splitstone.modules.billing.payments import PROCESSING, Payments
from splitstone.modules.billing.provider import (
    PaymentOutcome,
    PaymentProvider,
    PaymentResult,
    ProviderEvent,
    ProviderEventType,
)
from splitstone.modules.billing.storage import payments, provider_events

log = structlog.get_logger("splitstone.billing")


class UnknownProvider(NotFound):
    code = "unknown-payment-provider"
    title = "No such payment provider here"


@dataclass(frozen=True)
class Receipt:
    event_id: str
    type: str
    duplicate: bool


class InboundWebhooks:
    def __init__(
        self, uow: UnitOfWorkFactory, clock: Clock, provider: PaymentProvider, payments: Payments
    ) -> None:
        self._uow = uow
        self._clock = clock
        self._provider = provider
        self._payments = payments

    async def receive(self, provider: str, body: bytes, headers: Mapping[str, str]) -> Receipt:
        """Verify and apply one webhook of `provider` (`WebhookRejected` when it does not verify)."""
        if provider != self._provider.name:
            raise UnknownProvider(
                f"This installation takes payments through {self._provider.name!r}, not {provider!r}.",
                provider=provider,
            )
        event = self._provider.parse_webhook(body, headers, self._clock.now())
        async with self._uow() as uow:
            session = uow.session
            recorded = await session.execute(
                upsert_insert(provider_events, session.dialect)
                .values(
                    provider=provider,
                    event_id=event.id,
                    type=event.provider_type,
                    received_at=self._clock.now(),
                )
                .on_conflict_do_nothing()
            )
            if not recorded.rowcount:
                return Receipt(event_id=event.id, type=event.provider_type, duplicate=True)
            await self._apply(uow, event)
            await uow.commit()
        log.info("provider webhook applied", provider=provider, event_id=event.id, type=event.provider_type)
        return Receipt(event_id=event.id, type=event.provider_type, duplicate=False)

    async def _apply(self, uow: UnitOfWork, event: ProviderEvent) -> None:
        if event.type is ProviderEventType.OTHER or event.payment_id is None:
            return
        session = uow.session
        query = select(payments).where(
            payments.c.provider == self._provider.name, payments.c.provider_payment_id == event.payment_id
        )
        payment = (await session.execute(query.with_for_update())).mappings().first()
        if payment is None and event.invoice_id is not None:
            # The webhook overtook the recording of the charge's answer: the attempt still has no id.
            payment = (
                (
                    await session.execute(
                        select(payments)
                        .where(
                            payments.c.invoice_id == event.invoice_id,
                            payments.c.status == PROCESSING,
                            payments.c.provider_payment_id.is_(None),
                        )
                        .order_by(payments.c.attempt.desc())
                        .limit(1)
                        .with_for_update()
                    )
                )
                .mappings()
                .first()
            )
        if payment is None:
            log.warning(
                "provider webhook for an unknown payment", event_id=event.id, payment_id=event.payment_id
            )
            return
        outcome = (
            PaymentOutcome.SUCCEEDED
            if event.type is ProviderEventType.PAYMENT_SUCCEEDED
            else PaymentOutcome.FAILED
        )
        result = PaymentResult(
            payment_id=event.payment_id,
            outcome=outcome,
            failure_code=event.failure_code,
            failure_message=event.failure_message,
        )
        await self._payments.apply_outcome(uow, payment, result)
