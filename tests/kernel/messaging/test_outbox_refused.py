"""One event the transport always refuses (say, over the broker's size limit) must not stop the rest."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from uuid import UUID

from splitstone.kernel.events import Envelope
from splitstone.kernel.messaging.transport import InProcessTransport, Subscription, TransportUnavailable
from tests.kernel.messaging.helpers import event_app


class RefusesOne:
    """Accepts every envelope but those of one event: a permanent, per-message refusal."""

    def __init__(self) -> None:
        self._inner = InProcessTransport()
        self.poison: UUID | None = None

    async def start(self, subscriptions: Sequence[Subscription]) -> None:
        await self._inner.start(subscriptions)

    async def publish(self, envelopes: Sequence[Envelope]) -> None:
        accepted = [e for e in envelopes if e.id != self.poison]
        await self._inner.publish(accepted)
        if len(accepted) < len(envelopes):
            raise TransportUnavailable("message too large", accepted=frozenset(e.id for e in accepted))

    async def close(self) -> None:
        await self._inner.close()


async def test_the_accepted_part_of_a_batch_is_published_and_only_the_refused_event_waits(
    empty_database_url: str, tmp_path: Path
) -> None:
    transport = RefusesOne()
    async with event_app(empty_database_url, tmp_path, transport=transport) as app:
        await app.ledger.post(1)
        transport.poison = (await app.outbox())[0]["event_id"]
        await app.ledger.post_many([2, 3])
        await app.worker.settle()

        rows = await app.outbox()
        assert [r["published_at"] is None for r in rows] == [True, False, False]
        assert rows[0]["attempts"] == 1
        assert rows[0]["last_error"] == "TransportUnavailable: message too large"
        assert await app.effects() == (5, 2, 2)  # 2 and 3 handled once each


async def test_a_refused_event_holds_back_later_ones_until_it_is_parked(
    empty_database_url: str, tmp_path: Path
) -> None:
    transport = RefusesOne()
    async with event_app(empty_database_url, tmp_path, transport=transport) as app:
        await app.ledger.post(1)
        transport.poison = (await app.outbox())[0]["event_id"]
        relay = app.relay("ledger")
        await app.start_transport()
        park_after = relay._park_after

        # While the refused event backs off, the events behind it wait: commit order is kept.
        await relay.relay_once()
        await app.ledger.post(2)
        assert await relay.relay_once() == 0
        assert [r["published_at"] is None for r in await app.outbox()] == [True, True]

        # Each time it is due again it is tried first, and the events behind it go in the same batch.
        for _ in range(park_after - 1):
            app.clock.advance(timedelta(minutes=1))
            await relay.relay_once()
        rows = await app.outbox()
        assert [r["published_at"] is None for r in rows] == [True, False]
        assert rows[0]["attempts"] == park_after
        assert rows[0]["next_attempt_at"] > app.clock.now()

        # After `park_after` refusals it is parked: backing off, it no longer holds anything back.
        await app.ledger.post(3)
        assert await relay.relay_once() == 1
        rows = await app.outbox()
        assert [r["published_at"] is None for r in rows] == [True, False, False]
        await app.worker.settle()
        assert await app.effects() == (5, 2, 2)
