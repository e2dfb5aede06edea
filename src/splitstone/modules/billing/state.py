"""`BillingState`: an organization's plan and period as the parts of billing read it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from splitstone.modules.billing.api import SubscriptionStatus
from splitstone.modules.billing.catalog import PlanDefinition


@dataclass(frozen=True)
class BillingState:
    org_id: UUID
    status: SubscriptionStatus | None  # None: no subscription yet (the default plan applies)
    plan: PlanDefinition  # the plan subscribed to
    effective: PlanDefinition  # the plan whose entitlements apply (the default one when not live)
    period_start: datetime
    period_end: datetime
    usage_open_from: datetime
    """Usage that occurred before this is refused (`UsagePeriodClosed`): its invoice is final."""
