"""The FastAPI application assembled from a `Container`: module routers under /api/v1, probes, errors."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse

from splitstone import __version__
from splitstone.kernel.container import Container
from splitstone.kernel.http.body_guard import BodyGuardMiddleware
from splitstone.kernel.http.middleware import BodySizeLimitMiddleware, RequestContextMiddleware
from splitstone.kernel.http.problems import PROBLEM_RESPONSES, install_problem_handlers, problem_response
from splitstone.kernel.http.routing import indexed
from splitstone.kernel.readiness import Readiness

API_PREFIX = "/api/v1"
SPACE = r"\t\n\x0b\x0c\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
"""What `str.strip()` removes (`str.isspace()`), for a regex character class: engines disagree on `\\s`."""
NOT_BLANK = rf"^[^\x00]*[^{SPACE}\x00][^\x00]*$"
"""The `pattern` of a text field that is stripped and then must not be empty: documents that "   " is
refused, which `minLength: 1` alone does not (and, as every text, that U+0000 is)."""
NO_NUL = r"^[^\x00]*$"
"""What the OpenAPI schema says of every text without a pattern of its own: the body guard refuses U+0000
(PostgreSQL text cannot hold it) in any JSON string, path or query."""


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
            with _gc_for_serving():
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
    _document_input_as_read(app)
    app.include_router(_probes(container))
    for module in container.modules:
        if module.router is not None:
            app.include_router(indexed(module.router(container.implementations[module.name])))
    if container.service_token is not None:
        from splitstone.kernel.remote import internal_router  # only a split service serves its contracts

        for module in container.modules:
            app.include_router(
                internal_router(
                    module.name,
                    module.contract,
                    container.implementations[module.name],
                    service_token=container.service_token,
                )
            )
    app.add_middleware(BodyGuardMiddleware)  # inside the size limit, which bounds what it reads
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=container.settings.max_request_body_bytes)
    app.add_middleware(RequestContextMiddleware)
    return app


def _document_input_as_read(app: FastAPI) -> None:
    """The OpenAPI schema says what the API accepts, where FastAPI's own leaves two things out.

    An optional parameter (`str | None`) is absent-or-string, not nullable: a query string or a header
    has no null, and a client told it may send `null` sends the text "null". And no text holds U+0000.
    """
    generate = app.openapi
    documented: list[dict[str, Any]] = []  # the schema last documented (FastAPI caches its own)

    def openapi() -> dict[str, Any]:
        schema = generate()
        if documented and documented[0] is schema:
            return schema
        documented[:] = [schema]
        for item in schema.get("paths", {}).values():
            for operation in item.values():
                for parameter in operation.get("parameters", []) if isinstance(operation, dict) else []:
                    _drop_null(parameter.get("schema", {}))
        _forbid_nul(schema.get("paths", {}))
        _forbid_nul(schema.get("components", {}).get("schemas", {}))
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _forbid_nul(node: Any) -> None:
    if isinstance(node, dict):
        if node.get("type") == "string" and not node.keys() & {"pattern", "format", "enum", "const"}:
            node["pattern"] = NO_NUL
        for value in node.values():
            _forbid_nul(value)
    elif isinstance(node, list):
        for value in node:
            _forbid_nul(value)


def _drop_null(schema: dict[str, Any]) -> None:
    options = schema.get("anyOf")
    if not isinstance(options, list) or {"type": "null"} not in options:
        return
    kept = [option for option in options if option != {"type": "null"}]
    del schema["anyOf"]
    if len(kept) == 1:
        schema.update(kept[0])
    else:
        schema["anyOf"] = kept


@contextmanager
def _gc_for_serving() -> Iterator[None]:
    """Garbage collection set for serving. What exists at startup (modules, routes, schemas: some 200k
    objects) is frozen, so no full collection scans it again (80 ms every few hundred requests); and
    the first generation is collected after 10,000 new objects instead of 700, which the objects of
    16 requests in flight alone reached several times a request. Both are undone on shutdown, so a
    process that runs many apps (the tests) frees them."""
    thresholds = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(10_000, *thresholds[1:])
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()


def _probes(container: Container) -> APIRouter:
    router = APIRouter(tags=["probes"])
    readiness = Readiness(container)

    @router.get("/healthz", summary="Liveness: the process answers")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get(
        "/readyz",
        summary="Readiness: this service's databases are migrated and answer, and NATS and the services "
        "it calls answer",
        responses={503: {"description": "Not ready"}},
    )
    async def readyz(request: Request) -> Any:
        ready, report = await readiness.check(getattr(request.app.state, "worker", None))
        if ready:
            return JSONResponse({"status": "ready", **report})
        failing = [f"{k}: {v}" for k, v in report["modules"].items() if v != "ok"]
        if report.get("events", "ok") != "ok":
            failing.append(f"events: {report['events']}")
        failing += [f"service {k}: {v}" for k, v in report.get("services", {}).items() if v != "ok"]
        return problem_response(
            503, "not-ready", title="Not ready", detail="; ".join(failing), request=request, **report
        )

    return router
