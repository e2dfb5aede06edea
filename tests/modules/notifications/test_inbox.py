"""The in-app inbox over HTTP: pages, filters, read marks, archive, and who may see what."""

from __future__ import annotations

import itertools
from typing import Any
from uuid import UUID

import httpx
import pytest
from uuid6 import uuid7

from splitstone.modules.notifications.api import Recipient
from splitstone.modules.notifications.catalog import KINDS
from splitstone.modules.notifications.service import NotificationsService
from tests.modules.auth.conftest import SignedIn, Users

INBOX = "/api/v1/notifications"
_keys = itertools.count()


async def _notify(service: NotificationsService, user_id: UUID, *, org_id: UUID | None = None) -> None:
    kind = KINDS["auth.member_joined"]
    await service.notify(
        kind.name, [Recipient(user_id=user_id)], dict(kind.example), f"k{next(_keys)}", org_id
    )


async def _items(client: httpx.AsyncClient, who: SignedIn, **params: Any) -> list[dict[str, Any]]:
    response = await client.get(INBOX, headers=who.headers, params=params)
    assert response.status_code == 200, response.text
    return list(response.json()["items"])


async def _unread(client: httpx.AsyncClient, who: SignedIn) -> int:
    response = await client.get(f"{INBOX}/unread-count", headers=who.headers)
    assert response.status_code == 200, response.text
    return int(response.json()["unread"])


