"""Routes of an organization's subscription, billing account and payment method."""

# No `from __future__ import annotations`: FastAPI reads the endpoints' annotations at runtime.
from datetime import datetime
from typing import Annotated, Literal, TypeAlias
from uuid import UUID

from fastapi import APIRouter, Depends, Query
from pydantic import AfterValidator, BaseModel, ConfigDict, EmailStr, Field, StrictBool, StringConstraints

from splitstone.kernel.app import API_PREFIX, NOT_BLANK
from splitstone.kernel.http.security import bearer_principal
from splitstone.modules.auth.api import Permission, Principal
from splitstone.modules.billing.accounts import Account
from splitstone.modules.billing.api import Interval, SubscriptionStatus
from splitstone.modules.billing.domain import grants_plan
from splitstone.modules.billing.routes_invoices import InvoiceLineResponse, line_response
from splitstone.modules.billing.service import BillingService
from splitstone.modules.billing.subscriptions import Subscription

_PLAN = Annotated[
    str, StringConstraints(min_length=1, max_length=40, pattern=NOT_BLANK), AfterValidator(str.strip)
]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PlanRef(BaseModel):
    code: str = Field(examples=["pro"])
    name: str = Field(examples=["Pro"])
    version: int = Field(examples=[1])


class Price(BaseModel):
    amount: int = Field(description="Minor units of the currency (1900 = 19.00).", examples=[1900])
    currency: str = Field(examples=["USD"])
    interval: Interval


class ScheduledChange(BaseModel):
    plan: PlanRef
    interval: Interval
    at: datetime = Field(description="The end of the current period, when it applies.")


class SubscriptionResponse(BaseModel):
    id: UUID
    org_id: UUID
    status: SubscriptionStatus
    plan: PlanRef
    price: Price
    effective_plan: str = Field(
        description="The plan whose entitlements apply now: the plan while trialing, active or past due, "
        "else the free plan.",
        examples=["pro"],
    )
    current_period_start: datetime
    current_period_end: datetime
    trial_start: datetime | None
    trial_end: datetime | None
    cancel_at_period_end: bool
    canceled_at: datetime | None
    scheduled_change: ScheduledChange | None = Field(description="A downgrade waiting for the period's end.")
    created_at: datetime
    updated_at: datetime


class ChangePlan(_Request):
    plan: _PLAN = Field(description="A plan code from GET /api/v1/billing/plans.", examples=["pro"])
    interval: Interval | None = Field(default=None, description="Default: the current interval, if offered.")
    when: Literal["now", "period_end"] | None = Field(
        default=None,
        description="Default: upgrades now (prorated on the next invoice), downgrades at the period's end.",
    )


class Cancel(_Request):
    at_period_end: StrictBool = Field(
        default=True,
        description="true: end when the paid period ends (undo with .../resume); false: end now, invoicing "
        "usage so far.",
    )


class HistoryItem(BaseModel):
    id: UUID
    change: str = Field(examples=["upgraded"])
    from_status: str | None
    to_status: str
    from_plan: str | None
    to_plan: str
    detail: dict[str, int] | None = Field(description="Proration amounts for plan changes.")
    occurred_at: datetime


class HistoryPageResponse(BaseModel):
    items: list[HistoryItem]
    next_cursor: str | None


class Card(BaseModel):
    brand: str = Field(examples=["visa"])
    last4: str = Field(examples=["4242"])
    exp_month: int = Field(examples=[12])
    exp_year: int = Field(examples=[2029])


class AccountResponse(BaseModel):
    org_id: UUID
    name: str = Field(description="The name on invoices.", examples=["Acme Inc."])
    billing_email: str | None = Field(
        description="Where billing emails go; null: the organization's owners and admins.",
        examples=["billing@acme.example"],
    )
    currency: str = Field(examples=["USD"])
    provider: str = Field(examples=["sandbox"])
    payment_method: Card | None
    credit_balance: int = Field(description="Owed to the organization; applied to its next invoices.")


class AccountUpdate(_Request):
    """Only what is given changes; `billing_email: null` sends billing mail to owners and admins again."""

    name: (
        Annotated[
            str, StringConstraints(min_length=1, max_length=200, pattern=NOT_BLANK), AfterValidator(str.strip)
        ]
        | None
    ) = None
    billing_email: Annotated[EmailStr, Field(max_length=320)] | None = None


