"""Tasks: create (numbered per project without races), read by id or `KEY-N`, update with optimistic
concurrency, move between projects, delete."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import date, datetime
from typing import Any
from uuid import UUID

import structlog
from sqlalchemy import bindparam, delete, select, update
from sqlalchemy.ext.asyncio import AsyncConnection
from uuid6 import uuid7

from splitstone.kernel.clock import Clock
from splitstone.kernel.db import UnitOfWork, UnitOfWorkFactory
from splitstone.kernel.errors import InvalidInput
from splitstone.kernel.messaging.jobs import Job, job
from splitstone.kernel.reads import FetchedRow, PreparedQuery
from splitstone.modules.auth.api import AuthApi, NotAMember, Permission, Principal
from splitstone.modules.billing.api import BillingApi, UsagePeriodClosed
from splitstone.modules.projects import domain
from splitstone.modules.projects.access import actor_of, authorize
from splitstone.modules.projects.activity import record_activity
from splitstone.modules.projects.api import (
    NotAssignable,
    Priority,
    ProjectArchivedError,
    ProjectNotFound,
    ProjectStatus,
    TaskAssigned,
    TaskCreated,
    TaskInfo,
    TaskNotFound,
    TaskStatus,
    TaskStatusChanged,
    VersionMismatch,
)
from splitstone.modules.projects.projects import take_number
from splitstone.modules.projects.storage import activity, comments, projects, task_labels, tasks, watchers
from splitstone.modules.projects.watchers import watch, watch_new_task

REPORT_USAGE = "projects.report_usage"
"""External job: tell billing that a task was created (`tasks` metric), once per task."""

TASKS_METRIC = "tasks"
TASKS_ENTITLEMENT = "tasks_per_month"
MAX_TITLE = 300
MAX_DESCRIPTION = 100_000
UPDATABLE = frozenset({"title", "description", "status", "priority", "assignee_id", "due_date", "labels"})
_RETRIES = 5  # an update without If-Match re-reads and retries when another writer got in between

log = structlog.get_logger("splitstone.projects")


@dataclass(frozen=True)
class Task:
    """A task as stored, with its project's key (so `key` is "WEB-42")."""

    id: UUID
    org_id: UUID
    project_id: UUID
    project_key: str
    number: int
    title: str
    description: str
    status: TaskStatus
    priority: Priority
    assignee_id: UUID | None
    due_date: date | None
    labels: list[str]
    created_by: UUID | None
    created_at: datetime
    updated_at: datetime
    version: int

    @property
    def key(self) -> str:
        return domain.task_key(self.project_key, self.number)

    def info(self) -> TaskInfo:
        return TaskInfo(
            id=self.id,
            org_id=self.org_id,
            project_id=self.project_id,
            key=self.key,
            title=self.title,
            status=self.status,
            priority=self.priority,
            assignee_id=self.assignee_id,
            due_date=self.due_date,
            labels=list(self.labels),
            created_by=self.created_by,
            created_at=self.created_at,
            updated_at=self.updated_at,
            version=self.version,
        )


@dataclass(frozen=True)
class _Project:
    id: UUID
    org_id: UUID
    key: str
    status: ProjectStatus


# -- input cleaning (the routes validate shapes; these hold for any caller) ------------------------------


def clean_title(raw: str) -> str:
    title = raw.strip()
    if not title:
        raise InvalidInput("A task needs a title.", field="title")
    if len(title) > MAX_TITLE:
        raise InvalidInput(f"A title has at most {MAX_TITLE} characters.", field="title")
    return title


def clean_description(raw: str) -> str:
    if len(raw) > MAX_DESCRIPTION:
        raise InvalidInput(f"A description has at most {MAX_DESCRIPTION} characters.", field="description")
    return raw


def as_priority(raw: Priority | int | str) -> Priority:
    """A priority from its number (0-4) or its name ("none", "low", "medium", "high", "urgent")."""
    try:
        if isinstance(raw, str) and not raw.isdigit():
            return Priority[raw.strip().upper()]
        return Priority(int(raw))
    except (KeyError, ValueError):
        names = ", ".join(p.name.lower() for p in Priority)
        raise InvalidInput(f"{raw!r} is not a priority: one of {names}.", field="priority") from None


