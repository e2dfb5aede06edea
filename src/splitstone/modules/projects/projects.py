"""Projects: create, read, rename/describe, archive/unarchive, delete (empty, or with its tasks)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import RowMapping, bindparam, func, select, text, update
from sqlalchemy import delete as sql_delete
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection
from uuid6 import uuid7

from splitstone.kernel.clock import Clock
from splitstone.kernel.db import UnitOfWorkFactory
from splitstone.kernel.errors import InvalidInput
from splitstone.kernel.pagination import decode_cursor, encode_cursor
from splitstone.modules.auth.api import AuthApi, Permission, Principal
from splitstone.modules.billing.api import BillingApi
from splitstone.modules.projects.access import actor_of, authorize
from splitstone.modules.projects.api import (
    ProjectArchived,
    ProjectArchivedError,
    ProjectInfo,
    ProjectKeyTaken,
    ProjectNotEmpty,
    ProjectNotFound,
    ProjectStatus,
)
from splitstone.modules.projects.domain import KEY_PATTERN, project_key
from splitstone.modules.projects.storage import activity, comments, projects, task_labels, tasks, watchers

MAX_PAGE = 100
MAX_NAME = 200
MAX_DESCRIPTION = 10_000
PROJECTS_ENTITLEMENT = "projects"

ProjectRef = UUID | str
"""A project's id, or its key in any case (`WEB`, `web`)."""


