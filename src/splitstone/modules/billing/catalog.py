"""The catalog: billable metrics, entitlements and plans, read from a TOML file and validated.

A plan's definition (its prices, trial, limits, features and metered components, with the metrics
they price) is what a subscription is bound to: `PlanDefinition.fingerprint` tells whether a
definition changed, and `plans.py` stores each new one as the plan's next version.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from splitstone.modules.billing.api import Interval

_CODE = r"^[a-z][a-z0-9_]{0,39}$"
Code = Annotated[str, Field(pattern=_CODE)]
Amount = Annotated[int, Field(ge=0, le=10**12)]


class CatalogError(Exception):
    """The catalog file is missing or invalid; the message names the place."""


class Aggregation(StrEnum):
    """How a period's usage events of a metric become one quantity (as in Lago)."""

    COUNT = "count"  # the number of events
    SUM = "sum"  # the sum of their quantities
    MAX = "max"  # the largest quantity
    UNIQUE_COUNT = "unique_count"  # the number of distinct `unique_value`s
    LATEST = "latest"  # the quantity of the last event (by occurred_at)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Metric(_Strict):
    name: str
    aggregation: Aggregation
    unit: str = "unit"


class EntitlementDefinition(_Strict):
    kind: Literal["limit", "feature"]
    description: str = ""
    metric: Code | None = Field(
        default=None, description="For a limit billing meters: the metric whose period usage counts."
    )

    @model_validator(mode="after")
    def _metric_only_for_limits(self) -> EntitlementDefinition:
        if self.metric is not None and self.kind != "limit":
            raise ValueError("only a limit can be metered")
        return self


def round_half_up(numerator: int, denominator: int) -> int:
    """numerator / denominator to the nearest integer, halves away from zero (for non-negative values)."""
    return (2 * numerator + denominator) // (2 * denominator)


class Tier(_Strict):
    up_to: int | None = Field(description='The last unit of this tier; null ("inf" in TOML): no end.')
    unit_amount: Amount
    flat_amount: Amount = 0

    @field_validator("up_to", mode="before")
    @classmethod
    def _infinite(cls, value: object) -> object:
        return None if value == "inf" else value


class MeteredPrice(_Strict):
    """How a metric's usage over the included quantity is priced, per `per_units` units.

    `unit`: every billable unit at `unit_amount`. `graduated`: each unit at the price of the tier it
    falls in (Stripe's graduated tiers, over the billable units). Amounts are pro rata and rounded half
    up to the minor unit, per tier.
    """

    metric: Code
    included: int = Field(default=0, ge=0)
    model: Literal["unit", "graduated"]
    unit_amount: Amount | None = None
    per_units: int = Field(default=1, ge=1)
    tiers: tuple[Tier, ...] = ()

    @model_validator(mode="after")
    def _priced(self) -> MeteredPrice:
        if self.model == "unit":
            if self.unit_amount is None or self.tiers:
                raise ValueError("a unit price has unit_amount and no tiers")
            return self
        if self.unit_amount is not None or not self.tiers:
            raise ValueError("a graduated price has tiers and no unit_amount")
        bounds = [t.up_to for t in self.tiers]
        if bounds[-1] is not None or any(b is None for b in bounds[:-1]):
            raise ValueError('only the last tier is open-ended (up_to = "inf"), and it must be')
        finite = [b for b in bounds if b is not None]
        if any(b <= a for a, b in zip([0, *finite], finite, strict=False)):
            raise ValueError("tiers' up_to must increase")
        return self

    def billable(self, quantity: int) -> int:
        return max(0, quantity - self.included)

    def amount(self, quantity: int) -> int:
        """The price of a period's aggregated `quantity`, in minor units."""
        billable = self.billable(quantity)
        if self.model == "unit":
            assert self.unit_amount is not None
            return round_half_up(billable * self.unit_amount, self.per_units)
        total, below = 0, 0
        for tier in self.tiers:
            top = billable if tier.up_to is None else min(billable, tier.up_to)
            units = top - below
            if units <= 0:
                break
            total += tier.flat_amount + round_half_up(units * tier.unit_amount, self.per_units)
            below = top
        return total


Limit = int | None
"""A plan's limit: a number, or None for unlimited ("unlimited" in TOML)."""


