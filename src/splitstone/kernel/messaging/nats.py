"""The NATS JetStream transport: events between processes, durable on the broker.

Names (`prefix` is `SPLITSTONE_NATS_STREAM_PREFIX`, one per installation; tests use one per test):

- one stream per publishing module, `{prefix}_{module}`, holding the subjects `{prefix}.events.{module}.>`;
- an event's subject is `{prefix}.events.{event name}`: `ledger.Posted` is `splitstone.events.ledger.Posted`
  (the event name already begins with its module, so it is not repeated);
- one durable pull consumer per handler, `{subscriber}-{event name with "-" for "."}` on the publisher's
  stream (`tally-ledger-Posted` on `splitstone_ledger`), filtered on that event's subject. A consumer per
  handler, not per subscribing module, because a consumer filters on several subjects only from
  nats-server 2.10 (`filter_subjects`), and Debian's nats-server is 2.9; it also lets a module start
  handling one more event without touching an existing consumer. Processes that run the same module
  bind the same durable consumer and share its messages.

Publishing (the relay): every envelope is published concurrently with `Nats-Msg-Id` = the event id and
`Nats-Expected-Stream`, and `publish` returns only when every one has a PubAck (a duplicate ack counts:
the stream already holds it). Anything else (no connection, a timeout, no stream answering) raises
`TransportUnavailable`, and the outbox keeps the rows and retries them with a backoff. An event published
in a trace also carries it, as HTTP does: headers `traceparent` and `X-Request-ID`.

Consuming: a fetch loop per consumer hands a batch to the subscription's `deliver` (which commits the
inbox rows) and only then acks each message; if `deliver` fails, each message is nak'ed with a growing
delay. The consumer never gives up on a message (`max_deliver` unbounded): a `deliver` failure is the
subscriber's database being unavailable, never a bad event (handler failures, retries and dead letters
happen later, in the inbox), so a bound would only turn a long database outage into lost events. A
message that cannot be read as an envelope at all is terminated and logged as an error.

Redelivery is harmless by construction: JetStream drops a republished event inside the stream's duplicate
window (2 minutes by default), and past that window, or when an ack is lost, the inbox's primary key
(event id, handler) turns the second delivery into a no-op.

The broker being down never stops the process: `start` waits a little for the first connection, then keeps
connecting in the background (forever, with a short wait between attempts) while `publish` raises.

Streams keep events 7 days (limits retention, file storage); consumers start from the beginning of the
stream (deliver policy `all`), so a subscriber that starts after its publisher misses nothing, and a new
handler first receives what its event's stream still holds.

Durability on the broker: streams use file storage, but by default nats-server fsyncs only every 2 minutes
(`sync_interval`), so a power loss can lose writes it had acknowledged, after the relay marked them
published. Production servers should run with `jetstream { sync_interval: always }` (available from
nats-server 2.10; see docs/architecture.md, "NATS JetStream durability").
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

import nats.errors
import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import APIError, BadRequestError, NoStreamResponseError, NotFoundError

from splitstone.kernel.events import Envelope
from splitstone.kernel.messaging.crashpoints import crashpoint
from splitstone.kernel.messaging.transport import Subscription, TransportUnavailable

log = structlog.get_logger("splitstone.nats")

MSG_ID = "Nats-Msg-Id"
EVENT_NAME = "Splitstone-Event"
EVENT_VERSION = "Splitstone-Event-Version"
AGGREGATE_ID = "Splitstone-Aggregate-Id"
OCCURRED_AT = "Splitstone-Occurred-At"
# The trace the event's handlers continue (as on HTTP); absent for an event published outside a trace.
TRACEPARENT = "traceparent"
REQUEST_ID = "X-Request-ID"

# JetStream's error code for "stream name already in use with a different configuration".
_STREAM_NAME_EXISTS = 10058


def stream_name(prefix: str, module: str) -> str:
    """The stream that holds `module`'s events."""
    return _checked_name(f"{prefix}_{module}")


def stream_subjects(prefix: str, module: str) -> str:
    return f"{prefix}.events.{module}.>"


