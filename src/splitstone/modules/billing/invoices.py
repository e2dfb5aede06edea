"""Invoices: drafted at a period's end, finalized (numbered, immutable), then paid, voided or written off.

A draft gathers the plan's price for the coming period, the proration items of the past one, and (when
it is finalized, so late usage reports still count) the metered usage of the past period. Finalizing
applies the account's credit balance, takes the organization's next number, and freezes the invoice.
These are the data operations; `payments.py` and `subscriptions.py` decide when they happen.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any
from uuid import UUID

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection
from uuid6 import uuid7

from splitstone.kernel.clock import Clock
from splitstone.kernel.db import UnitOfWork, UnitOfWorkFactory, upsert_insert
from splitstone.kernel.messaging.jobs import job
from splitstone.kernel.pagination import decode_cursor, encode_cursor
from splitstone.modules.billing.accounts import Account, load_account
from splitstone.modules.billing.api import (
    InvoiceFinalized,
    InvoiceNotFound,
    InvoicePaid,
    InvoiceStatus,
)
from splitstone.modules.billing.domain import invoice_transition
from splitstone.modules.billing.job_kinds import COLLECT_PAYMENT, FINALIZE_INVOICE
from splitstone.modules.billing.plans import Plans
from splitstone.modules.billing.storage import (
    accounts,
    invoice_counters,
    invoice_lines,
    invoices,
    pending_items,
    subscriptions,
)
from splitstone.modules.billing.usage import aggregate

MAX_PAGE = 100


class LineKind(StrEnum):
    SUBSCRIPTION = "subscription"  # the plan's price for the coming period, in advance
    PRORATION = "proration"  # a credit (negative) or charge for a mid-period change
    USAGE = "usage"  # metered usage over the included quantity, for the past period


class BillingReason(StrEnum):
    SUBSCRIPTION_CREATE = "subscription_create"
    SUBSCRIPTION_CYCLE = "subscription_cycle"
    SUBSCRIPTION_UPDATE = "subscription_update"  # an interval change, invoiced at once
    SUBSCRIPTION_CANCEL = "subscription_cancel"  # the final invoice of an ended subscription


@dataclass(frozen=True)
class InvoiceLine:
    id: UUID
    position: int
    kind: LineKind
    description: str
    quantity: int
    unit_amount: int | None
    amount: int
    plan_code: str | None
    metric: str | None
    period_start: datetime
    period_end: datetime


@dataclass(frozen=True)
class Invoice:
    id: UUID
    org_id: UUID
    subscription_id: UUID | None
    status: InvoiceStatus
    billing_reason: BillingReason
    number: str | None  # set when finalized
    currency: str
    subtotal: int  # the lines' sum
    credit_applied: int  # from the account's credit balance (zero or positive)
    total: int  # subtotal - credit_applied, never negative
    amount_due: int  # total - amount_paid
    amount_paid: int
    period_start: datetime
    period_end: datetime
    customer_name: str
    customer_email: str | None
    attempt_count: int
    next_payment_attempt_at: datetime | None
    created_at: datetime
    finalized_at: datetime | None
    paid_at: datetime | None
    voided_at: datetime | None
    marked_uncollectible_at: datetime | None
    lines: tuple[InvoiceLine, ...]


@dataclass(frozen=True)
class LineSpec:
    """A line to put on a new draft."""

    kind: LineKind
    description: str
    amount: int
    period_start: datetime
    period_end: datetime
    quantity: int = 1
    unit_amount: int | None = None
    plan_code: str | None = None
    metric: str | None = None


@dataclass(frozen=True)
class InvoicePage:
    items: list[Invoice]
    next_cursor: str | None


def invoice_number(org_id: UUID, sequence: int) -> str:
    """`<first 8 hex digits of the organization id>-<sequence, 4 digits or more>`, as Stripe's."""
    return f"{org_id.hex[:8].upper()}-{sequence:04d}"


