"""RFC 9457 problem details for every error the HTTP layer returns.

`type` is a stable URI reference `/problems/<code>`; `code` repeats the last part for clients that
switch on it. Validation errors list every failing field under `errors`.
"""

from __future__ import annotations

import contextlib
import re
from http import HTTPStatus
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import compile_path

from splitstone.kernel import tracing
from splitstone.kernel.errors import DomainError, RateLimited, ServiceUnavailable

PROBLEM_CONTENT_TYPE = "application/problem+json"

log = structlog.get_logger("splitstone.http")

_STATUS_CODES = {
    400: "bad-request",
    401: "not-authenticated",
    403: "permission-denied",
    404: "not-found",
    405: "method-not-allowed",
    406: "not-acceptable",
    409: "conflict",
    411: "length-required",
    413: "request-too-large",
    415: "unsupported-media-type",
    422: "validation-error",
    429: "rate-limited",
    500: "internal-error",
    503: "service-unavailable",
}


class FieldError(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class Problem(BaseModel):
    """The body of every error response (`application/problem+json`)."""

    type: str = Field(examples=["/problems/validation-error"])
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    code: str
    request_id: str | None = None
    errors: list[FieldError] | None = None


PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    "4XX": {"model": Problem, "content": {PROBLEM_CONTENT_TYPE: {}}, "description": "Client error"},
}


def problem_response(
    status: int,
    code: str,
    *,
    title: str | None = None,
    detail: str | None = None,
    request: Request | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": f"/problems/{code}",
        "title": title or _reason(status),
        "status": status,
        "code": code,
    }
    if detail:
        body["detail"] = detail
    if request is not None:
        body["instance"] = request.url.path
        request_id = getattr(request.state, "request_id", None)
        if request_id:
            body["request_id"] = request_id
    body.update({k: v for k, v in extra.items() if v is not None})
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_CONTENT_TYPE)


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


async def _domain_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DomainError)
    headers: dict[str, str] = {}
    if isinstance(exc, RateLimited):
        headers["Retry-After"] = str(exc.retry_after)
    elif isinstance(exc, ServiceUnavailable):
        headers["Retry-After"] = "1"  # the supervisor or the orchestrator restarts a service in seconds
    if exc.status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="splitstone"'
    return problem_response(
        exc.status,
        exc.code,
        title=exc.title,
        detail=exc.detail,
        request=request,
        headers=headers,
        **exc.extra,
    )


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _STATUS_CODES.get(exc.status_code, "http-error")
    detail = exc.detail if isinstance(exc.detail, str) and exc.detail != _reason(exc.status_code) else None
    if exc.status_code == 404 and detail in (None, "Not Found"):
        detail = f"No resource at {request.url.path}."
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        allowed = _allowed_methods(request)
        headers["Allow"] = ", ".join(allowed)
        detail = f"{request.method} is not allowed on {request.url.path}; allowed: {headers['Allow']}."
    return problem_response(exc.status_code, code, detail=detail, request=request, headers=headers)


def _allowed_methods(request: Request) -> list[str]:
    """Every method the API documents at this path (Starlette's own Allow names only one route's)."""
    table: list[tuple[re.Pattern[str], set[str]]] | None = getattr(request.app.state, "allowed_methods", None)
    if table is None:
        table = [
            (compile_path(path)[0], {m.upper() for m in item if m.upper() in _HTTP_METHODS})
            for path, item in request.app.openapi().get("paths", {}).items()
        ]
        request.app.state.allowed_methods = table
    methods: set[str] = set()
    for pattern, path_methods in table:
        if pattern.match(request.url.path):
            methods |= path_methods
    if "GET" in methods:
        methods.add("HEAD")
    return sorted(methods)


_HTTP_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"}


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {
            "loc": [str(p) if not isinstance(p, int) else p for p in err.get("loc", ())],
            "msg": str(err.get("msg", "")),
            "type": str(err.get("type", "")),
        }
        for err in exc.errors()
    ]
    fields = ", ".join(".".join(str(p) for p in e["loc"]) for e in errors) or "the request"
    return problem_response(
        422,
        "validation-error",
        title="Validation failed",
        detail=f"Invalid value for: {fields}.",
        request=request,
        errors=errors,
    )


# asyncpg's errors for a connection that is gone or not yet accepting (matched by name: the kernel does
# not import the driver).
_LOST_CONNECTION_ERRORS = frozenset(
    {"ConnectionDoesNotExistError", "ConnectionFailureError", "CannotConnectNowError", "InterfaceError"}
)


def database_unavailable(exc: BaseException) -> bool:
    """The database could not be reached: a refused or cut connection, or a pool that waited too long."""
    if isinstance(exc, ConnectionError | PoolTimeout):  # asyncpg's connect raises OSError subclasses as is
        return True
    if not isinstance(exc, DBAPIError):
        return False
    cause = exc.orig
    return (
        exc.connection_invalidated
        or isinstance(cause, OSError)
        or type(cause).__name__ in _LOST_CONNECTION_ERRORS
        or type(getattr(cause, "__cause__", None)).__name__ in _LOST_CONNECTION_ERRORS
    )


async def _unhandled(request: Request, exc: Exception) -> JSONResponse:
    trace = getattr(request.state, "trace", None)
    # Starlette sends this response from its outermost middleware, outside RequestContextMiddleware,
    # so the request id header has to be set here.
    request_id = getattr(request.state, "request_id", None)
    id_header = {"X-Request-ID": request_id} if request_id else {}
    if database_unavailable(exc):
        # An outage of a dependency, not a bug: 503 and a retry hint (RFC 9110 §15.6.4), one log line.
        with tracing.activated(trace) if trace is not None else contextlib.nullcontext():
            log.warning("database unavailable", path=request.url.path, method=request.method, error=repr(exc))
        return problem_response(
            503,
            ServiceUnavailable.code,
            detail="The database cannot be reached right now; retry shortly.",
            request=request,
            headers={"Retry-After": "1", **id_header},
        )
    with tracing.activated(trace) if trace is not None else contextlib.nullcontext():
        log.exception("unhandled error", path=request.url.path, method=request.method)
    return problem_response(
        500,
        "internal-error",
        detail="An unexpected error occurred; it has been logged.",
        request=request,
        headers=id_header or None,
    )


def install_problem_handlers(app: FastAPI) -> None:
    app.add_exception_handler(DomainError, _domain_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unhandled)