def subject_for(prefix: str, event_name: str) -> str:
    """The subject of an event: `{prefix}.events.<module>.<EventName>`."""
    subject = f"{prefix}.events.{event_name}"
    if any(not token or any(c in token for c in "*> \t\r\n") for token in subject.split(".")):
        raise ValueError(f"event name {event_name!r} does not make a valid NATS subject")
    return subject


def consumer_name(subscriber: str, event_name: str) -> str:
    """The durable consumer of one handler, on the stream of the event's publisher."""
    return _checked_name(f"{subscriber}-{event_name.replace('.', '-')}")


def _checked_name(name: str) -> str:
    if not name or any(c in name for c in ">*. /\\\t\r\n"):
        raise ValueError(f"not a valid JetStream name: {name!r}")
    return name


def _publisher(event_name: str) -> str:
    return event_name.split(".", 1)[0]


@dataclass(frozen=True)
class _Consumer:
    """One handler's durable consumer and the local subscription its messages go to."""

    subscription: Subscription
    event_name: str
    stream: str
    subject: str
    name: str


class MalformedMessage(ValueError):
    """A message on an event subject that does not carry an envelope."""


class NatsTransport:
    """The `Transport` over NATS JetStream (see the module docstring for names and guarantees)."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str,
        publishers: Sequence[str],
        publish_timeout: float = 5.0,
        connect_wait: float = 5.0,
        duplicate_window: timedelta = timedelta(minutes=2),
        max_age: timedelta = timedelta(days=7),
        ack_wait: timedelta = timedelta(seconds=30),
        fetch_batch: int = 256,
        fetch_wait: float = 1.0,
        redelivery_delay: tuple[float, float] = (1.0, 60.0),
    ) -> None:
        _checked_name(prefix)
        self._url = url
        self._prefix = prefix
        self._publishers = sorted(set(publishers))
        self._publish_timeout = publish_timeout
        self._connect_wait = connect_wait
        self._duplicate_window = duplicate_window.total_seconds()
        self._max_age = max_age.total_seconds()
        self._ack_wait = ack_wait.total_seconds()
        self._fetch_batch = fetch_batch
        self._fetch_wait = fetch_wait
        self._redelivery_delay = redelivery_delay
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._ready_streams: set[str] = set()
        self._consumers: list[_Consumer] = []
        self._ready = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False

    @property
    def prefix(self) -> str:
        return self._prefix

    @property
    def ready(self) -> bool:
        """Connected, with every stream and consumer in place."""
        return self._ready.is_set() and self._nc is not None and self._nc.is_connected

    # --- lifecycle ------------------------------------------------------------------------------------

    async def start(self, subscriptions: Sequence[Subscription]) -> None:
        """Connect and set up streams and consumers, waiting at most `connect_wait` for it.

        If the broker is not there yet, this returns anyway and keeps trying in the background.
        """
        if self._tasks:
            raise RuntimeError("NatsTransport.start called twice")
        self._consumers = [
            _Consumer(
                subscription=s,
                event_name=name,
                stream=stream_name(self._prefix, _publisher(name)),
                subject=subject_for(self._prefix, name),
                name=consumer_name(s.module, name),
            )
            for s in subscriptions
            for name in sorted(s.event_names)
        ]
        self._ready.clear()
        self._tasks.append(asyncio.create_task(self._run(), name="splitstone-nats"))
        try:
            await asyncio.wait_for(self._ready.wait(), self._connect_wait)
        except TimeoutError:
            log.warning(
                "NATS is not reachable yet; events stay in the outbox until it is",
                url=self._url,
                waited_seconds=self._connect_wait,
            )

    async def close(self) -> None:
        self._closing = True
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        nc, self._nc, self._js = self._nc, None, None
        self._ready.clear()
        self._ready_streams.clear()
        if nc is not None and not nc.is_closed:
            if nc.is_connected:
                with contextlib.suppress(Exception):
                    await nc.flush(timeout=2)  # pending acks
            await nc.close()
        self._closing = False

    async def _run(self) -> None:
        try:
            await self._connect_and_set_up()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("the NATS transport stopped; events stay in the outbox", url=self._url)

    async def _connect_and_set_up(self) -> None:
        nc = Client()
        self._nc = nc
        # Retries forever, also for the first connection (max_reconnect_attempts=-1).
        await nc.connect(
            self._url,
            name="splitstone",
            allow_reconnect=True,
            max_reconnect_attempts=-1,
            reconnect_time_wait=1,
            connect_timeout=2,
            ping_interval=10,
            max_outstanding_pings=3,
            error_cb=self._on_error,
            disconnected_cb=self._on_disconnected,
            reconnected_cb=self._on_reconnected,
        )
        self._js = nc.jetstream(timeout=self._publish_timeout)
        log.info("connected to NATS", url=self._url, server_version=_version(nc))
        await self._set_up()
        self._ready.set()
        for consumer in self._consumers:
            self._tasks.append(
                asyncio.create_task(self._consume(consumer), name=f"splitstone-nats-{consumer.name}")
            )

    async def _set_up(self) -> None:
        """Streams for every publisher we know of, and our consumers; retried until it works."""
        modules = sorted({*self._publishers, *(_publisher(c.event_name) for c in self._consumers)})
        failures = 0
        while True:
            try:
                for module in modules:
                    await self._ensure_stream(module)
                for consumer in self._consumers:
                    await self._ensure_consumer(consumer)
                return
            except asyncio.CancelledError:
                raise
            except Exception as error:
                failures += 1
                log.warning(
                    "cannot set up JetStream streams and consumers yet; retrying",
                    url=self._url,
                    attempt=failures,
                    error=_describe(error),
                )
                await asyncio.sleep(min(30.0, 0.5 * 2 ** min(failures, 6)))

    async def _ensure_stream(self, module: str) -> None:
        js = self._jetstream()
        name = stream_name(self._prefix, module)
        wanted = StreamConfig(
            name=name,
            description=f"splitstone: events published by module {module}",
            subjects=[stream_subjects(self._prefix, module)],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            discard=DiscardPolicy.OLD,
            max_age=self._max_age,
            duplicate_window=self._duplicate_window,
        )
        try:
            await js.add_stream(wanted)
        except BadRequestError as error:
            if error.err_code != _STREAM_NAME_EXISTS:
                raise
            # It exists with another configuration: bring our settings up to date and keep the rest
            # (replicas, placement, size limits) as an operator may have set them.
            current = (await js.stream_info(name)).config
            updated = current.evolve(
                subjects=wanted.subjects,
                retention=wanted.retention,
                discard=wanted.discard,
                max_age=wanted.max_age,
                duplicate_window=wanted.duplicate_window,
            )
            if updated != current:
                log.info("updating JetStream stream", stream=name)
                await js.update_stream(updated)
        self._ready_streams.add(module)

    async def _ensure_consumer(self, consumer: _Consumer) -> None:
        js = self._jetstream()
        config = ConsumerConfig(
            name=consumer.name,
            durable_name=consumer.name,
            description=f"splitstone: {consumer.subscription.module} handles {consumer.event_name}",
            filter_subject=consumer.subject,
            deliver_policy=DeliverPolicy.ALL,
            ack_policy=AckPolicy.EXPLICIT,
            # Redelivered after this long without an ack (the process died holding it), or after the
            # delay of a nak. Never given up on: see the module docstring. (No `backoff` list: the
            # server accepts one only with a bounded `max_deliver`.)
            ack_wait=self._ack_wait,
            max_deliver=-1,
            max_ack_pending=max(1000, self._fetch_batch * 4),
        )
        try:
            await js.add_consumer(consumer.stream, config)
        except BadRequestError as error:
            # It may exist with settings this server cannot change in place: then use it as it is.
            try:
                await js.consumer_info(consumer.stream, consumer.name)
            except NotFoundError:
                raise error from None
            log.warning(
                "JetStream consumer exists with other settings; using it as it is",
                stream=consumer.stream,
                consumer=consumer.name,
                error=_describe(error),
            )

    def _jetstream(self) -> JetStreamContext:
        if self._js is None:
            raise TransportUnavailable(f"not connected to NATS at {self._url}")
        return self._js

    # --- publishing -----------------------------------------------------------------------------------

    async def publish(self, envelopes: Sequence[Envelope]) -> None:
        """Return once JetStream stored every envelope (or already had it); else raise."""
        if not envelopes:
            return
        nc, js = self._nc, self._js
        if nc is None or js is None or not nc.is_connected:
            raise TransportUnavailable(
                f"not connected to NATS at {self._url}; {len(envelopes)} events stay in the outbox"
            )
        for module in sorted({e.publisher for e in envelopes} - self._ready_streams):
            try:
                await self._ensure_stream(module)
            except Exception as error:
                raise TransportUnavailable(
                    f"cannot set up the JetStream stream for {module} at {self._url}: {_describe(error)}"
                ) from error
        results = await asyncio.gather(*(self._publish_one(js, e) for e in envelopes), return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        if not failures:
            return
        for envelope, result in zip(envelopes, results, strict=True):
            if isinstance(result, NoStreamResponseError):
                self._ready_streams.discard(envelope.publisher)  # deleted? set it up again next time
        raise TransportUnavailable(
            f"NATS at {self._url} did not accept {len(failures)} of {len(envelopes)} events: "
            f"{_describe(failures[0])}",
            accepted=frozenset(
                e.id for e, r in zip(envelopes, results, strict=True) if not isinstance(r, BaseException)
            ),
        ) from failures[0]

    async def _publish_one(self, js: JetStreamContext, envelope: Envelope) -> None:
        headers = {
            MSG_ID: str(envelope.id),
            EVENT_NAME: envelope.name,
            EVENT_VERSION: str(envelope.version),
            AGGREGATE_ID: str(envelope.aggregate_id),
            OCCURRED_AT: envelope.occurred_at.isoformat(),
        }
        if envelope.traceparent is not None:
            headers[TRACEPARENT] = envelope.traceparent
        if envelope.request_id is not None:
            headers[REQUEST_ID] = envelope.request_id
        # `stream=` makes the server refuse the message if the subject belongs to another stream.
        await js.publish(
            subject_for(self._prefix, envelope.name),
            envelope.payload.encode(),
            timeout=self._publish_timeout,
            stream=stream_name(self._prefix, envelope.publisher),
            headers=headers,
        )

    # --- consuming ------------------------------------------------------------------------------------

    async def _consume(self, consumer: _Consumer) -> None:
        """Fetch, deliver, ack, until cancelled; outages and missing consumers are waited out."""
        pull: JetStreamContext.PullSubscription | None = None
        failures = 0
        busy = False
        while True:
            nc = self._nc
            if nc is None or not nc.is_connected:
                await asyncio.sleep(0.2)
                continue
            try:
                if pull is None:
                    pull = await self._jetstream().pull_subscribe_bind(consumer.name, stream=consumer.stream)
                # Idle, wait for one message (a batch fetch would linger until `fetch_wait` for more);
                # busy, take whole batches.
                batch = self._fetch_batch if busy else 1
                messages = await pull.fetch(batch, timeout=self._fetch_wait)
            except asyncio.CancelledError:
                if pull is not None:
                    with contextlib.suppress(Exception):
                        await pull.unsubscribe()
                raise
            except TimeoutError:
                busy = False  # nothing new
                continue
            except Exception as error:
                failures += 1
                (log.warning if failures == 1 else log.debug)(
                    "fetching from JetStream failed; retrying",
                    consumer=consumer.name,
                    attempt=failures,
                    error=_describe(error),
                )
                if isinstance(error, NotFoundError | nats.errors.NoRespondersError | APIError):
                    # The consumer (or its stream) is gone, e.g. a broker that lost its store.
                    with contextlib.suppress(Exception):
                        await self._ensure_stream(_publisher(consumer.event_name))
                        await self._ensure_consumer(consumer)
                await asyncio.sleep(min(5.0, 0.1 * 2 ** min(failures, 6)))
                continue
            failures = 0
            busy = True
            await self._hand_over(consumer, messages)

    async def _hand_over(self, consumer: _Consumer, messages: Sequence[Msg]) -> None:
        """Deliver a fetched batch to the inbox, then ack it; nak it if the inbox did not take it."""
        accepted: list[Msg] = []
        envelopes: dict[UUID, Envelope] = {}  # a batch can hold one event twice (republished late)
        for msg in messages:
            try:
                envelope = envelope_from(msg.headers, msg.data)
            except MalformedMessage as error:
                log.error(
                    "message is not a splitstone event; terminated",
                    consumer=consumer.name,
                    subject=msg.subject,
                    error=str(error),
                )
                await _settle(msg.term())
                continue
            accepted.append(msg)
            if envelope.name in consumer.subscription.event_names:
                envelopes.setdefault(envelope.id, envelope)
        try:
            if envelopes:
                await consumer.subscription.deliver(list(envelopes.values()))
        except asyncio.CancelledError:
            raise  # unacked: JetStream redelivers after ack_wait
        except Exception as error:
            log.warning(
                "inbox did not take events; JetStream redelivers them",
                consumer=consumer.name,
                count=len(accepted),
                error=_describe(error),
            )
            for msg in accepted:
                await _settle(msg.nak(delay=self._nak_delay(msg)))
            return
        crashpoint("nats.after_deliver")
        for msg in accepted:
            await _settle(msg.ack())

    def _nak_delay(self, msg: Msg) -> float:
        first, longest = self._redelivery_delay
        try:
            deliveries = msg.metadata.num_delivered
        except Exception:
            deliveries = 1
        return float(min(longest, first * 2 ** max(0, min(deliveries, 30) - 1)))

    # --- connection callbacks -------------------------------------------------------------------------

    async def _on_error(self, error: Exception) -> None:
        # Every failed reconnect attempt lands here; the disconnect itself is logged once, below.
        connection = OSError | TimeoutError | nats.errors.NoServersError | nats.errors.StaleConnectionError
        if isinstance(error, connection):
            log.debug("NATS connection attempt failed", url=self._url, error=_describe(error))
        else:
            log.warning("NATS client error", url=self._url, error=_describe(error))

    async def _on_disconnected(self) -> None:
        if not self._closing:
            log.warning("disconnected from NATS; reconnecting", url=self._url)

    async def _on_reconnected(self) -> None:
        log.info("reconnected to NATS", url=self._url)


def envelope_from(headers: dict[str, str] | None, data: bytes) -> Envelope:
    """Rebuild an envelope from a message's headers and payload."""
    if not headers:
        raise MalformedMessage("no headers")
    try:
        occurred_at = datetime.fromisoformat(headers[OCCURRED_AT])
        if occurred_at.tzinfo is None:
            raise ValueError(f"{OCCURRED_AT} has no time zone")
        return Envelope(
            id=UUID(headers[MSG_ID]),
            name=headers[EVENT_NAME],
            version=int(headers[EVENT_VERSION]),
            aggregate_id=UUID(headers[AGGREGATE_ID]),
            occurred_at=occurred_at,
            payload=data.decode(),
            # Kept as sent: the inbox drops what does not fit, the handler ignores what is malformed.
            traceparent=headers.get(TRACEPARENT),
            request_id=headers.get(REQUEST_ID),
        )
    except KeyError as missing:
        raise MalformedMessage(f"header {missing} is missing") from None
    except ValueError as error:
        raise MalformedMessage(str(error)) from None


async def _settle(reply: Awaitable[object]) -> None:
    """Send an ack/nak/term; a lost one only means a redelivery, which the inbox absorbs."""
    try:
        await reply
    except Exception as error:
        log.debug("could not acknowledge a JetStream message", error=_describe(error))


def _version(nc: Client) -> str:
    version = nc.connected_server_version
    return f"{version.major}.{version.minor}.{version.patch}"


def _describe(error: BaseException) -> str:
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
