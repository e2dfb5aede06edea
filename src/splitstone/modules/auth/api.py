"""The auth contract: the only part of auth that other modules may import.

Who is calling (a user or an organization's API key), may they do this in that organization, and who
are the users and members of an organization. Async and serializable throughout, so the same calls
work in-process and across services.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import ClassVar, Literal, Protocol
from uuid import UUID

from pydantic import BaseModel, ConfigDict

from splitstone.kernel.contracts import contract, idempotent
from splitstone.kernel.errors import DomainError, NotAuthenticated, NotFound, PermissionDenied
from splitstone.kernel.events import Event


class Role(StrEnum):
    OWNER = "owner"
    ADMIN = "admin"
    MEMBER = "member"


class Permission(StrEnum):
    """What a principal may do inside an organization. Roles map to sets of these; API keys hold scopes."""

    ORG_READ = "org:read"
    ORG_UPDATE = "org:update"
    MEMBERS_READ = "members:read"
    MEMBERS_MANAGE = "members:manage"
    API_KEYS_MANAGE = "api_keys:manage"
    BILLING_READ = "billing:read"
    BILLING_MANAGE = "billing:manage"
    USAGE_WRITE = "usage:write"
    PROJECTS_READ = "projects:read"
    PROJECTS_MANAGE = "projects:manage"
    TASKS_READ = "tasks:read"
    TASKS_WRITE = "tasks:write"
    WEBHOOKS_MANAGE = "webhooks:manage"


class Principal(BaseModel):
    """Who is making a request: a signed-in user, or an API key of one organization."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["user", "api_key"]
    user_id: UUID | None = None
    session_id: UUID | None = None
    api_key_id: UUID | None = None
    org_id: UUID | None = None
    scopes: frozenset[Permission] = frozenset()


class Access(BaseModel):
    """A successful `authorize`: the principal acts in `org_id` with this role or these scopes."""

    org_id: UUID
    principal: Principal
    role: Role | None = None
    permissions: frozenset[Permission]


class UserInfo(BaseModel):
    id: UUID
    email: str
    display_name: str
    email_verified: bool
    created_at: datetime


class MemberInfo(BaseModel):
    org_id: UUID
    user_id: UUID
    email: str
    display_name: str
    role: Role
    joined_at: datetime


class OrganizationInfo(BaseModel):
    id: UUID
    name: str
    created_at: datetime


class InvalidCredentials(NotAuthenticated):
    code = "invalid-credentials"
    title = "Invalid credentials"


class OrganizationNotFound(NotFound):
    code = "organization-not-found"
    title = "Organization not found"


class UserNotFound(NotFound):
    code = "user-not-found"
    title = "User not found"


class NotAMember(NotFound):
    code = "not-a-member"
    title = "Not a member of this organization"


class MissingPermission(PermissionDenied):
    code = "missing-permission"
    title = "Missing permission"


class InvalidToken(DomainError):
    code = "invalid-token"
    status = 400
    title = "Invalid or expired token"


@contract(version=1)
class AuthApi(Protocol):
    """What other modules may ask of auth."""

    @idempotent
    async def resolve_principal(self, authorization: str) -> Principal:
        """The principal behind an `Authorization` header value (`Bearer <access token or API key>`).

        Raises `NotAuthenticated` (or `InvalidCredentials`) when the credentials are missing or invalid.
        """
        ...

    @idempotent
    async def authorize(self, principal: Principal, org_id: UUID, permission: Permission) -> Access:
        """Check that `principal` may use `permission` in `org_id`.

        Raises `OrganizationNotFound` when the principal may not even know the organization exists (so
        other tenants' resources answer 404), `MissingPermission` when it may see but not do this.
        """
        ...

    @idempotent
    async def get_user(self, user_id: UUID) -> UserInfo:
        """One user; raises `UserNotFound`."""
        ...

    @idempotent
    async def get_users(self, user_ids: list[UUID]) -> list[UserInfo]:
        """The users among `user_ids` that exist, in no particular order."""
        ...

    @idempotent
    async def get_member(self, org_id: UUID, user_id: UUID) -> MemberInfo:
        """A member of an organization; raises `NotAMember`."""
        ...

    @idempotent
    async def list_members(self, org_id: UUID) -> list[MemberInfo]:
        """Every member of an organization, oldest first."""
        ...


# Events. A field may not be called `name` (that is the event's type name): use `org_name` and the like.
# Tokens travel in events so the notifications module can deliver them; nothing else should log them.


class UserRegistered(Event):
    """A user registered; their address stays unverified until they use the verification token."""

    name: ClassVar[str] = "auth.UserRegistered"
    user_id: UUID
    email: str
    display_name: str
    verification_token: str
    verification_expires_at: datetime


class EmailVerificationRequested(Event):
    """An unverified user asked for a new verification link: a fresh token to email them."""

    name: ClassVar[str] = "auth.EmailVerificationRequested"
    user_id: UUID
    email: str
    display_name: str
    verification_token: str
    verification_expires_at: datetime


class EmailVerified(Event):
    """A user proved they own their email address with a verification token."""

    name: ClassVar[str] = "auth.EmailVerified"
    user_id: UUID
    email: str


class PasswordResetRequested(Event):
    """A password reset was asked for an existing address: the reset token to email to it."""

    name: ClassVar[str] = "auth.PasswordResetRequested"
    user_id: UUID
    email: str
    display_name: str
    reset_token: str
    reset_expires_at: datetime


class PasswordChanged(Event):
    """A user's password was changed or reset; their other sessions were ended."""

    name: ClassVar[str] = "auth.PasswordChanged"
    user_id: UUID
    email: str


class OrganizationCreated(Event):
    """A user created an organization and is its owner (`auth.MemberJoined` comes with it)."""

    name: ClassVar[str] = "auth.OrganizationCreated"
    org_id: UUID
    org_name: str
    owner_id: UUID


class MemberInvited(Event):
    """An email address was invited into an organization with a role: the invitation token to email."""

    name: ClassVar[str] = "auth.MemberInvited"
    invitation_id: UUID
    org_id: UUID
    org_name: str
    email: str
    role: Role
    invited_by: UUID
    invited_by_name: str
    invitation_token: str
    expires_at: datetime


class MemberJoined(Event):
    """A user became a member of an organization: its creator, or an invitee who accepted."""

    name: ClassVar[str] = "auth.MemberJoined"
    org_id: UUID
    user_id: UUID
    role: Role


class MemberRoleChanged(Event):
    """A member's role in an organization changed."""

    name: ClassVar[str] = "auth.MemberRoleChanged"
    org_id: UUID
    user_id: UUID
    old_role: Role
    new_role: Role


class MemberRemoved(Event):
    """A member left an organization or was removed from it."""

    name: ClassVar[str] = "auth.MemberRemoved"
    org_id: UUID
    user_id: UUID


PUBLISHED_EVENTS: tuple[type[Event], ...] = (
    UserRegistered,
    EmailVerificationRequested,
    EmailVerified,
    PasswordResetRequested,
    PasswordChanged,
    OrganizationCreated,
    MemberInvited,
    MemberJoined,
    MemberRoleChanged,
    MemberRemoved,
)
