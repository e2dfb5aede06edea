"""The processes and the operator commands around events: `serve --no-worker`, `worker`, `events ...`,
`jobs ...`, and the app's lifespan running the worker.

The CLI builds the real modules (`bootstrap.MODULES`), so its tests use auth: its events come from a
registration; its dead letters and dead jobs are written into auth's inbox and job table directly,
as a handler or job that gave up would have left them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest
from fastapi import APIRouter, FastAPI
from sqlalchemy import insert, select
from typer.testing import CliRunner
from uuid6 import uuid7

from splitstone import bootstrap
from splitstone.cli import app
from splitstone.kernel.app import API_PREFIX, create_app
from splitstone.kernel.clock import ManualClock
from splitstone.kernel.container import Container
from splitstone.kernel.db import ModuleDatabase
from splitstone.kernel.messaging.tables import inbox, jobs, outbox
from splitstone.kernel.module import order_modules
from splitstone.kernel.settings import Environment, Settings
from tests.support import eventapp

runner = CliRunner()
PASSWORD = "tangerine quarry lantern 42"
# The order every command lists modules in: dependencies first, as the container builds them.
PRODUCT_MODULES = [m.name for m in order_modules(bootstrap.MODULES)]


@pytest.fixture
def operator_env(database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("SPLITSTONE_DATABASE_URL", database_url)
    monkeypatch.setenv("SPLITSTONE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("SPLITSTONE_ENV", "test")
    monkeypatch.delenv("SPLITSTONE_RUN_WORKER", raising=False)  # restored after serve sets it
    return database_url


def invoke(*args: str) -> Any:
    return runner.invoke(app, list(args))


def run(call: Callable[[ModuleDatabase], Awaitable[Any]], url: str) -> Any:
    """Run `call` with auth's database handle (for set-up and checks outside the CLI)."""

    async def go() -> Any:
        db = ModuleDatabase.connect("auth", url)
        try:
            return await call(db)
        finally:
            await db.dispose()

    return asyncio.run(go())


def add_dead_letter(url: str, *, handler: str = "auth:auth.UserRegistered") -> UUID:
    event_id = uuid7()
    now = datetime.now(UTC)

    async def write(db: ModuleDatabase) -> None:
        async with db.write_engine.begin() as conn:
            await conn.execute(
                insert(inbox).values(
                    event_id=event_id,
                    handler=handler,
                    event_name="auth.UserRegistered",
                    event_version=1,
                    aggregate_id=uuid7(),
                    occurred_at=now - timedelta(hours=1),
                    payload="{}",
                    status="dead",
                    attempts=10,
                    received_at=now - timedelta(hours=1),
                    next_attempt_at=now + timedelta(minutes=5),
                    last_error="SMTPServerDisconnected: Connection unexpectedly closed\nTraceback ...",
                )
            )

    run(write, url)
    return event_id


def add_dead_job(url: str, *, kind: str = "auth.purge-sessions") -> UUID:
    job_id = uuid7()
    now = datetime.now(UTC)

    async def write(db: ModuleDatabase) -> None:
        async with db.write_engine.begin() as conn:
            await conn.execute(
                insert(jobs).values(
                    id=job_id,
                    kind=kind,
                    idempotency_key=None,
                    payload="{}",
                    status="dead",
                    attempts=3,
                    max_attempts=3,
                    run_at=now - timedelta(hours=2),
                    next_attempt_at=now + timedelta(minutes=5),
                    created_at=now - timedelta(hours=2),
                    finished_at=now - timedelta(hours=1),
                    last_error="TimeoutError: the database did not answer",
                )
            )

    run(write, url)
    return job_id


def inbox_row(url: str, event_id: UUID) -> dict[str, Any]:
    async def read(db: ModuleDatabase) -> dict[str, Any]:
        async with db.session() as conn:
            row = (await conn.execute(select(inbox).where(inbox.c.event_id == event_id))).mappings().one()
        return dict(row)

    result: dict[str, Any] = run(read, url)
    return result


def job_row(url: str, job_id: UUID) -> dict[str, Any]:
    async def read(db: ModuleDatabase) -> dict[str, Any]:
        async with db.session() as conn:
            return dict((await conn.execute(select(jobs).where(jobs.c.id == job_id))).mappings().one())

    result: dict[str, Any] = run(read, url)
    return result


def unpublished(url: str) -> int:
    async def count(db: ModuleDatabase) -> int:
        async with db.session() as conn:
            query = select(outbox.c.event_id).where(outbox.c.published_at.is_(None))
            return len((await conn.execute(query)).all())

    result: int = run(count, url)
    return result