def as_status(raw: TaskStatus | str) -> TaskStatus:
    try:
        return TaskStatus(raw)
    except ValueError:
        names = ", ".join(s.value for s in TaskStatus)
        raise InvalidInput(f"{raw!r} is not a status: one of {names}.", field="status") from None


# -- queries ----------------------------------------------------------------------------------------------


_PROJECT_COLUMNS = (projects.c.id, projects.c.org_id, projects.c.key, projects.c.status)
_PROJECT_BY_ID = PreparedQuery(
    select(*_PROJECT_COLUMNS).where(
        projects.c.org_id == bindparam("org_id"), projects.c.id == bindparam("ref")
    )
)
_PROJECT_BY_KEY = PreparedQuery(
    select(*_PROJECT_COLUMNS).where(
        projects.c.org_id == bindparam("org_id"), projects.c.key == bindparam("ref")
    )
)


def _project_query(ref: str | UUID) -> tuple[PreparedQuery, UUID | str] | None:
    """The query of a project by id or by key (any case), with the value it looks for; None: no such
    project can exist. Both are scoped by organization."""
    if isinstance(ref, UUID):
        return _PROJECT_BY_ID, ref
    try:
        return _PROJECT_BY_ID, UUID(ref)
    except ValueError:
        pass
    try:
        return _PROJECT_BY_KEY, domain.project_key(ref)
    except domain.InvalidProjectKey:
        return None


async def _find_project(uow: UnitOfWork, org_id: UUID, ref: str | UUID) -> _Project:
    found = _project_query(ref)
    row = None
    if found is not None:
        query, value = found
        row = await uow.fetch_one(query, org_id=org_id, ref=value)
    if row is None:
        raise ProjectNotFound(f"No project {ref} in this organization.", project=str(ref))
    return _Project(row["id"], row["org_id"], row["key"], ProjectStatus(row["status"]))


def _require_active(project: _Project) -> None:
    if project.status is not ProjectStatus.ACTIVE:
        raise ProjectArchivedError(
            f"Project {project.key} is archived: its tasks are read-only until it is unarchived.",
            project_id=str(project.id),
            project_key=project.key,
        )


async def _take_number(session: AsyncConnection, project: _Project) -> int:
    """The project's next task number, in the caller's transaction (projects' `take_number`).

    Its `UPDATE ... SET last_number = last_number + 1 RETURNING` takes the project row's write lock, so
    a concurrent creation waits for this transaction and then reads the number it committed: numbers
    never repeat and never skip (a rolled-back transaction gives its number back). The same statement
    returns the project's status as of that lock, so an archive committed since the first read wins.
    """
    number, status = await take_number(session, project.id)
    _require_active(replace(project, status=status))
    return number


_TASK_COLUMNS = (*tasks.c, projects.c.key.label("project_key"))


