"""Domain events: contract types, and the in-process publish API modules use.

Events are pydantic models declared in the publishing module's `api`. They are delivered after the
publishing transaction commits (see `UnitOfWork`). Delivery here is in-process; the durable outbox,
inbox and NATS transport replace `InProcessEventBus` without changing module code.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime
from typing import Any, ClassVar, Protocol, TypeVar
from uuid import UUID

import structlog
from pydantic import BaseModel, ConfigDict, Field
from uuid6 import uuid7

log = structlog.get_logger("splitstone.events")


class Event(BaseModel):
    """Base of every integration event. Subclasses set `name` ("module.EventName") and `version`."""

    model_config = ConfigDict(frozen=True)

    name: ClassVar[str] = ""
    version: ClassVar[int] = 1

    id: UUID = Field(default_factory=uuid7, description="UUIDv7: unique, and ordered by creation time.")
    occurred_at: datetime
    aggregate_id: UUID

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        if not cls.name or "." not in cls.name:
            raise TypeError(f"{cls.__qualname__} must set name = '<module>.<EventName>'")


E = TypeVar("E", bound=Event)
Handler = Callable[[Any], Awaitable[None]]


class EventPublisher(Protocol):
    async def publish(self, events: Iterable[Event]) -> None:
        """Deliver committed events to their subscribers."""
        ...


class InProcessEventBus:
    """Calls every local subscriber of an event, one after another, after the publisher committed.

    A failing handler is logged and does not stop the others nor fail the publisher.
    """

    def __init__(self, *, log_payloads: bool = False) -> None:
        self._handlers: dict[type[Event], list[Handler]] = defaultdict(list)
        self._log_payloads = log_payloads

    def subscribe(self, event_type: type[E], handler: Callable[[E], Awaitable[None]]) -> None:
        self._handlers[event_type].append(handler)

    def subscribers(self, event_type: type[Event]) -> list[Handler]:
        return list(self._handlers.get(event_type, ()))

    async def publish(self, events: Iterable[Event]) -> None:
        for event in events:
            if self._log_payloads:
                # Development only: with no notifications module, this is where tokens can be read.
                log.info("event published", event_name=event.name, payload=event.model_dump(mode="json"))
            else:
                log.debug("event published", event_name=event.name, event_id=str(event.id))
            for handler in self._handlers.get(type(event), ()):
                try:
                    await handler(event)
                except Exception:
                    log.exception("event handler failed", event_name=event.name, handler=_name(handler))


class RecordingEventBus(InProcessEventBus):
    """An in-process bus that also keeps every published event: for tests."""

    def __init__(self) -> None:
        super().__init__()
        self.published: list[Event] = []

    async def publish(self, events: Iterable[Event]) -> None:
        batch = list(events)
        self.published.extend(batch)
        await super().publish(batch)

    def of_type(self, event_type: type[E]) -> list[E]:
        return [e for e in self.published if isinstance(e, event_type)]

    def last(self, event_type: type[E]) -> E:
        found = self.of_type(event_type)
        if not found:
            raise AssertionError(f"no {event_type.name} event was published")
        return found[-1]


def _name(handler: Handler) -> str:
    return getattr(handler, "__qualname__", repr(handler))
