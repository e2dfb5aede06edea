"""Payments: charging open invoices through the provider, recording outcomes, and dunning.

A charge is an external job (`billing.collect_payment`, one per invoice and attempt), because it waits
on the provider outside any transaction. Its attempt is claimed first as a `payments` row, and the
provider call carries an idempotency key per invoice and attempt, so a job that runs twice charges
once. Outcomes (from the charge, or later from a provider webhook) are applied once per payment.
A failure schedules the next attempt on the dunning schedule, counted from the invoice's finalization.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from uuid import UUID

import structlog
from sqlalchemy import select, update
from uuid6 import uuid7

from splitstone.kernel.clock import Clock
from splitstone.kernel.db import UnitOfWork, UnitOfWorkFactory, upsert_insert
from splitstone.kernel.messaging.jobs import Job, RetryJob
from splitstone.modules.billing.accounts import load_account, require_payment_method
from splitstone.modules.billing.api import (
    IllegalTransition,
    InvoiceNotFound,
    InvoiceStatus,
    PaymentFailed,
)
from splitstone.modules.billing.domain import Trigger
from splitstone.modules.billing.invoices import (
    BillingReason,
    Invoice,
    Invoices,
    collect_job,
    load_invoice,
)
from splitstone.modules.billing.provider import (
    PaymentOutcome,
    PaymentProvider,
    PaymentResult,
    ProviderUnavailable,
)
from splitstone.modules.billing.settings import BillingSettings
from splitstone.modules.billing.storage import invoices, payments
from splitstone.modules.billing.subscriptions import Subscriptions

log = structlog.get_logger("splitstone.billing")

PROCESSING = PaymentOutcome.PROCESSING.value
_PAYABLE = (InvoiceStatus.OPEN.value, InvoiceStatus.UNCOLLECTIBLE.value)


class Payments:
    def __init__(
        self,
        uow: UnitOfWorkFactory,
        clock: Clock,
        provider: PaymentProvider,
        settings: BillingSettings,
        invoices: Invoices,
        subscriptions: Subscriptions,
    ) -> None:
        self._uow = uow
        self._clock = clock
        self._provider = provider
        self._settings = settings
        self._invoices = invoices
        self._subscriptions = subscriptions

    # -- jobs ------------------------------------------------------------------------------------------

    async def finalize_job(self, job: Job) -> None:
        """Job `billing.finalize_invoice`: a period's draft becomes final after the usage grace time."""
        async with self._uow() as uow:
            invoice = await self._invoices.finalize(uow, UUID(job.payload["invoice_id"]))
            if invoice.status is InvoiceStatus.PAID:
                await self._subscriptions.on_invoice_paid(uow, invoice)
            await uow.commit()

    async def collect(self, job: Job) -> None:
        """External job `billing.collect_payment`: charge one attempt of an open invoice."""
        invoice_id = UUID(job.payload["invoice_id"])
        attempt = int(job.payload["attempt"])
        async with self._uow() as uow:
            invoice = await load_invoice(uow.session, invoice_id)
            if invoice is None or invoice.status.value not in _PAYABLE or invoice.amount_due <= 0:
                return
            account = await load_account(uow.session, invoice.org_id)
            assert account is not None
            payment = await self._claim(uow, invoice, attempt)
            await uow.commit()
        if payment["status"] != PROCESSING or payment["provider_payment_id"] is not None:
            return  # this attempt was made already (its outcome is recorded, or comes by webhook)
        if account.provider_customer_id is None or account.payment_method_id is None:
            result = PaymentResult(
                payment_id="",
                outcome=PaymentOutcome.FAILED,
                failure_code="no_payment_method",
                failure_message="There is no payment method on file.",
            )
        else:
            try:
                result = await self._provider.charge(
                    customer_id=account.provider_customer_id,
                    payment_method_id=account.payment_method_id,
                    amount=invoice.amount_due,
                    currency=invoice.currency,
                    invoice_id=invoice.id,
                    description=f"Invoice {invoice.number}",
                    idempotency_key=f"invoice:{invoice.id}:attempt:{attempt}",
                )
            except ProviderUnavailable as error:
                # The same idempotency key next time, so a charge that did happen is not repeated.
                raise RetryJob(f"the payment provider is unavailable: {error}", after=_backoff(job)) from None
        async with self._uow() as uow:
            row = await _lock_payment(uow, payment["id"])
            await self.apply_outcome(uow, row, result)
            await uow.commit()

    async def _claim(self, uow: UnitOfWork, invoice: Invoice, attempt: int) -> Any:
        session = uow.session
        now = self._clock.now()
        await session.execute(
            upsert_insert(payments, session.dialect)
            .values(
                id=uuid7(),
                invoice_id=invoice.id,
                org_id=invoice.org_id,
                attempt=attempt,
                provider=self._provider.name,
                provider_payment_id=None,
                amount=invoice.amount_due,
                currency=invoice.currency,
                status=PROCESSING,
                failure_code=None,
                failure_message=None,
                created_at=now,
                updated_at=now,
            )
            .on_conflict_do_nothing()
        )
        await session.execute(
            update(invoices)
            .where(invoices.c.id == invoice.id, invoices.c.attempt_count < attempt)
            .values(attempt_count=attempt, next_payment_attempt_at=None)
        )
        return (
            (
                await session.execute(
                    select(payments).where(payments.c.invoice_id == invoice.id, payments.c.attempt == attempt)
                )
            )
            .mappings()
            .one()
        )

    # -- outcomes --------------------------------------------------------------------------------------

    async def apply_outcome(self, uow: UnitOfWork, payment: Any, result: PaymentResult) -> None:
        """Record a payment's outcome and its consequences, once (a final payment is left alone)."""
        if payment["status"] != PROCESSING:
            return
        now = self._clock.now()
        await uow.session.execute(
            update(payments)
            .where(payments.c.id == payment["id"])
            .values(
                provider_payment_id=result.payment_id or payment["provider_payment_id"],
                status=result.outcome.value,
                failure_code=result.failure_code,
                failure_message=(result.failure_message or "")[:500] or None,
                updated_at=now,
            )
        )
        if result.outcome is PaymentOutcome.SUCCEEDED:
            paid = await self._invoices.mark_paid(uow, payment["invoice_id"], payment["amount"])
            if paid is not None:
                await self._subscriptions.on_invoice_paid(uow, paid)
        elif result.outcome is PaymentOutcome.FAILED:
            await self._failed(uow, payment, result)

    async def _failed(self, uow: UnitOfWork, payment: Any, result: PaymentResult) -> None:
        session = uow.session
        invoice = await load_invoice(session, payment["invoice_id"])
        assert invoice is not None
        if invoice.status is not InvoiceStatus.OPEN:
            return  # paid, voided or written off meanwhile
        now = self._clock.now()
        attempt = payment["attempt"]
        next_at = None
        subscription = await self._subscriptions.by_id(session, invoice.subscription_id)
        first_payment = invoice.billing_reason is BillingReason.SUBSCRIPTION_CREATE
        # A new subscription's first payment is not retried: the customer is there to fix it.
        if not (first_payment and subscription is not None and subscription.status.value == "incomplete"):
            days = self._settings.dunning_retry_days
            if attempt <= len(days) and invoice.finalized_at is not None:
                next_at = max(invoice.finalized_at + timedelta(days=days[attempt - 1]), now)
        await session.execute(
            update(invoices).where(invoices.c.id == invoice.id).values(next_payment_attempt_at=next_at)
        )
        if next_at is not None:
            uow.schedule(collect_job(invoice.id, attempt + 1, next_at))
        account = await load_account(session, invoice.org_id)
        assert account is not None
        assert invoice.number is not None
        message = result.failure_message or "The payment failed."
        uow.publish(
            PaymentFailed(
                occurred_at=now,
                aggregate_id=invoice.id,
                org_id=invoice.org_id,
                org_name=account.org_name,
                billing_email=account.billing_email,
                invoice_id=invoice.id,
                number=invoice.number,
                amount_due=invoice.amount_due,
                currency=invoice.currency,
                attempt=attempt,
                failure_code=result.failure_code,
                failure_message=message,
                next_attempt_at=next_at,
            )
        )
        log.info(
            "payment failed",
            invoice_id=str(invoice.id),
            attempt=attempt,
            code=result.failure_code,
            next_attempt_at=next_at.isoformat() if next_at else None,
        )
        await self._subscriptions.on_payment_failed(uow, invoice, final=next_at is None)

    # -- customer actions ------------------------------------------------------------------------------

    async def pay_now(self, org_id: UUID, invoice_id: UUID) -> Invoice:
        """Try an open (or uncollectible) invoice again now, with the current payment method."""
        async with self._uow() as uow:
            invoice = await load_invoice(uow.session, invoice_id)
            if invoice is None or invoice.org_id != org_id:
                raise InvoiceNotFound(f"Invoice {invoice_id} does not exist.", invoice_id=str(invoice_id))
            if invoice.status.value not in _PAYABLE or invoice.amount_due <= 0:
                raise IllegalTransition(
                    f"A {invoice.status.value} invoice has nothing to pay.",
                    invoice_status=invoice.status.value,
                )
            account = await load_account(uow.session, org_id)
            assert account is not None
            require_payment_method(account)
            await self._pending_attempt(uow, invoice)
            await uow.commit()
        return invoice

    async def retry_open_invoices(self, org_id: UUID) -> int:
        """After a new payment method: try every open invoice of the organization again now."""
        async with self._uow() as uow:
            ids = (
                await uow.session.execute(
                    select(invoices.c.id).where(
                        invoices.c.org_id == org_id,
                        invoices.c.status == InvoiceStatus.OPEN.value,
                        invoices.c.amount_due > 0,
                    )
                )
            ).scalars()
            count = 0
            for invoice_id in list(ids):
                invoice = await load_invoice(uow.session, invoice_id)
                assert invoice is not None
                await self._pending_attempt(uow, invoice)
                count += 1
            await uow.commit()
        return count

    async def close_invoice(self, org_id: UUID, invoice_id: UUID, target: InvoiceStatus) -> Invoice:
        """Void an open invoice or write it off (`IllegalTransition` from other states).

        Nothing is owed on it any more: a past-due or unpaid subscription with no other open invoice is
        active again; a new subscription whose first invoice is voided never starts (canceled).
        """
        async with self._uow() as uow:
            invoice = await load_invoice(uow.session, invoice_id)
            if invoice is None or invoice.org_id != org_id:
                raise InvoiceNotFound(f"Invoice {invoice_id} does not exist.", invoice_id=str(invoice_id))
            closed = await self._invoices.close(uow, invoice_id, target)
            subscription = await self._subscriptions.by_id(uow.session, closed.subscription_id)
            if subscription is not None and subscription.status.value == "incomplete":
                account = await load_account(uow.session, org_id)
                assert account is not None
                await self._subscriptions.end(
                    uow, subscription, account, Trigger.CANCEL_NOW, self._clock.now()
                )
            else:
                await self._subscriptions.on_invoice_paid(uow, closed)
            await uow.commit()
        return closed

    async def _pending_attempt(self, uow: UnitOfWork, invoice: Invoice) -> None:
        attempt = invoice.attempt_count + 1
        now = self._clock.now()
        await uow.session.execute(
            update(invoices).where(invoices.c.id == invoice.id).values(next_payment_attempt_at=now)
        )
        uow.schedule(collect_job(invoice.id, attempt, now, by="customer"))


async def _lock_payment(uow: UnitOfWork, payment_id: UUID) -> Any:
    return (
        (await uow.session.execute(select(payments).where(payments.c.id == payment_id).with_for_update()))
        .mappings()
        .one()
    )


def _backoff(job: Job) -> timedelta:
    delay: timedelta = timedelta(seconds=30) * 2 ** (job.attempt - 1)
    return min(delay, timedelta(hours=1))
