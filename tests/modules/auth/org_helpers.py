"""Helpers for organization and API-key tests: set up tenants through the public API, check problems."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import httpx

from splitstone.kernel.events import EventRecorder
from splitstone.modules.auth.api import MemberInvited
from tests.modules.auth.conftest import SignedIn, Users


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The response is an RFC 9457 problem with this status and code; returns its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["code"] == code, body
    assert body["type"] == f"/problems/{code}"
    assert body["title"]
    return body


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def create_org(client: httpx.AsyncClient, owner: SignedIn, name: str = "Acme") -> str:
    response = await client.post("/api/v1/orgs", json={"name": name}, headers=owner.headers)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def invite(
    client: httpx.AsyncClient,
    events: EventRecorder,
    by: SignedIn,
    org_id: str,
    email: str,
    role: str = "member",
) -> tuple[dict[str, Any], str]:
    """Invite `email`; returns the invitation and its token (from the `MemberInvited` event)."""
    response = await client.post(
        f"/api/v1/orgs/{org_id}/invitations", json={"email": email, "role": role}, headers=by.headers
    )
    assert response.status_code == 201, response.text
    event = events.last(MemberInvited)
    assert str(event.invitation_id) == response.json()["id"]
    return response.json(), event.invitation_token


async def add_member(
    client: httpx.AsyncClient,
    events: EventRecorder,
    users: Users,
    owner: SignedIn,
    org_id: str,
    role: str = "member",
) -> SignedIn:
    """A new signed-in user who joined `org_id` with `role` by accepting an invitation."""
    member = await users.signed_in()
    _, token = await invite(client, events, owner, org_id, member.email, role)
    response = await client.post("/api/v1/invitations/accept", json={"token": token}, headers=member.headers)
    assert response.status_code == 200, response.text
    assert response.json()["role"] == role
    return member


async def create_api_key(client: httpx.AsyncClient, by: SignedIn, org_id: str, **body: Any) -> dict[str, Any]:
    body.setdefault("name", "CI")
    response = await client.post(f"/api/v1/orgs/{org_id}/api-keys", json=body, headers=by.headers)
    assert response.status_code == 201, response.text
    return dict(response.json())


def org_routes(
    base: str, member_id: UUID, invitation_id: str, key_id: str
) -> list[tuple[str, str, dict[str, object] | None]]:
    """Every route under one organization (`base`), each with a valid body."""
    return [
        ("GET", base, None),
        ("PATCH", base, {"name": "Taken over"}),
        ("GET", f"{base}/members", None),
        ("PATCH", f"{base}/members/{member_id}", {"role": "member"}),
        ("DELETE", f"{base}/members/{member_id}", None),
        ("GET", f"{base}/invitations", None),
        ("POST", f"{base}/invitations", {"email": "spy@example.com", "role": "owner"}),
        ("DELETE", f"{base}/invitations/{invitation_id}", None),
        ("GET", f"{base}/api-keys", None),
        ("POST", f"{base}/api-keys", {"name": "stolen", "scopes": ["org:read"]}),
        ("DELETE", f"{base}/api-keys/{key_id}", None),
    ]
