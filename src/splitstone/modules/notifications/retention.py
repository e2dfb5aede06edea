"""Retention: the delivery log, the in-app feed and the webhook log are history, deleted after a while.

`notifications.purge` runs every hour (a recurring job) and deletes, older than their settings say:

- deliveries that reached a final status (never a `queued` one), then the notifications left without
  deliveries. A notification is also its idempotency key's record, so a key may be used again after
  `delivery_log_retention_days`;
- in-app feed items, read or not;
- webhook messages none of whose deliveries is still `pending`, with their deliveries and attempts.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import structlog
from sqlalchemy import delete, exists, select

from splitstone.kernel.clock import Clock
from splitstone.kernel.db import UnitOfWorkFactory
from splitstone.kernel.messaging.jobs import Job
from splitstone.modules.notifications.api import DeliveryStatus
from splitstone.modules.notifications.settings import NotificationsSettings
from splitstone.modules.notifications.storage import (
    deliveries,
    feed_items,
    notifications,
    webhook_attempts,
    webhook_deliveries,
    webhook_messages,
)
from splitstone.modules.notifications.webhook_domain import WebhookDeliveryStatus

PURGE = "notifications.purge"

log = structlog.get_logger("splitstone.notifications")


@dataclass(frozen=True)
class Purged:
    deliveries: int
    notifications: int
    feed_items: int
    webhook_messages: int


class Retention:
    def __init__(self, uow: UnitOfWorkFactory, clock: Clock, settings: NotificationsSettings) -> None:
        self._uow = uow
        self._clock = clock
        self._settings = settings

    async def purge(self, _job: Job | None = None) -> Purged:
        """Delete what is older than its retention (the `notifications.purge` job)."""
        now = self._clock.now()
        log_cutoff = now - timedelta(days=self._settings.delivery_log_retention_days)
        feed_cutoff = now - timedelta(days=self._settings.feed_retention_days)
        webhook_cutoff = now - timedelta(days=self._settings.webhook_log_retention_days)
        async with self._uow() as uow:
            session = uow.session
            gone_deliveries = await session.execute(
                delete(deliveries).where(
                    deliveries.c.created_at < log_cutoff, deliveries.c.status != DeliveryStatus.QUEUED
                )
            )
            gone_notifications = await session.execute(
                delete(notifications).where(
                    notifications.c.created_at < log_cutoff,
                    ~exists().where(deliveries.c.notification_id == notifications.c.id),
                )
            )
            gone_items = await session.execute(
                delete(feed_items).where(feed_items.c.created_at < feed_cutoff)
            )
            old_messages = select(webhook_messages.c.id).where(
                webhook_messages.c.created_at < webhook_cutoff,
                ~exists().where(
                    webhook_deliveries.c.message_id == webhook_messages.c.id,
                    webhook_deliveries.c.status == WebhookDeliveryStatus.PENDING,
                ),
            )
            old_deliveries = select(webhook_deliveries.c.id).where(
                webhook_deliveries.c.message_id.in_(old_messages)
            )
            await session.execute(
                delete(webhook_attempts).where(webhook_attempts.c.delivery_id.in_(old_deliveries))
            )
            await session.execute(
                delete(webhook_deliveries).where(webhook_deliveries.c.message_id.in_(old_messages))
            )
            gone_messages = await session.execute(
                delete(webhook_messages).where(webhook_messages.c.id.in_(old_messages))
            )
            await uow.commit()
        purged = Purged(
            gone_deliveries.rowcount, gone_notifications.rowcount, gone_items.rowcount, gone_messages.rowcount
        )
        if any(purged.__dict__.values()):
            log.info("purged notification history", **purged.__dict__)
        return purged
