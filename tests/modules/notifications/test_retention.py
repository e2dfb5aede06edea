"""Retention: finished history goes after its time; what is still in flight stays."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from sqlalchemy import Table, insert, select
from uuid6 import uuid7

from splitstone.kernel.clock import ManualClock
from splitstone.kernel.container import Container
from splitstone.kernel.messaging.jobs import DONE
from splitstone.kernel.messaging.tables import jobs
from splitstone.kernel.messaging.worker import Worker
from splitstone.modules.notifications.api import DeliveryStatus, Recipient
from splitstone.modules.notifications.catalog import KINDS
from splitstone.modules.notifications.retention import PURGE
from splitstone.modules.notifications.service import NotificationsService
from splitstone.modules.notifications.storage import (
    deliveries,
    feed_items,
    webhook_attempts,
    webhook_deliveries,
    webhook_endpoints,
    webhook_messages,
)
from splitstone.modules.notifications.storage import (
    notifications as notifications_table,
)
from tests.modules.auth.conftest import Users

JOINED = KINDS["auth.member_joined"].example


async def rows(container: Container, table: Table) -> list[dict[str, Any]]:
    async with container.databases["notifications"].session() as connection:
        return [dict(r) for r in (await connection.execute(select(table))).mappings()]


async def add_webhook_message(container: Container, clock: ManualClock, status: str) -> str:
    now = clock.now()
    endpoint_id, delivery_id, message_id = uuid7(), uuid7(), f"msg_{uuid7().hex}"
    org_id = uuid7()
    async with container.databases["notifications"].write_engine.begin() as connection:
        await connection.execute(
            insert(webhook_endpoints).values(
                id=endpoint_id,
                org_id=org_id,
                url="https://hooks.example.com/in",
                event_types="[]",
                secret="whsec_c2VjcmV0",
                enabled=True,
                created_at=now,
                updated_at=now,
            )
        )
        body = json.dumps({"type": "auth.MemberJoined", "timestamp": now.isoformat(), "data": {}})
        await connection.execute(
            insert(webhook_messages).values(
                id=message_id,
                org_id=org_id,
                event_type="auth.MemberJoined",
                payload=body,
                idempotency_key=message_id,
                created_at=now,
            )
        )
        await connection.execute(
            insert(webhook_deliveries).values(
                id=delivery_id,
                message_id=message_id,
                endpoint_id=endpoint_id,
                org_id=org_id,
                event_type="auth.MemberJoined",
                status=status,
                created_at=now,
                updated_at=now,
            )
        )
        await connection.execute(
            insert(webhook_attempts).values(
                id=uuid7(),
                delivery_id=delivery_id,
                endpoint_id=endpoint_id,
                attempt=1,
                trigger="scheduled",
                started_at=now,
                succeeded=status == "succeeded",
            )
        )
    return message_id


async def test_history_goes_after_its_retention_and_work_in_flight_stays(
    notifications: NotificationsService,
    users: Users,
    worker: Worker,
    container: Container,
    clock: ManualClock,
) -> None:
    ada = await users.signed_in()
    await notifications.notify("auth.member_joined", [Recipient(user_id=ada.user_id)], JOINED, "sent")
    await worker.settle()  # its email is sent; ada's verification email too
    finished_webhook = await add_webhook_message(container, clock, "succeeded")
    pending_webhook = await add_webhook_message(container, clock, "pending")
    await notifications.notify("auth.member_joined", [Recipient(user_id=ada.user_id)], JOINED, "queued")

    clock.advance(timedelta(days=29))
    nothing = await notifications.retention.purge()
    assert (nothing.deliveries, nothing.feed_items, nothing.webhook_messages) == (0, 0, 0)

    clock.advance(timedelta(days=2))  # 31 days: the finished webhook message goes
    assert (await notifications.retention.purge()).webhook_messages == 1
    assert {r["id"] for r in await rows(container, webhook_messages)} == {pending_webhook}
    assert finished_webhook not in {r["message_id"] for r in await rows(container, webhook_deliveries)}
    assert len(await rows(container, webhook_attempts)) == 1

    clock.advance(timedelta(days=60))  # 91 days: finished deliveries go, the queued email stays
    purged = await notifications.retention.purge()
    assert purged.deliveries >= 2  # the sent email and the in-app entries, with the verification email
    left = await rows(container, deliveries)
    assert {r["status"] for r in left} == {DeliveryStatus.QUEUED}
    keys = {r["idempotency_key"] for r in await rows(container, notifications_table)}
    assert keys == {"queued"}
    assert len(await rows(container, feed_items)) == 2  # in-app items are kept 180 days

    clock.advance(timedelta(days=90))
    assert (await notifications.retention.purge()).feed_items == 2
    assert await rows(container, feed_items) == []


async def test_the_worker_runs_the_purge_every_hour(worker: Worker, container: Container) -> None:
    await worker.settle()
    purges = sorted((r for r in await rows(container, jobs) if r["kind"] == PURGE), key=lambda r: r["run_at"])
    assert [r["status"] for r in purges] == [DONE, "pending"]
    assert purges[1]["run_at"] - purges[0]["run_at"] == timedelta(hours=1)
