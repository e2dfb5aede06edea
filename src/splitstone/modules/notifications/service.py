"""`NotificationsService`: notifications' implementation of its contract, composed of its parts."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from splitstone.modules.auth.api import AuthApi
from splitstone.modules.notifications.api import KindInfo, NotifyResult, Recipient, WebhookMessage
from splitstone.modules.notifications.catalog import KINDS, WEBHOOK_EVENT_TYPES
from splitstone.modules.notifications.delivery_log import DeliveryLog
from splitstone.modules.notifications.dispatch import Dispatcher
from splitstone.modules.notifications.feed import Feed
from splitstone.modules.notifications.preferences import Preferences
from splitstone.modules.notifications.retention import Retention
from splitstone.modules.notifications.settings import NotificationsSettings
from splitstone.modules.notifications.unsubscribe import UnsubscribeLinks
from splitstone.modules.notifications.webhooks import Webhooks


class NotificationsService:
    """Implements `NotificationsApi`; routes, handlers and jobs reach the parts directly."""

    def __init__(
        self,
        *,
        dispatcher: Dispatcher,
        feed: Feed,
        preferences: Preferences,
        unsubscribe: UnsubscribeLinks,
        webhooks: Webhooks,
        auth: AuthApi,
        settings: NotificationsSettings,
        base_url: str,
        delivery_log: DeliveryLog,
        retention: Retention,
    ) -> None:
        self.dispatcher = dispatcher
        self.feed = feed
        self.preferences = preferences
        self.unsubscribe = unsubscribe
        self.webhooks = webhooks
        self.auth = auth
        self.settings = settings
        self.base_url = base_url
        self.delivery_log = delivery_log
        self.retention = retention

    async def notify(
        self,
        kind: str,
        recipients: list[Recipient],
        data: dict[str, Any],
        idempotency_key: str,
        org_id: UUID | None = None,
    ) -> NotifyResult:
        return await self.dispatcher.notify(kind, recipients, data, idempotency_key, org_id)

    async def send_webhook(
        self, org_id: UUID, event_type: str, data: dict[str, Any], idempotency_key: str
    ) -> WebhookMessage:
        return await self.webhooks.send(org_id, event_type, data, idempotency_key)

    async def kinds(self) -> list[KindInfo]:
        return [k.info() for k in KINDS.values()]

    async def webhook_event_types(self) -> list[str]:
        return list(WEBHOOK_EVENT_TYPES)

    async def aclose(self) -> None:
        """Called by the container on shutdown."""
        await self.webhooks.aclose()

    def link(self, template: str, **values: str) -> str:
        """A link from one of the settings' URL templates (`{base_url}` and the given values)."""
        return template.format(base_url=self.base_url, **values)
