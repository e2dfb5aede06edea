"""The activity log: append-only, one row per thing that happened to a task; and finding a task by its
reference, which the log and the comments share."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection
from uuid6 import uuid7

from splitstone.kernel.db import UnitOfWork, UnitOfWorkFactory
from splitstone.kernel.pagination import decode_cursor, encode_cursor
from splitstone.modules.projects.api import ProjectStatus, TaskNotFound
from splitstone.modules.projects.domain import parse_task_ref, task_key
from splitstone.modules.projects.storage import activity, projects, tasks

MAX_PAGE = 100


def record_activity(
    uow: UnitOfWork,
    *,
    org_id: UUID,
    task_id: UUID,
    actor_id: UUID | None,
    kind: str,
    data: dict[str, Any],
    now: datetime,
) -> None:
    """Append one entry (`kind`: created, status_changed, assigned, commented, ...) in `uow`'s transaction.

    Written with the unit's events at commit (`uow.insert`): nothing reads the log back meanwhile.
    """
    uow.insert(
        activity,
        [
            {
                "id": uuid7(),
                "org_id": org_id,
                "task_id": task_id,
                "actor_id": actor_id,
                "kind": kind,
                "data": json.dumps(data, default=str),
                "created_at": now,
            }
        ],
    )


@dataclass(frozen=True)
class TaskRef:
    """What comments and the log need to know of a task found by its reference."""

    id: UUID
    org_id: UUID
    project_id: UUID
    key: str
    title: str
    project_status: ProjectStatus


async def find_task(session: AsyncConnection, org_id: UUID, ref: str) -> TaskRef:
    """The organization's task named by `ref`: its id (a UUID) or its key (`WEB-42`, any case).

    Raises `TaskNotFound` for anything else, including another organization's task.
    """
    query = (
        select(
            tasks.c.id,
            tasks.c.project_id,
            tasks.c.number,
            tasks.c.title,
            projects.c.key,
            projects.c.status,
        )
        .join(projects, projects.c.id == tasks.c.project_id)
        .where(tasks.c.org_id == org_id, projects.c.org_id == org_id)
    )
    parsed = parse_task_ref(ref)
    if parsed is not None:
        key, number = parsed
        query = query.where(projects.c.key == key, tasks.c.number == number)
    else:
        try:
            task_id = UUID(ref)
        except ValueError:
            raise TaskNotFound(f"No task {ref!r}: use the task's id or its key, such as WEB-42.") from None
        query = query.where(tasks.c.id == task_id)
    row = (await session.execute(query)).one_or_none()
    if row is None:
        raise TaskNotFound(f"The organization has no task {ref!r}.")
    return TaskRef(
        id=row.id,
        org_id=org_id,
        project_id=row.project_id,
        key=task_key(row.key, row.number),
        title=row.title,
        project_status=ProjectStatus(row.status),
    )


@dataclass(frozen=True)
class ActivityEntry:
    id: UUID
    task_id: UUID
    kind: str
    actor_id: UUID | None
    data: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True)
class ActivityPage:
    items: list[ActivityEntry]
    next_cursor: str | None


class ActivityLog:
    """Reads a task's activity. The route authorizes the reader first (`tasks:read`)."""

    def __init__(self, uow: UnitOfWorkFactory) -> None:
        self._uow = uow

    async def page(
        self, org_id: UUID, task_ref: str, *, limit: int = 20, cursor: str | None = None
    ) -> ActivityPage:
        """A task's activity, oldest first: up to `limit` (1..100) entries after `cursor`.

        Raises `TaskNotFound`, and `InvalidCursor` for a cursor this API did not return.
        """
        after = decode_cursor(cursor) if cursor is not None else None
        limit = max(1, min(limit, MAX_PAGE))
        async with self._uow(read_only=True) as uow:
            task = await find_task(uow.session, org_id, task_ref)
            query = select(activity).where(activity.c.task_id == task.id, activity.c.org_id == org_id)
            if after is not None:
                query = query.where(activity.c.id > after)
            rows = (await uow.session.execute(query.order_by(activity.c.id).limit(limit + 1))).all()
        items = [
            ActivityEntry(
                id=row.id,
                task_id=row.task_id,
                kind=row.kind,
                actor_id=row.actor_id,
                data=json.loads(row.data),
                created_at=row.created_at,
            )
            for row in rows[:limit]
        ]
        next_cursor = encode_cursor(items[-1].id) if len(rows) > limit else None
        return ActivityPage(items=items, next_cursor=next_cursor)
