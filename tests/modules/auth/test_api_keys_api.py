"""API keys over HTTP: created with a secret shown once, used as bearer tokens, scoped, revoked, expiring."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from datetime import datetime, timedelta

import httpx
import pytest
from sqlalchemy import select

from splitstone.kernel.clock import ManualClock
from splitstone.kernel.container import Container
from splitstone.kernel.events import EventRecorder
from splitstone.modules.auth import domain
from splitstone.modules.auth.api import Permission, Role
from splitstone.modules.auth.api_keys import READ_SCOPES
from splitstone.modules.auth.storage import api_keys
from tests.modules.auth.conftest import Users
from tests.modules.auth.org_helpers import (
    add_member,
    assert_problem,
    bearer,
    create_api_key,
    create_org,
    org_routes,
)

KEY_FORMAT = re.compile(r"^ssk_([A-Za-z0-9]{12})_([A-Za-z0-9_-]{43})$")


async def test_create_shows_the_secret_once(
    client: httpx.AsyncClient, users: Users, clock: ManualClock, container: Container
) -> None:
    owner = await users.signed_in()
    org_id = await create_org(client, owner)
    expires = clock.now() + timedelta(days=30)

    response = await client.post(
        f"/api/v1/orgs/{org_id}/api-keys",
        json={
            "name": " deploy bot ",
            "scopes": ["projects:read", "org:read"],
            "expires_at": expires.isoformat(),
        },
        headers=owner.headers,
    )

    assert response.status_code == 201, response.text
    assert response.headers["cache-control"] == "no-store"
    created = response.json()
    match = KEY_FORMAT.match(created["secret"])
    assert match, created["secret"]
    assert created["prefix"] == f"ssk_{match.group(1)}"
    assert created["name"] == "deploy bot"
    assert created["scopes"] == ["org:read", "projects:read"]
    assert created["created_by"] == str(owner.user_id)
    assert datetime.fromisoformat(created["expires_at"]) == expires
    assert created["last_used_at"] is None
    assert created["revoked_at"] is None

    listed = (await client.get(f"/api/v1/orgs/{org_id}/api-keys", headers=owner.headers)).json()["items"]
    assert len(listed) == 1
    assert "secret" not in listed[0]
    assert created["secret"] not in str(listed)
    assert {k: v for k, v in created.items() if k != "secret"} == listed[0]

    # Only a digest is stored.
    async with container.databases["auth"].session() as session:
        row = (await session.execute(select(api_keys))).mappings().one()
    assert row["secret_hash"] == hashlib.sha256(created["secret"].encode()).hexdigest()
    assert match.group(2) not in str(dict(row))


async def test_default_scopes_are_the_read_scopes(client: httpx.AsyncClient, users: Users) -> None:
    owner = await users.signed_in()
    org_id = await create_org(client, owner)
    created = await create_api_key(client, owner, org_id)
    assert set(created["scopes"]) == {p.value for p in READ_SCOPES}
    assert created["expires_at"] is None


async def test_a_key_reads_its_organization(client: httpx.AsyncClient, users: Users) -> None:
    owner = await users.signed_in()
    org_id = await create_org(client, owner, "Acme")
    key = await create_api_key(client, owner, org_id, scopes=["org:read", "members:read"])

    org = await client.get(f"/api/v1/orgs/{org_id}", headers=bearer(key["secret"]))
    assert org.status_code == 200, org.text
    assert (org.json()["name"], org.json()["role"]) == ("Acme", None)
    members = await client.get(f"/api/v1/orgs/{org_id}/members", headers=bearer(key["secret"]))
    assert [m["user_id"] for m in members.json()["items"]] == [str(owner.user_id)]


async def test_a_key_is_limited_to_its_scopes(client: httpx.AsyncClient, users: Users) -> None:
    owner = await users.signed_in()
    org_id = await create_org(client, owner)
    key = bearer((await create_api_key(client, owner, org_id, scopes=["org:read"]))["secret"])

    problem = assert_problem(
        await client.get(f"/api/v1/orgs/{org_id}/members", headers=key), 403, "missing-permission"
    )
    assert problem["permission"] == "members:read"
    assert "scopes" in problem["detail"]
    response = await client.patch(f"/api/v1/orgs/{org_id}", json={"name": "x"}, headers=key)
    assert_problem(response, 403, "missing-permission")
    response = await client.get(f"/api/v1/orgs/{org_id}/api-keys", headers=key)
    assert_problem(response, 403, "missing-permission")


async def test_a_key_may_not_do_user_only_things(client: httpx.AsyncClient, users: Users) -> None:
    owner = await users.signed_in()
    org_id = await create_org(client, owner)
    key = bearer(
        (await create_api_key(client, owner, org_id, scopes=["org:read", "api_keys:manage"]))["secret"]
    )

    assert_problem(await client.post("/api/v1/orgs", json={"name": "x"}, headers=key), 403, "user-required")
    assert_problem(await client.get("/api/v1/orgs", headers=key), 403, "user-required")
    response = await client.post(f"/api/v1/orgs/{org_id}/api-keys", json={"name": "child"}, headers=key)
    problem = assert_problem(response, 403, "user-required")
    assert "API keys cannot create API keys" in problem["detail"]
    # With api_keys:manage it may list (never secrets) and revoke.
    listed = await client.get(f"/api/v1/orgs/{org_id}/api-keys", headers=key)
    assert listed.status_code == 200


async def test_a_key_of_another_organization_is_not_found(
    client: httpx.AsyncClient, users: Users, events: EventRecorder
) -> None:
    ada, eve = await users.signed_in(), await users.signed_in()
    org_a = await create_org(client, ada, "A")
    org_b = await create_org(client, eve, "B")
    a_key = await create_api_key(client, ada, org_a, scopes=["org:read"])
    every_scope = ["org:read", "org:update", "members:read", "members:manage", "api_keys:manage"]
    eve_key = bearer((await create_api_key(client, eve, org_b, scopes=every_scope))["secret"])

    for method, path, body in org_routes(f"/api/v1/orgs/{org_a}", ada.user_id, a_key["id"], a_key["id"]):
        response = await client.request(method, path, json=body, headers=eve_key)
        assert_problem(response, 404, "organization-not-found")
    assert (await client.get(f"/api/v1/orgs/{org_b}", headers=eve_key)).status_code == 200
    # An id of A's key in B's path is not found either.
    response = await client.delete(f"/api/v1/orgs/{org_b}/api-keys/{a_key['id']}", headers=eve_key)
    assert_problem(response, 404, "api-key-not-found")
    assert (await client.get(f"/api/v1/orgs/{org_a}", headers=bearer(a_key["secret"]))).status_code == 200


async def test_admins_create_keys_members_do_not(
    client: httpx.AsyncClient, users: Users, events: EventRecorder
) -> None:
    owner = await users.signed_in()
    org_id = await create_org(client, owner)
    admin = await add_member(client, events, users, owner, org_id, "admin")
    member = await add_member(client, events, users, owner, org_id, "member")
    path = f"/api/v1/orgs/{org_id}/api-keys"

    response = await client.post(
        path, json={"name": "k", "scopes": ["members:manage"]}, headers=admin.headers
    )
    assert response.status_code == 201
    problem = assert_problem(
        await client.post(path, json={"name": "k", "scopes": ["org:read"]}, headers=member.headers),
        403,
        "missing-permission",
    )
    assert problem["permission"] == "api_keys:manage"


async def test_a_creator_grants_no_scope_beyond_their_role(
    client: httpx.AsyncClient, users: Users, events: EventRecorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Today admins hold every permission, so narrow the admin role to see the rule act.
    narrowed = domain.ROLE_PERMISSIONS[Role.ADMIN] - {Permission.BILLING_MANAGE}
    monkeypatch.setitem(domain.ROLE_PERMISSIONS, Role.ADMIN, narrowed)
    owner = await users.signed_in()
    org_id = await create_org(client, owner)
    admin = await add_member(client, events, users, owner, org_id, "admin")
    path = f"/api/v1/orgs/{org_id}/api-keys"

    body = {"name": "k", "scopes": ["org:read", "billing:manage"]}
    problem = assert_problem(
        await client.post(path, json=body, headers=admin.headers), 403, "scopes-not-allowed"
    )
    assert problem["scopes"] == ["billing:manage"]
    assert "billing:manage" in problem["detail"]
    assert (await client.post(path, json=body, headers=owner.headers)).status_code == 201


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "k", "scopes": []}, "scopes"),
        ({"name": "k", "scopes": ["root"]}, "scopes"),
        ({"name": "", "scopes": ["org:read"]}, "name"),
        ({"name": "k", "expires_at": "2030-01-01T00:00:00"}, "expires_at"),  # naive
        ({"name": "k", "expires_at": "soon"}, "expires_at"),
    ],
)
async def test_invalid_key_requests(
    client: httpx.AsyncClient, users: Users, body: dict[str, object], field: str
) -> None:
    owner = await users.signed_in()
    org_id = await create_org(client, owner)
    response = await client.post(f"/api/v1/orgs/{org_id}/api-keys", json=body, headers=owner.headers)
    problem = assert_problem(response, 422, "validation-error")
    assert problem["errors"][0]["loc"][:2] == ["body", field]


async def test_expiry_must_be_in_the_future(
    client: httpx.AsyncClient, users: Users, clock: ManualClock
) -> None:
    owner = await users.signed_in()
    org_id = await create_org(client, owner)
    past = (clock.now() - timedelta(seconds=1)).isoformat()
    response = await client.post(
        f"/api/v1/orgs/{org_id}/api-keys", json={"name": "k", "expires_at": past}, headers=owner.headers
    )
    assert "future" in assert_problem(response, 422, "invalid-input")["detail"]


async def test_revoked_key_no_longer_authenticates(client: httpx.AsyncClient, users: Users) -> None:
    owner = await users.signed_in()
    org_id = await create_org(client, owner)
    key = await create_api_key(client, owner, org_id, scopes=["org:read"])
    assert (await client.get(f"/api/v1/orgs/{org_id}", headers=bearer(key["secret"]))).status_code == 200

    path = f"/api/v1/orgs/{org_id}/api-keys/{key['id']}"
    assert (await client.delete(path, headers=owner.headers)).status_code == 204

    response = await client.get(f"/api/v1/orgs/{org_id}", headers=bearer(key["secret"]))
    problem = assert_problem(response, 401, "invalid-credentials")
    assert "revoked" in problem["detail"]
    assert response.headers["www-authenticate"].startswith("Bearer")
    listed = (await client.get(f"/api/v1/orgs/{org_id}/api-keys", headers=owner.headers)).json()["items"]
    assert listed[0]["revoked_at"] is not None
    # Revoking again is harmless; an unknown key is not found.
    assert (await client.delete(path, headers=owner.headers)).status_code == 204
    assert_problem(
        await client.delete(f"/api/v1/orgs/{org_id}/api-keys/{owner.user_id}", headers=owner.headers),
        404,
        "api-key-not-found",
    )


async def test_expired_key_no_longer_authenticates(
    client: httpx.AsyncClient, users: Users, clock: ManualClock
) -> None:
    owner = await users.signed_in()
    org_id = await create_org(client, owner)
    expires = clock.now() + timedelta(hours=1)
    key = bearer(
        (await create_api_key(client, owner, org_id, scopes=["org:read"], expires_at=expires.isoformat()))[
            "secret"
        ]
    )
    assert (await client.get(f"/api/v1/orgs/{org_id}", headers=key)).status_code == 200

    clock.advance(timedelta(hours=1))

    problem = assert_problem(
        await client.get(f"/api/v1/orgs/{org_id}", headers=key), 401, "invalid-credentials"
    )
    assert "expired" in problem["detail"]


@pytest.mark.parametrize(
    "mangle",
    [
        lambda key: key[:-1] + ("A" if key[-1] != "A" else "B"),  # wrong secret
        lambda key: key[:-5],  # truncated
        lambda key: key.replace("_", "-", 2),  # no separators
        lambda key: "ssk_" + "A" * 12 + "_" + key.split("_", 2)[2],  # unknown public id
        lambda key: key[:10],  # prefix only
        lambda key: "ssk_",
        lambda key: "ssk_!!!!!!!!!!!!_" + "a" * 43,
        lambda key: key + "x" * 300,  # oversized
    ],
)
async def test_malformed_or_wrong_keys_are_401(
    client: httpx.AsyncClient, users: Users, mangle: Callable[[str], str]
) -> None:
    owner = await users.signed_in()
    org_id = await create_org(client, owner)
    key = (await create_api_key(client, owner, org_id, scopes=["org:read"]))["secret"]
    wrong = mangle(key)
    assert wrong != key

    response = await client.get(f"/api/v1/orgs/{org_id}", headers=bearer(wrong))

    assert_problem(response, 401, "invalid-credentials")


async def test_last_used_at_is_recorded_at_most_once_a_minute(
    client: httpx.AsyncClient, users: Users, clock: ManualClock
) -> None:
    owner = await users.signed_in()
    org_id = await create_org(client, owner)
    key = await create_api_key(client, owner, org_id, scopes=["org:read"])
    headers = bearer(key["secret"])

    async def last_used() -> datetime | None:
        listed = (await client.get(f"/api/v1/orgs/{org_id}/api-keys", headers=owner.headers)).json()["items"]
        value = listed[0]["last_used_at"]
        return datetime.fromisoformat(value) if value else None

    assert await last_used() is None
    first_use = clock.now()
    await client.get(f"/api/v1/orgs/{org_id}", headers=headers)
    assert await last_used() == first_use

    clock.advance(timedelta(seconds=30))
    await client.get(f"/api/v1/orgs/{org_id}", headers=headers)
    assert await last_used() == first_use  # not rewritten within the minute

    clock.advance(timedelta(seconds=31))
    await client.get(f"/api/v1/orgs/{org_id}", headers=headers)
    assert await last_used() == clock.now()
