"""The trace an event or a job carries in its row: the `traceparent` and `request_id` columns.

A row holds the next hop of the context that published or scheduled it (the same trace, a span of its
own); the handler continues that trace in a span of its own, so its log lines, the events it publishes
and the calls it makes share the trace id of the request that started it all. A row without them (written
before they existed, or outside any trace) is handled in a fresh trace. The values are untrusted on the
way in (a NATS header): those too long for their columns, or holding a character a column cannot store
(PostgreSQL refuses NUL), are dropped, malformed ones start a fresh trace, and none ever fails a delivery.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from splitstone.kernel import tracing
from splitstone.kernel.tracing import TraceContext

TRACEPARENT_LENGTH = 64  # version 00 is 55 characters; room for a later version's extra fields
REQUEST_ID_LENGTH = 128  # what `tracing` accepts


def hop(context: TraceContext | None) -> tuple[str | None, str | None]:
    """(traceparent, request_id) of the next hop from `context`: what a row written now stores."""
    if context is None:
        return None, None
    child = context.child()
    return child.traceparent, child.request_id


def storable(traceparent: str | None, request_id: str | None) -> tuple[str | None, str | None]:
    """The values as they may be stored: each one dropped if it does not fit its column.

    A NUL (or any control character) would make PostgreSQL refuse the whole delivered batch, so a value
    holding one is dropped too; no valid trace header holds one.
    """
    return _fits(traceparent, TRACEPARENT_LENGTH), _fits(request_id, REQUEST_ID_LENGTH)


def continued(traceparent: str | None, request_id: str | None) -> TraceContext:
    """The context a handler runs in: a new span of the stored trace, or a fresh trace."""
    headers: dict[str, str] = {}
    if isinstance(traceparent, str):
        headers[tracing.TRACEPARENT] = traceparent
    if isinstance(request_id, str):
        headers[tracing.REQUEST_ID] = request_id
    try:
        return tracing.from_headers(headers)
    except Exception:  # never let a stored value stop a handler
        return tracing.new_trace()


def trace_id(traceparent: str | None) -> str | None:
    """The trace id inside a stored traceparent (for showing a row beside its log lines)."""
    if traceparent is None:
        return None
    parts = traceparent.split("-")
    return parts[1] if len(parts) >= 4 and len(parts[1]) == 32 else None


def _fits(value: str | None, length: int) -> str | None:
    return value if isinstance(value, str) and 0 < len(value) <= length and value.isprintable() else None


def continued_from(row: Mapping[Any, Any]) -> TraceContext:
    """The context an inbox row's handler or a job runs in, from the row's trace columns."""
    return continued(row["traceparent"], row["request_id"])
