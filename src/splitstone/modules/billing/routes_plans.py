"""Routes of the public catalog: the plans with their prices, limits and features, like a pricing page.

No sign-in: anyone may read them. Answers are cacheable (`Cache-Control: public, max-age=300`) and
carry an `ETag`, so a client that sends it back in `If-None-Match` gets an empty 304 until the catalog
changes.
"""

# No `from __future__ import annotations`: FastAPI reads the endpoints' annotations at runtime.
import hashlib
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from pydantic.config import JsonDict

from splitstone.kernel.app import API_PREFIX
from splitstone.kernel.errors import NotFound
from splitstone.modules.billing.api import Interval, UnknownPlan
from splitstone.modules.billing.catalog import Aggregation, Catalog
from splitstone.modules.billing.plans import PlanVersion
from splitstone.modules.billing.service import BillingService

CACHE_CONTROL = "public, max-age=300"


class PlanNotFound(NotFound):
    """A plan asked for by its code in a path: 404, where `UnknownPlan` (a bad request body) is 422."""

    code = "plan-not-found"
    title = "No such plan"


# -- response models ------------------------------------------------------------------------------------


class PlanPrice(BaseModel):
    interval: Interval = Field(examples=["month"])
    amount: int = Field(description="In minor units of the currency (1900 = 19.00).", examples=[1900])


class PriceTier(BaseModel):
    up_to: int | None = Field(
        description="The last billable unit this tier prices; null: no end (always the last tier).",
        examples=[1000000],
    )
    unit_amount: int = Field(description="Per `per_units` units, in minor units.", examples=[40])
    flat_amount: int = Field(description="Added once when usage reaches this tier.", examples=[0])


class MeteredComponent(BaseModel):
    """Usage of a metric over the included quantity, billed at the end of each period."""

    metric: str = Field(examples=["api_calls"])
    name: str = Field(description="The metric's name.", examples=["API calls"])
    unit: str = Field(description="What one unit of the metric is.", examples=["call"])
    aggregation: Aggregation = Field(
        description="How a period's usage events become one quantity: count, sum, max, unique_count or "
        "latest.",
        examples=["sum"],
    )
    included: int = Field(description="Units included in the plan's price each period.", examples=[100000])
    model: Literal["unit", "graduated"] = Field(
        description="`unit`: every billable unit at `unit_amount`; `graduated`: each unit at the price of "
        "the tier it falls in."
    )
    unit_amount: int | None = Field(
        description="With `unit`: the price of `per_units` units, in minor units; null with `graduated`.",
        examples=[50],
    )
    per_units: int = Field(description="How many units `unit_amount` prices.", examples=[1000])
    tiers: list[PriceTier] = Field(description="With `graduated`: the tiers, in order; empty with `unit`.")


_PRO_EXAMPLE: JsonDict = {
    "code": "pro",
    "name": "Pro",
    "description": "For growing teams.",
    "version": 1,
    "currency": "USD",
    "prices": [{"interval": "month", "amount": 1900}, {"interval": "year", "amount": 19000}],
    "trial_days": 14,
    "limits": {"projects": 50, "members": 50, "tasks_per_month": 10000},
    "features": {"webhooks": True, "audit_log": False},
    "metered": [
        {
            "metric": "api_calls",
            "name": "API calls",
            "unit": "call",
            "aggregation": "sum",
            "included": 100000,
            "model": "unit",
            "unit_amount": 50,
            "per_units": 1000,
            "tiers": [],
        }
    ],
}


class PlanResponse(BaseModel):
    """A plan as the catalog defines it now."""

    model_config = ConfigDict(json_schema_extra={"examples": [_PRO_EXAMPLE]})

    code: str = Field(examples=["pro"])
    name: str = Field(examples=["Pro"])
    description: str = Field(examples=["For growing teams."])
    version: int = Field(
        description="The plan's current version: it grows each time its definition changes.", examples=[1]
    )
    currency: str = Field(description="ISO 4217, for every amount of the plan.", examples=["USD"])
    prices: list[PlanPrice] = Field(description="The price per billing interval, in advance.")
    trial_days: int = Field(description="Days of free trial on a first subscription.", examples=[14])
    limits: dict[str, int | None] = Field(
        description="Each limit entitlement's value; null means unlimited.",
        examples=[{"projects": 50, "members": 50, "tasks_per_month": 10000}],
    )
    features: dict[str, bool] = Field(
        description="Each feature entitlement: included or not.",
        examples=[{"webhooks": True, "audit_log": False}],
    )
    metered: list[MeteredComponent] = Field(description="Usage billed on top of the price.")


class PlanVersionSummary(BaseModel):
    version: int = Field(examples=[1])
    created_at: datetime = Field(description="When this definition was first stored.")
    current: bool = Field(description="Whether this is the version the catalog defines now.")


