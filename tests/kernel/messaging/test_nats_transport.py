"""The NATS JetStream transport: what it accepts, what it delivers, and that events flow end to end.

The first tests talk to the transport alone (a recording subscription stands in for an inbox); the
others run the `ledger`/`tally` test modules on each database backend with a worker over NATS, where
`tally`'s handler is not idempotent on its own, so an event applied twice would show.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest
from sqlalchemy import func, select

from splitstone.kernel.container import Container
from splitstone.kernel.events import Envelope
from splitstone.kernel.messaging.inbox import inbox_counts
from splitstone.kernel.messaging.nats import (
    NatsTransport,
    consumer_name,
    envelope_from,
    stream_name,
    subject_for,
)
from splitstone.kernel.messaging.tables import outbox
from splitstone.kernel.messaging.transport import Subscription, TransportUnavailable
from splitstone.kernel.messaging.worker import Worker
from tests.kernel.messaging.conftest import connect, consumer_caught_up, stream_messages
from tests.support.eventapp import MODULES, Ledger, Posted, Tally, prepare, settings_for

POSTED = "ledger.Posted"


async def wait_until(check: Callable[[], bool | Awaitable[bool]], what: str, *, within: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not await _value(check()):
        if loop.time() > deadline:
            raise AssertionError(f"not true within {within}s: {what}")
        await asyncio.sleep(0.05)


def envelope(amount: int = 1) -> Envelope:
    return Envelope.of(Posted(occurred_at=datetime.now(UTC), aggregate_id=uuid4(), amount=amount))


class Recorder:
    """A stand-in inbox: records what it is given, and can refuse the first deliveries."""

    def __init__(self, *, refuse: int = 0) -> None:
        self.delivered: list[Envelope] = []
        self.calls = 0
        self._refuse = refuse

    async def deliver(self, envelopes: Sequence[Envelope]) -> None:
        self.calls += 1
        if self.calls <= self._refuse:
            raise ConnectionError("the inbox database is down")
        self.delivered.extend(envelopes)

    def subscription(self) -> Subscription:
        return Subscription("tally", frozenset({POSTED}), self.deliver)


@pytest.fixture
async def transports() -> AsyncIterator[list[NatsTransport]]:
    """Transports a test starts; closed afterwards."""
    started: list[NatsTransport] = []
    yield started
    for transport in started:
        await transport.close()


async def started(
    transports: list[NatsTransport], url: str, prefix: str, recorder: Recorder, **options: object
) -> NatsTransport:
    transport = NatsTransport(url, prefix=prefix, publishers=["ledger"], **options)
    transports.append(transport)
    await transport.start([recorder.subscription()])
    return transport


# --- the transport alone ------------------------------------------------------------------------------


def test_names_map_events_to_streams_subjects_and_consumers() -> None:
    assert stream_name("splitstone", "ledger") == "splitstone_ledger"
    assert subject_for("splitstone", POSTED) == "splitstone.events.ledger.Posted"
    assert consumer_name("tally", POSTED) == "tally-ledger-Posted"
    with pytest.raises(ValueError, match="subject"):
        subject_for("splitstone", "ledger.Bad Name")


def test_an_envelope_survives_the_trip_through_headers() -> None:
    sent = envelope(42)
    headers = {
        "Nats-Msg-Id": str(sent.id),
        "Splitstone-Event": sent.name,
        "Splitstone-Event-Version": str(sent.version),
        "Splitstone-Aggregate-Id": str(sent.aggregate_id),
        "Splitstone-Occurred-At": sent.occurred_at.isoformat(),
    }
    assert envelope_from(headers, sent.payload.encode()) == sent
    with pytest.raises(ValueError, match="Splitstone-Event"):
        envelope_from({k: v for k, v in headers.items() if k != "Splitstone-Event"}, b"{}")


async def test_published_envelopes_reach_the_subscription_intact(
    nats_url: str, nats_prefix: str, transports: list[NatsTransport]
) -> None:
    recorder = Recorder()
    transport = await started(transports, nats_url, nats_prefix, recorder)
    assert transport.ready
    sent = [envelope(i) for i in range(50)]

    await transport.publish(sent)

    await wait_until(lambda: len(recorder.delivered) >= 50, "all 50 envelopes delivered")
    assert sorted(recorder.delivered, key=lambda e: e.id) == sorted(sent, key=lambda e: e.id)
    assert await stream_messages(nats_url, stream_name(nats_prefix, "ledger")) == 50


async def test_the_same_event_published_twice_is_stored_and_delivered_once(
    nats_url: str, nats_prefix: str, transports: list[NatsTransport]
) -> None:
    recorder = Recorder()
    transport = await started(transports, nats_url, nats_prefix, recorder)
    first, second = envelope(1), envelope(2)

    await transport.publish([first])
    await transport.publish([first, second])  # a relay retrying a batch JetStream already took part of

    stream = stream_name(nats_prefix, "ledger")
    await wait_until(lambda: len(recorder.delivered) >= 2, "both events delivered")
    await wait_until(lambda: consumer_caught_up(nats_url, stream, consumer_name("tally", POSTED)), "acked")
    assert await stream_messages(nats_url, stream) == 2
    assert sorted(e.id for e in recorder.delivered) == sorted([first.id, second.id])


async def test_an_inbox_failure_is_nacked_and_the_events_come_again(
    nats_url: str, nats_prefix: str, transports: list[NatsTransport]
) -> None:
    recorder = Recorder(refuse=2)
    transport = await started(transports, nats_url, nats_prefix, recorder, redelivery_delay=(0.1, 0.5))
    sent = envelope(7)

    await transport.publish([sent])

    await wait_until(lambda: bool(recorder.delivered), "delivered after two refusals", within=10)
    assert recorder.calls == 3
    assert recorder.delivered == [sent]
    stream = stream_name(nats_prefix, "ledger")
    await wait_until(lambda: consumer_caught_up(nats_url, stream, consumer_name("tally", POSTED)), "acked")


async def test_a_message_that_is_no_event_is_terminated_and_the_rest_flow_on(
    nats_url: str, nats_prefix: str, transports: list[NatsTransport]
) -> None:
    recorder = Recorder()
    transport = await started(transports, nats_url, nats_prefix, recorder)
    client = await connect(nats_url)
    try:
        await client.jetstream().publish(subject_for(nats_prefix, POSTED), b"not an envelope")
    finally:
        await client.close()
    sent = envelope(3)

    await transport.publish([sent])

    stream = stream_name(nats_prefix, "ledger")
    await wait_until(lambda: consumer_caught_up(nats_url, stream, consumer_name("tally", POSTED)), "settled")
    assert recorder.delivered == [sent]


async def test_without_a_broker_start_returns_and_publish_refuses(transports: list[NatsTransport]) -> None:
    recorder = Recorder()
    nowhere = "nats://127.0.0.1:1"  # nothing listens on port 1
    loop = asyncio.get_running_loop()
    began = loop.time()
    transport = await started(transports, nowhere, "tnowhere", recorder, connect_wait=0.3)
    assert loop.time() - began < 3
    assert not transport.ready

    with pytest.raises(TransportUnavailable, match="not connected to NATS"):
        await transport.publish([envelope()])


# --- the test modules over NATS, on each database backend ---------------------------------------------


@pytest.fixture
async def app(empty_database_url: str, nats_url: str, nats_prefix: str) -> AsyncIterator[Container]:
    container = Container.build(
        settings_for(empty_database_url, transport="nats", nats_url=nats_url, prefix=nats_prefix), MODULES
    )
    await prepare(container)
    try:
        yield container
    finally:
        await container.aclose()


@pytest.fixture
async def running(app: Container) -> AsyncIterator[Worker]:
    """The worker the settings describe: relays, inboxes and the NATS transport."""
    worker = app.worker()
    assert isinstance(worker.transport, NatsTransport)
    await worker.start()
    try:
        yield worker
    finally:
        await worker.stop()


def parts(app: Container) -> tuple[Ledger, Tally]:
    ledger, tally = app.implementations["ledger"], app.implementations["tally"]
    assert isinstance(ledger, Ledger)
    assert isinstance(tally, Tally)
    return ledger, tally


async def outbox_state(app: Container, module: str) -> tuple[int, int]:
    """(rows, unpublished rows) of a module's outbox."""
    async with app.databases[module].session() as conn:
        row = (
            await conn.execute(
                select(func.count(), func.count().filter(outbox.c.published_at.is_(None))).select_from(outbox)
            )
        ).one()
    return int(row[0]), int(row[1])


