"""Durable jobs: scheduled with the state change, deduplicated by key, run when due (never before),
retried with backoff, dead-lettered, and each run's writes committed with its `done` mark."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import BaseModel
from sqlalchemy import insert, select
from structlog.testing import capture_logs
from uuid6 import uuid7

from splitstone.kernel.messaging.jobs import DEAD, DONE, PENDING, Job, job
from tests.kernel.messaging.helpers import START, EventApp, decode_payloads, event_app
from tests.support.eventapp import Tallied, Tally, applied

JOB_MAX_ATTEMPTS = 3


async def job_runs(app: EventApp) -> list[object]:
    """The ids of the jobs whose effect (a row in `applied`) is committed."""
    async with app.db("tally").session() as connection:
        query = select(applied.c.event_id).where(applied.c.kind == "job")
        return list((await connection.execute(query)).scalars())


def retry_base(app: EventApp) -> timedelta:
    return timedelta(seconds=app.settings.event_retry_base_seconds)


async def test_a_job_exists_only_if_the_transaction_that_scheduled_it_commits(
    empty_database_url: str, tmp_path: Path
) -> None:
    async with event_app(empty_database_url, tmp_path) as app:
        factory = app.container.units_of_work["tally"]

        async def abandoned_use_case() -> None:
            async with factory() as uow:
                uow.schedule(job("tally.recount", {"fail": False}, run_at=START))
                raise RuntimeError("the use case failed")

        with pytest.raises(RuntimeError, match="use case failed"):
            await abandoned_use_case()
        assert await app.jobs() == []

        run_at = START + timedelta(hours=2)
        await app.tally.schedule(run_at)
        [row] = await app.jobs()
        assert (row["kind"], json.loads(row["payload"]), row["idempotency_key"]) == (
            "tally.recount",
            {"fail": False},
            None,
        )
        assert (row["status"], row["attempts"], row["max_attempts"]) == (
            PENDING,
            0,
            app.settings.job_max_attempts,
        )
        assert (row["run_at"], row["next_attempt_at"], row["created_at"]) == (run_at, run_at, START)
        assert (row["finished_at"], row["last_error"]) == (None, None)


async def test_an_idempotency_key_makes_scheduling_again_a_no_op(
    empty_database_url: str, tmp_path: Path
) -> None:
    async with event_app(empty_database_url, tmp_path) as app:
        first_run = START + timedelta(minutes=5)
        await app.tally.schedule(first_run, "nightly")
        await app.tally.schedule(first_run + timedelta(hours=1), "nightly")  # same key: ignored
        async with app.container.units_of_work["tally"]() as uow:  # twice in one transaction too
            uow.schedule(job("tally.recount", {}, run_at=START, idempotency_key="weekly"))
            uow.schedule(job("tally.recount", {}, run_at=START, idempotency_key="weekly"))
            await uow.commit()
        await app.tally.schedule(START)  # without a key, every schedule is a job
        await app.tally.schedule(START)

        rows = await app.jobs()
        assert sorted(str(r["idempotency_key"]) for r in rows) == ["None", "None", "nightly", "weekly"]
        [nightly] = [r for r in rows if r["idempotency_key"] == "nightly"]
        assert nightly["run_at"] == first_run  # the first schedule stands

        app.clock.set(first_run + timedelta(hours=2))
        await app.worker.settle()
        assert len(await job_runs(app)) == 4


async def test_a_job_is_not_run_before_its_time(empty_database_url: str, tmp_path: Path) -> None:
    async with event_app(empty_database_url, tmp_path) as app:
        run_at = START + timedelta(hours=1)
        await app.tally.schedule(run_at)
        await app.worker.settle()
        [row] = await app.jobs()
        assert (row["status"], row["attempts"]) == (PENDING, 0)

        app.clock.set(run_at - timedelta(microseconds=1))
        await app.worker.settle()
        assert app.tally.handled_job_payloads == []

        app.clock.set(run_at)
        await app.worker.settle()
        [row] = await app.jobs()
        assert (row["status"], row["attempts"], row["finished_at"]) == (DONE, 1, run_at)
        assert app.tally.handled_job_payloads == [{"fail": False}]
        assert await job_runs(app) == [row["id"]]

        app.clock.advance(timedelta(days=1))
        await app.worker.settle()  # a done job is not run again
        assert len(app.tally.handled_job_payloads) == 1


async def test_a_failing_job_is_retried_with_backoff_then_dead(
    empty_database_url: str, tmp_path: Path
) -> None:
    async with event_app(empty_database_url, tmp_path, job_max_attempts=JOB_MAX_ATTEMPTS) as app:
        await app.tally.schedule(START, fail=True)
        base = retry_base(app)
        with capture_logs() as logs:
            await app.worker.settle()
            [row] = await app.jobs()
            assert (row["status"], row["attempts"]) == (PENDING, 1)
            assert row["last_error"] == "RuntimeError: job failed on purpose"
            assert START + base * 0.1 <= row["next_attempt_at"] <= START + base

            await app.worker.settle()  # not due: not run
            assert len(app.tally.handled_job_payloads) == 1

            app.clock.set(row["next_attempt_at"])
            await app.worker.settle()
            [row] = await app.jobs()
            assert (row["status"], row["attempts"]) == (PENDING, 2)
            assert app.clock.now() + base * 0.2 <= row["next_attempt_at"] <= app.clock.now() + base * 2

            app.clock.set(row["next_attempt_at"])
            await app.worker.settle()
        [row] = await app.jobs()
        assert (row["status"], row["attempts"], row["finished_at"]) == (DEAD, 3, app.clock.now())
        failures = [e for e in logs if e["event"] == "job failed"]
        assert [(f["attempt"], f["dead"]) for f in failures] == [(1, False), (2, False), (3, True)]
        assert failures[0]["kind"] == "tally.recount"

        app.clock.advance(timedelta(days=1))
        await app.worker.settle()  # dead stays dead
        assert len(app.tally.handled_job_payloads) == JOB_MAX_ATTEMPTS
        assert await job_runs(app) == []


async def test_a_job_may_set_its_own_number_of_attempts(empty_database_url: str, tmp_path: Path) -> None:
    async with event_app(empty_database_url, tmp_path, job_max_attempts=JOB_MAX_ATTEMPTS) as app:
        async with app.container.units_of_work["tally"]() as uow:
            uow.schedule(job("tally.recount", {"fail": True}, run_at=START, max_attempts=1))
            uow.schedule(job("tally.unknown", {}, run_at=START, max_attempts=1))
            await uow.commit()
        await app.worker.settle()
        rows = {r["kind"]: r for r in await app.jobs()}
        assert {kind: (r["status"], r["attempts"]) for kind, r in rows.items()} == {
            "tally.recount": (DEAD, 1),
            "tally.unknown": (DEAD, 1),
        }
        assert (
            rows["tally.unknown"]["last_error"] == "no handler for job kind 'tally.unknown' in module tally"
        )


async def test_a_job_handlers_writes_commit_with_its_done_mark(
    empty_database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its effect, the events it publishes and its `done` mark: one transaction, or none of them."""

    async def run_job(self: Tally, current: Job) -> None:
        async with self._uow() as uow:
            await uow.session.execute(insert(applied).values(row_id=uuid7(), event_id=current.id, kind="job"))
            uow.publish(Tallied(occurred_at=self._clock.now(), aggregate_id=current.id, event_id=current.id))
            await uow.commit()
        if current.attempt == 1:
            raise RuntimeError("failed after its writes")

    monkeypatch.setattr(Tally, "run_job", run_job)
    async with event_app(empty_database_url, tmp_path) as app:
        await app.tally.schedule(START)
        await app.job_runner().drain()
        [row] = await app.jobs()
        assert (row["status"], row["attempts"]) == (PENDING, 1)
        assert await job_runs(app) == []
        assert await app.outbox("tally") == []
        assert app.recorder.of_type(Tallied) == []

        app.clock.set(row["next_attempt_at"])
        assert await app.job_runner().drain() == 1
        [row] = await app.jobs()
        assert (row["status"], row["attempts"]) == (DONE, 2)
        assert await job_runs(app) == [row["id"]]
        assert [e.event_id for e in decode_payloads(await app.outbox("tally"), Tallied)] == [row["id"]]  # type: ignore[attr-defined]
        assert [e.event_id for e in app.recorder.of_type(Tallied)] == [row["id"]]