@dataclass(frozen=True)
class Project:
    """One row of `projects`."""

    id: UUID
    org_id: UUID
    key: str
    name: str
    description: str
    status: ProjectStatus
    last_number: int
    created_by: UUID | None
    created_at: datetime
    updated_at: datetime
    archived_at: datetime | None

    @classmethod
    def from_row(cls, row: RowMapping) -> Project:
        return cls(
            id=row["id"],
            org_id=row["org_id"],
            key=row["key"],
            name=row["name"],
            description=row["description"],
            status=ProjectStatus(row["status"]),
            last_number=row["last_number"],
            created_by=row["created_by"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
            archived_at=row["archived_at"],
        )

    def info(self) -> ProjectInfo:
        return ProjectInfo(id=self.id, org_id=self.org_id, key=self.key, name=self.name, status=self.status)


@dataclass(frozen=True)
class ProjectPage:
    items: list[Project]
    next_cursor: str | None


# -- helpers shared with tasks -----------------------------------------------------------------------------


async def load_project(
    session: AsyncConnection, org_id: UUID, project_id: UUID, *, lock: bool = False
) -> RowMapping | None:
    """The project's row, if it belongs to `org_id`; `lock` takes its row lock (FOR UPDATE on PostgreSQL;
    on SQLite the unit of work's write lock already serializes writers)."""
    query = select(projects).where(projects.c.id == project_id, projects.c.org_id == org_id)
    if lock:
        query = query.with_for_update()
    return (await session.execute(query)).mappings().first()


_TAKE_NUMBER = (
    update(projects)
    .where(projects.c.id == bindparam("b_project_id"))
    .values(last_number=projects.c.last_number + 1)
    .returning(projects.c.last_number, projects.c.status)
)


async def take_number(session: AsyncConnection, project_id: UUID) -> tuple[int, ProjectStatus]:
    """Allocate the project's next task number, race-free, and read its status under the same lock.

    The UPDATE takes the row's lock, so concurrent allocations queue and each gets its own number, and
    the status it returns is the latest committed one (an archive that committed meanwhile shows).
    Raises `ProjectNotFound` if the project is gone.
    """
    row = (await session.execute(_TAKE_NUMBER, {"b_project_id": project_id})).first()
    if row is None:
        raise ProjectNotFound(f"No project with id {project_id}.", project_id=str(project_id))
    return int(row[0]), ProjectStatus(row[1])


async def next_number(session: AsyncConnection, project_id: UUID) -> int:
    """Allocate the project's next task number, race-free (see `take_number`)."""
    number, _ = await take_number(session, project_id)
    return number


def _clean_name(name: str) -> str:
    cleaned = name.strip()
    if not cleaned or len(cleaned) > MAX_NAME:
        raise InvalidInput(f"A project's name is 1 to {MAX_NAME} characters long.", field="name")
    return cleaned


def _clean_description(description: str) -> str:
    if len(description) > MAX_DESCRIPTION:
        raise InvalidInput(
            f"A project's description is at most {MAX_DESCRIPTION} characters long.", field="description"
        )
    return description


def _not_found(ref: ProjectRef) -> ProjectNotFound:
    return ProjectNotFound(f"No project {ref} in this organization.", project=str(ref))


async def find_project(
    session: AsyncConnection, org_id: UUID, ref: ProjectRef, *, lock: bool = False
) -> Project:
    """The project `ref` names (its id, as a UUID or a string, or its key in any case) in `org_id`;
    `ProjectNotFound` otherwise. `lock` as for `load_project`."""
    if isinstance(ref, str):
        with contextlib.suppress(ValueError):
            ref = UUID(ref)
    if isinstance(ref, UUID):
        row = await load_project(session, org_id, ref, lock=lock)
    else:
        key = ref.strip().upper()
        if not KEY_PATTERN.match(key):
            raise _not_found(ref)
        query = select(projects).where(projects.c.org_id == org_id, projects.c.key == key)
        if lock:
            query = query.with_for_update()
        row = (await session.execute(query)).mappings().first()
    if row is None:
        raise _not_found(ref)
    return Project.from_row(row)


def _org_lock_key(org_id: UUID) -> int:
    """A signed 64-bit advisory-lock key for the organization's project creations."""
    return int.from_bytes(org_id.bytes[8:], "big", signed=True)


class Projects:
    def __init__(self, uow: UnitOfWorkFactory, clock: Clock, auth: AuthApi, billing: BillingApi) -> None:
        self._uow = uow
        self._clock = clock
        self._auth = auth
        self._billing = billing

    # -- creating ------------------------------------------------------------------------------------------

    async def create(
        self, principal: Principal, org_id: UUID, *, key: str, name: str, description: str = ""
    ) -> Project:
        """A new active project (projects:manage). 422 `invalid-project-key`, 409 `project-key-taken`,
        402 `entitlement-exceeded` when the plan's project limit is reached."""
        await authorize(self._auth, principal, org_id, Permission.PROJECTS_MANAGE)
        key = project_key(key)
        name = _clean_name(name)
        description = _clean_description(description)
        now = self._clock.now()
        project_id = uuid7()
        async with self._uow() as uow:
            session = uow.session
            if not uow.db.is_sqlite:  # (SQLite's IMMEDIATE transaction already holds the write lock)
                # Two creations at once must not both count N-1 projects and both pass the limit.
                await session.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": _org_lock_key(org_id)}
                )
            taken = await session.execute(
                select(projects.c.id).where(projects.c.org_id == org_id, projects.c.key == key)
            )
            if taken.first() is not None:
                raise self._key_taken(key)
            current = await self._count(session, org_id)
            await self._billing.require_entitlement(org_id, PROJECTS_ENTITLEMENT, 1, current=current)
            try:
                await session.execute(
                    projects.insert().values(
                        id=project_id,
                        org_id=org_id,
                        key=key,
                        name=name,
                        description=description,
                        status=ProjectStatus.ACTIVE.value,
                        last_number=0,
                        created_by=actor_of(principal),
                        created_at=now,
                        updated_at=now,
                        archived_at=None,
                    )
                )
            except IntegrityError:
                raise self._key_taken(key) from None
            project = await find_project(session, org_id, project_id)
            await uow.commit()
        return project

    @staticmethod
    def _key_taken(key: str) -> ProjectKeyTaken:
        return ProjectKeyTaken(f"Another project of the organization has the key {key}.", key=key)

    # -- reading -------------------------------------------------------------------------------------------

    async def get(self, principal: Principal, org_id: UUID, project_ref: ProjectRef) -> Project:
        """One project by id or key (projects:read); 404 `project-not-found`."""
        await authorize(self._auth, principal, org_id, Permission.PROJECTS_READ)
        async with self._uow(read_only=True) as uow:
            return await find_project(uow.session, org_id, project_ref)

    async def list(
        self,
        principal: Principal,
        org_id: UUID,
        *,
        status: ProjectStatus | None = None,
        limit: int = 20,
        cursor: str | None = None,
    ) -> ProjectPage:
        """The organization's projects, newest first (projects:read), a page at a time."""
        await authorize(self._auth, principal, org_id, Permission.PROJECTS_READ)
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidInput(f"limit is 1 to {MAX_PAGE}.", field="limit")
        query = select(projects).where(projects.c.org_id == org_id)
        if status is not None:
            query = query.where(projects.c.status == status.value)
        if cursor is not None:
            query = query.where(projects.c.id < decode_cursor(cursor))
        query = query.order_by(projects.c.id.desc()).limit(limit + 1)
        async with self._uow(read_only=True) as uow:
            rows = (await uow.session.execute(query)).mappings().all()
        items = [Project.from_row(row) for row in rows[:limit]]
        next_cursor = encode_cursor(items[-1].id) if len(rows) > limit else None
        return ProjectPage(items=items, next_cursor=next_cursor)

    async def info(self, org_id: UUID, project_id: UUID) -> ProjectInfo:
        """The contract's view of one project (no principal: for other modules); 404 if absent."""
        async with self._uow(read_only=True) as uow:
            return (await find_project(uow.session, org_id, project_id)).info()

    async def count(self, org_id: UUID) -> int:
        """How many projects the organization has, archived ones included."""
        async with self._uow(read_only=True) as uow:
            return await self._count(uow.session, org_id)

    @staticmethod
    async def _count(session: AsyncConnection, org_id: UUID) -> int:
        result = await session.execute(select(func.count()).where(projects.c.org_id == org_id))
        return int(result.scalar_one())

    # -- changing ------------------------------------------------------------------------------------------

    async def update(
        self,
        principal: Principal,
        org_id: UUID,
        project_id: ProjectRef,
        *,
        name: str | None = None,
        description: str | None = None,
    ) -> Project:
        """Rename or describe a project (projects:manage); 409 `project-archived` while it is archived."""
        await authorize(self._auth, principal, org_id, Permission.PROJECTS_MANAGE)
        values: dict[str, Any] = {}
        if name is not None:
            values["name"] = _clean_name(name)
        if description is not None:
            values["description"] = _clean_description(description)
        async with self._uow() as uow:
            project = await find_project(uow.session, org_id, project_id, lock=True)
            if project.status is ProjectStatus.ARCHIVED:
                raise ProjectArchivedError(
                    f"Project {project.key} is archived; unarchive it to change it.", key=project.key
                )
            if not values or all(getattr(project, k) == v for k, v in values.items()):
                return project
            values["updated_at"] = self._clock.now()
            await uow.session.execute(update(projects).where(projects.c.id == project.id).values(**values))
            project = await find_project(uow.session, org_id, project.id)
            await uow.commit()
        return project

    async def archive(self, principal: Principal, org_id: UUID, project_id: ProjectRef) -> Project:
        """Archive a project (projects:manage): its tasks become read-only. Again: nothing changes."""
        await authorize(self._auth, principal, org_id, Permission.PROJECTS_MANAGE)
        async with self._uow() as uow:
            project = await find_project(uow.session, org_id, project_id, lock=True)
            if project.status is ProjectStatus.ARCHIVED:
                return project
            now = self._clock.now()
            await uow.session.execute(
                update(projects)
                .where(projects.c.id == project.id)
                .values(status=ProjectStatus.ARCHIVED.value, archived_at=now, updated_at=now)
            )
            uow.publish(
                ProjectArchived(
                    occurred_at=now,
                    aggregate_id=project.id,
                    org_id=org_id,
                    project_id=project.id,
                    key=project.key,
                    project_name=project.name,
                    archived_by=actor_of(principal),
                )
            )
            project = await find_project(uow.session, org_id, project.id)
            await uow.commit()
        return project

    async def unarchive(self, principal: Principal, org_id: UUID, project_id: ProjectRef) -> Project:
        """Make an archived project active again (projects:manage); an active one is left as it is."""
        await authorize(self._auth, principal, org_id, Permission.PROJECTS_MANAGE)
        async with self._uow() as uow:
            project = await find_project(uow.session, org_id, project_id, lock=True)
            if project.status is ProjectStatus.ACTIVE:
                return project
            await uow.session.execute(
                update(projects)
                .where(projects.c.id == project.id)
                .values(status=ProjectStatus.ACTIVE.value, archived_at=None, updated_at=self._clock.now())
            )
            project = await find_project(uow.session, org_id, project.id)
            await uow.commit()
        return project

    async def delete(
        self, principal: Principal, org_id: UUID, project_id: ProjectRef, *, cascade: bool = False
    ) -> None:
        """Delete a project (projects:manage). 409 `project-not-empty` while it has tasks, unless `cascade`:
        then its tasks go too, with their labels, watchers, comments and activity, in one transaction."""
        await authorize(self._auth, principal, org_id, Permission.PROJECTS_MANAGE)
        async with self._uow() as uow:
            session = uow.session
            # The row lock makes a concurrent task creation (its `next_number`) wait for this to end.
            project = await find_project(session, org_id, project_id, lock=True)
            task_ids = select(tasks.c.id).where(tasks.c.project_id == project.id, tasks.c.org_id == org_id)
            has_tasks = (await session.execute(select(task_ids.exists()))).scalar_one()
            if has_tasks and not cascade:
                raise ProjectNotEmpty(
                    f"Project {project.key} still has tasks; delete them first, or pass cascade=true.",
                    key=project.key,
                )
            if has_tasks:
                for table in (task_labels, watchers, comments, activity):
                    await session.execute(
                        sql_delete(table).where(table.c.org_id == org_id, table.c.task_id.in_(task_ids))
                    )
                await session.execute(
                    sql_delete(tasks).where(tasks.c.project_id == project.id, tasks.c.org_id == org_id)
                )
            await session.execute(sql_delete(projects).where(projects.c.id == project.id))
            await uow.commit()


__all__ = [
    "MAX_PAGE",
    "Project",
    "ProjectPage",
    "ProjectRef",
    "Projects",
    "find_project",
    "load_project",
    "next_number",
    "take_number",
]
