"""Routes of an organization's invoices: list, detail, printable HTML, pay now, void, write off."""

# No `from __future__ import annotations`: FastAPI reads the endpoints' annotations at runtime.
from datetime import datetime
from typing import Annotated, TypeAlias
from uuid import UUID

from fastapi import APIRouter, Depends, Query, status
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, Field

from splitstone.kernel.app import API_PREFIX
from splitstone.kernel.http.security import bearer_principal
from splitstone.modules.auth.api import Permission, Principal
from splitstone.modules.billing.api import InvoiceStatus
from splitstone.modules.billing.invoice_html import render_invoice_html
from splitstone.modules.billing.invoices import (
    MAX_PAGE,
    BillingReason,
    Invoice,
    InvoiceLine,
    LineKind,
    LineSpec,
)
from splitstone.modules.billing.service import BillingService

_INVOICE_ID = "0191f0a4-4444-7b3a-9d2e-5f6a7b8c9d0e"


class InvoiceLineResponse(BaseModel):
    kind: LineKind
    description: str = Field(examples=["Pro (monthly)"])
    quantity: int
    unit_amount: int | None
    amount: int = Field(description="Minor units; negative for a credit.", examples=[1900])
    plan: str | None = Field(examples=["pro"])
    metric: str | None
    period_start: datetime
    period_end: datetime


class InvoiceResponse(BaseModel):
    id: UUID = Field(examples=[_INVOICE_ID])
    org_id: UUID
    subscription_id: UUID | None
    number: str | None = Field(description="Set when finalized; null on a draft.", examples=["01A2B3C4-0007"])
    status: InvoiceStatus
    billing_reason: BillingReason
    currency: str = Field(examples=["USD"])
    subtotal: int = Field(description="The lines' sum, in minor units.")
    credit_applied: int = Field(description="Taken from the account's credit balance.")
    total: int
    amount_paid: int
    amount_due: int
    period_start: datetime = Field(description="The period whose usage and changes this invoice bills.")
    period_end: datetime
    customer_name: str
    customer_email: str | None
    attempt_count: int = Field(description="Payment attempts so far.")
    next_payment_attempt_at: datetime | None = Field(
        description="When dunning tries again; null: it does not."
    )
    created_at: datetime
    finalized_at: datetime | None
    paid_at: datetime | None
    voided_at: datetime | None
    marked_uncollectible_at: datetime | None
    lines: list[InvoiceLineResponse]
    html_url: str = Field(description="The printable invoice.")


class InvoicePageResponse(BaseModel):
    items: list[InvoiceResponse]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last.")


def line_response(line: InvoiceLine | LineSpec) -> InvoiceLineResponse:
    return InvoiceLineResponse(
        kind=line.kind,
        description=line.description,
        quantity=line.quantity,
        unit_amount=line.unit_amount,
        amount=line.amount,
        plan=line.plan_code,
        metric=line.metric,
        period_start=line.period_start,
        period_end=line.period_end,
    )


def invoice_response(invoice: Invoice) -> InvoiceResponse:
    return InvoiceResponse(
        id=invoice.id,
        org_id=invoice.org_id,
        subscription_id=invoice.subscription_id,
        number=invoice.number,
        status=invoice.status,
        billing_reason=invoice.billing_reason,
        currency=invoice.currency,
        subtotal=invoice.subtotal,
        credit_applied=invoice.credit_applied,
        total=invoice.total,
        amount_paid=invoice.amount_paid,
        amount_due=invoice.amount_due,
        period_start=invoice.period_start,
        period_end=invoice.period_end,
        customer_name=invoice.customer_name,
        customer_email=invoice.customer_email,
        attempt_count=invoice.attempt_count,
        next_payment_attempt_at=invoice.next_payment_attempt_at,
        created_at=invoice.created_at,
        finalized_at=invoice.finalized_at,
        paid_at=invoice.paid_at,
        voided_at=invoice.voided_at,
        marked_uncollectible_at=invoice.marked_uncollectible_at,
        lines=[line_response(line) for line in invoice.lines],
        html_url=f"{API_PREFIX}/orgs/{invoice.org_id}/billing/invoices/{invoice.id}.html",
    )


