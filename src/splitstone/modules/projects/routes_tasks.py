"""Routes of one task: create it in a project, read it by id or key, change it, move it, delete it.

A task's representation carries its `version`, also sent as a strong `ETag: "<version>"` by create, GET
and PATCH. A PATCH (or a move) that sends it back in `If-Match` fails with 412 `version-mismatch` when
someone changed the task meanwhile, instead of overwriting their change. `If-Match` is optional: without
it the last write wins. Lists and search of tasks are in routes_task_lists.py.
"""

# No `from __future__ import annotations`: FastAPI reads the endpoints' annotations at runtime.
import re
from datetime import date, datetime
from typing import Annotated, Any, Literal, Self, TypeAlias
from uuid import UUID

from fastapi import Depends, Header, Path, Response, status
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema

from splitstone.kernel.app import API_PREFIX, NOT_BLANK
from splitstone.kernel.errors import DomainError
from splitstone.kernel.http.routing import IndexedRouter
from splitstone.kernel.http.security import bearer_principal
from splitstone.modules.auth.api import Principal
from splitstone.modules.projects.api import Priority, TaskStatus
from splitstone.modules.projects.service import ProjectsService
from splitstone.modules.projects.tasks import MAX_DESCRIPTION, MAX_TITLE, Task

_TASK_ID = "0191f0a4-7777-7b3a-9d2e-5f6a7b8c9d0e"
_PROJECT_ID = "0191f0a4-6666-7b3a-9d2e-5f6a7b8c9d0e"

PriorityName = Literal["none", "low", "medium", "high", "urgent"]
"""Priorities travel by name; their order (urgent first, none last) is `Priority`'s."""

_Title = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_TITLE, pattern=NOT_BLANK), AfterValidator(str.strip)
]


def _iso_day(value: object) -> object:
    """Only `YYYY-MM-DD`, as the schema's `format: date` says (pydantic also takes `0` as 1970-01-01)."""
    if isinstance(value, str) and not _ISO_DAY.fullmatch(value):
        raise ValueError("a day is written YYYY-MM-DD")
    if isinstance(value, int | float):
        raise ValueError("a day is written YYYY-MM-DD")
    return value


_ISO_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
IsoDay = Annotated[date, BeforeValidator(_iso_day)]
_Description = Annotated[str, StringConstraints(max_length=MAX_DESCRIPTION)]
_Label = Annotated[str, StringConstraints(max_length=50)]
_Labels = Annotated[
    list[_Label],
    Field(
        max_length=50,
        description="Up to 20 labels of up to 50 characters (letters, digits, spaces, `. : / + - _`); "
        "stored trimmed, lower-cased, de-duplicated and sorted.",
        examples=[["bug", "frontend"]],
    ),
]
_Ref = Annotated[
    str,
    Path(
        max_length=100,
        description="The task's id, or its key (`WEB-42`, any case). A key changes when the task moves.",
        examples=["WEB-42"],
    ),
]
_ProjectRef = Annotated[
    str,
    Path(max_length=100, description="The project's id, or its key (any case).", examples=["WEB"]),
]
_IF_MATCH_DOC = (
    'The `ETag` (`"<version>"`) you read: 412 `version-mismatch` if the task has changed since. '
    '`W/"3"` and a bare `3` are accepted too, `*` matches any version. Optional: without it the '
    "last write wins."
)
# What `parse_if_match` accepts, documented so that clients (and the fuzzer) know it: one version or `*`.
_IF_MATCH = re.compile(r'^\s*(\*|(W/)?"?[0-9]{1,9}"?)\s*$')
_ETAG = re.compile(r'^(?:W/)?"?(?P<version>[0-9]{1,9})"?$')


class InvalidIfMatch(DomainError):
    code = "invalid-if-match"
    status = 400
    title = "Invalid If-Match header"


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TaskCreate(_Request):
    title: _Title = Field(examples=["Fix the login redirect"])
    description: _Description = Field(default="", description="Markdown.")
    status: TaskStatus = Field(default=TaskStatus.TODO, description="Where the task starts in the workflow.")
    priority: PriorityName = "none"
    assignee_id: UUID | None = Field(
        default=None, description="A member of the organization (422 `not-assignable` otherwise)."
    )
    due_date: IsoDay | None = Field(default=None, examples=["2025-07-01"])
    labels: _Labels = Field(default_factory=list)

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "title": "Fix the login redirect",
                    "description": "After signing in, users land on `/` instead of where they were.",
                    "priority": "high",
                    "labels": ["bug", "auth"],
                    "due_date": "2025-07-01",
                }
            ]
        },
    )


_NOT_NULL = ("title", "description", "status", "priority", "labels")


