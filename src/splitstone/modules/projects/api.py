"""The projects contract: the only part of projects that other modules may import.

Projects hold tasks (`WEB-42`), tasks hold comments; each change that others care about is an event.
Async and serializable throughout, so the same calls work in-process and across services.
"""

from __future__ import annotations

from datetime import date, datetime
from enum import IntEnum, StrEnum
from typing import ClassVar, Protocol
from uuid import UUID

from pydantic import BaseModel, Field

from splitstone.kernel.contracts import contract, idempotent
from splitstone.kernel.errors import Conflict, DomainError, InvalidInput, NotFound
from splitstone.kernel.events import Event


class ProjectStatus(StrEnum):
    ACTIVE = "active"
    ARCHIVED = "archived"


class TaskStatus(StrEnum):
    """The workflow: todo → in_progress → done, and canceled from any open state (reopening allowed)."""

    TODO = "todo"
    IN_PROGRESS = "in_progress"
    DONE = "done"
    CANCELED = "canceled"


class Priority(IntEnum):
    """Linear's priorities; sorting by priority puts urgent first and none last."""

    NONE = 0
    LOW = 1
    MEDIUM = 2
    HIGH = 3
    URGENT = 4


class ProjectInfo(BaseModel):
    id: UUID
    org_id: UUID
    key: str = Field(examples=["WEB"])
    name: str
    status: ProjectStatus


class TaskInfo(BaseModel):
    id: UUID
    org_id: UUID
    project_id: UUID
    key: str = Field(description="The project's key and the task's number.", examples=["WEB-42"])
    title: str
    status: TaskStatus
    priority: Priority
    assignee_id: UUID | None
    due_date: date | None
    labels: list[str]
    created_by: UUID | None
    created_at: datetime
    updated_at: datetime
    version: int


# -- errors ---------------------------------------------------------------------------------------------


class ProjectNotFound(NotFound):
    code = "project-not-found"
    title = "Project not found"


class TaskNotFound(NotFound):
    code = "task-not-found"
    title = "Task not found"


class CommentNotFound(NotFound):
    code = "comment-not-found"
    title = "Comment not found"


class ProjectKeyTaken(Conflict):
    code = "project-key-taken"
    title = "Another project of the organization has this key"


class ProjectNotEmpty(Conflict):
    code = "project-not-empty"
    title = "The project still has tasks"


class ProjectArchivedError(Conflict):
    code = "project-archived"
    title = "The project is archived"


class IllegalStatusChange(Conflict):
    code = "illegal-status-change"
    title = "The task cannot move to that status"


class VersionMismatch(DomainError):
    """`If-Match` named a version that is no longer the task's: someone changed it meanwhile."""

    code = "version-mismatch"
    status = 412
    title = "The task has changed since you read it"


class NotAssignable(InvalidInput):
    code = "not-assignable"
    title = "The assignee is not a member of the organization"


# -- the contract -----------------------------------------------------------------------------------------


@contract(version=1)
class ProjectsApi(Protocol):
    """What other modules may ask of projects."""

    @idempotent
    async def get_project(self, org_id: UUID, project_id: UUID) -> ProjectInfo:
        """One project of the organization; raises `ProjectNotFound`."""
        ...

    @idempotent
    async def get_task(self, org_id: UUID, task_id: UUID) -> TaskInfo:
        """One task of the organization; raises `TaskNotFound`."""
        ...

    @idempotent
    async def count_projects(self, org_id: UUID) -> int:
        """How many projects the organization has (archived ones count)."""
        ...


# -- events -----------------------------------------------------------------------------------------------


class ProjectArchived(Event):
    """A project was archived: its tasks are read-only until it is unarchived."""

    name: ClassVar[str] = "projects.ProjectArchived"
    org_id: UUID
    project_id: UUID
    key: str
    project_name: str
    archived_by: UUID | None


class TaskCreated(Event):
    """A task was created (its creator watches it, and its assignee if it has one)."""

    name: ClassVar[str] = "projects.TaskCreated"
    org_id: UUID
    project_id: UUID
    task_id: UUID
    key: str
    title: str
    created_by: UUID | None
    assignee_id: UUID | None


class TaskAssigned(Event):
    """A task got a new assignee (`assignee_id` null: it was unassigned)."""

    name: ClassVar[str] = "projects.TaskAssigned"
    org_id: UUID
    project_id: UUID
    task_id: UUID
    key: str
    title: str
    assignee_id: UUID | None
    previous_assignee_id: UUID | None
    assigned_by: UUID | None


class TaskStatusChanged(Event):
    """A task moved in its workflow."""

    name: ClassVar[str] = "projects.TaskStatusChanged"
    org_id: UUID
    project_id: UUID
    task_id: UUID
    key: str
    title: str
    status: TaskStatus
    previous_status: TaskStatus
    changed_by: UUID | None


class TaskCommented(Event):
    """Someone commented on a task; `watcher_ids` are who watch it (the author among them, perhaps)."""

    name: ClassVar[str] = "projects.TaskCommented"
    org_id: UUID
    project_id: UUID
    task_id: UUID
    key: str
    title: str
    comment_id: UUID
    author_id: UUID | None
    excerpt: str
    watcher_ids: list[UUID]


PUBLISHED_EVENTS: tuple[type[Event], ...] = (
    ProjectArchived,
    TaskCreated,
    TaskAssigned,
    TaskStatusChanged,
    TaskCommented,
)
