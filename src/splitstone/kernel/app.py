"""The FastAPI application assembled from a `Container`: module routers under /api/v1, probes, errors."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse

from splitstone import __version__
from splitstone.kernel import migrations
from splitstone.kernel.container import Container
from splitstone.kernel.http.middleware import BodySizeLimitMiddleware, RequestContextMiddleware
from splitstone.kernel.http.problems import PROBLEM_RESPONSES, install_problem_handlers, problem_response

API_PREFIX = "/api/v1"


def create_app(container: Container, *, run_worker: bool = False, title: str = "splitstone") -> FastAPI:
    """The HTTP API of the container's modules.

    With `run_worker`, the app's lifespan also runs the container's worker (relays, event handlers,
    jobs): started on startup, stopped on shutdown before the databases close. Without it, the API
    only writes events and jobs, and `splitstone worker` (another process) runs them.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        worker = container.worker() if run_worker else None
        try:
            if worker is not None:
                await worker.start()
            app.state.worker = worker
            yield
        finally:
            app.state.worker = None
            if worker is not None:
                await worker.stop()
            await container.aclose()

    app = FastAPI(
        title=title,
        version=__version__,
        lifespan=lifespan,
        responses=PROBLEM_RESPONSES,
        description="A modular monolith that is ready to be split. Errors are RFC 9457 problem+json.",
    )
    app.state.container = container
    app.state.run_worker = run_worker
    app.state.worker = None
    install_problem_handlers(app)
    app.include_router(_probes(container))
    for module in container.modules:
        if module.router is not None:
            app.include_router(module.router(container.implementations[module.name]))
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=container.settings.max_request_body_bytes)
    app.add_middleware(RequestContextMiddleware)
    return app


def _probes(container: Container) -> APIRouter:
    router = APIRouter(tags=["probes"])
    migrated: set[str] = set()

    @router.get("/healthz", summary="Liveness: the process answers")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get(
        "/readyz",
        summary="Readiness: every module's database answers and is migrated",
        responses={503: {"description": "Not ready"}},
    )
    async def readyz(request: Request) -> Any:
        checks: dict[str, str] = {}
        ready = True
        for module in container.modules:
            db = container.databases[module.name]
            try:
                await db.ping()
                if module.name not in migrated:
                    behind = [
                        s for s in await migrations.status_module(db, module.migrations) if not s.up_to_date
                    ]
                    if behind:
                        checks[module.name] = "; ".join(
                            f"{s.history} history not migrated (at {s.current}, head {s.head})"
                            for s in behind
                        )
                        ready = False
                        continue
                    migrated.add(module.name)
                checks[module.name] = "ok"
            except Exception as error:  # any failure means "not ready", with the reason shown
                checks[module.name] = f"database unavailable: {type(error).__name__}"
                ready = False
        if ready:
            return JSONResponse({"status": "ready", "modules": checks})
        return problem_response(
            503,
            "not-ready",
            title="Not ready",
            detail="; ".join(f"{k}: {v}" for k, v in checks.items() if v != "ok"),
            request=request,
            modules=checks,
        )

    return router
