"""Webhook endpoints over HTTP: create, list, read, change, delete, secrets, and who may do it."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from splitstone.kernel.messaging.worker import Worker
from tests.modules.auth.conftest import SignedIn, Users
from tests.modules.auth.org_helpers import add_member, assert_problem, create_api_key
from tests.modules.notifications.webhook_support import (  # fixtures are used by name
    create_endpoint,
    organization,
    webhook_settings_fixture,  # noqa: F401
)

URL = "https://hooks.example.com/in"  # never called: these tests deliver nothing


async def _create(client: httpx.AsyncClient, owner: SignedIn, org_id: str, **body: Any) -> dict[str, Any]:
    return await create_endpoint(client, owner, org_id, body.pop("url", URL), **body)


async def test_create_list_get_update_delete(client: httpx.AsyncClient, users: Users, worker: Worker) -> None:
    owner, org_id = await organization(client, users, worker)
    base = f"/api/v1/orgs/{org_id}/webhooks"

    created = await _create(
        client, owner, org_id, description="CRM sync", event_types=["auth.MemberJoined", "auth.MemberJoined"]
    )
    assert created["secret"].startswith("whsec_")
    assert created["url"] == URL
    assert created["event_types"] == ["auth.MemberJoined"]
    assert created["enabled"] is True
    assert created["disabled_reason"] is None
    second = await _create(client, owner, org_id)
    assert second["event_types"] == []

    listed = await client.get(base, headers=owner.headers)
    assert listed.status_code == 200
    assert [e["id"] for e in listed.json()["items"]] == [second["id"], created["id"]]  # newest first
    assert all("secret" not in e for e in listed.json()["items"])

    one = await client.get(f"{base}/{created['id']}", headers=owner.headers)
    assert one.status_code == 200
    assert "secret" not in one.json()
    assert one.json()["description"] == "CRM sync"

    changed = await client.patch(
        f"{base}/{created['id']}",
        json={"url": "https://other.example.com/in", "event_types": [], "description": "  all  "},
        headers=owner.headers,
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["url"] == "https://other.example.com/in"
    assert changed.json()["event_types"] == []
    assert changed.json()["description"] == "all"
    assert "secret" not in changed.json()

    disabled = await client.patch(f"{base}/{created['id']}", json={"enabled": False}, headers=owner.headers)
    assert disabled.json()["enabled"] is False
    assert disabled.json()["disabled_reason"]
    enabled = await client.patch(f"{base}/{created['id']}", json={"enabled": True}, headers=owner.headers)
    assert enabled.json()["enabled"] is True
    assert enabled.json()["disabled_reason"] is None
    assert enabled.json()["disabled_at"] is None

    deleted = await client.delete(f"{base}/{created['id']}", headers=owner.headers)
    assert deleted.status_code == 204
    assert_problem(
        await client.get(f"{base}/{created['id']}", headers=owner.headers), 404, "webhook-endpoint-not-found"
    )
    assert [e["id"] for e in (await client.get(base, headers=owner.headers)).json()["items"]] == [
        second["id"]
    ]


async def test_unknown_event_types_are_refused(
    client: httpx.AsyncClient, users: Users, worker: Worker
) -> None:
    owner, org_id = await organization(client, users, worker)
    response = await client.post(
        f"/api/v1/orgs/{org_id}/webhooks",
        json={"url": URL, "event_types": ["auth.MemberJoined", "billing.Nope"]},
        headers=owner.headers,
    )
    body = assert_problem(response, 422, "unknown-webhook-event-type")
    assert "billing.Nope" in body["detail"]
    created = await _create(client, owner, org_id)
    patched = await client.patch(
        f"/api/v1/orgs/{org_id}/webhooks/{created['id']}",
        json={"event_types": ["webhook.test"]},  # the test type is not subscribable
        headers=owner.headers,
    )
    assert_problem(patched, 422, "unknown-webhook-event-type")


@pytest.mark.parametrize(
    ("url", "status", "code"),
    [
        ("ftp://hooks.example.com/in", 422, "invalid-webhook-url"),
        ("https://user:pw@hooks.example.com/in", 422, "invalid-webhook-url"),
        ("not a url", 422, "invalid-webhook-url"),
        ("https://hooks.example.com/" + "x" * 2000, 422, "validation-error"),
    ],
)
async def test_url_rules(
    client: httpx.AsyncClient, users: Users, worker: Worker, url: str, status: int, code: str
) -> None:
    owner, org_id = await organization(client, users, worker)
    response = await client.post(f"/api/v1/orgs/{org_id}/webhooks", json={"url": url}, headers=owner.headers)
    assert response.status_code == status, response.text
    assert response.json()["code"] == code


@pytest.mark.parametrize("notifications_settings", [{"webhook_allow_private_targets": False}], indirect=True)
@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/in",
        "http://10.0.0.8/in",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]:8080/in",
        "http://[::ffff:127.0.0.1]/in",
        "http://localhost:8080/in",
    ],
)
async def test_private_targets_are_refused_at_create_and_update(
    client: httpx.AsyncClient, users: Users, worker: Worker, url: str
) -> None:
    owner, org_id = await organization(client, users, worker)
    response = await client.post(f"/api/v1/orgs/{org_id}/webhooks", json={"url": url}, headers=owner.headers)
    body = assert_problem(response, 422, "invalid-webhook-url")
    assert "cannot be sent there" in body["detail"]

    created = await _create(client, owner, org_id, url="https://93.184.216.34/in")
    patched = await client.patch(
        f"/api/v1/orgs/{org_id}/webhooks/{created['id']}", json={"url": url}, headers=owner.headers
    )
    assert_problem(patched, 422, "invalid-webhook-url")


async def test_secret_and_rotation(client: httpx.AsyncClient, users: Users, worker: Worker) -> None:
    owner, org_id = await organization(client, users, worker)
    created = await _create(client, owner, org_id)
    base = f"/api/v1/orgs/{org_id}/webhooks/{created['id']}"

    secret = await client.get(f"{base}/secret", headers=owner.headers)
    assert secret.status_code == 200
    assert secret.headers["cache-control"] == "no-store"
    assert secret.json() == {"secret": created["secret"], "previous_secret_expires_at": None}

    rotated = await client.post(f"{base}/rotate-secret", headers=owner.headers)
    assert rotated.status_code == 200
    assert rotated.json()["secret"].startswith("whsec_")
    assert rotated.json()["secret"] != created["secret"]
    assert rotated.json()["previous_secret_expires_at"] is not None
    assert (await client.get(f"{base}/secret", headers=owner.headers)).json()["secret"] == rotated.json()[
        "secret"
    ]


async def test_only_managers_of_the_organization(
    client: httpx.AsyncClient, users: Users, worker: Worker, events: Any
) -> None:
    owner, org_id = await organization(client, users, worker)
    created = await _create(client, owner, org_id)
    member = await add_member(client, events, users, owner, org_id, role="member")
    admin = await add_member(client, events, users, owner, org_id, role="admin")
    stranger = await users.signed_in()
    base = f"/api/v1/orgs/{org_id}/webhooks"
    one = f"{base}/{created['id']}"
    delivery = f"{one}/deliveries/0191f0a4-3333-7b3a-9d2e-5f6a7b8c9d0e"
    routes: list[tuple[str, str, dict[str, Any] | None]] = [
        ("GET", base, None),
        ("POST", base, {"url": URL}),
        ("GET", one, None),
        ("PATCH", one, {"enabled": False}),
        ("DELETE", one, None),
        ("GET", f"{one}/secret", None),
        ("POST", f"{one}/rotate-secret", None),
        ("POST", f"{one}/test", None),
        ("GET", f"{one}/deliveries", None),
        ("GET", delivery, None),
        ("POST", f"{delivery}/redeliver", None),
    ]
    for method, path, body in routes:
        anonymous = await client.request(method, path, json=body)
        assert_problem(anonymous, 401, "not-authenticated")
        forbidden = await client.request(method, path, json=body, headers=member.headers)
        assert_problem(forbidden, 403, "missing-permission")
        hidden = await client.request(method, path, json=body, headers=stranger.headers)
        assert_problem(hidden, 404, "organization-not-found")

    assert (await client.get(base, headers=admin.headers)).status_code == 200


async def test_another_organizations_endpoint_is_not_found(
    client: httpx.AsyncClient, users: Users, worker: Worker
) -> None:
    owner, org_id = await organization(client, users, worker)
    other_owner, other_org = await organization(client, users, worker)
    theirs = await _create(client, other_owner, other_org)
    path = f"/api/v1/orgs/{org_id}/webhooks/{theirs['id']}"
    for method, suffix in [("GET", ""), ("PATCH", ""), ("DELETE", ""), ("GET", "/secret"), ("POST", "/test")]:
        body = {"enabled": False} if method == "PATCH" else None
        response = await client.request(method, path + suffix, json=body, headers=owner.headers)
        assert_problem(response, 404, "webhook-endpoint-not-found")
    still = await client.get(f"/api/v1/orgs/{other_org}/webhooks/{theirs['id']}", headers=other_owner.headers)
    assert still.json()["enabled"] is True


async def test_api_keys_with_the_scope_manage_webhooks(
    client: httpx.AsyncClient, users: Users, worker: Worker
) -> None:
    owner, org_id = await organization(client, users, worker)
    key = await create_api_key(client, owner, org_id, scopes=["webhooks:manage"])
    read_only = await create_api_key(client, owner, org_id, scopes=["org:read"])
    headers = {"Authorization": f"Bearer {key['secret']}"}
    response = await client.post(f"/api/v1/orgs/{org_id}/webhooks", json={"url": URL}, headers=headers)
    assert response.status_code == 201, response.text
    denied = await client.get(
        f"/api/v1/orgs/{org_id}/webhooks", headers={"Authorization": f"Bearer {read_only['secret']}"}
    )
    assert_problem(denied, 403, "missing-permission")


async def test_requests_refuse_unknown_fields(
    client: httpx.AsyncClient, users: Users, worker: Worker
) -> None:
    owner, org_id = await organization(client, users, worker)
    response = await client.post(
        f"/api/v1/orgs/{org_id}/webhooks", json={"url": URL, "secret": "whsec_mine"}, headers=owner.headers
    )
    assert response.status_code == 422