class PlanDetailResponse(PlanResponse):
    versions: list[PlanVersionSummary] | None = Field(
        default=None,
        description="Only with `?versions=true`: every stored version of the plan, oldest first "
        "(subscriptions stay on the version they signed up to).",
    )


class EntitlementDescription(BaseModel):
    key: str = Field(examples=["tasks_per_month"])
    kind: Literal["limit", "feature"] = Field(description="A number (or unlimited), or a yes/no feature.")
    description: str = Field(examples=["Tasks created per billing period"])
    metric: str | None = Field(
        description="For a limit billing meters: the metric whose usage in the period counts against it.",
        examples=["tasks"],
    )


class PlansResponse(BaseModel):
    default_plan: str = Field(
        description="Where new organizations start, and where unpaid or ended subscriptions fall back.",
        examples=["free"],
    )
    currency: str = Field(examples=["USD"])
    entitlements: list[EntitlementDescription] = Field(
        description="What the plans' limits and features mean."
    )
    items: list[PlanResponse] = Field(description="Every plan, in the catalog's order.")


# -- routes ------------------------------------------------------------------------------------------------


def router(service: BillingService) -> APIRouter:
    routes = APIRouter(prefix=f"{API_PREFIX}/billing/plans", tags=["billing"])
    plans = service.plans
    catalog = service.catalog
    cached: dict[int | str, dict[str, Any]] = {
        304: {"description": "Not modified: the `If-None-Match` ETag is still current."}
    }

    @routes.get(
        "",
        summary="Every plan with its prices, limits and features (public)",
        response_model=PlansResponse,
        responses=cached,
    )
    async def list_plans(request: Request) -> Response:
        """The catalog as a pricing page shows it; no sign-in needed. Amounts are in minor units."""
        body = PlansResponse(
            default_plan=catalog.default_plan,
            currency=catalog.currency,
            entitlements=_entitlements(catalog),
            items=[_plan(v) for v in await plans.all_current()],
        )
        return _cacheable(request, body)

    @routes.get(
        "/{code}",
        summary="One plan (public)",
        response_model=PlanDetailResponse,
        responses={**cached, 404: {"description": "No such plan (`plan-not-found`)."}},
    )
    async def get_plan(
        code: Annotated[str, Path(max_length=100)],
        request: Request,
        versions: Annotated[
            bool, Query(description="Add every stored version of the plan, with when it was stored.")
        ] = False,
    ) -> Response:
        """A plan of the current catalog, in the list's shape. A code that is not one answers 404
        `plan-not-found`."""
        try:
            current = await plans.current(code)
        except UnknownPlan as error:
            raise PlanNotFound(error.detail, plan=code) from None
        history = None
        if versions:
            history = [
                PlanVersionSummary(version=v.version, created_at=v.created_at, current=v.id == current.id)
                for v in await plans.versions(code)
            ]
        return _cacheable(request, PlanDetailResponse(**_plan(current).model_dump(), versions=history))

    return routes


def _entitlements(catalog: Catalog) -> list[EntitlementDescription]:
    return [
        EntitlementDescription(key=key, kind=e.kind, description=e.description, metric=e.metric)
        for key, e in catalog.entitlements.items()
    ]


def _plan(version: PlanVersion) -> PlanResponse:
    definition = version.definition
    plan = definition.plan
    return PlanResponse(
        code=version.code,
        name=plan.name,
        description=plan.description,
        version=version.version,
        currency=definition.currency,
        prices=[PlanPrice(interval=interval, amount=amount) for interval, amount in plan.prices.items()],
        trial_days=plan.trial_days,
        limits=dict(plan.limits),
        features=dict(plan.features),
        metered=[
            MeteredComponent(
                metric=m.metric,
                name=definition.metrics[m.metric].name,
                unit=definition.metrics[m.metric].unit,
                aggregation=definition.metrics[m.metric].aggregation,
                included=m.included,
                model=m.model,
                unit_amount=m.unit_amount,
                per_units=m.per_units,
                tiers=[
                    PriceTier(up_to=t.up_to, unit_amount=t.unit_amount, flat_amount=t.flat_amount)
                    for t in m.tiers
                ],
            )
            for m in plan.metered
        ],
    )


def _cacheable(request: Request, body: BaseModel) -> Response:
    """The body as JSON with `Cache-Control` and a strong ETag, or an empty 304 when the client has it."""
    content = body.model_dump_json().encode()
    etag = f'"{hashlib.sha256(content).hexdigest()[:32]}"'
    headers = {"Cache-Control": CACHE_CONTROL, "ETag": etag}
    if _not_modified(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers=headers)
    return Response(content, media_type="application/json", headers=headers)


def _not_modified(header: str | None, etag: str) -> bool:
    """Whether `If-None-Match` (RFC 9110 §13.1.2) names our tag: `*`, or any tag equal to it compared weakly
    (a `W/` prefix is ignored)."""
    if header is None:
        return False
    if header.strip() == "*":
        return True
    return any(tag.strip().removeprefix("W/") == etag for tag in header.split(","))
