"""The inbox: each event recorded once per handler, handled once in effect, retried with backoff when
its handler fails, dead-lettered after the last attempt, and never blocking the events behind it."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import text, update
from structlog.testing import capture_logs
from uuid6 import uuid7

from splitstone.kernel.events import Envelope
from splitstone.kernel.messaging.inbox import DEAD, DONE, PENDING
from splitstone.kernel.messaging.tables import outbox
from tests.kernel.messaging.helpers import (
    START,
    EventApp,
    decode_payloads,
    event_app,
    fail_tally_after_its_writes,
)
from tests.support.eventapp import Posted, Tallied

MAX_ATTEMPTS = 3


def posted(amount: int) -> Posted:
    return Posted(occurred_at=START, aggregate_id=uuid7(), amount=amount)


def retry_base(app: EventApp) -> timedelta:
    return timedelta(seconds=app.settings.event_retry_base_seconds)


async def test_an_envelope_delivered_twice_is_recorded_once_and_applied_once(
    empty_database_url: str, tmp_path: Path
) -> None:
    async with event_app(empty_database_url, tmp_path) as app:
        event = posted(4)
        envelope = Envelope.of(event)
        inbox = app.inbox()
        await inbox.deliver([envelope])
        await inbox.deliver([envelope, envelope])
        [row] = await app.inbox_rows()
        assert row["event_id"] == event.id
        assert row["handler"] == "tally:ledger.Posted"
        assert (row["status"], row["attempts"], row["received_at"]) == (PENDING, 0, START)

        assert await inbox.drain() == 1
        assert await app.effects() == (4, 1, 1)

        app.clock.advance(timedelta(minutes=1))
        await inbox.deliver([envelope])  # redelivered after it was handled
        [row] = await app.inbox_rows()
        assert (row["status"], row["attempts"], row["received_at"], row["handled_at"]) == (
            DONE,
            1,
            START,
            START,
        )
        assert await inbox.drain() == 0
        assert await app.effects() == (4, 1, 1)


async def test_an_inbox_records_only_the_events_its_module_handles(
    empty_database_url: str, tmp_path: Path
) -> None:
    async with event_app(empty_database_url, tmp_path) as app:
        tallied = Tallied(occurred_at=START, aggregate_id=uuid7(), event_id=uuid7())
        await app.inbox().deliver([Envelope.of(tallied)])
        assert await app.inbox_rows() == []


@pytest.mark.parametrize("failure", ["exception", "database"])
async def test_a_failing_handler_leaves_none_of_its_writes_and_its_attempt_is_recorded(
    failure: str, empty_database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its writes and the event it published roll back with it; the attempt is still recorded, in the
    same transaction (on PostgreSQL an SQL error aborts that transaction: only the savepoint saves it)."""
    fail_tally_after_its_writes(monkeypatch)
    async with event_app(empty_database_url, tmp_path) as app:
        good, bad = posted(1), posted(2)
        await app.inbox().deliver([Envelope.of(good)])
        assert await app.inbox().drain() == 1
        assert await app.effects() == (1, 1, 1)

        app.tally.fail_after_writes = failure  # type: ignore[attr-defined]
        await app.inbox().deliver([Envelope.of(bad)])
        assert await app.inbox().drain() == 1

        rows = {r["event_id"]: r for r in await app.inbox_rows()}
        assert rows[good.id]["status"] == DONE
        failed = rows[bad.id]
        assert (failed["status"], failed["attempts"], failed["handled_at"]) == (PENDING, 1, None)
        expected = "RuntimeError: failed after its writes" if failure == "exception" else "IntegrityError"
        assert failed["last_error"].startswith(expected)
        assert failed["next_attempt_at"] > START
        assert await app.effects() == (1, 1, 1)  # the failed run's counter update and log row are gone
        tallied = decode_payloads(await app.outbox("tally"), Tallied)
        assert [e.event_id for e in tallied] == [good.id]  # type: ignore[attr-defined]
        assert [e.event_id for e in app.recorder.of_type(Tallied)] == [good.id]

        app.tally.fail_after_writes = None  # type: ignore[attr-defined]
        app.clock.set(failed["next_attempt_at"])
        assert await app.inbox().drain() == 1
        assert await app.effects() == (3, 2, 2)


