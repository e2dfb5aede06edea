"""Routes of usage metering and entitlements: report usage, read this period's usage and what the plan
allows."""

# No `from __future__ import annotations`: FastAPI reads the endpoints' annotations at runtime, and the
# principal dependency is a local alias of `router()`.
import re
from typing import Annotated, Any, TypeAlias
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Response, status
from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field

from splitstone.kernel.app import API_PREFIX
from splitstone.kernel.errors import InvalidInput
from splitstone.kernel.http.security import bearer_principal
from splitstone.modules.auth.api import Permission, Principal
from splitstone.modules.billing.api import UsageRecord
from splitstone.modules.billing.entitlements import PlanEntitlement
from splitstone.modules.billing.service import BillingService
from splitstone.modules.billing.usage import (
    MAX_KEY_LENGTH,
    MAX_QUANTITY,
    MAX_UNIQUE_VALUE_LENGTH,
    UsageEvent,
    UsageSummary,
)

MAX_BATCH = 100

_EVENT_EXAMPLE: dict[str, Any] = {
    "metric": "api_calls",
    "quantity": 250,
    "idempotency_key": "req_7Hq2x9-2030-01-15T10:00",
    "occurred_at": "2030-01-15T10:00:00Z",
}


def _text_only(value: object) -> object:
    """RFC 3339 text, as the schema's `format: date-time` says (pydantic also reads `0` as 1970)."""
    if isinstance(value, int | float) or (isinstance(value, str) and not _RFC3339_START.match(value)):
        raise ValueError("a time is RFC 3339 text, such as 2030-01-15T10:00:00Z")
    return value


_RFC3339_START = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ]")

Timestamp = Annotated[AwareDatetime, BeforeValidator(_text_only)]


class UsageEventRequest(BaseModel):
    """One usage event of a billable metric."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [_EVENT_EXAMPLE]})

    metric: str = Field(max_length=100, description="A metric of the catalog.", examples=["api_calls"])
    quantity: int = Field(
        default=1,
        ge=0,
        le=MAX_QUANTITY,
        description="How much was used (summed, maxed or taken as latest, by the metric's aggregation; "
        "a `count` metric counts events whatever their quantity).",
        examples=[250],
    )
    idempotency_key: str = Field(
        min_length=1,
        max_length=MAX_KEY_LENGTH,
        description="Your unique id of this event in the organization: an event whose key was recorded "
        "before is not counted again (the first one wins).",
        examples=["req_7Hq2x9-2030-01-15T10:00"],
    )
    occurred_at: Timestamp | None = Field(
        default=None,
        description="When the usage happened (default: now); at most 5 minutes ahead, and not in a "
        "period that is already invoiced.",
        examples=["2030-01-15T10:00:00Z"],
    )
    unique_value: str | None = Field(
        default=None,
        max_length=MAX_UNIQUE_VALUE_LENGTH,
        description="What a `unique_count` metric counts distinct values of (required for those), such "
        "as a user id.",
        examples=["user_42"],
    )

    def to_event(self) -> UsageEvent:
        return UsageEvent(
            self.metric, self.quantity, self.idempotency_key, self.occurred_at, self.unique_value
        )


class UsageBatchRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "events": [
                        _EVENT_EXAMPLE,
                        {
                            "metric": "active_users",
                            "idempotency_key": "seen-user_42-0115",
                            "unique_value": "user_42",
                        },
                    ]
                }
            ]
        },
    )

    events: list[UsageEventRequest] = Field(
        min_length=1, max_length=MAX_BATCH, description=f"1 to {MAX_BATCH} events, each with its own key."
    )


class UsageRecords(BaseModel):
    items: list[UsageRecord] = Field(description="One record per event, in the order sent.")


class PlanEntitlements(BaseModel):
    items: list[PlanEntitlement]


_DUPLICATE: dict[int | str, dict[str, Any]] = {
    200: {
        "model": UsageRecord,
        "description": "The key was recorded before: the first record, `duplicate: true`.",
    }
}


def router(service: BillingService) -> APIRouter:
    routes = APIRouter(
        prefix=f"{API_PREFIX}/orgs/{{org_id}}/billing",
        tags=["billing"],
        route_class=service.idempotency.route_class,
    )
    CurrentPrincipal: TypeAlias = Annotated[
        Principal, Depends(bearer_principal(service.auth.resolve_principal))
    ]
    auth = service.auth
    usage = service.usage

    @routes.post(
        "/usage",
        status_code=status.HTTP_201_CREATED,
        responses=_DUPLICATE,
        summary="Record a usage event",
        description="Counts toward this period's usage of a metric (and so toward metered limits and "
        "usage-based prices). Idempotent by `idempotency_key`: a repeat answers 200 with the first record "
        "and `duplicate: true`. Needs `usage:write` (an API key's scope, or an admin or owner). 422 "
        "`unknown-metric`, `invalid-usage`, or `usage-period-closed` for usage of an invoiced period.",
    )
    async def record_usage(
        org_id: UUID, body: UsageEventRequest, principal: CurrentPrincipal, response: Response
    ) -> UsageRecord:
        await auth.authorize(principal, org_id, Permission.USAGE_WRITE)
        record = await usage.record(
            org_id, body.metric, body.quantity, body.idempotency_key, body.occurred_at, body.unique_value
        )
        if record.duplicate:
            response.status_code = status.HTTP_200_OK
        return record

    @routes.post(
        "/usage/batch",
        summary=f"Record up to {MAX_BATCH} usage events at once",
        description="All or none: an invalid event refuses the batch (its problem names the event's "
        "`index`). Each event is idempotent by its own key, as for a single event; `items` answers each "
        "in order, repeats with `duplicate: true`. Needs `usage:write`.",
    )
    async def record_usage_batch(
        org_id: UUID, body: UsageBatchRequest, principal: CurrentPrincipal
    ) -> UsageRecords:
        await auth.authorize(principal, org_id, Permission.USAGE_WRITE)
        records = await usage.record_many(org_id, [e.to_event() for e in body.events])
        return UsageRecords(items=records)

    @routes.get(
        "/usage",
        summary="Usage of every metric in the current period, with its price so far",
        description="For the current billing period: each metric's value, what the subscribed plan "
        "includes and charges for it, and the limit it meters. With `from` and `to` (both; at most 366 "
        "days apart): the values in that range only, without prices. Needs `billing:read`.",
    )
    async def usage_summary(
        org_id: UUID,
        principal: CurrentPrincipal,
        start: Annotated[
            AwareDatetime | None,
            Query(
                alias="from", description="Start of a range (included).", examples=["2030-01-01T00:00:00Z"]
            ),
        ] = None,
        end: Annotated[
            AwareDatetime | None,
            Query(alias="to", description="End of a range (excluded).", examples=["2030-02-01T00:00:00Z"]),
        ] = None,
    ) -> UsageSummary:
        await auth.authorize(principal, org_id, Permission.BILLING_READ)
        if start is None and end is None:
            return await usage.summary(org_id)
        if start is None or end is None:
            raise InvalidInput("Give both from and to, or neither (the current period).")
        return await usage.summary_between(org_id, start, end)

    @routes.get(
        "/entitlements",
        summary="What the organization's plan allows",
        description="Every entitlement of the plan that applies now (the free plan when a subscription "
        "is not live): limits, with this period's usage for those billing meters, and features. Needs "
        "`billing:read`.",
    )
    async def entitlements(org_id: UUID, principal: CurrentPrincipal) -> PlanEntitlements:
        await auth.authorize(principal, org_id, Permission.BILLING_READ)
        return PlanEntitlements(items=await service.entitlements.for_org(org_id))

    return routes
