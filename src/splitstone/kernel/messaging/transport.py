"""Transports move envelopes from a publisher's relay to the inboxes of the modules that subscribe.

A transport's `publish` returns only once every envelope is durably accepted (a subscriber's inbox row,
or a JetStream ack): only then does the relay mark the outbox rows published.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol
from uuid import UUID

from splitstone.kernel.events import Envelope

Deliver = Callable[[Sequence[Envelope]], Awaitable[None]]


@dataclass(frozen=True)
class Subscription:
    """One subscribing module's interest: the events it handles, and how to put them in its inbox."""

    module: str
    event_names: frozenset[str]
    deliver: Deliver


class Transport(Protocol):
    async def start(self, subscriptions: Sequence[Subscription]) -> None:
        """Begin delivering published envelopes to these local subscriptions."""
        ...

    async def publish(self, envelopes: Sequence[Envelope]) -> None:
        """Accept envelopes durably, or raise; never accept some silently."""
        ...

    async def close(self) -> None: ...


class TransportUnavailable(RuntimeError):
    """The transport cannot accept events now; the outbox keeps them and the relay retries.

    `accepted` names the envelopes of the batch that were accepted nonetheless, so the relay marks
    those published and retries only the others.
    """

    def __init__(self, message: str, *, accepted: frozenset[UUID] = frozenset()) -> None:
        super().__init__(message)
        self.accepted = accepted


class InProcessTransport:
    """Publisher and subscribers in one process: publishing is writing into each subscriber's inbox."""

    def __init__(self) -> None:
        self._subscriptions: list[Subscription] | None = None

    async def start(self, subscriptions: Sequence[Subscription]) -> None:
        self._subscriptions = list(subscriptions)

    async def publish(self, envelopes: Sequence[Envelope]) -> None:
        if self._subscriptions is None:
            # Accepting before the subscribers are known would mark events published that reached nobody.
            raise TransportUnavailable("the in-process transport is not started")
        for subscription in self._subscriptions:
            wanted = [e for e in envelopes if e.name in subscription.event_names]
            if wanted:
                await subscription.deliver(wanted)

    async def close(self) -> None:
        self._subscriptions = None
