"""`BillingService`: billing's implementation of its contract, composed of its parts."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from splitstone.kernel.http.idempotency import Idempotency
from splitstone.modules.auth.api import AuthApi
from splitstone.modules.billing.accounts import Accounts
from splitstone.modules.billing.api import Entitlement, SubscriptionInfo, UsageRecord
from splitstone.modules.billing.catalog import Catalog
from splitstone.modules.billing.entitlements import Entitlements
from splitstone.modules.billing.inbound import InboundWebhooks
from splitstone.modules.billing.invoices import Invoices
from splitstone.modules.billing.payments import Payments
from splitstone.modules.billing.plans import Plans
from splitstone.modules.billing.provider import PaymentProvider
from splitstone.modules.billing.renewals import Renewals
from splitstone.modules.billing.retention import Retention
from splitstone.modules.billing.settings import BillingSettings
from splitstone.modules.billing.subscriptions import Subscriptions
from splitstone.modules.billing.upcoming import Upcoming
from splitstone.modules.billing.usage import Usage


class BillingService:
    """Implements `BillingApi`; routes, handlers and jobs reach the parts directly."""

    def __init__(
        self,
        *,
        catalog: Catalog,
        plans: Plans,
        accounts: Accounts,
        subscriptions: Subscriptions,
        renewals: Renewals,
        upcoming: Upcoming,
        retention: Retention,
        usage: Usage,
        entitlements: Entitlements,
        invoices: Invoices,
        payments: Payments,
        provider: PaymentProvider,
        inbound: InboundWebhooks,
        auth: AuthApi,
        idempotency: Idempotency,
        settings: BillingSettings,
        base_url: str,
    ) -> None:
        self.catalog = catalog
        self.plans = plans
        self.accounts = accounts
        self.subscriptions = subscriptions
        self.renewals = renewals
        self.upcoming = upcoming
        self.retention = retention
        self.usage = usage
        self.entitlements = entitlements
        self.invoices = invoices
        self.payments = payments
        self.provider = provider
        self.inbound = inbound
        self.auth = auth
        self.idempotency = idempotency
        self.settings = settings
        self.base_url = base_url

    async def check_entitlement(
        self, org_id: UUID, key: str, requested: int = 1, current: int | None = None
    ) -> Entitlement:
        return await self.entitlements.check(org_id, key, requested, current)

    async def require_entitlement(
        self, org_id: UUID, key: str, requested: int = 1, current: int | None = None
    ) -> Entitlement:
        return await self.entitlements.require(org_id, key, requested, current)

    async def record_usage(
        self,
        org_id: UUID,
        metric: str,
        quantity: int,
        idempotency_key: str,
        occurred_at: datetime | None = None,
        unique_value: str | None = None,
    ) -> UsageRecord:
        return await self.usage.record(org_id, metric, quantity, idempotency_key, occurred_at, unique_value)

    async def get_subscription(self, org_id: UUID) -> SubscriptionInfo:
        return await self.subscriptions.info(org_id)

    async def aclose(self) -> None:
        """Called by the container on shutdown."""
        await self.provider.aclose()
