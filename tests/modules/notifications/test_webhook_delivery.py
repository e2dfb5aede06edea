"""Delivering webhooks to a real receiver: signatures, retries, disabling, caps, filters, the log.

Messages are sent through the contract (`send_webhook`), jobs run with `worker.settle()`, and the
clock is moved to make retries due. Signatures are checked with the `standardwebhooks` package.
"""

from __future__ import annotations

import socket
from datetime import timedelta
from typing import Any
from uuid import UUID

import httpx
import pytest
from sqlalchemy import func, select
from standardwebhooks.webhooks import Webhook

from splitstone.kernel.clock import ManualClock
from splitstone.kernel.container import Container
from splitstone.kernel.events import EventRecorder
from splitstone.kernel.messaging.worker import Worker
from splitstone.modules.auth.api import Principal
from splitstone.modules.notifications.api import (
    Channel,
    DeliveryStatus,
    UnknownWebhookEventType,
    WebhookEndpointDisabled,
)
from splitstone.modules.notifications.service import NotificationsService
from splitstone.modules.notifications.settings import NotificationsSettings
from splitstone.modules.notifications.storage import webhook_attempts, webhook_deliveries
from splitstone.modules.notifications.webhook_sender import EXCERPT_CHARS
from splitstone.modules.notifications.webhooks import Webhooks
from tests.modules.auth.conftest import SignedIn, Users
from tests.modules.auth.org_helpers import assert_problem
from tests.modules.notifications.webhook_support import (  # fixtures are used by name
    Receiver,
    Reply,
    create_endpoint,
    organization,
    receiver_fixture,  # noqa: F401
    signed_in_again,
    webhook_settings_fixture,  # noqa: F401
)

JOINED = "auth.MemberJoined"
REMOVED = "auth.MemberRemoved"
# The schedule's first delays, with their +20% jitter at most.
AFTER_FIRST = timedelta(seconds=6)
AFTER_SECOND = timedelta(minutes=6)


async def _send(
    notifications: NotificationsService, org_id: str, key: str, event_type: str = JOINED, **data: Any
) -> str:
    message = await notifications.send_webhook(UUID(org_id), event_type, {"org_id": org_id, **data}, key)
    return message.id