def register_user(email: str) -> None:
    """A registration through auth's service: it commits an `auth.UserRegistered` event to the outbox."""

    async def go() -> None:
        container = bootstrap.build_container(Settings())
        try:
            service: Any = container.implementations["auth"]
            await service.accounts.register(email=email, password=PASSWORD, display_name="Op", ip=None)
        finally:
            await container.aclose()

    asyncio.run(go())


# --- events status --------------------------------------------------------------------------------


def test_events_status_shows_an_unpublished_event_as_a_table_and_as_json(operator_env: str) -> None:
    register_user("status@example.com")

    table = invoke("events", "status")
    assert table.exit_code == 0, table.output
    assert "Unpublished" in table.output
    assert "auth" in table.output

    result = invoke("events", "status", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [m["module"] for m in data["modules"]] == PRODUCT_MODULES
    auth, *others = data["modules"]
    assert all(m["outbox"]["unpublished"] == 0 for m in others)
    assert auth["outbox"]["unpublished"] == 1
    assert auth["outbox"]["lag_seconds"] >= 0
    assert auth["outbox"]["failing"] == 0
    assert auth["inbox"] == {
        "pending": 0,
        "retrying": 0,
        "done": 0,
        "dead": 0,
        "discarded": 0,
        "lag_seconds": None,
    }
    assert auth["jobs"]["dead"] == 0


def test_events_status_on_an_unmigrated_database_says_so(
    empty_database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SPLITSTONE_DATABASE_URL", empty_database_url)
    monkeypatch.setenv("SPLITSTONE_DATA_DIR", str(tmp_path / "data"))
    result = invoke("events", "status")
    assert result.exit_code == 2
    assert "is the database up and migrated?" in result.stderr


# --- events dead ----------------------------------------------------------------------------------


def test_dead_letters_are_listed_with_their_error_and_times(operator_env: str) -> None:
    first = add_dead_letter(operator_env)
    second = add_dead_letter(operator_env)

    listed = invoke("events", "dead", "list")
    assert listed.exit_code == 0, listed.output
    assert str(first) in listed.output
    assert str(second) in listed.output
    assert "auth:auth.UserRegistered" in listed.output
    assert "SMTPServerDisconnected: Connection unexpectedly closed" in listed.output
    assert "Traceback" not in listed.output  # shortened to its first line

    limited = invoke("events", "dead", "list", "--json", "--limit", "1", "--module", "auth")
    assert limited.exit_code == 0, limited.output
    data = json.loads(limited.stdout)
    assert data["total"] == 2
    [item] = data["items"]
    assert item["event_id"] in {str(first), str(second)}
    assert item["status"] == "dead"
    assert item["attempts"] == 10
    assert item["last_error"].startswith("SMTPServerDisconnected")

    unknown = invoke("events", "dead", "list", "--module", "payroll")
    assert unknown.exit_code == 2
    assert f"no module named 'payroll' (modules: {', '.join(PRODUCT_MODULES)})" in unknown.stderr


def test_dead_retry_sets_the_letter_back_to_pending_once(operator_env: str) -> None:
    event_id = add_dead_letter(operator_env)

    retried = invoke("events", "dead", "retry", str(event_id))
    assert retried.exit_code == 0, retried.output
    assert f"set back to pending: auth:auth.UserRegistered for event {event_id}" in retried.stdout
    assert "1 dead letter(s) set back to pending" in retried.stdout
    row = inbox_row(operator_env, event_id)
    assert (row["status"], row["attempts"]) == ("pending", 0)
    assert row["next_attempt_at"] <= datetime.now(UTC)
    assert row["last_error"].startswith("SMTPServerDisconnected")  # kept for history

    again = invoke("events", "dead", "retry", str(event_id))
    assert again.exit_code == 1
    assert f"event {event_id} has no dead letter to change: auth:auth.UserRegistered in auth is pending" in (
        again.stderr
    )


def test_dead_retry_refuses_what_matches_nothing_or_is_ambiguous(operator_env: str) -> None:
    event_id = add_dead_letter(operator_env)
    missing = uuid7()

    unknown = invoke("events", "dead", "retry", str(missing))
    assert unknown.exit_code == 1
    assert f"event {missing} is not in any inbox" in unknown.stderr

    other_handler = invoke("events", "dead", "retry", str(event_id), "--handler", "auth:auth.Other")
    assert other_handler.exit_code == 1
    assert "is not in handler auth:auth.Other" in other_handler.stderr

    nothing_named = invoke("events", "dead", "retry")
    assert nothing_named.exit_code == 2
    assert "give an EVENT_ID, or --all" in nothing_named.stderr

    both = invoke("events", "dead", "retry", str(event_id), "--all")
    assert both.exit_code == 2
    assert "not both" in both.stderr

    malformed = invoke("events", "dead", "retry", "not-a-uuid")
    assert malformed.exit_code == 2

    assert inbox_row(operator_env, event_id)["status"] == "dead"  # none of that changed anything


def test_dead_retry_all_and_discard(operator_env: str) -> None:
    kept = add_dead_letter(operator_env)
    dropped = add_dead_letter(operator_env, handler="auth:auth.MemberInvited")

    discarded = invoke("events", "dead", "discard", str(dropped), "--handler", "auth:auth.MemberInvited")
    assert discarded.exit_code == 0, discarded.output
    assert "1 dead letter(s) discarded" in discarded.stdout
    row = inbox_row(operator_env, dropped)
    assert row["status"] == "discarded"
    assert row["handled_at"] is not None
    assert row["attempts"] == 10

    twice = invoke("events", "dead", "discard", str(dropped))
    assert twice.exit_code == 1
    assert "is discarded" in twice.stderr

    every = invoke("events", "dead", "retry", "--all", "--module", "auth")
    assert every.exit_code == 0, every.output
    assert "1 dead letter(s) set back to pending" in every.stdout  # the discarded one stays discarded
    assert inbox_row(operator_env, kept)["status"] == "pending"
    assert inbox_row(operator_env, dropped)["status"] == "discarded"

    none_left = invoke("events", "dead", "retry", "--all")
    assert none_left.exit_code == 1
    assert "no dead letters" in none_left.stderr
    listed = invoke("events", "dead", "list")
    assert listed.exit_code == 0
    assert "no dead letters" in listed.stdout


# --- jobs -----------------------------------------------------------------------------------------


def test_jobs_status_and_dead_jobs(operator_env: str) -> None:
    retried_id = add_dead_job(operator_env)
    discarded_id = add_dead_job(operator_env, kind="auth.send-digest")

    status = invoke("jobs", "status", "--json")
    assert status.exit_code == 0, status.output
    auth, *others = json.loads(status.stdout)["modules"]
    assert [m["module"] for m in [auth, *others]] == PRODUCT_MODULES
    assert auth["jobs"]["dead"] == 2
    table = invoke("jobs", "status")
    assert table.exit_code == 0, table.output
    assert "2 dead job(s)" in table.stdout

    listed = invoke("jobs", "dead", "list")
    assert listed.exit_code == 0, listed.output
    assert str(retried_id) in listed.stdout
    assert "auth.send-digest" in listed.stdout
    assert "3/3" in listed.stdout
    data = json.loads(invoke("jobs", "dead", "list", "--json").stdout)
    assert data["total"] == 2
    assert {i["kind"] for i in data["items"]} == {"auth.purge-sessions", "auth.send-digest"}

    retried = invoke("jobs", "dead", "retry", str(retried_id))
    assert retried.exit_code == 0, retried.output
    assert f"set back to pending: job {retried_id} (auth.purge-sessions) in auth" in retried.stdout
    row = job_row(operator_env, retried_id)
    assert (row["status"], row["attempts"], row["finished_at"]) == ("pending", 0, None)
    assert row["last_error"] == "TimeoutError: the database did not answer"

    wrong_kind = invoke("jobs", "dead", "discard", str(discarded_id), "--kind", "auth.other")
    assert wrong_kind.exit_code == 1
    assert "is not a dead job of kind auth.other: auth.send-digest in auth is dead" in wrong_kind.stderr
    discarded = invoke("jobs", "dead", "discard", "--all", "--kind", "auth.send-digest")
    assert discarded.exit_code == 0, discarded.output
    assert job_row(operator_env, discarded_id)["status"] == "discarded"

    again = invoke("jobs", "dead", "retry", str(retried_id))
    assert again.exit_code == 1
    assert "is pending" in again.stderr
    unknown = invoke("jobs", "dead", "retry", str(uuid7()))
    assert unknown.exit_code == 1
    assert "no job" in unknown.stderr
    assert invoke("jobs", "dead", "discard").exit_code == 2
    assert invoke("jobs", "dead", "retry", "--all").exit_code == 1


# --- serve and the app's lifespan -----------------------------------------------------------------


def test_serve_no_worker_builds_the_app_without_the_worker(
    operator_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[dict[str, Any]] = []

    def fake_run(target: str, **options: Any) -> None:
        calls.append({"target": target, "run_worker": os.environ.get("SPLITSTONE_RUN_WORKER"), **options})

    monkeypatch.setattr("splitstone.cli.uvicorn.run", fake_run)
    result = invoke("serve", "--no-worker")
    assert result.exit_code == 0, result.output
    [call] = calls
    assert call["target"] == "splitstone.bootstrap:create_app"
    assert call["factory"] is True
    assert call["run_worker"] == "false"
    assert Settings().run_worker is False  # what the factory reads in uvicorn's process

    os.environ.pop("SPLITSTONE_RUN_WORKER")
    assert invoke("serve").exit_code == 0
    assert calls[-1]["run_worker"] is None  # no flag: the setting decides (default true)


def test_the_bootstrap_app_follows_the_run_worker_setting(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'db' / 'splitstone.db'}"
    for run_worker in (True, False):
        settings = Settings(
            env=Environment.TEST, data_dir=tmp_path / "data", database_url=url, run_worker=run_worker
        )
        built = bootstrap.create_app(settings)
        assert built.state.run_worker is run_worker
        asyncio.run(built.state.container.aclose())


def _ledger_router(ledger: eventapp.Ledger) -> APIRouter:
    router = APIRouter(prefix=f"{API_PREFIX}/ledger")

    @router.post("/entries", status_code=201)
    async def post(amount: int) -> dict[str, str]:
        return {"id": str(await ledger.post(amount))}

    return router


@pytest.fixture
async def ledger_container(empty_database_url: str, tmp_path: Path) -> AsyncIterator[Container]:
    """The event test modules, with an HTTP route on the ledger that commits a `ledger.Posted`."""
    settings = eventapp.settings_for(empty_database_url).model_copy(update={"data_dir": tmp_path / "data"})
    modules = (dataclasses.replace(eventapp.ledger, router=_ledger_router), eventapp.tally)
    container = Container.build(settings, modules, clock=ManualClock(datetime(2030, 1, 1, tzinfo=UTC)))
    try:
        await eventapp.prepare(container)
        yield container
    finally:
        await container.aclose()


async def _post_entry(app: FastAPI, amount: int) -> None:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        response = await http.post(f"{API_PREFIX}/ledger/entries", params={"amount": amount})
    assert response.status_code == 201, response.text


async def _backlog(container: Container) -> int:
    async with container.databases["ledger"].session() as conn:
        query = select(outbox.c.event_id).where(outbox.c.published_at.is_(None))
        return len((await conn.execute(query)).all())


async def test_the_app_runs_the_worker_during_its_lifespan(ledger_container: Container) -> None:
    app = create_app(ledger_container, run_worker=True)
    tally: Any = ledger_container.implementations["tally"]
    async with app.router.lifespan_context(app):
        assert app.state.worker is not None
        await _post_entry(app, 5)
        for _ in range(200):  # ten seconds at most
            if await _backlog(ledger_container) == 0 and await tally.total() == 5:
                break
            await asyncio.sleep(0.05)
        assert await _backlog(ledger_container) == 0
        assert await tally.total() == 5
    assert app.state.worker is None


async def test_the_app_without_the_worker_only_writes_the_outbox(ledger_container: Container) -> None:
    app = create_app(ledger_container, run_worker=False)
    tally: Any = ledger_container.implementations["tally"]
    async with app.router.lifespan_context(app):
        assert app.state.worker is None
        await _post_entry(app, 5)
        await asyncio.sleep(0.6)  # three of the worker's poll intervals, had it been running
        assert await _backlog(ledger_container) == 1
        assert await tally.total() == 0


# --- splitstone worker, as a process --------------------------------------------------------------


def test_the_worker_process_relays_and_stops_cleanly_on_sigterm(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'db' / 'splitstone.db'}"
    env = {
        "SPLITSTONE_DATABASE_URL": url,
        "SPLITSTONE_DATA_DIR": str(tmp_path / "data"),
        "SPLITSTONE_ENV": "test",
        "SPLITSTONE_WORKER_POLL_SECONDS": "0.2",
        "SPLITSTONE_LOG_FORMAT": "json",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("SPLITSTONE_EVENT_TRANSPORT", raising=False)
    assert invoke("db", "upgrade").exit_code == 0
    register_user("worker@example.com")
    assert unpublished(url) == 1

    process = subprocess.Popen(
        [sys.executable, "-c", "from splitstone.cli import main; main()", "worker"],
        cwd=tmp_path,
        env=os.environ.copy(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while unpublished(url) and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert process.poll() is None, process.communicate()[1]
        assert unpublished(url) == 0

        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=25)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, stderr
    # Worker.stop gives its loops STOP_TIMEOUT_SECONDS (10 s) before it gives up on them; a loaded two-core
    # machine once took 10.4 s to end a SQLite call in flight. What matters is that it ends, not hangs.
    assert time.monotonic() - started < 20
    logged = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    messages = [entry["event"] for entry in logged]
    assert "worker running" in messages
    stopping = next(entry for entry in logged if entry["event"] == "worker stopping")
    assert stopping["signal"] == "SIGTERM"
    assert messages[-1] == "worker stopped"
