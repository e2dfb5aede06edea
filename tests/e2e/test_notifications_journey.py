"""Notifications over real HTTP against a running server: what people and systems hear of a team's work.

A task assigned to Max reaches his in-app inbox and his email; comments reach the task's watchers; Max
marks an item read and turns off project emails (the in-app items keep coming); and Olga's webhook
endpoint, a real HTTP receiver on loopback, gets each subscribed event signed as Standard Webhooks says.
The e2e server must allow loopback webhook targets (`webhook_allow_private_targets`).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest
from standardwebhooks.webhooks import Webhook

from tests.e2e.conftest import RunningServer
from tests.e2e.support import Person, join, organization, person, problem
from tests.e2e.test_auth_journey import BASE_URL
from tests.e2e.test_billing_journey import _until
from tests.modules.notifications.webhook_support import Received, Receiver

pytestmark = pytest.mark.e2e

INBOX = "/api/v1/notifications"
SUBSCRIBED = ["projects.TaskAssigned", "projects.TaskCommented"]


def _items(inbox: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [i for i in inbox.get("items", []) if i["kind"] == kind]


async def _inbox_item(
    http: httpx.AsyncClient, who: Person, kind: str, excerpt: str | None = None
) -> dict[str, Any]:
    """The item of `kind` (with this comment excerpt, if given) once it is in `who`'s inbox."""

    def matching(inbox: dict[str, Any]) -> list[dict[str, Any]]:
        return [i for i in _items(inbox, kind) if excerpt is None or i["data"].get("excerpt") == excerpt]

    inbox = await _until(http, INBOX, who.auth, lambda b: len(matching(b)) == 1)
    return matching(inbox)[0]


async def _deliveries(receiver: Receiver, count: int, within: float = 20) -> list[Received]:
    """The first `count` webhook requests the receiver got, once they have arrived."""
    deadline = time.monotonic() + within
    while len(receiver.requests) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"{len(receiver.requests)} of {count} webhook deliveries within {within} s")
        await asyncio.sleep(0.05)
    return receiver.requests[:count]


async def _comment(http: httpx.AsyncClient, org: str, who: Person, text: str) -> None:
    added = await http.post(f"{org}/tasks/WEB-1/comments", json={"body": text}, headers=who.auth)
    assert added.status_code == 201, added.text


