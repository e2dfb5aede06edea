"""What the e2e journeys share beyond sign-up: people in an organization, and answers read as problems.

Everything goes over HTTP (and the SMTP mailbox), so the same steps run against any deployment: one
process, or services behind a proxy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from tests.e2e.conftest import RunningServer
from tests.e2e.test_auth_journey import BASE_URL, PROBLEM, bearer, sign_up, token_of


@dataclass(frozen=True)
class Person:
    """A signed-in user: their address, id and the headers that authenticate them."""

    email: str
    user_id: str
    access_token: str

    @property
    def auth(self) -> dict[str, str]:
        return bearer(self.access_token)


async def person(http: httpx.AsyncClient, server: RunningServer, email: str) -> Person:
    """Registered, verified from the emailed link, and signed in."""
    tokens = await sign_up(http, server, email)
    me = await http.get("/api/v1/auth/me", headers=bearer(tokens["access_token"]))
    assert me.status_code == 200, me.text
    return Person(email=email, user_id=me.json()["id"], access_token=tokens["access_token"])


async def organization(http: httpx.AsyncClient, owner: Person, name: str) -> str:
    """A new organization owned by `owner`; its id."""
    created = await http.post("/api/v1/orgs", json={"name": name}, headers=owner.auth)
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


async def join(
    http: httpx.AsyncClient, server: RunningServer, owner: Person, org_id: str, email: str
) -> Person:
    """`email` invited by `owner` as a member, signed up, and in through the invitation email's link."""
    invited = await http.post(
        f"/api/v1/orgs/{org_id}/invitations", json={"email": email, "role": "member"}, headers=owner.auth
    )
    assert invited.status_code == 201, invited.text
    [invitation] = await server.mailbox.wait_for(email, containing="/invitations/accept?token=")
    link = invitation.link(f"{BASE_URL}/invitations/accept?token=")
    member = await person(http, server, email)
    accepted = await http.post(
        "/api/v1/invitations/accept", json={"token": token_of(link)}, headers=member.auth
    )
    assert accepted.status_code == 200, accepted.text
    return member


def problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The RFC 9457 problem `response` is, checked to have this status and code."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith(PROBLEM), response.headers["content-type"]
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["code"] == code, body
    return body