def router(service: BillingService) -> APIRouter:
    routes = APIRouter(
        prefix=f"{API_PREFIX}/orgs/{{org_id}}/billing/invoices",
        tags=["billing"],
        route_class=service.idempotency.route_class,
    )
    CurrentPrincipal: TypeAlias = Annotated[
        Principal, Depends(bearer_principal(service.auth.resolve_principal))
    ]
    invoices = service.invoices

    async def allowed(principal: Principal, org_id: UUID, permission: Permission) -> None:
        await service.auth.authorize(principal, org_id, permission)

    @routes.get("", summary="The organization's invoices, newest first")
    async def list_invoices(
        org_id: UUID,
        principal: CurrentPrincipal,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 20,
        cursor: Annotated[str | None, Query(max_length=100, description="`next_cursor` of a page.")] = None,
        status_filter: Annotated[
            InvoiceStatus | None, Query(alias="status", description="Only invoices in this state.")
        ] = None,
    ) -> InvoicePageResponse:
        await allowed(principal, org_id, Permission.BILLING_READ)
        page = await invoices.page(org_id, limit=limit, cursor=cursor, status=status_filter)
        return InvoicePageResponse(
            items=[invoice_response(i) for i in page.items], next_cursor=page.next_cursor
        )

    # Before `/{invoice_id}`, which would otherwise try to read "<id>.html" as a UUID.
    @routes.get(
        "/{invoice_id}.html",
        response_class=HTMLResponse,
        summary="The invoice as a printable HTML page",
        responses={200: {"content": {"text/html": {}}}},
    )
    async def invoice_html(org_id: UUID, invoice_id: UUID, principal: CurrentPrincipal) -> HTMLResponse:
        await allowed(principal, org_id, Permission.BILLING_READ)
        invoice = await invoices.get(org_id, invoice_id)
        names = {p.code: p.name for p in await service.plans.all_current()}
        page = render_invoice_html(invoice, issuer=service.settings.invoice_issuer, plan_names=names)
        return HTMLResponse(
            page,
            headers={
                "Cache-Control": "private, no-store",
                # Self-contained: inline styles, no scripts, no other resources.
                "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
            },
        )

    @routes.get("/{invoice_id}", summary="One invoice with its lines")
    async def get_invoice(org_id: UUID, invoice_id: UUID, principal: CurrentPrincipal) -> InvoiceResponse:
        await allowed(principal, org_id, Permission.BILLING_READ)
        return invoice_response(await invoices.get(org_id, invoice_id))

    @routes.post(
        "/{invoice_id}/pay",
        status_code=status.HTTP_202_ACCEPTED,
        summary="Try to pay an open invoice now, with the current payment method",
        description="The attempt runs in the background: follow `status` and `attempt_count`. 409 when "
        "nothing is due; 409 `payment-method-required` without a payment method.",
    )
    async def pay(org_id: UUID, invoice_id: UUID, principal: CurrentPrincipal) -> InvoiceResponse:
        await allowed(principal, org_id, Permission.BILLING_MANAGE)
        await service.payments.pay_now(org_id, invoice_id)
        return invoice_response(await invoices.get(org_id, invoice_id))

    @routes.post(
        "/{invoice_id}/void",
        summary="Void an open invoice: nothing is owed on it any more",
        description="409 `illegal-transition` for a draft, paid or void invoice.",
    )
    async def void(org_id: UUID, invoice_id: UUID, principal: CurrentPrincipal) -> InvoiceResponse:
        await allowed(principal, org_id, Permission.BILLING_MANAGE)
        return invoice_response(await service.payments.close_invoice(org_id, invoice_id, InvoiceStatus.VOID))

    @routes.post(
        "/{invoice_id}/mark-uncollectible",
        summary="Write an open invoice off; it can still be paid later",
        description="409 `illegal-transition` unless the invoice is open.",
    )
    async def mark_uncollectible(
        org_id: UUID, invoice_id: UUID, principal: CurrentPrincipal
    ) -> InvoiceResponse:
        await allowed(principal, org_id, Permission.BILLING_MANAGE)
        closed = await service.payments.close_invoice(org_id, invoice_id, InvoiceStatus.UNCOLLECTIBLE)
        return invoice_response(closed)

    return routes
