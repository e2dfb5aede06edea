"""Routes of an organization's projects: list, create, read, update, archive, unarchive, delete."""

# No `from __future__ import annotations`: FastAPI reads the endpoints' annotations at runtime.
from datetime import datetime
from typing import Annotated, TypeAlias
from uuid import UUID

from fastapi import APIRouter, Depends, Path, Query, Response, status
from pydantic import BaseModel, ConfigDict, Field

from splitstone.kernel.app import API_PREFIX, NOT_BLANK
from splitstone.kernel.http.security import bearer_principal
from splitstone.modules.auth.api import Principal
from splitstone.modules.projects.api import ProjectStatus
from splitstone.modules.projects.projects import MAX_DESCRIPTION, MAX_NAME, MAX_PAGE, Project
from splitstone.modules.projects.service import ProjectsService

_PROJECT_ID = "0191f0a4-5555-7b3a-9d2e-5f6a7b8c9d0e"
_KEY_RULE = (
    "2 to 10 letters and digits, starting with a letter; stored upper case, unique in the organization."
)


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ProjectCreate(_Request):
    key: str = Field(
        min_length=1,
        max_length=50,
        description=f"The prefix of the project's task keys (`WEB` → `WEB-42`): {_KEY_RULE}",
        examples=["WEB"],
        # Documented only: the service checks it and answers 422 `invalid-project-key`.
        json_schema_extra={"pattern": r"^\s*[A-Za-z][A-Za-z0-9]{1,9}\s*$"},
    )
    name: str = Field(min_length=1, max_length=MAX_NAME, pattern=NOT_BLANK, examples=["Website"])
    description: str = Field(
        default="", max_length=MAX_DESCRIPTION, description="Markdown.", examples=["The public website."]
    )


class ProjectUpdate(_Request):
    name: str | None = Field(
        default=None, min_length=1, max_length=MAX_NAME, pattern=NOT_BLANK, examples=["Marketing site"]
    )
    description: str | None = Field(default=None, max_length=MAX_DESCRIPTION, description="Markdown.")


class ProjectResponse(BaseModel):
    id: UUID = Field(examples=[_PROJECT_ID])
    org_id: UUID
    key: str = Field(description="The prefix of its task keys.", examples=["WEB"])
    name: str = Field(examples=["Website"])
    description: str
    status: ProjectStatus = Field(description="An archived project's tasks are read-only.")
    created_by: UUID | None = Field(description="The user who created it; null when an API key did.")
    created_at: datetime
    updated_at: datetime
    archived_at: datetime | None


class ProjectPageResponse(BaseModel):
    items: list[ProjectResponse]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last.")


def project_response(project: Project) -> ProjectResponse:
    return ProjectResponse(
        id=project.id,
        org_id=project.org_id,
        key=project.key,
        name=project.name,
        description=project.description,
        status=project.status,
        created_by=project.created_by,
        created_at=project.created_at,
        updated_at=project.updated_at,
        archived_at=project.archived_at,
    )


ProjectRefParam: TypeAlias = Annotated[
    str,
    Path(
        min_length=1,
        max_length=64,
        description="The project's id, or its key in any case (`WEB`, `web`).",
        examples=["WEB"],
    ),
]


def router(service: ProjectsService) -> APIRouter:
    routes = APIRouter(
        prefix=f"{API_PREFIX}/orgs/{{org_id}}/projects",
        tags=["projects"],
        route_class=service.idempotency.route_class,
    )
    CurrentPrincipal: TypeAlias = Annotated[
        Principal, Depends(bearer_principal(service.auth.resolve_principal))
    ]
    projects = service.projects

    @routes.get(
        "",
        summary="The organization's projects, newest first (projects:read)",
        description="Archived projects are included unless `status` filters them out.",
    )
    async def list_projects(
        org_id: UUID,
        principal: CurrentPrincipal,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 20,
        cursor: Annotated[str | None, Query(max_length=100, description="`next_cursor` of a page.")] = None,
        status_filter: Annotated[
            ProjectStatus | None, Query(alias="status", description="Only projects in this state.")
        ] = None,
    ) -> ProjectPageResponse:
        page = await projects.list(principal, org_id, status=status_filter, limit=limit, cursor=cursor)
        return ProjectPageResponse(
            items=[project_response(p) for p in page.items], next_cursor=page.next_cursor
        )

    @routes.post(
        "",
        status_code=status.HTTP_201_CREATED,
        summary="Create a project (projects:manage)",
        description="422 `invalid-project-key`; 409 `project-key-taken` when another project of the "
        "organization has the key; 402 `entitlement-exceeded` (with `limit` and `upgrade_plans`) when "
        "the plan's number of projects is reached.",
        responses={402: {"description": "The plan's number of projects is reached."}},
    )
    async def create_project(
        org_id: UUID, body: ProjectCreate, principal: CurrentPrincipal, response: Response
    ) -> ProjectResponse:
        project = await projects.create(
            principal, org_id, key=body.key, name=body.name, description=body.description
        )
        response.headers["Location"] = f"{API_PREFIX}/orgs/{org_id}/projects/{project.id}"
        return project_response(project)

    @routes.get("/{project_ref}", summary="One project, by id or key (projects:read)")
    async def get_project(
        org_id: UUID, project_ref: ProjectRefParam, principal: CurrentPrincipal
    ) -> ProjectResponse:
        return project_response(await projects.get(principal, org_id, project_ref))

    @routes.patch(
        "/{project_ref}",
        summary="Rename or describe a project (projects:manage)",
        description="Only the fields sent change. 409 `project-archived` while the project is archived.",
    )
    async def update_project(
        org_id: UUID, project_ref: ProjectRefParam, body: ProjectUpdate, principal: CurrentPrincipal
    ) -> ProjectResponse:
        project = await projects.update(
            principal, org_id, project_ref, name=body.name, description=body.description
        )
        return project_response(project)

    @routes.post(
        "/{project_ref}/archive",
        summary="Archive a project (projects:manage)",
        description="Its tasks become read-only until it is unarchived. Archiving an archived project "
        "changes nothing.",
    )
    async def archive_project(
        org_id: UUID, project_ref: ProjectRefParam, principal: CurrentPrincipal
    ) -> ProjectResponse:
        return project_response(await projects.archive(principal, org_id, project_ref))

    @routes.post(
        "/{project_ref}/unarchive",
        summary="Make an archived project active again (projects:manage)",
        description="Unarchiving an active project changes nothing.",
    )
    async def unarchive_project(
        org_id: UUID, project_ref: ProjectRefParam, principal: CurrentPrincipal
    ) -> ProjectResponse:
        return project_response(await projects.unarchive(principal, org_id, project_ref))

    @routes.delete(
        "/{project_ref}",
        status_code=status.HTTP_204_NO_CONTENT,
        summary="Delete a project (projects:manage)",
        description="409 `project-not-empty` while it has tasks, unless `cascade=true`: then its tasks, "
        "with their comments and activity, are deleted with it. This cannot be undone.",
    )
    async def delete_project(
        org_id: UUID,
        project_ref: ProjectRefParam,
        principal: CurrentPrincipal,
        cascade: Annotated[bool, Query(description="Delete the project's tasks too.")] = False,
    ) -> None:
        await projects.delete(principal, org_id, project_ref, cascade=cascade)

    return routes