class Invoices:
    def __init__(self, uow: UnitOfWorkFactory, clock: Clock, plans: Plans) -> None:
        self._uow = uow
        self._clock = clock
        self._plans = plans

    # -- reading -------------------------------------------------------------------------------------

    async def get(self, org_id: UUID, invoice_id: UUID) -> Invoice:
        async with self._uow(read_only=True) as uow:
            found = await load_invoice(uow.session, invoice_id)
        if found is None or found.org_id != org_id:
            raise InvoiceNotFound(f"Invoice {invoice_id} does not exist.", invoice_id=str(invoice_id))
        return found

    async def page(
        self, org_id: UUID, *, limit: int, cursor: str | None, status: InvoiceStatus | None = None
    ) -> InvoicePage:
        """An organization's invoices, newest first."""
        query = select(invoices.c.id).where(invoices.c.org_id == org_id)
        if status is not None:
            query = query.where(invoices.c.status == status.value)
        if cursor is not None:
            query = query.where(invoices.c.id < decode_cursor(cursor))
        query = query.order_by(invoices.c.id.desc()).limit(limit + 1)
        async with self._uow(read_only=True) as uow:
            ids = list((await uow.session.execute(query)).scalars())
            found = [await load_invoice(uow.session, i) for i in ids[:limit]]
        items = [i for i in found if i is not None]
        next_cursor = encode_cursor(items[-1].id) if len(ids) > limit and items else None
        return InvoicePage(items=items, next_cursor=next_cursor)

    # -- drafting and finalizing ---------------------------------------------------------------------

    async def create_draft(
        self,
        uow: UnitOfWork,
        *,
        account: Account,
        subscription_id: UUID,
        reason: BillingReason,
        dedupe_key: str,
        period_start: datetime,
        period_end: datetime,
        lines: list[LineSpec],
        usage_plan_version_id: UUID | None,
        finalize_at: datetime,
    ) -> Invoice | None:
        """A draft with `lines` and the subscription's pending proration items; finalized now when
        `finalize_at` has come, else by a job then. None when this `dedupe_key` was invoiced before,
        or when there is nothing to invoice (no lines, no pending items and no usage to price)."""
        session = uow.session
        now = self._clock.now()
        pending = (
            (
                await session.execute(
                    select(pending_items)
                    .where(
                        pending_items.c.subscription_id == subscription_id,
                        pending_items.c.invoice_id.is_(None),
                    )
                    .order_by(pending_items.c.id)
                )
            )
            .mappings()
            .all()
        )
        if not lines and not pending and usage_plan_version_id is None:
            return None
        invoice_id = uuid7()
        inserted = await session.execute(
            upsert_insert(invoices, session.dialect)
            .values(
                id=invoice_id,
                org_id=account.org_id,
                subscription_id=subscription_id,
                status=InvoiceStatus.DRAFT.value,
                billing_reason=reason.value,
                dedupe_key=dedupe_key,
                number=None,
                sequence=None,
                currency=account.currency,
                subtotal=0,
                credit_applied=0,
                total=0,
                amount_due=0,
                amount_paid=0,
                period_start=period_start,
                period_end=period_end,
                usage_plan_version_id=usage_plan_version_id,
                customer_name=account.org_name,
                customer_email=account.billing_email,
                attempt_count=0,
                next_payment_attempt_at=None,
                finalize_at=finalize_at,
                created_at=now,
                finalized_at=None,
                paid_at=None,
                voided_at=None,
                marked_uncollectible_at=None,
            )
            .on_conflict_do_nothing()
        )
        if not inserted.rowcount:
            return None  # another scheduler invoiced this period first
        specs = [
            *lines,
            *(
                LineSpec(
                    kind=LineKind.PRORATION,
                    description=p["description"],
                    amount=p["amount"],
                    period_start=p["period_start"],
                    period_end=p["period_end"],
                    plan_code=p["plan_code"],
                )
                for p in pending
            ),
        ]
        await _insert_lines(session, invoice_id, specs, start=0)
        if pending:
            await session.execute(
                update(pending_items)
                .where(pending_items.c.id.in_([p["id"] for p in pending]))
                .values(invoice_id=invoice_id)
            )
        await _refresh_subtotal(session, invoice_id)
        if finalize_at <= now:
            return await self.finalize(uow, invoice_id)
        uow.schedule(
            job(
                FINALIZE_INVOICE,
                {"invoice_id": str(invoice_id)},
                run_at=finalize_at,
                idempotency_key=str(invoice_id),
            )
        )
        return await load_invoice(session, invoice_id)

    async def finalize(self, uow: UnitOfWork, invoice_id: UUID) -> Invoice:
        """Price the usage, apply the credit balance, number and freeze a draft (a no-op otherwise).

        Announces `InvoiceFinalized`; an invoice with nothing due is paid at once (`InvoicePaid` when
        it had a total), any other one gets its first payment attempt scheduled now.
        """
        session = uow.session
        row = await _lock_invoice(session, invoice_id)
        if row is None or row["status"] != InvoiceStatus.DRAFT.value:
            invoice = await load_invoice(session, invoice_id)
            assert invoice is not None
            return invoice
        now = self._clock.now()
        if row["subscription_id"] is not None:
            # Usage recording share-locks this row while it checks the cutoff and inserts: holding it
            # from pricing to moving the cutoff, an event is either on this invoice or refused.
            await session.execute(
                select(subscriptions.c.id)
                .where(subscriptions.c.id == row["subscription_id"])
                .with_for_update()
            )
        await self._price_usage(session, row)
        subtotal = await _refresh_subtotal(session, invoice_id)
        account = await load_account(session, row["org_id"], lock=True)
        assert account is not None
        balance = account.credit_balance
        credit_applied = min(balance, subtotal) if subtotal > 0 else 0
        balance = balance - credit_applied + (-subtotal if subtotal < 0 else 0)
        total = max(subtotal - credit_applied, 0)
        await session.execute(
            update(accounts)
            .where(accounts.c.org_id == account.org_id)
            .values(credit_balance=balance, updated_at=now)
        )
        sequence = await _next_sequence(session, account.org_id)
        status = invoice_transition(
            InvoiceStatus.DRAFT, InvoiceStatus.PAID if total == 0 else InvoiceStatus.OPEN
        )
        await session.execute(
            update(invoices)
            .where(invoices.c.id == invoice_id)
            .values(
                status=status.value,
                number=invoice_number(account.org_id, sequence),
                sequence=sequence,
                credit_applied=credit_applied,
                total=total,
                amount_due=total,
                customer_name=account.org_name,
                customer_email=account.billing_email,
                finalized_at=now,
                paid_at=now if status is InvoiceStatus.PAID else None,
            )
        )
        if row["billing_reason"] == BillingReason.SUBSCRIPTION_CYCLE.value and row["subscription_id"]:
            # The period is invoiced: usage that occurred before its end is refused from now on.
            await session.execute(
                update(subscriptions)
                .where(
                    subscriptions.c.id == row["subscription_id"],
                    subscriptions.c.usage_open_from < row["period_end"],
                )
                .values(usage_open_from=row["period_end"])
            )
        invoice = await load_invoice(session, invoice_id)
        assert invoice is not None
        assert invoice.number is not None
        uow.publish(
            InvoiceFinalized(
                occurred_at=now,
                aggregate_id=invoice.id,
                org_id=invoice.org_id,
                org_name=account.org_name,
                billing_email=account.billing_email,
                invoice_id=invoice.id,
                number=invoice.number,
                total=invoice.total,
                amount_due=invoice.amount_due,
                currency=invoice.currency,
                period_start=invoice.period_start,
                period_end=invoice.period_end,
            )
        )
        if status is InvoiceStatus.OPEN:
            uow.schedule(collect_job(invoice.id, 1, now))
        return invoice

    async def _price_usage(self, session: AsyncConnection, row: Any) -> None:
        await session.execute(
            delete(invoice_lines).where(
                invoice_lines.c.invoice_id == row["id"], invoice_lines.c.kind == LineKind.USAGE.value
            )
        )
        if row["usage_plan_version_id"] is None:
            return
        plan = await self._plans.by_id(row["usage_plan_version_id"])
        specs: list[LineSpec] = []
        for price in plan.definition.plan.metered:
            metric = plan.definition.metrics[price.metric]
            quantity = await aggregate(
                session,
                row["org_id"],
                price.metric,
                metric.aggregation,
                row["period_start"],
                row["period_end"],
            )
            if quantity == 0:
                continue
            billable = price.billable(quantity)
            specs.append(
                LineSpec(
                    kind=LineKind.USAGE,
                    description=f"{metric.name}: {quantity:,} {metric.unit}s, {price.included:,} included",
                    amount=price.amount(quantity),
                    quantity=billable,
                    plan_code=plan.code,
                    metric=price.metric,
                    period_start=row["period_start"],
                    period_end=row["period_end"],
                )
            )
        last = await session.scalar(
            select(func.max(invoice_lines.c.position)).where(invoice_lines.c.invoice_id == row["id"])
        )
        await _insert_lines(session, row["id"], specs, start=(last if last is not None else -1) + 1)

    # -- state changes ----------------------------------------------------------------------------------

    async def mark_paid(self, uow: UnitOfWork, invoice_id: UUID, amount: int) -> Invoice | None:
        """Record a payment of the amount due (None when the invoice was not payable, e.g. already paid)."""
        session = uow.session
        row = await _lock_invoice(session, invoice_id)
        if row is None or row["status"] not in (InvoiceStatus.OPEN.value, InvoiceStatus.UNCOLLECTIBLE.value):
            return None
        now = self._clock.now()
        invoice_transition(InvoiceStatus(row["status"]), InvoiceStatus.PAID)
        await session.execute(
            update(invoices)
            .where(invoices.c.id == invoice_id)
            .values(
                status=InvoiceStatus.PAID.value,
                amount_paid=row["amount_paid"] + amount,
                amount_due=max(row["amount_due"] - amount, 0),
                paid_at=now,
                next_payment_attempt_at=None,
            )
        )
        invoice = await load_invoice(session, invoice_id)
        assert invoice is not None
        assert invoice.number is not None
        account = await load_account(session, invoice.org_id)
        assert account is not None
        uow.publish(
            InvoicePaid(
                occurred_at=now,
                aggregate_id=invoice.id,
                org_id=invoice.org_id,
                org_name=account.org_name,
                billing_email=account.billing_email,
                invoice_id=invoice.id,
                number=invoice.number,
                amount_paid=invoice.amount_paid,
                currency=invoice.currency,
                paid_at=now,
            )
        )
        return invoice

    async def close(self, uow: UnitOfWork, invoice_id: UUID, target: InvoiceStatus) -> Invoice:
        """Void an invoice or mark it uncollectible (`IllegalTransition` from any other state)."""
        session = uow.session
        row = await _lock_invoice(session, invoice_id)
        if row is None:
            raise InvoiceNotFound(f"Invoice {invoice_id} does not exist.", invoice_id=str(invoice_id))
        invoice_transition(InvoiceStatus(row["status"]), target)
        now = self._clock.now()
        stamp = {"voided_at": now} if target is InvoiceStatus.VOID else {"marked_uncollectible_at": now}
        await session.execute(
            update(invoices)
            .where(invoices.c.id == invoice_id)
            .values(status=target.value, next_payment_attempt_at=None, **stamp)
        )
        invoice = await load_invoice(session, invoice_id)
        assert invoice is not None
        return invoice


