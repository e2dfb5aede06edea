"""One-click unsubscribe over HTTP (RFC 8058): a signed link, no sign-in, and GET changes nothing."""

from __future__ import annotations

import json
from urllib.parse import urlsplit

import httpx
from sqlalchemy import select
from uuid6 import uuid7

from splitstone.kernel.container import Container
from splitstone.modules.notifications.api import Category, Recipient
from splitstone.modules.notifications.catalog import KINDS
from splitstone.modules.notifications.service import NotificationsService
from splitstone.modules.notifications.storage import deliveries
from tests.modules.auth.conftest import SignedIn, Users


def _path(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


async def _organization_email(client: httpx.AsyncClient, who: SignedIn) -> bool:
    response = await client.get("/api/v1/notifications/preferences", headers=who.headers)
    assert response.status_code == 200, response.text
    (preference,) = (
        p
        for p in response.json()["preferences"]
        if (p["category"], p["channel"]) == ("organization", "email")
    )
    return bool(preference["enabled"])


async def test_one_click_post_unsubscribes_from_that_categorys_email(
    client: httpx.AsyncClient, users: Users, notifications: NotificationsService
) -> None:
    ada = await users.signed_in()
    link = notifications.unsubscribe.url(ada.user_id, Category.ORGANIZATION)
    assert link.startswith(notifications.base_url.rstrip("/") + "/api/v1/notifications/unsubscribe?token=")
    response = await client.post(
        _path(link),
        content="List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 200, response.text
    assert response.json() == {
        "category": "organization",
        "channel": "email",
        "enabled": False,
        "detail": "You will no longer receive organization emails.",
    }
    assert not await _organization_email(client, ada)
    # Idempotent, and an empty body (or a multipart one) works as well.
    again = await client.post(_path(link))
    assert again.status_code == 200
    multipart = await client.post(_path(link), files={"List-Unsubscribe": (None, "One-Click")})
    assert multipart.status_code == 200
    assert not await _organization_email(client, ada)
    # Nothing else changed.
    preferences = (await client.get("/api/v1/notifications/preferences", headers=ada.headers)).json()
    assert [(p["category"], p["channel"]) for p in preferences["preferences"] if not p["enabled"]] == [
        ("organization", "email")
    ]


async def test_get_shows_a_confirmation_page_and_changes_nothing(
    client: httpx.AsyncClient, users: Users, notifications: NotificationsService
) -> None:
    ada = await users.signed_in()
    link = notifications.unsubscribe.url(ada.user_id, Category.ORGANIZATION)
    page = await client.get(_path(link))
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert page.headers["referrer-policy"] == "no-referrer"
    assert page.headers["cache-control"] == "no-store"
    assert '<form method="post"' in page.text
    assert "organization" in page.text
    assert await _organization_email(client, ada)
    # The page's button: a browser's form POST gets a page back.
    token = link.split("token=", 1)[1]
    assert f'action="?token={token}"' in page.text
    done = await client.post(_path(link), headers={"Accept": "text/html,*/*;q=0.8"})
    assert done.status_code == 200
    assert done.headers["content-type"].startswith("text/html")
    assert not await _organization_email(client, ada)


async def test_tampered_or_missing_tokens_are_refused(
    client: httpx.AsyncClient, users: Users, notifications: NotificationsService
) -> None:
    ada = await users.signed_in()
    token = notifications.unsubscribe.token(ada.user_id, Category.ORGANIZATION)
    tampered = token[:-2] + ("AA" if token[-2:] != "AA" else "BB")
    someone_else = notifications.unsubscribe.token(uuid7(), Category.ORGANIZATION)
    for bad in (tampered, token[:-1], "x"):
        for method in ("GET", "POST"):
            response = await client.request(
                method, "/api/v1/notifications/unsubscribe", params={"token": bad}
            )
            assert response.status_code == 422, (method, bad)
            assert response.headers["content-type"] == "application/problem+json"
            assert response.json()["code"] == "invalid-unsubscribe-link"
    missing = await client.post("/api/v1/notifications/unsubscribe")
    assert missing.status_code == 422
    # A valid token for another user touches only that user.
    assert (
        await client.post("/api/v1/notifications/unsubscribe", params={"token": someone_else})
    ).status_code == 200
    assert await _organization_email(client, ada)


async def test_security_email_has_no_unsubscribe(
    client: httpx.AsyncClient, users: Users, notifications: NotificationsService
) -> None:
    ada = await users.signed_in()
    link = notifications.unsubscribe.url(ada.user_id, Category.SECURITY)
    for method in ("GET", "POST"):
        response = await client.request(method, _path(link))
        assert response.status_code == 422
        assert response.json()["code"] == "preference-locked"
    preferences = (await client.get("/api/v1/notifications/preferences", headers=ada.headers)).json()
    assert all(p["enabled"] for p in preferences["preferences"])


async def test_sent_emails_carry_the_one_click_headers(
    client: httpx.AsyncClient, users: Users, notifications: NotificationsService, container: Container
) -> None:
    ada = await users.signed_in()
    kind = KINDS["auth.member_joined"]
    await notifications.notify(kind.name, [Recipient(user_id=ada.user_id)], dict(kind.example), "u1")
    async with container.databases["notifications"].session() as session:
        stored = (
            await session.execute(select(deliveries.c.headers).where(deliveries.c.channel == "email"))
        ).scalar_one()
    headers = json.loads(stored)
    assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    link = headers["List-Unsubscribe"].removeprefix("<").removesuffix(">")
    assert (await client.post(_path(link))).status_code == 200
    assert not await _organization_email(client, ada)
