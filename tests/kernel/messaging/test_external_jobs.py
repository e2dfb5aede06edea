"""External jobs: leased, run concurrently outside any transaction, retried as the handler asks,
and run again when a runner dies mid-job (at-least-once)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import insert, select
from uuid6 import uuid7

from splitstone.kernel.messaging.jobs import DEAD, DONE, PENDING, Job, JobHandler, JobRunner, RetryJob, job
from splitstone.kernel.messaging.retry import RetryPolicy
from splitstone.kernel.messaging.signals import Wakeup
from tests.kernel.messaging.helpers import START, EventApp, event_app
from tests.support.eventapp import applied

LEASE = timedelta(minutes=2)


@pytest.fixture
async def app(empty_database_url: str, tmp_path: Path) -> AsyncIterator[EventApp]:
    async with event_app(empty_database_url, tmp_path) as built:
        yield built


def runner(
    app: EventApp,
    external: Mapping[str, JobHandler],
    *,
    transactional: Mapping[str, JobHandler] | None = None,
    concurrency: int = 4,
) -> JobRunner:
    return JobRunner(
        app.db("tally"),
        app.container.units_of_work["tally"],
        transactional or {},
        app.clock,
        Wakeup(),
        retry=RetryPolicy(max_attempts=3, base_delay=timedelta(seconds=10), max_delay=timedelta(minutes=1)),
        external=external,
        concurrency=concurrency,
        lease=LEASE,
    )


async def schedule(app: EventApp, kind: str, payload: dict[str, object], *, attempts: int = 3) -> None:
    async with app.container.units_of_work["tally"]() as uow:
        uow.schedule(job(kind, payload, run_at=app.clock.now(), max_attempts=attempts))
        await uow.commit()


async def write_effect(app: EventApp, note: str) -> None:
    """A write of the handler's own, in its own unit of work (it would wait forever on a held lock)."""
    async with app.container.units_of_work["tally"]() as uow:
        await uow.session.execute(insert(applied).values(row_id=uuid7(), event_id=uuid7(), kind=note))
        await uow.commit()


async def effects(app: EventApp) -> list[str]:
    async with app.db("tally").session() as connection:
        return sorted((await connection.execute(select(applied.c.kind))).scalars())


async def test_handlers_run_concurrently_and_outside_any_transaction(app: EventApp) -> None:
    both_running = asyncio.Barrier(2)
    seen: list[tuple[int, int, bool]] = []

    async def send(current: Job) -> None:
        seen.append((current.payload["n"], current.attempt, current.is_last_attempt))
        # Each waits for the other: only concurrent handlers get past this.
        await asyncio.wait_for(both_running.wait(), 5)
        # On SQLite a transaction held by the runner would block this write until the timeout.
        await asyncio.wait_for(write_effect(app, f"sent-{current.payload['n']}"), 5)

    await schedule(app, "tally.send", {"n": 1})
    await schedule(app, "tally.send", {"n": 2})

    assert await runner(app, {"tally.send": send}).drain() == 2

    assert sorted(seen) == [(1, 1, False), (2, 1, False)]
    assert await effects(app) == ["sent-1", "sent-2"]
    assert [(r["status"], r["attempts"], r["last_error"]) for r in await app.jobs()] == [
        (DONE, 1, None),
        (DONE, 1, None),
    ]


async def test_a_failure_is_retried_after_the_delay_the_handler_chose_then_dead(app: EventApp) -> None:
    attempts: list[tuple[int, bool]] = []

    async def flaky(current: Job) -> None:
        attempts.append((current.attempt, current.is_last_attempt))
        if current.attempt == 1:
            raise RetryJob("receiver answered 503", after=timedelta(hours=2))
        raise ConnectionError("connection refused")

    jobs_runner = runner(app, {"tally.send": flaky})
    await schedule(app, "tally.send", {})

    await jobs_runner.drain()
    [row] = await app.jobs()
    assert (row["status"], row["attempts"], row["last_error"]) == (PENDING, 1, "receiver answered 503")
    assert row["next_attempt_at"] == START + timedelta(hours=2)

    app.clock.advance(timedelta(hours=1, minutes=59))
    assert await jobs_runner.drain() == 0  # not due yet

    app.clock.advance(timedelta(minutes=1))
    await jobs_runner.drain()
    [row] = await app.jobs()
    assert (row["status"], row["attempts"]) == (PENDING, 2)
    assert row["last_error"] == "ConnectionError: connection refused"
    # Without a chosen delay, the runner's backoff: at most base * 2 for the second failure.
    assert timedelta(0) < row["next_attempt_at"] - app.clock.now() <= timedelta(seconds=20)

    app.clock.advance(timedelta(seconds=20))
    await jobs_runner.drain()
    [row] = await app.jobs()
    assert (row["status"], row["attempts"], row["finished_at"]) == (DEAD, 3, app.clock.now())
    assert attempts == [(1, False), (2, False), (3, True)]


async def test_a_job_whose_runner_died_runs_again_when_its_lease_ends(app: EventApp) -> None:
    started = asyncio.Event()
    runs: list[int] = []

    async def slow(current: Job) -> None:
        runs.append(current.attempt)
        if current.attempt == 1:
            started.set()
            await asyncio.sleep(3600)  # the process dies here
        await write_effect(app, "sent")

    await schedule(app, "tally.send", {})
    first = runner(app, {"tally.send": slow})
    work = asyncio.create_task(first.run())
    await asyncio.wait_for(started.wait(), 5)
    work.cancel()
    with pytest.raises(asyncio.CancelledError):
        await work

    [row] = await app.jobs()
    assert (row["status"], row["attempts"]) == (PENDING, 1)
    assert row["next_attempt_at"] == START + LEASE  # leased: nobody else runs it meanwhile

    second = runner(app, {"tally.send": slow})
    assert await second.drain() == 0
    app.clock.advance(LEASE)
    assert await second.drain() == 1

    [row] = await app.jobs()
    assert (row["status"], row["attempts"]) == (DONE, 2)
    assert runs == [1, 2]
    assert await effects(app) == ["sent"]


async def test_transactional_and_external_kinds_each_go_to_their_own_handler(app: EventApp) -> None:
    calls: list[str] = []

    def recording(name: str) -> Callable[[Job], Awaitable[None]]:
        async def handle(current: Job) -> None:
            calls.append(f"{name}:{json.dumps(current.payload)}")

        return handle

    await schedule(app, "tally.recount", {"t": 1})
    await schedule(app, "tally.send", {"e": 1})
    both = runner(
        app, {"tally.send": recording("external")}, transactional={"tally.recount": recording("tx")}
    )

    assert await both.drain() == 2
    assert sorted(calls) == ['external:{"e": 1}', 'tx:{"t": 1}']
    assert {r["status"] for r in await app.jobs()} == {DONE}


def test_a_kind_cannot_be_both() -> None:
    async def handler(current: Job) -> None: ...

    with pytest.raises(ValueError, match=r"both transactional and external: tally\.send"):
        JobRunner(
            None,  # type: ignore[arg-type]
            None,  # type: ignore[arg-type]
            {"tally.send": handler},
            None,  # type: ignore[arg-type]
            Wakeup(),
            retry=RetryPolicy(),
            external={"tally.send": handler},
        )
