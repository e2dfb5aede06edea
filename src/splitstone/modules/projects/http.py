"""Projects' HTTP surface: projects, tasks and their lists and search, comments and activity."""

from __future__ import annotations

from fastapi import APIRouter

from splitstone.modules.projects import routes_comments, routes_projects, routes_task_lists, routes_tasks
from splitstone.modules.projects.service import ProjectsService


def build_router(service: ProjectsService) -> APIRouter:
    router = APIRouter()
    router.include_router(routes_projects.router(service))
    # The lists before `/tasks/{ref}`, so `/tasks` itself is never read as a reference.
    router.include_router(routes_task_lists.router(service))
    router.include_router(routes_tasks.router(service))
    router.include_router(routes_comments.router(service))
    return router
