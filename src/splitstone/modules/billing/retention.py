"""Retention: inbound provider events are dedupe records, needed only while a provider may still send
the same event again (Stripe retries for three days). `billing.purge` deletes them daily once they are
older than `provider_event_retention_days`."""

from __future__ import annotations

from datetime import timedelta

import structlog
from sqlalchemy import delete

from splitstone.kernel.clock import Clock
from splitstone.kernel.db import UnitOfWorkFactory
from splitstone.kernel.messaging.jobs import Job
from splitstone.modules.billing.settings import BillingSettings
from splitstone.modules.billing.storage import provider_events

log = structlog.get_logger("splitstone.billing")


class Retention:
    def __init__(self, uow: UnitOfWorkFactory, clock: Clock, settings: BillingSettings) -> None:
        self._uow = uow
        self._clock = clock
        self._settings = settings

    async def purge(self, _job: Job | None = None) -> int:
        """Delete provider events received before the retention; returns how many."""
        cutoff = self._clock.now() - timedelta(days=self._settings.provider_event_retention_days)
        async with self._uow() as uow:
            result = await uow.session.execute(
                delete(provider_events).where(provider_events.c.received_at < cutoff)
            )
            await uow.commit()
        if result.rowcount:
            log.info("provider events purged", count=result.rowcount)
        return int(result.rowcount or 0)
