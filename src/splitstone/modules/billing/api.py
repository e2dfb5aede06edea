"""The billing contract: the only part of billing that other modules may import.

What may an organization do on its plan (`check_entitlement`, `require_entitlement`), record what it
used (`record_usage`, idempotent per key), and which plan and subscription it has. Money is an integer
amount in minor units (cents) of an ISO 4217 currency, never a float. Async and serializable
throughout, so the same calls work in-process and across services.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import ClassVar, Protocol
from uuid import UUID

from pydantic import BaseModel, Field

from splitstone.kernel.contracts import contract, idempotent
from splitstone.kernel.errors import Conflict, DomainError, InvalidInput, NotFound
from splitstone.kernel.events import Event


class Interval(StrEnum):
    MONTH = "month"
    YEAR = "year"


class SubscriptionStatus(StrEnum):
    """Stripe's subscription states. Only `trialing`, `active` and `past_due` grant the plan's
    entitlements; the others fall back to the catalog's default (free) plan."""

    TRIALING = "trialing"
    ACTIVE = "active"
    PAST_DUE = "past_due"  # a payment failed; retries follow the dunning schedule
    UNPAID = "unpaid"  # every retry failed; the open invoice can still be paid to reactivate
    CANCELED = "canceled"
    INCOMPLETE = "incomplete"  # the first payment of a new paid subscription failed


class InvoiceStatus(StrEnum):
    DRAFT = "draft"  # still changing; no number yet
    OPEN = "open"  # finalized (immutable, numbered), awaiting payment
    PAID = "paid"
    UNCOLLECTIBLE = "uncollectible"
    VOID = "void"


class Money(BaseModel):
    """An amount in minor units of a currency: `{"amount": 1900, "currency": "USD"}` is $19.00."""

    amount: int = Field(examples=[1900])
    currency: str = Field(min_length=3, max_length=3, pattern=r"^[A-Z]{3}$", examples=["USD"])


class Entitlement(BaseModel):
    """The answer of `check_entitlement`: may the organization have `requested` more of `key`?"""

    key: str = Field(examples=["projects"])
    allowed: bool
    limit: int | None = Field(description="The plan's limit; null means unlimited (or a feature flag).")
    used: int | None = Field(
        description="What counts against the limit now: metered by billing for usage limits, or the "
        "`current` the caller passed for counted ones. Null for feature flags."
    )
    requested: int
    plan: str = Field(description="The plan whose entitlements apply (the free plan when unpaid or ended).")
    upgrade_plans: list[str] = Field(
        description="Plans that would allow this, cheapest first; empty when none does."
    )


class UsageRecord(BaseModel):
    """One recorded usage event. `duplicate` is true when the key had been recorded before: this is
    the first record, and nothing was counted again."""

    id: UUID
    org_id: UUID
    metric: str
    quantity: int
    unique_value: str | None
    idempotency_key: str
    occurred_at: datetime
    recorded_at: datetime
    duplicate: bool = False


class PlanSummary(BaseModel):
    code: str = Field(examples=["pro"])
    name: str = Field(examples=["Pro"])
    version: int = Field(description="The catalog version of this plan a subscription is on.")


class SubscriptionInfo(BaseModel):
    """An organization's subscription as other modules see it."""

    id: UUID
    org_id: UUID
    status: SubscriptionStatus
    plan: PlanSummary
    interval: Interval
    effective_plan: str = Field(description="The plan whose entitlements apply now.")
    current_period_start: datetime
    current_period_end: datetime
    trial_end: datetime | None
    cancel_at_period_end: bool


# -- errors ---------------------------------------------------------------------------------------------


class EntitlementExceeded(DomainError):
    """Raised by `require_entitlement` and answered 402 with the limit and the upgrade path.

    Its `extra` carries `key`, `limit`, `used`, `requested`, `plan`, `upgrade_plans` and `upgrade_url`.
    """

    code = "entitlement-exceeded"
    status = 402
    title = "The plan's limit is reached"


class FeatureNotInPlan(EntitlementExceeded):
    code = "feature-not-in-plan"
    title = "The plan does not include this feature"


class UnknownEntitlement(InvalidInput):
    code = "unknown-entitlement"
    title = "No such entitlement in the catalog"


class UnknownMetric(InvalidInput):
    code = "unknown-metric"
    title = "No such billable metric in the catalog"


class InvalidUsage(InvalidInput):
    code = "invalid-usage"
    title = "The usage cannot be recorded"


class UsagePeriodClosed(InvalidUsage):
    code = "usage-period-closed"
    title = "The usage falls in a period that is already invoiced"


class UnknownPlan(InvalidInput):
    code = "unknown-plan"
    title = "No such plan"


class SubscriptionNotFound(NotFound):
    code = "subscription-not-found"
    title = "The organization has no subscription"