async def test_a_failure_is_isolated_from_the_other_events_of_its_batch(
    empty_database_url: str, tmp_path: Path
) -> None:
    async with event_app(empty_database_url, tmp_path, event_max_attempts=MAX_ATTEMPTS) as app:
        first, poison, last = (
            posted(1),
            Posted(occurred_at=START, aggregate_id=uuid7(), amount=5, poison=True),
            posted(3),
        )
        await app.inbox().deliver([Envelope.of(e) for e in (first, poison, last)])
        assert await app.inbox().drain() == 3

        statuses = {r["event_id"]: (r["status"], r["attempts"]) for r in await app.inbox_rows()}
        assert statuses == {first.id: (DONE, 1), poison.id: (PENDING, 1), last.id: (DONE, 1)}
        assert await app.effects() == (4, 2, 2)
        tallied = decode_payloads(await app.outbox("tally"), Tallied)
        assert sorted(e.event_id for e in tallied) == sorted([first.id, last.id])  # type: ignore[attr-defined]
        assert sorted(e.event_id for e in app.recorder.of_type(Tallied)) == sorted([first.id, last.id])


async def test_a_failed_event_is_retried_only_when_its_retry_is_due(
    empty_database_url: str, tmp_path: Path
) -> None:
    async with event_app(empty_database_url, tmp_path) as app:
        app.tally.fail_always = True
        await app.ledger.post(6)
        await app.worker.settle()
        [row] = await app.inbox_rows()
        assert (row["status"], row["attempts"], row["last_error"]) == (
            PENDING,
            1,
            f"ValueError: cannot tally {row['event_id']}",
        )
        base = retry_base(app)
        assert START + base * 0.1 <= row["next_attempt_at"] <= START + base
        retry_at = row["next_attempt_at"]

        assert await app.inbox().drain() == 0  # not due
        app.clock.set(retry_at - timedelta(microseconds=1))
        assert await app.inbox().drain() == 0  # still not due
        app.clock.set(retry_at)
        assert await app.inbox().drain() == 1  # due: the second attempt
        [row] = await app.inbox_rows()
        assert (row["status"], row["attempts"]) == (PENDING, 2)
        assert retry_at + base * 0.2 <= row["next_attempt_at"] <= retry_at + base * 2  # backoff doubled

        app.tally.fail_always = False
        app.clock.set(row["next_attempt_at"])
        assert await app.inbox().drain() == 1
        [row] = await app.inbox_rows()
        assert (row["status"], row["attempts"], row["last_error"]) == (DONE, 3, None)
        assert row["handled_at"] == app.clock.now()
        assert await app.effects() == (6, 1, 1)


async def test_a_poison_event_is_dead_after_its_last_attempt_and_the_others_keep_flowing(
    empty_database_url: str, tmp_path: Path
) -> None:
    async with event_app(empty_database_url, tmp_path, event_max_attempts=MAX_ATTEMPTS) as app:
        poison_entry = await app.ledger.post(1, poison=True)
        await app.ledger.post(2)
        with capture_logs() as logs:
            for attempt in range(1, MAX_ATTEMPTS + 1):
                await app.worker.settle()
                await app.ledger.post(10 * attempt)  # events keep arriving while the poison retries
                app.clock.advance(timedelta(seconds=app.settings.event_retry_max_seconds))
            await app.worker.settle()

        rows = await app.inbox_rows()
        [dead] = [r for r in rows if r["aggregate_id"] == poison_entry]
        assert (dead["status"], dead["attempts"]) == (DEAD, MAX_ATTEMPTS)
        assert dead["last_error"] == f"ValueError: cannot tally {dead['event_id']}"
        assert dead["handled_at"] is None
        assert {r["status"] for r in rows if r is not dead} == {DONE}
        assert await app.effects() == (2 + 10 + 20 + 30, 4, 4)
        failures = [e for e in logs if e["event"] == "event handler failed"]
        assert [(f["attempt"], f["dead"]) for f in failures] == [(1, False), (2, False), (3, True)]

        for _ in range(3):  # a dead letter stays dead: it is an operator's business now
            app.clock.advance(timedelta(hours=1))
            await app.worker.settle()
        [dead] = [r for r in await app.inbox_rows() if r["aggregate_id"] == poison_entry]
        assert (dead["status"], dead["attempts"]) == (DEAD, MAX_ATTEMPTS)


