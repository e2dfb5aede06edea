"""Routes of task lists and search: across the organization, or in one project.

Filters combine (all must hold), a list has one sort, and pages follow each other by cursor: a
`next_cursor` continues the list it came from, with the same sort, order and filters (any other list
refuses it: 400 `invalid-cursor`). Lists of tasks being changed stay consistent: no task is listed
twice or skipped because others were created between two pages.
"""

# No `from __future__ import annotations`: FastAPI reads the endpoints' annotations at runtime.
import inspect
import re
from typing import Annotated, Any, TypeAlias
from uuid import UUID

from fastapi import Depends, Path, Query
from pydantic import BaseModel, Field

from splitstone.kernel.app import API_PREFIX
from splitstone.kernel.errors import InvalidInput
from splitstone.kernel.http.routing import IndexedRouter
from splitstone.kernel.http.security import bearer_principal
from splitstone.modules.auth.api import Permission, Principal
from splitstone.modules.projects.access import authorize
from splitstone.modules.projects.api import TaskStatus
from splitstone.modules.projects.lists import MAX_PAGE, MAX_QUERY, SortOrder, TaskPage, TaskSort, Unassigned
from splitstone.modules.projects.routes_tasks import IsoDay, TaskResponse, task_response
from splitstone.modules.projects.service import ProjectsService


class TaskPageResponse(BaseModel):
    items: list[TaskResponse]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last.")


_DESCRIPTION = (
    "Filters combine: a task is listed when it matches all of them. Sorts: `created` (newest first), "
    "`updated` (most recently changed first), `priority` (urgent first, then newest), `due` (soonest "
    "first; tasks without a due date come last in either order); `order` reverses the default. Pages "
    "follow `next_cursor`, which only the same list (sort, order and filters) accepts. `q` finds tasks "
    "whose title or description holds every word of it (whole words, any case)."
)

_PROBLEMS: dict[int | str, dict[str, Any]] = {
    400: {"description": "`invalid-cursor`: not a cursor of this list (another sort or filters)."},
    404: {"description": "No such organization (or project) for you."},
    422: {"description": "Invalid parameters, or `invalid-search`: `q` has no word to look for."},
}


StatusParam: TypeAlias = Annotated[
    list[TaskStatus] | None,
    Query(
        max_length=len(TaskStatus),
        description="Only tasks in these states; repeat it for several (`status=todo&status=done`).",
    ),
]
_HEX = "[0-9a-fA-F]"
_ASSIGNEE = re.compile(f"^(me|none|{_HEX}{{8}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{12}})$")
AssigneeParam: TypeAlias = Annotated[
    str | None,
    Query(
        max_length=100,
        json_schema_extra={"pattern": _ASSIGNEE.pattern},  # checked by `_assignee`: 422 `invalid-input`
        description="A member's user id, `me` (the signed-in user), or `none` (unassigned tasks).",
        examples=["me"],
    ),
]
LabelParam: TypeAlias = Annotated[
    str | None, Query(min_length=1, max_length=50, description="Only tasks with this label.")
]
DueBefore: TypeAlias = Annotated[
    IsoDay | None, Query(description="Only tasks due strictly before this day.", examples=["2026-01-01"])
]
DueAfter: TypeAlias = Annotated[
    IsoDay | None, Query(description="Only tasks due strictly after this day.", examples=["2025-12-01"])
]
SearchParam: TypeAlias = Annotated[
    str | None,
    Query(
        max_length=MAX_QUERY,
        description="Words that must all appear in the title or description (whole words, any case).",
        json_schema_extra={"pattern": r"^[^\x00]*[^\W_][^\x00]*$"},  # a word: `lists.search_terms`
        examples=["login redirect"],
    ),
]
SortParam: TypeAlias = Annotated[TaskSort, Query(description="What the list is sorted by.")]
OrderParam: TypeAlias = Annotated[
    SortOrder | None,
    Query(description="Default: desc for created, updated and priority; asc for due."),
]
LimitParam: TypeAlias = Annotated[int, Query(ge=1, le=MAX_PAGE, description="Tasks per page.")]
CursorParam: TypeAlias = Annotated[
    str | None, Query(max_length=500, description="`next_cursor` of the previous page.")
]