def collect_job(invoice_id: UUID, attempt: int, run_at: datetime, *, by: str = "schedule") -> Any:
    """The job that charges attempt number `attempt` of an invoice, by the dunning `schedule` or at a
    customer's request (`by="customer"`: it must not wait for the scheduled job of the same number).
    Whichever runs first makes the attempt; the other finds it made."""
    return job(
        COLLECT_PAYMENT,
        {"invoice_id": str(invoice_id), "attempt": attempt},
        run_at=run_at,
        idempotency_key=f"{invoice_id}:{attempt}:{by}",
        max_attempts=20,
    )


async def _lock_invoice(session: AsyncConnection, invoice_id: UUID) -> Any:
    return (
        (await session.execute(select(invoices).where(invoices.c.id == invoice_id).with_for_update()))
        .mappings()
        .first()
    )


async def _insert_lines(
    session: AsyncConnection, invoice_id: UUID, specs: list[LineSpec], *, start: int
) -> None:
    if not specs:
        return
    await session.execute(
        invoice_lines.insert(),
        [
            {
                "id": uuid7(),
                "invoice_id": invoice_id,
                "position": start + i,
                "kind": s.kind.value,
                "description": s.description[:300],
                "quantity": s.quantity,
                "unit_amount": s.unit_amount,
                "amount": s.amount,
                "plan_code": s.plan_code,
                "metric": s.metric,
                "period_start": s.period_start,
                "period_end": s.period_end,
            }
            for i, s in enumerate(specs)
        ],
    )


