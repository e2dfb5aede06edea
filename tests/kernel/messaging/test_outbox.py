"""The outbox: events written in the transaction of the state change, and the relay that hands them to
the transport in order, keeping them through a broker outage."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from splitstone.kernel.db import ScheduledJob
from splitstone.kernel.events import Envelope, Event
from splitstone.kernel.messaging.outbox import Relay, outbox_backlog
from splitstone.kernel.messaging.signals import Wakeup
from splitstone.kernel.messaging.transport import InProcessTransport, Subscription
from tests.kernel.messaging.helpers import START, EventApp, FlakyTransport, decode_payloads, event_app
from tests.support.eventapp import Posted, entries

# The relay's own backoff (see Relay): one second, doubling, with jitter down to a tenth.
RELAY_BASE = timedelta(seconds=1)


async def entry_count(app: EventApp) -> int:
    async with app.db("ledger").session() as connection:
        return int((await connection.execute(select(func.count()).select_from(entries))).scalar_one())


# --- atomicity: the event is part of the state change ---------------------------------------------


async def test_a_use_case_that_fails_after_publishing_leaves_no_event(
    empty_database_url: str, tmp_path: Path
) -> None:
    async with event_app(empty_database_url, tmp_path) as app:
        with pytest.raises(RuntimeError, match="failed after publishing"):
            await app.ledger.post(5, fail_after_publish=True)
        assert await app.outbox() == []
        assert await entry_count(app) == 0
        assert app.recorder.published == []
        await app.worker.settle()
        assert await app.inbox_rows() == []
        assert await app.effects() == (0, 0, 0)


async def test_a_committed_use_case_leaves_exactly_its_rows(empty_database_url: str, tmp_path: Path) -> None:
    async with event_app(empty_database_url, tmp_path) as app:
        entry_id = await app.ledger.post(7)
        [row] = await app.outbox()
        event = app.recorder.last(Posted)
        assert app.recorder.published == [event]
        assert row["event_id"] == event.id
        assert row["event_name"] == "ledger.Posted"
        assert row["event_version"] == 1
        assert row["aggregate_id"] == entry_id == event.aggregate_id
        assert decode_payloads([row], Posted) == [event]
        assert event.amount == 7
        assert row["created_at"] == START  # the container's clock
        assert row["published_at"] is None
        assert (row["attempts"], row["next_attempt_at"], row["last_error"]) == (0, None, None)
        assert await entry_count(app) == 1
        assert await app.outbox("tally") == []  # nothing anywhere else until the relay runs
        assert await app.inbox_rows() == []


async def test_post_many_writes_every_entry_and_event_in_one_transaction(
    backend: str, empty_database_url: str, tmp_path: Path
) -> None:
    async with event_app(empty_database_url, tmp_path) as app:
        commits: list[list[Event]] = []

        def listener(events: Sequence[Event], _jobs: Sequence[ScheduledJob]) -> None:
            commits.append(list(events))

        app.container.sinks["ledger"].add_commit_listener(listener)
        ids = await app.ledger.post_many([1, 2, 3])
        rows = await app.outbox()
        assert [r["aggregate_id"] for r in rows] == ids
        assert [e.amount for e in decode_payloads(rows, Posted)] == [1, 2, 3]  # type: ignore[attr-defined]
        positions = [r["position"] for r in rows]
        assert positions == list(range(positions[0], positions[0] + 3))
        assert len(commits) == 1  # one commit announced all three
        assert [e.aggregate_id for e in commits[0]] == ids
        assert await entry_count(app) == 3
        if backend == "postgres":  # the rows were written by one and the same transaction
            async with app.db("ledger").session() as connection:
                writers = set(
                    (await connection.execute(text("SELECT xmin::text FROM ledger.outbox"))).scalars()
                )
                writers |= set(
                    (await connection.execute(text("SELECT xmin::text FROM ledger.entries"))).scalars()
                )
            assert len(writers) == 1


async def test_the_backlog_counts_unpublished_rows(empty_database_url: str, tmp_path: Path) -> None:
    async with event_app(empty_database_url, tmp_path) as app:
        assert await outbox_backlog(app.db("ledger")) == (0, None)
        await app.ledger.post(1)
        app.clock.advance(timedelta(seconds=5))
        await app.ledger.post(2)
        assert await outbox_backlog(app.db("ledger")) == (2, START)
        await app.worker.settle()
        assert await outbox_backlog(app.db("ledger")) == (0, None)


# --- the relay --------------------------------------------------------------------------------------


async def test_the_relay_publishes_in_position_order_and_marks_rows_published(
    empty_database_url: str, tmp_path: Path
) -> None:
    transport = FlakyTransport()
    async with event_app(empty_database_url, tmp_path, transport=transport) as app:
        await app.ledger.post(1)
        await app.ledger.post_many([2, 3, 4])
        await app.ledger.post(5)
        app.clock.advance(timedelta(minutes=1))
        await app.worker.settle()

        rows = await app.outbox()
        posted = [r for batch in transport.accepted for r in batch if r.name == "ledger.Posted"]
        assert [e.id for e in posted] == [r["event_id"] for r in rows]
        assert [e.amount for e in decode_payloads(rows, Posted)] == [1, 2, 3, 4, 5]  # type: ignore[attr-defined]
        assert all(r["published_at"] == START + timedelta(minutes=1) for r in rows)
        assert all(r["attempts"] == 0 and r["last_error"] is None for r in rows)
        assert sorted(r["event_id"] for r in await app.inbox_rows()) == sorted(r["event_id"] for r in rows)
        assert await app.effects() == (15, 5, 5)

        accepted = len(transport.accepted)
        await app.worker.settle()  # published rows are not published again
        assert len(transport.accepted) == accepted


async def test_the_relay_takes_the_outbox_in_order_one_batch_at_a_time(
    empty_database_url: str, tmp_path: Path
) -> None:
    async with event_app(empty_database_url, tmp_path) as app:
        await app.ledger.post_many([1, 2, 3, 4, 5])
        batches: list[list[Envelope]] = []

        async def deliver(envelopes: Sequence[Envelope]) -> None:
            batches.append(list(envelopes))

        transport = InProcessTransport()
        await transport.start([Subscription("spy", frozenset({"ledger.Posted"}), deliver)])
        relay = Relay(app.db("ledger"), transport, app.clock, Wakeup(), batch_size=2)
        assert [await relay.relay_once() for _ in range(4)] == [2, 2, 1, 0]
        rows = await app.outbox()
        assert [[e.id for e in batch] for batch in batches] == [
            [rows[0]["event_id"], rows[1]["event_id"]],
            [rows[2]["event_id"], rows[3]["event_id"]],
            [rows[4]["event_id"]],
        ]
        assert all(r["published_at"] is not None for r in rows)


async def test_a_refusing_transport_leaves_events_in_the_outbox_until_it_recovers(
    empty_database_url: str, tmp_path: Path
) -> None:
    transport = FlakyTransport()
    async with event_app(empty_database_url, tmp_path, transport=transport) as app:
        transport.down = True
        await app.ledger.post_many([10, 20])
        await app.worker.settle()

        rows = await app.outbox()
        assert [r["published_at"] for r in rows] == [None, None]
        assert [r["attempts"] for r in rows] == [1, 1]
        assert all(r["last_error"] == "TransportUnavailable: broker down" for r in rows)
        for r in rows:  # backoff from the clock: a second at most, a tenth of it at least
            assert START + RELAY_BASE * 0.1 <= r["next_attempt_at"] <= START + RELAY_BASE
        assert await app.inbox_rows() == []
        assert await app.effects() == (0, 0, 0)

        refused = transport.refused
        await app.worker.settle()  # not due yet: the relay does not even try
        assert transport.refused == refused

        app.clock.advance(RELAY_BASE)
        await app.worker.settle()  # due, and refused again: the backoff doubles
        rows = await app.outbox()
        assert transport.refused == refused + 1
        assert [r["attempts"] for r in rows] == [2, 2]
        for r in rows:
            assert (
                app.clock.now() + RELAY_BASE * 0.2 <= r["next_attempt_at"] <= app.clock.now() + RELAY_BASE * 2
            )

        transport.down = False
        await app.worker.settle()  # recovered, but the rows wait out their backoff
        assert [r["published_at"] for r in await app.outbox()] == [None, None]

        app.clock.advance(RELAY_BASE * 2)
        await app.worker.settle()
        rows = await app.outbox()
        assert [r["published_at"] for r in rows] == [app.clock.now()] * 2
        assert all(r["last_error"] is None for r in rows)
        assert transport.accepted_ids[:2] == [r["event_id"] for r in rows]
        assert await app.effects() == (30, 2, 2)  # nothing lost, nothing doubled


async def test_events_behind_a_backing_off_event_wait_their_turn(
    empty_database_url: str, tmp_path: Path
) -> None:
    """A publisher's events reach the broker in the order they were committed, outage or not."""
    transport = FlakyTransport()
    async with event_app(empty_database_url, tmp_path, transport=transport) as app:
        transport.down = True
        await app.ledger.post(1)
        await app.worker.settle()
        transport.down = False
        await app.ledger.post(2)  # committed after the first failed; the broker is back
        await app.worker.settle()
        assert transport.accepted_ids == []  # 2 may not overtake 1, which is still backing off

        app.clock.advance(RELAY_BASE)
        await app.worker.settle()
        rows = await app.outbox()
        assert [e.amount for e in decode_payloads(rows, Posted)] == [1, 2]  # type: ignore[attr-defined]
        assert transport.accepted_ids[:2] == [r["event_id"] for r in rows]


