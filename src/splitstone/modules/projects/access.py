"""Who is acting: authorization through auth's contract, and the actor recorded on changes."""

from __future__ import annotations

from uuid import UUID

from splitstone.modules.auth.api import Access, AuthApi, Permission, Principal, Role


async def authorize(auth: AuthApi, principal: Principal, org_id: UUID, permission: Permission) -> Access:
    """`Access`, or auth's 404 (another tenant's organization) / 403 (missing permission)."""
    return await auth.authorize(principal, org_id, permission)


def actor_of(principal: Principal) -> UUID | None:
    """The user behind a request; None for an API key (recorded as "an API key")."""
    return principal.user_id if principal.kind == "user" else None


def is_admin(access: Access) -> bool:
    """Owners and admins (and API keys allowed to manage projects) may moderate others' comments."""
    return access.role in (Role.OWNER, Role.ADMIN) or Permission.PROJECTS_MANAGE in access.permissions
