"""Tenancy: organizations, memberships and roles, invitations, and the `authorize` check behind every route.

Everything here is scoped by organization id. A principal that may not see an organization gets
`OrganizationNotFound`, whether it exists or not, so no tenant learns of another tenant's data.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from pydantic import BaseModel
from sqlalchemy import and_, bindparam, func, select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.ext.asyncio import AsyncConnection
from uuid6 import uuid7

from splitstone.kernel.clock import Clock
from splitstone.kernel.db import UnitOfWorkFactory
from splitstone.kernel.errors import Conflict, NotFound, PermissionDenied
from splitstone.kernel.reads import PreparedQuery
from splitstone.modules.auth import domain
from splitstone.modules.auth.api import (
    Access,
    InvalidToken,
    MemberInfo,
    MemberInvited,
    MemberJoined,
    MemberRemoved,
    MemberRoleChanged,
    MissingPermission,
    NotAMember,
    OrganizationCreated,
    OrganizationNotFound,
    Permission,
    Principal,
    Role,
)
from splitstone.modules.auth.settings import AuthSettings
from splitstone.modules.auth.storage import api_keys, invitations, memberships, organizations, users


class UserOnly(PermissionDenied):
    code = "user-required"
    title = "A signed-in user is required"


class AlreadyMember(Conflict):
    code = "already-a-member"
    title = "Already a member"


class InvitationNotFound(NotFound):
    code = "invitation-not-found"
    title = "Invitation not found"


class InvitationEmailMismatch(PermissionDenied):
    code = "invitation-email-mismatch"
    title = "The invitation is for another email address"


class OrganizationView(BaseModel):
    id: UUID
    name: str
    created_at: datetime
    updated_at: datetime
    role: Role | None = None  # the caller's role; None for an API key


class InvitationView(BaseModel):
    id: UUID
    org_id: UUID
    email: str
    role: Role
    invited_by: UUID
    created_at: datetime
    expires_at: datetime


# An API key acts with at most an admin's reach over members: it never grants, changes or removes owners.
API_KEY_ACTOR_ROLE = Role.ADMIN


def require_user(principal: Principal, action: str) -> UUID:
    """The user behind `principal`, or `UserOnly` for an API key."""
    if principal.kind != "user" or principal.user_id is None:
        raise UserOnly(f"API keys cannot {action}; sign in as a user.")
    return principal.user_id


def actor_role(access: Access) -> Role:
    return access.role if access.role is not None else API_KEY_ACTOR_ROLE


class Organizations:
    """Use cases of organizations, members and invitations; each checks access through `authorize`."""

    def __init__(self, *, uow: UnitOfWorkFactory, clock: Clock, settings: AuthSettings) -> None:
        self._uow = uow
        self._clock = clock
        self._settings = settings

    # -- access ---------------------------------------------------------------------------------------

    async def authorize(self, principal: Principal, org_id: UUID, permission: Permission) -> Access:
        """`Access` to `org_id` with `permission`.

        Raises `OrganizationNotFound` to outsiders (non-members, other organizations' API keys) and
        `MissingPermission` to insiders whose role or scopes lack `permission`.
        """
        if principal.kind == "api_key":
            if principal.org_id != org_id:
                raise OrganizationNotFound(_not_found_detail(org_id))
            granted = principal.scopes
            role = None
        else:
            if principal.user_id is None:
                raise OrganizationNotFound(_not_found_detail(org_id))
            async with self._uow(read_only=True) as uow:
                row = await uow.fetch_one(_MEMBER_ROLE, org_id=org_id, user_id=principal.user_id)
            role = Role(row["role"]) if row is not None else None
            if role is None:
                raise OrganizationNotFound(_not_found_detail(org_id))
            granted = domain.permissions_of(role)
        if permission not in granted:
            holder = f"the {role.value} role" if role is not None else "this API key's scopes"
            raise MissingPermission(
                f"This needs the '{permission.value}' permission, which {holder} does not include.",
                permission=permission.value,
            )
        return Access(org_id=org_id, principal=principal, role=role, permissions=granted)

    # -- organizations --------------------------------------------------------------------------------

    async def create_organization(self, principal: Principal, name: str) -> OrganizationView:
        """A new organization with the caller as its owner."""
        user_id = require_user(principal, "create organizations")
        now = self._clock.now()
        org_id = uuid7()
        async with self._uow() as uow:
            await uow.session.execute(
                organizations.insert().values(
                    id=org_id, name=name, created_by=user_id, created_at=now, updated_at=now
                )
            )
            await uow.session.execute(
                memberships.insert().values(
                    org_id=org_id, user_id=user_id, role=Role.OWNER.value, created_at=now
                )
            )
            uow.publish(
                OrganizationCreated(
                    occurred_at=now, aggregate_id=org_id, org_id=org_id, org_name=name, owner_id=user_id
                ),
                MemberJoined(
                    occurred_at=now, aggregate_id=org_id, org_id=org_id, user_id=user_id, role=Role.OWNER
                ),
            )
            await uow.commit()
        return OrganizationView(id=org_id, name=name, created_at=now, updated_at=now, role=Role.OWNER)

    async def list_my_organizations(self, principal: Principal) -> list[OrganizationView]:
        """The organizations the caller belongs to, with the caller's role, in the order joined."""
        user_id = require_user(principal, "list a user's organizations")
        query = (
            select(organizations, memberships.c.role.label("member_role"))
            .join(memberships, memberships.c.org_id == organizations.c.id)
            .where(memberships.c.user_id == user_id)
            .order_by(memberships.c.created_at, organizations.c.id)
        )
        async with self._uow(read_only=True) as uow:
            rows = (await uow.session.execute(query)).mappings().all()
        return [_organization_view(row, Role(row["member_role"])) for row in rows]

    async def get_organization(self, principal: Principal, org_id: UUID) -> OrganizationView:
        access = await self.authorize(principal, org_id, Permission.ORG_READ)
        async with self._uow(read_only=True) as uow:
            row = await _organization_row(uow.session, org_id)
        return _organization_view(row, access.role)

    async def rename_organization(self, principal: Principal, org_id: UUID, name: str) -> OrganizationView:
        access = await self.authorize(principal, org_id, Permission.ORG_UPDATE)
        now = self._clock.now()
        async with self._uow() as uow:
            await uow.session.execute(
                update(organizations).where(organizations.c.id == org_id).values(name=name, updated_at=now)
            )
            row = await _organization_row(uow.session, org_id)
            await uow.commit()
        return _organization_view(row, access.role)

    # -- members --------------------------------------------------------------------------------------

    async def get_member(self, org_id: UUID, user_id: UUID) -> MemberInfo:
        """A member of an organization; raises `NotAMember`."""
        async with self._uow(read_only=True) as uow:
            member = await _member_info(uow.session, org_id, user_id)
        if member is None:
            raise NotAMember(f"User {user_id} is not a member of organization {org_id}.")
        return member

    async def list_member_infos(self, org_id: UUID) -> list[MemberInfo]:
        """Every member of an organization, oldest first (no access check: for trusted callers)."""
        async with self._uow(read_only=True) as uow:
            rows = (
                (
                    await uow.session.execute(
                        _member_query()
                        .where(memberships.c.org_id == org_id)
                        .order_by(memberships.c.created_at, memberships.c.user_id)
                    )
                )
                .mappings()
                .all()
            )
        return [_member_view(row) for row in rows]

    async def list_members(self, principal: Principal, org_id: UUID) -> list[MemberInfo]:
        await self.authorize(principal, org_id, Permission.MEMBERS_READ)
        return await self.list_member_infos(org_id)

    async def change_role(self, principal: Principal, org_id: UUID, user_id: UUID, role: Role) -> MemberInfo:
        """Give a member another role, within the actor's reach, never leaving the organization ownerless."""
        access = await self.authorize(principal, org_id, Permission.MEMBERS_MANAGE)
        now = self._clock.now()
        async with self._uow() as uow:
            actor = await _lock_for_membership_change(uow.session, access)
            current = await _role_of(uow.session, org_id, user_id)
            if current is None:
                raise NotAMember(f"User {user_id} is not a member of this organization.")
            owners = await _count_owners(uow.session, org_id)
            demoting_owner = current is Role.OWNER and role is not Role.OWNER
            domain.check_role_change(
                actor, current, role, owners_left_after=owners - 1 if demoting_owner else owners
            )
            if role is not current:
                await uow.session.execute(
                    update(memberships)
                    .where(memberships.c.org_id == org_id, memberships.c.user_id == user_id)
                    .values(role=role.value)
                )
                uow.publish(
                    MemberRoleChanged(
                        occurred_at=now,
                        aggregate_id=org_id,
                        org_id=org_id,
                        user_id=user_id,
                        old_role=current,
                        new_role=role,
                    )
                )
            member = await _member_info(uow.session, org_id, user_id)
            await uow.commit()
        assert member is not None
        return member

    async def remove_member(self, principal: Principal, org_id: UUID, user_id: UUID) -> None:
        """Remove a member (needs `members:manage`), or leave (a user removing themselves)."""
        is_self = principal.kind == "user" and principal.user_id == user_id
        if is_self:
            access = await self.authorize(principal, org_id, Permission.ORG_READ)
        else:
            access = await self.authorize(principal, org_id, Permission.MEMBERS_MANAGE)
        now = self._clock.now()
        async with self._uow() as uow:
            actor = await _lock_for_membership_change(uow.session, access)
            target = await _role_of(uow.session, org_id, user_id)
            if target is None:
                raise NotAMember(f"User {user_id} is not a member of this organization.")
            owners = await _count_owners(uow.session, org_id)
            domain.check_removal(
                actor,
                target,
                is_self=is_self,
                owners_left_after=owners - 1 if target is Role.OWNER else owners,
            )
            await uow.session.execute(
                memberships.delete().where(memberships.c.org_id == org_id, memberships.c.user_id == user_id)
            )
            uow.publish(MemberRemoved(occurred_at=now, aggregate_id=org_id, org_id=org_id, user_id=user_id))
            await uow.commit()

    # -- invitations ----------------------------------------------------------------------------------

    async def invite(self, principal: Principal, org_id: UUID, email: str, role: Role) -> InvitationView:
        """Invite an email address; a pending invitation to the same address is replaced."""
        access = await self.authorize(principal, org_id, Permission.MEMBERS_MANAGE)
        domain.check_invitation(actor_role(access), role)
        email = domain.normalize_email(email)
        now = self._clock.now()
        token = domain.new_opaque_token()
        async with self._uow() as uow:
            session = uow.session
            await _lock_organization(session, org_id)  # one invitation per address, even when racing
            org = await _organization_row(session, org_id)
            inviter_id, inviter_name = await _acting_user(session, principal)
            view = InvitationView(
                id=uuid7(),
                org_id=org_id,
                email=email,
                role=role,
                invited_by=inviter_id,
                created_at=now,
                expires_at=now + timedelta(seconds=self._settings.invitation_ttl_seconds),
            )
            already = await session.scalar(
                select(func.count())
                .select_from(memberships.join(users, users.c.id == memberships.c.user_id))
                .where(memberships.c.org_id == org_id, users.c.email == email)
            )
            if already:
                raise AlreadyMember(f"{email} is already a member of this organization.")
            await session.execute(
                update(invitations)
                .where(
                    invitations.c.org_id == org_id,
                    invitations.c.email == email,
                    invitations.c.accepted_at.is_(None),
                    invitations.c.revoked_at.is_(None),
                )
                .values(revoked_at=now)
            )
            await session.execute(
                invitations.insert().values(
                    id=view.id,
                    org_id=org_id,
                    email=email,
                    role=role.value,
                    token_hash=domain.token_digest(token),
                    invited_by=inviter_id,
                    created_at=now,
                    expires_at=view.expires_at,
                )
            )
            uow.publish(
                MemberInvited(
                    occurred_at=now,
                    aggregate_id=org_id,
                    invitation_id=view.id,
                    org_id=org_id,
                    org_name=org["name"],
                    email=email,
                    role=role,
                    invited_by=inviter_id,
                    invited_by_name=inviter_name,
                    invitation_token=token,
                    expires_at=view.expires_at,
                )
            )
            await uow.commit()
        return view

    async def list_invitations(self, principal: Principal, org_id: UUID) -> list[InvitationView]:
        """Invitations not yet accepted, revoked or expired, oldest first."""
        await self.authorize(principal, org_id, Permission.MEMBERS_MANAGE)
        query = (
            select(invitations)
            .where(invitations.c.org_id == org_id, _pending(self._clock.now()))
            .order_by(invitations.c.created_at, invitations.c.id)
        )
        async with self._uow(read_only=True) as uow:
            rows = (await uow.session.execute(query)).mappings().all()
        return [_invitation_view(row) for row in rows]

    async def revoke_invitation(self, principal: Principal, org_id: UUID, invitation_id: UUID) -> None:
        access = await self.authorize(principal, org_id, Permission.MEMBERS_MANAGE)
        now = self._clock.now()
        async with self._uow() as uow:
            row = (
                (
                    await uow.session.execute(
                        select(invitations).where(
                            invitations.c.id == invitation_id,
                            invitations.c.org_id == org_id,
                            invitations.c.accepted_at.is_(None),
                            invitations.c.revoked_at.is_(None),
                        )
                    )
                )
                .mappings()
                .one_or_none()
            )
            if row is None:
                raise InvitationNotFound(f"No open invitation {invitation_id} in this organization.")
            domain.check_invitation(actor_role(access), Role(row["role"]))
            await uow.session.execute(
                update(invitations).where(invitations.c.id == invitation_id).values(revoked_at=now)
            )
            await uow.commit()

    async def accept_invitation(self, principal: Principal, token: str) -> MemberInfo:
        """Join the invitation's organization; the signed-in user's email must be the invited one."""
        user_id = require_user(principal, "accept invitations")
        now = self._clock.now()
        async with self._uow() as uow:
            session = uow.session
            invitation = (
                (
                    await session.execute(
                        select(invitations).where(invitations.c.token_hash == domain.token_digest(token))
                    )
                )
                .mappings()
                .one_or_none()
            )
            if invitation is None or invitation["accepted_at"] is not None:
                raise InvalidToken("This invitation is not valid (unknown or already used).")
            if invitation["revoked_at"] is not None:
                raise InvalidToken("This invitation has been revoked.")
            if invitation["expires_at"] <= now:
                raise InvalidToken("This invitation has expired; ask for a new one.")
            email = await session.scalar(select(users.c.email).where(users.c.id == user_id))
            if email is None or domain.normalize_email(email) != domain.normalize_email(invitation["email"]):
                raise InvitationEmailMismatch(
                    "This invitation was sent to another email address; "
                    "sign in with that address to accept it."
                )
            org_id: UUID = invitation["org_id"]
            role = Role(invitation["role"])
            await _lock_organization(session, org_id)  # serialises with other membership changes
            if await _role_of(session, org_id, user_id) is not None:
                raise AlreadyMember("You are already a member of this organization.")
            claimed: CursorResult[Any] = await session.execute(
                update(invitations)
                .where(invitations.c.id == invitation["id"], invitations.c.accepted_at.is_(None))
                .values(accepted_at=now, accepted_by=user_id)
            )
            if claimed.rowcount != 1:
                raise InvalidToken("This invitation has already been used.")
            await session.execute(
                memberships.insert().values(org_id=org_id, user_id=user_id, role=role.value, created_at=now)
            )
            uow.publish(
                MemberJoined(occurred_at=now, aggregate_id=org_id, org_id=org_id, user_id=user_id, role=role)
            )
            member = await _member_info(session, org_id, user_id)
            await uow.commit()
        assert member is not None
        return member


def _not_found_detail(org_id: UUID) -> str:
    return f"No organization {org_id} that you can access."


# The tenant scope of every request (`kernel.reads`).
_MEMBER_ROLE = PreparedQuery(
    select(memberships.c.role).where(
        memberships.c.org_id == bindparam("org_id"), memberships.c.user_id == bindparam("user_id")
    )
)


async def _role_of(session: AsyncConnection, org_id: UUID, user_id: UUID) -> Role | None:
    role = await session.scalar(
        select(memberships.c.role).where(memberships.c.org_id == org_id, memberships.c.user_id == user_id)
    )
    return Role(role) if role is not None else None


async def _lock_organization(session: AsyncConnection, org_id: UUID) -> None:
    """Lock the organization for the rest of the transaction; membership changes take this lock first.

    So concurrent changes run one after the other and each sees the previous one's result: two simultaneous
    demotions cannot remove the last owner. PostgreSQL: a row lock (FOR UPDATE). SQLite has no row locks
    and runs reads before the first write outside any transaction, so there a no-op write comes first: it
    takes the database's single write lock, and the reads that follow see the latest committed state.
    """
    if session.dialect.name == "sqlite":
        locked: CursorResult[Any] = await session.execute(
            update(organizations)
            .where(organizations.c.id == org_id)
            .values(updated_at=organizations.c.updated_at)
        )
        found = locked.rowcount == 1
    else:
        found = (
            await session.scalar(
                select(organizations.c.id).where(organizations.c.id == org_id).with_for_update()
            )
        ) is not None
    if not found:
        raise OrganizationNotFound(_not_found_detail(org_id))


async def _lock_for_membership_change(session: AsyncConnection, access: Access) -> Role:
    """Lock the organization, then read the actor's role again: it may have changed since `authorize`."""
    await _lock_organization(session, access.org_id)
    principal = access.principal
    if principal.kind != "user" or principal.user_id is None:
        return actor_role(access)
    role = await _role_of(session, access.org_id, principal.user_id)
    if role is None:
        raise OrganizationNotFound(_not_found_detail(access.org_id))
    return role  # the domain rules refuse an actor that is no longer an admin or owner


async def _count_owners(session: AsyncConnection, org_id: UUID) -> int:
    owners = await session.scalar(
        select(func.count())
        .select_from(memberships)
        .where(memberships.c.org_id == org_id, memberships.c.role == Role.OWNER.value)
    )
    return int(owners or 0)


async def _organization_row(session: AsyncConnection, org_id: UUID) -> Any:
    row = (
        (await session.execute(select(organizations).where(organizations.c.id == org_id)))
        .mappings()
        .one_or_none()
    )
    if row is None:
        raise OrganizationNotFound(_not_found_detail(org_id))
    return row


async def _acting_user(session: AsyncConnection, principal: Principal) -> tuple[UUID, str]:
    """Who an action is attributed to: the user, or for an API key the user who created it."""
    if principal.kind == "user" and principal.user_id is not None:
        user_query = select(users.c.id, users.c.display_name).where(users.c.id == principal.user_id)
    else:
        user_query = (
            select(users.c.id, users.c.display_name)
            .join(api_keys, api_keys.c.created_by == users.c.id)
            .where(api_keys.c.id == principal.api_key_id)
        )
    row = (await session.execute(user_query)).one_or_none()
    if row is None:
        raise UserOnly("The acting user no longer exists.")
    return row[0], row[1]


def _member_query() -> Any:
    return select(
        memberships.c.org_id,
        memberships.c.user_id,
        memberships.c.role,
        memberships.c.created_at,
        users.c.email,
        users.c.display_name,
    ).join(users, users.c.id == memberships.c.user_id)


async def _member_info(session: AsyncConnection, org_id: UUID, user_id: UUID) -> MemberInfo | None:
    row = (
        (
            await session.execute(
                _member_query().where(memberships.c.org_id == org_id, memberships.c.user_id == user_id)
            )
        )
        .mappings()
        .one_or_none()
    )
    return _member_view(row) if row is not None else None


def _member_view(row: Any) -> MemberInfo:
    return MemberInfo(
        org_id=row["org_id"],
        user_id=row["user_id"],
        email=row["email"],
        display_name=row["display_name"],
        role=Role(row["role"]),
        joined_at=row["created_at"],
    )


def _organization_view(row: Any, role: Role | None) -> OrganizationView:
    return OrganizationView(
        id=row["id"], name=row["name"], created_at=row["created_at"], updated_at=row["updated_at"], role=role
    )


def _pending(now: datetime) -> Any:
    return and_(
        invitations.c.accepted_at.is_(None),
        invitations.c.revoked_at.is_(None),
        invitations.c.expires_at > now,
    )


def _invitation_view(row: Any) -> InvitationView:
    return InvitationView(
        id=row["id"],
        org_id=row["org_id"],
        email=row["email"],
        role=Role(row["role"]),
        invited_by=row["invited_by"],
        created_at=row["created_at"],
        expires_at=row["expires_at"],
    )
