"""What the inbox and the job table share: rows that become due at `next_attempt_at` while `pending`."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import Column, Select, Table, func, select

from splitstone.kernel.clock import Clock
from splitstone.kernel.db import ModuleDatabase

log = structlog.get_logger("splitstone.queues")

# Row states shared by the inbox and the job table. `discarded`: an operator gave up on a dead row.
PENDING, DONE, DEAD, DISCARDED = "pending", "done", "dead", "discarded"


def due_query(
    db: ModuleDatabase, table: Table, clock: Clock, limit: int, *tiebreak: Column[Any]
) -> Select[Any]:
    """Pending rows that are due, soonest first; on PostgreSQL claimed `FOR UPDATE SKIP LOCKED`."""
    query = (
        select(table)
        .where(table.c.status == PENDING, table.c.next_attempt_at <= clock.now())
        .order_by(table.c.next_attempt_at, *tiebreak)
        .limit(limit)
    )
    if db.engine.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    return query


async def seconds_until_due(db: ModuleDatabase, table: Table, clock: Clock, idle_poll: float) -> float:
    """How long a runner may sleep: until the soonest pending row is due, at most `idle_poll`.

    `idle_poll` when the database does not answer: the runner's next pass meets the outage and logs it.
    (Raising here, outside the pass's error handling, once ended the runner's loop for good.)
    """
    try:
        async with db.session() as session:
            soonest: datetime | None = (
                await session.execute(
                    select(func.min(table.c.next_attempt_at)).where(table.c.status == PENDING)
                )
            ).scalar()
    except Exception as error:  # any driver or pool error: the database is not there right now
        log.debug("cannot read when the next row is due", table=table.name, error=repr(error))
        return idle_poll
    if soonest is None:
        return idle_poll
    return min(idle_poll, max(0.01, (soonest - clock.now()).total_seconds()))
