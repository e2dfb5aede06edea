"""Recurring jobs: one job per slot, aligned to the epoch, scheduled once however many workers run,
and missed slots are not caught up."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from splitstone.kernel.messaging.jobs import DONE, PENDING, Every, Job, JobRunner
from splitstone.kernel.messaging.retry import RetryPolicy
from splitstone.kernel.messaging.signals import Wakeup
from splitstone.kernel.module import ModuleGraphError
from tests.kernel.conftest import notes_module
from tests.kernel.messaging.helpers import START, EventApp, event_app

HOURLY = Every("tally.sweep", timedelta(hours=1))


@pytest.fixture
async def app(empty_database_url: str, tmp_path: Path) -> AsyncIterator[EventApp]:
    async with event_app(empty_database_url, tmp_path) as built:
        yield built


def sweeper(app: EventApp, runs: list[datetime]) -> JobRunner:
    async def sweep(current: Job) -> None:
        runs.append(datetime.fromisoformat(current.payload["slot"]))

    return JobRunner(
        app.db("tally"),
        app.container.units_of_work["tally"],
        {"tally.sweep": sweep},
        app.clock,
        Wakeup(),
        retry=RetryPolicy(),
        recurring=[HOURLY],
    )


def test_slots_are_aligned_to_the_epoch() -> None:
    moment = datetime(2030, 5, 17, 13, 47, 12, tzinfo=UTC)
    assert HOURLY.slot(moment) == datetime(2030, 5, 17, 13, tzinfo=UTC)
    assert Every("x.daily", timedelta(days=1)).slot(moment) == datetime(2030, 5, 17, tzinfo=UTC)
    assert Every("x.quarter", timedelta(minutes=15)).slot(moment) == datetime(2030, 5, 17, 13, 45, tzinfo=UTC)
    with pytest.raises(ValueError, match="at least 1 second"):
        Every("x.fast", timedelta(milliseconds=10))


async def test_each_slot_runs_once_and_the_next_one_waits_for_its_time(app: EventApp) -> None:
    runs: list[datetime] = []
    runner = sweeper(app, runs)
    app.clock.set(START + timedelta(minutes=20))

    await runner.drain()
    await runner.drain()  # nothing more is due in this slot
    assert runs == [START]
    slots = {(r["run_at"], r["status"]) for r in await app.jobs()}
    assert slots == {(START, DONE), (START + timedelta(hours=1), PENDING)}

    app.clock.advance(timedelta(minutes=40))  # the next slot begins
    await runner.drain()
    assert runs == [START, START + timedelta(hours=1)]


async def test_slots_missed_while_no_worker_ran_are_not_caught_up(app: EventApp) -> None:
    runs: list[datetime] = []
    runner = sweeper(app, runs)
    await runner.drain()

    app.clock.advance(timedelta(hours=5, minutes=30))
    await runner.drain()

    # The slot that was scheduled ahead (1 h) ran late, then the current one (5 h); 2 h to 4 h never.
    assert runs == [START, START + timedelta(hours=1), START + timedelta(hours=5)]


async def test_several_workers_schedule_each_slot_once(app: EventApp) -> None:
    runs: list[datetime] = []
    first, second = sweeper(app, runs), sweeper(app, runs)

    await first.schedule_recurring()
    await second.schedule_recurring()
    await first.drain()
    await second.drain()

    assert runs == [START]
    assert sorted(r["run_at"] for r in await app.jobs()) == [START, START + timedelta(hours=1)]


def test_a_recurring_kind_needs_a_handler() -> None:
    with pytest.raises(ModuleGraphError, match="declares no handler for it"):
        notes_module(recurring=[Every("notes.sweep", timedelta(hours=1))])
