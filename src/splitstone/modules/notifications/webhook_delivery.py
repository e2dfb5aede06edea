"""The `notifications.deliver_webhook` job: one attempt of one delivery, and what follows from it.

It runs outside any transaction (an external job), at least once: it reads the delivery, sends the
request, then records the attempt and its consequences in one short transaction. A receiver
deduplicates on `webhook-id`, which stays the message's id across attempts.

After an attempt:

- **2xx**: the delivery succeeded, and the endpoint is no longer failing.
- **410 Gone**: the receiver asked us to stop. The endpoint is disabled at once (with
  `WebhookEndpointDisabled` published in the same transaction), its pending deliveries are canceled,
  and this one failed, with no retry.
- **Anything else** (another status, a timeout, a connection error, a refused target): the endpoint
  counts as failing from its first such failure since its last success; once that has lasted
  `webhook_disable_after_days`, it is disabled as above. Otherwise a scheduled delivery is retried
  after the schedule's next delay, until the schedule ends and the delivery is `failed`. The job
  itself then ends as done, not dead: the delivery log records the failure, and "redeliver" is the
  way to try again.

Only scheduled attempts count towards disabling: a failed test event or manual redelivery is shown in
the log but does not start the clock on an endpoint someone is still setting up. A success of any
kind stops it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

import structlog
from sqlalchemy import select, update
from uuid6 import uuid7

from splitstone.kernel.clock import Clock
from splitstone.kernel.db import UnitOfWork, UnitOfWorkFactory
from splitstone.kernel.messaging.jobs import Job, RetryJob
from splitstone.modules.notifications.api import WebhookEndpointDisabled
from splitstone.modules.notifications.storage import (
    webhook_attempts,
    webhook_deliveries,
    webhook_endpoints,
    webhook_messages,
)
from splitstone.modules.notifications.webhook_domain import Trigger, WebhookDeliveryStatus
from splitstone.modules.notifications.webhook_endpoints import cancel_pending
from splitstone.modules.notifications.webhook_schedule import RetrySchedule
from splitstone.modules.notifications.webhook_sender import AttemptResult, WebhookSender
from splitstone.modules.notifications.webhook_signing import signed_headers

log = structlog.get_logger("splitstone.notifications.webhooks")

_GONE = 410
_MAX_ERROR = 2000


@dataclass(frozen=True)
class _Planned:
    """What one attempt needs, read before it starts."""

    delivery_id: UUID
    status: str
    message_id: str
    payload: str
    endpoint_id: UUID
    org_id: UUID
    url: str
    enabled: bool
    secrets: tuple[str, ...]  # the current secret, then the previous one while it still signs


class WebhookDeliverer:
    """Makes delivery attempts and records them (the job handler is `deliver`)."""

    def __init__(
        self,
        *,
        uow: UnitOfWorkFactory,
        clock: Clock,
        sender: WebhookSender,
        schedule: RetrySchedule,
        disable_after: timedelta,
    ) -> None:
        self._uow = uow
        self._clock = clock
        self._sender = sender
        self.schedule = schedule
        self._disable_after = disable_after

    async def deliver(self, job: Job) -> None:
        """One attempt of the delivery in `job.payload`; raises `RetryJob` when another should follow."""
        delivery_id = UUID(job.payload["delivery_id"])
        trigger = Trigger(job.payload.get("trigger", Trigger.SCHEDULED))
        planned = await self._plan(delivery_id)
        if planned is None or planned.status != WebhookDeliveryStatus.PENDING:
            return  # deleted with its endpoint, or already settled (a repeated job)
        if not planned.enabled:
            await self._cancel(delivery_id)
            return
        started_at = self._clock.now()
        headers = signed_headers(planned.message_id, started_at, planned.payload, planned.secrets)
        result = await self._sender.post(planned.url, headers, planned.payload.encode())
        retry_after = await self._record(planned, job, trigger, started_at, result)
        if retry_after is not None:
            raise RetryJob(f"attempt {job.attempt} failed: {_describe(result)}", after=retry_after)

    async def _plan(self, delivery_id: UUID) -> _Planned | None:
        query = (
            select(
                webhook_deliveries.c.status,
                webhook_deliveries.c.endpoint_id,
                webhook_messages.c.id.label("message_id"),
                webhook_messages.c.payload,
                webhook_endpoints.c.org_id,
                webhook_endpoints.c.url,
                webhook_endpoints.c.enabled,
                webhook_endpoints.c.secret,
                webhook_endpoints.c.previous_secret,
                webhook_endpoints.c.previous_secret_expires_at,
            )
            .join(webhook_messages, webhook_messages.c.id == webhook_deliveries.c.message_id)
            .join(webhook_endpoints, webhook_endpoints.c.id == webhook_deliveries.c.endpoint_id)
            .where(webhook_deliveries.c.id == delivery_id)
        )
        async with self._uow(read_only=True) as uow:
            row = (await uow.session.execute(query)).mappings().one_or_none()
        if row is None:
            return None
        secrets = [row["secret"]]
        expires = row["previous_secret_expires_at"]
        if row["previous_secret"] and expires is not None and expires > self._clock.now():
            secrets.append(row["previous_secret"])
        return _Planned(
            delivery_id=delivery_id,
            status=row["status"],
            message_id=row["message_id"],
            payload=row["payload"],
            endpoint_id=row["endpoint_id"],
            org_id=row["org_id"],
            url=row["url"],
            enabled=row["enabled"],
            secrets=tuple(secrets),
        )

    async def _cancel(self, delivery_id: UUID) -> None:
        async with self._uow() as uow:
            await uow.session.execute(
                update(webhook_deliveries)
                .where(
                    webhook_deliveries.c.id == delivery_id,
                    webhook_deliveries.c.status == WebhookDeliveryStatus.PENDING,
                )
                .values(
                    status=WebhookDeliveryStatus.CANCELED, next_attempt_at=None, updated_at=self._clock.now()
                )
            )
            await uow.commit()

    async def _record(
        self, planned: _Planned, job: Job, trigger: Trigger, started_at: datetime, result: AttemptResult
    ) -> timedelta | None:
        """Log the attempt and settle what follows from it, in one transaction; the retry delay, if any."""
        now = self._clock.now()
        async with self._uow() as uow:
            counted = (
                await uow.session.execute(
                    update(webhook_deliveries)
                    .where(webhook_deliveries.c.id == planned.delivery_id)
                    .values(
                        attempts=webhook_deliveries.c.attempts + 1,
                        last_attempt_at=started_at,
                        last_status_code=result.status_code,
                        updated_at=now,
                    )
                    .returning(webhook_deliveries.c.attempts, webhook_deliveries.c.next_attempt_at)
                )
            ).first()
            if counted is None:
                return None  # deleted with its endpoint while the request was out
            await uow.session.execute(
                webhook_attempts.insert().values(
                    id=uuid7(),
                    delivery_id=planned.delivery_id,
                    endpoint_id=planned.endpoint_id,
                    attempt=counted.attempts,
                    trigger=trigger,
                    started_at=started_at,
                    latency_ms=result.latency_ms,
                    status_code=result.status_code,
                    succeeded=result.succeeded,
                    response_excerpt=result.response_excerpt,
                    error=None if result.error is None else result.error[:_MAX_ERROR],
                )
            )
            retry_after = await self._settle(
                uow,
                planned,
                job,
                trigger,
                started_at,
                result,
                retry_scheduled=counted.next_attempt_at is not None,
            )
            await uow.commit()
        log.info(
            "webhook attempt",
            delivery_id=str(planned.delivery_id),
            endpoint_id=str(planned.endpoint_id),
            attempt=counted.attempts,
            trigger=trigger.value,
            status_code=result.status_code,
            latency_ms=result.latency_ms,
            error=result.error,
            retry_in=retry_after.total_seconds() if retry_after else None,
        )
        return retry_after

    async def _settle(
        self,
        uow: UnitOfWork,
        planned: _Planned,
        job: Job,
        trigger: Trigger,
        started_at: datetime,
        result: AttemptResult,
        *,
        retry_scheduled: bool,
    ) -> timedelta | None:
        now = self._clock.now()
        if result.succeeded:
            await self._set_status(uow, planned.delivery_id, WebhookDeliveryStatus.SUCCEEDED)
            await uow.session.execute(
                update(webhook_endpoints)
                .where(
                    webhook_endpoints.c.id == planned.endpoint_id,
                    webhook_endpoints.c.failing_since.is_not(None),
                )
                .values(failing_since=None)
            )
            return None
        if result.status_code == _GONE:
            await self._disable(uow, planned, "The endpoint answered 410 Gone.", now)
            return None
        if trigger is Trigger.SCHEDULED:
            failing_since = await self._mark_failing(uow, planned.endpoint_id, started_at)
            if now - failing_since >= self._disable_after:
                reason = f"Failing since {failing_since.isoformat()} without a successful delivery."
                await self._disable(uow, planned, reason, now)
                return None
        if not job.is_last_attempt:
            delay = self.schedule.delay(min(job.attempt, len(self.schedule.delays)))
            await uow.session.execute(
                update(webhook_deliveries)
                .where(
                    webhook_deliveries.c.id == planned.delivery_id,
                    webhook_deliveries.c.status == WebhookDeliveryStatus.PENDING,
                )
                .values(next_attempt_at=now + delay)
            )
            return delay
        if trigger is Trigger.SCHEDULED or not retry_scheduled:
            await self._set_status(uow, planned.delivery_id, WebhookDeliveryStatus.FAILED, only_pending=True)
        # else a manual or test attempt failed while a scheduled retry is still due: that one decides.
        return None

    async def _mark_failing(self, uow: UnitOfWork, endpoint_id: UUID, since: datetime) -> datetime:
        """The endpoint's `failing_since`, set to `since` if it was not failing yet."""
        await uow.session.execute(
            update(webhook_endpoints)
            .where(webhook_endpoints.c.id == endpoint_id, webhook_endpoints.c.failing_since.is_(None))
            .values(failing_since=since)
        )
        failing_since: datetime | None = (
            await uow.session.execute(
                select(webhook_endpoints.c.failing_since).where(webhook_endpoints.c.id == endpoint_id)
            )
        ).scalar()
        return failing_since or since

    async def _disable(self, uow: UnitOfWork, planned: _Planned, reason: str, now: datetime) -> None:
        """Disable the endpoint, cancel its pending deliveries, fail this one; announce it once."""
        disabled = await uow.session.execute(
            update(webhook_endpoints)
            .where(webhook_endpoints.c.id == planned.endpoint_id, webhook_endpoints.c.enabled.is_(True))
            .values(enabled=False, disabled_reason=reason, disabled_at=now, updated_at=now)
        )
        await cancel_pending(uow.session, planned.endpoint_id, now)
        await self._set_status(uow, planned.delivery_id, WebhookDeliveryStatus.FAILED)
        if disabled.rowcount:
            uow.publish(
                WebhookEndpointDisabled(
                    occurred_at=now,
                    aggregate_id=planned.endpoint_id,
                    org_id=planned.org_id,
                    endpoint_id=planned.endpoint_id,
                    url=planned.url,
                    reason=reason,
                )
            )
            log.warning("webhook endpoint disabled", endpoint_id=str(planned.endpoint_id), reason=reason)

    async def _set_status(
        self, uow: UnitOfWork, delivery_id: UUID, status: WebhookDeliveryStatus, *, only_pending: bool = False
    ) -> None:
        query = update(webhook_deliveries).where(webhook_deliveries.c.id == delivery_id)
        if only_pending:
            query = query.where(webhook_deliveries.c.status == WebhookDeliveryStatus.PENDING)
        await uow.session.execute(query.values(status=status, next_attempt_at=None))


def _describe(result: AttemptResult) -> str:
    if result.error is not None:
        return result.error
    return f"the endpoint answered {result.status_code}"