class PaymentMethodIn(_Request):
    token: Annotated[
        str, StringConstraints(min_length=1, max_length=255, pattern=NOT_BLANK), AfterValidator(str.strip)
    ] = Field(
        description="A payment method token from the provider's client side. Sandbox: pm_card_visa, "
        "pm_card_mastercard, pm_card_chargeDeclined, pm_card_insufficient_funds, "
        "pm_card_chargeDeclinedExpiredCard, pm_debit_success, pm_debit_failure.",
        examples=["pm_card_visa"],
    )


class UpcomingInvoiceResponse(BaseModel):
    currency: str = Field(examples=["USD"])
    period_start: datetime
    period_end: datetime = Field(description="When the invoice will be drafted.")
    lines: list[InvoiceLineResponse]
    subtotal: int
    credit_applied: int
    total: int


def account_response(account: Account) -> AccountResponse:
    card = account.payment_method
    return AccountResponse(
        org_id=account.org_id,
        name=account.org_name,
        billing_email=account.billing_email,
        currency=account.currency,
        provider=account.provider,
        payment_method=Card(
            brand=card.brand, last4=card.last4, exp_month=card.exp_month, exp_year=card.exp_year
        )
        if card
        else None,
        credit_balance=account.credit_balance,
    )


def router(service: BillingService) -> APIRouter:
    routes = APIRouter(
        prefix=f"{API_PREFIX}/orgs/{{org_id}}/billing",
        tags=["billing"],
        route_class=service.idempotency.route_class,
    )
    CurrentPrincipal: TypeAlias = Annotated[
        Principal, Depends(bearer_principal(service.auth.resolve_principal))
    ]
    subscriptions = service.subscriptions
    plans = service.plans

    async def allowed(principal: Principal, org_id: UUID, permission: Permission) -> None:
        await service.auth.authorize(principal, org_id, permission)

    async def respond(subscription: Subscription) -> SubscriptionResponse:
        plan = await plans.by_id(subscription.plan_version_id)
        scheduled = None
        if subscription.scheduled_plan_version_id is not None:
            next_plan = await plans.by_id(subscription.scheduled_plan_version_id)
            scheduled = ScheduledChange(
                plan=PlanRef(code=next_plan.code, name=next_plan.name, version=next_plan.version),
                interval=subscription.scheduled_interval or subscription.interval,
                at=subscription.current_period_end,
            )
        return SubscriptionResponse(
            id=subscription.id,
            org_id=subscription.org_id,
            status=subscription.status,
            plan=PlanRef(code=plan.code, name=plan.name, version=plan.version),
            price=Price(
                amount=plan.price(subscription.interval),
                currency=plan.definition.currency,
                interval=subscription.interval,
            ),
            effective_plan=plan.code if grants_plan(subscription.status) else plans.default_code,
            current_period_start=subscription.current_period_start,
            current_period_end=subscription.current_period_end,
            trial_start=subscription.trial_start,
            trial_end=subscription.trial_end,
            cancel_at_period_end=subscription.cancel_at_period_end,
            canceled_at=subscription.canceled_at,
            scheduled_change=scheduled,
            created_at=subscription.created_at,
            updated_at=subscription.updated_at,
        )

    @routes.get("/subscription", summary="The organization's subscription")
    async def get_subscription(org_id: UUID, principal: CurrentPrincipal) -> SubscriptionResponse:
        await allowed(principal, org_id, Permission.BILLING_READ)
        found = await subscriptions.get(org_id)
        if found is None:  # an organization from before billing existed: open it on the free plan
            found = await subscriptions.open_account(org_id, f"Organization {org_id}")
        return await respond(found)

    @routes.post(
        "/subscription/change",
        summary="Change plan or interval, or start a paid plan",
        description="From the free plan (or an ended subscription): a trial when the plan has one and the "
        "organization never had one, else a paid start, `incomplete` until its first invoice is paid "
        "(409 `payment-method-required` without a payment method). On a live subscription: upgrades now "
        "with proration on the next invoice, downgrades at the period's end (`when` overrides); an "
        "interval change starts a new period now, invoiced at once with a credit for the unused time. "
        "409 `illegal-transition` while past due, unpaid or incomplete.",
    )
    async def change_plan(
        org_id: UUID, body: ChangePlan, principal: CurrentPrincipal
    ) -> SubscriptionResponse:
        await allowed(principal, org_id, Permission.BILLING_MANAGE)
        return await respond(await subscriptions.change(org_id, body.plan, body.interval, body.when))

    @routes.post("/subscription/cancel", summary="Cancel, at the period's end (default) or now")
    async def cancel(org_id: UUID, body: Cancel, principal: CurrentPrincipal) -> SubscriptionResponse:
        await allowed(principal, org_id, Permission.BILLING_MANAGE)
        return await respond(await subscriptions.cancel(org_id, at_period_end=body.at_period_end))

    @routes.post(
        "/subscription/resume",
        summary="Undo a scheduled cancellation or downgrade",
        description="409 `illegal-transition` when nothing is scheduled or the subscription has ended.",
    )
    async def resume(org_id: UUID, principal: CurrentPrincipal) -> SubscriptionResponse:
        await allowed(principal, org_id, Permission.BILLING_MANAGE)
        return await respond(await subscriptions.resume(org_id))

    @routes.get("/subscription/history", summary="Every change of the subscription, newest first")
    async def history(
        org_id: UUID,
        principal: CurrentPrincipal,
        limit: Annotated[int, Query(ge=1, le=100)] = 50,
        cursor: Annotated[str | None, Query(max_length=100, description="`next_cursor` of a page.")] = None,
    ) -> HistoryPageResponse:
        await allowed(principal, org_id, Permission.BILLING_READ)
        page = await subscriptions.history(org_id, limit=limit, cursor=cursor)
        return HistoryPageResponse(
            items=[HistoryItem.model_validate(e, from_attributes=True) for e in page.items],
            next_cursor=page.next_cursor,
        )

    @routes.get(
        "/upcoming-invoice",
        summary="The next invoice as it stands: the next period's price, pending prorations, usage so far",
        description="Nothing is written. 404 `no-upcoming-invoice` when the subscription will not run on "
        "(canceled, ending at the period's end, unpaid, or waiting for its first payment).",
    )
    async def upcoming_invoice(org_id: UUID, principal: CurrentPrincipal) -> UpcomingInvoiceResponse:
        await allowed(principal, org_id, Permission.BILLING_READ)
        preview = await service.upcoming.preview(org_id)
        return UpcomingInvoiceResponse(
            currency=preview.currency,
            period_start=preview.period_start,
            period_end=preview.period_end,
            lines=[line_response(line) for line in preview.lines],
            subtotal=preview.subtotal,
            credit_applied=preview.credit_applied,
            total=preview.total,
        )

    @routes.get("/account", summary="The billing account: name on invoices, contact, payment method, credit")
    async def get_account(org_id: UUID, principal: CurrentPrincipal) -> AccountResponse:
        await allowed(principal, org_id, Permission.BILLING_READ)
        return account_response(await _account(service, org_id))

    @routes.patch("/account", summary="Change the name on invoices or the billing contact")
    async def update_account(
        org_id: UUID, body: AccountUpdate, principal: CurrentPrincipal
    ) -> AccountResponse:
        await allowed(principal, org_id, Permission.BILLING_MANAGE)
        await _account(service, org_id)
        changes: dict[str, str | None] = {}
        if "name" in body.model_fields_set and body.name is not None:
            changes["org_name"] = body.name
        if "billing_email" in body.model_fields_set:
            changes["billing_email"] = str(body.billing_email).lower() if body.billing_email else None
        return account_response(await service.accounts.update(org_id, **changes))

    @routes.post(
        "/payment-method",
        summary="Set the payment method (from a provider token)",
        description="It becomes the default for every charge; open invoices are tried again with it at "
        "once. 422 `invalid-payment-method` when the provider refuses the token.",
    )
    async def set_payment_method(
        org_id: UUID, body: PaymentMethodIn, principal: CurrentPrincipal
    ) -> AccountResponse:
        await allowed(principal, org_id, Permission.BILLING_MANAGE)
        account = await service.accounts.set_payment_method(await _account(service, org_id), body.token)
        await service.payments.retry_open_invoices(org_id)
        return account_response(account)

    return routes


async def _account(service: BillingService, org_id: UUID) -> Account:
    account = await service.accounts.get(org_id)
    if account is None:
        await service.subscriptions.open_account(org_id, f"Organization {org_id}")
        account = await service.accounts.get(org_id)
    assert account is not None
    return account
