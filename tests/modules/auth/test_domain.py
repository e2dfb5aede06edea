"""Auth's role rules, without I/O: permissions per role, role changes, removals and invitations."""

from __future__ import annotations

import pytest

from splitstone.modules.auth import domain
from splitstone.modules.auth.api import Permission, Role
from splitstone.modules.auth.domain import LastOwner, RoleTooHigh

OWNER, ADMIN, MEMBER = Role.OWNER, Role.ADMIN, Role.MEMBER


class TestPermissions:
    def test_roles_are_nested(self) -> None:
        # Owners differ from admins in rank (who may manage owners), not in permissions.
        assert domain.permissions_of(MEMBER) < domain.permissions_of(ADMIN) <= domain.permissions_of(OWNER)

    def test_owner_holds_every_permission(self) -> None:
        assert domain.permissions_of(OWNER) == frozenset(Permission)

    def test_member_reads_and_works_but_manages_nothing(self) -> None:
        member = domain.permissions_of(MEMBER)
        assert {Permission.ORG_READ, Permission.MEMBERS_READ, Permission.TASKS_WRITE} <= member
        assert not {p for p in member if p.value.endswith(":manage") or p is Permission.ORG_UPDATE}

    def test_admin_manages_the_organization_members_and_keys(self) -> None:
        admin = domain.permissions_of(ADMIN)
        assert {Permission.MEMBERS_MANAGE, Permission.API_KEYS_MANAGE, Permission.ORG_UPDATE} <= admin

    def test_every_role_has_permissions(self) -> None:
        assert set(domain.ROLE_PERMISSIONS) == set(Role)


class TestRoleChange:
    @pytest.mark.parametrize(
        ("actor", "current", "new"),
        [
            (OWNER, MEMBER, ADMIN),
            (OWNER, ADMIN, OWNER),
            (OWNER, OWNER, MEMBER),
            (ADMIN, MEMBER, ADMIN),
            (ADMIN, ADMIN, MEMBER),
        ],
    )
    def test_allowed(self, actor: Role, current: Role, new: Role) -> None:
        domain.check_role_change(actor, current, new, owners_left_after=1)

    def test_members_manage_nobody(self) -> None:
        with pytest.raises(RoleTooHigh, match="Only admins and owners"):
            domain.check_role_change(MEMBER, MEMBER, MEMBER, owners_left_after=1)

    def test_admin_cannot_grant_owner(self) -> None:
        with pytest.raises(RoleTooHigh, match="owner role"):
            domain.check_role_change(ADMIN, MEMBER, OWNER, owners_left_after=2)

    def test_admin_cannot_touch_an_owner(self) -> None:
        with pytest.raises(RoleTooHigh, match="owner role"):
            domain.check_role_change(ADMIN, OWNER, MEMBER, owners_left_after=5)

    def test_last_owner_cannot_be_demoted(self) -> None:
        with pytest.raises(LastOwner) as raised:
            domain.check_role_change(OWNER, OWNER, ADMIN, owners_left_after=0)
        assert raised.value.status == 409
        assert raised.value.code == "last-owner"

    def test_an_owner_can_be_demoted_while_another_remains(self) -> None:
        domain.check_role_change(OWNER, OWNER, ADMIN, owners_left_after=1)

    def test_permission_is_checked_before_the_owner_count(self) -> None:
        with pytest.raises(RoleTooHigh):
            domain.check_role_change(ADMIN, OWNER, ADMIN, owners_left_after=0)


class TestRemoval:
    def test_anyone_may_leave(self) -> None:
        for role in Role:
            domain.check_removal(role, role, is_self=True, owners_left_after=1)

    def test_last_owner_cannot_leave(self) -> None:
        with pytest.raises(LastOwner):
            domain.check_removal(OWNER, OWNER, is_self=True, owners_left_after=0)

    def test_last_owner_cannot_be_removed(self) -> None:
        with pytest.raises(LastOwner):
            domain.check_removal(OWNER, OWNER, is_self=False, owners_left_after=0)

    def test_owner_removes_another_owner_when_one_remains(self) -> None:
        domain.check_removal(OWNER, OWNER, is_self=False, owners_left_after=1)

    def test_admin_removes_members_and_admins(self) -> None:
        domain.check_removal(ADMIN, MEMBER, is_self=False, owners_left_after=1)
        domain.check_removal(ADMIN, ADMIN, is_self=False, owners_left_after=1)

    def test_admin_cannot_remove_an_owner(self) -> None:
        with pytest.raises(RoleTooHigh, match="cannot remove an owner"):
            domain.check_removal(ADMIN, OWNER, is_self=False, owners_left_after=1)

    def test_member_cannot_remove_others(self) -> None:
        with pytest.raises(RoleTooHigh):
            domain.check_removal(MEMBER, MEMBER, is_self=False, owners_left_after=1)

    def test_refusal_comes_before_the_owner_count(self) -> None:
        # An admin trying to remove the only owner is told "not allowed", not "last owner".
        with pytest.raises(RoleTooHigh):
            domain.check_removal(ADMIN, OWNER, is_self=False, owners_left_after=0)


class TestInvitation:
    @pytest.mark.parametrize(
        ("actor", "role"), [(OWNER, OWNER), (OWNER, ADMIN), (ADMIN, ADMIN), (ADMIN, MEMBER), (OWNER, MEMBER)]
    )
    def test_allowed(self, actor: Role, role: Role) -> None:
        domain.check_invitation(actor, role)

    def test_admin_cannot_invite_an_owner(self) -> None:
        with pytest.raises(RoleTooHigh, match="cannot invite an owner"):
            domain.check_invitation(ADMIN, OWNER)

    def test_member_cannot_invite(self) -> None:
        with pytest.raises(RoleTooHigh):
            domain.check_invitation(MEMBER, MEMBER)


class TestTokens:
    def test_opaque_tokens_are_long_and_unique(self) -> None:
        tokens = {domain.new_opaque_token() for _ in range(100)}
        assert len(tokens) == 100
        assert all(len(t) >= 43 for t in tokens)

    def test_digest_is_stable_and_hides_the_token(self) -> None:
        token = domain.new_opaque_token()
        digest = domain.token_digest(token)
        assert digest == domain.token_digest(token)
        assert token not in digest
        assert len(digest) == 64
        assert domain.digests_match(digest, domain.token_digest(token))
        assert not domain.digests_match(digest, domain.token_digest(token + "x"))

    def test_emails_are_normalised(self) -> None:
        assert domain.normalize_email("  Ada@Example.COM ") == "ada@example.com"
