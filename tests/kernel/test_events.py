"""Events: named contract types with UUIDv7 ids and a wire form; committed to the publisher's outbox and
handled by each subscribing module through its inbox, a failing handler isolated from the others."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any, ClassVar, Protocol
from uuid import UUID

import pytest
from pydantic import ValidationError
from sqlalchemy import select
from structlog.testing import capture_logs
from uuid6 import uuid7

from splitstone.kernel import migrations
from splitstone.kernel.clock import ManualClock
from splitstone.kernel.container import Container
from splitstone.kernel.events import Envelope, Event, EventCatalog, EventRecorder, UnknownEvent
from splitstone.kernel.messaging.tables import inbox, outbox
from splitstone.kernel.module import Module
from splitstone.kernel.settings import Environment, Settings
from tests.kernel.conftest import NoteAdded, NotesService, migrate_notes, notes_module

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
    assert event.publisher == "notes"


def test_an_envelope_carries_the_event_and_the_catalog_turns_it_back() -> None:
    event = added("on the wire")
    envelope = Envelope.of(event)
    assert (envelope.id, envelope.name, envelope.version) == (event.id, "notes.NoteAdded", 1)
    assert (envelope.aggregate_id, envelope.occurred_at) == (event.aggregate_id, AT)
    assert envelope.publisher == "notes"

    catalog = EventCatalog([NoteAdded, NoteArchived])
    decoded = catalog.decode(envelope)
    assert type(decoded) is NoteAdded
    assert decoded == event
    assert catalog.names() == ["notes.NoteAdded", "notes.NoteArchived"]

    with pytest.raises(UnknownEvent, match=r"notes\.NoteAdded"):
        EventCatalog([NoteArchived]).decode(envelope)


def test_the_catalog_refuses_two_types_with_one_name() -> None:
    class Impostor(Event):
        name: ClassVar[str] = "notes.NoteAdded"

    catalog = EventCatalog([NoteAdded])
    catalog.add(NoteAdded)  # the same type again is fine
    with pytest.raises(ValueError, match=r"two event types are named 'notes\.NoteAdded'"):
        catalog.add(Impostor)


def test_the_recorder_keeps_what_was_committed() -> None:
    recorder = EventRecorder()
    with pytest.raises(AssertionError, match=r"no notes\.NoteAdded event"):
        recorder.last(NoteAdded)
    first, archived, second = added("1"), NoteArchived(occurred_at=AT, aggregate_id=uuid7()), added("2")
    recorder.committed([first, archived])
    recorder.committed([second])
    assert recorder.published == [first, archived, second]
    assert recorder.of_type(NoteAdded) == [first, second]
    assert recorder.last(NoteAdded) == second


# --- delivery between modules: outbox -> relay -> inbox -> handler ---------------------------------


class ListenerApi(Protocol):
    async def seen(self) -> list[Event]: ...


class Listener:
    """A subscribing module's implementation: remembers what its handlers received."""

    def __init__(self, *, broken: bool = False) -> None:
        self.received: list[Event] = []
        self._broken = broken

    async def seen(self) -> list[Event]:
        return self.received

    async def on_event(self, event: Event) -> None:
        if self._broken:
            raise RuntimeError("handler bug")
        self.received.append(event)


def listener_module(name: str, events: Sequence[type[Event]], *, broken: bool = False) -> Module:
    contract = type(f"{name.title()}Api", (ListenerApi, Protocol), {})
    return Module(
        name=name,
        contract=contract,
        factory=lambda ctx: Listener(broken=broken),
        subscriptions={event: (lambda implementation: implementation.on_event) for event in events},
    )


@asynccontextmanager
async def notes_and(
    url: str, data_dir: Any, *subscribers: Module, env: Environment = Environment.TEST
) -> AsyncIterator[Container]:
    """The notes module and some subscribers, each migrated (the kernel's tables in every schema)."""
    settings = Settings(env=env, data_dir=data_dir, database_url=url)
    container = Container.build(
        settings, [notes_module(), *subscribers], clock=ManualClock(AT), recorder=EventRecorder()
    )
    try:
        await migrate_notes(container.databases["notes"])
        for module in subscribers:
            await migrations.upgrade_module(container.databases[module.name], None)
        yield container
    finally:
        await container.aclose()


def notes_of(container: Container) -> NotesService:
    notes: Any = container.implementations["notes"]
    assert isinstance(notes, NotesService)
    return notes


