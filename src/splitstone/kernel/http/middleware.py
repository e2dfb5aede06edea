"""Pure ASGI middleware (cheaper than BaseHTTPMiddleware): trace context, access logs, body size limit."""

from __future__ import annotations

import json
import time
from typing import Any

import structlog
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from splitstone.kernel import tracing
from splitstone.kernel.http.problems import PROBLEM_CONTENT_TYPE

REQUEST_ID_HEADER = b"x-request-id"
TRACEPARENT_HEADER = b"traceparent"
_TRACE_HEADERS = (REQUEST_ID_HEADER, TRACEPARENT_HEADER)

access_log = structlog.get_logger("splitstone.access")


class RequestContextMiddleware:
    """Runs each request in a trace context (`kernel.tracing`): the caller's, continued from its
    `traceparent` and `X-Request-ID` where they are valid, or a new one. Every log line of the request
    carries its `request_id` and `trace_id`, and the events, jobs and remote calls it makes carry the
    trace on. The request id is echoed in `X-Request-ID`.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        context = tracing.from_headers(_trace_headers(scope))
        state = scope.setdefault("state", {})
        state["request_id"] = context.request_id
        state["trace"] = context  # for the 500 handler, which Starlette runs outside this middleware
        echoed = (REQUEST_ID_HEADER, context.request_id.encode())
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", ()), echoed]}
            await send(message)

        with tracing.activated(context):
            try:
                await self.app(scope, receive, send_with_id)
            finally:
                access_log.info(
                    "request",
                    method=scope["method"],
                    path=scope["path"],
                    status=status,
                    duration_ms=round((time.perf_counter() - started) * 1000, 2),
                )


def _trace_headers(scope: Scope) -> dict[str, str]:
    """The request's trace headers, by lower-case name (the first of each, as ASGI gives them)."""
    found: dict[str, str] = {}
    for name, value in scope.get("headers", ()):
        if name in _TRACE_HEADERS:
            found.setdefault(name.decode(), value.decode("latin-1"))
    return found


class BodySizeLimitMiddleware:
    """Refuses bodies over the limit with 413, by Content-Length up front or by counting streamed bytes."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._drain(receive, declared)
            await self._too_large(scope, send)
            return
        received = 0
        response_started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    if message.get("more_body", False):
                        await self._drain(receive, received)
                    raise _BodyTooLarge(self.max_bytes)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _BodyTooLarge:
            if not response_started:
                await self._too_large(scope, send)

    async def _drain(self, receive: Receive, already: int) -> None:
        await drain_oversized_body(receive, self.max_bytes, already)

    async def _too_large(self, scope: Scope, send: Send) -> None:
        body: dict[str, Any] = {
            "type": "/problems/request-too-large",
            "title": "Content Too Large",
            "status": 413,
            "code": "request-too-large",
            "detail": f"The request body exceeds {self.max_bytes} bytes.",
            "instance": scope["path"],
        }
        request_id = scope.get("state", {}).get("request_id")
        if request_id:
            body["request_id"] = request_id
        payload = json.dumps(body).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", PROBLEM_CONTENT_TYPE.encode()),
                    (b"content-length", str(len(payload)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})


class _BodyTooLarge(StarletteHTTPException):
    """Raised from `receive`; FastAPI lets HTTPException through body parsing, so it becomes a 413 problem."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, f"The request body exceeds {max_bytes} bytes.")


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def drain_oversized_body(receive: Receive, max_bytes: int, already: int = 0) -> None:
    """Read and drop the rest of an oversized body, up to a bound.

    Answering while the client is still sending makes the server close a socket with unread data,
    which resets the connection before the client can read the 413. Past the bound we answer anyway.
    """
    budget = max(8 * max_bytes, 16 * 1024 * 1024) - already
    while budget > 0:
        message = await receive()
        if message["type"] != "http.request":
            return
        budget -= len(message.get("body", b""))
        if not message.get("more_body", False):
            return
