"""The worker in the background (`start()`/`stop()`), with the in-process transport: events and jobs
are handled without anyone calling `settle()`, a commit wakes the loops at once (the poll interval is
only a fallback), a commit in another process wakes the relay on PostgreSQL (LISTEN/NOTIFY), and
`stop()` leaves nothing running and nothing half done."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from splitstone.kernel.clock import SystemClock
from splitstone.kernel.messaging.inbox import DEAD, DONE
from splitstone.kernel.messaging.worker import Worker
from tests.kernel.messaging.helpers import EventApp, event_app, wait_until
from tests.support.eventapp import Posted, Tally

SLOW_POLL = 20.0  # far longer than any wait below: whatever happens sooner was woken, not polled
WAKE_LATENCY = 3.0  # generous: the suite shares two cores, and a loaded CI run once took over 0.5 s
IDLE = 0.3  # long enough for a started worker's loops to finish their first pass and go to sleep


def worker_tasks() -> list[asyncio.Task[object]]:
    return [t for t in asyncio.all_tasks() if t.get_name().startswith("splitstone-") and not t.done()]


async def handled(app: EventApp, expected: tuple[int, int, int]) -> bool:
    return await app.effects() == expected


async def job_done(app: EventApp) -> bool:
    return [r["status"] for r in await app.jobs()] == [DONE]


async def test_a_started_worker_handles_events_and_jobs_as_soon_as_they_commit(
    empty_database_url: str, tmp_path: Path
) -> None:
    async with event_app(empty_database_url, tmp_path, worker_poll_seconds=SLOW_POLL) as app:
        await app.worker.start()
        await asyncio.sleep(IDLE)

        await app.ledger.post(5)
        took = await wait_until(
            lambda: handled(app, (5, 1, 1)), within=WAKE_LATENCY, what="the event handled"
        )
        assert took < WAKE_LATENCY  # the commit woke the relay, the delivery woke the inbox

        async def tallied_relayed() -> bool:  # the handler's commit wakes tally's relay in turn
            return [r["published_at"] is not None for r in await app.outbox("tally")] == [True]

        await wait_until(tallied_relayed, within=WAKE_LATENCY, what="tally.Tallied relayed")

        await app.tally.schedule(app.clock.now())  # the scheduling commit wakes the job runner
        await wait_until(lambda: job_done(app), within=WAKE_LATENCY, what="the job run")

        await app.ledger.post_many(list(range(1, 21)))
        # (the job's run is one more application, of no event)
        await wait_until(lambda: handled(app, (5 + 210, 22, 21)), within=5, what="a burst handled")
        assert {r["status"] for r in await app.inbox_rows()} == {DONE}
        assert all(r["published_at"] is not None for r in await app.outbox())


async def test_stop_leaves_nothing_running_and_the_next_worker_carries_on(
    backend: str, empty_database_url: str, tmp_path: Path
) -> None:
    async with event_app(empty_database_url, tmp_path, worker_poll_seconds=SLOW_POLL) as app:
        await app.worker.start()
        assert len(worker_tasks()) == len(app.worker.relays) + len(app.worker.inboxes) + len(
            app.worker.job_runners
        ) + len(app.worker.retention) + len(app.worker.listeners)
        await app.ledger.post(1)
        await wait_until(lambda: handled(app, (1, 1, 1)), within=2, what="the first event handled")

        started = time.monotonic()
        await app.worker.stop()
        assert time.monotonic() - started < 2
        assert worker_tasks() == []
        assert app.worker._tasks == []
        for module in ("ledger", "tally"):  # PostgreSQL: the relay's LISTEN connection went back too
            assert app.db(module).engine.pool.checkedout() == 0  # type: ignore[attr-defined]
        await app.worker.stop()  # stopping twice is harmless

        await app.ledger.post(2)  # committed while no worker runs: it waits in the outbox
        await asyncio.sleep(IDLE)
        assert [r["published_at"] is None for r in await app.outbox()] == [False, True]

        successor = Worker.for_container(app.container)
        await successor.start()
        try:
            await wait_until(lambda: handled(app, (3, 2, 2)), within=2, what="the waiting event handled")
        finally:
            await successor.stop()
        assert worker_tasks() == []


async def test_stopping_in_the_middle_of_a_handler_rolls_it_back(
    empty_database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    on_posted = Tally.on_posted
    entered = asyncio.Event()
    hang = {"on": True}

    async def slow_handler(self: Tally, event: Posted) -> None:
        await on_posted(self, event)  # its writes are in; its transaction is not committed
        if hang["on"]:
            entered.set()
            await asyncio.sleep(60)

    monkeypatch.setattr(Tally, "on_posted", slow_handler)
    async with event_app(empty_database_url, tmp_path, worker_poll_seconds=SLOW_POLL) as app:
        await app.worker.start()
        await app.ledger.post(4)
        await asyncio.wait_for(entered.wait(), timeout=5)

        started = time.monotonic()
        await app.worker.stop()
        assert time.monotonic() - started < 2  # cancelled, not waited for
        assert worker_tasks() == []
        [row] = await app.inbox_rows()
        assert (row["status"], row["attempts"]) == ("pending", 0)  # nothing of the run was kept
        assert await app.effects() == (0, 0, 0)
        assert await app.outbox("tally") == []

        hang["on"] = False
        await app.worker.settle()
        assert await app.effects() == (4, 1, 1)


async def test_a_poison_event_dies_in_the_background_while_the_others_flow(
    empty_database_url: str, tmp_path: Path
) -> None:
    """Real time (a system clock and a 50 ms retry base): retries happen on their own."""
    async with event_app(
        empty_database_url, tmp_path, clock=SystemClock(), event_max_attempts=3, worker_poll_seconds=0.2
    ) as app:
        await app.worker.start()
        poison = await app.ledger.post(1, poison=True)
        for amount in (2, 3, 4):
            await app.ledger.post(amount)

        async def poison_dead() -> bool:
            return [
                (r["status"], r["attempts"]) for r in await app.inbox_rows() if r["aggregate_id"] == poison
            ] == [(DEAD, 3)]

        await wait_until(poison_dead, within=5, what="the poison event dead")
        await wait_until(lambda: handled(app, (9, 3, 3)), within=2, what="the other events handled")
        await app.ledger.post(5)  # and the inbox is not stuck behind the dead letter
        await wait_until(lambda: handled(app, (14, 4, 4)), within=2, what="a later event handled")


async def test_a_commit_in_another_process_wakes_the_relay(
    backend: str, empty_database_url: str, tmp_path: Path
) -> None:
    """Process A commits; process B's worker relays and handles it. PostgreSQL: B's relay LISTENs for
    the NOTIFY sent with A's commit, so it is well under B's poll interval. SQLite has no such signal:
    B finds the event on its next poll."""
    poll = SLOW_POLL if backend == "postgres" else 0.3
    within = 1.0 if backend == "postgres" else poll + 1.0
    async with (
        event_app(empty_database_url, tmp_path / "a") as writer,
        event_app(empty_database_url, tmp_path / "b", prepare=False, worker_poll_seconds=poll) as relayer,
    ):
        await relayer.worker.start()
        await asyncio.sleep(IDLE)

        await writer.ledger.post(7)  # A runs no worker: nothing in A wakes up or relays

        async def relayed() -> bool:
            return [r["published_at"] is not None for r in await writer.outbox()] == [True]

        took = await wait_until(relayed, within=within, what="A's event relayed by B")
        await wait_until(lambda: handled(writer, (7, 1, 1)), within=within, what="A's event handled by B")
        if backend == "postgres":
            assert took < WAKE_LATENCY

        await writer.ledger.post_many([1, 2, 3])  # and again: the listener stays subscribed
        await wait_until(lambda: handled(writer, (13, 4, 4)), within=within, what="more of A's events")


async def test_a_loop_that_ignores_cancellation_cannot_hang_the_stop(
    backend: str, empty_database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Like a driver call on a half-open connection: the stop gives up on it, says so, and returns."""
    from splitstone.kernel.messaging import worker as worker_module

    monkeypatch.setattr(worker_module, "STOP_TIMEOUT_SECONDS", 0.3)
    release = asyncio.Event()

    async def stubborn() -> None:
        while not release.is_set():
            try:
                await release.wait()
            except asyncio.CancelledError:
                continue  # swallowed, as a stuck driver call would

    async with event_app(empty_database_url, tmp_path, worker_poll_seconds=SLOW_POLL) as app:
        await app.worker.start()
        stuck = asyncio.create_task(stubborn(), name="splitstone-stubborn-test")
        await asyncio.sleep(0)  # it is running, inside its await
        app.worker._tasks.append(stuck)
        started = time.monotonic()
        await app.worker.stop()
        assert time.monotonic() - started < 2
        assert not stuck.done()
        assert app.worker._tasks == []
        release.set()
        await stuck
