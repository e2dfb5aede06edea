"""The HTTP shell around the modules: problem+json errors, request ids, body limits, probes, docs."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest
import structlog
from fastapi import FastAPI
from sqlalchemy import select
from structlog.testing import capture_logs
from uuid6 import uuid7

from splitstone.kernel import migrations
from splitstone.kernel.app import create_app
from splitstone.kernel.clock import ManualClock
from splitstone.kernel.container import Container
from splitstone.kernel.errors import Conflict
from splitstone.kernel.events import EventRecorder
from splitstone.kernel.http.problems import PROBLEM_CONTENT_TYPE
from splitstone.kernel.messaging.tables import outbox
from splitstone.kernel.migrations import KERNEL_VERSION_TABLE
from tests.kernel.conftest import (
    NOTES_HEAD,
    NOTES_MIGRATIONS,
    NoteAdded,
    build_notes_container,
    client_for,
    migrate_notes,
)
from tests.support.mailbox import free_port

KERNEL_HEAD = migrations.script_directory(migrations.KERNEL_MIGRATIONS).get_current_head()

PROBLEM_FIELDS = {"type", "title", "status", "code", "instance", "request_id"}


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The response is an RFC 9457 problem with every field a client relies on."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_CONTENT_TYPE
    body: dict[str, Any] = response.json()
    assert body.keys() >= PROBLEM_FIELDS, body
    assert body["status"] == status
    assert body["code"] == code
    assert body["type"] == f"/problems/{code}"
    assert body["instance"] == response.request.url.path
    assert body["title"]
    assert body["request_id"] == response.headers["x-request-id"]
    return body


# --- the module's own routes -----------------------------------------------------------------------


async def test_module_routes_are_mounted_and_work(
    notes_client: httpx.AsyncClient, notes_container: Container, events: EventRecorder
) -> None:
    await migrate_notes(notes_container.databases["notes"])
    created = await notes_client.post("/api/v1/notes", json={"text": "hello"})
    assert created.status_code == 201, created.text
    note_id = created.json()["id"]
    fetched = await notes_client.get(f"/api/v1/notes/{note_id}")
    assert fetched.status_code == 200
    assert fetched.json()["text"] == "hello"
    assert [e.aggregate_id for e in events.of_type(NoteAdded)] == [UUID(note_id)]
    async with notes_container.databases["notes"].session() as session:
        in_outbox = (await session.execute(select(outbox.c.event_name, outbox.c.aggregate_id))).all()
    assert in_outbox == [("notes.NoteAdded", UUID(note_id))]  # committed with the note, to be relayed


# --- errors are problems ---------------------------------------------------------------------------


async def test_unknown_route_is_a_404_problem(notes_client: httpx.AsyncClient) -> None:
    body = assert_problem(await notes_client.get("/api/v1/nothing-here"), 404, "not-found")
    assert "/api/v1/nothing-here" in body["detail"]


async def test_wrong_method_is_a_405_problem(notes_client: httpx.AsyncClient) -> None:
    response = await notes_client.delete("/healthz")
    body = assert_problem(response, 405, "method-not-allowed")
    assert body["detail"] == "DELETE is not allowed on /healthz; allowed: GET, HEAD."
    assert response.headers["allow"] == "GET, HEAD"


async def test_405_allow_lists_the_methods_of_every_route_at_the_path(
    notes_client: httpx.AsyncClient,
) -> None:
    # GET /notes/{id} and DELETE /notes/{id} are separate routes; Starlette alone would name only one.
    response = await notes_client.put(f"/api/v1/notes/{uuid7()}")
    assert_problem(response, 405, "method-not-allowed")
    assert response.headers["allow"] == "DELETE, GET, HEAD"


async def test_validation_errors_list_every_field(notes_client: httpx.AsyncClient) -> None:
    response = await notes_client.post("/api/v1/notes", json={"text": ""})
    body = assert_problem(response, 422, "validation-error")
    assert [e["loc"] for e in body["errors"]] == [["body", "text"]]
    assert {"loc", "msg", "type"} <= body["errors"][0].keys()
    assert "body.text" in body["detail"]

    bad_path = assert_problem(await notes_client.get("/api/v1/notes/not-a-uuid"), 422, "validation-error")
    assert bad_path["errors"][0]["loc"] == ["path", "note_id"]


async def test_malformed_json_is_a_422_problem(notes_client: httpx.AsyncClient) -> None:
    response = await notes_client.post(
        "/api/v1/notes", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert_problem(response, 422, "validation-error")


async def test_a_domain_error_keeps_its_status_code_and_extras(notes_client: httpx.AsyncClient) -> None:
    body = assert_problem(await notes_client.get("/api/v1/notes/errors/locked"), 423, "note-locked")
    assert body["title"] == "Note is locked"
    assert body["detail"] == "Note 7 is locked by another editor."
    assert body["note"] == "7"


async def test_a_domain_not_found_subclass(
    notes_client: httpx.AsyncClient, notes_container: Container
) -> None:
    await migrate_notes(notes_container.databases["notes"])
    missing = "01234567-89ab-7def-8123-456789abcdef"
    body = assert_problem(await notes_client.get(f"/api/v1/notes/{missing}"), 404, "note-not-found")
    assert body["detail"] == f"No note {missing}."


async def test_rate_limited_is_429_with_retry_after(notes_client: httpx.AsyncClient) -> None:
    response = await notes_client.get("/api/v1/notes/errors/limited")
    assert_problem(response, 429, "rate-limited")
    assert response.headers["retry-after"] == "17"


async def test_not_authenticated_is_401_with_www_authenticate(notes_client: httpx.AsyncClient) -> None:
    response = await notes_client.get("/api/v1/notes/errors/unauthenticated")
    assert_problem(response, 401, "not-authenticated")
    assert response.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize("authorization", [None, "Bearer ", "Basic Zm9vOmJhcg==", "Bearer wrong"])
async def test_a_bearer_dependency_answers_401_without_a_valid_token(
    notes_client: httpx.AsyncClient, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    response = await notes_client.get("/api/v1/notes/auth/me", headers=headers)
    assert_problem(response, 401, "not-authenticated")
    assert response.headers["www-authenticate"].startswith("Bearer")


async def test_a_bearer_dependency_passes_the_principal(notes_client: httpx.AsyncClient) -> None:
    response = await notes_client.get("/api/v1/notes/auth/me", headers={"Authorization": "Bearer good-token"})
    assert response.status_code == 200
    assert response.json() == {"principal": "alice"}


async def test_an_unexpected_error_is_a_500_problem_that_leaks_nothing(
    notes_client: httpx.AsyncClient,
) -> None:
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
        response = await notes_client.get(
            "/api/v1/notes/errors/crash",
            headers={"X-Request-ID": "crash-1", "traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"},
        )
    body = assert_problem(response, 500, "internal-error")
    assert body["request_id"] == "crash-1"
    [logged] = [entry for entry in logs if entry["event"] == "unhandled error"]
    assert (logged["request_id"], logged["trace_id"]) == ("crash-1", trace_id)  # findable in the logs
    assert "hunter2" not in response.text
    assert "db.internal" not in response.text
    assert "RuntimeError" not in response.text


async def test_a_database_that_cannot_be_reached_is_a_503_problem_with_retry_after(
    tmp_path: Path, clock: ManualClock, events: EventRecorder
) -> None:
    # Nothing listens on the port: every connection is refused, as during a PostgreSQL restart.
    url = f"postgresql+asyncpg://root@127.0.0.1:{free_port()}/nowhere"
    container = build_notes_container(url, tmp_path / "data", clock, events)
    try:
        async with client_for(create_app(container)) as http:
            with capture_logs() as logs:
                response = await http.get(f"/api/v1/notes/{uuid7()}")
    finally:
        await container.aclose()
    body = assert_problem(response, 503, "service-unavailable")
    assert response.headers["retry-after"] == "1"
    assert "127.0.0.1" not in response.text
    assert [entry["log_level"] for entry in logs if entry["event"] == "database unavailable"] == ["warning"]
    assert not [entry for entry in logs if entry["event"] == "unhandled error"]  # an outage, not a bug
    assert body["detail"]


# --- request bodies over the limit -----------------------------------------------------------------


LIMIT = 1024  # the smallest limit settings allow


@pytest.fixture
def limited_app(notes_container: Container) -> FastAPI:
    notes_container.settings.max_request_body_bytes = LIMIT  # read by create_app
    return create_app(notes_container)


async def test_body_over_the_limit_with_content_length_is_413(limited_app: FastAPI) -> None:
    async with client_for(limited_app) as client:
        response = await client.post("/api/v1/notes/echo", content=b"x" * (LIMIT + 1))
        assert response.request.headers["content-length"] == str(LIMIT + 1)
        body = assert_problem(response, 413, "request-too-large")
        assert str(LIMIT) in body["detail"]

        fits = await client.post("/api/v1/notes/echo", content=b"x" * LIMIT)
        assert fits.status_code == 200
        assert fits.json() == {"received": LIMIT}


async def test_streamed_body_over_the_limit_without_content_length_is_413(limited_app: FastAPI) -> None:
    async def chunks(total: int) -> AsyncIterator[bytes]:
        sent = 0
        while sent < total:
            piece = min(300, total - sent)
            sent += piece
            yield b"y" * piece

    async with client_for(limited_app) as client:
        response = await client.post("/api/v1/notes/echo", content=chunks(LIMIT * 3))
        assert "content-length" not in response.request.headers
        assert response.request.headers["transfer-encoding"] == "chunked"
        assert_problem(response, 413, "request-too-large")

        fits = await client.post("/api/v1/notes/echo", content=chunks(LIMIT))
        assert fits.status_code == 200
        assert fits.json() == {"received": LIMIT}

        # A JSON route parses through FastAPI's own body reader: same answer.
        json_route = await client.post(
            "/api/v1/notes",
            content=chunks(LIMIT * 2),
            headers={"content-type": "application/json"},
        )
        assert_problem(json_route, 413, "request-too-large")


# --- request ids -----------------------------------------------------------------------------------


async def test_a_valid_request_id_is_echoed(notes_client: httpx.AsyncClient) -> None:
    response = await notes_client.get("/healthz", headers={"X-Request-ID": "abc-123.4:5_6"})
    assert response.headers["x-request-id"] == "abc-123.4:5_6"

    problem = await notes_client.get("/nope", headers={"X-Request-ID": "trace-42"})
    assert problem.headers["x-request-id"] == "trace-42"
    assert problem.json()["request_id"] == "trace-42"


@pytest.mark.parametrize(
    "given",
    [None, "", "has spaces", "x" * 129, "semi;colon", "new\u00e9line"],
    ids=["absent", "empty", "spaces", "too-long", "semicolon", "non-ascii"],
)
async def test_a_missing_or_invalid_request_id_is_replaced(
    notes_client: httpx.AsyncClient, given: str | None
) -> None:
    headers = [] if given is None else [(b"x-request-id", given.encode())]
    first = await notes_client.get("/healthz", headers=headers)
    second = await notes_client.get("/healthz", headers=headers)
    generated = first.headers["x-request-id"]
    assert generated != given
    assert UUID(generated).version == 7
    assert second.headers["x-request-id"] != generated  # one per request


# --- probes and docs -------------------------------------------------------------------------------


async def test_healthz(notes_client: httpx.AsyncClient) -> None:
    response = await notes_client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz_answers_503_until_both_histories_are_migrated_then_200(
    empty_database_url: str, tmp_path: Path, clock: ManualClock, events: EventRecorder
) -> None:
    """A module is ready when the kernel's history (its outbox, inbox, jobs) and its own are at head."""
    container = build_notes_container(empty_database_url, tmp_path / "data", clock, events)
    db = container.databases["notes"]
    try:
        async with client_for(create_app(container)) as client:
            body = assert_problem(await client.get("/readyz"), 503, "not-ready")
            assert body["modules"]["notes"] == (
                f"kernel history not migrated (at None, head {KERNEL_HEAD}); "
                f"module history not migrated (at None, head {NOTES_HEAD})"
            )
            assert "notes" in body["detail"]

            # The module's own history alone is not enough: the kernel's tables are missing.
            await migrations.upgrade(db, NOTES_MIGRATIONS)
            body = assert_problem(await client.get("/readyz"), 503, "not-ready")
            assert body["modules"]["notes"] == f"kernel history not migrated (at None, head {KERNEL_HEAD})"

            await migrations.downgrade(db, NOTES_MIGRATIONS)
            await migrations.upgrade(db, migrations.KERNEL_MIGRATIONS, version_table=KERNEL_VERSION_TABLE)
            body = assert_problem(await client.get("/readyz"), 503, "not-ready")
            assert body["modules"]["notes"] == f"module history not migrated (at None, head {NOTES_HEAD})"

            await migrate_notes(db)
            ready = await client.get("/readyz")
            assert ready.status_code == 200, ready.text
            assert ready.json() == {"status": "ready", "modules": {"notes": "ok"}}
    finally:
        await container.aclose()