async def test_the_notifications_journey(http: httpx.AsyncClient, server: RunningServer) -> None:
    olga = await person(http, server, "olga@example.com")
    org_id = await organization(http, olga, "Acme")
    max_ = await join(http, server, olga, org_id, "max@example.com")
    org = f"/api/v1/orgs/{org_id}"
    task_url = f"{BASE_URL}/orgs/{org_id}/tasks/WEB-1"

    async with Receiver() as receiver:
        # Olga subscribes an endpoint of hers to task assignments and comments; the secret comes once.
        known = (await http.get("/api/v1/webhooks/event-types")).json()["items"]
        assert set(SUBSCRIBED) <= set(known)
        problem(
            await http.post(
                f"{org}/webhooks", json={"url": receiver.url, "event_types": ["no.Such"]}, headers=olga.auth
            ),
            422,
            "unknown-webhook-event-type",
        )
        created = await http.post(
            f"{org}/webhooks", json={"url": receiver.url, "event_types": SUBSCRIBED}, headers=olga.auth
        )
        assert created.status_code == 201, created.text  # a 422 here: loopback targets not allowed
        endpoint = created.json()
        assert endpoint["secret"].startswith("whsec_")
        problem(await http.get(f"{org}/webhooks", headers=max_.auth), 403, "missing-permission")

        # Olga creates WEB-1 and assigns it to Max.
        project = await http.post(
            f"{org}/projects", json={"key": "WEB", "name": "Website"}, headers=olga.auth
        )
        assert project.status_code == 201, project.text
        task = await http.post(
            f"{org}/projects/WEB/tasks", json={"title": "Fix the login redirect"}, headers=olga.auth
        )
        assert task.status_code == 201, task.text
        assigned = await http.patch(
            f"{org}/tasks/WEB-1", json={"assignee_id": max_.user_id}, headers=olga.auth
        )
        assert assigned.status_code == 200, assigned.text

        # Max hears of it in the app, linked to the task, unread...
        item = await _inbox_item(http, max_, "projects.task_assigned")
        assert item["title"] == "olga assigned WEB-1 to you: Fix the login redirect"
        assert (item["org_id"], item["link"], item["read_at"]) == (org_id, task_url, None)
        assert (await http.get(f"{INBOX}/unread-count", headers=max_.auth)).json() == {"unread": 1}
        # ...and by email, with a one-click unsubscribe.
        [mail] = await server.mailbox.wait_for(max_.email, containing="WEB-1")
        assert "olga assigned WEB-1 to you" in mail.subject
        assert task_url in mail.text
        assert mail.message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"

        # Max reads it: the badge goes back to zero.
        read = await http.post(f"{INBOX}/{item['id']}/read", headers=max_.auth)
        assert read.status_code == 200, read.text
        assert read.json()["read_at"] is not None
        assert (await http.get(f"{INBOX}/unread-count", headers=max_.auth)).json() == {"unread": 0}
        problem(
            await http.post(f"{INBOX}/{item['id']}/read", headers=olga.auth), 404, "notification-not-found"
        )

        # A comment reaches the task's other watchers: Olga created it, Max is assigned to it.
        await _comment(http, org, max_, "Fixed: the redirect keeps the query string.")
        heard = await _inbox_item(http, olga, "projects.task_commented")
        assert heard["title"] == "max commented on WEB-1: Fix the login redirect"
        assert heard["body"] == "Fixed: the redirect keeps the query string."
        [to_olga] = await server.mailbox.wait_for(olga.email, containing="keeps the query string")
        assert "max commented on WEB-1" in to_olga.subject
        await _comment(http, org, olga, "Thanks, verified on staging.")
        await _inbox_item(http, max_, "projects.task_commented", "Thanks, verified on staging.")
        await server.mailbox.wait_for(max_.email, containing="verified on staging")

        # Max turns project emails off; the in-app items keep coming.
        off = await http.put(
            f"{INBOX}/preferences",
            json={"preferences": [{"category": "projects", "channel": "email", "enabled": False}]},
            headers=max_.auth,
        )
        assert off.status_code == 200, off.text
        choices = {(p["category"], p["channel"]): p["enabled"] for p in off.json()["preferences"]}
        assert (choices[("projects", "email")], choices[("projects", "in_app")]) == (False, True)
        problem(
            await http.put(
                f"{INBOX}/preferences",
                json={"preferences": [{"category": "security", "channel": "email", "enabled": False}]},
                headers=max_.auth,
            ),
            422,
            "preference-locked",
        )
        await _comment(http, org, olga, "Shipped in release 2.4.")
        await _inbox_item(http, max_, "projects.task_commented", "Shipped in release 2.4.")
        # With email on again the next comment is mailed; the one before it never was.
        on = await http.put(
            f"{INBOX}/preferences",
            json={"preferences": [{"category": "projects", "channel": "email", "enabled": True}]},
            headers=max_.auth,
        )
        assert on.status_code == 200, on.text
        await _comment(http, org, olga, "Release notes are out too.")
        await server.mailbox.wait_for(max_.email, containing="Release notes are out")
        assert server.mailbox.messages(max_.email, containing="Shipped in release 2.4") == []
        unread = await http.get(INBOX, params={"unread": "true"}, headers=max_.auth)
        assert len(_items(unread.json(), "projects.task_commented")) == 3

        # Olga's endpoint got the assignment and the four comments, nothing else, each signed.
        received = await _deliveries(receiver, 5)
        payloads = [Webhook(endpoint["secret"]).verify(r.body, r.headers) for r in received]
        assert sorted(p["type"] for p in payloads) == [
            "projects.TaskAssigned",
            *["projects.TaskCommented"] * 4,
        ]
        [assignment] = [p["data"] for p in payloads if p["type"] == "projects.TaskAssigned"]
        assert (assignment["key"], assignment["assignee_id"], assignment["assigned_by"]) == (
            "WEB-1",
            max_.user_id,
            olga.user_id,
        )
        assert len({r.headers["webhook-id"] for r in received}) == 5
        # Its delivery log says the same.
        log = await _until(
            http,
            f"{org}/webhooks/{endpoint['id']}/deliveries",
            olga.auth,
            lambda b: len(b["items"]) == 5 and all(d["status"] == "succeeded" for d in b["items"]),
        )
        assert {d["message_id"] for d in log["items"]} == {r.headers["webhook-id"] for r in received}
        assert len(receiver.requests) == 5  # no TaskCreated nor MemberJoined: not subscribed
