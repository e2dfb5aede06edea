"""Invitations over HTTP: invite, list, revoke, accept; expiry, reuse, email mismatch, re-invites."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import httpx

from splitstone.kernel.clock import ManualClock
from splitstone.kernel.events import EventRecorder
from splitstone.modules.auth.api import MemberInvited, MemberJoined, Role
from splitstone.modules.auth.settings import AuthSettings
from tests.modules.auth.conftest import Users
from tests.modules.auth.org_helpers import (
    add_member,
    assert_problem,
    bearer,
    create_api_key,
    create_org,
    invite,
)

ACCEPT = "/api/v1/invitations/accept"


async def test_invite_and_accept(
    client: httpx.AsyncClient, users: Users, events: EventRecorder, clock: ManualClock
) -> None:
    owner = await users.signed_in()
    org_id = await create_org(client, owner, "Acme")
    grace = await users.signed_in("grace@example.com")

    response = await client.post(
        f"/api/v1/orgs/{org_id}/invitations",
        json={"email": "Grace@Example.com", "role": "admin"},
        headers=owner.headers,
    )

    assert response.status_code == 201, response.text
    invitation = response.json()
    assert invitation["email"] == "grace@example.com"
    assert invitation["role"] == "admin"
    assert invitation["invited_by"] == str(owner.user_id)
    assert "token" not in str(invitation).lower()
    event = events.last(MemberInvited)
    assert str(event.invitation_id) == invitation["id"]
    assert (event.org_name, event.email, event.role) == ("Acme", "grace@example.com", Role.ADMIN)
    assert event.invited_by_name == owner.email.split("@")[0]
    assert event.expires_at == clock.now() + timedelta(seconds=AuthSettings().invitation_ttl_seconds)
    assert event.invitation_token not in response.text
    pending = (await client.get(f"/api/v1/orgs/{org_id}/invitations", headers=owner.headers)).json()["items"]
    assert pending == [invitation]

    accepted = await client.post(ACCEPT, json={"token": event.invitation_token}, headers=grace.headers)

    assert accepted.status_code == 200, accepted.text
    membership = accepted.json()
    assert (membership["org_id"], membership["user_id"], membership["role"]) == (
        org_id,
        str(grace.user_id),
        "admin",
    )
    joined = events.last(MemberJoined)
    assert (str(joined.org_id), joined.user_id, joined.role) == (org_id, grace.user_id, Role.ADMIN)
    assert (await client.get(f"/api/v1/orgs/{org_id}/invitations", headers=owner.headers)).json()[
        "items"
    ] == []
    mine = (await client.get("/api/v1/orgs", headers=grace.headers)).json()["items"]
    assert [(o["id"], o["role"]) for o in mine] == [(org_id, "admin")]


async def test_a_used_invitation_cannot_be_used_again(
    client: httpx.AsyncClient, users: Users, events: EventRecorder
) -> None:
    owner = await users.signed_in()
    org_id = await create_org(client, owner)
    grace = await users.signed_in()
    _, token = await invite(client, events, owner, org_id, grace.email)
    assert (await client.post(ACCEPT, json={"token": token}, headers=grace.headers)).status_code == 200

    assert_problem(
        await client.post(ACCEPT, json={"token": token}, headers=grace.headers), 400, "invalid-token"
    )
    assert len(events.of_type(MemberJoined)) == 2  # the owner's and grace's, once


async def test_expired_invitation_is_refused(
    client: httpx.AsyncClient, users: Users, events: EventRecorder, clock: ManualClock
) -> None:
    owner = await users.signed_in()
    org_id = await create_org(client, owner)
    grace = await users.signed_in()
    _, token = await invite(client, events, owner, org_id, grace.email)

    clock.advance(timedelta(seconds=AuthSettings().invitation_ttl_seconds + 1))
    # Access tokens expired too: sign in again.
    owner = replace(owner, access_token=(await users.login(owner.email))["access_token"])
    grace = replace(grace, access_token=(await users.login(grace.email))["access_token"])

    response = await client.post(ACCEPT, json={"token": token}, headers=grace.headers)
    assert "expired" in assert_problem(response, 400, "invalid-token")["detail"]
    pending = await client.get(f"/api/v1/orgs/{org_id}/invitations", headers=owner.headers)
    assert pending.json()["items"] == []
    # A new invitation works.
    _, new_token = await invite(client, events, owner, org_id, grace.email)
    assert (await client.post(ACCEPT, json={"token": new_token}, headers=grace.headers)).status_code == 200


async def test_revoked_invitation_is_refused(
    client: httpx.AsyncClient, users: Users, events: EventRecorder
) -> None:
    owner = await users.signed_in()
    org_id = await create_org(client, owner)
    grace = await users.signed_in()
    invitation, token = await invite(client, events, owner, org_id, grace.email)
    path = f"/api/v1/orgs/{org_id}/invitations/{invitation['id']}"

    assert (await client.delete(path, headers=owner.headers)).status_code == 204

    problem = assert_problem(
        await client.post(ACCEPT, json={"token": token}, headers=grace.headers), 400, "invalid-token"
    )
    assert "revoked" in problem["detail"]
    assert (await client.get(f"/api/v1/orgs/{org_id}/invitations", headers=owner.headers)).json()[
        "items"
    ] == []
    assert_problem(await client.delete(path, headers=owner.headers), 404, "invitation-not-found")


async def test_unknown_token_is_refused(client: httpx.AsyncClient, users: Users) -> None:
    grace = await users.signed_in()
    assert_problem(
        await client.post(ACCEPT, json={"token": "nope"}, headers=grace.headers), 400, "invalid-token"
    )
    assert_problem(
        await client.post(ACCEPT, json={"token": ""}, headers=grace.headers), 422, "validation-error"
    )


async def test_only_the_invited_address_may_accept(
    client: httpx.AsyncClient, users: Users, events: EventRecorder
) -> None:
    owner = await users.signed_in()
    org_id = await create_org(client, owner)
    grace, mallory = await users.signed_in(), await users.signed_in()
    _, token = await invite(client, events, owner, org_id, grace.email)

    response = await client.post(ACCEPT, json={"token": token}, headers=mallory.headers)

    assert_problem(response, 403, "invitation-email-mismatch")
    assert (await client.get("/api/v1/orgs", headers=mallory.headers)).json()["items"] == []
    # The invitation is still good for grace.
    assert (await client.post(ACCEPT, json={"token": token}, headers=grace.headers)).status_code == 200


async def test_reinviting_replaces_the_pending_invitation(
    client: httpx.AsyncClient, users: Users, events: EventRecorder
) -> None:
    owner = await users.signed_in()
    org_id = await create_org(client, owner)
    grace = await users.signed_in()
    _, old_token = await invite(client, events, owner, org_id, grace.email, "member")
    second, new_token = await invite(client, events, owner, org_id, grace.email.upper(), "admin")

    pending = (await client.get(f"/api/v1/orgs/{org_id}/invitations", headers=owner.headers)).json()["items"]
    assert pending == [second]
    assert_problem(
        await client.post(ACCEPT, json={"token": old_token}, headers=grace.headers), 400, "invalid-token"
    )
    accepted = await client.post(ACCEPT, json={"token": new_token}, headers=grace.headers)
    assert accepted.json()["role"] == "admin"


async def test_inviting_a_member_conflicts(
    client: httpx.AsyncClient, users: Users, events: EventRecorder
) -> None:
    owner = await users.signed_in()
    org_id = await create_org(client, owner)
    member = await add_member(client, events, users, owner, org_id)
    for email in (member.email, owner.email.upper()):
        response = await client.post(
            f"/api/v1/orgs/{org_id}/invitations", json={"email": email}, headers=owner.headers
        )
        assert_problem(response, 409, "already-a-member")


async def test_admin_cannot_invite_an_owner(
    client: httpx.AsyncClient, users: Users, events: EventRecorder
) -> None:
    owner = await users.signed_in()
    org_id = await create_org(client, owner)
    admin = await add_member(client, events, users, owner, org_id, "admin")
    path = f"/api/v1/orgs/{org_id}/invitations"

    response = await client.post(
        path, json={"email": "boss@example.com", "role": "owner"}, headers=admin.headers
    )
    assert_problem(response, 403, "role-too-high")
    response = await client.post(
        path, json={"email": "peer@example.com", "role": "admin"}, headers=admin.headers
    )
    assert response.status_code == 201
    # Nor revoke an owner's invitation for an owner.
    owner_invite, _ = await invite(client, events, owner, org_id, "co-owner@example.com", "owner")
    response = await client.delete(f"{path}/{owner_invite['id']}", headers=admin.headers)
    assert_problem(response, 403, "role-too-high")


async def test_invalid_invitation_bodies(client: httpx.AsyncClient, users: Users) -> None:
    owner = await users.signed_in()
    org_id = await create_org(client, owner)
    path = f"/api/v1/orgs/{org_id}/invitations"
    for body in ({"email": "not-an-email"}, {"email": "a@example.com", "role": "king"}, {}):
        assert_problem(await client.post(path, json=body, headers=owner.headers), 422, "validation-error")


async def test_api_keys_cannot_accept_invitations(
    client: httpx.AsyncClient, users: Users, events: EventRecorder
) -> None:
    owner = await users.signed_in()
    org_id = await create_org(client, owner)
    _, token = await invite(client, events, owner, org_id, "robot@example.com")
    key = await create_api_key(client, owner, org_id, scopes=["org:read"])

    response = await client.post(ACCEPT, json={"token": token}, headers=bearer(key["secret"]))

    problem = assert_problem(response, 403, "user-required")
    assert "API keys cannot" in problem["detail"]


async def test_an_api_key_with_members_manage_invites_on_behalf_of_its_creator(
    client: httpx.AsyncClient, users: Users, events: EventRecorder
) -> None:
    owner = await users.signed_in()
    org_id = await create_org(client, owner)
    key = await create_api_key(client, owner, org_id, scopes=["members:manage"])
    path = f"/api/v1/orgs/{org_id}/invitations"

    response = await client.post(path, json={"email": "new@example.com"}, headers=bearer(key["secret"]))
    assert response.status_code == 201, response.text
    assert response.json()["invited_by"] == str(owner.user_id)
    # A key reaches no further than an admin: it never invites owners.
    response = await client.post(
        path, json={"email": "boss@example.com", "role": "owner"}, headers=bearer(key["secret"])
    )
    assert_problem(response, 403, "role-too-high")
