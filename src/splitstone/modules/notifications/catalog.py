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
)
"""What an organization's webhook endpoints may subscribe to: events of that organization, by name.

`handlers.py` sends exactly these (a test checks); billing's and projects' join when they land.
"""

WEBHOOK_TEST_EVENT_TYPE = "webhook.test"
"""The type of the event that "send a test event" delivers, whatever the endpoint's filter."""
