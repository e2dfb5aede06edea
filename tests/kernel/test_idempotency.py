"""`Idempotency-Key` on POST routes (kernel/http/idempotency.py), on the fake notes module.

The notes module gets an `Idempotency` helper and a router that opts in with its route class; each
route counts its calls, so a test can tell a replay (the route did not run) from a second run.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest
from fastapi import APIRouter, FastAPI, HTTPException, Request, Response
from sqlalchemy import func, select

from splitstone.kernel.app import API_PREFIX, create_app
from splitstone.kernel.clock import Clock, ManualClock
from splitstone.kernel.container import Container
from splitstone.kernel.db import ModuleDatabase, UnitOfWorkFactory
from splitstone.kernel.errors import NotAuthenticated, RateLimited
from splitstone.kernel.events import EventRecorder
from splitstone.kernel.http.idempotency import REPLAYED_HEADER, Idempotency
from splitstone.kernel.messaging.tables import idempotency_keys
from splitstone.kernel.module import ModuleContext
from splitstone.kernel.ratelimit import RateLimiter
from splitstone.kernel.settings import Environment, Settings
from tests.kernel.conftest import (
    NewNote,
    Note,
    NoteLocked,
    NotesService,
    client_for,
    migrate_notes,
    notes_module,
    notes_table,
)
from tests.kernel.test_http import assert_problem

NOTES = f"{API_PREFIX}/notes"
TTL = timedelta(hours=24)
IN_PROGRESS_TIMEOUT = timedelta(seconds=60)


class IdempotentNotes(NotesService):
    """The notes service, plus what the test routes need: the helper, call counts and a gate."""

    def __init__(self, uow: UnitOfWorkFactory, clock: Clock) -> None:
        super().__init__(uow, clock)
        self.idempotency = Idempotency(
            uow, clock, caller_scope, ttl=TTL, in_progress_timeout=IN_PROGRESS_TIMEOUT
        )
        self.calls: Counter[str] = Counter()
        self.gate: asyncio.Event | None = None  # when set, `add` waits on it (once inside: `entered`)
        self.entered = asyncio.Event()


async def caller_scope(request: Request) -> str:
    user = request.headers.get("x-user")
    if user is None:
        raise NotAuthenticated("Send X-User.")
    return f"user:{user}"


def build_router(service: IdempotentNotes) -> APIRouter:
    router = APIRouter(prefix=NOTES, tags=["notes"], route_class=service.idempotency.route_class)

    @router.post("", status_code=201)
    async def add(body: NewNote, response: Response) -> Note:
        service.calls["add"] += 1
        gate = service.gate
        if gate is not None:
            service.entered.set()
            await gate.wait()
        note = await service.add(body.text)
        response.headers["Location"] = f"{NOTES}/{note.id}"
        response.headers["ETag"] = '"1"'
        response.headers["X-Not-Kept"] = "only on the first response"
        return note

    @router.get("/{note_id}")
    async def get(note_id: UUID) -> Note:
        return await service.get(note_id)

    @router.post("/crash")
    async def crash() -> None:
        service.calls["crash"] += 1
        raise RuntimeError("the handler failed")

    @router.post("/unavailable")
    async def unavailable() -> None:
        service.calls["unavailable"] += 1
        raise HTTPException(503, "Try again later.")

    @router.post("/limited")
    async def limited() -> None:
        service.calls["limited"] += 1
        raise RateLimited(retry_after=3)

    @router.post("/locked")
    async def locked() -> None:
        service.calls["locked"] += 1
        raise NoteLocked("Note 7 is locked.")

    return router


def build(ctx: ModuleContext) -> IdempotentNotes:
    return IdempotentNotes(ctx.uow, ctx.clock)


@dataclass
class Api:
    http: httpx.AsyncClient
    app: FastAPI
    service: IdempotentNotes
    db: ModuleDatabase

    async def add(
        self, text: str = "hello", *, key: str | None = "key-1", user: str = "alice"
    ) -> httpx.Response:
        headers = {"X-User": user}
        if key is not None:
            headers["Idempotency-Key"] = key
        return await self.http.post(NOTES, json={"text": text}, headers=headers)

    async def post(self, path: str, key: str = "key-1", **kwargs: Any) -> httpx.Response:
        return await self.http.post(
            f"{NOTES}{path}", headers={"X-User": "alice", "Idempotency-Key": key}, **kwargs
        )

    async def stored(self) -> int:
        async with self.db.session() as session:
            return (await session.execute(select(func.count()).select_from(idempotency_keys))).scalar_one()

    async def notes(self) -> int:
        async with self.db.session() as session:
            return (await session.execute(select(func.count()).select_from(notes_table))).scalar_one()


def build_container(url: str, data_dir: Path, clock: Clock, events: EventRecorder) -> Container:
    settings = Settings(env=Environment.TEST, data_dir=data_dir, database_url=url)
    module = notes_module(factory=build, router=build_router)
    return Container.build(
        settings, [module], clock=clock, recorder=events, rate_limiter=RateLimiter("memory://")
    )


@pytest.fixture
async def api(
    empty_database_url: str, tmp_path: Path, clock: ManualClock, events: EventRecorder
) -> AsyncIterator[Api]:
    container = build_container(empty_database_url, tmp_path / "data", clock, events)
    try:
        await migrate_notes(container.databases["notes"])
        app = create_app(container)
        service = container.implementations["notes"]
        assert isinstance(service, IdempotentNotes)
        async with client_for(app) as http:
            yield Api(http, app, service, container.databases["notes"])
    finally:
        await container.aclose()


def same_response(first: httpx.Response, again: httpx.Response) -> None:
    assert again.status_code == first.status_code
    assert again.content == first.content
    for header in ("content-type", "location"):
        assert again.headers.get(header) == first.headers.get(header)


# --- the first response, and its replay -------------------------------------------------------------


async def test_a_retry_gets_the_first_response_again_and_the_route_runs_once(api: Api) -> None:
    first = await api.add()
    assert first.status_code == 201, first.text
    assert first.headers["location"] == f"{NOTES}/{first.json()['id']}"
    assert REPLAYED_HEADER.lower() not in first.headers

    again = await api.add()
    same_response(first, again)
    assert again.headers[REPLAYED_HEADER] == "true"
    assert again.headers["etag"] == '"1"'
    assert "x-not-kept" not in again.headers  # only Content-Type, Location and ETag are kept
    assert api.service.calls["add"] == 1
    assert await api.notes() == 1
    assert await api.stored() == 1


async def test_without_a_key_every_request_runs(api: Api) -> None:
    first = await api.add(key=None)
    second = await api.add(key=None)
    assert first.status_code == second.status_code == 201
    assert first.json()["id"] != second.json()["id"]
    assert api.service.calls["add"] == 2
    assert await api.stored() == 0


async def test_a_domain_error_is_kept_and_replayed(api: Api) -> None:
    first = await api.post("/locked")
    assert_problem(first, 423, "note-locked")
    again = await api.post("/locked")
    same_response(first, again)
    assert again.headers[REPLAYED_HEADER] == "true"
    assert api.service.calls["locked"] == 1


async def test_other_methods_of_an_opted_in_router_ignore_the_key(api: Api) -> None:
    created = (await api.add(key=None)).json()
    for _ in range(2):
        fetched = await api.http.get(f"{NOTES}/{created['id']}", headers={"Idempotency-Key": ""})
        assert fetched.status_code == 200, fetched.text
        assert REPLAYED_HEADER.lower() not in fetched.headers
    assert await api.stored() == 0


# --- refusals ---------------------------------------------------------------------------------------


async def test_the_same_key_for_a_different_request_is_refused(api: Api) -> None:
    first = await api.add("hello")
    assert first.status_code == 201

    other_body = assert_problem(await api.add("goodbye"), 422, "idempotency-key-reused")
    assert f"POST {NOTES} with a different body or query" in other_body["detail"]
    other_query = await api.http.post(
        NOTES,
        params={"draft": "1"},
        json={"text": "hello"},
        headers={"X-User": "alice", "Idempotency-Key": "key-1"},
    )
    assert_problem(other_query, 422, "idempotency-key-reused")
    other_path = assert_problem(await api.post("/locked"), 422, "idempotency-key-reused")
    assert other_path["detail"].startswith(f"This Idempotency-Key was first used for POST {NOTES};")

    assert api.service.calls == Counter(add=1)
    assert (await api.add("hello")).headers[REPLAYED_HEADER] == "true"  # the original still replays


async def test_a_retry_while_the_first_request_runs_is_told_to_wait(api: Api) -> None:
    api.service.gate = asyncio.Event()
    first = asyncio.create_task(api.add())
    await asyncio.wait_for(api.service.entered.wait(), 10)

    busy = await api.add()
    assert_problem(busy, 409, "idempotency-key-in-use")
    assert busy.headers["retry-after"] == "1"

    api.service.gate.set()
    done = await first
    assert done.status_code == 201
    again = await api.add()
    same_response(done, again)
    assert again.headers[REPLAYED_HEADER] == "true"
    assert api.service.calls["add"] == 1


@pytest.mark.parametrize(
    "key",
    ["", "k" * 256, "caf\u00e9".encode(), "tab\there", "bell\x07"],
    ids=["empty", "too-long", "non-ascii", "tab", "control"],
)
async def test_an_invalid_key_is_refused(api: Api, key: str | bytes) -> None:
    response = await api.http.post(
        NOTES, json={"text": "hello"}, headers=[("X-User", "alice"), ("Idempotency-Key", key)]
    )
    assert_problem(response, 422, "invalid-idempotency-key")
    assert api.service.calls["add"] == 0
    assert await api.stored() == 0


async def test_a_key_of_255_printable_characters_is_accepted(api: Api) -> None:
    key = ("0123456789 ~!#" * 20)[:255]
    assert (await api.add(key=key)).status_code == 201
    assert (await api.add(key=key)).headers[REPLAYED_HEADER] == "true"


async def test_two_keys_in_one_request_are_refused(api: Api) -> None:
    response = await api.http.post(
        NOTES,
        json={"text": "hello"},
        headers=[("X-User", "alice"), ("Idempotency-Key", "a"), ("Idempotency-Key", "b")],
    )
    body = assert_problem(response, 422, "invalid-idempotency-key")
    assert "one Idempotency-Key header" in body["detail"]


async def test_the_scope_resolver_can_refuse_the_caller(api: Api) -> None:
    refused = await api.http.post(NOTES, json={"text": "hello"}, headers={"Idempotency-Key": "key-1"})
    assert_problem(refused, 401, "not-authenticated")
    assert api.service.calls["add"] == 0


@pytest.mark.parametrize("step", ["complete", "release"])
async def test_a_key_the_database_failed_to_settle_is_settled_in_the_background(
    api: Api, monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    # A database blip right after the route ran: the key must not stay "in use" until the timeout.
    records = api.service.idempotency._records
    real = getattr(records, step)
    failures = iter([ConnectionResetError("the database went away")])

    async def flaky(*args: Any) -> Any:
        failure = next(failures, None)
        if failure is not None:
            raise failure
        return await real(*args)

    monkeypatch.setattr(records, step, flaky)
    path = "" if step == "complete" else "/unavailable"  # a 503 releases its key instead of keeping it
    first = await api.post(path, json={"text": "kept"} if step == "complete" else None)
    assert first.status_code == (201 if step == "complete" else 503), first.text
    deadline = asyncio.get_running_loop().time() + 5
    while True:
        again = await api.post(path, json={"text": "kept"} if step == "complete" else None)
        if again.status_code != 409 or asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(0.05)
    if step == "complete":
        same_response(first, again)  # the kept response, replayed
        assert api.service.calls["add"] == 1
    else:
        assert again.status_code == 503  # the key was freed, so the retry ran
        assert api.service.calls["unavailable"] == 2


# --- what is not kept -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "status"), [("/crash", 500), ("/unavailable", 503), ("/limited", 429)], ids=str
)
async def test_a_failure_keeps_nothing_so_a_retry_runs_again(api: Api, path: str, status: int) -> None:
    for attempt in (1, 2):
        response = await api.post(path)
        assert response.status_code == status, response.text
        assert REPLAYED_HEADER.lower() not in response.headers
        assert api.service.calls[path.strip("/")] == attempt
        assert await api.stored() == 0


async def test_a_request_that_fails_validation_keeps_nothing(api: Api) -> None:
    assert_problem(await api.add(""), 422, "validation-error")
    assert await api.stored() == 0
    fixed = await api.add("fixed")  # the same key with the corrected request is a first use
    assert fixed.status_code == 201
    assert api.service.calls["add"] == 1


# --- time -------------------------------------------------------------------------------------------


async def test_an_expired_key_is_a_new_key(api: Api, clock: ManualClock) -> None:
    first = await api.add()
    clock.advance(TTL - timedelta(seconds=1))
    assert (await api.add()).headers[REPLAYED_HEADER] == "true"

    clock.advance(timedelta(seconds=1))
    fresh = await api.add("a different request is fine now")
    assert fresh.status_code == 201
    assert REPLAYED_HEADER.lower() not in fresh.headers
    assert fresh.json()["id"] != first.json()["id"]
    assert api.service.calls["add"] == 2
    assert (await api.add("a different request is fine now")).json() == fresh.json()


async def test_purge_expired_deletes_only_expired_keys(api: Api, clock: ManualClock) -> None:
    await api.add(key="old")
    clock.advance(timedelta(hours=12))
    young = await api.add(key="young")
    clock.advance(timedelta(hours=12))

    assert await api.service.idempotency.purge_expired() == 1
    assert await api.stored() == 1
    assert (await api.add(key="young")).json() == young.json()
    assert await api.service.idempotency.purge_expired() == 0


async def test_a_request_that_died_holding_its_key_is_taken_over_by_its_retry(
    api: Api, clock: ManualClock
) -> None:
    api.service.gate = asyncio.Event()
    stuck = asyncio.create_task(api.add())  # stands for a request whose process died mid-way
    await asyncio.wait_for(api.service.entered.wait(), 10)
    gate, api.service.gate = api.service.gate, None

    clock.advance(IN_PROGRESS_TIMEOUT - timedelta(seconds=1))
    assert (await api.add()).status_code == 409
    assert_problem(await api.add("another request"), 422, "idempotency-key-reused")
    clock.advance(timedelta(seconds=1))
    retry = await api.add()
    assert retry.status_code == 201
    assert api.service.calls["add"] == 2

    gate.set()
    assert (await stuck).status_code == 201  # it answers its own client, but keeps nothing
    again = await api.add()
    same_response(retry, again)
    assert again.json() == retry.json()


# --- callers ----------------------------------------------------------------------------------------


async def test_the_same_key_from_two_callers_is_two_keys(api: Api) -> None:
    alice = await api.add(user="alice")
    bob = await api.add(user="bob")
    assert alice.status_code == bob.status_code == 201
    assert alice.json()["id"] != bob.json()["id"]
    assert api.service.calls["add"] == 2
    assert (await api.add(user="alice")).json() == alice.json()
    assert (await api.add(user="bob")).json() == bob.json()


async def test_simultaneous_first_uses_run_the_route_once(
    api: Api, empty_database_url: str, tmp_path: Path, clock: ManualClock, events: EventRecorder
) -> None:
    # A second app on the same database stands for another process.
    other = build_container(empty_database_url, tmp_path / "other", clock, events)
    try:
        async with client_for(create_app(other)) as other_http:
            clients = [api.http, other_http]
            headers = {"X-User": "alice", "Idempotency-Key": "race"}
            answers = await asyncio.gather(
                *(clients[i % 2].post(NOTES, json={"text": "once"}, headers=headers) for i in range(16))
            )
        other_service = other.implementations["notes"]
        assert isinstance(other_service, IdempotentNotes)
    finally:
        await other.aclose()

    assert api.service.calls["add"] + other_service.calls["add"] == 1
    assert {a.status_code for a in answers} <= {201, 409}
    created = [a for a in answers if a.status_code == 201]
    assert created
    assert all(a.content == created[0].content for a in created)
    assert [a for a in created if REPLAYED_HEADER.lower() not in a.headers] != []
    assert await api.notes() == 1


# --- documentation ----------------------------------------------------------------------------------


async def test_opted_in_routes_document_the_optional_header(api: Api) -> None:
    paths = api.app.openapi()["paths"]

    def header(operation: dict[str, Any]) -> list[dict[str, Any]]:
        return [p for p in operation.get("parameters", []) if p["name"] == "Idempotency-Key"]

    [documented] = header(paths[NOTES]["post"])
    assert documented["in"] == "header"
    assert documented["required"] is False
    assert "24 hours" in documented["description"]
    assert header(paths[f"{NOTES}/{{note_id}}"]["get"]) == []
