"""The `tasks_per_month` check billing makes before a task is created: the plan (cached), then usage."""

from __future__ import annotations

import json
import time
import tomllib
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any
from uuid import UUID

from asyncpg import Connection

from bench.baseline import sql
from bench.baseline.problems import Problem

KEY = "tasks_per_month"
METRIC = "tasks"
LIVE = frozenset({"trialing", "active", "past_due"})  # subscriptions whose plan applies
MAX_CACHED = 10_000


@dataclass(frozen=True)
class PlanState:
    """The plan that applies to an organization now, and the period its usage counts in."""

    code: str
    name: str
    limit: int | None  # None: unlimited
    period_start: datetime
    period_end: datetime


@dataclass(frozen=True)
class CatalogPlan:
    name: str
    yearly_price: int
    limits: dict[str, int | None]


class TaskEntitlement:
    """Billing's `require_entitlement(org, "tasks_per_month", 1)`, with its plan cache (same TTL)."""

    def __init__(self, *, catalog_path: Path | None, cache_seconds: float, upgrade_url: str) -> None:
        if catalog_path is None:
            text = resources.files("splitstone.modules.billing").joinpath("catalog.toml").read_text()
        else:
            text = catalog_path.read_text()
        catalog = tomllib.loads(text)
        self._default = catalog["default_plan"]
        self._plans = {code: _catalog_plan(plan) for code, plan in catalog["plans"].items()}
        self._by_price = sorted(self._plans, key=lambda code: self._plans[code].yearly_price)
        self._ttl = cache_seconds
        self._upgrade_url = upgrade_url
        self._cache: dict[UUID, tuple[float, PlanState]] = {}

    async def require(self, conn: Connection, org_id: UUID, requested: int = 1) -> None:
        """Nothing when the plan allows `requested` more tasks this period; 402 otherwise."""
        state = await self._state(conn, org_id)
        if state.limit is None:
            return
        used = int(await conn.fetchval(sql.USAGE_COUNT, org_id, METRIC, state.period_start, state.period_end))
        if used + requested <= state.limit:
            return
        upgrades = [
            code
            for code in self._by_price
            if code != state.code and _within(self._plans[code].limits.get(KEY), used + requested)
        ]
        names = [self._plans[code].name for code in upgrades]
        raise Problem(
            402,
            "entitlement-exceeded",
            "The plan's limit is reached",
            f"The {state.name} plan allows {state.limit} tasks per month; the organization has used {used} "
            f"this period and asked for {requested} more." + _advice(names),
            key=KEY,
            limit=state.limit,
            used=used,
            requested=requested,
            plan=state.code,
            upgrade_plans=upgrades,
            upgrade_url=self._upgrade_url.replace("{org_id}", str(org_id)),
        )

    async def _state(self, conn: Connection, org_id: UUID) -> PlanState:
        cached = self._cache.get(org_id)
        if cached is not None and time.monotonic() < cached[0] and datetime.now(UTC) < cached[1].period_end:
            return cached[1]
        state = await self._read_state(conn, org_id)
        if self._ttl > 0:
            if len(self._cache) >= MAX_CACHED:
                self._cache.clear()
            self._cache[org_id] = (time.monotonic() + self._ttl, state)
        return state

    async def _read_state(self, conn: Connection, org_id: UUID) -> PlanState:
        row = await conn.fetchrow(sql.BILLING_STATE, org_id)
        if row is None:  # no subscription yet: the default plan, over the calendar month
            now = datetime.now(UTC)
            start = datetime(now.year, now.month, 1, tzinfo=UTC)
            end = datetime(now.year + now.month // 12, now.month % 12 + 1, 1, tzinfo=UTC)
            return self._default_state(start, end)
        if row["status"] not in LIVE:
            return self._default_state(row["current_period_start"], row["current_period_end"])
        plan = json.loads(row["definition"])["plan"]
        limits = plan["limits"]
        code = row["code"]
        # A subscription bound to an older version of its plan takes the current version's limit.
        current = self._plans.get(code)
        limit = limits[KEY] if KEY in limits else (current.limits.get(KEY, 0) if current else 0)
        return PlanState(code, plan["name"], limit, row["current_period_start"], row["current_period_end"])

    def _default_state(self, start: datetime, end: datetime) -> PlanState:
        plan = self._plans[self._default]
        return PlanState(self._default, plan.name, plan.limits.get(KEY, 0), start, end)


def _catalog_plan(plan: dict[str, Any]) -> CatalogPlan:
    prices, limits = plan["prices"], plan.get("limits", {})
    yearly = prices["month"] * 12 if "month" in prices else prices.get("year", 0)
    return CatalogPlan(
        name=str(plan["name"]),
        yearly_price=int(yearly),
        limits={k: None if v == "unlimited" else int(v) for k, v in limits.items()},
    )


def _within(limit: int | None, total: int) -> bool:
    return limit is None or total <= limit


def _advice(upgrades: list[str]) -> str:
    if not upgrades:
        return " No plan allows more."
    if len(upgrades) == 1:
        return f" {upgrades[0]} allows more."
    return f" {', '.join(upgrades[:-1])} or {upgrades[-1]} allow more."