class TaskPatch(_Request):
    """Only the fields sent change; `assignee_id` and `due_date` may be null (unassign, no due date)."""

    # `SkipJsonSchema[None]`: optional, but not nullable in the schema, as `_no_nulls` enforces.
    title: _Title | SkipJsonSchema[None] = None
    description: _Description | SkipJsonSchema[None] = Field(default=None, description="Markdown.")
    status: TaskStatus | SkipJsonSchema[None] = Field(
        default=None,
        description="todo → in_progress → done; canceled from todo or in_progress; done and canceled "
        "reopen to todo; in_progress back to todo. Others: 409 `illegal-status-change`.",
    )
    priority: PriorityName | SkipJsonSchema[None] = None
    assignee_id: UUID | None = Field(default=None, description="A member of the organization, or null.")
    due_date: IsoDay | None = None
    labels: _Labels | SkipJsonSchema[None] = None

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"status": "in_progress", "assignee_id": _TASK_ID}, {"due_date": None}]
        },
    )

    @model_validator(mode="after")
    def _no_nulls(self) -> Self:
        nulls = [name for name in _NOT_NULL if name in self.model_fields_set and getattr(self, name) is None]
        if nulls:
            raise ValueError(f"{', '.join(nulls)} cannot be null")
        return self


class TaskMove(_Request):
    project: Annotated[
        str, StringConstraints(min_length=1, max_length=100, pattern=NOT_BLANK), AfterValidator(str.strip)
    ] = Field(description="The target project's id or key, in the same organization.", examples=["API"])


class TaskResponse(BaseModel):
    id: UUID = Field(examples=[_TASK_ID])
    org_id: UUID
    project_id: UUID = Field(examples=[_PROJECT_ID])
    project_key: str = Field(examples=["WEB"])
    number: int = Field(description="The task's number in its project.", examples=[42])
    key: str = Field(description="`<project key>-<number>`: a reference for humans.", examples=["WEB-42"])
    title: str = Field(examples=["Fix the login redirect"])
    description: str = Field(description="Markdown.")
    status: TaskStatus
    priority: PriorityName = Field(
        description="By name; sorted by priority, urgent comes first and none last.", examples=["high"]
    )
    assignee_id: UUID | None
    due_date: date | None
    labels: list[str] = Field(examples=[["auth", "bug"]])
    created_by: UUID | None = Field(description="Null when an API key created it.")
    created_at: datetime
    updated_at: datetime
    version: int = Field(
        description="Increases with every change; the `ETag` is its quoted value.", examples=[3]
    )


def task_response(task: Task) -> TaskResponse:
    priority: Any = task.priority.name.lower()
    return TaskResponse(
        id=task.id,
        org_id=task.org_id,
        project_id=task.project_id,
        project_key=task.project_key,
        number=task.number,
        key=task.key,
        title=task.title,
        description=task.description,
        status=task.status,
        priority=priority,
        assignee_id=task.assignee_id,
        due_date=task.due_date,
        labels=list(task.labels),
        created_by=task.created_by,
        created_at=task.created_at,
        updated_at=task.updated_at,
        version=task.version,
    )


def etag(task: Task) -> str:
    return f'"{task.version}"'


def parse_if_match(header: str | None) -> int | None:
    """The version an `If-Match` names; None when absent or `*` (any version matches). Exactly the
    headers `_IF_MATCH` (the documented pattern) matches are accepted; the others answer 400."""
    if header is None:
        return None
    values = [v.strip() for v in header.split(",") if v.strip()]
    if not values:
        raise InvalidIfMatch('If-Match is empty: send the ETag you read, such as "3".')
    if len(values) > 1:
        raise InvalidIfMatch("If-Match names one version (a task has one ETag).", if_match=header[:100])
    match = _ETAG.match(values[0])
    if _IF_MATCH.match(header) is None or (match is None and values[0] != "*"):
        raise InvalidIfMatch(
            f'{values[0][:100]!r} is not an ETag of a task, such as "3".', if_match=header[:100]
        )
    return None if match is None else int(match["version"])


_PROBLEMS: dict[int | str, dict[str, Any]] = {
    404: {"description": "No such task (or project) in this organization."},
    409: {"description": "`project-archived`, or `illegal-status-change`."},
    422: {"description": "Invalid input, or `not-assignable`: the assignee is not a member."},
}


_ETAG_HEADER = {"description": 'The task\'s version, quoted: `"3"`.', "schema": {"type": "string"}}
_WITH_ETAG: dict[int | str, dict[str, Any]] = {200: {"headers": {"ETag": _ETAG_HEADER}}}
_CREATED: dict[int | str, dict[str, Any]] = {
    201: {
        "headers": {
            "ETag": _ETAG_HEADER,
            "Location": {"description": "The new task's URL (by id).", "schema": {"type": "string"}},
        }
    }
}