async def tally_inbox(app: Container) -> dict[str, int]:
    async with app.databases["tally"].session() as conn:
        return await inbox_counts(conn)


async def test_a_failed_use_case_publishes_nothing_and_committed_ones_apply_once(
    app: Container, running: Worker, nats_url: str, nats_prefix: str
) -> None:
    ledger, tally = parts(app)

    with pytest.raises(RuntimeError, match="failed after publishing"):
        await ledger.post(100, fail_after_publish=True)
    for amount in (1, 2, 3):
        await ledger.post(amount)

    await wait_until(lambda: _equals(tally.applications, 3), "three events applied")
    await wait_until(
        lambda: _equals(lambda: stream_messages(nats_url, stream_name(nats_prefix, "tally")), 3),
        "tally's own three events reached NATS",
    )
    assert await stream_messages(nats_url, stream_name(nats_prefix, "ledger")) == 3
    assert await outbox_state(app, "ledger") == (3, 0)
    assert await tally.total() == 6
    assert await tally.distinct_events() == 3
    assert await tally_inbox(app) == {"done": 3}


async def test_many_events_flow_end_to_end_exactly_once(
    app: Container, running: Worker, nats_url: str, nats_prefix: str
) -> None:
    ledger, tally = parts(app)
    amounts = list(range(1, 501))

    for start in range(0, len(amounts), 100):
        await ledger.post_many(amounts[start : start + 100])

    await wait_until(lambda: _equals(tally.applications, 500), "500 events applied", within=60)
    # tally publishes `Tallied` from inside its handler: through its outbox, to its own stream.
    await wait_until(lambda: _equals(lambda: outbox_state(app, "tally"), (500, 0)), "tally's outbox drained")
    assert await stream_messages(nats_url, stream_name(nats_prefix, "tally")) == 500
    assert await stream_messages(nats_url, stream_name(nats_prefix, "ledger")) == 500
    assert await outbox_state(app, "ledger") == (500, 0)
    assert await tally.total() == sum(amounts)
    assert await tally.distinct_events() == 500
    assert await tally_inbox(app) == {"done": 500}