def listener_of(container: Container, name: str) -> Listener:
    listener = container.implementations[name]
    assert isinstance(listener, Listener)
    return listener


async def inbox_rows(container: Container, module: str) -> list[dict[str, Any]]:
    async with container.databases[module].session() as session:
        query = select(inbox).order_by(inbox.c.received_at, inbox.c.event_id)
        return [dict(row) for row in (await session.execute(query)).mappings()]


async def test_each_subscribing_module_handles_the_events_it_subscribes_to(
    empty_database_url: str, tmp_path: Any
) -> None:
    audit = listener_module("audit", [NoteAdded, NoteArchived])
    mirror = listener_module("mirror", [NoteAdded])
    async with notes_and(empty_database_url, tmp_path / "data", audit, mirror) as container:
        one = await notes_of(container).add("one")
        two = await notes_of(container).add("two")
        archived = NoteArchived(occurred_at=AT, aggregate_id=one.id)
        async with container.units_of_work["notes"]() as uow:
            uow.publish(archived)
            await uow.commit()
        assert listener_of(container, "audit").received == []  # nothing is delivered inside the commit

        await container.worker().settle()

        audit_seen = await listener_of(container, "audit").seen()
        assert [(e.name, e.aggregate_id) for e in audit_seen] == [
            ("notes.NoteAdded", one.id),
            ("notes.NoteAdded", two.id),
            ("notes.NoteArchived", one.id),
        ]
        assert audit_seen[2] == archived
        mirror_seen = await listener_of(container, "mirror").seen()
        assert [e.aggregate_id for e in mirror_seen] == [one.id, two.id]
        assert all(isinstance(e, NoteAdded) for e in mirror_seen)
        assert {(r["handler"], r["status"]) for r in await inbox_rows(container, "audit")} == {
            ("audit:notes.NoteAdded", "done"),
            ("audit:notes.NoteArchived", "done"),
        }
        assert len(await inbox_rows(container, "mirror")) == 2  # NoteArchived is not mirror's business
        async with container.databases["notes"].session() as session:
            unpublished = select(outbox).where(outbox.c.published_at.is_(None))
            assert (await session.execute(unpublished)).all() == []

        await container.worker().settle()  # nothing is handled twice
        assert len(await listener_of(container, "audit").seen()) == 3


async def test_a_failing_handler_is_isolated_and_logged(empty_database_url: str, tmp_path: Any) -> None:
    broken = listener_module("broken", [NoteAdded], broken=True)
    healthy = listener_module("healthy", [NoteAdded])
    async with notes_and(empty_database_url, tmp_path / "data", broken, healthy) as container:
        first = await notes_of(container).add("a")  # the publisher does not fail
        second = await notes_of(container).add("b")
        with capture_logs() as logs:
            await container.worker().settle()

        assert [e.aggregate_id for e in listener_of(container, "healthy").received] == [first.id, second.id]
        failed = await inbox_rows(container, "broken")
        assert [(r["aggregate_id"], r["status"], r["attempts"]) for r in failed] == [
            (first.id, "pending", 1),
            (second.id, "pending", 1),
        ]
        assert all(r["last_error"] == "RuntimeError: handler bug" for r in failed)
        assert all(r["next_attempt_at"] > AT for r in failed)  # retried later, with backoff
        failures = [entry for entry in logs if entry["event"] == "event handler failed"]
        assert len(failures) == 2
        assert failures[0]["handler"] == "broken:notes.NoteAdded"
        assert failures[0]["error"] == "RuntimeError: handler bug"
        assert failures[0]["dead"] is False
        assert {f["event_id"] for f in failures} == {str(r["event_id"]) for r in failed}


@pytest.mark.parametrize("env", [Environment.DEVELOPMENT, Environment.TEST])
async def test_committed_events_are_logged_by_name_only_in_development(
    env: Environment, empty_database_url: str, tmp_path: Any
) -> None:
    async with notes_and(empty_database_url, tmp_path / "data", env=env) as container:
        with capture_logs() as logs:
            note = await notes_of(container).add("token-abc")
    committed = [entry for entry in logs if entry["event"] == "event committed"]
    if env is Environment.DEVELOPMENT:
        assert len(committed) == 1
        assert committed[0]["event_name"] == "notes.NoteAdded"
        assert committed[0]["aggregate_id"] == str(note.id)
        assert "token-abc" not in repr(committed[0])  # payloads may hold secrets
    else:
        assert committed == []
