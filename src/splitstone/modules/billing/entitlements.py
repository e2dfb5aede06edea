"""Entitlements: what an organization's plan allows, checked cheaply on every write.

The plan comes from the organization's `BillingState`, cached per organization for `ttl_seconds` of
the clock (billing calls `invalidate` when a plan changes in this process, so the TTL only bounds how
long another process's change goes unseen). Usage that counts against a metered limit is read fresh on
every check that needs it: one indexed aggregate (`require` skips it when the plan sets no limit).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Literal
from uuid import UUID

from cachetools import TTLCache
from pydantic import BaseModel, Field

from splitstone.kernel.clock import Clock
from splitstone.kernel.errors import InvalidInput
from splitstone.modules.billing.api import (
    Entitlement,
    EntitlementExceeded,
    FeatureNotInPlan,
    Interval,
    UnknownEntitlement,
)
from splitstone.modules.billing.catalog import Catalog, EntitlementDefinition, Plan, PlanDefinition
from splitstone.modules.billing.state import BillingState
from splitstone.modules.billing.usage import StateReader, Usage

MAX_CACHED = 10_000
"""Organizations whose state is cached at once; the oldest entry goes first beyond that."""

_Allows = Callable[[Plan], bool]


class PlanEntitlement(BaseModel):
    """One entitlement of the plan that applies to an organization."""

    key: str = Field(examples=["tasks_per_month"])
    kind: Literal["limit", "feature"]
    description: str = Field(examples=["Tasks created per billing period"])
    limit: int | None = Field(description="For a limit: null means unlimited. Null for features.")
    used: int | None = Field(
        description="For a limit billing meters: this period's usage. Null otherwise (the caller counts).",
        examples=[42],
    )
    enabled: bool | None = Field(description="For a feature: whether the plan has it. Null for limits.")
    plan: str = Field(description="The plan whose entitlements apply.", examples=["free"])


class Entitlements:
    """Answers what an organization's plan allows (`check`, `require`) and lists it (`for_org`)."""

    def __init__(
        self,
        *,
        catalog: Catalog,
        state: StateReader,
        usage: Usage,
        clock: Clock,
        ttl_seconds: float,
        upgrade_url: str,
    ) -> None:
        self._catalog = catalog
        self._state = state
        self._usage = usage
        self._clock = clock
        self._ttl = timedelta(seconds=ttl_seconds)
        self._upgrade_url = upgrade_url
        self._cache: TTLCache[UUID, BillingState] | None = (
            TTLCache(maxsize=MAX_CACHED, ttl=ttl_seconds, timer=lambda: clock.now().timestamp())
            if ttl_seconds > 0
            else None
        )
        # Cheapest first: by the monthly price, else a twelfth of the yearly one.
        self._by_price = sorted(
            self._catalog.plans, key=lambda code: _yearly_price(self._catalog.plans[code])
        )

    async def check(
        self, org_id: UUID, key: str, requested: int = 1, current: int | None = None
    ) -> Entitlement:
        """May `org_id` have `requested` more of `key`? See `BillingApi.check_entitlement`.

        Raises `UnknownEntitlement`, and `InvalidInput` for a negative `requested` or `current`.
        """
        entitlement, _ = await self._check(org_id, key, requested, current)
        return entitlement

    async def require(
        self, org_id: UUID, key: str, requested: int = 1, current: int | None = None
    ) -> Entitlement:
        """`check`, raising `EntitlementExceeded` (a limit) or `FeatureNotInPlan` (a feature), both 402,
        when it is not allowed; their extras say why and where to upgrade."""
        entitlement, state = await self._check(org_id, key, requested, current, count=False)
        if entitlement.allowed:
            return entitlement
        definition = self._catalog.entitlements[key]
        plan = state.effective.plan.name
        upgrades = [self._catalog.plans[code].name for code in entitlement.upgrade_plans]
        error: type[EntitlementExceeded]
        if definition.kind == "feature":
            error = FeatureNotInPlan
            what = f"{key!r} ({definition.description})" if definition.description else repr(key)
            detail = f"The {plan} plan does not include {what}." + _advice(
                upgrades, "includes it", "include it", "No plan includes it."
            )
        else:
            error = EntitlementExceeded
            noun = key.replace("_", " ")
            used = entitlement.used
            has = f"has used {used} this period" if definition.metric else f"has {used}"
            detail = (
                f"The {plan} plan allows {entitlement.limit} {noun}; the organization {has} and asked for "
                f"{entitlement.requested} more."
                + _advice(upgrades, "allows more", "allow more", "No plan allows more.")
            )
        raise error(
            detail,
            key=key,
            limit=entitlement.limit,
            used=entitlement.used,
            requested=entitlement.requested,
            plan=entitlement.plan,
            upgrade_plans=entitlement.upgrade_plans,
            upgrade_url=self._upgrade_url.replace("{org_id}", str(org_id)),
        )

    async def _check(
        self, org_id: UUID, key: str, requested: int, current: int | None, *, count: bool = True
    ) -> tuple[Entitlement, BillingState]:
        """The answer and the state it came from. Without `count`, a metered limit the plan does not
        set is allowed without reading the period's usage (`used` null, no `upgrade_plans`)."""
        definition = self._definition(key)
        if requested < 0 or (current is not None and current < 0):
            raise InvalidInput(
                "requested and current must be 0 or more.", requested=requested, current=current
            )
        state = await self._cached_state(org_id)
        effective = state.effective.code
        if definition.kind == "feature":
            entitlement = Entitlement(
                key=key,
                allowed=self._feature(state.effective, key),
                limit=None,
                used=None,
                requested=requested,
                plan=effective,
                upgrade_plans=self._upgrades(effective, lambda plan: plan.features[key]),
            )
            return entitlement, state
        limit = self._limit(state.effective, key)
        if definition.metric is not None:
            if limit is None and not count:
                unlimited = Entitlement(
                    key=key,
                    allowed=True,
                    limit=None,
                    used=None,
                    requested=requested,
                    plan=effective,
                    upgrade_plans=[],
                )
                return unlimited, state
            used = await self._usage.value(org_id, definition.metric, state.period_start, state.period_end)
        else:
            used = current or 0
        entitlement = Entitlement(
            key=key,
            allowed=_within(limit, used + requested),
            limit=limit,
            used=used,
            requested=requested,
            plan=effective,
            upgrade_plans=self._upgrades(effective, lambda plan: _within(plan.limits[key], used + requested)),
        )
        return entitlement, state

    async def for_org(self, org_id: UUID) -> list[PlanEntitlement]:
        """Every entitlement of the plan that applies to `org_id`, with this period's metered usage."""
        state = await self._cached_state(org_id)
        metered = {d.metric for d in self._catalog.entitlements.values() if d.metric is not None}
        used = await self._usage.values(org_id, metered, state.period_start, state.period_end)
        return [
            PlanEntitlement(
                key=key,
                kind=d.kind,
                description=d.description,
                limit=self._limit(state.effective, key) if d.kind == "limit" else None,
                used=used[d.metric] if d.metric is not None else None,
                enabled=self._feature(state.effective, key) if d.kind == "feature" else None,
                plan=state.effective.code,
            )
            for key, d in self._catalog.entitlements.items()
        ]

    async def _cached_state(self, org_id: UUID) -> BillingState:
        """The organization's state, from the cache while it is fresh and its period has not ended."""
        if self._cache is not None:
            cached = self._cache.get(org_id)
            if cached is not None and self._clock.now() < cached.period_end:
                return cached
        state = await self._state(org_id)
        if self._cache is not None:
            self._cache[org_id] = state
        return state

    def invalidate(self, org_id: UUID) -> None:
        """Forget the cached plan of `org_id` (its subscription changed in this process)."""
        if self._cache is not None:
            self._cache.pop(org_id, None)

    def _definition(self, key: str) -> EntitlementDefinition:
        definition = self._catalog.entitlements.get(key)
        if definition is None:
            known = list(self._catalog.entitlements)
            raise UnknownEntitlement(
                f"There is no entitlement {key!r}; entitlements: {', '.join(known)}.", key=key, known=known
            )
        return definition

    def _limit(self, definition: PlanDefinition, key: str) -> int | None:
        """The plan's limit. A subscription may be bound to an older version of its plan, which lacks
        an entitlement added to the catalog since: it takes the current version's (none: 0)."""
        if key in definition.plan.limits:
            return definition.plan.limits[key]
        current = self._catalog.plans.get(definition.code)
        return current.limits.get(key, 0) if current is not None else 0

    def _feature(self, definition: PlanDefinition, key: str) -> bool:
        """Whether the plan has the feature (an older version: as `_limit`)."""
        if key in definition.plan.features:
            return definition.plan.features[key]
        current = self._catalog.plans.get(definition.code)
        return current.features.get(key, False) if current is not None else False

    def _upgrades(self, current: str, allows: _Allows) -> list[str]:
        return [code for code in self._by_price if code != current and allows(self._catalog.plans[code])]


def _within(limit: int | None, total: int) -> bool:
    return limit is None or total <= limit


def _yearly_price(plan: Plan) -> int:
    month = plan.prices.get(Interval.MONTH)
    return month * 12 if month is not None else plan.prices.get(Interval.YEAR, 0)


def _advice(upgrades: list[str], one: str, many: str, none: str) -> str:
    """The detail's last sentence: " Pro allows more.", " Pro or Business allow more." or `none`."""
    if not upgrades:
        return f" {none}"
    if len(upgrades) == 1:
        return f" {upgrades[0]} {one}."
    return f" {', '.join(upgrades[:-1])} or {upgrades[-1]} {many}."
