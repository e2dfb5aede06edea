"""The trace context of the work in hand: a request id and a W3C trace (`traceparent`).

An HTTP request starts one (or continues the caller's, from `traceparent` and `X-Request-ID`); a remote
contract call and an event carry it on, so one user action can be followed through the logs of every
service it touches. It lives in a context variable and is bound into every log line as `request_id` and
`trace_id`.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

import structlog
from uuid6 import uuid7

TRACEPARENT = "traceparent"
REQUEST_ID = "x-request-id"

_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
_INVALID_TRACE = "0" * 32
_INVALID_SPAN = "0" * 16


@dataclass(frozen=True)
class TraceContext:
    request_id: str
    trace_id: str
    """32 hex digits, shared by every span of one trace."""
    span_id: str
    """16 hex digits: this process's part of the trace."""
    sampled: bool = True

    @property
    def traceparent(self) -> str:
        return f"00-{self.trace_id}-{self.span_id}-{'01' if self.sampled else '00'}"

    def child(self) -> TraceContext:
        """The context a call or event made from here carries: same trace and request, a new span."""
        return TraceContext(self.request_id, self.trace_id, _span_id(), self.sampled)

    def headers(self) -> dict[str, str]:
        """Headers that carry this context to the next hop (a new span of the same trace)."""
        child = self.child()
        return {TRACEPARENT: child.traceparent, REQUEST_ID: child.request_id}


_current: ContextVar[TraceContext | None] = ContextVar("splitstone_trace", default=None)


def new_trace(request_id: str | None = None) -> TraceContext:
    return TraceContext(request_id or str(uuid7()), secrets.token_hex(16), _span_id())


def from_headers(headers: Mapping[str, str]) -> TraceContext:
    """The context an incoming hop continues (keys lower-case); a new trace where none is valid."""
    request_id = headers.get(REQUEST_ID)
    if request_id is None or not _REQUEST_ID.fullmatch(request_id):
        request_id = None
    parsed = _TRACEPARENT.fullmatch(headers.get(TRACEPARENT, ""))
    if parsed is None or parsed.group(1) == _INVALID_TRACE or parsed.group(2) == _INVALID_SPAN:
        return new_trace(request_id)
    return TraceContext(
        request_id=request_id or str(uuid7()),
        trace_id=parsed.group(1),
        span_id=_span_id(),
        sampled=bool(int(parsed.group(3), 16) & 1),
    )


def current() -> TraceContext | None:
    return _current.get()


def outgoing_headers() -> dict[str, str]:
    """Headers for a call or an event made now: the current context's next hop, or nothing."""
    context = _current.get()
    return context.headers() if context is not None else {}


@contextmanager
def activated(context: TraceContext) -> Iterator[TraceContext]:
    """Make `context` current (and bound into log lines) for the length of the block.

    Restored by token, not with `bound_contextvars`, which copies and scans the whole context on the
    way in: this runs once per request and once per handler.
    """
    token = _current.set(context)
    logged = structlog.contextvars.bind_contextvars(request_id=context.request_id, trace_id=context.trace_id)
    try:
        yield context
    finally:
        structlog.contextvars.reset_contextvars(**logged)
        _current.reset(token)


def _span_id() -> str:
    return secrets.token_hex(8)