async def test_two_runners_run_each_job_once(empty_database_url: str, tmp_path: Path) -> None:
    jobs = 30
    async with (
        event_app(empty_database_url, tmp_path / "a") as first,
        event_app(empty_database_url, tmp_path / "b", prepare=False) as second,
    ):
        async with first.container.units_of_work["tally"]() as uow:
            for n in range(jobs):
                uow.schedule(job("tally.recount", {"n": n}, run_at=START))
            await uow.commit()
        ran = await asyncio.gather(first.job_runner().drain(), second.job_runner().drain())
        assert sum(ran) == jobs
        runs = await job_runs(first)
        assert len(runs) == len(set(runs)) == jobs
        assert {r["status"] for r in await first.jobs()} == {DONE}


class Report(BaseModel):
    org: str
    pages: int


def test_job_builds_the_scheduled_work() -> None:
    at = datetime(2030, 5, 1, 9, tzinfo=UTC)
    from_model = job("tally.report", Report(org="acme", pages=3), run_at=at, idempotency_key="r-1")
    assert (from_model.kind, from_model.run_at, from_model.idempotency_key) == ("tally.report", at, "r-1")
    assert json.loads(from_model.payload) == {"org": "acme", "pages": 3}
    assert from_model.max_attempts is None
    assert json.loads(job("tally.report", {"at": at}, run_at=at, max_attempts=2).payload) == {
        "at": "2030-05-01 09:00:00+00:00"
    }
    with pytest.raises(ValueError, match="timezone-aware"):
        job("tally.report", {}, run_at=datetime(2030, 5, 1, 9))


async def test_jobs_wait_in_their_modules_own_table(empty_database_url: str, tmp_path: Path) -> None:
    async with event_app(empty_database_url, tmp_path) as app:
        await app.tally.schedule(START)
        assert len(await app.jobs("tally")) == 1
        assert await app.jobs("ledger") == []