async def test_pages_cover_every_item_once_newest_first(
    client: httpx.AsyncClient, users: Users, notifications: NotificationsService
) -> None:
    ada = await users.signed_in()
    for _ in range(23):
        await _notify(notifications, ada.user_id)
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 10} | ({"cursor": cursor} if cursor else {})
        response = await client.get(INBOX, headers=ada.headers, params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        seen += [item["id"] for item in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert len(seen) == len(set(seen)) == 23
    assert seen == sorted(seen, key=UUID, reverse=True)
    first = (await _items(client, ada, limit=1))[0]
    assert first["kind"] == "auth.member_joined"
    assert first["category"] == "organization"
    assert first["data"] == KINDS["auth.member_joined"].example
    assert first["title"]
    assert first["body"]
    assert first["read_at"] is None
    assert first["archived_at"] is None


async def test_an_exact_page_ends_without_a_cursor(
    client: httpx.AsyncClient, users: Users, notifications: NotificationsService
) -> None:
    ada = await users.signed_in()
    for _ in range(3):
        await _notify(notifications, ada.user_id)
    response = await client.get(INBOX, headers=ada.headers, params={"limit": 3})
    assert len(response.json()["items"]) == 3
    assert response.json()["next_cursor"] is None


@pytest.mark.parametrize("cursor", ["!!!", "AAAA", "AZKzxF1uf4Ca", "AZKzxF1uf4CaAZKzxF1uf4Ca=="])
async def test_a_malformed_cursor_is_a_problem(client: httpx.AsyncClient, users: Users, cursor: str) -> None:
    ada = await users.signed_in()
    response = await client.get(INBOX, headers=ada.headers, params={"cursor": cursor})
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "invalid-cursor"


@pytest.mark.parametrize("limit", [0, 101])
async def test_limit_is_bounded(client: httpx.AsyncClient, users: Users, limit: int) -> None:
    ada = await users.signed_in()
    response = await client.get(INBOX, headers=ada.headers, params={"limit": limit})
    assert response.status_code == 422
    assert response.json()["code"] == "validation-error"


async def test_read_unread_and_read_all(
    client: httpx.AsyncClient, users: Users, notifications: NotificationsService
) -> None:
    ada = await users.signed_in()
    for _ in range(3):
        await _notify(notifications, ada.user_id)
    first, second, _third = (i["id"] for i in await _items(client, ada))
    assert await _unread(client, ada) == 3

    read = await client.post(f"{INBOX}/{first}/read", headers=ada.headers)
    assert read.status_code == 200, read.text
    assert read.json()["read_at"] is not None
    again = await client.post(f"{INBOX}/{first}/read", headers=ada.headers)
    assert again.json()["read_at"] == read.json()["read_at"]  # idempotent
    assert await _unread(client, ada) == 2
    assert [i["id"] for i in await _items(client, ada, unread="true")] == [second, _third]

    unread = await client.post(f"{INBOX}/{first}/unread", headers=ada.headers)
    assert unread.status_code == 200
    assert unread.json()["read_at"] is None
    assert await _unread(client, ada) == 3

    everything = await client.post(f"{INBOX}/read-all", headers=ada.headers)
    assert everything.status_code == 200, everything.text
    assert everything.json() == {"updated": 3, "unread": 0}
    assert await _items(client, ada, unread="true") == []
    again_all = await client.post(f"{INBOX}/read-all", headers=ada.headers)
    assert again_all.json() == {"updated": 0, "unread": 0}


async def test_archive_moves_items_out_of_the_inbox_and_back(
    client: httpx.AsyncClient, users: Users, notifications: NotificationsService
) -> None:
    ada = await users.signed_in()
    for _ in range(2):
        await _notify(notifications, ada.user_id)
    newest, oldest = (i["id"] for i in await _items(client, ada))

    archived = await client.post(f"{INBOX}/{newest}/archive", headers=ada.headers)
    assert archived.status_code == 200, archived.text
    assert archived.json()["archived_at"] is not None
    assert [i["id"] for i in await _items(client, ada)] == [oldest]
    assert [i["id"] for i in await _items(client, ada, archived="true")] == [newest]
    assert await _unread(client, ada) == 1  # archived items leave the badge
    read_all = await client.post(f"{INBOX}/read-all", headers=ada.headers)
    assert read_all.json()["updated"] == 1  # the archived one stays as it was

    back = await client.post(f"{INBOX}/{newest}/unarchive", headers=ada.headers)
    assert back.status_code == 200
    assert back.json()["archived_at"] is None
    assert [i["id"] for i in await _items(client, ada)] == [newest, oldest]
    assert await _unread(client, ada) == 1


async def test_organization_filter(
    client: httpx.AsyncClient, users: Users, notifications: NotificationsService
) -> None:
    ada = await users.signed_in()
    acme, globex = uuid7(), uuid7()
    await _notify(notifications, ada.user_id, org_id=acme)
    await _notify(notifications, ada.user_id, org_id=globex)
    await _notify(notifications, ada.user_id, org_id=acme)
    only_acme = await _items(client, ada, org_id=str(acme))
    assert len(only_acme) == 2
    assert {i["org_id"] for i in only_acme} == {str(acme)}
    response = await client.post(f"{INBOX}/read-all", headers=ada.headers, params={"org_id": str(acme)})
    assert response.json() == {"updated": 2, "unread": 1}
    count = await client.get(f"{INBOX}/unread-count", headers=ada.headers, params={"org_id": str(globex)})
    assert count.json() == {"unread": 1}


async def test_someone_elses_item_is_not_found(
    client: httpx.AsyncClient, users: Users, notifications: NotificationsService
) -> None:
    ada, bob = await users.signed_in(), await users.signed_in()
    await _notify(notifications, ada.user_id)
    item = (await _items(client, ada))[0]["id"]
    assert await _items(client, bob) == []
    for action in ("read", "unread", "archive", "unarchive"):
        response = await client.post(f"{INBOX}/{item}/{action}", headers=bob.headers)
        assert response.status_code == 404, action
        assert response.json()["code"] == "notification-not-found"
    missing = await client.post(f"{INBOX}/{uuid7()}/read", headers=ada.headers)
    assert missing.status_code == 404
    assert (await _items(client, ada))[0]["read_at"] is None


async def test_api_keys_have_no_inbox(client: httpx.AsyncClient, users: Users) -> None:
    ada = await users.signed_in()
    org = await client.post("/api/v1/orgs", headers=ada.headers, json={"name": "Acme"})
    assert org.status_code == 201, org.text
    key = await client.post(
        f"/api/v1/orgs/{org.json()['id']}/api-keys", headers=ada.headers, json={"name": "ci"}
    )
    assert key.status_code == 201, key.text
    headers = {"Authorization": f"Bearer {key.json()['secret']}"}
    for method, path in (
        ("GET", INBOX),
        ("GET", f"{INBOX}/unread-count"),
        ("POST", f"{INBOX}/read-all"),
        ("GET", f"{INBOX}/stream"),
        ("GET", f"{INBOX}/preferences"),
    ):
        response = await client.request(method, path, headers=headers)
        assert response.status_code == 403, path
        assert response.json()["code"] == "user-required"


async def test_anonymous_callers_must_sign_in(client: httpx.AsyncClient) -> None:
    for method, path in (
        ("GET", INBOX),
        ("GET", f"{INBOX}/unread-count"),
        ("POST", f"{INBOX}/read-all"),
        ("POST", f"{INBOX}/{uuid7()}/read"),
        ("GET", f"{INBOX}/stream"),
        ("GET", f"{INBOX}/preferences"),
    ):
        response = await client.request(method, path)
        assert response.status_code == 401, path
        assert response.headers["content-type"] == "application/problem+json"