def task_of(row: FetchedRow, project_key: str | None = None) -> Task:
    """A `Task` from a `tasks` row; its project key from the row, or as given (lists read keys apart)."""
    return Task(
        id=row["id"],
        org_id=row["org_id"],
        project_id=row["project_id"],
        project_key=project_key if project_key is not None else row["project_key"],
        number=row["number"],
        title=row["title"],
        description=row["description"],
        status=TaskStatus(row["status"]),
        priority=Priority(row["priority"]),
        assignee_id=row["assignee_id"],
        due_date=row["due_date"],
        labels=list(json.loads(row["labels"])),
        created_by=row["created_by"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        version=row["version"],
    )


_TASKS_WITH_KEYS = tasks.join(projects, projects.c.id == tasks.c.project_id)
_TASK_BY_ID = PreparedQuery(
    select(*_TASK_COLUMNS)
    .select_from(_TASKS_WITH_KEYS)
    .where(tasks.c.org_id == bindparam("org_id"), tasks.c.id == bindparam("task_id"))
)
_TASK_BY_KEY = PreparedQuery(
    select(*_TASK_COLUMNS)
    .select_from(_TASKS_WITH_KEYS)
    .where(
        projects.c.org_id == bindparam("org_id"),
        projects.c.key == bindparam("key"),
        tasks.c.number == bindparam("number"),
    )
)


def _task_lookup(org_id: UUID, ref: str | UUID) -> tuple[PreparedQuery, dict[str, Any]]:
    """The read that finds a task of the organization by UUID or by "KEY-N" (any case); 404 otherwise."""
    task_id: UUID | None = ref if isinstance(ref, UUID) else None
    if task_id is None:
        try:
            task_id = UUID(str(ref))
        except ValueError:
            parsed = domain.parse_task_ref(str(ref))
            if parsed is None:
                raise TaskNotFound(
                    f"{ref!r} is neither a task id nor a task key such as WEB-42.", task=str(ref)
                ) from None
            key, number = parsed
            return _TASK_BY_KEY, {"org_id": org_id, "key": key, "number": number}
    return _TASK_BY_ID, {"org_id": org_id, "task_id": task_id}


def _found(row: FetchedRow | None, ref: str | UUID) -> Task:
    if row is None:
        raise TaskNotFound(f"No task {ref} in this organization.", task=str(ref))
    return task_of(row)


async def _find_task(session: AsyncConnection, org_id: UUID, ref: str | UUID) -> Task:
    """A task of the organization by UUID or by "KEY-N" (any case), in a unit that may write."""
    query, params = _task_lookup(org_id, ref)
    return _found(await query.fetch_one(session, params, direct=False), ref)


async def _read_task(uow: UnitOfWork, org_id: UUID, ref: str | UUID) -> Task:
    """`_find_task` for a read-only unit of work (on PostgreSQL it reads on the driver itself)."""
    query, params = _task_lookup(org_id, ref)
    return _found(await uow.fetch_one(query, **params), ref)


def _label_rows(task_id: UUID, org_id: UUID, labels: list[str]) -> list[dict[str, Any]]:
    return [{"task_id": task_id, "org_id": org_id, "label": label} for label in labels]


async def _replace_labels(session: AsyncConnection, task_id: UUID, org_id: UUID, labels: list[str]) -> None:
    await session.execute(delete(task_labels).where(task_labels.c.task_id == task_id))
    if labels:
        await session.execute(task_labels.insert(), _label_rows(task_id, org_id, labels))


# -- the use cases ----------------------------------------------------------------------------------------


class Tasks:
    """Task use cases; each authorizes its principal, except the contract's `info`."""

    def __init__(self, uow: UnitOfWorkFactory, clock: Clock, auth: AuthApi, billing: BillingApi) -> None:
        self._uow = uow
        self._clock = clock
        self._auth = auth
        self._billing = billing

    async def create(
        self,
        principal: Principal,
        org_id: UUID,
        project_ref_or_id: str | UUID,
        *,
        title: str,
        description: str = "",
        status: TaskStatus | str = TaskStatus.TODO,
        priority: Priority | int | str = Priority.NONE,
        assignee_id: UUID | None = None,
        due_date: date | None = None,
        labels: list[str] | None = None,
    ) -> Task:
        """A new task in an active project, numbered next in it.

        Raises `ProjectNotFound`, `ProjectArchivedError` (409), `EntitlementExceeded` (402, over the
        plan's `tasks_per_month`), `NotAssignable` (422), `InvalidInput`/`InvalidLabel` (422).
        """
        await authorize(self._auth, principal, org_id, Permission.TASKS_WRITE)
        title = clean_title(title)
        description = clean_description(description)
        status = as_status(status)
        priority = as_priority(priority)
        cleaned_labels = domain.clean_labels(labels or [])
        async with self._uow(read_only=True) as reading:
            project = await _find_project(reading, org_id, project_ref_or_id)
        _require_active(project)
        # Other modules are asked before this module's transaction, so no lock is held across the calls.
        await self._billing.require_entitlement(org_id, TASKS_ENTITLEMENT, 1)
        if assignee_id is not None:
            await self._require_member(org_id, assignee_id)
        actor = actor_of(principal)
        now = self._clock.now()
        task_id = uuid7()
        async with self._uow() as uow:
            number = await _take_number(uow.session, project)
            uow.insert(
                tasks,
                [
                    {
                        "id": task_id,
                        "org_id": org_id,
                        "project_id": project.id,
                        "number": number,
                        "title": title,
                        "description": description,
                        "status": status.value,
                        "priority": int(priority),
                        "assignee_id": assignee_id,
                        "due_date": due_date,
                        "labels": json.dumps(cleaned_labels),
                        "created_by": actor,
                        "created_at": now,
                        "updated_at": now,
                        "version": 1,
                    }
                ],
            )
            # Nothing reads the new rows back in this transaction: they go with its events, at commit.
            uow.insert(task_labels, _label_rows(task_id, org_id, cleaned_labels))
            watch_new_task(uow, task_id=task_id, user_ids=[actor, assignee_id], org_id=org_id, now=now)
            task = Task(
                id=task_id,
                org_id=org_id,
                project_id=project.id,
                project_key=project.key,
                number=number,
                title=title,
                description=description,
                status=status,
                priority=priority,
                assignee_id=assignee_id,
                due_date=due_date,
                labels=cleaned_labels,
                created_by=actor,
                created_at=now,
                updated_at=now,
                version=1,
            )
            record_activity(
                uow,
                org_id=org_id,
                task_id=task_id,
                actor_id=actor,
                kind="created",
                data={"key": task.key, "title": title, "status": status.value},
                now=now,
            )
            uow.publish(
                TaskCreated(
                    occurred_at=now,
                    aggregate_id=task_id,
                    org_id=org_id,
                    project_id=project.id,
                    task_id=task_id,
                    key=task.key,
                    title=title,
                    created_by=actor,
                    assignee_id=assignee_id,
                )
            )
            if assignee_id is not None:
                uow.publish(self._assigned(task, None, actor, now))
            # Billing meters creations through this job, scheduled with the task: exactly when it exists.
            uow.schedule(
                job(
                    REPORT_USAGE,
                    {"org_id": str(org_id), "task_id": str(task_id), "occurred_at": now.isoformat()},
                    run_at=now,
                    idempotency_key=str(task_id),
                )
            )
            await uow.commit()
        return task

    async def report_usage(self, job: Job) -> None:
        """External job `projects.report_usage`: tell billing a task was created (idempotent per task)."""
        org_id = UUID(job.payload["org_id"])
        task_id = UUID(job.payload["task_id"])
        occurred_at = datetime.fromisoformat(job.payload["occurred_at"])
        try:
            await self._billing.record_usage(
                org_id, TASKS_METRIC, 1, f"task:{task_id}", occurred_at=occurred_at
            )
        except UsagePeriodClosed:
            # Its period is invoiced already; retrying cannot change that.
            log.warning(
                "task usage not reported: its billing period is closed",
                org_id=str(org_id),
                task_id=str(task_id),
            )

    async def get(self, principal: Principal, org_id: UUID, ref: str | UUID) -> Task:
        """A task by id or by key ("WEB-42", any case); raises `TaskNotFound`."""
        await authorize(self._auth, principal, org_id, Permission.TASKS_READ)
        async with self._uow(read_only=True) as uow:
            return await _read_task(uow, org_id, ref)

    async def info(self, org_id: UUID, task_id: UUID) -> TaskInfo:
        """The contract's view of a task (no principal: callers are other modules)."""
        async with self._uow(read_only=True) as uow:
            return (await _read_task(uow, org_id, task_id)).info()

    async def update(
        self,
        principal: Principal,
        org_id: UUID,
        ref: str | UUID,
        *,
        if_match: int | None,
        changes: Mapping[str, Any],
    ) -> Task:
        """Change the fields in `changes` (PATCH: others stay), keys among `UPDATABLE`.

        `if_match`: the version the caller read; another one is 412 `VersionMismatch`. Without it the
        last write wins (the update still never overwrites a change it did not see: it re-reads and
        applies `changes` again). Raises `IllegalStatusChange` (409), `NotAssignable` (422),
        `ProjectArchivedError` (409), `TaskNotFound`.
        """
        unknown = set(changes) - UPDATABLE
        if unknown:
            raise InvalidInput(f"Cannot change {', '.join(sorted(unknown))}.", fields=sorted(unknown))
        await authorize(self._auth, principal, org_id, Permission.TASKS_WRITE)
        actor = actor_of(principal)
        for _ in range(_RETRIES):
            async with self._uow(read_only=True) as reading:
                current = await _find_task(reading.session, org_id, ref)
                project = await _find_project(reading, org_id, current.project_id)
            _check_version(current, if_match)
            _require_active(project)
            new = await self._apply(org_id, current, changes)
            if new == current:
                return current
            now = self._clock.now()
            new = _bumped(new, now)
            async with self._uow() as uow:
                if await _write(uow.session, current, new):
                    await self._record_changes(uow, current, new, actor, now)
                    await uow.commit()
                    return new
            if if_match is not None:
                break  # another writer got in between the read and the write
        latest = await self._latest_version(org_id, ref)
        raise _mismatch(if_match if if_match is not None else current.version, latest)

    async def move(
        self,
        principal: Principal,
        org_id: UUID,
        ref: str | UUID,
        target_project: str | UUID,
        if_match: int | None = None,
    ) -> Task:
        """Move a task to another active project of the organization, where it gets the next number
        (and so a new key). Moving to its own project changes nothing."""
        await authorize(self._auth, principal, org_id, Permission.TASKS_WRITE)
        actor = actor_of(principal)
        async with self._uow(read_only=True) as reading:
            current = await _find_task(reading.session, org_id, ref)
            source = await _find_project(reading, org_id, current.project_id)
            target = await _find_project(reading, org_id, target_project)
        _check_version(current, if_match)
        _require_active(source)
        _require_active(target)
        if target.id == current.project_id:
            return current
        now = self._clock.now()
        async with self._uow() as uow:
            number = await _take_number(uow.session, target)
            new = Task(
                **{
                    **current.__dict__,
                    "project_id": target.id,
                    "project_key": target.key,
                    "number": number,
                    "updated_at": now,
                    "version": current.version + 1,
                }
            )
            if not await _write(uow.session, current, new):
                latest = await self._latest_version(org_id, current.id)
                raise _mismatch(if_match if if_match is not None else current.version, latest)
            record_activity(
                uow,
                org_id=org_id,
                task_id=current.id,
                actor_id=actor,
                kind="moved",
                data={
                    "from": current.key,
                    "to": new.key,
                    "from_project_id": str(current.project_id),
                    "to_project_id": str(target.id),
                },
                now=now,
            )
            await uow.commit()
        return new

    async def delete(self, principal: Principal, org_id: UUID, ref: str | UUID) -> None:
        """Delete a task with its labels, watchers, comments and activity. Its number is not reused."""
        await authorize(self._auth, principal, org_id, Permission.TASKS_WRITE)
        async with self._uow() as uow:
            task = await _find_task(uow.session, org_id, ref)
            _require_active(await _find_project(uow, org_id, task.project_id))
            for table in (task_labels, watchers, comments, activity):
                await uow.session.execute(delete(table).where(table.c.task_id == task.id))
            await uow.session.execute(delete(tasks).where(tasks.c.id == task.id, tasks.c.org_id == org_id))
            await uow.commit()

    # -- helpers ------------------------------------------------------------------------------------------

    async def _require_member(self, org_id: UUID, user_id: UUID) -> None:
        try:
            await self._auth.get_member(org_id, user_id)
        except NotAMember:
            raise NotAssignable(
                f"User {user_id} is not a member of this organization.", assignee_id=str(user_id)
            ) from None

    async def _apply(self, org_id: UUID, current: Task, changes: Mapping[str, Any]) -> Task:
        """`current` with `changes` applied and validated (no I/O but the assignee's membership)."""
        values = dict(current.__dict__)
        if "title" in changes:
            values["title"] = clean_title(changes["title"])
        if "description" in changes:
            values["description"] = clean_description(changes["description"] or "")
        if "status" in changes:
            values["status"] = domain.change_status(current.status, as_status(changes["status"]))
        if "priority" in changes:
            values["priority"] = as_priority(changes["priority"])
        if "due_date" in changes:
            values["due_date"] = changes["due_date"]
        if "labels" in changes:
            values["labels"] = domain.clean_labels(changes["labels"] or [])
        if "assignee_id" in changes:
            assignee = changes["assignee_id"]
            assignee = UUID(str(assignee)) if assignee is not None else None
            if assignee is not None and assignee != current.assignee_id:
                await self._require_member(org_id, assignee)
            values["assignee_id"] = assignee
        return Task(**values)

    async def _record_changes(
        self, uow: UnitOfWork, old: Task, new: Task, actor: UUID | None, now: datetime
    ) -> None:
        """Activity, events and watchers for an update that was written."""

        def entry(kind: str, data: dict[str, Any]) -> None:
            record_activity(
                uow, org_id=new.org_id, task_id=new.id, actor_id=actor, kind=kind, data=data, now=now
            )

        if new.status is not old.status:
            entry("status_changed", {"from": old.status.value, "to": new.status.value})
            uow.publish(
                TaskStatusChanged(
                    occurred_at=now,
                    aggregate_id=new.id,
                    org_id=new.org_id,
                    project_id=new.project_id,
                    task_id=new.id,
                    key=new.key,
                    title=new.title,
                    status=new.status,
                    previous_status=old.status,
                    changed_by=actor,
                )
            )
        if new.assignee_id != old.assignee_id:
            entry(
                "assigned",
                {
                    "from": str(old.assignee_id) if old.assignee_id else None,
                    "to": str(new.assignee_id) if new.assignee_id else None,
                },
            )
            uow.publish(self._assigned(new, old.assignee_id, actor, now))
            if new.assignee_id is not None:
                await watch(uow.session, task_id=new.id, user_id=new.assignee_id, org_id=new.org_id, now=now)
        fields = [
            name
            for name in ("title", "description", "priority", "due_date", "labels")
            if getattr(old, name) != getattr(new, name)
        ]
        if fields:
            data: dict[str, Any] = {"fields": fields}
            for name in fields:
                if name != "description":  # could be long; the names say enough
                    data[name] = {"from": _plain(getattr(old, name)), "to": _plain(getattr(new, name))}
            entry("updated", data)

    @staticmethod
    def _assigned(task: Task, previous: UUID | None, actor: UUID | None, now: datetime) -> TaskAssigned:
        return TaskAssigned(
            occurred_at=now,
            aggregate_id=task.id,
            org_id=task.org_id,
            project_id=task.project_id,
            task_id=task.id,
            key=task.key,
            title=task.title,
            assignee_id=task.assignee_id,
            previous_assignee_id=previous,
            assigned_by=actor,
        )

    async def _latest_version(self, org_id: UUID, ref: str | UUID) -> int | None:
        async with self._uow(read_only=True) as uow:
            try:
                return (await _find_task(uow.session, org_id, ref)).version
            except TaskNotFound:
                return None


def _plain(value: Any) -> Any:
    if isinstance(value, Priority):
        return value.name.lower()
    if isinstance(value, date):
        return value.isoformat()
    return value


def _check_version(task: Task, if_match: int | None) -> None:
    if if_match is not None and if_match != task.version:
        raise _mismatch(if_match, task.version)


def _mismatch(expected: int, current: int | None) -> VersionMismatch:
    return VersionMismatch(
        f"If-Match names version {expected}, but the task is at version {current}: read it again.",
        expected_version=expected,
        current_version=current,
    )


def _bumped(task: Task, now: datetime) -> Task:
    return Task(**{**task.__dict__, "updated_at": now, "version": task.version + 1})


async def _write(session: AsyncConnection, old: Task, new: Task) -> bool:
    """Store `new` over `old` if the task is still at `old`'s version (and labels with it); False if not."""
    result = await session.execute(
        update(tasks)
        .where(tasks.c.id == old.id, tasks.c.org_id == old.org_id, tasks.c.version == old.version)
        .values(
            project_id=new.project_id,
            number=new.number,
            title=new.title,
            description=new.description,
            status=new.status.value,
            priority=int(new.priority),
            assignee_id=new.assignee_id,
            due_date=new.due_date,
            labels=json.dumps(new.labels),
            updated_at=new.updated_at,
            version=new.version,
        )
    )
    if result.rowcount != 1:
        return False
    if new.labels != old.labels:
        await _replace_labels(session, new.id, new.org_id, new.labels)
    return True
