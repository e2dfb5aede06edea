"""Retention: finished rows are history, not state; they are deleted after a while.

Published outbox rows, handled inbox rows and finished jobs older than the retention period go, and
idempotency keys once they expire (`kernel.http.idempotency`, 24 hours by default). Dead
inbox rows and dead jobs stay until an operator retries or discards them. An inbox row is also the
dedupe record of its event, so retention must outlast any redelivery: the JetStream streams keep an
event at most as long as this retention (the worker sets their max age from the same setting).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import timedelta

import structlog
from sqlalchemy import delete

from splitstone.kernel.clock import Clock
from splitstone.kernel.db import ModuleDatabase
from splitstone.kernel.messaging.tables import idempotency_keys, inbox, jobs, outbox

log = structlog.get_logger("splitstone.retention")


@dataclass(frozen=True)
class Purged:
    outbox: int
    inbox: int
    jobs: int
    idempotency_keys: int = 0


async def purge(db: ModuleDatabase, clock: Clock, keep: timedelta) -> Purged:
    """Delete this module's finished rows older than `keep`."""
    cutoff = clock.now() - keep
    async with db.write_engine.begin() as conn:
        published = await conn.execute(
            delete(outbox).where(outbox.c.published_at.is_not(None), outbox.c.published_at < cutoff)
        )
        handled = await conn.execute(
            delete(inbox).where(inbox.c.status == "done", inbox.c.handled_at < cutoff)
        )
        finished = await conn.execute(
            delete(jobs).where(jobs.c.status == "done", jobs.c.finished_at < cutoff)
        )
        expired = await conn.execute(
            delete(idempotency_keys).where(idempotency_keys.c.expires_at <= clock.now())
        )
    return Purged(published.rowcount, handled.rowcount, finished.rowcount, expired.rowcount)


class RetentionLoop:
    """Purges one module's finished rows every `interval`."""

    def __init__(self, db: ModuleDatabase, clock: Clock, keep: timedelta, interval: timedelta) -> None:
        self._db = db
        self._clock = clock
        self._keep = keep
        self._interval = interval.total_seconds()

    @property
    def module(self) -> str:
        return self._db.schema

    async def run(self) -> None:
        while True:
            try:
                purged = await purge(self._db, self._clock, self._keep)
                if any(purged.__dict__.values()):
                    log.info("purged finished rows", module=self.module, **purged.__dict__)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("retention pass failed", module=self.module)
            await asyncio.sleep(self._interval)