class TaskListQuery:
    """The query parameters every task list takes: filters, search, sort and page (one definition for
    the organization's list and a project's)."""

    def __init__(
        self,
        status: StatusParam = None,
        assignee: AssigneeParam = None,
        label: LabelParam = None,
        due_before: DueBefore = None,
        due_after: DueAfter = None,
        q: SearchParam = None,
        sort: SortParam = TaskSort.CREATED,
        order: OrderParam = None,
        limit: LimitParam = 50,
        cursor: CursorParam = None,
    ) -> None:
        self.status = status
        self.assignee = assignee
        self.label = label
        self.due_before = due_before
        self.due_after = due_after
        self.q = q
        self.sort = sort
        self.order = order
        self.limit = limit
        self.cursor = cursor


async def task_list_query(**params: Any) -> TaskListQuery:
    """The `TaskListQuery` of a request. FastAPI runs a class dependency in a worker thread (a thread
    switch per list request); this builds it on the event loop, from the same parameters."""
    return TaskListQuery(**params)


task_list_query.__signature__ = inspect.signature(TaskListQuery)  # type: ignore[attr-defined]


def _assignee(raw: str | None, principal: Principal) -> UUID | Unassigned | None:
    if raw is None:
        return None
    if not _ASSIGNEE.match(raw):  # exactly what the schema says, so that no other spelling slips through
        raise InvalidInput(f"{raw[:100]!r} is not an assignee: a user id, `me` or `none`.", field="assignee")
    if raw == "none":
        return "none"
    if raw == "me":
        if principal.user_id is None:
            raise InvalidInput(
                "An API key is nobody: `assignee=me` needs a signed-in user.", field="assignee"
            )
        return principal.user_id
    return UUID(raw)


def router(service: ProjectsService) -> IndexedRouter:
    routes = IndexedRouter(
        prefix=f"{API_PREFIX}/orgs/{{org_id}}", tags=["tasks"], route_class=service.idempotency.route_class
    )
    CurrentPrincipal: TypeAlias = Annotated[
        Principal, Depends(bearer_principal(service.auth.resolve_principal))
    ]

    async def page(
        org_id: UUID, principal: Principal, project: str | None, query: TaskListQuery
    ) -> TaskPageResponse:
        await authorize(service.auth, principal, org_id, Permission.TASKS_READ)
        result: TaskPage = await service.lists.page(
            org_id,
            project_id=project,
            status=query.status,
            assignee_id=_assignee(query.assignee, principal),
            label=query.label,
            due_before=query.due_before,
            due_after=query.due_after,
            q=query.q,
            sort=query.sort,
            order=query.order,
            limit=query.limit,
            cursor=query.cursor,
        )
        return TaskPageResponse(
            items=[task_response(task) for task in result.items], next_cursor=result.next_cursor
        )

    @routes.get(
        "/tasks",
        summary="The organization's tasks, filtered, sorted and searched",
        description=_DESCRIPTION,
        responses=_PROBLEMS,
    )
    async def org_tasks(
        org_id: UUID, principal: CurrentPrincipal, query: Annotated[TaskListQuery, Depends(task_list_query)]
    ) -> TaskPageResponse:
        return await page(org_id, principal, None, query)

    @routes.get(
        "/projects/{project_ref}/tasks",
        summary="A project's tasks, filtered, sorted and searched",
        description=_DESCRIPTION,
        responses=_PROBLEMS,
    )
    async def project_tasks(
        org_id: UUID,
        project_ref: Annotated[
            str,
            Path(max_length=100, description="The project's id, or its key (any case).", examples=["WEB"]),
        ],
        principal: CurrentPrincipal,
        query: Annotated[TaskListQuery, Depends(task_list_query)],
    ) -> TaskPageResponse:
        return await page(org_id, principal, project_ref, query)

    return routes
