"""Routes of a task's comments (list, add, edit one's own, delete) and of its activity log."""

# No `from __future__ import annotations`: FastAPI reads the endpoints' annotations at runtime.
from datetime import datetime
from typing import Annotated, Any, TypeAlias
from uuid import UUID

from fastapi import APIRouter, Depends, Path, Query, Response, status
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from splitstone.kernel.app import API_PREFIX, SPACE
from splitstone.kernel.http.security import bearer_principal
from splitstone.modules.auth.api import Permission, Principal
from splitstone.modules.projects import access
from splitstone.modules.projects.activity import MAX_PAGE as MAX_ACTIVITY_PAGE
from splitstone.modules.projects.activity import ActivityEntry
from splitstone.modules.projects.comments import MAX_BODY, MAX_PAGE, Comment
from splitstone.modules.projects.service import ProjectsService

_COMMENT_ID = "0191f0a4-6666-7b3a-9d2e-5f6a7b8c9d0e"
_ACTIVITY_ID = "0191f0a4-7777-7b3a-9d2e-5f6a7b8c9d0e"
_BODY_RULE = f"Markdown, 1 to {MAX_BODY:,} characters once surrounding whitespace is removed."


_RAW_MAX = MAX_BODY + 100
"""What may be sent: the limit, and room for the whitespace around it (an editor's final newlines)."""


def _trimmed(body: str) -> str:
    body = body.strip()
    if not 1 <= len(body) <= MAX_BODY:
        raise ValueError(f"a comment is 1 to {MAX_BODY} characters once surrounding whitespace is removed")
    return body


def _trimmed_length(schema: dict[str, Any]) -> None:
    """`maxLength` bounds the text as sent; the limit that holds once it is trimmed is a pattern (which
    also says that U+0000 is refused)."""
    schema["pattern"] = rf"^[{SPACE}]*[^{SPACE}\x00](?:[^\x00]{{0,{MAX_BODY - 2}}}[^{SPACE}\x00])?[{SPACE}]*$"


Body = Annotated[
    str,
    StringConstraints(min_length=1, max_length=_RAW_MAX),
    AfterValidator(_trimmed),
    Field(
        description=_BODY_RULE,
        examples=["Reproduced on Safari 17; the fix is in #128."],
        json_schema_extra=_trimmed_length,
    ),
]
TaskRefParam: TypeAlias = Annotated[
    str,
    Path(
        min_length=1,
        max_length=64,
        description="The task's id, or its key in any case (`WEB-42`, `web-42`).",
        examples=["WEB-42"],
    ),
]
Cursor: TypeAlias = Annotated[
    str | None, Query(max_length=100, description="`next_cursor` of the previous page.")
]


_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"description": "`task-not-found` (or `comment-not-found`) in this organization."}
}
_WRITE_PROBLEMS: dict[int | str, dict[str, Any]] = {
    **_NOT_FOUND,
    403: {"description": "`not-the-author`, or `missing-permission`."},
    409: {"description": "`project-archived`: the task's project is archived."},
    422: {"description": "An empty or too long body, or unknown fields."},
}


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CommentCreate(_Request):
    body: Body


class CommentUpdate(_Request):
    body: Body


class CommentResponse(BaseModel):
    id: UUID = Field(examples=[_COMMENT_ID])
    task_id: UUID
    author_id: UUID | None = Field(description="The user who wrote it; null when an API key did.")
    body: str = Field(description="Markdown.", examples=["Reproduced on Safari 17; the fix is in #128."])
    created_at: datetime
    updated_at: datetime
    edited_at: datetime | None = Field(description="When its author last changed it; null if never.")


class CommentPageResponse(BaseModel):
    items: list[CommentResponse] = Field(description="Oldest first.")
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last.")


class ActivityResponse(BaseModel):
    id: UUID = Field(examples=[_ACTIVITY_ID])
    kind: str = Field(
        description="What happened: `created`, `updated`, `status_changed`, `assigned`, `moved`, "
        "`commented`; more kinds may be added, so ignore the ones you do not know.",
        examples=["status_changed"],
    )
    actor_id: UUID | None = Field(description="The user who did it; null for an API key or the system.")
    data: dict[str, Any] = Field(
        description="What changed, depending on `kind` (such as `from` and `to`; `comment_id`).",
        examples=[{"from": "todo", "to": "in_progress"}],
    )
    created_at: datetime


class ActivityPageResponse(BaseModel):
    items: list[ActivityResponse] = Field(description="Oldest first.")
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last.")


