"""Every kind of notification this module sends: its category, channels and the data its templates use.

A kind's templates live under `templates/<kind>/`; a test renders every kind in every shipped locale.
Other modules' events become these kinds in `handlers.py`; other modules may also call `notify` with
a kind directly.
"""

from __future__ import annotations

from dataclasses import dataclass

from splitstone.modules.notifications.api import Category, Channel, KindInfo, UnknownNotificationKind


@dataclass(frozen=True)
class Kind:
    name: str
    category: Category
    transactional: bool  # delivered whatever the recipient's preferences (security and account mail)
    channels: tuple[Channel, ...]
    description: str
    data: tuple[str, ...]  # the keys `data` must hold; templates may use nothing else from it
    example: dict[str, object]  # sample data: the template test and the preview use it

    def info(self) -> KindInfo:
        return KindInfo(
            kind=self.name,
            category=self.category,
            transactional=self.transactional,
            channels=list(self.channels),
            description=self.description,
        )


_EXPIRES = "2026-11-28T12:00:00+00:00"
_BILLING_URL = "https://app.example/orgs/0192f0c1-0000-7000-8000-000000000001/billing"
_TASK_URL = "https://app.example/orgs/0192f0c1-0000-7000-8000-000000000001/tasks/WEB-42"

KINDS: dict[str, Kind] = {
    k.name: k
    for k in (
        Kind(
            "auth.verify_email",
            Category.SECURITY,
            True,
            (Channel.EMAIL,),
            "Confirm your email address (after registering, or when asked again).",
            ("display_name", "verify_url", "expires_at"),
            {
                "display_name": "Ada",
                "verify_url": "https://app.example/verify?token=t0k",
                "expires_at": _EXPIRES,
            },
        ),
        Kind(
            "auth.password_reset",
            Category.SECURITY,
            True,
            (Channel.EMAIL,),
            "A link to choose a new password.",
            ("display_name", "reset_url", "expires_at"),
            {
                "display_name": "Ada",
                "reset_url": "https://app.example/reset?token=t0k",
                "expires_at": _EXPIRES,
            },
        ),
        Kind(
            "auth.password_changed",
            Category.SECURITY,
            True,
            (Channel.EMAIL,),
            "Your password was changed; other sessions were signed out.",
            ("changed_at",),
            {"changed_at": _EXPIRES},
        ),
        Kind(
            "auth.invitation",
            Category.ORGANIZATION,
            True,  # the invitee may have no account, hence no preferences
            (Channel.EMAIL,),
            "An invitation to join an organization.",
            ("org_name", "invited_by_name", "role", "accept_url", "expires_at"),
            {
                "org_name": "Acme <Inc>",
                "invited_by_name": "Grace",
                "role": "member",
                "accept_url": "https://app.example/invitations/accept?token=t0k",
                "expires_at": _EXPIRES,
            },
        ),
        Kind(
            "auth.member_joined",
            Category.ORGANIZATION,
            False,
            (Channel.IN_APP, Channel.EMAIL),
            "Someone joined an organization you administer.",
            ("member_name", "member_email", "role"),
            {"member_name": "Linus", "member_email": "linus@example.com", "role": "member"},
        ),
        Kind(
            "notifications.webhook_endpoint_disabled",
            Category.ORGANIZATION,
            True,  # an owner must learn that their integration stopped receiving events
            (Channel.EMAIL, Channel.IN_APP),
            "A webhook endpoint of your organization was disabled.",
            ("url", "reason"),
            {"url": "https://hooks.example/in", "reason": "failing for 5 days"},
        ),
        # Billing: to an organization's billing contact (handlers.py). Amounts are integers in minor
        # units of `currency`, which templates write out with `layout/money.jinja`.
        Kind(
            "billing.trial_ending",
            Category.BILLING,
            False,
            (Channel.EMAIL, Channel.IN_APP),
            "A trial ends soon; without a payment method, the plan needs one to continue.",
            ("org_name", "plan_name", "trial_end", "has_payment_method", "billing_url"),
            {
                "org_name": "Acme <Inc>",
                "plan_name": "Pro",
                "trial_end": _EXPIRES,
                "has_payment_method": False,
                "billing_url": _BILLING_URL,
            },
        ),
        Kind(
            "billing.payment_failed",
            Category.BILLING,
            True,  # about keeping access to the plan, so not something to opt out of
            (Channel.EMAIL, Channel.IN_APP),
            "A payment failed: when it is tried again, or that it was the last attempt.",
            (
                "org_name",
                "invoice_number",
                "amount_due",
                "currency",
                "failure_message",
                "next_attempt_at",  # null: no retry follows
                "billing_url",
            ),
            {
                "org_name": "Acme <Inc>",
                "invoice_number": "ACME-0007",
                "amount_due": 1900,
                "currency": "USD",
                "failure_message": "Your card was declined.",
                "next_attempt_at": _EXPIRES,
                "billing_url": _BILLING_URL,
            },
        ),
        Kind(
            "billing.invoice_paid",
            Category.BILLING,
            True,  # a receipt
            (Channel.EMAIL,),
            "A receipt for a paid invoice.",
            ("org_name", "invoice_number", "amount_paid", "currency", "paid_at", "billing_url"),
            {
                "org_name": "Acme <Inc>",
                "invoice_number": "ACME-0007",
                "amount_paid": 1900,
                "currency": "USD",
                "paid_at": _EXPIRES,
                "billing_url": _BILLING_URL,
            },
        ),
        Kind(
            "billing.invoice_finalized",
            Category.BILLING,
            False,
            (Channel.IN_APP,),
            "A new invoice with an amount due.",
            ("org_name", "invoice_number", "total", "amount_due", "currency", "billing_url"),
            {
                "org_name": "Acme <Inc>",
                "invoice_number": "ACME-0007",
                "total": 1900,
                "amount_due": 1900,
                "currency": "USD",
                "billing_url": _BILLING_URL,
            },
        ),
        Kind(
            "billing.subscription_changed",
            Category.BILLING,
            False,
            (Channel.EMAIL, Channel.IN_APP),
            "A subscription started, changed plan, was canceled or resumed, or its payment stalled.",
            ("org_name", "change", "plan_name", "current_period_end", "billing_url"),
            {
                "org_name": "Acme <Inc>",
                "change": "upgraded",  # one of handlers.NOTIFIED_CHANGES
                "plan_name": "Pro",
                "current_period_end": _EXPIRES,
                "billing_url": _BILLING_URL,
            },
        ),
        # Projects: to a task's assignee and watchers (handlers.py), never to whoever acted.
        Kind(
            "projects.task_assigned",
            Category.PROJECTS,
            False,
            (Channel.IN_APP, Channel.EMAIL),
            "A task was assigned to you by someone else.",
            ("task_key", "task_title", "assigned_by_name", "task_url"),
            {
                "task_key": "WEB-42",
                "task_title": "Fix the <checkout> button",
                "assigned_by_name": "Grace",  # null: an API key or an automation
                "task_url": _TASK_URL,
            },
        ),
        Kind(
            "projects.task_commented",
            Category.PROJECTS,
            False,
            (Channel.IN_APP, Channel.EMAIL),
            "Someone commented on a task you watch (you created it, are assigned or commented).",
            ("task_key", "task_title", "author_name", "excerpt", "task_url"),
            {
                "task_key": "WEB-42",
                "task_title": "Fix the <checkout> button",
                "author_name": "Grace",  # null: an API key
                "excerpt": "Reproduced on Safari 17 <b>only</b>; the fix is in #128.",
                "task_url": _TASK_URL,
            },
        ),
    )
}


def kind(name: str) -> Kind:
    try:
        return KINDS[name]
    except KeyError:
        raise UnknownNotificationKind(
            f"No notification kind {name!r}; known kinds: {', '.join(sorted(KINDS))}."
        ) from None


WEBHOOK_EVENT_TYPES: tuple[str, ...] = (
    "auth.MemberInvited",
    "auth.MemberJoined",
    "auth.MemberRoleChanged",
    "auth.MemberRemoved",
    "billing.SubscriptionChanged",
    "billing.InvoiceFinalized",
    "billing.InvoicePaid",
    "billing.PaymentFailed",
    "billing.TrialEnding",
    "projects.ProjectArchived",
    "projects.TaskCreated",
    "projects.TaskAssigned",
    "projects.TaskStatusChanged",
    "projects.TaskCommented",
)
"""What an organization's webhook endpoints may subscribe to: events of that organization, by name.

`handlers.py` sends exactly these (a test checks).
"""

WEBHOOK_TEST_EVENT_TYPE = "webhook.test"
"""The type of the event that "send a test event" delivers, whatever the endpoint's filter."""
