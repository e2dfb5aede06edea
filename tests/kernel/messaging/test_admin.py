"""Operator queries over the messaging tables: status, dead letters, retry and discard.

Scenarios on the test modules of `tests.support.eventapp` (`ledger` publishes `ledger.Posted`, `tally`
handles it and runs `tally.recount` jobs), on SQLite and PostgreSQL, with a manual clock: the worker
is driven by `settle()` and the clock is moved past each retry delay by hand.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID

import pytest
from sqlalchemy import select

from splitstone.kernel.clock import ManualClock
from splitstone.kernel.container import Container
from splitstone.kernel.events import Envelope
from splitstone.kernel.messaging.admin import DISCARDED, MessagingAdmin, ModuleStatus, UnknownModule
from splitstone.kernel.messaging.inbox import DEAD, DONE, PENDING
from splitstone.kernel.messaging.jobs import Job
from splitstone.kernel.messaging.tables import outbox
from splitstone.kernel.messaging.transport import Subscription, TransportUnavailable
from splitstone.kernel.messaging.worker import Worker
from splitstone.kernel.settings import Settings
from tests.support import eventapp
from tests.support.eventapp import Ledger, Tally

MAX_ATTEMPTS = 3
JOB_MAX_ATTEMPTS = 2
START = datetime(2030, 1, 1, tzinfo=UTC)


@dataclass
class Scene:
    container: Container
    clock: ManualClock
    admin: MessagingAdmin

    @property
    def ledger(self) -> Ledger:
        return self.container.implementations["ledger"]  # type: ignore[return-value]

    @property
    def tally(self) -> Tally:
        return self.container.implementations["tally"]  # type: ignore[return-value]

    async def status(self) -> dict[str, ModuleStatus]:
        return {s.module: s for s in await self.admin.status()}

    async def settle_attempts(self, worker: Worker, attempts: int) -> None:
        """Let `attempts` rounds of handler attempts happen: each past the previous retry delay."""
        for _ in range(attempts):
            await worker.settle()
            self.clock.advance(timedelta(hours=1))

    async def event_id_of(self, entry_id: UUID) -> UUID:
        """The id of the `ledger.Posted` event for a ledger entry (read from ledger's outbox)."""
        async with self.container.databases["ledger"].session() as session:
            query = select(outbox.c.event_id).where(outbox.c.aggregate_id == entry_id)
            event_id: UUID = (await session.execute(query)).scalar_one()
        return event_id

    async def envelope_of(self, event_id: UUID) -> Envelope:
        async with self.container.databases["ledger"].session() as session:
            row = (
                (await session.execute(select(outbox).where(outbox.c.event_id == event_id))).mappings().one()
            )
        return Envelope(
            id=row["event_id"],
            name=row["event_name"],
            version=row["event_version"],
            aggregate_id=row["aggregate_id"],
            occurred_at=row["occurred_at"],
            payload=row["payload"],
        )


@asynccontextmanager
async def scene_on(settings: Settings, data_dir: Path) -> AsyncIterator[Scene]:
    """The test modules on `settings`' database, prepared, with a few attempts before a dead letter."""
    clock = ManualClock(START)
    settings = settings.model_copy(
        update={
            "data_dir": data_dir,
            "event_max_attempts": MAX_ATTEMPTS,
            "job_max_attempts": JOB_MAX_ATTEMPTS,
        }
    )
    container = Container.build(settings, eventapp.MODULES, clock=clock)
    try:
        await eventapp.prepare(container)
        yield Scene(container, clock, MessagingAdmin.for_container(container))
    finally:
        await container.aclose()


@pytest.fixture
async def scene(empty_database_url: str, tmp_path: Path) -> AsyncIterator[Scene]:
    async with scene_on(eventapp.settings_for(empty_database_url), tmp_path / "data") as built:
        yield built


class RefusingTransport:
    """A broker that is down: every publish fails, so events stay in the outbox."""

    async def start(self, subscriptions: Sequence[Subscription]) -> None:
        return None

    async def publish(self, envelopes: Sequence[Envelope]) -> None:
        raise TransportUnavailable("broker at nats://10.0.0.9:4222 is not answering")

    async def close(self) -> None:
        return None


# --- status ---------------------------------------------------------------------------------------


async def test_status_shows_the_backlog_before_the_worker_and_the_handled_events_after(scene: Scene) -> None:
    await scene.ledger.post(5)
    scene.clock.advance(timedelta(seconds=30))
    await scene.ledger.post(7)
    scene.clock.advance(timedelta(seconds=15))

    before = await scene.status()
    assert list(before) == ["ledger", "tally"]
    assert before["ledger"].outbox.unpublished == 2
    assert before["ledger"].outbox.oldest_unpublished_at == START
    assert before["ledger"].outbox.lag_seconds == 45
    assert before["ledger"].outbox.failing == 0
    assert before["tally"].inbox.pending == before["tally"].inbox.done == 0

    await scene.container.worker().settle()

    after = await scene.status()
    assert after["ledger"].outbox.unpublished == 0
    assert after["ledger"].outbox.lag_seconds is None
    assert after["tally"].inbox.done == 2
    assert (after["tally"].inbox.pending, after["tally"].inbox.dead) == (0, 0)
    assert after["tally"].outbox.unpublished == 0  # its own tally.Tallied events went out too
    assert await scene.tally.total() == 12
    # The JSON form is plain data.
    decoded = json.loads(json.dumps([s.to_json() for s in after.values()]))
    assert decoded[1]["inbox"]["done"] == 2
    assert decoded[0]["outbox"]["oldest_unpublished_at"] is None


async def test_status_counts_events_the_transport_refuses(scene: Scene) -> None:
    await scene.ledger.post(5)
    worker = Worker.for_container(scene.container, transport=RefusingTransport())
    await worker.settle()

    ledger = (await scene.status())["ledger"].outbox
    assert ledger.unpublished == 1
    assert ledger.failing == 1
    assert ledger.last_error is not None
    assert "not answering" in ledger.last_error


async def test_status_shows_pending_jobs_and_how_late_they_are(scene: Scene) -> None:
    await scene.tally.schedule(START + timedelta(minutes=10), key="later")
    await scene.tally.schedule(START, key="now")
    scene.clock.advance(timedelta(minutes=2))

    jobs = (await scene.status())["tally"].jobs
    assert jobs.pending == 2
    assert jobs.lag_seconds == 120  # the due one; the later one is not late yet
    assert jobs.dead == jobs.done == 0


# --- dead letters: the inbox ----------------------------------------------------------------------


async def test_a_poison_event_goes_dead_after_the_attempts_and_the_others_flow(scene: Scene) -> None:
    await scene.ledger.post(5)
    poison_entry = await scene.ledger.post(1, poison=True)
    await scene.ledger.post(7)
    poison = await scene.event_id_of(poison_entry)
    worker = scene.container.worker()

    await scene.settle_attempts(worker, 1)
    failing = (await scene.status())["tally"].inbox
    assert (failing.done, failing.pending, failing.retrying, failing.dead) == (2, 1, 1, 0)

    await scene.settle_attempts(worker, MAX_ATTEMPTS - 1)
    settled = (await scene.status())["tally"].inbox
    assert (settled.done, settled.pending, settled.dead) == (2, 0, 1)
    assert await scene.tally.total() == 12

    page = await scene.admin.dead_events()
    assert page.total == 1
    [dead] = page.items
    assert dead.module == "tally"
    assert dead.handler == "tally:ledger.Posted"
    assert dead.event_id == poison
    assert dead.event_name == "ledger.Posted"
    assert dead.status == DEAD
    assert dead.attempts == MAX_ATTEMPTS
    assert dead.last_error is not None
    assert dead.last_error.startswith("ValueError: cannot tally")
    assert dead.received_at == START
    assert (await scene.admin.dead_events(module="ledger")).total == 0

    # More time changes nothing: a dead letter is not retried on its own.
    scene.clock.advance(timedelta(days=30))
    await worker.settle()
    assert (await scene.admin.dead_events()).items[0].attempts == MAX_ATTEMPTS


async def test_dead_list_is_limited_and_says_how_many_there_are(scene: Scene) -> None:
    scene.tally.fail_always = True
    for amount in range(4):
        await scene.ledger.post(amount)
        scene.clock.advance(timedelta(seconds=1))
    await scene.settle_attempts(scene.container.worker(), MAX_ATTEMPTS)

    page = await scene.admin.dead_events(limit=3)
    assert page.total == 4
    assert len(page.items) == 3
    assert [e.received_at for e in page.items] == sorted(e.received_at for e in page.items)


async def test_a_retried_dead_letter_is_handled_exactly_once(scene: Scene) -> None:
    scene.tally.fail_always = True
    event_id = await scene.event_id_of(await scene.ledger.post(4))
    worker = scene.container.worker()
    await scene.settle_attempts(worker, MAX_ATTEMPTS)
    assert (await scene.status())["tally"].inbox.dead == 1

    scene.tally.fail_always = False  # the bug is fixed
    [retried] = await scene.admin.retry_events(event_id)
    assert retried.status == PENDING
    assert retried.attempts == 0
    assert retried.next_attempt_at == scene.clock.now()
    assert retried.last_error is not None  # kept, for history
    assert "cannot tally" in retried.last_error
    inbox = (await scene.status())["tally"].inbox
    assert (inbox.pending, inbox.dead) == (1, 0)

    await worker.settle()
    await worker.settle()
    assert await scene.tally.total() == 4
    assert await scene.tally.applications() == 1
    assert await scene.tally.distinct_events() == 1
    [row] = await scene.admin.find_event(event_id)
    assert (row.status, row.attempts, row.last_error) == (DONE, 1, None)

    # Nothing dead is left to retry: a second retry changes nothing and cannot apply the event again.
    assert await scene.admin.retry_events(event_id) == []
    await worker.settle()
    assert await scene.tally.applications() == 1


async def test_retry_narrows_by_handler_and_module_or_takes_every_dead_letter(scene: Scene) -> None:
    scene.tally.fail_always = True
    first = await scene.event_id_of(await scene.ledger.post(1))
    await scene.ledger.post(2)
    worker = scene.container.worker()
    await scene.settle_attempts(worker, MAX_ATTEMPTS)

    assert await scene.admin.retry_events(first, handler="tally:ledger.Other") == []
    assert await scene.admin.retry_events(first, module="ledger") == []
    assert await scene.admin.retry_events(every=True, module="ledger") == []
    with pytest.raises(UnknownModule, match="no module named 'billing'"):
        await scene.admin.retry_events(first, module="billing")
    with pytest.raises(ValueError, match="by id"):
        await scene.admin.retry_events()
    with pytest.raises(ValueError, match="not both"):
        await scene.admin.retry_events(first, every=True)

    scene.tally.fail_always = False
    retried = await scene.admin.retry_events(every=True, module="tally")
    assert len(retried) == 2
    await worker.settle()
    assert await scene.tally.total() == 3
    assert await scene.tally.applications() == 2


async def test_a_discarded_dead_letter_is_never_run_even_when_redelivered(scene: Scene) -> None:
    event_id = await scene.event_id_of(await scene.ledger.post(1, poison=True))
    worker = scene.container.worker()
    await scene.settle_attempts(worker, MAX_ATTEMPTS)

    [discarded] = await scene.admin.discard_events(event_id, handler="tally:ledger.Posted")
    assert discarded.status == DISCARDED
    assert discarded.handled_at == scene.clock.now()
    assert discarded.attempts == MAX_ATTEMPTS
    assert discarded.last_error is not None

    scene.clock.advance(timedelta(days=1))
    await worker.settle()
    # The same event arrives again (a broker redelivery): the kept row still dedupes it.
    [tally_inbox] = worker.inboxes
    await tally_inbox.deliver([await scene.envelope_of(event_id)])
    await worker.settle()

    [row] = await scene.admin.find_event(event_id)
    assert (row.status, row.attempts) == (DISCARDED, MAX_ATTEMPTS)
    assert await scene.admin.retry_events(event_id) == []  # only dead letters can be retried
    assert await scene.admin.discard_events(event_id) == []
    inbox = (await scene.status())["tally"].inbox
    assert (inbox.discarded, inbox.dead, inbox.pending) == (1, 0, 0)
    assert await scene.tally.applications() == 0


async def test_a_dead_letter_retried_over_nats_is_handled_exactly_once(
    empty_database_url: str, tmp_path: Path, nats_url: str, nats_prefix: str
) -> None:
    """Retries run from the inbox table: the same operation works when events come through JetStream."""
    settings = eventapp.settings_for(
        empty_database_url, transport="nats", nats_url=nats_url, prefix=nats_prefix
    )
    async with scene_on(settings, tmp_path / "data") as nats_scene:
        worker = nats_scene.container.worker()
        try:
            nats_scene.tally.fail_always = True
            event_id = await nats_scene.event_id_of(await nats_scene.ledger.post(4))
            for _ in range(300):  # JetStream delivers in the background; a minute at most
                await nats_scene.settle_attempts(worker, 1)
                if (await nats_scene.status())["tally"].inbox.dead == 1:
                    break
                await asyncio.sleep(0.2)
            [dead] = (await nats_scene.admin.dead_events()).items
            assert (dead.event_id, dead.attempts) == (event_id, MAX_ATTEMPTS)

            nats_scene.tally.fail_always = False
            assert len(await nats_scene.admin.retry_events(event_id)) == 1
            await worker.settle()
            await asyncio.sleep(0.5)  # a late redelivery, if any, would land now
            await worker.settle()
            assert await nats_scene.tally.applications() == 1
            assert [r.status for r in await nats_scene.admin.find_event(event_id)] == [DONE]
        finally:
            await worker.stop()


# --- dead letters: jobs ---------------------------------------------------------------------------


async def test_dead_jobs_are_listed_retried_once_and_discarded(
    scene: Scene, monkeypatch: pytest.MonkeyPatch
) -> None:
    tally = scene.tally
    broken = True
    runs: list[str] = []
    recount = tally.run_job

    async def flaky_recount(current: Job) -> None:
        runs.append(str(current.id))
        if broken:
            raise RuntimeError("recount broke")
        await recount(current)

    monkeypatch.setattr(tally, "run_job", flaky_recount)  # before the worker picks its handlers
    worker = scene.container.worker()
    await tally.schedule(START, key="first")
    await scene.settle_attempts(worker, JOB_MAX_ATTEMPTS)

    page = await scene.admin.dead_jobs()
    assert page.total == 1
    [dead] = page.items
    assert (dead.module, dead.kind, dead.idempotency_key) == ("tally", "tally.recount", "first")
    assert (dead.status, dead.attempts, dead.max_attempts) == (DEAD, JOB_MAX_ATTEMPTS, JOB_MAX_ATTEMPTS)
    assert dead.last_error == "RuntimeError: recount broke"
    assert (await scene.status())["tally"].jobs.dead == 1

    broken = False
    [retried] = await scene.admin.retry_jobs(dead.id)
    assert (retried.status, retried.attempts, retried.finished_at) == (PENDING, 0, None)
    assert retried.last_error == "RuntimeError: recount broke"
    await worker.settle()
    await worker.settle()
    assert await tally.applications() == 1  # the job's effect, once
    [done] = await scene.admin.find_job(dead.id)
    assert done.status == DONE
    assert await scene.admin.retry_jobs(dead.id) == []

    broken = True
    await tally.schedule(scene.clock.now(), key="second")
    await scene.settle_attempts(worker, JOB_MAX_ATTEMPTS)
    assert await scene.admin.discard_jobs(every=True, kind="tally.other") == []
    [discarded] = await scene.admin.discard_jobs(every=True, kind="tally.recount")
    assert discarded.idempotency_key == "second"
    assert discarded.status == DISCARDED
    assert discarded.finished_at == scene.clock.now()

    before = len(runs)
    scene.clock.advance(timedelta(days=1))
    await worker.settle()
    assert len(runs) == before
    jobs = (await scene.status())["tally"].jobs
    assert (jobs.done, jobs.dead, jobs.discarded, jobs.pending) == (1, 0, 1, 0)
    with pytest.raises(UnknownModule):
        await scene.admin.dead_jobs(module="billing")