def comment_response(comment: Comment) -> CommentResponse:
    return CommentResponse(
        id=comment.id,
        task_id=comment.task_id,
        author_id=comment.author_id,
        body=comment.body,
        created_at=comment.created_at,
        updated_at=comment.updated_at,
        edited_at=comment.edited_at,
    )


def activity_response(entry: ActivityEntry) -> ActivityResponse:
    return ActivityResponse(
        id=entry.id,
        kind=entry.kind,
        actor_id=entry.actor_id,
        data=entry.data,
        created_at=entry.created_at,
    )


def router(service: ProjectsService) -> APIRouter:
    routes = APIRouter(
        prefix=f"{API_PREFIX}/orgs/{{org_id}}/tasks/{{task_ref}}",
        tags=["tasks"],
        route_class=service.idempotency.route_class,
    )
    CurrentPrincipal: TypeAlias = Annotated[
        Principal, Depends(bearer_principal(service.auth.resolve_principal))
    ]
    comments = service.comments

    @routes.get(
        "/comments",
        summary="A task's comments, oldest first (tasks:read)",
        description="404 `task-not-found` for a task the organization does not have.",
        responses=_NOT_FOUND,
    )
    async def list_comments(
        org_id: UUID,
        task_ref: TaskRefParam,
        principal: CurrentPrincipal,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 20,
        cursor: Cursor = None,
    ) -> CommentPageResponse:
        page = await comments.page(principal, org_id, task_ref, limit=limit, cursor=cursor)
        return CommentPageResponse(
            items=[comment_response(c) for c in page.items], next_cursor=page.next_cursor
        )

    @routes.post(
        "/comments",
        status_code=status.HTTP_201_CREATED,
        summary="Comment on a task (tasks:write)",
        description="The author watches the task from then on, and its other watchers are notified. "
        "409 `project-archived` while the task's project is archived.",
        responses=_WRITE_PROBLEMS,
    )
    async def add_comment(
        org_id: UUID,
        task_ref: TaskRefParam,
        body: CommentCreate,
        principal: CurrentPrincipal,
        response: Response,
    ) -> CommentResponse:
        comment = await comments.add(principal, org_id, task_ref, body.body)
        response.headers["Location"] = (
            f"{API_PREFIX}/orgs/{org_id}/tasks/{comment.task_id}/comments/{comment.id}"
        )
        return comment_response(comment)

    @routes.patch(
        "/comments/{comment_id}",
        summary="Change one's own comment (tasks:write)",
        description="Only its author may edit a comment (403 `not-the-author`, also for API keys); "
        "`edited_at` records when. 404 `comment-not-found`; 409 `project-archived`.",
        responses=_WRITE_PROBLEMS,
    )
    async def edit_comment(
        org_id: UUID,
        task_ref: TaskRefParam,
        comment_id: UUID,
        body: CommentUpdate,
        principal: CurrentPrincipal,
    ) -> CommentResponse:
        return comment_response(await comments.edit(principal, org_id, task_ref, comment_id, body.body))

    @routes.delete(
        "/comments/{comment_id}",
        status_code=status.HTTP_204_NO_CONTENT,
        summary="Delete a comment: one's own, or any as an owner or admin (tasks:write)",
        description="403 `not-the-author` for another's comment unless you are an owner or admin of the "
        "organization (or an API key with projects:manage). 404 `comment-not-found`. Allowed also "
        "while the project is archived.",
        responses={k: v for k, v in _WRITE_PROBLEMS.items() if k in (403, 404)},
    )
    async def delete_comment(
        org_id: UUID, task_ref: TaskRefParam, comment_id: UUID, principal: CurrentPrincipal
    ) -> None:
        await comments.delete(principal, org_id, task_ref, comment_id)

    @routes.get(
        "/activity",
        summary="What happened to a task, oldest first (tasks:read)",
        description="An append-only log: creation, changes, status moves, assignments, moves between "
        "projects and comments, each with who did it. 404 `task-not-found`.",
        responses=_NOT_FOUND,
    )
    async def list_activity(
        org_id: UUID,
        task_ref: TaskRefParam,
        principal: CurrentPrincipal,
        limit: Annotated[int, Query(ge=1, le=MAX_ACTIVITY_PAGE)] = 20,
        cursor: Cursor = None,
    ) -> ActivityPageResponse:
        await access.authorize(service.auth, principal, org_id, Permission.TASKS_READ)
        page = await service.activity.page(org_id, task_ref, limit=limit, cursor=cursor)
        return ActivityPageResponse(
            items=[activity_response(e) for e in page.items], next_cursor=page.next_cursor
        )

    return routes
