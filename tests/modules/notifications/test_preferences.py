"""Notification preferences: the matrix, partial updates, the locked category, and their effect."""

from __future__ import annotations

import itertools
from typing import Any
from uuid import UUID

import httpx
import pytest
from sqlalchemy import select

from splitstone.kernel.container import Container
from splitstone.modules.notifications.api import Category, Channel, DeliveryStatus, NotifyResult, Recipient
from splitstone.modules.notifications.catalog import KINDS
from splitstone.modules.notifications.service import NotificationsService
from splitstone.modules.notifications.storage import deliveries
from tests.modules.auth.conftest import SignedIn, Users

PREFERENCES = "/api/v1/notifications/preferences"
_keys = itertools.count()


async def _notify(service: NotificationsService, kind_name: str, user_id: UUID) -> NotifyResult:
    kind = KINDS[kind_name]
    return await service.notify(
        kind.name, [Recipient(user_id=user_id)], dict(kind.example), f"p{next(_keys)}"
    )


async def _matrix(client: httpx.AsyncClient, who: SignedIn) -> dict[tuple[str, str], dict[str, Any]]:
    response = await client.get(PREFERENCES, headers=who.headers)
    assert response.status_code == 200, response.text
    return {(p["category"], p["channel"]): p for p in response.json()["preferences"]}


async def _put(client: httpx.AsyncClient, who: SignedIn, *changes: tuple[str, str, bool]) -> httpx.Response:
    body = {"preferences": [{"category": c, "channel": ch, "enabled": e} for c, ch, e in changes]}
    return await client.put(PREFERENCES, headers=who.headers, json=body)


async def test_everything_is_on_by_default_and_security_is_locked(
    client: httpx.AsyncClient, users: Users
) -> None:
    matrix = await _matrix(client, await users.signed_in())
    assert set(matrix) == {(c.value, ch.value) for c in Category for ch in Channel}
    assert all(p["enabled"] for p in matrix.values())
    assert {key for key, p in matrix.items() if p["locked"]} == {
        ("security", "email"),
        ("security", "in_app"),
    }


async def test_partial_updates_round_trip(client: httpx.AsyncClient, users: Users) -> None:
    ada, bob = await users.signed_in(), await users.signed_in()
    response = await _put(client, ada, ("organization", "email", False), ("billing", "in_app", False))
    assert response.status_code == 200, response.text
    assert response.json() == {"preferences": list((await _matrix(client, ada)).values())}
    matrix = await _matrix(client, ada)
    assert {key for key, p in matrix.items() if not p["enabled"]} == {
        ("organization", "email"),
        ("billing", "in_app"),
    }
    # Only the listed choice changes; the other stays off.
    assert (await _put(client, ada, ("organization", "email", True))).status_code == 200
    matrix = await _matrix(client, ada)
    assert {key for key, p in matrix.items() if not p["enabled"]} == {("billing", "in_app")}
    assert all(p["enabled"] for p in (await _matrix(client, bob)).values())


async def test_security_cannot_be_turned_off(client: httpx.AsyncClient, users: Users) -> None:
    ada = await users.signed_in()
    refused = await _put(client, ada, ("projects", "email", False), ("security", "email", False))
    assert refused.status_code == 422
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["code"] == "preference-locked"
    assert all(p["enabled"] for p in (await _matrix(client, ada)).values())  # nothing applied
    assert (await _put(client, ada, ("security", "in_app", True))).status_code == 200


@pytest.mark.parametrize(
    "body",
    [
        {"preferences": [{"category": "gossip", "channel": "email", "enabled": False}]},
        {"preferences": [{"category": "projects", "channel": "sms", "enabled": False}]},
        {"preferences": [{"category": "projects", "channel": "email"}]},
        {"preferences": [{"category": "projects", "channel": "email", "enabled": False, "extra": 1}]},
        {"preferences": []},
        {},
    ],
)
async def test_invalid_updates_are_refused(
    client: httpx.AsyncClient, users: Users, body: dict[str, Any]
) -> None:
    response = await client.put(PREFERENCES, headers=(await users.signed_in()).headers, json=body)
    assert response.status_code == 422
    assert response.json()["code"] == "validation-error"


async def test_opting_out_suppresses_that_channel_but_not_transactional_mail(
    client: httpx.AsyncClient, users: Users, notifications: NotificationsService, container: Container
) -> None:
    ada, bob = await users.signed_in(), await users.signed_in()
    assert (await _put(client, ada, ("organization", "email", False))).status_code == 200

    joined = await _notify(notifications, "auth.member_joined", ada.user_id)
    statuses = {d.channel: d.status for d in joined.deliveries}
    assert statuses == {Channel.EMAIL: DeliveryStatus.SUPPRESSED, Channel.IN_APP: DeliveryStatus.SENT}
    async with container.databases["notifications"].session() as session:
        rows = (
            await session.execute(
                select(deliveries.c.channel, deliveries.c.status).where(
                    deliveries.c.notification_id == joined.notification_id
                )
            )
        ).all()
    assert dict(rows) == {"email": "suppressed", "in_app": "sent"}

    # Transactional mail of the same category still goes out.
    disabled = await _notify(notifications, "notifications.webhook_endpoint_disabled", ada.user_id)
    assert {d.channel: d.status for d in disabled.deliveries}[Channel.EMAIL] is DeliveryStatus.QUEUED
    # Someone else's choice is their own.
    other = await _notify(notifications, "auth.member_joined", bob.user_id)
    assert {d.channel: d.status for d in other.deliveries}[Channel.EMAIL] is DeliveryStatus.QUEUED


async def test_opting_out_of_in_app_keeps_items_out_of_the_inbox(
    client: httpx.AsyncClient, users: Users, notifications: NotificationsService
) -> None:
    ada = await users.signed_in()
    assert (await _put(client, ada, ("organization", "in_app", False))).status_code == 200
    result = await _notify(notifications, "auth.member_joined", ada.user_id)
    assert {d.channel: d.status for d in result.deliveries}[Channel.IN_APP] is DeliveryStatus.SUPPRESSED
    inbox = await client.get("/api/v1/notifications", headers=ada.headers)
    assert inbox.json()["items"] == []
