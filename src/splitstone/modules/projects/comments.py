"""Comments on tasks: add, list, edit one's own, delete one's own (admins any).

Commenting makes the author a watcher of the task, records `commented` in its activity, and publishes
`projects.TaskCommented` with the task's watchers, so notifications can tell everyone but the author.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from uuid import UUID

from sqlalchemy import RowMapping, select
from sqlalchemy.ext.asyncio import AsyncConnection
from uuid6 import uuid7

from splitstone.kernel.clock import Clock
from splitstone.kernel.db import UnitOfWorkFactory
from splitstone.kernel.errors import InvalidInput, PermissionDenied
from splitstone.kernel.pagination import decode_cursor, encode_cursor
from splitstone.modules.auth.api import AuthApi, Permission, Principal
from splitstone.modules.projects import access
from splitstone.modules.projects.activity import TaskRef, find_task, record_activity
from splitstone.modules.projects.api import (
    CommentNotFound,
    ProjectArchivedError,
    ProjectStatus,
    TaskCommented,
)
from splitstone.modules.projects.storage import comments
from splitstone.modules.projects.watchers import watch, watcher_ids

MAX_BODY = 10_000
MAX_EXCERPT = 200
MAX_PAGE = 100


class InvalidCommentBody(InvalidInput):
    code = "invalid-comment-body"
    title = "Invalid comment body"


class NotTheAuthor(PermissionDenied):
    code = "not-the-author"
    title = "Only the comment's author may do this"


@dataclass(frozen=True)
class Comment:
    id: UUID
    org_id: UUID
    task_id: UUID
    author_id: UUID | None
    body: str
    created_at: datetime
    updated_at: datetime
    edited_at: datetime | None


@dataclass(frozen=True)
class CommentPage:
    items: list[Comment]
    next_cursor: str | None


def clean_body(body: str) -> str:
    """The body without surrounding whitespace: 1 to 10,000 characters, else `InvalidCommentBody`."""
    cleaned = body.strip()
    if not cleaned:
        raise InvalidCommentBody("A comment needs some text.")
    if len(cleaned) > MAX_BODY:
        raise InvalidCommentBody(
            f"A comment has at most {MAX_BODY:,} characters; this one has {len(cleaned):,}.",
            length=len(cleaned),
            max_length=MAX_BODY,
        )
    return cleaned


def excerpt(body: str) -> str:
    """The body on one line, cut to at most 200 characters (ending in "…" when cut)."""
    line = " ".join(body.split())
    if len(line) <= MAX_EXCERPT:
        return line
    return line[: MAX_EXCERPT - 1].rstrip() + "…"


def _comment(row: RowMapping) -> Comment:
    return Comment(
        id=row["id"],
        org_id=row["org_id"],
        task_id=row["task_id"],
        author_id=row["author_id"],
        body=row["body"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        edited_at=row["edited_at"],
    )


def _writable(task: TaskRef) -> None:
    if task.project_status is ProjectStatus.ARCHIVED:
        raise ProjectArchivedError(
            f"{task.key} belongs to an archived project: unarchive it to comment.", task=task.key
        )


class Comments:
    def __init__(self, uow: UnitOfWorkFactory, clock: Clock, auth: AuthApi) -> None:
        self._uow = uow
        self._clock = clock
        self._auth = auth

    async def add(self, principal: Principal, org_id: UUID, task_ref: str, body: str) -> Comment:
        """Comment on a task (`tasks:write`); the author watches the task from now on.

        Raises `TaskNotFound`, `InvalidCommentBody` and `ProjectArchivedError` (archived project).
        """
        await access.authorize(self._auth, principal, org_id, Permission.TASKS_WRITE)
        text = clean_body(body)
        author_id = access.actor_of(principal)
        now = self._clock.now()
        async with self._uow() as uow:
            task = await find_task(uow.session, org_id, task_ref)
            _writable(task)
            comment = Comment(
                id=uuid7(),
                org_id=org_id,
                task_id=task.id,
                author_id=author_id,
                body=text,
                created_at=now,
                updated_at=now,
                edited_at=None,
            )
            await uow.session.execute(
                comments.insert().values(
                    id=comment.id,
                    org_id=org_id,
                    task_id=task.id,
                    author_id=author_id,
                    body=text,
                    created_at=now,
                    updated_at=now,
                    edited_at=None,
                )
            )
            if author_id is not None:
                await watch(uow.session, task_id=task.id, user_id=author_id, org_id=org_id, now=now)
            record_activity(
                uow,
                org_id=org_id,
                task_id=task.id,
                actor_id=author_id,
                kind="commented",
                data={"comment_id": str(comment.id)},
                now=now,
            )
            uow.publish(
                TaskCommented(
                    occurred_at=now,
                    aggregate_id=task.id,
                    org_id=org_id,
                    project_id=task.project_id,
                    task_id=task.id,
                    key=task.key,
                    title=task.title,
                    comment_id=comment.id,
                    author_id=author_id,
                    excerpt=excerpt(text),
                    watcher_ids=await watcher_ids(uow.session, task.id),
                )
            )
            await uow.commit()
        return comment

    async def page(
        self,
        principal: Principal,
        org_id: UUID,
        task_ref: str,
        *,
        limit: int = 20,
        cursor: str | None = None,
    ) -> CommentPage:
        """A task's comments, oldest first (`tasks:read`): up to `limit` (1..100) after `cursor`."""
        await access.authorize(self._auth, principal, org_id, Permission.TASKS_READ)
        after = decode_cursor(cursor) if cursor is not None else None
        limit = max(1, min(limit, MAX_PAGE))
        async with self._uow(read_only=True) as uow:
            task = await find_task(uow.session, org_id, task_ref)
            query = select(comments).where(comments.c.task_id == task.id, comments.c.org_id == org_id)
            if after is not None:
                query = query.where(comments.c.id > after)
            rows = (await uow.session.execute(query.order_by(comments.c.id).limit(limit + 1))).mappings()
            found = [_comment(row) for row in rows]
        items = found[:limit]
        next_cursor = encode_cursor(items[-1].id) if len(found) > limit else None
        return CommentPage(items=items, next_cursor=next_cursor)

    async def edit(
        self, principal: Principal, org_id: UUID, task_ref: str, comment_id: UUID, body: str
    ) -> Comment:
        """Change one's own comment's text (`tasks:write`); sets `edited_at`.

        Raises `TaskNotFound`, `CommentNotFound`, `NotTheAuthor` (403), `InvalidCommentBody` and
        `ProjectArchivedError`.
        """
        await access.authorize(self._auth, principal, org_id, Permission.TASKS_WRITE)
        text = clean_body(body)
        actor = access.actor_of(principal)
        now = self._clock.now()
        async with self._uow() as uow:
            task = await find_task(uow.session, org_id, task_ref)
            comment = await self._get(uow.session, org_id, task, comment_id)
            if actor is None or comment.author_id != actor:
                raise NotTheAuthor("Only its author may edit a comment.")
            _writable(task)
            if text == comment.body:
                return comment  # nothing changed: not "edited"
            await uow.session.execute(
                comments.update()
                .where(comments.c.id == comment.id, comments.c.org_id == org_id)
                .values(body=text, updated_at=now, edited_at=now)
            )
            await uow.commit()
        return replace(comment, body=text, updated_at=now, edited_at=now)

    async def delete(self, principal: Principal, org_id: UUID, task_ref: str, comment_id: UUID) -> None:
        """Delete a comment (`tasks:write`): one's own, or anyone's for owners and admins.

        Raises `TaskNotFound`, `CommentNotFound` and `NotTheAuthor` (403).
        """
        granted = await access.authorize(self._auth, principal, org_id, Permission.TASKS_WRITE)
        actor = access.actor_of(principal)
        async with self._uow() as uow:
            task = await find_task(uow.session, org_id, task_ref)
            comment = await self._get(uow.session, org_id, task, comment_id)
            own = actor is not None and comment.author_id == actor
            if not own and not access.is_admin(granted):
                raise NotTheAuthor("Only its author, or an owner or admin, may delete a comment.")
            await uow.session.execute(
                comments.delete().where(comments.c.id == comment.id, comments.c.org_id == org_id)
            )
            await uow.commit()

    @staticmethod
    async def _get(session: AsyncConnection, org_id: UUID, task: TaskRef, comment_id: UUID) -> Comment:
        row = (
            (
                await session.execute(
                    select(comments).where(
                        comments.c.id == comment_id,
                        comments.c.task_id == task.id,
                        comments.c.org_id == org_id,
                    )
                )
            )
            .mappings()
            .one_or_none()
        )
        if row is None:
            raise CommentNotFound(f"{task.key} has no comment {comment_id}.")
        return _comment(row)