async def _refresh_subtotal(session: AsyncConnection, invoice_id: UUID) -> int:
    subtotal = int(
        await session.scalar(
            select(func.coalesce(func.sum(invoice_lines.c.amount), 0)).where(
                invoice_lines.c.invoice_id == invoice_id
            )
        )
        or 0
    )
    await session.execute(update(invoices).where(invoices.c.id == invoice_id).values(subtotal=subtotal))
    return subtotal


async def _next_sequence(session: AsyncConnection, org_id: UUID) -> int:
    """The organization's next invoice number, gap-free: the counter row is locked until commit."""
    await session.execute(
        upsert_insert(invoice_counters, session.dialect)
        .values(org_id=org_id, last_sequence=0)
        .on_conflict_do_nothing()
    )
    result = await session.execute(
        update(invoice_counters)
        .where(invoice_counters.c.org_id == org_id)
        .values(last_sequence=invoice_counters.c.last_sequence + 1)
        .returning(invoice_counters.c.last_sequence)
    )
    return int(result.scalar_one())


async def load_invoice(session: AsyncConnection, invoice_id: UUID) -> Invoice | None:
    row = (await session.execute(select(invoices).where(invoices.c.id == invoice_id))).mappings().first()
    if row is None:
        return None
    lines = (
        (
            await session.execute(
                select(invoice_lines)
                .where(invoice_lines.c.invoice_id == invoice_id)
                .order_by(invoice_lines.c.position)
            )
        )
        .mappings()
        .all()
    )
    return Invoice(
        id=row["id"],
        org_id=row["org_id"],
        subscription_id=row["subscription_id"],
        status=InvoiceStatus(row["status"]),
        billing_reason=BillingReason(row["billing_reason"]),
        number=row["number"],
        currency=row["currency"],
        subtotal=row["subtotal"],
        credit_applied=row["credit_applied"],
        total=row["total"],
        amount_due=row["amount_due"],
        amount_paid=row["amount_paid"],
        period_start=row["period_start"],
        period_end=row["period_end"],
        customer_name=row["customer_name"],
        customer_email=row["customer_email"],
        attempt_count=row["attempt_count"],
        next_payment_attempt_at=row["next_payment_attempt_at"],
        created_at=row["created_at"],
        finalized_at=row["finalized_at"],
        paid_at=row["paid_at"],
        voided_at=row["voided_at"],
        marked_uncollectible_at=row["marked_uncollectible_at"],
        lines=tuple(
            InvoiceLine(
                id=line["id"],
                position=line["position"],
                kind=LineKind(line["kind"]),
                description=line["description"],
                quantity=line["quantity"],
                unit_amount=line["unit_amount"],
                amount=line["amount"],
                plan_code=line["plan_code"],
                metric=line["metric"],
                period_start=line["period_start"],
                period_end=line["period_end"],
            )
            for line in lines
        ),
    )
