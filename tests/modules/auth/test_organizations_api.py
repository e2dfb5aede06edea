"""Organizations and members over HTTP: tenancy, the role matrix, role changes, removal and leaving."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest

from splitstone.kernel.events import EventRecorder
from splitstone.modules.auth.api import (
    MemberJoined,
    MemberRemoved,
    MemberRoleChanged,
    OrganizationCreated,
    Role,
)
from tests.modules.auth.conftest import SignedIn, Users
from tests.modules.auth.org_helpers import add_member, assert_problem, create_org, invite, org_routes


class TestCreateAndList:
    async def test_creator_becomes_owner(
        self, client: httpx.AsyncClient, users: Users, events: EventRecorder
    ) -> None:
        ada = await users.signed_in()

        response = await client.post("/api/v1/orgs", json={"name": "  Acme Inc.  "}, headers=ada.headers)

        assert response.status_code == 201, response.text
        org = response.json()
        assert org["name"] == "Acme Inc."
        assert org["role"] == "owner"
        assert response.headers["location"] == f"/api/v1/orgs/{org['id']}"
        created = events.last(OrganizationCreated)
        assert (str(created.org_id), created.org_name, created.owner_id) == (
            org["id"],
            "Acme Inc.",
            ada.user_id,
        )
        joined = events.last(MemberJoined)
        assert (str(joined.org_id), joined.user_id, joined.role) == (org["id"], ada.user_id, Role.OWNER)

        fetched = await client.get(response.headers["location"], headers=ada.headers)
        assert fetched.status_code == 200
        assert fetched.json() == org
        members = (await client.get(f"/api/v1/orgs/{org['id']}/members", headers=ada.headers)).json()["items"]
        assert [(m["user_id"], m["email"], m["role"]) for m in members] == [
            (str(ada.user_id), ada.email, "owner")
        ]

    @pytest.mark.parametrize("name", ["", "   ", "x" * 201])
    async def test_name_must_be_present_and_short(
        self, client: httpx.AsyncClient, users: Users, name: str
    ) -> None:
        ada = await users.signed_in()
        response = await client.post("/api/v1/orgs", json={"name": name}, headers=ada.headers)
        body = assert_problem(response, 422, "validation-error")
        assert body["errors"][0]["loc"] == ["body", "name"]

    async def test_unknown_fields_are_refused(self, client: httpx.AsyncClient, users: Users) -> None:
        ada = await users.signed_in()
        response = await client.post(
            "/api/v1/orgs", json={"name": "Acme", "plan": "gold"}, headers=ada.headers
        )
        assert_problem(response, 422, "validation-error")

    async def test_list_shows_my_organizations_with_my_role(
        self, client: httpx.AsyncClient, users: Users, events: EventRecorder
    ) -> None:
        ada, bob = await users.signed_in(), await users.signed_in()
        first = await create_org(client, ada, "First")
        second = await create_org(client, ada, "Second")
        bobs = await create_org(client, bob, "Bob's")
        await add_member(client, events, users, bob, bobs, "admin")  # someone else, not ada
        await invite(client, events, bob, bobs, ada.email)  # invited is not a member yet

        mine = (await client.get("/api/v1/orgs", headers=ada.headers)).json()["items"]
        assert [(o["id"], o["name"], o["role"]) for o in mine] == [
            (first, "First", "owner"),
            (second, "Second", "owner"),
        ]
        theirs = (await client.get("/api/v1/orgs", headers=bob.headers)).json()["items"]
        assert [o["id"] for o in theirs] == [bobs]

    async def test_authentication_is_required(self, client: httpx.AsyncClient) -> None:
        assert_problem(await client.get("/api/v1/orgs"), 401, "not-authenticated")
        response = await client.post(
            "/api/v1/orgs", json={"name": "Acme"}, headers={"Authorization": "Bearer x"}
        )
        assert response.status_code == 401
        assert response.headers["content-type"].startswith("application/problem+json")

    async def test_rename(self, client: httpx.AsyncClient, users: Users) -> None:
        ada = await users.signed_in()
        org_id = await create_org(client, ada, "Old")
        response = await client.patch(f"/api/v1/orgs/{org_id}", json={"name": " New "}, headers=ada.headers)
        assert response.status_code == 200, response.text
        assert response.json()["name"] == "New"
        assert (await client.get(f"/api/v1/orgs/{org_id}", headers=ada.headers)).json()["name"] == "New"


class TestTenancy:
    async def test_outsiders_get_404_for_everything_in_another_organization(
        self, client: httpx.AsyncClient, users: Users, events: EventRecorder
    ) -> None:
        ada, eve = await users.signed_in(), await users.signed_in()
        org_a = await create_org(client, ada, "A")
        await create_org(client, eve, "B")  # eve is an owner, but of another organization
        invitation, _ = await invite(client, events, ada, org_a, "someone@example.com")
        key = await client.post(
            f"/api/v1/orgs/{org_a}/api-keys", json={"name": "k", "scopes": ["org:read"]}, headers=ada.headers
        )
        base = f"/api/v1/orgs/{org_a}"

        for method, path, body in org_routes(base, ada.user_id, invitation["id"], key.json()["id"]):
            response = await client.request(method, path, json=body, headers=eve.headers)
            problem = assert_problem(response, 404, "organization-not-found")
            assert org_a in problem["detail"]

        # An organization that does not exist answers the same: existence does not leak.
        missing = f"/api/v1/orgs/{uuid.uuid4()}"
        assert_problem(await client.get(missing, headers=eve.headers), 404, "organization-not-found")
        # Nothing changed in A.
        members = (await client.get(f"{base}/members", headers=ada.headers)).json()["items"]
        assert [m["role"] for m in members] == ["owner"]
        assert (await client.get(base, headers=ada.headers)).json()["name"] == "A"

    async def test_ids_from_another_organization_are_not_found_in_mine(
        self, client: httpx.AsyncClient, users: Users, events: EventRecorder
    ) -> None:
        ada, eve = await users.signed_in(), await users.signed_in()
        org_a = await create_org(client, ada, "A")
        org_b = await create_org(client, eve, "B")
        invitation, _ = await invite(client, events, ada, org_a, "someone@example.com")

        # eve manages B, and names A's member and invitation in B's paths.
        response = await client.patch(
            f"/api/v1/orgs/{org_b}/members/{ada.user_id}", json={"role": "member"}, headers=eve.headers
        )
        assert_problem(response, 404, "not-a-member")
        response = await client.delete(f"/api/v1/orgs/{org_b}/members/{ada.user_id}", headers=eve.headers)
        assert_problem(response, 404, "not-a-member")
        response = await client.delete(
            f"/api/v1/orgs/{org_b}/invitations/{invitation['id']}", headers=eve.headers
        )
        assert_problem(response, 404, "invitation-not-found")
        pending = (await client.get(f"/api/v1/orgs/{org_a}/invitations", headers=ada.headers)).json()["items"]
        assert [i["id"] for i in pending] == [invitation["id"]]


class TestPermissionMatrix:
    @pytest.mark.parametrize(
        ("role", "allowed"),
        [
            ("member", {"read org", "read members"}),
            (
                "admin",
                {
                    "read org",
                    "read members",
                    "rename",
                    "list invitations",
                    "invite",
                    "list keys",
                    "create key",
                },
            ),
            (
                "owner",
                {
                    "read org",
                    "read members",
                    "rename",
                    "list invitations",
                    "invite",
                    "list keys",
                    "create key",
                },
            ),
        ],
    )
    async def test_what_each_role_may_do(
        self,
        client: httpx.AsyncClient,
        users: Users,
        events: EventRecorder,
        role: str,
        allowed: set[str],
    ) -> None:
        owner = await users.signed_in()
        org_id = await create_org(client, owner)
        actor = await add_member(client, events, users, owner, org_id, role)
        base = f"/api/v1/orgs/{org_id}"
        operations: dict[str, tuple[str, str, dict[str, object] | None, int, str]] = {
            "read org": ("GET", base, None, 200, "org:read"),
            "read members": ("GET", f"{base}/members", None, 200, "members:read"),
            "rename": ("PATCH", base, {"name": "Renamed"}, 200, "org:update"),
            "list invitations": ("GET", f"{base}/invitations", None, 200, "members:manage"),
            "invite": ("POST", f"{base}/invitations", {"email": "n@example.com"}, 201, "members:manage"),
            "list keys": ("GET", f"{base}/api-keys", None, 200, "api_keys:manage"),
            "create key": (
                "POST",
                f"{base}/api-keys",
                {"name": "k", "scopes": ["org:read"]},
                201,
                "api_keys:manage",
            ),
        }
        for label, (method, path, body, success, permission) in operations.items():
            response = await client.request(method, path, json=body, headers=actor.headers)
            if label in allowed:
                assert response.status_code == success, (label, response.text)
            else:
                problem = assert_problem(response, 403, "missing-permission")
                assert problem["permission"] == permission, label
                assert permission in problem["detail"]


class TestRoleChanges:
    async def test_owner_promotes_a_member(
        self, client: httpx.AsyncClient, users: Users, events: EventRecorder
    ) -> None:
        owner = await users.signed_in()
        org_id = await create_org(client, owner)
        member = await add_member(client, events, users, owner, org_id)

        response = await client.patch(
            f"/api/v1/orgs/{org_id}/members/{member.user_id}", json={"role": "admin"}, headers=owner.headers
        )

        assert response.status_code == 200, response.text
        assert response.json()["role"] == "admin"
        assert response.json()["email"] == member.email
        changed = events.last(MemberRoleChanged)
        assert (changed.user_id, changed.old_role, changed.new_role) == (
            member.user_id,
            Role.MEMBER,
            Role.ADMIN,
        )
        # The promotion takes effect at once: the new admin manages members.
        invited = await client.get(f"/api/v1/orgs/{org_id}/invitations", headers=member.headers)
        assert invited.status_code == 200

    async def test_setting_the_same_role_publishes_nothing(
        self, client: httpx.AsyncClient, users: Users, events: EventRecorder
    ) -> None:
        owner = await users.signed_in()
        org_id = await create_org(client, owner)
        member = await add_member(client, events, users, owner, org_id)
        response = await client.patch(
            f"/api/v1/orgs/{org_id}/members/{member.user_id}", json={"role": "member"}, headers=owner.headers
        )
        assert response.status_code == 200
        assert events.of_type(MemberRoleChanged) == []

    async def test_admin_manages_up_to_admin_but_never_owners(
        self, client: httpx.AsyncClient, users: Users, events: EventRecorder
    ) -> None:
        owner = await users.signed_in()
        org_id = await create_org(client, owner)
        admin = await add_member(client, events, users, owner, org_id, "admin")
        member = await add_member(client, events, users, owner, org_id)
        members = f"/api/v1/orgs/{org_id}/members"

        response = await client.patch(
            f"{members}/{member.user_id}", json={"role": "admin"}, headers=admin.headers
        )
        assert response.status_code == 200
        response = await client.patch(
            f"{members}/{member.user_id}", json={"role": "owner"}, headers=admin.headers
        )
        assert_problem(response, 403, "role-too-high")
        response = await client.patch(
            f"{members}/{owner.user_id}", json={"role": "member"}, headers=admin.headers
        )
        assert_problem(response, 403, "role-too-high")
        response = await client.patch(
            f"{members}/{admin.user_id}", json={"role": "owner"}, headers=admin.headers
        )
        assert_problem(response, 403, "role-too-high")

        roles = {
            m["user_id"]: m["role"]
            for m in (await client.get(members, headers=owner.headers)).json()["items"]
        }
        assert roles == {
            str(owner.user_id): "owner",
            str(admin.user_id): "admin",
            str(member.user_id): "admin",
        }

    async def test_member_changes_no_roles(
        self, client: httpx.AsyncClient, users: Users, events: EventRecorder
    ) -> None:
        owner = await users.signed_in()
        org_id = await create_org(client, owner)
        member = await add_member(client, events, users, owner, org_id)
        response = await client.patch(
            f"/api/v1/orgs/{org_id}/members/{member.user_id}", json={"role": "admin"}, headers=member.headers
        )
        problem = assert_problem(response, 403, "missing-permission")
        assert problem["permission"] == "members:manage"

    async def test_last_owner_cannot_be_demoted(
        self, client: httpx.AsyncClient, users: Users, events: EventRecorder
    ) -> None:
        owner = await users.signed_in()
        org_id = await create_org(client, owner)
        path = f"/api/v1/orgs/{org_id}/members/{owner.user_id}"

        assert_problem(
            await client.patch(path, json={"role": "admin"}, headers=owner.headers), 409, "last-owner"
        )

        second = await add_member(client, events, users, owner, org_id, "owner")
        response = await client.patch(path, json={"role": "admin"}, headers=owner.headers)
        assert response.status_code == 200, response.text
        # Now `second` is the last owner.
        response = await client.patch(
            f"/api/v1/orgs/{org_id}/members/{second.user_id}", json={"role": "member"}, headers=second.headers
        )
        assert_problem(response, 409, "last-owner")

    async def test_concurrent_self_demotions_leave_one_owner(
        self, client: httpx.AsyncClient, users: Users, events: EventRecorder
    ) -> None:
        first = await users.signed_in()
        org_id = await create_org(client, first)
        owners = [first]
        for _ in range(3):
            owners.append(await add_member(client, events, users, first, org_id, "owner"))

        responses = await asyncio.gather(
            *(
                client.patch(
                    f"/api/v1/orgs/{org_id}/members/{o.user_id}", json={"role": "admin"}, headers=o.headers
                )
                for o in owners
            )
        )

        assert sorted(r.status_code for r in responses) == [200, 200, 200, 409], [r.text for r in responses]
        members = (await client.get(f"/api/v1/orgs/{org_id}/members", headers=first.headers)).json()["items"]
        assert [m["role"] for m in members].count("owner") == 1

    async def test_unknown_member_is_not_found(self, client: httpx.AsyncClient, users: Users) -> None:
        owner = await users.signed_in()
        org_id = await create_org(client, owner)
        response = await client.patch(
            f"/api/v1/orgs/{org_id}/members/{uuid.uuid4()}", json={"role": "admin"}, headers=owner.headers
        )
        assert_problem(response, 404, "not-a-member")

    async def test_unknown_role_is_a_validation_error(self, client: httpx.AsyncClient, users: Users) -> None:
        owner = await users.signed_in()
        org_id = await create_org(client, owner)
        response = await client.patch(
            f"/api/v1/orgs/{org_id}/members/{owner.user_id}", json={"role": "emperor"}, headers=owner.headers
        )
        assert_problem(response, 422, "validation-error")


class TestRemovalAndLeaving:
    async def test_member_leaves(
        self, client: httpx.AsyncClient, users: Users, events: EventRecorder
    ) -> None:
        owner = await users.signed_in()
        org_id = await create_org(client, owner)
        member = await add_member(client, events, users, owner, org_id)

        response = await client.delete(
            f"/api/v1/orgs/{org_id}/members/{member.user_id}", headers=member.headers
        )

        assert response.status_code == 204
        assert response.content == b""
        removed = events.last(MemberRemoved)
        assert (str(removed.org_id), removed.user_id) == (org_id, member.user_id)
        assert_problem(
            await client.get(f"/api/v1/orgs/{org_id}", headers=member.headers), 404, "organization-not-found"
        )
        assert (await client.get("/api/v1/orgs", headers=member.headers)).json()["items"] == []

    async def test_last_owner_cannot_leave(self, client: httpx.AsyncClient, users: Users) -> None:
        owner = await users.signed_in()
        org_id = await create_org(client, owner)
        response = await client.delete(
            f"/api/v1/orgs/{org_id}/members/{owner.user_id}", headers=owner.headers
        )
        problem = assert_problem(response, 409, "last-owner")
        assert "owner" in problem["detail"]

    async def test_owner_leaves_when_another_owner_remains(
        self, client: httpx.AsyncClient, users: Users, events: EventRecorder
    ) -> None:
        owner = await users.signed_in()
        org_id = await create_org(client, owner)
        await add_member(client, events, users, owner, org_id, "owner")
        response = await client.delete(
            f"/api/v1/orgs/{org_id}/members/{owner.user_id}", headers=owner.headers
        )
        assert response.status_code == 204

    async def test_who_may_remove_whom(
        self, client: httpx.AsyncClient, users: Users, events: EventRecorder
    ) -> None:
        owner = await users.signed_in()
        org_id = await create_org(client, owner)
        admin = await add_member(client, events, users, owner, org_id, "admin")
        member = await add_member(client, events, users, owner, org_id)
        other = await add_member(client, events, users, owner, org_id)
        other_admin = await add_member(client, events, users, owner, org_id, "admin")
        members = f"/api/v1/orgs/{org_id}/members"

        problem = assert_problem(
            await client.delete(f"{members}/{other.user_id}", headers=member.headers),
            403,
            "missing-permission",
        )
        assert problem["permission"] == "members:manage"
        assert_problem(
            await client.delete(f"{members}/{owner.user_id}", headers=admin.headers), 403, "role-too-high"
        )
        assert (await client.delete(f"{members}/{other.user_id}", headers=admin.headers)).status_code == 204
        assert (
            await client.delete(f"{members}/{other_admin.user_id}", headers=admin.headers)
        ).status_code == 204
        assert (await client.delete(f"{members}/{admin.user_id}", headers=owner.headers)).status_code == 204

        remaining = (await client.get(members, headers=owner.headers)).json()["items"]
        assert {m["user_id"] for m in remaining} == {str(owner.user_id), str(member.user_id)}
        assert len(events.of_type(MemberRemoved)) == 3

    async def test_removed_admin_loses_access_immediately(
        self, client: httpx.AsyncClient, users: Users, events: EventRecorder
    ) -> None:
        owner = await users.signed_in()
        org_id = await create_org(client, owner)
        admin: SignedIn = await add_member(client, events, users, owner, org_id, "admin")
        await client.delete(f"/api/v1/orgs/{org_id}/members/{admin.user_id}", headers=owner.headers)
        response = await client.get(f"/api/v1/orgs/{org_id}/members", headers=admin.headers)
        assert_problem(response, 404, "organization-not-found")
