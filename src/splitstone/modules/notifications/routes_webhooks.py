"""Routes of an organization's webhook endpoints, their secrets and delivery logs (`webhooks:manage`)."""

# No `from __future__ import annotations`: FastAPI reads the endpoints' annotations at runtime, and the
# principal dependency is a local alias of `router()`.
from datetime import datetime
from typing import Annotated, Any, Generic, TypeAlias, TypeVar
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Response, status
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool, StringConstraints

from splitstone.kernel.app import API_PREFIX, NOT_BLANK
from splitstone.kernel.http.security import bearer_principal
from splitstone.modules.auth.api import Principal
from splitstone.modules.notifications.catalog import WEBHOOK_EVENT_TYPES
from splitstone.modules.notifications.service import NotificationsService
from splitstone.modules.notifications.webhook_domain import Trigger, WebhookDeliveryStatus
from splitstone.modules.notifications.webhook_log import MAX_PAGE
from splitstone.modules.notifications.webhook_targets import MAX_URL_LENGTH

T = TypeVar("T")

_ENDPOINT_ID = "0191f0a4-2222-7b3a-9d2e-5f6a7b8c9d0e"
_DELIVERY_ID = "0191f0a4-3333-7b3a-9d2e-5f6a7b8c9d0e"
_MESSAGE_ID = "msg_0191f0a444447b3a9d2e5f6a7b8c9d0e"
_URL = "https://hooks.example.com/splitstone"
_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # noqa: S105 (an example)

Url = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_URL_LENGTH, pattern=NOT_BLANK),
    AfterValidator(str.strip),
]
Description = Annotated[str, StringConstraints(max_length=500), AfterValidator(str.strip)]
EventTypes = Annotated[
    list[Annotated[str, Field(max_length=100)]],
    Field(
        max_length=100,
        description=f"What to receive; empty means every type. Known: {', '.join(WEBHOOK_EVENT_TYPES)}.",
        examples=[["auth.MemberJoined", "auth.MemberRemoved"]],
        # Documented as an enum; the service still answers an unknown type with its own 422 problem.
        json_schema_extra={"items": {"type": "string", "maxLength": 100, "enum": list(WEBHOOK_EVENT_TYPES)}},
    ),
]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Items(BaseModel, Generic[T]):
    """A list answer: `{"items": [...]}`, so fields can be added later without breaking clients."""

    items: list[T]


# -- endpoints -----------------------------------------------------------------------------------------


class WebhookEndpointCreate(_Request):
    url: Url = Field(
        description="Where to POST events: https (or http), a public address, no credentials.",
        examples=[_URL],
    )
    description: Description = Field(default="", examples=["Our CRM sync"])
    event_types: EventTypes = Field(default_factory=list)
    enabled: StrictBool = True


class WebhookEndpointUpdate(_Request):
    """Only what is given changes. `enabled: true` re-enables a disabled endpoint."""

    url: Url | None = Field(default=None, examples=[_URL])
    description: Description | None = None
    event_types: EventTypes | None = None
    enabled: StrictBool | None = None


class WebhookEndpointResponse(BaseModel):
    """An endpoint; its secret is never part of it (see `.../secret`)."""

    model_config = ConfigDict(from_attributes=True)

    id: UUID = Field(examples=[_ENDPOINT_ID])
    org_id: UUID
    url: str = Field(examples=[_URL])
    description: str = Field(examples=["Our CRM sync"])
    event_types: list[str] = Field(examples=[["auth.MemberJoined"]])
    enabled: bool
    disabled_reason: str | None = Field(examples=["The endpoint answered 410 Gone."])
    disabled_at: datetime | None
    failing_since: datetime | None = Field(description="The first failure since the last success.")
    created_at: datetime
    updated_at: datetime


class CreatedWebhookEndpointResponse(WebhookEndpointResponse):
    secret: str = Field(
        description="Verifies the `webhook-signature` header (Standard Webhooks). Keep it safe.",
        examples=[_SECRET],
    )


