"""The notifications contract: the only part of notifications that other modules may import.

One entry point, `notify`, turns a kind of notification and its data into emails and in-app entries
for each recipient, honouring their preferences unless the kind is transactional (security mail).
`send_webhook` delivers an organization's event to its webhook endpoints. Both are idempotent: a
repeated idempotency key sends nothing twice.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, ClassVar, Protocol
from uuid import UUID

from pydantic import BaseModel, EmailStr, Field, model_validator

from splitstone.kernel.contracts import contract, idempotent
from splitstone.kernel.errors import InvalidInput, NotFound
from splitstone.kernel.events import Event


class Channel(StrEnum):
    EMAIL = "email"
    IN_APP = "in_app"


class Category(StrEnum):
    """What a user can opt out of, per channel. `security` is transactional and always delivered."""

    SECURITY = "security"
    ORGANIZATION = "organization"
    PROJECTS = "projects"
    BILLING = "billing"


class DeliveryStatus(StrEnum):
    QUEUED = "queued"  # a job will send it
    SENT = "sent"  # the mail server or the inbox accepted it
    FAILED = "failed"  # every attempt failed; the job is dead-lettered
    BOUNCED = "bounced"  # the mail server refused the recipient for good
    SUPPRESSED = "suppressed"  # the recipient opted out of this category on this channel


class Recipient(BaseModel):
    """Who receives a notification: a user (by id), an email address, or both.

    A user's address and name come from auth when not given. An address alone (an invitee) gets
    email only. `channels` narrows the kind's channels for this recipient (a user who should get the
    in-app item while the email goes to another address).
    """

    user_id: UUID | None = None
    email: EmailStr | None = None
    name: str | None = Field(default=None, max_length=200)
    locale: str | None = Field(default=None, pattern=r"^[a-z]{2}(-[A-Z]{2})?$", examples=["en", "de"])
    channels: list[Channel] | None = Field(
        default=None, description="Only these of the kind's channels for this recipient; null: all of them."
    )

    @model_validator(mode="after")
    def _someone(self) -> Recipient:
        if self.user_id is None and self.email is None:
            raise ValueError("a recipient needs a user_id or an email")
        return self


class Delivery(BaseModel):
    id: UUID
    channel: Channel
    user_id: UUID | None
    address: str | None
    status: DeliveryStatus


class NotifyResult(BaseModel):
    notification_id: UUID
    duplicate: bool = Field(description="True when the idempotency key was seen before: nothing was sent.")
    deliveries: list[Delivery]


class KindInfo(BaseModel):
    kind: str
    category: Category
    transactional: bool
    channels: list[Channel]
    description: str


class WebhookMessage(BaseModel):
    id: str = Field(description="The `webhook-id` receivers use to deduplicate, `msg_...`.")
    org_id: UUID
    event_type: str
    created_at: datetime
    endpoints: int = Field(description="How many endpoints it was queued for.")


class UnknownNotificationKind(InvalidInput):
    code = "unknown-notification-kind"
    title = "Unknown notification kind"


class InvalidNotificationData(InvalidInput):
    code = "invalid-notification-data"
    title = "The data does not fit the notification's templates"


class UnknownWebhookEventType(InvalidInput):
    code = "unknown-webhook-event-type"
    title = "Unknown webhook event type"


class NotificationNotFound(NotFound):
    code = "notification-not-found"
    title = "Notification not found"


@contract(version=1)
class NotificationsApi(Protocol):
    """What other modules may ask of notifications."""

    async def notify(
        self,
        kind: str,
        recipients: list[Recipient],
        data: dict[str, Any],
        idempotency_key: str,
        org_id: UUID | None = None,
    ) -> NotifyResult:
        """Send notification `kind` to each recipient on the kind's channels, as durable jobs.

        `data` fills the kind's templates (a missing variable raises `InvalidNotificationData`). A
        repeated `idempotency_key` returns the first call's result with `duplicate=True` and sends
        nothing. Raises `UnknownNotificationKind`.
        """
        ...

    async def send_webhook(
        self, org_id: UUID, event_type: str, data: dict[str, Any], idempotency_key: str
    ) -> WebhookMessage:
        """Deliver `{type, timestamp, data}` to the organization's enabled endpoints that want it.

        Signed per Standard Webhooks, retried for about three days. A repeated `idempotency_key`
        returns the first message. Raises `UnknownWebhookEventType`.
        """
        ...

    @idempotent
    async def kinds(self) -> list[KindInfo]:
        """Every notification kind this module can send."""
        ...

    @idempotent
    async def webhook_event_types(self) -> list[str]:
        """Every event type an endpoint may subscribe to."""
        ...


class WebhookEndpointDisabled(Event):
    """An organization's webhook endpoint was disabled: it answered 410 Gone, or failed for days."""

    name: ClassVar[str] = "notifications.WebhookEndpointDisabled"
    org_id: UUID
    endpoint_id: UUID
    url: str
    reason: str


PUBLISHED_EVENTS: tuple[type[Event], ...] = (WebhookEndpointDisabled,)
