"""Notifications' HTTP surface: the in-app inbox and its stream, preferences, and webhook endpoints."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from splitstone.kernel.app import API_PREFIX
from splitstone.modules.notifications import routes_inbox, routes_webhooks
from splitstone.modules.notifications.api import KindInfo
from splitstone.modules.notifications.catalog import WEBHOOK_TEST_EVENT_TYPE
from splitstone.modules.notifications.service import NotificationsService


class Kinds(BaseModel):
    items: list[KindInfo]


class WebhookEventTypes(BaseModel):
    items: list[str]
    test_event_type: str


def build_router(service: NotificationsService) -> APIRouter:
    router = APIRouter()

    # Before the inbox's routes, whose `/{item_id}/...` paths would otherwise be tried first.
    @router.get(
        f"{API_PREFIX}/notifications/kinds", tags=["notifications"], summary="Every notification kind"
    )
    async def kinds() -> Kinds:
        """What this installation can send: each kind's category, channels and whether it is
        transactional (delivered whatever the preferences)."""
        return Kinds(items=await service.kinds())

    @router.get(
        f"{API_PREFIX}/webhooks/event-types",
        tags=["webhooks"],
        summary="The event types a webhook endpoint may subscribe to",
    )
    async def webhook_event_types() -> WebhookEventTypes:
        return WebhookEventTypes(
            items=await service.webhook_event_types(), test_event_type=WEBHOOK_TEST_EVENT_TYPE
        )

    router.include_router(routes_inbox.router(service))
    router.include_router(routes_webhooks.router(service))
    return router