class WebhookSecretResponse(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    secret: str = Field(examples=[_SECRET])
    previous_secret_expires_at: datetime | None = Field(
        description="Until then the previous secret signs too, after a rotation; null: it does not."
    )


class QueuedDeliveryResponse(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    message_id: str = Field(examples=[_MESSAGE_ID])
    delivery_id: UUID = Field(examples=[_DELIVERY_ID])


# -- delivery log --------------------------------------------------------------------------------------


class WebhookDeliveryResponse(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: UUID = Field(examples=[_DELIVERY_ID])
    endpoint_id: UUID = Field(examples=[_ENDPOINT_ID])
    message_id: str = Field(description="The `webhook-id` header.", examples=[_MESSAGE_ID])
    event_type: str = Field(examples=["auth.MemberJoined"])
    status: WebhookDeliveryStatus
    attempts: int = Field(description="Attempts made so far.", examples=[3])
    last_status_code: int | None = Field(examples=[200])
    last_attempt_at: datetime | None
    next_attempt_at: datetime | None = Field(description="When the retry schedule tries again.")
    created_at: datetime
    updated_at: datetime


class WebhookAttemptResponse(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    attempt: int = Field(examples=[1])
    trigger: Trigger
    started_at: datetime
    latency_ms: int | None = Field(examples=[182])
    status_code: int | None = Field(description="Null when no answer came.", examples=[503])
    succeeded: bool
    response_excerpt: str | None = Field(description="The start of the answer's body.")
    error: str | None = Field(examples=["No answer within 15 s."])


class WebhookDeliveryDetailResponse(WebhookDeliveryResponse):
    payload: dict[str, Any] = Field(description="The body that is sent: `{type, timestamp, data}`.")
    attempt_log: list[WebhookAttemptResponse] = Field(description="Every attempt, oldest first.")


class WebhookDeliveryPage(BaseModel):
    items: list[WebhookDeliveryResponse]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last.")


def router(service: NotificationsService) -> APIRouter:
    routes = APIRouter(prefix=f"{API_PREFIX}/orgs/{{org_id}}/webhooks", tags=["webhooks"])
    CurrentPrincipal: TypeAlias = Annotated[
        Principal, Depends(bearer_principal(service.auth.resolve_principal))
    ]
    webhooks = service.webhooks
    endpoints = webhooks.endpoints

    @routes.post(
        "",
        status_code=status.HTTP_201_CREATED,
        summary="Create a webhook endpoint; its secret is in this answer",
        description="Unknown event types answer 422 `unknown-webhook-event-type`; a URL that is not "
        "https/http, holds credentials or points into a private network, 422 `invalid-webhook-url`.",
    )
    async def create_endpoint(
        org_id: UUID, body: WebhookEndpointCreate, principal: CurrentPrincipal, response: Response
    ) -> CreatedWebhookEndpointResponse:
        created = await endpoints.create(
            principal,
            org_id,
            url=body.url,
            description=body.description,
            event_types=body.event_types,
            enabled=body.enabled,
        )
        response.headers["Location"] = f"{API_PREFIX}/orgs/{org_id}/webhooks/{created.id}"
        response.headers["Cache-Control"] = "no-store"
        return CreatedWebhookEndpointResponse.model_validate(created)

    @routes.get("", summary="The organization's webhook endpoints, newest first")
    async def list_endpoints(org_id: UUID, principal: CurrentPrincipal) -> Items[WebhookEndpointResponse]:
        found = await endpoints.list_endpoints(principal, org_id)
        return Items(items=[WebhookEndpointResponse.model_validate(e) for e in found])

    @routes.get("/{endpoint_id}", summary="One webhook endpoint")
    async def get_endpoint(
        org_id: UUID, endpoint_id: UUID, principal: CurrentPrincipal
    ) -> WebhookEndpointResponse:
        return WebhookEndpointResponse.model_validate(await endpoints.get(principal, org_id, endpoint_id))

    @routes.patch("/{endpoint_id}", summary="Change, disable or re-enable a webhook endpoint")
    async def update_endpoint(
        org_id: UUID, endpoint_id: UUID, body: WebhookEndpointUpdate, principal: CurrentPrincipal
    ) -> WebhookEndpointResponse:
        updated = await endpoints.update(
            principal,
            org_id,
            endpoint_id,
            url=body.url,
            description=body.description,
            event_types=body.event_types,
            enabled=body.enabled,
        )
        return WebhookEndpointResponse.model_validate(updated)

    @routes.delete(
        "/{endpoint_id}",
        status_code=status.HTTP_204_NO_CONTENT,
        summary="Delete a webhook endpoint, with its delivery log",
    )
    async def delete_endpoint(org_id: UUID, endpoint_id: UUID, principal: CurrentPrincipal) -> None:
        await endpoints.delete(principal, org_id, endpoint_id)

    @routes.get("/{endpoint_id}/secret", summary="The endpoint's signing secret")
    async def get_secret(
        org_id: UUID, endpoint_id: UUID, principal: CurrentPrincipal, response: Response
    ) -> WebhookSecretResponse:
        response.headers["Cache-Control"] = "no-store"
        return WebhookSecretResponse.model_validate(await endpoints.secret(principal, org_id, endpoint_id))

    @routes.post(
        "/{endpoint_id}/rotate-secret",
        summary="Replace the signing secret",
        description="The previous secret keeps signing next to the new one for a while "
        "(`previous_secret_expires_at`), so receivers can switch without missing a message.",
    )
    async def rotate_secret(
        org_id: UUID, endpoint_id: UUID, principal: CurrentPrincipal, response: Response
    ) -> WebhookSecretResponse:
        response.headers["Cache-Control"] = "no-store"
        rotated = await endpoints.rotate_secret(principal, org_id, endpoint_id)
        return WebhookSecretResponse.model_validate(rotated)

    @routes.post(
        "/{endpoint_id}/test",
        status_code=status.HTTP_202_ACCEPTED,
        summary="Send a `webhook.test` event to this endpoint (one attempt; see its delivery log)",
        description="Whatever the endpoint's event types; 409 while it is disabled.",
    )
    async def send_test(
        org_id: UUID, endpoint_id: UUID, principal: CurrentPrincipal
    ) -> QueuedDeliveryResponse:
        queued = await webhooks.send_test(principal, org_id, endpoint_id)
        return QueuedDeliveryResponse.model_validate(queued)

    @routes.get("/{endpoint_id}/deliveries", summary="The endpoint's deliveries, newest first")
    async def list_deliveries(
        org_id: UUID,
        endpoint_id: UUID,
        principal: CurrentPrincipal,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
        cursor: Annotated[str | None, Query(max_length=100, description="`next_cursor` of a page.")] = None,
        status_filter: Annotated[
            WebhookDeliveryStatus | None, Query(alias="status", description="Only deliveries in this state.")
        ] = None,
    ) -> WebhookDeliveryPage:
        page = await webhooks.deliveries.page(
            principal, org_id, endpoint_id, limit=limit, cursor=cursor, status=status_filter
        )
        return WebhookDeliveryPage(
            items=[WebhookDeliveryResponse.model_validate(d) for d in page.items],
            next_cursor=page.next_cursor,
        )

    @routes.get("/{endpoint_id}/deliveries/{delivery_id}", summary="One delivery, with every attempt")
    async def get_delivery(
        org_id: UUID, endpoint_id: UUID, delivery_id: UUID, principal: CurrentPrincipal
    ) -> WebhookDeliveryDetailResponse:
        detail = await webhooks.deliveries.get(principal, org_id, endpoint_id, delivery_id)
        return WebhookDeliveryDetailResponse.model_validate(detail)

    @routes.post(
        "/{endpoint_id}/deliveries/{delivery_id}/redeliver",
        status_code=status.HTTP_202_ACCEPTED,
        summary="Deliver a message again now (one attempt), whatever happened to it before",
        description="409 `webhook-endpoint-disabled` while the endpoint is disabled: re-enable it first.",
    )
    async def redeliver(
        org_id: UUID, endpoint_id: UUID, delivery_id: UUID, principal: CurrentPrincipal
    ) -> QueuedDeliveryResponse:
        queued = await webhooks.redeliver(principal, org_id, endpoint_id, delivery_id)
        return QueuedDeliveryResponse.model_validate(queued)

    return routes
