"""The projects module's declaration: what it offers, needs, stores, subscribes to and runs."""

from __future__ import annotations

from pathlib import Path

from fastapi import Request

from splitstone.kernel.errors import NotAuthenticated
from splitstone.kernel.http.idempotency import Idempotency
from splitstone.kernel.module import Module, ModuleContext
from splitstone.modules.auth.api import AuthApi
from splitstone.modules.billing.api import BillingApi
from splitstone.modules.projects import cli, http, storage
from splitstone.modules.projects.activity import ActivityLog
from splitstone.modules.projects.api import PUBLISHED_EVENTS, ProjectsApi
from splitstone.modules.projects.comments import Comments
from splitstone.modules.projects.lists import TaskLists
from splitstone.modules.projects.projects import Projects
from splitstone.modules.projects.service import ProjectsService
from splitstone.modules.projects.tasks import REPORT_USAGE, Tasks


def build(ctx: ModuleContext) -> ProjectsService:
    auth = ctx.dependency(AuthApi)
    billing = ctx.dependency(BillingApi)

    async def caller(request: Request) -> str:
        header = request.headers.get("authorization")
        if not header:
            raise NotAuthenticated("Send 'Authorization: Bearer <access token or API key>'.")
        principal = await auth.resolve_principal(header)
        return f"user:{principal.user_id}" if principal.kind == "user" else f"api_key:{principal.api_key_id}"

    return ProjectsService(
        projects=Projects(ctx.uow, ctx.clock, auth, billing),
        tasks=Tasks(ctx.uow, ctx.clock, auth, billing),
        lists=TaskLists(ctx.uow, ctx.clock),
        comments=Comments(ctx.uow, ctx.clock, auth),
        activity=ActivityLog(ctx.uow),
        auth=auth,
        billing=billing,
        idempotency=Idempotency(ctx.uow, ctx.clock, caller),
    )


module = Module(
    name="projects",
    description="Projects, tasks (numbered, searchable, with a workflow), comments and activity.",
    contract=ProjectsApi,
    depends_on=[AuthApi, BillingApi],
    factory=build,
    router=http.build_router,
    metadata=storage.metadata,
    migrations=Path(__file__).parent / "migrations",
    publishes=PUBLISHED_EVENTS,
    external_jobs={REPORT_USAGE: lambda service: service.tasks.report_usage},
    cli=cli.build_cli,
)
