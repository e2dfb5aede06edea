"""Domain events: the contract type, its wire form, and the catalog of known events.

Events are pydantic models declared in the publishing module's `api`. A unit of work writes them to
its module's outbox in the same transaction as the state change; the relay hands them to a transport,
and each subscribing module's inbox runs its handler once per event (see `kernel.messaging`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, TypeVar
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field
from uuid6 import uuid7


class Event(BaseModel):
    """Base of every integration event. Subclasses set `name` ("module.EventName") and `version`."""

    model_config = ConfigDict(frozen=True)

    name: ClassVar[str] = ""
    version: ClassVar[int] = 1

    id: UUID = Field(default_factory=uuid7, description="UUIDv7: unique, and ordered by creation time.")
    occurred_at: datetime
    aggregate_id: UUID

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        if not cls.name or "." not in cls.name:
            raise TypeError(f"{cls.__qualname__} must set name = '<module>.<EventName>'")

    @property
    def publisher(self) -> str:
        return self.name.split(".", 1)[0]


E = TypeVar("E", bound=Event)


@dataclass(frozen=True)
class Envelope:
    """An event as it travels: its identity and routing fields, and its JSON payload (the whole event).

    `traceparent` and `request_id` are the trace its handlers continue: the next hop of the context
    that published it (see `kernel.tracing`), or None when it was published outside any trace.
    """

    id: UUID
    name: str
    version: int
    aggregate_id: UUID
    occurred_at: datetime
    payload: str
    traceparent: str | None = None
    request_id: str | None = None

    @classmethod
    def of(cls, event: Event) -> Envelope:
        return cls(
            id=event.id,
            name=event.name,
            version=event.version,
            aggregate_id=event.aggregate_id,
            occurred_at=event.occurred_at,
            payload=event.model_dump_json(),
        )

    @property
    def publisher(self) -> str:
        return self.name.split(".", 1)[0]


class UnknownEvent(LookupError):
    """An envelope names an event no module in this process declares."""


class EventCatalog:
    """Event types by name, for turning envelopes back into events."""

    def __init__(self, event_types: Iterable[type[Event]] = ()) -> None:
        self._types: dict[str, type[Event]] = {}
        for event_type in event_types:
            self.add(event_type)

    def add(self, event_type: type[Event]) -> None:
        known = self._types.get(event_type.name)
        if known is not None and known is not event_type:
            raise ValueError(f"two event types are named {event_type.name!r}")
        self._types[event_type.name] = event_type

    def decode(self, envelope: Envelope) -> Event:
        try:
            event_type = self._types[envelope.name]
        except KeyError:
            raise UnknownEvent(f"no event type named {envelope.name!r} is known here") from None
        return event_type.model_validate_json(envelope.payload)

    def names(self) -> list[str]:
        return sorted(self._types)


class EventRecorder:
    """Keeps every event committed in this process, in commit order: for tests and for the dev log."""

    def __init__(self) -> None:
        self.published: list[Event] = []

    def committed(self, events: Sequence[Event]) -> None:
        self.published.extend(events)

    def of_type(self, event_type: type[E]) -> list[E]:
        return [e for e in self.published if isinstance(e, event_type)]

    def last(self, event_type: type[E]) -> E:
        found = self.of_type(event_type)
        if not found:
            raise AssertionError(f"no {event_type.name} event was published")
        return found[-1]
