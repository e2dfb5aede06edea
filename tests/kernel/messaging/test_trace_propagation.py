"""One user action, one trace: a request's trace goes with its events (outbox → transport → inbox →
handler), with the events and jobs those handlers make, and shows in every log line on the way.

The scenario runs the `ledger`/`tally` test modules plus `audit`, which records the trace each of its
handlers runs in: an HTTP request posts to the ledger (`ledger.Posted`); tally handles that and
publishes `tally.Tallied`; audit handles both, and its Posted handler schedules a transactional and
an external job. Every handler and job must run in the request's trace (same trace id and request id,
a span of its own), in process on both database backends and over NATS JetStream.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, cast
from uuid import UUID, uuid4

import httpx
import pytest
import structlog
from fastapi import APIRouter
from pydantic import BaseModel
from sqlalchemy import select
from structlog.testing import capture_logs

from splitstone.kernel import tracing
from splitstone.kernel.app import API_PREFIX, create_app
from splitstone.kernel.container import Container
from splitstone.kernel.db import UnitOfWorkFactory
from splitstone.kernel.events import Envelope
from splitstone.kernel.messaging.jobs import Job, job
from splitstone.kernel.messaging.nats import NatsTransport, envelope_from
from splitstone.kernel.messaging.tables import inbox, jobs, outbox
from splitstone.kernel.messaging.worker import Worker
from splitstone.kernel.module import Module, ModuleContext
from splitstone.kernel.ratelimit import RateLimiter
from splitstone.kernel.tracing import TraceContext
from tests.kernel.conftest import client_for
from tests.kernel.messaging.helpers import wait_until
from tests.support import eventapp
from tests.support.eventapp import Ledger, Posted, Tallied

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
INCOMING = {"traceparent": f"00-{TRACE}-{CALLER_SPAN}-01", "X-Request-ID": "checkout-42"}

audit_log = structlog.get_logger("tests.audit")


# --- the audit module: records the trace of each handler and job ------------------------------------


@dataclass(frozen=True)
class Seen:
    what: str  # "ledger.Posted", "tally.Tallied", "audit.followup", "audit.notify"
    context: TraceContext


class AuditApi(Protocol):
    async def seen(self) -> list[Seen]: ...


class Audit:
    def __init__(self, ctx: ModuleContext) -> None:
        self._uow: UnitOfWorkFactory = ctx.uow
        self._clock = ctx.clock
        self.records: list[Seen] = []
        self.tallied_failures = 0  # the Tallied handler fails this many times before it succeeds

    async def seen(self) -> list[Seen]:
        return list(self.records)

    def _note(self, what: str) -> None:
        context = tracing.current()
        assert context is not None, f"{what} ran outside any trace"
        self.records.append(Seen(what, context))
        audit_log.info("audited", what=what)

    async def on_posted(self, event: Posted) -> None:
        self._note(Posted.name)
        async with self._uow() as uow:
            now = self._clock.now()
            uow.schedule(job("audit.followup", {"event": str(event.id)}, run_at=now))
            uow.schedule(job("audit.notify", {"event": str(event.id)}, run_at=now))
            await uow.commit()

    async def on_tallied(self, _event: Tallied) -> None:
        if self.tallied_failures > 0:
            self.tallied_failures -= 1
            raise RuntimeError("audit is not ready for it yet")
        self._note(Tallied.name)

    async def followup(self, _job: Job) -> None:
        self._note("audit.followup")

    async def notify(self, _job: Job) -> None:
        self._note("audit.notify")


audit = Module(
    name="audit",
    description="Records the trace its handlers and jobs run in.",
    contract=AuditApi,
    factory=Audit,
    subscriptions={Posted: lambda a: a.on_posted, Tallied: lambda a: a.on_tallied},
    jobs={"audit.followup": lambda a: a.followup},
    external_jobs={"audit.notify": lambda a: a.notify},
)


class NewPost(BaseModel):
    amount: int


def ledger_router(ledger: Ledger) -> APIRouter:
    router = APIRouter(prefix=f"{API_PREFIX}/ledger")

    @router.post("/posts", status_code=201)
    async def post(body: NewPost) -> dict[str, str]:
        entry = await ledger.post(body.amount)
        context = tracing.current()
        assert context is not None
        return {"entry": str(entry), "span_id": context.span_id}

    return router


MODULES = (dataclasses.replace(eventapp.ledger, router=ledger_router), eventapp.tally, audit)


@dataclass
class Scene:
    container: Container
    worker: Worker
    http: httpx.AsyncClient

    @property
    def audit(self) -> Audit:
        return cast(Audit, self.container.implementations["audit"])

    @property
    def ledger(self) -> Ledger:
        return cast(Ledger, self.container.implementations["ledger"])

    def seen(self, what: str) -> list[TraceContext]:
        return [s.context for s in self.audit.records if s.what == what]

    async def rows(self, module: str, table: Any) -> list[dict[str, Any]]:
        async with self.container.databases[module].session() as connection:
            return [dict(row) for row in (await connection.execute(select(table))).mappings()]

    async def post(self, amount: int = 5, headers: dict[str, str] | None = None) -> httpx.Response:
        response = await self.http.post(
            f"{API_PREFIX}/ledger/posts", json={"amount": amount}, headers=headers
        )
        assert response.status_code == 201, response.text
        return response


@asynccontextmanager
async def scene(url: str, tmp_path: Path, **settings: str) -> AsyncIterator[Scene]:
    base = eventapp.settings_for(url, **settings)
    container = Container.build(
        type(base)(**{**base.model_dump(), "data_dir": tmp_path / "data"}),
        MODULES,
        rate_limiter=RateLimiter("memory://"),
    )
    worker: Worker | None = None
    try:
        await eventapp.prepare(container)
        worker = container.worker()
        async with client_for(create_app(container)) as http:
            yield Scene(container, worker, http)
    finally:
        if worker is not None:
            await worker.stop()
        await container.aclose()


def traced_lines(logs: list[dict[str, Any]], event: str) -> list[tuple[str | None, str | None]]:
    return [(line.get("trace_id"), line.get("request_id")) for line in logs if line["event"] == event]


def trace_id_of(traceparent: str | None) -> str | None:
    return traceparent.split("-")[1] if traceparent else None


def assert_in_the_request_trace(contexts: list[TraceContext], count: int = 1) -> None:
    assert len(contexts) == count
    for context in contexts:
        assert (context.trace_id, context.request_id) == (TRACE, "checkout-42")


HANDLED = (Posted.name, Tallied.name, "audit.followup", "audit.notify")


# --- in process, on each database backend ------------------------------------------------------------


async def test_a_request_s_trace_reaches_every_handler_and_job_down_the_chain(
    empty_database_url: str, tmp_path: Path
) -> None:
    async with scene(empty_database_url, tmp_path) as s:
        with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
            response = await s.post(headers=INCOMING)
            await s.worker.settle()

        assert response.headers["x-request-id"] == "checkout-42"
        request_span = response.json()["span_id"]
        for what in HANDLED:
            assert_in_the_request_trace(s.seen(what))
        spans = [s.seen(what)[0].span_id for what in HANDLED]
        assert len({*spans, request_span, CALLER_SPAN}) == len(HANDLED) + 2  # each hop a span of its own

        # What each row carries on: the request's trace, in a span of the next hop.
        (posted,) = await s.rows("ledger", outbox)
        (tallied,) = await s.rows("tally", outbox)
        for row in (posted, tallied):
            assert trace_id_of(row["traceparent"]) == TRACE
            assert row["request_id"] == "checkout-42"
        assert request_span not in posted["traceparent"]
        received = await s.rows("audit", inbox)
        assert {r["event_name"]: r["traceparent"] for r in received} == {
            Posted.name: posted["traceparent"],
            Tallied.name: tallied["traceparent"],
        }
        scheduled = await s.rows("audit", jobs)
        assert {trace_id_of(r["traceparent"]) for r in scheduled} == {TRACE}

        # And every log line on the way says so.
        assert traced_lines(logs, "request") == [(TRACE, "checkout-42")]
        assert traced_lines(logs, "audited") == [(TRACE, "checkout-42")] * len(HANDLED)
        assert tracing.current() is None  # nothing stays behind in the caller


async def test_a_retried_handler_stays_in_the_trace_and_so_does_its_failure_report(
    empty_database_url: str, tmp_path: Path
) -> None:
    async with scene(empty_database_url, tmp_path) as s:
        # Fails in the batch (which then runs again, handler by handler) and once more there: recorded.
        s.audit.tallied_failures = 2
        with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
            await s.post(headers=INCOMING)

            async def handled() -> bool:
                await s.worker.settle()
                return bool(s.seen(Tallied.name))

            await wait_until(handled, within=10, interval=0.05, what="the retry succeeded")

        assert_in_the_request_trace(s.seen(Tallied.name))
        (retry,) = [r for r in await s.rows("audit", inbox) if r["event_name"] == Tallied.name]
        assert (retry["status"], retry["attempts"]) == ("done", 2)
        assert traced_lines(logs, "event handler failed") == [(TRACE, "checkout-42")]


async def test_events_published_outside_a_trace_are_handled_each_in_a_fresh_one(
    empty_database_url: str, tmp_path: Path
) -> None:
    """Rows without a trace (written before the columns existed, or by background work) still flow."""
    async with scene(empty_database_url, tmp_path) as s:
        await s.ledger.post(3)
        (posted,) = await s.rows("ledger", outbox)
        assert (posted["traceparent"], posted["request_id"]) == (None, None)

        await s.worker.settle()

        (on_posted,) = s.seen(Posted.name)
        (on_tallied,) = s.seen(Tallied.name)
        assert UUID(on_posted.request_id).version == 7
        assert on_posted.trace_id not in (on_tallied.trace_id, "0" * 32)
        # tally's handler ran in a fresh trace of its own, which its Tallied event carried on to audit.
        (tallied,) = await s.rows("tally", outbox)
        assert trace_id_of(tallied["traceparent"]) == on_tallied.trace_id
        assert tallied["request_id"] == on_tallied.request_id
        # audit's jobs continue the trace of the handler that scheduled them.
        job_contexts = [*s.seen("audit.followup"), *s.seen("audit.notify")]
        assert {c.trace_id for c in job_contexts} == {on_posted.trace_id}
        assert {r["status"] for r in await s.rows("audit", inbox)} == {"done"}


@pytest.mark.parametrize(
    ("traceparent", "request_id", "stored"),
    [
        ("00-not-a-trace-01", "has spaces", ("00-not-a-trace-01", "has spaces")),
        (f"00-{'0' * 32}-{CALLER_SPAN}-01", "", (f"00-{'0' * 32}-{CALLER_SPAN}-01", None)),
        ("x" * 300, "r" * 500, (None, None)),  # too long for the columns: dropped, not a failed insert
        # PostgreSQL refuses a NUL in text, and one bad row would fail the whole delivered batch.
        (f"00-{TRACE}-{CALLER_SPAN}-01\x00", "checkout\x00-42", (None, None)),
    ],
    ids=["malformed", "zero-trace-id", "too-long", "nul-character"],
)
async def test_a_malformed_trace_never_fails_a_delivery(
    empty_database_url: str,
    tmp_path: Path,
    traceparent: str,
    request_id: str,
    stored: tuple[str | None, str | None],
) -> None:
    async with scene(empty_database_url, tmp_path) as s:
        event = Posted(occurred_at=datetime.now(UTC), aggregate_id=uuid4(), amount=1)
        envelope = dataclasses.replace(Envelope.of(event), traceparent=traceparent, request_id=request_id)
        audit_inbox = next(i for i in s.worker.inboxes if i.module == "audit")

        await audit_inbox.deliver([envelope])
        await s.worker.settle()

        (row,) = await s.rows("audit", inbox)
        assert (row["traceparent"], row["request_id"], row["status"]) == (*stored, "done")
        (context,) = s.seen(Posted.name)
        assert context.trace_id != "0" * 32
        assert context.trace_id not in traceparent
        assert UUID(context.request_id).version == 7


# --- over NATS JetStream ---------------------------------------------------------------------------


def test_the_trace_travels_in_nats_headers() -> None:
    event = Posted(occurred_at=datetime.now(UTC), aggregate_id=uuid4(), amount=1)
    base = {
        "Nats-Msg-Id": str(event.id),
        "Splitstone-Event": event.name,
        "Splitstone-Event-Version": "1",
        "Splitstone-Aggregate-Id": str(event.aggregate_id),
        "Splitstone-Occurred-At": event.occurred_at.isoformat(),
    }
    payload = Envelope.of(event).payload.encode()

    traced = envelope_from({**base, **INCOMING}, payload)
    assert (traced.traceparent, traced.request_id) == (INCOMING["traceparent"], "checkout-42")
    untraced = envelope_from(base, payload)
    assert (untraced.traceparent, untraced.request_id) == (None, None)


async def test_a_request_s_trace_crosses_nats_to_every_handler_and_job(
    empty_database_url: str, tmp_path: Path, nats_url: str, nats_prefix: str
) -> None:
    async with scene(
        empty_database_url, tmp_path, transport="nats", nats_url=nats_url, prefix=nats_prefix
    ) as s:
        assert isinstance(s.worker.transport, NatsTransport)
        await s.worker.start()
        with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
            await s.post(headers=INCOMING)
            await wait_until(lambda: _all_seen(s), within=30, what="every handler and job of the chain ran")

        for what in HANDLED:
            assert_in_the_request_trace(s.seen(what))
        assert traced_lines(logs, "audited") == [(TRACE, "checkout-42")] * len(HANDLED)
        (posted,) = await s.rows("ledger", outbox)
        received = {r["event_name"]: r for r in await s.rows("audit", inbox)}
        assert received[Posted.name]["traceparent"] == posted["traceparent"]  # as sent, through the headers
        assert received[Posted.name]["request_id"] == "checkout-42"


async def _all_seen(s: Scene) -> bool:
    return all(s.seen(what) for what in HANDLED)
