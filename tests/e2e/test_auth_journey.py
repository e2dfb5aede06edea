"""The auth journey a new customer takes, over real HTTP against a running server.

register → the verification email → verify → login → create org → invite → the invitation email →
accept → API key → refresh reuse detection → logout; and forgot password → the reset email → reset once.
Every link comes from an email the server delivered to a real SMTP server.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import jwt
import pytest

from splitstone.kernel.settings import Settings
from tests.e2e.conftest import RunningServer

pytestmark = pytest.mark.e2e

PASSWORD = "granite quarry splits 7 ways"
PROBLEM = "application/problem+json"
BASE_URL = Settings.model_fields["public_base_url"].default


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def token_of(link: str) -> str:
    [token] = parse_qs(urlsplit(link).query)["token"]
    return token


async def sign_up(http: httpx.AsyncClient, server: RunningServer, email: str) -> dict[str, Any]:
    response = await http.post(
        "/api/v1/auth/register",
        json={"email": email, "password": PASSWORD, "display_name": email.split("@")[0]},
    )
    assert response.status_code == 202, response.text
    [mail] = await server.mailbox.wait_for(email, containing="/verify-email?token=")
    link = mail.link(f"{BASE_URL}/verify-email?token=")
    assert link.replace("&", "&amp;") in mail.html or link in mail.html  # the same link behind the button
    verified = await http.post("/api/v1/auth/verify-email", json={"token": token_of(link)})
    assert verified.status_code == 200, verified.text
    assert verified.json()["email_verified"] is True
    login = await http.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD})
    assert login.status_code == 200, login.text
    return dict(login.json())


async def test_the_whole_auth_journey(http: httpx.AsyncClient, server: RunningServer) -> None:
    # Health first: the server is migrated and ready.
    assert (await http.get("/healthz")).json() == {"status": "ok"}
    assert (await http.get("/readyz")).status_code == 200

    alice = await sign_up(http, server, "alice@example.com")
    me = await http.get("/api/v1/auth/me", headers=bearer(alice["access_token"]))
    assert me.status_code == 200
    assert me.json()["email"] == "alice@example.com"
    assert me.json()["email_verified"] is True

    # The token verifies with nothing but the published JWKS: what another service would do.
    jwks = (await http.get("/.well-known/jwks.json")).json()
    kid = jwt.get_unverified_header(alice["access_token"])["kid"]
    (key,) = [k for k in jwks["keys"] if k["kid"] == kid]
    claims = jwt.decode(
        alice["access_token"],
        jwt.PyJWK(key).key,
        algorithms=["EdDSA"],
        audience="splitstone",
        issuer="splitstone",
    )
    assert claims["sub"] == me.json()["id"]

    created = await http.post("/api/v1/orgs", json={"name": "Acme"}, headers=bearer(alice["access_token"]))
    assert created.status_code == 201, created.text
    org_id = created.json()["id"]

    invited = await http.post(
        f"/api/v1/orgs/{org_id}/invitations",
        json={"email": "bob@example.com", "role": "member"},
        headers=bearer(alice["access_token"]),
    )
    assert invited.status_code == 201, invited.text
    assert "token" not in invited.text
    [invitation] = await server.mailbox.wait_for("bob@example.com", containing="/invitations/accept?token=")
    assert "Acme" in invitation.subject
    accept_link = invitation.link(f"{BASE_URL}/invitations/accept?token=")

    bob = await sign_up(http, server, "bob@example.com")
    # Before accepting, Bob cannot see that Acme exists.
    hidden = await http.get(f"/api/v1/orgs/{org_id}", headers=bearer(bob["access_token"]))
    assert hidden.status_code == 404
    assert hidden.headers["content-type"].startswith(PROBLEM)
    accepted = await http.post(
        "/api/v1/invitations/accept",
        json={"token": token_of(accept_link)},
        headers=bearer(bob["access_token"]),
    )
    assert accepted.status_code == 200, accepted.text
    members = await http.get(f"/api/v1/orgs/{org_id}/members", headers=bearer(bob["access_token"]))
    assert members.status_code == 200
    assert {(m["email"], m["role"]) for m in members.json()["items"]} == {
        ("alice@example.com", "owner"),
        ("bob@example.com", "member"),
    }
    # A member may not manage API keys.
    forbidden = await http.post(
        f"/api/v1/orgs/{org_id}/api-keys",
        json={"name": "ci", "scopes": ["org:read"]},
        headers=bearer(bob["access_token"]),
    )
    assert forbidden.status_code == 403
    assert forbidden.json()["code"] == "missing-permission"

    key = await http.post(
        f"/api/v1/orgs/{org_id}/api-keys",
        json={"name": "ci", "scopes": ["org:read", "members:read"]},
        headers=bearer(alice["access_token"]),
    )
    assert key.status_code == 201, key.text
    secret = key.json()["secret"]
    assert secret.startswith("ssk_")
    by_key = await http.get(f"/api/v1/orgs/{org_id}", headers=bearer(secret))
    assert by_key.status_code == 200
    assert by_key.json()["name"] == "Acme"
    listed = await http.get(f"/api/v1/orgs/{org_id}/api-keys", headers=bearer(alice["access_token"]))
    assert secret not in listed.text

    # Refresh rotates; presenting the old refresh token again revokes the whole family.
    rotated = await http.post("/api/v1/auth/refresh", json={"refresh_token": alice["refresh_token"]})
    assert rotated.status_code == 200, rotated.text
    newest = rotated.json()["refresh_token"]
    assert newest != alice["refresh_token"]
    reuse = await http.post("/api/v1/auth/refresh", json={"refresh_token": alice["refresh_token"]})
    assert reuse.status_code == 401
    assert reuse.headers["content-type"].startswith(PROBLEM)
    after_reuse = await http.post("/api/v1/auth/refresh", json={"refresh_token": newest})
    assert after_reuse.status_code == 401

    # Logout ends Bob's session: his refresh token is dead afterwards.
    out = await http.post("/api/v1/auth/logout", headers=bearer(bob["access_token"]))
    assert out.status_code == 204
    dead = await http.post("/api/v1/auth/refresh", json={"refresh_token": bob["refresh_token"]})
    assert dead.status_code == 401


async def test_a_forgotten_password_is_reset_once_from_the_emailed_link(
    http: httpx.AsyncClient, server: RunningServer
) -> None:
    await sign_up(http, server, "dora@example.com")

    asked = await http.post("/api/v1/auth/password/forgot", json={"email": "dora@example.com"})
    assert asked.status_code == 202, asked.text
    [mail] = await server.mailbox.wait_for("dora@example.com", containing="/reset-password?token=")
    token = token_of(mail.link(f"{BASE_URL}/reset-password?token="))

    new_password = "a fresh slab of basalt 9"
    reset = await http.post(
        "/api/v1/auth/password/reset", json={"token": token, "new_password": new_password}
    )
    assert reset.status_code == 204, reset.text
    again = await http.post(
        "/api/v1/auth/password/reset", json={"token": token, "new_password": "yet another stone 10"}
    )
    assert again.status_code == 400
    assert again.json()["code"] == "invalid-token"

    old = await http.post("/api/v1/auth/login", json={"email": "dora@example.com", "password": PASSWORD})
    assert old.status_code == 401
    new = await http.post("/api/v1/auth/login", json={"email": "dora@example.com", "password": new_password})
    assert new.status_code == 200
    # The security notice follows: verification, reset link, then "your password was changed".
    received = await server.mailbox.wait_for("dora@example.com", count=3)
    assert received[2].subject != received[1].subject


async def test_bad_input_is_a_problem_never_a_500(http: httpx.AsyncClient) -> None:
    cases = [
        (
            "POST",
            "/api/v1/auth/register",
            {"content": b"{not json", "headers": {"content-type": "application/json"}},
            422,
        ),
        ("POST", "/api/v1/auth/register", {"json": {"email": "not-an-email", "password": "x"}}, 422),
        (
            "POST",
            "/api/v1/auth/login",
            {"json": {"email": "nobody@example.com", "password": "wrong password!"}},
            401,
        ),
        ("GET", "/api/v1/auth/me", {"headers": {"Authorization": "Bearer not.a.jwt"}}, 401),
        ("GET", "/api/v1/orgs/not-a-uuid", {"headers": {}}, 401),
        ("GET", "/api/v1/nowhere", {}, 404),
        ("DELETE", "/healthz", {}, 405),
        (
            "POST",
            "/api/v1/auth/login",
            {"content": b"x" * 2_000_000, "headers": {"content-type": "application/json"}},
            413,
        ),
    ]
    for method, path, options, status in cases:
        response = await http.request(method, path, **options)
        assert response.status_code == status, (method, path, response.status_code, response.text)
        assert response.headers["content-type"].startswith(PROBLEM), (method, path)
        body = response.json()
        assert body["status"] == status
        assert body["type"].startswith("/problems/")
        assert response.headers["x-request-id"] == body.get("request_id", response.headers["x-request-id"])