async def test_a_redelivered_event_has_no_second_effect(
    app: Container, nats_url: str, nats_prefix: str
) -> None:
    # A duplicate window of one second, so the test can also republish *past* it, as a relay does after
    # a long outage: then JetStream stores a second copy and only the inbox stands between it and tally.
    transport = NatsTransport(
        nats_url,
        prefix=nats_prefix,
        publishers=[m.name for m in app.modules],
        duplicate_window=timedelta(seconds=1),
    )
    worker = Worker.for_container(app, transport=transport)
    await worker.start()
    try:
        ledger, tally = parts(app)
        await ledger.post(5)
        await wait_until(lambda: _equals(tally.applications, 1), "the event applied")
        async with app.databases["ledger"].session() as conn:
            row = (await conn.execute(select(outbox))).mappings().one()
        sent = Envelope(
            row["event_id"],
            row["event_name"],
            row["event_version"],
            row["aggregate_id"],
            row["occurred_at"],
            row["payload"],
        )
        stream = stream_name(nats_prefix, "ledger")

        await asyncio.sleep(1.2)  # past the duplicate window
        await transport.publish([sent])  # stored again: a second copy in the stream
        await transport.publish([sent])  # inside the window again: dropped by JetStream
        await worker.subscriptions()[0].deliver([sent])  # and straight into the inbox, once more

        assert await stream_messages(nats_url, stream) == 2
        await wait_until(
            lambda: consumer_caught_up(nats_url, stream, consumer_name("tally", POSTED)), "acked"
        )
        await worker.settle()
        assert await tally.applications() == 1
        assert await tally.total() == 5
        assert await tally_inbox(app) == {"done": 1}
    finally:
        await worker.stop()


async def _value(result: bool | Awaitable[bool]) -> bool:
    return await result if inspect.isawaitable(result) else bool(result)


async def _equals(read: Callable[[], Awaitable[object]], expected: object) -> bool:
    return await read() == expected
