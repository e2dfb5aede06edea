"""Other modules' events, turned into notifications and webhook messages.

Each handler runs in the inbox transaction of its event, so `notify` and `send_webhook` join it: the
deliveries exist exactly when the event counts as handled. Idempotency keys derive from the event id,
so a redelivered event sends nothing twice.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from uuid import UUID

from splitstone.kernel.events import Event
from splitstone.kernel.module import EventHandlerFactory
from splitstone.modules.auth.api import (
    EmailVerificationRequested,
    MemberInvited,
    MemberJoined,
    MemberRemoved,
    MemberRoleChanged,
    PasswordChanged,
    PasswordResetRequested,
    Role,
    UserRegistered,
)
from splitstone.modules.notifications.api import Recipient, WebhookEndpointDisabled
from splitstone.modules.notifications.service import NotificationsService

Handler = Callable[[Any], Awaitable[None]]


def _key(event: Event, what: str = "") -> str:
    return f"{event.name}:{event.id}{what}"


def verify_email(service: NotificationsService) -> Handler:
    async def handle(event: UserRegistered | EmailVerificationRequested) -> None:
        await service.notify(
            "auth.verify_email",
            [Recipient(user_id=event.user_id, email=event.email, name=event.display_name)],
            {
                "display_name": event.display_name,
                "verify_url": service.link(service.settings.verify_email_url, token=event.verification_token),
                "expires_at": event.verification_expires_at.isoformat(),
            },
            _key(event),
        )

    return handle


def password_reset(service: NotificationsService) -> Handler:
    async def handle(event: PasswordResetRequested) -> None:
        await service.notify(
            "auth.password_reset",
            [Recipient(user_id=event.user_id, email=event.email, name=event.display_name)],
            {
                "display_name": event.display_name,
                "reset_url": service.link(service.settings.reset_password_url, token=event.reset_token),
                "expires_at": event.reset_expires_at.isoformat(),
            },
            _key(event),
        )

    return handle


def password_changed(service: NotificationsService) -> Handler:
    async def handle(event: PasswordChanged) -> None:
        await service.notify(
            "auth.password_changed",
            [Recipient(user_id=event.user_id, email=event.email)],
            {"changed_at": event.occurred_at.isoformat()},
            _key(event),
        )

    return handle


def invitation(service: NotificationsService) -> Handler:
    async def handle(event: MemberInvited) -> None:
        await service.notify(
            "auth.invitation",
            [Recipient(email=event.email)],
            {
                "org_name": event.org_name,
                "invited_by_name": event.invited_by_name,
                "role": event.role.value,
                "accept_url": service.link(
                    service.settings.accept_invitation_url, token=event.invitation_token
                ),
                "expires_at": event.expires_at.isoformat(),
            },
            _key(event),
            org_id=event.org_id,
        )
        # Webhook receivers learn of the invitation, never its token.
        await service.send_webhook(
            event.org_id,
            event.name,
            {
                "invitation_id": str(event.invitation_id),
                "org_id": str(event.org_id),
                "email": event.email,
                "role": event.role.value,
                "invited_by": str(event.invited_by),
                "expires_at": event.expires_at.isoformat(),
            },
            _key(event, ":webhook"),
        )

    return handle


def member_joined(service: NotificationsService) -> Handler:
    async def handle(event: MemberJoined) -> None:
        await _webhook(service, event)
        members = await service.auth.list_members(event.org_id)
        joined = next((m for m in members if m.user_id == event.user_id), None)
        if joined is None:
            return  # gone again before this ran
        admins = [
            Recipient(user_id=m.user_id, email=m.email, name=m.display_name)
            for m in members
            if m.role in (Role.OWNER, Role.ADMIN) and m.user_id != event.user_id
        ]
        if not admins:
            return  # the organization's creator joining their own organization
        await service.notify(
            "auth.member_joined",
            admins,
            {"member_name": joined.display_name, "member_email": joined.email, "role": event.role.value},
            _key(event),
            org_id=event.org_id,
        )

    return handle


def org_webhook(service: NotificationsService) -> Handler:
    """Events an organization's webhook endpoints may subscribe to, sent as they are."""

    async def handle(event: Event) -> None:
        await _webhook(service, event)

    return handle


async def _webhook(service: NotificationsService, event: Event) -> None:
    data = event.model_dump(mode="json", exclude={"id", "occurred_at", "aggregate_id"})
    await service.send_webhook(UUID(data["org_id"]), event.name, data, _key(event, ":webhook"))


def endpoint_disabled(service: NotificationsService) -> Handler:
    async def handle(event: WebhookEndpointDisabled) -> None:
        owners = [
            Recipient(user_id=m.user_id, email=m.email, name=m.display_name)
            for m in await service.auth.list_members(event.org_id)
            if m.role is Role.OWNER
        ]
        if owners:
            await service.notify(
                "notifications.webhook_endpoint_disabled",
                owners,
                {"url": event.url, "reason": event.reason},
                _key(event),
                org_id=event.org_id,
            )

    return handle


SUBSCRIPTIONS: dict[type[Event], EventHandlerFactory] = {
    UserRegistered: verify_email,
    EmailVerificationRequested: verify_email,
    PasswordResetRequested: password_reset,
    PasswordChanged: password_changed,
    MemberInvited: invitation,
    MemberJoined: member_joined,
    MemberRoleChanged: org_webhook,
    MemberRemoved: org_webhook,
    WebhookEndpointDisabled: endpoint_disabled,
}

WEBHOOK_EVENTS: tuple[type[Event], ...] = (MemberInvited, MemberJoined, MemberRoleChanged, MemberRemoved)
"""The events sent to organizations' webhook endpoints (`catalog.WEBHOOK_EVENT_TYPES` names them)."""
