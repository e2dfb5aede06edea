"""Events: named contract types with UUIDv7 ids, delivered in process, a failing handler isolated."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, Protocol
from uuid import UUID

import pytest
from pydantic import ValidationError
from structlog.testing import capture_logs
from uuid6 import uuid7

from splitstone.kernel import migrations
from splitstone.kernel.clock import ManualClock
from splitstone.kernel.container import Container
from splitstone.kernel.events import Event, InProcessEventBus, EventRecorder
from splitstone.kernel.module import Module
from splitstone.kernel.settings import Environment, Settings
from tests.kernel.conftest import NOTES_MIGRATIONS, NoteAdded, NotesService, notes_module

AT = datetime(2030, 1, 1, tzinfo=UTC)


class NoteArchived(Event):
    name: ClassVar[str] = "notes.NoteArchived"


def added(text: str = "x") -> NoteAdded:
    return NoteAdded(occurred_at=AT, aggregate_id=uuid7(), text=text)


def test_an_event_needs_a_dotted_name() -> None:
    with pytest.raises(TypeError, match=r"must set name = '<module>\.<EventName>'"):

        class Nameless(Event):
            pass

    with pytest.raises(TypeError, match="NoModule"):

        class NoModule(Event):
            name: ClassVar[str] = "NoModule"


def test_event_ids_are_uuid7_unique_and_time_ordered() -> None:
    events = [added() for _ in range(50)]
    ids = [e.id for e in events]
    assert all(isinstance(i, UUID) and i.version == 7 for i in ids)
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)


def test_events_are_immutable_and_round_trip_as_json() -> None:
    event = added("hello")
    with pytest.raises(ValidationError):
        event.text = "changed"  # type: ignore[misc]
    assert NoteAdded.model_validate_json(event.model_dump_json()) == event
    assert event.name == "notes.NoteAdded"
    assert event.version == 1


async def test_the_bus_delivers_to_each_subscriber_of_the_type() -> None:
    bus = InProcessEventBus()
    received: list[tuple[str, Event]] = []

    async def first(event: NoteAdded) -> None:
        received.append(("first", event))

    async def second(event: NoteAdded) -> None:
        received.append(("second", event))

    async def archived(event: NoteArchived) -> None:
        received.append(("archived", event))

    bus.subscribe(NoteAdded, first)
    bus.subscribe(NoteAdded, second)
    bus.subscribe(NoteArchived, archived)
    assert bus.subscribers(NoteAdded) == [first, second]

    one, two = added("one"), added("two")
    await bus.publish([one, two])
    assert received == [("first", one), ("second", one), ("first", two), ("second", two)]


async def test_a_failing_handler_is_isolated_and_logged() -> None:
    bus = InProcessEventBus()
    delivered: list[Event] = []

    async def broken(event: NoteAdded) -> None:
        raise RuntimeError("handler bug")

    async def healthy(event: NoteAdded) -> None:
        delivered.append(event)

    bus.subscribe(NoteAdded, broken)
    bus.subscribe(NoteAdded, healthy)
    events = [added("a"), added("b")]
    with capture_logs() as logs:
        await bus.publish(events)  # does not raise
    assert delivered == events
    failures = [entry for entry in logs if entry["event"] == "event handler failed"]
    assert len(failures) == 2
    assert failures[0]["event_name"] == "notes.NoteAdded"
    assert "broken" in failures[0]["handler"]


@pytest.mark.parametrize("log_payloads", [False, True])
async def test_payloads_are_logged_only_when_asked(log_payloads: bool) -> None:
    bus = InProcessEventBus(log_payloads=log_payloads)
    event = added("token-abc")
    with capture_logs() as logs:
        await bus.publish([event])
    published = [entry for entry in logs if entry["event"] == "event published"]
    assert len(published) == 1
    assert published[0]["event_name"] == "notes.NoteAdded"
    if log_payloads:
        assert published[0]["payload"]["text"] == "token-abc"
    else:
        assert "payload" not in published[0]
        assert published[0]["event_id"] == str(event.id)


async def test_the_recording_bus_keeps_what_was_published() -> None:
    bus = EventRecorder()
    with pytest.raises(AssertionError, match=r"no notes\.NoteAdded event"):
        bus.last(NoteAdded)
    first, archived, second = added("1"), NoteArchived(occurred_at=AT, aggregate_id=uuid7()), added("2")
    await bus.publish([first, archived, second])
    assert bus.of_type(NoteAdded) == [first, second]
    assert bus.last(NoteAdded) == second


class AuditApi(Protocol):
    async def seen(self) -> list[str]: ...


class Audit:
    def __init__(self) -> None:
        self.texts: list[str] = []

    async def seen(self) -> list[str]:
        return self.texts

    async def on_note_added(self, event: NoteAdded) -> None:
        self.texts.append(event.text)


async def test_the_container_wires_subscriptions_between_modules(tmp_path: Path) -> None:
    audit = Module(
        name="audit",
        contract=AuditApi,
        factory=lambda ctx: Audit(),
        subscriptions={NoteAdded: lambda implementation: implementation.on_note_added},
    )
    settings = Settings(
        env=Environment.TEST,
        data_dir=tmp_path / "data",
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'db' / 'splitstone.db'}",
    )
    container = Container.build(settings, [audit, notes_module()], clock=ManualClock(AT))
    try:
        await migrations.upgrade(container.databases["notes"], NOTES_MIGRATIONS)
        notes: Any = container.implementations["notes"]
        assert isinstance(notes, NotesService)
        await notes.add("first")
        await notes.add("second")
        audit_impl = container.implementations["audit"]
        assert isinstance(audit_impl, Audit)
        assert await audit_impl.seen() == ["first", "second"]
    finally:
        await container.aclose()
