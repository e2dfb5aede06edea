"""The live inbox over a real HTTP server: Server-Sent Events as a browser would receive them.

httpx's ASGI transport buffers a whole response, which an endless stream never finishes, so these
tests run uvicorn on a loopback port. It runs as a task in the test's own event loop rather than in a
thread: the container's connection pools and the feed's doorbells belong to one loop, as in
`splitstone serve`.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest
from fastapi import FastAPI

from splitstone.modules.notifications.api import Category, Recipient
from splitstone.modules.notifications.catalog import KINDS
from splitstone.modules.notifications.service import NotificationsService
from splitstone.modules.notifications.settings import NotificationsSettings
from tests.modules.auth.conftest import SignedIn, Users
from tests.support.servers import RunningTask, serve_in_loop

STREAM = "/api/v1/notifications/stream"
_keys = itertools.count()


@pytest.fixture
def notifications_settings(mail_dir: Path) -> NotificationsSettings:
    """Polls and pings far apart, so a test that gets its item in time got it from the doorbell."""
    return NotificationsSettings(
        email_backend="file", mail_dir=mail_dir, stream_poll_seconds=30, stream_keepalive_seconds=30
    )


@pytest.fixture
async def live(app: FastAPI) -> AsyncIterator[RunningTask]:
    # lifespan off: the test's container fixture closes the databases
    async with serve_in_loop(app, graceful_seconds=8) as running:
        yield running


@pytest.fixture
async def http(live: RunningTask) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=live.base_url, timeout=10, trust_env=False) as client:
        yield client


@dataclass
class Sse:
    """Reads events off a streaming response; comments come back as events with `comment` set."""

    response: httpx.Response
    _lines: AsyncIterator[str] = field(init=False)

    def __post_init__(self) -> None:
        self._lines = self.response.aiter_lines()

    async def next(self, within: float = 5) -> dict[str, Any]:
        event: dict[str, Any] = {}
        async with asyncio.timeout(within):
            async for line in self._lines:
                if line == "":
                    if event:
                        return event
                    continue
                name, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if name == "":
                    event["comment"] = value
                elif name == "data":
                    event["data"] = f"{event['data']}\n{value}" if "data" in event else value
                else:
                    event[name] = value
        raise EOFError("the stream ended")

    async def rest(self, within: float = 5) -> list[dict[str, Any]]:
        """The events until the stream ends (comments left out)."""
        events = []
        try:
            while True:
                event = await self.next(within)
                if "comment" not in event:
                    events.append(event)
        except EOFError:
            return events

    async def next_named(self, name: str, within: float = 5) -> dict[str, Any]:
        """The next event called `name`, skipping comments."""
        while True:
            event = await self.next(within)
            if event.get("event") == name:
                return event
            assert "comment" in event, f"expected {name}, got {event}"


async def _notify(service: NotificationsService, user_id: UUID) -> None:
    kind = KINDS["auth.member_joined"]
    await service.notify(kind.name, [Recipient(user_id=user_id)], dict(kind.example), f"s{next(_keys)}")


async def _latest_id(client: httpx.AsyncClient, who: SignedIn) -> str:
    response = await client.get("/api/v1/notifications", headers=who.headers, params={"limit": 1})
    return str(response.json()["items"][0]["id"])


async def test_a_connected_client_receives_new_items_as_they_come(
    http: httpx.AsyncClient, client: httpx.AsyncClient, users: Users, notifications: NotificationsService
) -> None:
    ada, bob = await users.signed_in(), await users.signed_in()
    await _notify(notifications, ada.user_id)  # before connecting: not part of the stream
    async with http.stream("GET", STREAM, headers=ada.headers) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-store"
        sse = Sse(response)
        assert json.loads((await sse.next_named("unread"))["data"]) == {"unread": 1}

        await _notify(notifications, bob.user_id)  # someone else's: not sent
        await _notify(notifications, ada.user_id)
        event = await sse.next_named("notification")
        item = json.loads(event["data"])
        assert event["id"] == item["id"] == await _latest_id(client, ada)
        assert item["kind"] == "auth.member_joined"
        assert item["category"] == Category.ORGANIZATION
        assert item["read_at"] is None
        assert json.loads((await sse.next_named("unread"))["data"]) == {"unread": 2}

        # Reading it elsewhere updates the badge.
        await client.post(f"/api/v1/notifications/{item['id']}/read", headers=ada.headers)
        assert json.loads((await sse.next_named("unread"))["data"]) == {"unread": 1}


async def test_last_event_id_resumes_after_that_item(
    http: httpx.AsyncClient, client: httpx.AsyncClient, users: Users, notifications: NotificationsService
) -> None:
    ada = await users.signed_in()
    ids = []
    for _ in range(3):
        await _notify(notifications, ada.user_id)
        ids.append(await _latest_id(client, ada))
    for resume in ({"headers": {"Last-Event-ID": ids[0]}}, {"params": {"after": ids[0]}}):
        headers = ada.headers | resume.get("headers", {})
        async with http.stream("GET", STREAM, headers=headers, params=resume.get("params")) as response:
            sse = Sse(response)
            received = [(await sse.next_named("notification"))["id"] for _ in range(2)]
            assert received == ids[1:]
            assert json.loads((await sse.next_named("unread"))["data"]) == {"unread": 3}


async def test_items_from_another_process_arrive_by_polling(
    http: httpx.AsyncClient, users: Users, notifications: NotificationsService
) -> None:
    ada = await users.signed_in()
    notifications.settings.stream_poll_seconds = 0.2
    async with http.stream("GET", STREAM, headers=ada.headers) as response:
        sse = Sse(response)
        await sse.next_named("unread")
        # Written as a worker elsewhere would: committed, but no doorbell rings in this process.
        async with notifications.feed._uow() as uow:
            item_id = await notifications.feed.add(
                uow.session,
                user_id=ada.user_id,
                org_id=None,
                notification_id=None,
                kind="auth.member_joined",
                category=Category.ORGANIZATION,
                title="Linus joined",
                body="Linus joined as member.",
                link="/orgs/acme",
                data={"member_name": "Linus"},
            )
            await uow.commit()
        event = await sse.next_named("notification", within=3)
        assert event["id"] == str(item_id)
        assert json.loads(event["data"])["link"] == "/orgs/acme"


async def test_idle_streams_get_keepalive_comments(
    http: httpx.AsyncClient, users: Users, notifications: NotificationsService
) -> None:
    ada = await users.signed_in()
    notifications.settings.stream_keepalive_seconds = 0.2
    async with http.stream("GET", STREAM, headers=ada.headers) as response:
        sse = Sse(response)
        await sse.next_named("unread")
        assert await sse.next(within=3) == {"comment": "ping"}


async def test_browsers_may_pass_the_token_in_the_query(
    http: httpx.AsyncClient, users: Users, notifications: NotificationsService
) -> None:
    ada = await users.signed_in()
    async with http.stream("GET", STREAM, params={"access_token": ada.access_token}) as response:
        assert response.status_code == 200
        await Sse(response).next_named("unread")
    refused = await http.get(STREAM, params={"access_token": "not-a-token"})
    assert refused.status_code == 401
    assert refused.headers["content-type"] == "application/problem+json"


async def test_a_malformed_last_event_id_is_a_problem(http: httpx.AsyncClient, users: Users) -> None:
    ada = await users.signed_in()
    for bad in ("nonsense", "00000000-0000-4000-8000-000000000000"):
        response = await http.get(STREAM, headers=ada.headers | {"Last-Event-ID": bad})
        assert response.status_code == 422
        assert response.json()["code"] == "invalid-last-event-id"


async def test_a_disconnect_ends_the_stream(
    http: httpx.AsyncClient, users: Users, notifications: NotificationsService
) -> None:
    ada = await users.signed_in()
    async with http.stream("GET", STREAM, headers=ada.headers) as response:
        await Sse(response).next_named("unread")
        assert notifications.feed.listening == 1
    for _ in range(250):  # the server notices the disconnect on its own time
        if notifications.feed.listening == 0:
            break
        await asyncio.sleep(0.02)
    assert notifications.feed.listening == 0
    await _notify(notifications, ada.user_id)  # nobody to wake: nothing breaks


async def test_server_shutdown_ends_open_streams(
    live: RunningTask, http: httpx.AsyncClient, users: Users, notifications: NotificationsService
) -> None:
    ada = await users.signed_in()
    async with http.stream("GET", STREAM, headers=ada.headers) as response:
        sse = Sse(response)
        await sse.next_named("unread")
        started = time.monotonic()
        live.server.should_exit = True
        assert await sse.rest() == []  # a clean end of the body, not a broken connection
    await asyncio.wait_for(live.task, 5)
    assert time.monotonic() - started < 4  # well before the graceful shutdown timeout gives up
    assert notifications.feed.listening == 0


async def test_a_stream_ends_after_its_maximum_lifetime_so_credentials_are_checked_again(
    http: httpx.AsyncClient, users: Users, notifications: NotificationsService
) -> None:
    ada = await users.signed_in()
    notifications.settings.stream_max_seconds = 0.5
    async with http.stream("GET", STREAM, headers=ada.headers) as response:
        sse = Sse(response)
        await sse.next_named("unread")
        assert await sse.rest(within=5) == []  # ended by the server, well before the 30 s poll