class Plan(_Strict):
    name: str
    description: str = ""
    prices: dict[Interval, Amount] = Field(min_length=1)
    trial_days: int = Field(default=0, ge=0, le=365)
    limits: dict[Code, Limit] = Field(default_factory=dict)
    features: dict[Code, bool] = Field(default_factory=dict)
    metered: tuple[MeteredPrice, ...] = ()

    @field_validator("limits", mode="before")
    @classmethod
    def _unlimited(cls, value: object) -> object:
        if isinstance(value, dict):
            return {k: None if v == "unlimited" else v for k, v in value.items()}
        return value

    @field_validator("limits")
    @classmethod
    def _non_negative(cls, value: dict[str, Limit]) -> dict[str, Limit]:
        for key, limit in value.items():
            if limit is not None and limit < 0:
                raise ValueError(f'limit {key!r} must be 0 or more, or "unlimited"')
        return value


class PlanDefinition(_Strict):
    """One plan as a subscription is bound to it: the plan and the metrics its prices use."""

    code: Code
    plan: Plan
    metrics: dict[Code, Metric]
    currency: str

    @property
    def fingerprint(self) -> str:
        """Changes exactly when the definition does (a canonical JSON's SHA-256)."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    def price(self, interval: Interval) -> int:
        return self.plan.prices[interval]

    @property
    def is_free(self) -> bool:
        return all(p == 0 for p in self.plan.prices.values()) and not self.plan.metered


class Catalog(_Strict):
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    default_plan: Code
    metrics: dict[Code, Metric] = Field(default_factory=dict)
    entitlements: dict[Code, EntitlementDefinition] = Field(default_factory=dict)
    plans: dict[Code, Plan] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> Catalog:
        problems: list[str] = []
        for key, definition in self.entitlements.items():
            if definition.metric is not None and definition.metric not in self.metrics:
                problems.append(f"entitlement {key!r} meters unknown metric {definition.metric!r}")
        limits = {k for k, d in self.entitlements.items() if d.kind == "limit"}
        features = {k for k, d in self.entitlements.items() if d.kind == "feature"}
        for code, plan in self.plans.items():
            if set(plan.limits) != limits:
                problems.append(_mismatch(f"plan {code!r} limits", set(plan.limits), limits))
            if set(plan.features) != features:
                problems.append(_mismatch(f"plan {code!r} features", set(plan.features), features))
            seen: set[str] = set()
            for price in plan.metered:
                if price.metric not in self.metrics:
                    problems.append(f"plan {code!r} prices unknown metric {price.metric!r}")
                if price.metric in seen:
                    problems.append(f"plan {code!r} prices metric {price.metric!r} twice")
                seen.add(price.metric)
        default = self.plans.get(self.default_plan)
        if default is None:
            problems.append(f"default_plan {self.default_plan!r} is not a plan")
        elif any(p != 0 for p in default.prices.values()) or default.trial_days or default.metered:
            problems.append(f"default_plan {self.default_plan!r} must be free: no price, trial or metering")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def definition(self, code: str) -> PlanDefinition:
        plan = self.plans[code]
        used = {p.metric: self.metrics[p.metric] for p in plan.metered}
        return PlanDefinition(code=code, plan=plan, metrics=used, currency=self.currency)

    def definitions(self) -> list[PlanDefinition]:
        return [self.definition(code) for code in self.plans]


def _mismatch(what: str, have: set[str], want: set[str]) -> str:
    parts = []
    if want - have:
        parts.append(f"missing {sorted(want - have)}")
    if have - want:
        parts.append(f"unknown {sorted(have - want)}")
    return f"{what}: {', '.join(parts)}"


def parse_catalog(text: str, source: str = "catalog") -> Catalog:
    try:
        return Catalog.model_validate(tomllib.loads(text))
    except tomllib.TOMLDecodeError as error:
        raise CatalogError(f"{source}: not valid TOML: {error}") from None
    except ValidationError as error:
        lines = [f"{'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}" for e in error.errors()]
        raise CatalogError(f"{source}: invalid catalog:\n  " + "\n  ".join(lines)) from None


def load_catalog(path: Path | None = None) -> Catalog:
    """The catalog at `path`, or the one shipped with splitstone."""
    if path is None:
        text = resources.files(__package__).joinpath("catalog.toml").read_text(encoding="utf-8")
        return parse_catalog(text, "the shipped catalog.toml")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise CatalogError(f"cannot read the billing catalog {path}: {error.strerror}") from None
    return parse_catalog(text, str(path))
