"""Helpers for usage and entitlement tests: a fake `StateReader` (any plan, any period) and the parts
built on it, with the container's billing unit of work."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from splitstone.kernel.clock import ManualClock
from splitstone.modules.billing.api import SubscriptionStatus
from splitstone.modules.billing.catalog import Catalog, PlanDefinition, parse_catalog
from splitstone.modules.billing.entitlements import Entitlements
from splitstone.modules.billing.service import BillingService
from splitstone.modules.billing.state import BillingState
from splitstone.modules.billing.usage import Usage

UPGRADE_URL = "https://app.example.com/orgs/{org_id}/billing/plans"

EVERY_AGGREGATION = """
currency = "EUR"
default_plan = "free"

[metrics.events]
name = "Events"
aggregation = "count"

[metrics.calls]
name = "Calls"
aggregation = "sum"
unit = "call"

[metrics.peak]
name = "Peak storage"
aggregation = "max"
unit = "GB"

[metrics.users]
name = "Active users"
aggregation = "unique_count"
unit = "user"

[metrics.seats]
name = "Seats"
aggregation = "latest"
unit = "seat"

[plans.free]
name = "Free"
prices = { month = 0 }
"""
"""A catalog with a metric of each aggregation (named after what it measures, not how)."""

METRIC_OF = {"count": "events", "sum": "calls", "max": "peak", "unique_count": "users", "latest": "seats"}


def every_aggregation_catalog() -> Catalog:
    return parse_catalog(EVERY_AGGREGATION)


class FakeStates:
    """A `StateReader`: every organization on `plan` in [period_start, period_end), unless `set`
    says otherwise. `calls` counts the reads."""

    def __init__(
        self, catalog: Catalog, period_start: datetime, period_end: datetime, plan: str = "free"
    ) -> None:
        self.catalog = catalog
        self.period_start = period_start
        self.period_end = period_end
        self.plan = plan
        self.calls = 0
        self._states: dict[UUID, BillingState] = {}

    def default(self, org_id: UUID) -> BillingState:
        definition = self.catalog.definition(self.plan)
        return BillingState(
            org_id=org_id,
            status=SubscriptionStatus.ACTIVE,
            plan=definition,
            effective=definition,
            period_start=self.period_start,
            period_end=self.period_end,
            usage_open_from=self.period_start,
        )

    def set(
        self,
        org_id: UUID,
        plan: str | PlanDefinition | None = None,
        effective: str | None = None,
        **changes: Any,
    ) -> None:
        """Change one organization's state: its plan (and the effective one, the same by default)."""
        state = self._states.get(org_id) or self.default(org_id)
        if plan is not None:
            changes["plan"] = self.catalog.definition(plan) if isinstance(plan, str) else plan
            changes["effective"] = self.catalog.definition(effective) if effective else changes["plan"]
        elif effective is not None:
            changes["effective"] = self.catalog.definition(effective)
        self._states[org_id] = replace(state, **changes)

    async def __call__(self, org_id: UUID) -> BillingState:
        self.calls += 1
        return self._states.get(org_id) or self.default(org_id)


def past_period(clock: ManualClock, days: int = 30) -> tuple[datetime, datetime]:
    """A period that ended a day ago, so that all of it may be reported (nothing in the future)."""
    end = clock.now().replace(microsecond=0) - timedelta(days=1)
    return end - timedelta(days=days), end


def usage_with(billing: BillingService, clock: ManualClock, states: FakeStates) -> Usage:
    return Usage(billing.usage._uow, clock, states.catalog, states)


def entitlements_with(
    billing: BillingService, clock: ManualClock, states: FakeStates, ttl_seconds: float = 30
) -> Entitlements:
    return Entitlements(
        catalog=states.catalog,
        state=states,
        usage=usage_with(billing, clock, states),
        clock=clock,
        ttl_seconds=ttl_seconds,
        upgrade_url=UPGRADE_URL,
    )