async def test_an_undecodable_event_is_dead_lettered(empty_database_url: str, tmp_path: Path) -> None:
    async with event_app(empty_database_url, tmp_path, event_max_attempts=2) as app:
        good = Envelope.of(posted(8))
        broken = Envelope(uuid7(), "ledger.Posted", 1, uuid7(), START, '{"amount": "not a number"}')
        await app.inbox().deliver([broken, good])
        await app.inbox().drain()
        app.clock.advance(timedelta(minutes=5))
        await app.inbox().drain()
        statuses = {r["event_id"]: (r["status"], r["attempts"]) for r in await app.inbox_rows()}
        assert statuses == {broken.id: (DEAD, 2), good.id: (DONE, 1)}
        [row] = [r for r in await app.inbox_rows() if r["event_id"] == broken.id]
        assert row["last_error"].startswith("cannot decode the event: ValidationError")
        assert await app.effects() == (8, 1, 1)


async def test_each_event_has_its_effect_once_however_often_it_is_delivered(
    empty_database_url: str, tmp_path: Path
) -> None:
    events = 20
    async with event_app(empty_database_url, tmp_path) as app:
        await app.ledger.post_many(list(range(1, events + 1)))
        await app.worker.settle()
        total = events * (events + 1) // 2
        assert await app.effects() == (total, events, events)

        # The relay crashed after the transport accepted, before it marked the rows: all go out again.
        async with app.db("ledger").write_engine.begin() as connection:
            await connection.execute(update(outbox).values(published_at=None))
        await app.worker.settle()
        assert all(r["published_at"] is not None for r in await app.outbox())
        # And a transport redelivers whatever it likes, straight to the inbox.
        envelopes = [
            Envelope(
                r["event_id"],
                r["event_name"],
                r["event_version"],
                r["aggregate_id"],
                r["occurred_at"],
                r["payload"],
            )
            for r in await app.outbox()
        ]
        await app.inbox().deliver(envelopes)
        await app.inbox().drain()

        assert await app.effects() == (total, events, events)
        assert len(await app.inbox_rows()) == events
        assert len(await app.outbox("tally")) == events  # one tally.Tallied per event, not per delivery


async def test_two_workers_handling_one_inbox_apply_each_event_once(
    empty_database_url: str, tmp_path: Path
) -> None:
    """Two processes on one database: PostgreSQL claims rows SKIP LOCKED, SQLite has one writer."""
    events = 60
    async with (
        event_app(empty_database_url, tmp_path / "a") as first,
        event_app(empty_database_url, tmp_path / "b", prepare=False) as second,
    ):
        await first.ledger.post_many(list(range(events)))
        await first.start_transport()
        while await first.relay().relay_once():
            pass
        assert len(await first.inbox_rows()) == events

        handled = await asyncio.gather(first.inbox().drain(limit=10**6), second.inbox().drain(limit=10**6))
        assert sum(handled) == events
        assert await first.effects() == (sum(range(events)), events, events)
        assert {r["status"] for r in await first.inbox_rows()} == {DONE}


async def test_events_a_handler_publishes_commit_in_its_transaction(
    backend: str, empty_database_url: str, tmp_path: Path
) -> None:
    async with event_app(empty_database_url, tmp_path) as app:
        await app.ledger.post(5)
        await app.start_transport()
        await app.relay("ledger").relay_once()
        assert await app.outbox("tally") == []
        assert await app.inbox().drain() == 1

        [posted_row] = await app.outbox("ledger")
        [tallied_row] = await app.outbox("tally")
        [tallied] = decode_payloads([tallied_row], Tallied)
        assert tallied.event_id == posted_row["event_id"]  # type: ignore[attr-defined]
        assert tallied_row["published_at"] is None  # waiting for tally's relay
        assert app.recorder.of_type(Tallied) == [tallied]  # announced once its transaction committed
        if backend == "postgres":  # the handler's effect, its event and the inbox mark: one transaction
            async with app.db("tally").session() as connection:
                writers = {
                    (await connection.execute(text(query))).scalar_one()
                    for query in (
                        "SELECT xmin::text FROM tally.outbox",
                        "SELECT xmin::text FROM tally.inbox",
                        "SELECT xmin::text FROM tally.counter",
                    )
                }
            assert len(writers) == 1

        await app.worker.settle()
        [tallied_row] = await app.outbox("tally")
        assert tallied_row["published_at"] == START
