"""End to end: organization events from auth's HTTP API reach the organization's webhook endpoints."""

from __future__ import annotations

from datetime import datetime

import httpx
from standardwebhooks.webhooks import Webhook

from splitstone.kernel.clock import ManualClock
from splitstone.kernel.events import EventRecorder
from splitstone.kernel.messaging.worker import Worker
from splitstone.modules.auth.api import MemberJoined
from splitstone.modules.notifications.handlers import SUBSCRIPTIONS
from splitstone.modules.notifications.service import NotificationsService
from tests.modules.auth.conftest import Users
from tests.modules.auth.org_helpers import add_member
from tests.modules.notifications.webhook_support import (  # fixtures are used by name
    Receiver,
    create_endpoint,
    organization,
    receiver_fixture,  # noqa: F401
    webhook_settings_fixture,  # noqa: F401
)


async def test_membership_events_become_webhooks(
    client: httpx.AsyncClient,
    users: Users,
    worker: Worker,
    events: EventRecorder,
    receiver: Receiver,
    clock: ManualClock,
) -> None:
    owner, org_id = await organization(client, users, worker)
    everything = await create_endpoint(client, owner, org_id, receiver.url)
    async with Receiver() as removals:
        await create_endpoint(client, owner, org_id, removals.url, event_types=["auth.MemberRemoved"])

        member = await add_member(client, events, users, owner, org_id)
        await worker.settle()
        received = {r.json()["type"]: r for r in receiver.requests}
        assert set(received) == {"auth.MemberInvited", "auth.MemberJoined"}
        assert removals.requests == []

        joined = received["auth.MemberJoined"]
        payload = Webhook(everything["secret"]).verify(joined.body, joined.headers)
        assert set(payload) == {"type", "timestamp", "data"}
        assert payload["data"] == {"org_id": org_id, "user_id": str(member.user_id), "role": "member"}
        assert datetime.fromisoformat(payload["timestamp"]) <= clock.now()
        invited = received["auth.MemberInvited"].json()["data"]
        assert invited["email"] == member.email
        assert "invitation_token" not in invited  # receivers never learn the token

        removed = await client.delete(
            f"/api/v1/orgs/{org_id}/members/{member.user_id}", headers=owner.headers
        )
        assert removed.status_code == 204
        await worker.settle()
    [gone] = removals.requests
    assert gone.json()["type"] == "auth.MemberRemoved"
    assert gone.json()["data"]["user_id"] == str(member.user_id)
    assert receiver.requests[-1].json()["type"] == "auth.MemberRemoved"
    assert len({r.headers["webhook-id"] for r in receiver.requests}) == 3


async def test_a_redelivered_event_sends_nothing_twice(
    client: httpx.AsyncClient,
    users: Users,
    worker: Worker,
    events: EventRecorder,
    receiver: Receiver,
    notifications: NotificationsService,
) -> None:
    """The handler keys the message by the event's id, so handling the same event again sends no copy."""
    owner, org_id = await organization(client, users, worker)
    await create_endpoint(client, owner, org_id, receiver.url, event_types=["auth.MemberJoined"])
    await add_member(client, events, users, owner, org_id)
    await worker.settle()
    assert [r.json()["type"] for r in receiver.requests] == ["auth.MemberJoined"]

    handle = SUBSCRIPTIONS[MemberJoined](notifications)
    await handle(events.last(MemberJoined))
    await worker.settle()
    assert len(receiver.requests) == 1
