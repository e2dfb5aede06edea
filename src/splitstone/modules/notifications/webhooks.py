"""Outgoing webhooks: an organization's events, signed and delivered to its endpoints, with retries.

`send` records a message (deduplicated by its idempotency key) and, in the same transaction, one
delivery and one `notifications.deliver_webhook` job per enabled endpoint whose filter wants it. The
job (`deliver`, see `webhook_delivery`) makes the HTTP attempts outside any transaction. A test event
and a manual redelivery travel the same way, as one-attempt jobs.

The parts: `webhook_endpoints` (endpoints and secrets), `webhook_log` (the delivery log),
`webhook_signing` (Standard Webhooks signatures), `webhook_targets` (the SSRF guard),
`webhook_sender` (the HTTP request), `webhook_schedule` (retry delays), `webhook_delivery` (attempts).
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from pydantic import BaseModel
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection
from uuid6 import uuid7

from splitstone.kernel.clock import Clock
from splitstone.kernel.db import UnitOfWork, UnitOfWorkFactory, upsert_insert
from splitstone.kernel.errors import InvalidInput
from splitstone.kernel.messaging.jobs import Job, job
from splitstone.modules.auth.api import AuthApi, Principal
from splitstone.modules.notifications.api import UnknownWebhookEventType, WebhookMessage
from splitstone.modules.notifications.catalog import WEBHOOK_EVENT_TYPES, WEBHOOK_TEST_EVENT_TYPE
from splitstone.modules.notifications.settings import NotificationsSettings
from splitstone.modules.notifications.storage import webhook_deliveries, webhook_endpoints, webhook_messages
from splitstone.modules.notifications.webhook_delivery import WebhookDeliverer
from splitstone.modules.notifications.webhook_domain import (
    Trigger,
    WebhookDeliveryStatus,
    message_body,
    new_message_id,
    wants,
)
from splitstone.modules.notifications.webhook_endpoints import WebhookEndpoints, endpoint_row
from splitstone.modules.notifications.webhook_errors import WebhookDeliveryNotFound, WebhookEndpointIsDisabled
from splitstone.modules.notifications.webhook_log import WebhookDeliveryLog
from splitstone.modules.notifications.webhook_schedule import RetrySchedule
from splitstone.modules.notifications.webhook_sender import WebhookSender
from splitstone.modules.notifications.webhook_targets import Resolver, TargetGuard, system_resolve

DELIVER_WEBHOOK = "notifications.deliver_webhook"


class QueuedDelivery(BaseModel):
    """A delivery whose attempt was queued: a test event, or a redelivery."""

    message_id: str
    delivery_id: UUID


class Webhooks:
    """Sends organizations' webhook messages, and manages their endpoints and delivery logs.

    `endpoints` and `deliveries` hold the endpoint and log operations; `aclose()` closes the HTTP
    client when the process stops. `resolve` and `schedule` replace DNS and the retry schedule in tests.
    """

    def __init__(
        self,
        *,
        uow: UnitOfWorkFactory,
        clock: Clock,
        settings: NotificationsSettings,
        auth: AuthApi,
        resolve: Resolver = system_resolve,
        schedule: RetrySchedule | None = None,
    ) -> None:
        self._uow = uow
        self._clock = clock
        guard = TargetGuard(allow_private=settings.webhook_allow_private_targets, resolve=resolve)
        self.endpoints = WebhookEndpoints(
            uow=uow,
            clock=clock,
            auth=auth,
            guard=guard,
            rotation=timedelta(hours=settings.webhook_secret_rotation_hours),
        )
        self.deliveries = WebhookDeliveryLog(uow=uow, endpoints=self.endpoints)
        self._sender = WebhookSender(
            guard=guard,
            timeout=settings.webhook_timeout_seconds,
            max_response_bytes=settings.webhook_max_response_bytes,
        )
        self._deliverer = WebhookDeliverer(
            uow=uow,
            clock=clock,
            sender=self._sender,
            schedule=schedule or RetrySchedule(),
            disable_after=timedelta(days=settings.webhook_disable_after_days),
        )

    @property
    def schedule(self) -> RetrySchedule:
        """The retry schedule of scheduled deliveries."""
        return self._deliverer.schedule

    async def send(
        self, org_id: UUID, event_type: str, data: dict[str, Any], idempotency_key: str
    ) -> WebhookMessage:
        """Queue `{type, timestamp, data}` for the organization's enabled endpoints that want it.

        A repeated `idempotency_key` returns the first message and queues nothing. Joins the caller's
        transaction inside an event handler. Raises `UnknownWebhookEventType`.
        """
        if event_type not in WEBHOOK_EVENT_TYPES:
            raise UnknownWebhookEventType(
                f"No webhook event type {event_type!r}; known types: {', '.join(WEBHOOK_EVENT_TYPES)}."
            )
        if not 1 <= len(idempotency_key) <= 200:
            raise InvalidInput("The idempotency key must be 1 to 200 characters.")
        now = self._clock.now()
        message_id = new_message_id()
        async with self._uow() as uow:
            session = uow.session
            created = await session.execute(
                upsert_insert(webhook_messages, session.dialect)
                .values(
                    id=message_id,
                    org_id=org_id,
                    event_type=event_type,
                    payload=message_body(event_type, now, data),
                    idempotency_key=idempotency_key,
                    created_at=now,
                )
                .on_conflict_do_nothing(index_elements=["idempotency_key"])
            )
            if created.rowcount == 0:  # sent before, perhaps by a concurrent call
                earlier = await _message_by_key(session, idempotency_key)
                # Nothing was written, but a unit joined to a handler's transaction that ends without a
                # commit marks that transaction abandoned, and the handler would run again.
                await uow.commit()
                return earlier
            endpoints = (
                await session.execute(
                    select(webhook_endpoints.c.id, webhook_endpoints.c.event_types).where(
                        webhook_endpoints.c.org_id == org_id, webhook_endpoints.c.enabled.is_(True)
                    )
                )
            ).all()
            wanted = [e.id for e in endpoints if wants(json.loads(e.event_types), event_type)]
            for endpoint_id in wanted:
                await self._queue(uow, message_id, endpoint_id, org_id, event_type, Trigger.SCHEDULED, now)
            await uow.commit()
        return WebhookMessage(
            id=message_id, org_id=org_id, event_type=event_type, created_at=now, endpoints=len(wanted)
        )

    async def send_test(self, principal: Principal, org_id: UUID, endpoint_id: UUID) -> QueuedDelivery:
        """Queue a `webhook.test` message for this endpoint only, whatever its filter: one attempt."""
        await self.endpoints.authorize(principal, org_id)
        now = self._clock.now()
        message_id = new_message_id()
        data = {"endpoint_id": str(endpoint_id), "message": "A test event: this endpoint receives webhooks."}
        async with self._uow() as uow:
            endpoint = await endpoint_row(uow.session, org_id, endpoint_id)
            if not endpoint["enabled"]:
                raise WebhookEndpointIsDisabled("Enable the endpoint before sending it a test event.")
            await uow.session.execute(
                webhook_messages.insert().values(
                    id=message_id,
                    org_id=org_id,
                    event_type=WEBHOOK_TEST_EVENT_TYPE,
                    payload=message_body(WEBHOOK_TEST_EVENT_TYPE, now, data),
                    idempotency_key=f"test:{message_id}",
                    created_at=now,
                )
            )
            delivery_id = await self._queue(
                uow, message_id, endpoint_id, org_id, WEBHOOK_TEST_EVENT_TYPE, Trigger.TEST, now
            )
            await uow.commit()
        return QueuedDelivery(message_id=message_id, delivery_id=delivery_id)

    async def redeliver(
        self, principal: Principal, org_id: UUID, endpoint_id: UUID, delivery_id: UUID
    ) -> QueuedDelivery:
        """Try a delivery again now, with one attempt, whatever its state.

        Refused (`WebhookEndpointIsDisabled`) while the endpoint is disabled. A failed manual attempt
        leaves a retry that the schedule still has due in charge; otherwise the delivery is `failed`.
        """
        await self.endpoints.authorize(principal, org_id)
        now = self._clock.now()
        async with self._uow() as uow:
            endpoint = await endpoint_row(uow.session, org_id, endpoint_id)
            if not endpoint["enabled"]:
                raise WebhookEndpointIsDisabled("Enable the endpoint before redelivering to it.")
            message_id = (
                await uow.session.execute(
                    select(webhook_deliveries.c.message_id).where(
                        webhook_deliveries.c.id == delivery_id,
                        webhook_deliveries.c.endpoint_id == endpoint_id,
                    )
                )
            ).scalar()
            if message_id is None:
                raise WebhookDeliveryNotFound(f"No delivery {delivery_id} of this endpoint.")
            await uow.session.execute(
                update(webhook_deliveries)
                .where(webhook_deliveries.c.id == delivery_id)
                .values(status=WebhookDeliveryStatus.PENDING, updated_at=now)
            )
            uow.schedule(
                job(
                    DELIVER_WEBHOOK,
                    {"delivery_id": str(delivery_id), "trigger": Trigger.MANUAL},
                    run_at=now,
                    idempotency_key=f"{delivery_id}:manual:{uuid7()}",
                    max_attempts=1,
                )
            )
            await uow.commit()
        return QueuedDelivery(message_id=message_id, delivery_id=delivery_id)

    async def deliver(self, current: Job) -> None:
        """The `notifications.deliver_webhook` job: one attempt of one delivery."""
        await self._deliverer.deliver(current)

    async def aclose(self) -> None:
        """Close the HTTP client; call once when the process stops."""
        await self._sender.aclose()

    async def _queue(
        self,
        uow: UnitOfWork,
        message_id: str,
        endpoint_id: UUID,
        org_id: UUID,
        event_type: str,
        trigger: Trigger,
        now: datetime,
    ) -> UUID:
        """A pending delivery of the message to the endpoint, and the job that makes its first attempt."""
        delivery_id = uuid7()
        scheduled = trigger is Trigger.SCHEDULED
        await uow.session.execute(
            webhook_deliveries.insert().values(
                id=delivery_id,
                message_id=message_id,
                endpoint_id=endpoint_id,
                org_id=org_id,
                event_type=event_type,
                status=WebhookDeliveryStatus.PENDING,
                attempts=0,
                # Set only while the retry schedule is under way: one-off attempts leave it empty.
                next_attempt_at=now if scheduled else None,
                created_at=now,
                updated_at=now,
            )
        )
        uow.schedule(
            job(
                DELIVER_WEBHOOK,
                {"delivery_id": str(delivery_id), "trigger": trigger},
                run_at=now,
                idempotency_key=str(delivery_id),
                max_attempts=self.schedule.max_attempts if scheduled else 1,
            )
        )
        return delivery_id


async def _message_by_key(session: AsyncConnection, idempotency_key: str) -> WebhookMessage:
    row = (
        (
            await session.execute(
                select(webhook_messages).where(webhook_messages.c.idempotency_key == idempotency_key)
            )
        )
        .mappings()
        .one()
    )
    queued = (
        await session.execute(
            select(func.count())
            .select_from(webhook_deliveries)
            .where(webhook_deliveries.c.message_id == row["id"])
        )
    ).scalar_one()
    return WebhookMessage(
        id=row["id"],
        org_id=row["org_id"],
        event_type=row["event_type"],
        created_at=row["created_at"],
        endpoints=queued,
    )
