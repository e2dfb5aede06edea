"""Other modules' events, turned into notifications and webhook messages.

Each handler runs in the inbox transaction of its event, so `notify` and `send_webhook` join it: the
deliveries exist exactly when the event counts as handled. Idempotency keys derive from the event id,
so a redelivered event sends nothing twice.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from uuid import UUID

import structlog
from pydantic import ValidationError

from splitstone.kernel.events import Event
from splitstone.kernel.module import EventHandlerFactory
from splitstone.modules.auth.api import (
    EmailVerificationRequested,
    MemberInfo,
    MemberInvited,
    MemberJoined,
    MemberRemoved,
    MemberRoleChanged,
    PasswordChanged,
    PasswordResetRequested,
    Role,
    UserRegistered,
)
from splitstone.modules.billing.api import (
    InvoiceFinalized,
    InvoicePaid,
    PaymentFailed,
    SubscriptionChanged,
    TrialEnding,
)
from splitstone.modules.notifications.api import Channel, Recipient, WebhookEndpointDisabled
from splitstone.modules.notifications.service import NotificationsService
from splitstone.modules.projects.api import (
    ProjectArchived,
    TaskAssigned,
    TaskCommented,
    TaskCreated,
    TaskStatusChanged,
)

Handler = Callable[[Any], Awaitable[None]]

log = structlog.get_logger("splitstone.notifications")


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


async def _webhook(
    service: NotificationsService, event: Event, *, leave_out: frozenset[str] = frozenset()
) -> None:
    data = event.model_dump(mode="json", exclude={"id", "occurred_at", "aggregate_id", *leave_out})
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


# -- billing ------------------------------------------------------------------------------------------
# Every billing event goes to the organization's webhook endpoints (without the billing contact's
# address), and most become a notification to its billing contacts (`_to_billing_contacts`).

BillingEvent = SubscriptionChanged | InvoiceFinalized | InvoicePaid | PaymentFailed | TrialEnding

NOTIFIED_CHANGES = frozenset(
    {
        "trial_started",
        "upgraded",
        "downgraded",
        "downgrade_scheduled",
        "cancel_scheduled",
        "resumed",
        "canceled",
        "activated",
        "unpaid",
        "incomplete",
    }
)
"""The `SubscriptionChanged.change`s a customer hears about. Not `created` and `renewed` (routine), nor
`past_due` (`PaymentFailed` says it, with what to do); those, and changes unknown here, go to webhooks
only. `templates/billing.subscription_changed/<locale>/changes.jinja` has a text for each."""


async def _to_billing_contacts(
    service: NotificationsService, kind_name: str, event: BillingEvent, data: dict[str, Any]
) -> None:
    """Notify the organization's billing contacts of `kind_name`.

    Email goes to the billing email when the organization has one, else to its owners and admins;
    in-app items go to its owners and admins. The in-app item links to the billing page.
    """
    admins = [
        Recipient(user_id=m.user_id, email=m.email, name=m.display_name)
        for m in await service.auth.list_members(event.org_id)
        if m.role in (Role.OWNER, Role.ADMIN)
    ]
    contact = _billing_contact(event)
    recipients = admins
    if contact is not None:  # the email is the billing email's; owners and admins get the in-app item
        recipients = [contact, *(a.model_copy(update={"channels": [Channel.IN_APP]}) for a in admins)]
    if recipients:
        await service.notify(
            kind_name, recipients, {**data, "link": data["billing_url"]}, _key(event), org_id=event.org_id
        )


def _billing_contact(event: BillingEvent) -> Recipient | None:
    if event.billing_email is None:
        return None
    try:
        return Recipient(email=event.billing_email)
    except ValidationError:  # not deliverable: better the owners and admins than no one
        log.warning("billing email refused; notifying owners and admins", org_id=str(event.org_id))
        return None


def _billing_url(service: NotificationsService, event: BillingEvent) -> str:
    return service.link(service.settings.billing_url, org_id=str(event.org_id))


async def _billing_webhook(service: NotificationsService, event: BillingEvent) -> None:
    await _webhook(service, event, leave_out=frozenset({"billing_email"}))


def subscription_changed(service: NotificationsService) -> Handler:
    async def handle(event: SubscriptionChanged) -> None:
        await _billing_webhook(service, event)
        if event.change not in NOTIFIED_CHANGES:
            return
        await _to_billing_contacts(
            service,
            "billing.subscription_changed",
            event,
            {
                "org_name": event.org_name,
                "change": event.change,
                "plan_name": event.plan_name,
                "current_period_end": event.current_period_end.isoformat(),
                "billing_url": _billing_url(service, event),
            },
        )

    return handle


def invoice_finalized(service: NotificationsService) -> Handler:
    async def handle(event: InvoiceFinalized) -> None:
        await _billing_webhook(service, event)
        if event.amount_due <= 0:
            return  # paid at once: nothing to announce (`InvoicePaid` follows)
        await _to_billing_contacts(
            service,
            "billing.invoice_finalized",
            event,
            {
                "org_name": event.org_name,
                "invoice_number": event.number,
                "total": event.total,
                "amount_due": event.amount_due,
                "currency": event.currency,
                "billing_url": _billing_url(service, event),
            },
        )

    return handle


def invoice_paid(service: NotificationsService) -> Handler:
    async def handle(event: InvoicePaid) -> None:
        await _billing_webhook(service, event)
        await _to_billing_contacts(
            service,
            "billing.invoice_paid",
            event,
            {
                "org_name": event.org_name,
                "invoice_number": event.number,
                "amount_paid": event.amount_paid,
                "currency": event.currency,
                "paid_at": event.paid_at.isoformat(),
                "billing_url": _billing_url(service, event),
            },
        )

    return handle


def payment_failed(service: NotificationsService) -> Handler:
    async def handle(event: PaymentFailed) -> None:
        await _billing_webhook(service, event)
        await _to_billing_contacts(
            service,
            "billing.payment_failed",
            event,
            {
                "org_name": event.org_name,
                "invoice_number": event.number,
                "amount_due": event.amount_due,
                "currency": event.currency,
                "failure_message": event.failure_message,
                "next_attempt_at": event.next_attempt_at.isoformat() if event.next_attempt_at else None,
                "billing_url": _billing_url(service, event),
            },
        )

    return handle


def trial_ending(service: NotificationsService) -> Handler:
    async def handle(event: TrialEnding) -> None:
        await _billing_webhook(service, event)
        await _to_billing_contacts(
            service,
            "billing.trial_ending",
            event,
            {
                "org_name": event.org_name,
                "plan_name": event.plan_name,
                "trial_end": event.trial_end.isoformat(),
                "has_payment_method": event.has_payment_method,
                "billing_url": _billing_url(service, event),
            },
        )

    return handle


# -- projects -----------------------------------------------------------------------------------------
# Every projects event goes to the organization's webhook endpoints. An assignment and a comment also
# notify the people concerned, never the one who acted, and only while they are still members.


async def _members(service: NotificationsService, org_id: UUID) -> dict[UUID, MemberInfo]:
    return {m.user_id: m for m in await service.auth.list_members(org_id)}


def _name(members: dict[UUID, MemberInfo], user_id: UUID | None) -> str | None:
    """Who acted, by name; None for an API key (or someone who has left), which templates word apart."""
    member = members.get(user_id) if user_id is not None else None
    return member.display_name if member is not None else None


def _task_url(service: NotificationsService, event: TaskAssigned | TaskCommented) -> str:
    return service.link(service.settings.task_url, org_id=str(event.org_id), key=event.key)


def task_assigned(service: NotificationsService) -> Handler:
    async def handle(event: TaskAssigned) -> None:
        await _webhook(service, event)
        if event.assignee_id is None or event.assignee_id == event.assigned_by:
            return  # unassigned, or taken by the assignee themselves: nothing to tell
        members = await _members(service, event.org_id)
        assignee = members.get(event.assignee_id)
        if assignee is None:
            return  # no longer a member of the organization
        task_url = _task_url(service, event)
        await service.notify(
            "projects.task_assigned",
            [Recipient(user_id=assignee.user_id, email=assignee.email, name=assignee.display_name)],
            {
                "task_key": event.key,
                "task_title": event.title,
                "assigned_by_name": _name(members, event.assigned_by),
                "task_url": task_url,
                "link": task_url,
            },
            _key(event),
            org_id=event.org_id,
        )

    return handle


def task_commented(service: NotificationsService) -> Handler:
    async def handle(event: TaskCommented) -> None:
        await _webhook(service, event)
        members = await _members(service, event.org_id)
        watchers = [
            Recipient(user_id=m.user_id, email=m.email, name=m.display_name)
            for user_id in dict.fromkeys(event.watcher_ids)
            if user_id != event.author_id and (m := members.get(user_id)) is not None
        ]
        if not watchers:
            return
        task_url = _task_url(service, event)
        await service.notify(
            "projects.task_commented",
            watchers,
            {
                "task_key": event.key,
                "task_title": event.title,
                "author_name": _name(members, event.author_id),
                "excerpt": event.excerpt,
                "task_url": task_url,
                "link": task_url,
            },
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
    SubscriptionChanged: subscription_changed,
    InvoiceFinalized: invoice_finalized,
    InvoicePaid: invoice_paid,
    PaymentFailed: payment_failed,
    TrialEnding: trial_ending,
    ProjectArchived: org_webhook,
    TaskCreated: org_webhook,
    TaskAssigned: task_assigned,
    TaskStatusChanged: org_webhook,
    TaskCommented: task_commented,
}

WEBHOOK_EVENTS: tuple[type[Event], ...] = (
    MemberInvited,
    MemberJoined,
    MemberRoleChanged,
    MemberRemoved,
    SubscriptionChanged,
    InvoiceFinalized,
    InvoicePaid,
    PaymentFailed,
    TrialEnding,
    ProjectArchived,
    TaskCreated,
    TaskAssigned,
    TaskStatusChanged,
    TaskCommented,
)
"""The events sent to organizations' webhook endpoints (`catalog.WEBHOOK_EVENT_TYPES` names them)."""