async def test_two_relays_share_the_outbox_and_every_event_is_applied_once(
    backend: str, empty_database_url: str, tmp_path: Path
) -> None:
    """Two worker processes on one database. PostgreSQL: rows are claimed SKIP LOCKED, so no event is
    published twice. SQLite: a row may be published twice; the inbox makes that harmless."""

    class SlowTransport(FlakyTransport):
        async def publish(self, envelopes: Sequence[Envelope]) -> None:
            await asyncio.sleep(0.02)  # hold the claimed rows while the other relay looks
            await super().publish(envelopes)

    first_transport, second_transport = SlowTransport(), SlowTransport()
    async with (
        event_app(empty_database_url, tmp_path / "a", transport=first_transport) as first,
        event_app(empty_database_url, tmp_path / "b", transport=second_transport, prepare=False) as second,
    ):
        for start in range(0, 40, 10):
            await first.ledger.post_many(list(range(start, start + 10)))
        relays = [
            Relay(app.db("ledger"), transport, app.clock, Wakeup(), batch_size=5)
            for app, transport in ((first, first_transport), (second, second_transport))
        ]
        for app in (first, second):
            await app.transport.start(app.worker.subscriptions())

        async def drain(relay: Relay) -> None:
            while await relay.relay_once():
                pass

        await asyncio.gather(*(drain(relay) for relay in relays))
        ids = [r["event_id"] for r in await first.outbox()]
        published_once = first_transport.accepted_ids + second_transport.accepted_ids
        assert set(published_once) == set(ids)
        if backend == "postgres":
            assert sorted(published_once) == sorted(ids)  # no event published twice
            assert first_transport.accepted  # and both did work
            assert second_transport.accepted
        await first.inbox().drain()
        await second.inbox().drain()
        assert await first.effects() == (sum(range(40)), 40, 40)
