"""Watchers: who hears about a task's comments (its creator and assignee, automatically)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from uuid import UUID

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from splitstone.kernel.db import UnitOfWork, upsert_insert
from splitstone.modules.projects.storage import watchers


async def watch(
    session: AsyncConnection, *, task_id: UUID, user_id: UUID, org_id: UUID, now: datetime
) -> None:
    """`user_id` watches the task from now on (a no-op when it already does)."""
    await session.execute(
        upsert_insert(watchers, session.dialect)
        .values(task_id=task_id, user_id=user_id, org_id=org_id, created_at=now)
        .on_conflict_do_nothing()
    )


def watch_new_task(
    uow: UnitOfWork, *, task_id: UUID, user_ids: Iterable[UUID | None], org_id: UUID, now: datetime
) -> None:
    """The first watchers of a task created in `uow` (None and repeats are skipped), written at commit."""
    uow.insert(
        watchers,
        [
            {"task_id": task_id, "user_id": user_id, "org_id": org_id, "created_at": now}
            for user_id in dict.fromkeys(user_ids)
            if user_id is not None
        ],
    )


async def watcher_ids(session: AsyncConnection, task_id: UUID) -> list[UUID]:
    rows = await session.execute(
        select(watchers.c.user_id).where(watchers.c.task_id == task_id).order_by(watchers.c.created_at)
    )
    return list(rows.scalars())