def router(service: ProjectsService) -> IndexedRouter:
    routes = IndexedRouter(
        prefix=f"{API_PREFIX}/orgs/{{org_id}}", tags=["tasks"], route_class=service.idempotency.route_class
    )
    CurrentPrincipal: TypeAlias = Annotated[
        Principal, Depends(bearer_principal(service.auth.resolve_principal))
    ]
    IfMatch: TypeAlias = Annotated[
        str | None,
        Header(
            alias="If-Match",
            max_length=100,
            description=_IF_MATCH_DOC,
            json_schema_extra={"pattern": _IF_MATCH.pattern},
        ),
    ]
    tasks = service.tasks

    def answer(task: Task, response: Response) -> TaskResponse:
        response.headers["ETag"] = etag(task)
        return task_response(task)

    @routes.post(
        "/projects/{project_ref}/tasks",
        status_code=status.HTTP_201_CREATED,
        summary="Create a task in a project",
        description="The task gets the project's next number (`WEB-43`). Its creator and its assignee "
        "watch it. Answers with `Location` and `ETag`. 402 `entitlement-exceeded` when the plan's "
        "`tasks_per_month` is used up; 409 `project-archived`.",
        responses={
            **_CREATED,
            **_PROBLEMS,
            402: {"description": "The plan's monthly task limit is reached."},
        },
    )
    async def create_task(
        org_id: UUID,
        project_ref: _ProjectRef,
        body: TaskCreate,
        principal: CurrentPrincipal,
        response: Response,
    ) -> TaskResponse:
        task = await tasks.create(
            principal,
            org_id,
            project_ref,
            title=body.title,
            description=body.description,
            status=body.status,
            priority=Priority[body.priority.upper()],
            assignee_id=body.assignee_id,
            due_date=body.due_date,
            labels=body.labels,
        )
        response.headers["Location"] = f"{API_PREFIX}/orgs/{org_id}/tasks/{task.id}"
        return answer(task, response)

    @routes.get(
        "/tasks/{task_ref}",
        summary="One task, by id or by key",
        description="`ETag` is the task's version: send it back in `If-Match` when you change it.",
        responses={**_WITH_ETAG, 404: _PROBLEMS[404]},
    )
    async def get_task(
        org_id: UUID, task_ref: _Ref, principal: CurrentPrincipal, response: Response
    ) -> TaskResponse:
        return answer(await tasks.get(principal, org_id, task_ref), response)

    @routes.patch(
        "/tasks/{task_ref}",
        summary="Change a task's fields",
        description="Only the fields sent change (`null` clears `assignee_id` and `due_date`). With "
        "`If-Match` the change applies only to the version you read (else 412 `version-mismatch`, "
        "whose problem has `current_version`); without it, the last write wins. Status changes follow "
        "the workflow (409 `illegal-status-change`). Answers with the new `ETag`.",
        responses={
            **_WITH_ETAG,
            **_PROBLEMS,
            412: {"description": "`version-mismatch`: the task changed since."},
        },
    )
    async def update_task(
        org_id: UUID,
        task_ref: _Ref,
        body: TaskPatch,
        principal: CurrentPrincipal,
        response: Response,
        if_match: IfMatch = None,
    ) -> TaskResponse:
        version = parse_if_match(if_match)
        changes = {name: getattr(body, name) for name in body.model_fields_set}
        if "priority" in changes:
            changes["priority"] = Priority[changes["priority"].upper()]
        task = await tasks.update(principal, org_id, task_ref, if_match=version, changes=changes)
        return answer(task, response)

    @routes.post(
        "/tasks/{task_ref}/move",
        summary="Move a task to another project",
        description="The task gets the target project's next number, so its key changes (`WEB-42` → "
        "`API-7`); its id does not. Both projects must be active (409 `project-archived`). Honours "
        "`If-Match` like PATCH.",
        responses={
            **_WITH_ETAG,
            **_PROBLEMS,
            412: {"description": "`version-mismatch`: the task changed since."},
        },
    )
    async def move_task(
        org_id: UUID,
        task_ref: _Ref,
        body: TaskMove,
        principal: CurrentPrincipal,
        response: Response,
        if_match: IfMatch = None,
    ) -> TaskResponse:
        version = parse_if_match(if_match)
        task = await tasks.move(principal, org_id, task_ref, body.project, version)
        return answer(task, response)

    @routes.delete(
        "/tasks/{task_ref}",
        status_code=status.HTTP_204_NO_CONTENT,
        summary="Delete a task",
        description="With its labels, watchers, comments and activity. Its number is not reused.",
        responses={404: _PROBLEMS[404], 409: {"description": "`project-archived`."}},
    )
    async def delete_task(org_id: UUID, task_ref: _Ref, principal: CurrentPrincipal) -> Response:
        await tasks.delete(principal, org_id, task_ref)
        return Response(status_code=status.HTTP_204_NO_CONTENT)

    return routes