class InvoiceNotFound(NotFound):
    code = "invoice-not-found"
    title = "Invoice not found"


class IllegalTransition(Conflict):
    """A subscription or an invoice cannot go from its state to the one asked for (409)."""

    code = "illegal-transition"
    title = "Not possible in the current state"


class PaymentMethodRequired(Conflict):
    code = "payment-method-required"
    title = "A payment method is required"


class InvalidPaymentMethod(InvalidInput):
    code = "invalid-payment-method"
    title = "The payment method was refused"


class WebhookRejected(DomainError):
    """An inbound provider webhook whose signature, timestamp or body is not acceptable."""

    code = "webhook-rejected"
    status = 400
    title = "Webhook rejected"


# -- the contract -----------------------------------------------------------------------------------------


@contract(version=1)
class BillingApi(Protocol):
    """What other modules may ask of billing."""

    @idempotent
    async def check_entitlement(
        self, org_id: UUID, key: str, requested: int = 1, current: int | None = None
    ) -> Entitlement:
        """May `org_id` have `requested` more of `key` on its plan now? Cheap enough for every write.

        For a limit billing meters itself (such as `tasks_per_month`), `used` is this period's usage.
        For a limit the caller counts (such as `projects`), pass `current`, what the organization has
        now. A feature flag is allowed when the plan has it. Raises `UnknownEntitlement`.
        """
        ...

    @idempotent
    async def require_entitlement(
        self, org_id: UUID, key: str, requested: int = 1, current: int | None = None
    ) -> Entitlement:
        """`check_entitlement`, raising `EntitlementExceeded` (402) when it is not allowed.

        A metered limit the plan does not set is allowed without counting the period's usage: the
        answer then has `used` null and no `upgrade_plans`.
        """
        ...

    async def record_usage(
        self,
        org_id: UUID,
        metric: str,
        quantity: int,
        idempotency_key: str,
        occurred_at: datetime | None = None,
        unique_value: str | None = None,
    ) -> UsageRecord:
        """Record usage of a billable metric. A repeated `idempotency_key` (per organization) is
        ignored and returns the first record with `duplicate: true`.

        `occurred_at` defaults to now; `unique_value` is what a `unique_count` metric counts distinct
        values of (a user id, say). Raises `UnknownMetric`, `InvalidUsage`, `UsagePeriodClosed`.
        """
        ...

    @idempotent
    async def get_subscription(self, org_id: UUID) -> SubscriptionInfo:
        """The organization's subscription; raises `SubscriptionNotFound`."""
        ...


# -- events -----------------------------------------------------------------------------------------------
# Each carries the organization's billing contact (`billing_email`, null: its owners and admins) and
# name, so that notifications can write to them without asking billing.


class _OrgContact(BaseModel):
    org_id: UUID
    org_name: str
    billing_email: str | None


class SubscriptionChanged(Event, _OrgContact):
    """An organization's subscription changed plan or status (`change` says how)."""

    name: ClassVar[str] = "billing.SubscriptionChanged"
    subscription_id: UUID
    change: str = Field(
        description="created, trial_started, upgraded, downgraded, downgrade_scheduled, "
        "cancel_scheduled, resumed, canceled, activated, past_due, unpaid, incomplete, renewed"
    )
    status: SubscriptionStatus
    previous_status: SubscriptionStatus | None
    plan: str
    plan_name: str
    previous_plan: str | None
    effective_plan: str
    current_period_end: datetime


class InvoiceFinalized(Event, _OrgContact):
    """An invoice was finalized: numbered, immutable and open for payment (or paid, when nothing is due)."""

    name: ClassVar[str] = "billing.InvoiceFinalized"
    invoice_id: UUID
    number: str
    total: int
    amount_due: int
    currency: str
    period_start: datetime
    period_end: datetime


class InvoicePaid(Event, _OrgContact):
    """An invoice was paid."""

    name: ClassVar[str] = "billing.InvoicePaid"
    invoice_id: UUID
    number: str
    amount_paid: int
    currency: str
    paid_at: datetime


class PaymentFailed(Event, _OrgContact):
    """A payment for an invoice failed; `next_attempt_at` is null when no retry follows."""

    name: ClassVar[str] = "billing.PaymentFailed"
    invoice_id: UUID
    number: str
    amount_due: int
    currency: str
    attempt: int
    failure_code: str | None
    failure_message: str
    next_attempt_at: datetime | None


class TrialEnding(Event, _OrgContact):
    """A trial ends soon (`trial_end`); the first payment is taken then."""

    name: ClassVar[str] = "billing.TrialEnding"
    subscription_id: UUID
    plan: str
    plan_name: str
    trial_end: datetime
    has_payment_method: bool


PUBLISHED_EVENTS: tuple[type[Event], ...] = (
    SubscriptionChanged,
    InvoiceFinalized,
    InvoicePaid,
    PaymentFailed,
    TrialEnding,
)