async def test_readyz_is_503_when_the_database_does_not_answer(
    tmp_path: Path, clock: ManualClock, events: EventRecorder
) -> None:
    url = "postgresql+asyncpg://nobody@127.0.0.1:9/nothing"  # port 9 (discard): nothing listens
    container = build_notes_container(url, tmp_path / "data", clock, events)
    try:
        async with client_for(create_app(container)) as client:
            body = assert_problem(await client.get("/readyz"), 503, "not-ready")
            assert body["modules"]["notes"].startswith("database unavailable")
    finally:
        await container.aclose()


async def test_openapi_and_docs(notes_client: httpx.AsyncClient) -> None:
    spec = await notes_client.get("/openapi.json")
    assert spec.status_code == 200
    document = json.loads(spec.text)
    assert document["info"]["title"] == "splitstone"
    assert {"/healthz", "/readyz", "/api/v1/notes", "/api/v1/notes/{note_id}"} <= document["paths"].keys()
    assert "Problem" in document["components"]["schemas"]

    docs = await notes_client.get("/docs")
    assert docs.status_code == 200
    assert docs.headers["content-type"].startswith("text/html")
    assert "/openapi.json" in docs.text


@pytest.mark.parametrize("member", ["type", "title", "status", "instance", "code", "request_id"])
def test_an_extra_may_not_shadow_a_problem_member(member: str) -> None:
    with pytest.raises(ValueError, match=member):
        Conflict("clash", **{member: "x"})
    assert Conflict("fine", current_status="x").extra == {"current_status": "x"}
