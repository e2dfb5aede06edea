"""The HTTP entry of a trace: `RequestContextMiddleware` continues the caller's W3C trace (or starts
one), runs the request in it, and binds `request_id` and `trace_id` into every log line."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any
from uuid import UUID

import httpx
import pytest
import structlog
from starlette.types import Receive, Scope, Send
from structlog.testing import capture_logs

from splitstone.kernel import tracing
from splitstone.kernel.http.middleware import RequestContextMiddleware

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE}-{CALLER_SPAN}-01"

log = structlog.get_logger("tests.tracing")


async def endpoint(scope: Scope, receive: Receive, send: Send) -> None:
    """Answers with the trace it runs in and the headers a call made from it would carry."""
    if scope["path"] == "/boom":
        raise RuntimeError("boom")
    context = tracing.current()
    log.info("inside")
    body = json.dumps(
        {
            "context": None if context is None else context.__dict__,
            "outgoing": tracing.outgoing_headers(),
        }
    ).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"json")]})
    await send({"type": "http.response.body", "body": body})


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=RequestContextMiddleware(endpoint))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client


def captured() -> Any:
    return capture_logs(processors=[structlog.contextvars.merge_contextvars])


def lines(logs: list[dict[str, Any]], event: str) -> list[tuple[str | None, str | None]]:
    return [(line.get("trace_id"), line.get("request_id")) for line in logs if line["event"] == event]


async def test_an_incoming_trace_is_continued_in_a_span_of_its_own(http: httpx.AsyncClient) -> None:
    with captured() as logs:
        response = await http.get("/", headers={"traceparent": TRACEPARENT, "X-Request-ID": "order-7"})

    context = response.json()["context"]
    assert (context["trace_id"], context["request_id"], context["sampled"]) == (TRACE, "order-7", True)
    assert context["span_id"] not in (CALLER_SPAN, "0" * 16)
    assert response.headers["x-request-id"] == "order-7"
    assert lines(logs, "inside") == [(TRACE, "order-7")]
    assert lines(logs, "request") == [(TRACE, "order-7")]  # the access log line too

    # A call or an event made here carries the trace on, as the next hop (a new span).
    outgoing = response.json()["outgoing"]
    assert outgoing["x-request-id"] == "order-7"
    version, trace_id, parent, flags = outgoing["traceparent"].split("-")
    assert (version, trace_id, flags) == ("00", TRACE, "01")
    assert parent not in (CALLER_SPAN, context["span_id"])


async def test_an_unsampled_trace_stays_unsampled(http: httpx.AsyncClient) -> None:
    response = await http.get("/", headers={"traceparent": f"00-{TRACE}-{CALLER_SPAN}-00"})
    assert response.json()["context"]["sampled"] is False
    assert response.json()["outgoing"]["traceparent"].endswith("-00")


@pytest.mark.parametrize(
    "traceparent",
    [
        None,
        "",
        "garbage",
        f"00-{'0' * 32}-{CALLER_SPAN}-01",  # the invalid trace id
        f"00-{TRACE}-{'0' * 16}-01",  # the invalid span id
        TRACEPARENT.upper(),
        f"00-{TRACE[:-1]}-{CALLER_SPAN}-01",
        f"{TRACEPARENT}-extra",
    ],
    ids=["absent", "empty", "garbage", "zero-trace", "zero-span", "upper-case", "short", "trailing"],
)
async def test_without_a_valid_traceparent_a_new_trace_begins(
    http: httpx.AsyncClient, traceparent: str | None
) -> None:
    headers = {} if traceparent is None else {"traceparent": traceparent}
    with captured() as logs:
        first = (await http.get("/", headers=headers)).json()["context"]
        second = (await http.get("/", headers=headers)).json()["context"]

    for context in (first, second):
        assert len(context["trace_id"]) == 32
        assert context["trace_id"] not in (TRACE, "0" * 32)
        assert UUID(context["request_id"]).version == 7
    assert first["trace_id"] != second["trace_id"]  # one per request
    assert lines(logs, "inside") == [
        (first["trace_id"], first["request_id"]),
        (second["trace_id"], second["request_id"]),
    ]


async def test_a_valid_trace_with_an_invalid_request_id_keeps_the_trace(http: httpx.AsyncClient) -> None:
    response = await http.get("/", headers={"traceparent": TRACEPARENT, "X-Request-ID": "has spaces"})
    context = response.json()["context"]
    assert context["trace_id"] == TRACE
    assert UUID(context["request_id"]).version == 7
    assert response.headers["x-request-id"] == context["request_id"]


async def test_the_trace_ends_with_the_request_and_leaves_the_caller_s_context_alone(
    http: httpx.AsyncClient,
) -> None:
    """Called in process (a test, or one service's app calling another's), the caller keeps its own."""
    caller = tracing.new_trace("caller-1")
    with tracing.activated(caller), structlog.contextvars.bound_contextvars(service="billing"):
        with captured() as logs:
            response = await http.get("/", headers={"traceparent": TRACEPARENT})
            with pytest.raises(RuntimeError, match="boom"):
                await http.get("/boom")
            log.info("after")
        assert tracing.current() == caller
        assert structlog.contextvars.get_contextvars() == {
            "service": "billing",
            "request_id": "caller-1",
            "trace_id": caller.trace_id,
        }

    assert response.json()["context"]["trace_id"] == TRACE
    assert [line["service"] for line in logs if line["event"] in ("inside", "request")] == ["billing"] * 3
    assert lines(logs, "after") == [(caller.trace_id, "caller-1")]
    assert tracing.current() is None


async def test_a_request_s_trace_is_bound_and_restored_without_scanning_the_log_context(
    http: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Per request and per handler: binding the two keys must not copy the whole context each time
    (as `structlog.contextvars.bound_contextvars` does), and the caller's values come back after."""

    def scanned() -> dict[str, Any]:
        raise AssertionError("the whole log context was scanned to bind the trace")

    monkeypatch.setattr(structlog.contextvars, "get_contextvars", scanned)
    caller = tracing.new_trace("caller-2")
    with tracing.activated(caller), captured() as logs:
        response = await http.get("/", headers={"traceparent": TRACEPARENT, "X-Request-ID": "order-8"})
        log.info("after")

    assert response.json()["context"]["trace_id"] == TRACE
    assert lines(logs, "inside") == [(TRACE, "order-8")]
    assert lines(logs, "after") == [(caller.trace_id, "caller-2")]
    with captured() as logs:
        log.info("outside")
    assert lines(logs, "outside") == [(None, None)]
    assert tracing.current() is None


async def test_the_app_runs_every_request_in_its_trace(notes_client: httpx.AsyncClient) -> None:
    """Through the whole application: the middleware is installed, and outermost of the kernel's."""
    with captured() as logs:
        response = await notes_client.get("/api/v1/notes/errors/locked", headers={"traceparent": TRACEPARENT})
    assert response.status_code == 423
    request_id = response.headers["x-request-id"]
    assert response.json()["request_id"] == request_id
    assert lines(logs, "request") == [(TRACE, request_id)]