async def _deliveries(
    client: httpx.AsyncClient, owner: SignedIn, org_id: str, endpoint_id: str, **params: Any
) -> dict[str, Any]:
    response = await client.get(
        f"/api/v1/orgs/{org_id}/webhooks/{endpoint_id}/deliveries", params=params, headers=owner.headers
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


async def _detail(
    client: httpx.AsyncClient, owner: SignedIn, org_id: str, endpoint_id: str, delivery_id: str
) -> dict[str, Any]:
    response = await client.get(
        f"/api/v1/orgs/{org_id}/webhooks/{endpoint_id}/deliveries/{delivery_id}", headers=owner.headers
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


async def _endpoint(
    client: httpx.AsyncClient, owner: SignedIn, org_id: str, endpoint_id: str
) -> dict[str, Any]:
    response = await client.get(f"/api/v1/orgs/{org_id}/webhooks/{endpoint_id}", headers=owner.headers)
    assert response.status_code == 200, response.text
    return dict(response.json())


async def test_delivers_a_signed_message(
    client: httpx.AsyncClient,
    users: Users,
    worker: Worker,
    notifications: NotificationsService,
    receiver: Receiver,
) -> None:
    owner, org_id = await organization(client, users, worker)
    endpoint = await create_endpoint(client, owner, org_id, receiver.url)

    message = await notifications.send_webhook(
        UUID(org_id), JOINED, {"org_id": org_id, "role": "member"}, "k1"
    )
    assert message.endpoints == 1
    assert message.id.startswith("msg_")
    await worker.settle()

    [request] = receiver.requests
    assert request.method == "POST"
    assert request.path == "/hooks"
    payload = Webhook(endpoint["secret"]).verify(request.body, request.headers)
    assert payload["type"] == JOINED
    assert payload["data"] == {"org_id": org_id, "role": "member"}
    assert payload["timestamp"].endswith("Z")
    assert request.headers["webhook-id"] == message.id
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"] == "Splitstone-Webhooks/1"

    [delivery] = (await _deliveries(client, owner, org_id, endpoint["id"]))["items"]
    assert delivery["message_id"] == message.id
    assert delivery["event_type"] == JOINED
    assert delivery["status"] == "succeeded"
    assert delivery["attempts"] == 1
    assert delivery["last_status_code"] == 200
    detail = await _detail(client, owner, org_id, endpoint["id"], delivery["id"])
    assert detail["payload"] == payload
    [attempt] = detail["attempt_log"]
    assert attempt["attempt"] == 1
    assert attempt["trigger"] == "scheduled"
    assert attempt["status_code"] == 200
    assert attempt["succeeded"] is True
    assert attempt["latency_ms"] >= 0
    assert attempt["response_excerpt"] == "ok"
    assert attempt["error"] is None


async def test_retries_on_the_schedule_until_it_succeeds(
    client: httpx.AsyncClient,
    users: Users,
    worker: Worker,
    notifications: NotificationsService,
    receiver: Receiver,
    clock: ManualClock,
) -> None:
    owner, org_id = await organization(client, users, worker)
    endpoint = await create_endpoint(client, owner, org_id, receiver.url)
    receiver.reply(Reply(500, b"boom"), Reply(503, b"busy"))
    message_id = await _send(notifications, org_id, "k1")

    await worker.settle()
    assert len(receiver.requests) == 1
    [delivery] = (await _deliveries(client, owner, org_id, endpoint["id"]))["items"]
    assert delivery["status"] == "pending"
    assert delivery["next_attempt_at"] is not None
    assert (await _endpoint(client, owner, org_id, endpoint["id"]))["failing_since"] is not None

    await worker.settle()  # nothing is due yet
    assert len(receiver.requests) == 1
    clock.advance(AFTER_FIRST)
    await worker.settle()
    assert len(receiver.requests) == 2
    clock.advance(AFTER_SECOND)
    await worker.settle()
    assert len(receiver.requests) == 3

    assert {r.headers["webhook-id"] for r in receiver.requests} == {message_id}
    assert {r.body for r in receiver.requests} == {receiver.requests[0].body}
    assert all(r.signed_by(endpoint["secret"]) for r in receiver.requests)
    detail = await _detail(client, owner, org_id, endpoint["id"], delivery["id"])
    assert detail["status"] == "succeeded"
    assert detail["attempts"] == 3
    assert detail["next_attempt_at"] is None
    log = detail["attempt_log"]
    assert [a["attempt"] for a in log] == [1, 2, 3]
    assert [a["status_code"] for a in log] == [500, 503, 200]
    assert [a["succeeded"] for a in log] == [False, False, True]
    assert [a["response_excerpt"] for a in log] == ["boom", "busy", "ok"]
    assert all(a["latency_ms"] is not None and a["latency_ms"] >= 0 for a in log)
    assert (await _endpoint(client, owner, org_id, endpoint["id"]))["failing_since"] is None


@pytest.mark.parametrize("notifications_settings", [{"webhook_timeout_seconds": 0.3}], indirect=True)
async def test_a_timeout_is_a_failed_attempt(
    client: httpx.AsyncClient,
    users: Users,
    worker: Worker,
    notifications: NotificationsService,
    receiver: Receiver,
    clock: ManualClock,
) -> None:
    owner, org_id = await organization(client, users, worker)
    endpoint = await create_endpoint(client, owner, org_id, receiver.url)
    receiver.reply(Reply(200, delay=2))
    await _send(notifications, org_id, "k1")

    await worker.settle()
    clock.advance(AFTER_FIRST)
    await worker.settle()

    [delivery] = (await _deliveries(client, owner, org_id, endpoint["id"]))["items"]
    first, second = (await _detail(client, owner, org_id, endpoint["id"], delivery["id"]))["attempt_log"]
    assert first["status_code"] is None
    assert first["succeeded"] is False
    assert first["error"] == "No answer within 0.3 s."
    assert 250 <= first["latency_ms"] < 2000
    assert second["succeeded"] is True
    assert delivery["status"] == "succeeded"


async def test_connection_errors_and_redirects_are_failures(
    client: httpx.AsyncClient,
    users: Users,
    worker: Worker,
    notifications: NotificationsService,
    receiver: Receiver,
) -> None:
    owner, org_id = await organization(client, users, worker)
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    nowhere = await create_endpoint(client, owner, org_id, f"http://127.0.0.1:{closed}/hooks")
    moved = await create_endpoint(client, owner, org_id, receiver.url)
    receiver.reply(Reply(302, b"elsewhere"))
    await _send(notifications, org_id, "k1")
    await worker.settle()

    [delivery] = (await _deliveries(client, owner, org_id, nowhere["id"]))["items"]
    [attempt] = (await _detail(client, owner, org_id, nowhere["id"], delivery["id"]))["attempt_log"]
    assert attempt["status_code"] is None
    assert attempt["error"].startswith("ConnectError")
    [delivery] = (await _deliveries(client, owner, org_id, moved["id"]))["items"]
    assert delivery["status"] == "pending"
    assert delivery["last_status_code"] == 302
    assert len(receiver.requests) == 1  # the redirect was not followed


async def test_410_gone_disables_the_endpoint_at_once(
    client: httpx.AsyncClient,
    users: Users,
    worker: Worker,
    notifications: NotificationsService,
    receiver: Receiver,
    clock: ManualClock,
    events: EventRecorder,
) -> None:
    owner, org_id = await organization(client, users, worker)
    endpoint = await create_endpoint(client, owner, org_id, receiver.url)
    base = f"/api/v1/orgs/{org_id}/webhooks/{endpoint['id']}"
    receiver.reply(Reply(503), Reply(410, b"gone"))
    await _send(notifications, org_id, "first")
    await worker.settle()  # 503: retried later
    await _send(notifications, org_id, "second")
    await worker.settle()  # 410
    assert len(receiver.requests) == 2

    disabled = await _endpoint(client, owner, org_id, endpoint["id"])
    assert disabled["enabled"] is False
    assert disabled["disabled_reason"] == "The endpoint answered 410 Gone."
    assert disabled["disabled_at"] is not None
    [event] = events.of_type(WebhookEndpointDisabled)
    assert str(event.endpoint_id) == endpoint["id"]
    assert str(event.org_id) == org_id
    assert event.url == receiver.url
    # The organization's owner hears of it, in the app and by email.
    inbox = (await client.get("/api/v1/notifications", headers=owner.headers)).json()["items"]
    assert [item["kind"] for item in inbox] == ["notifications.webhook_endpoint_disabled"]
    assert receiver.url in inbox[0]["body"]
    emails = await notifications.delivery_log.recent(address=owner.email, channel=Channel.EMAIL)
    assert ("notifications.webhook_endpoint_disabled", DeliveryStatus.SENT) in {
        (e.kind, e.status) for e in emails
    }
    statuses = {
        d["message_id"]: d["status"]
        for d in (await _deliveries(client, owner, org_id, endpoint["id"]))["items"]
    }
    assert sorted(statuses.values()) == ["canceled", "failed"]

    third = await notifications.send_webhook(UUID(org_id), JOINED, {"org_id": org_id}, "third")
    assert third.endpoints == 0
    clock.advance(timedelta(hours=1))  # the first message's retry comes due, and is dropped
    await worker.settle()
    assert len(receiver.requests) == 2
    owner = await signed_in_again(users, owner)
    [some_delivery, *_] = (await _deliveries(client, owner, org_id, endpoint["id"]))["items"]
    refused = await client.post(f"{base}/deliveries/{some_delivery['id']}/redeliver", headers=owner.headers)
    assert_problem(refused, 409, "webhook-endpoint-disabled")
    assert_problem(await client.post(f"{base}/test", headers=owner.headers), 409, "webhook-endpoint-disabled")

    enabled = await client.patch(base, json={"enabled": True}, headers=owner.headers)
    assert enabled.json()["enabled"] is True
    assert enabled.json()["disabled_reason"] is None
    assert enabled.json()["failing_since"] is None
    await _send(notifications, org_id, "fourth")
    await worker.settle()
    assert len(receiver.requests) == 3
    assert receiver.requests[-1].json()["type"] == JOINED
    assert len(events.of_type(WebhookEndpointDisabled)) == 1


@pytest.mark.parametrize("notifications_settings", [{"webhook_disable_after_days": 5}], indirect=True)
async def test_failing_for_days_disables_the_endpoint(
    client: httpx.AsyncClient,
    users: Users,
    worker: Worker,
    notifications: NotificationsService,
    receiver: Receiver,
    clock: ManualClock,
    events: EventRecorder,
) -> None:
    owner, org_id = await organization(client, users, worker)
    endpoint = await create_endpoint(client, owner, org_id, receiver.url)
    receiver.default = Reply(500)
    await _send(notifications, org_id, "k1")
    await worker.settle()
    failing_since = (await _endpoint(client, owner, org_id, endpoint["id"]))["failing_since"]
    assert failing_since is not None

    clock.advance(timedelta(days=4, hours=23))
    await _send(notifications, org_id, "k2")
    await worker.settle()
    owner = await signed_in_again(users, owner)
    assert (await _endpoint(client, owner, org_id, endpoint["id"]))["enabled"] is True
    assert events.of_type(WebhookEndpointDisabled) == []

    clock.advance(timedelta(hours=1))
    await _send(notifications, org_id, "k3")
    await worker.settle()
    owner = await signed_in_again(users, owner)
    disabled = await _endpoint(client, owner, org_id, endpoint["id"])
    assert disabled["enabled"] is False
    assert disabled["disabled_reason"].startswith("Failing since ")
    [event] = events.of_type(WebhookEndpointDisabled)
    assert event.reason == disabled["disabled_reason"]
    statuses = [d["status"] for d in (await _deliveries(client, owner, org_id, endpoint["id"]))["items"]]
    assert "pending" not in statuses


async def test_the_answer_is_read_up_to_a_cap(
    client: httpx.AsyncClient,
    users: Users,
    worker: Worker,
    notifications: NotificationsService,
    receiver: Receiver,
    notifications_settings: NotificationsSettings,
) -> None:
    owner, org_id = await organization(client, users, worker)
    endpoint = await create_endpoint(client, owner, org_id, receiver.url)
    huge = 200 * 1024 * 1024
    receiver.reply(Reply(200, body="é".encode() * 600, stream_bytes=huge))
    await _send(notifications, org_id, "k1")
    await worker.settle()

    [delivery] = (await _deliveries(client, owner, org_id, endpoint["id"]))["items"]
    assert delivery["status"] == "succeeded"
    [attempt] = (await _detail(client, owner, org_id, endpoint["id"], delivery["id"]))["attempt_log"]
    assert attempt["response_excerpt"] == "é" * 600 + "x" * (EXCERPT_CHARS - 600)
    # The sender stopped reading at the cap and hung up: the receiver could not send it all.
    assert notifications_settings.webhook_max_response_bytes < huge
    assert receiver.streamed < huge / 4


async def test_endpoints_receive_only_the_types_they_want(
    client: httpx.AsyncClient,
    users: Users,
    worker: Worker,
    notifications: NotificationsService,
    receiver: Receiver,
) -> None:
    owner, org_id = await organization(client, users, worker)
    async with Receiver() as removals:
        await create_endpoint(client, owner, org_id, removals.url, event_types=[REMOVED])
        await create_endpoint(client, owner, org_id, receiver.url)  # every type
        joined = await notifications.send_webhook(UUID(org_id), JOINED, {"org_id": org_id}, "k1")
        removed = await notifications.send_webhook(UUID(org_id), REMOVED, {"org_id": org_id}, "k2")
        await worker.settle()
    assert (joined.endpoints, removed.endpoints) == (1, 2)
    assert [r.json()["type"] for r in removals.requests] == [REMOVED]
    assert sorted(r.json()["type"] for r in receiver.requests) == sorted([JOINED, REMOVED])


async def test_one_idempotency_key_is_one_message(
    client: httpx.AsyncClient,
    users: Users,
    worker: Worker,
    notifications: NotificationsService,
    receiver: Receiver,
) -> None:
    owner, org_id = await organization(client, users, worker)
    endpoint = await create_endpoint(client, owner, org_id, receiver.url)
    first = await notifications.send_webhook(UUID(org_id), JOINED, {"n": 1}, "same-key")
    again = await notifications.send_webhook(UUID(org_id), JOINED, {"n": 2}, "same-key")
    assert again == first
    await worker.settle()
    await notifications.send_webhook(UUID(org_id), JOINED, {"n": 3}, "same-key")
    await worker.settle()
    assert [r.json()["data"] for r in receiver.requests] == [{"n": 1}]
    assert len((await _deliveries(client, owner, org_id, endpoint["id"]))["items"]) == 1


async def test_unknown_event_types_are_refused(
    client: httpx.AsyncClient, users: Users, worker: Worker, notifications: NotificationsService
) -> None:
    _, org_id = await organization(client, users, worker)
    with pytest.raises(UnknownWebhookEventType):
        await notifications.send_webhook(UUID(org_id), "billing.Nope", {}, "k1")
    with pytest.raises(UnknownWebhookEventType):
        await notifications.send_webhook(UUID(org_id), "webhook.test", {}, "k2")


@pytest.mark.parametrize("notifications_settings", [{"webhook_secret_rotation_hours": 24}], indirect=True)
async def test_both_secrets_sign_during_a_rotation(
    client: httpx.AsyncClient,
    users: Users,
    worker: Worker,
    notifications: NotificationsService,
    receiver: Receiver,
    clock: ManualClock,
) -> None:
    owner, org_id = await organization(client, users, worker)
    endpoint = await create_endpoint(client, owner, org_id, receiver.url)
    old = endpoint["secret"]
    rotated = await client.post(
        f"/api/v1/orgs/{org_id}/webhooks/{endpoint['id']}/rotate-secret", headers=owner.headers
    )
    new = rotated.json()["secret"]

    await _send(notifications, org_id, "k1")
    await worker.settle()
    during = receiver.requests[-1]
    assert len(during.headers["webhook-signature"].split(" ")) == 2
    Webhook(old).verify(during.body, during.headers)
    Webhook(new).verify(during.body, during.headers)

    clock.advance(timedelta(hours=24, seconds=1))
    await _send(notifications, org_id, "k2")
    await worker.settle()
    after = receiver.requests[-1]
    assert after.signed_by(new)
    assert not after.signed_by(old)
    assert len(after.headers["webhook-signature"].split(" ")) == 1


async def test_a_test_event_goes_to_one_endpoint_whatever_its_filter(
    client: httpx.AsyncClient,
    users: Users,
    worker: Worker,
    receiver: Receiver,
) -> None:
    owner, org_id = await organization(client, users, worker)
    async with Receiver() as bystander:
        await create_endpoint(client, owner, org_id, bystander.url)
        endpoint = await create_endpoint(client, owner, org_id, receiver.url, event_types=[REMOVED])
        response = await client.post(
            f"/api/v1/orgs/{org_id}/webhooks/{endpoint['id']}/test", headers=owner.headers
        )
        assert response.status_code == 202, response.text
        queued = response.json()
        await worker.settle()
    assert bystander.requests == []
    [request] = receiver.requests
    payload = Webhook(endpoint["secret"]).verify(request.body, request.headers)
    assert payload["type"] == "webhook.test"
    assert payload["data"]["endpoint_id"] == endpoint["id"]
    assert request.headers["webhook-id"] == queued["message_id"]
    detail = await _detail(client, owner, org_id, endpoint["id"], queued["delivery_id"])
    assert detail["status"] == "succeeded"
    assert [a["trigger"] for a in detail["attempt_log"]] == ["test"]


async def test_a_failed_test_event_is_one_attempt_and_does_not_count_as_failing(
    client: httpx.AsyncClient,
    users: Users,
    worker: Worker,
    receiver: Receiver,
    clock: ManualClock,
) -> None:
    owner, org_id = await organization(client, users, worker)
    endpoint = await create_endpoint(client, owner, org_id, receiver.url)
    receiver.default = Reply(500)
    queued = (
        await client.post(f"/api/v1/orgs/{org_id}/webhooks/{endpoint['id']}/test", headers=owner.headers)
    ).json()
    await worker.settle()
    clock.advance(timedelta(hours=1))
    await worker.settle()
    assert len(receiver.requests) == 1
    owner = await signed_in_again(users, owner)
    detail = await _detail(client, owner, org_id, endpoint["id"], queued["delivery_id"])
    assert detail["status"] == "failed"
    assert (await _endpoint(client, owner, org_id, endpoint["id"]))["failing_since"] is None


async def test_manual_redelivery(
    client: httpx.AsyncClient,
    users: Users,
    worker: Worker,
    notifications: NotificationsService,
    receiver: Receiver,
) -> None:
    owner, org_id = await organization(client, users, worker)
    endpoint = await create_endpoint(client, owner, org_id, receiver.url)
    base = f"/api/v1/orgs/{org_id}/webhooks/{endpoint['id']}"
    message_id = await _send(notifications, org_id, "k1")
    await worker.settle()
    [delivery] = (await _deliveries(client, owner, org_id, endpoint["id"]))["items"]
    assert delivery["status"] == "succeeded"

    receiver.reply(Reply(500))
    response = await client.post(f"{base}/deliveries/{delivery['id']}/redeliver", headers=owner.headers)
    assert response.status_code == 202, response.text
    assert response.json() == {"message_id": message_id, "delivery_id": delivery["id"]}
    await worker.settle()
    failed = await _detail(client, owner, org_id, endpoint["id"], delivery["id"])
    assert failed["status"] == "failed"  # one attempt: a redelivery is not retried

    assert (
        await client.post(f"{base}/deliveries/{delivery['id']}/redeliver", headers=owner.headers)
    ).status_code == 202
    await worker.settle()
    detail = await _detail(client, owner, org_id, endpoint["id"], delivery["id"])
    assert detail["status"] == "succeeded"
    assert [(a["attempt"], a["trigger"], a["status_code"]) for a in detail["attempt_log"]] == [
        (1, "scheduled", 200),
        (2, "manual", 500),
        (3, "manual", 200),
    ]
    assert {r.headers["webhook-id"] for r in receiver.requests} == {message_id}

    unknown = await client.post(
        f"{base}/deliveries/0191f0a4-3333-7b3a-9d2e-5f6a7b8c9d0e/redeliver", headers=owner.headers
    )
    assert_problem(unknown, 404, "webhook-delivery-not-found")


async def test_redelivering_while_retries_are_scheduled_keeps_the_schedule(
    client: httpx.AsyncClient,
    users: Users,
    worker: Worker,
    notifications: NotificationsService,
    receiver: Receiver,
    clock: ManualClock,
) -> None:
    owner, org_id = await organization(client, users, worker)
    endpoint = await create_endpoint(client, owner, org_id, receiver.url)
    receiver.reply(Reply(503), Reply(503))
    await _send(notifications, org_id, "k1")
    await worker.settle()
    [delivery] = (await _deliveries(client, owner, org_id, endpoint["id"]))["items"]
    redeliver = f"/api/v1/orgs/{org_id}/webhooks/{endpoint['id']}/deliveries/{delivery['id']}/redeliver"
    assert (await client.post(redeliver, headers=owner.headers)).status_code == 202
    await worker.settle()
    assert (await _detail(client, owner, org_id, endpoint["id"], delivery["id"]))["status"] == "pending"

    clock.advance(AFTER_FIRST)
    await worker.settle()
    detail = await _detail(client, owner, org_id, endpoint["id"], delivery["id"])
    assert detail["status"] == "succeeded"
    assert [a["trigger"] for a in detail["attempt_log"]] == ["scheduled", "manual", "scheduled"]


async def test_the_delivery_log_pages_newest_first(
    client: httpx.AsyncClient,
    users: Users,
    worker: Worker,
    notifications: NotificationsService,
    receiver: Receiver,
) -> None:
    owner, org_id = await organization(client, users, worker)
    endpoint = await create_endpoint(client, owner, org_id, receiver.url)
    sent = [await _send(notifications, org_id, f"k{n}") for n in range(5)]
    receiver.reply(Reply(500))
    await worker.settle()

    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = await _deliveries(client, owner, org_id, endpoint["id"], **params)
        assert len(page["items"]) <= 2
        seen.extend(d["message_id"] for d in page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(sent))

    succeeded = await _deliveries(client, owner, org_id, endpoint["id"], status="succeeded")
    pending = await _deliveries(client, owner, org_id, endpoint["id"], status="pending")
    assert len(succeeded["items"]) == 4
    assert len(pending["items"]) == 1

    base = f"/api/v1/orgs/{org_id}/webhooks/{endpoint['id']}/deliveries"
    assert_problem(
        await client.get(base, params={"cursor": "abc"}, headers=owner.headers), 400, "invalid-cursor"
    )
    assert (await client.get(base, params={"limit": 101}, headers=owner.headers)).status_code == 422
    assert (await client.get(base, params={"status": "lost"}, headers=owner.headers)).status_code == 422
    missing = await client.get(f"{base}/0191f0a4-3333-7b3a-9d2e-5f6a7b8c9d0e", headers=owner.headers)
    assert_problem(missing, 404, "webhook-delivery-not-found")


async def test_deleting_an_endpoint_stops_its_deliveries(
    client: httpx.AsyncClient,
    users: Users,
    worker: Worker,
    notifications: NotificationsService,
    receiver: Receiver,
    clock: ManualClock,
    container: Container,
) -> None:
    owner, org_id = await organization(client, users, worker)
    endpoint = await create_endpoint(client, owner, org_id, receiver.url)
    receiver.reply(Reply(503))
    await _send(notifications, org_id, "k1")
    await worker.settle()
    deleted = await client.delete(f"/api/v1/orgs/{org_id}/webhooks/{endpoint['id']}", headers=owner.headers)
    assert deleted.status_code == 204
    async with container.units_of_work["notifications"](read_only=True) as uow:
        for table in (webhook_deliveries, webhook_attempts):
            assert (await uow.session.execute(select(func.count()).select_from(table))).scalar_one() == 0
    clock.advance(timedelta(hours=1))
    await worker.settle()
    assert len(receiver.requests) == 1


@pytest.mark.parametrize("notifications_settings", [{"webhook_allow_private_targets": False}], indirect=True)
async def test_the_guard_refuses_at_delivery_time(
    client: httpx.AsyncClient,
    users: Users,
    worker: Worker,
    notifications: NotificationsService,
    receiver: Receiver,
    container: Container,
    clock: ManualClock,
    notifications_settings: NotificationsSettings,
) -> None:
    """A name that looked public when it was saved but points at loopback when sending (DNS rebinding)."""
    owner, org_id = await organization(client, users, worker)
    port = receiver.url.split(":")[2].split("/")[0]

    async def looked_public(host: str, _port: int) -> list[str]:
        return ["93.184.216.34"]

    saving = Webhooks(
        uow=container.units_of_work["notifications"],
        clock=clock,
        settings=notifications_settings,
        auth=container.implementations["auth"],
        resolve=looked_public,
    )
    principal = Principal(kind="user", user_id=owner.user_id)
    endpoint = await saving.endpoints.create(principal, UUID(org_id), url=f"http://localhost:{port}/hooks")

    await _send(notifications, org_id, "k1")
    await worker.settle()  # the module's own guard resolves `localhost` for real: loopback
    assert receiver.requests == []
    [delivery] = (await _deliveries(client, owner, org_id, str(endpoint.id)))["items"]
    [attempt] = (await _detail(client, owner, org_id, str(endpoint.id), delivery["id"]))["attempt_log"]
    assert attempt["status_code"] is None
    assert attempt["error"].startswith("Refused target: localhost is a loopback address")
    assert delivery["status"] == "pending"  # retried: DNS may change back
