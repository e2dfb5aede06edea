"""Per-module databases: schemas and attached SQLite files, UTC timestamps, and the unit of work."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import Column, Integer, MetaData, Table, func, insert, select, text
from sqlalchemy.exc import IntegrityError, OperationalError, StatementError
from uuid6 import uuid7

from splitstone.kernel import migrations
from splitstone.kernel.db import ModuleDatabase, UnitOfWork, UnitOfWorkFactory, sqlite_module_file
from splitstone.kernel.events import EventRecorder
from tests.kernel.conftest import NOTES_MIGRATIONS, NoteAdded, notes_table, tags_table


async def migrate_notes(db: ModuleDatabase) -> None:
    await migrations.upgrade(db, NOTES_MIGRATIONS)


def new_note(text_: str = "hello", at: datetime | None = None) -> dict[str, object]:
    return {"id": uuid7(), "text": text_, "created_at": at or datetime(2030, 1, 1, tzinfo=UTC)}


async def count_notes(db: ModuleDatabase) -> int:
    async with db.session() as session:
        return int((await session.execute(select(func.count()).select_from(notes_table))).scalar_one())


# --- where a module's tables live ------------------------------------------------------------------


async def test_sqlite_attaches_the_module_file_as_its_schema(tmp_path: Path) -> None:
    main = tmp_path / "db" / "splitstone.db"
    db = ModuleDatabase.connect("notes", f"sqlite+aiosqlite:///{main}")
    try:
        assert db.is_sqlite
        async with db.engine.connect() as conn:
            attached = {row[1]: row[2] for row in (await conn.execute(text("PRAGMA database_list"))).all()}
            journal = (await conn.execute(text("PRAGMA notes.journal_mode"))).scalar_one()
            busy_timeout = (await conn.execute(text("PRAGMA busy_timeout"))).scalar_one()
            foreign_keys = (await conn.execute(text("PRAGMA foreign_keys"))).scalar_one()
    finally:
        await db.dispose()
    module_file = tmp_path / "db" / "notes.db"
    assert module_file.exists()
    assert Path(attached["notes"]) == module_file
    assert journal == "wal"
    assert busy_timeout == 30000
    assert foreign_keys == 1


def test_sqlite_module_file_sits_beside_the_main_file(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'x' / 'main.db'}"
    assert sqlite_module_file(url, "billing") == tmp_path / "x" / "billing.db"
    with pytest.raises(ValueError, match="file URL"):
        sqlite_module_file("sqlite+aiosqlite:///:memory:", "billing")


async def test_the_module_schema_exists_after_ensure_schema(backend: str, notes_db: ModuleDatabase) -> None:
    async def schemas() -> set[str]:
        async with notes_db.engine.connect() as conn:
            if backend == "postgres":
                query = text("SELECT schema_name FROM information_schema.schemata")
                return {row[0] for row in (await conn.execute(query)).all()}
            return {row[1] for row in (await conn.execute(text("PRAGMA database_list"))).all()}

    if backend == "postgres":
        assert "notes" not in await schemas()
    await notes_db.ensure_schema()
    await notes_db.ensure_schema()  # idempotent
    assert "notes" in await schemas()


async def test_foreign_keys_are_enforced_inside_a_schema(notes_db: ModuleDatabase) -> None:
    await migrate_notes(notes_db)
    async with notes_db.engine.connect() as conn:
        with pytest.raises(IntegrityError):
            await conn.execute(insert(tags_table).values(id=uuid7(), note_id=uuid7(), tag="orphan"))


async def test_a_sqlite_module_engine_cannot_see_another_modules_tables(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'db' / 'splitstone.db'}"
    billing = ModuleDatabase.connect("billing", url)
    notes = ModuleDatabase.connect("notes", url)
    invoices = Table("invoices", MetaData(schema="billing"), Column("id", Integer, primary_key=True))
    try:
        async with billing.engine.begin() as conn:
            await conn.run_sync(invoices.metadata.create_all)
            await conn.execute(insert(invoices).values(id=1))
        async with billing.engine.connect() as conn:
            assert (await conn.execute(select(func.count()).select_from(invoices))).scalar_one() == 1
        async with notes.engine.connect() as conn:
            with pytest.raises(OperationalError, match=r"no such table: billing\.invoices"):
                await conn.execute(select(invoices))
            with pytest.raises(OperationalError, match="no such table"):
                await conn.execute(text("SELECT * FROM invoices"))
    finally:
        await billing.dispose()
        await notes.dispose()
    assert (tmp_path / "db" / "billing.db").exists()
    assert (tmp_path / "db" / "notes.db").exists()


# --- UTC timestamps --------------------------------------------------------------------------------


async def test_utc_datetime_round_trips_aware_utc(notes_db: ModuleDatabase) -> None:
    await migrate_notes(notes_db)
    plus_two = timezone(timedelta(hours=2))
    moment = datetime(2031, 5, 6, 7, 8, 9, 123456, tzinfo=plus_two)
    row = new_note(at=moment)
    async with notes_db.engine.begin() as conn:
        await conn.execute(insert(notes_table).values(**row))
    async with notes_db.engine.connect() as conn:
        stored = (
            await conn.execute(select(notes_table.c.created_at).where(notes_table.c.id == row["id"]))
        ).scalar_one()
        later = (
            await conn.execute(
                select(func.count())
                .select_from(notes_table)
                .where(notes_table.c.created_at > datetime(2031, 5, 6, 5, 8, 9, tzinfo=UTC))
            )
        ).scalar_one()
    assert stored == moment
    assert stored.tzinfo is not None
    assert stored.utcoffset() == timedelta(0)
    assert stored.hour == 5  # 07:08 at +02:00 is 05:08 UTC
    assert later == 1  # compared as UTC instants in SQL too


async def test_utc_datetime_refuses_a_naive_datetime(notes_db: ModuleDatabase) -> None:
    await migrate_notes(notes_db)
    async with notes_db.engine.connect() as conn:
        with pytest.raises(StatementError, match="naive datetime"):
            await conn.execute(insert(notes_table).values(**new_note(at=datetime(2031, 5, 6, 7, 8))))


# --- the unit of work ------------------------------------------------------------------------------


def event_for(row: dict[str, object]) -> NoteAdded:
    return NoteAdded(occurred_at=datetime(2030, 1, 1, tzinfo=UTC), aggregate_id=row["id"], text="x")


async def test_unit_of_work_rolls_back_without_commit(notes_db: ModuleDatabase) -> None:
    await migrate_notes(notes_db)
    events = EventRecorder()
    uow_factory = UnitOfWorkFactory(notes_db, events)
    row = new_note()
    async with uow_factory() as uow:
        await uow.session.execute(insert(notes_table).values(**row))
        uow.publish(event_for(row))
        async with notes_db.session() as session:  # invisible to others while uncommitted
            assert (await session.execute(select(notes_table))).all() == []
    assert await count_notes(notes_db) == 0
    assert events.published == []


async def test_unit_of_work_rolls_back_on_error(notes_db: ModuleDatabase) -> None:
    await migrate_notes(notes_db)
    events = EventRecorder()
    row = new_note()

    async def failing_use_case() -> None:
        async with UnitOfWork(notes_db, events) as uow:
            await uow.session.execute(insert(notes_table).values(**row))
            uow.publish(event_for(row))
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        await failing_use_case()
    assert await count_notes(notes_db) == 0
    assert events.published == []


async def test_unit_of_work_publishes_only_after_the_commit(notes_db: ModuleDatabase) -> None:
    await migrate_notes(notes_db)
    events = EventRecorder()
    visible_to_subscriber: list[int] = []

    async def subscriber(event: NoteAdded) -> None:
        # Runs on its own connection: it can only see the row if the publisher already committed.
        async with notes_db.session() as session:
            query = (
                select(func.count()).select_from(notes_table).where(notes_table.c.id == event.aggregate_id)
            )
            visible_to_subscriber.append(int((await session.execute(query)).scalar_one()))

    events.subscribe(NoteAdded, subscriber)
    first, second = new_note("first"), new_note("second")
    async with UnitOfWorkFactory(notes_db, events)() as uow:
        await uow.session.execute(insert(notes_table).values(**first))
        uow.publish(event_for(first))
        assert events.published == []  # held until the commit
        await uow.commit()
        assert [e.aggregate_id for e in events.published] == [first["id"]]
        await uow.session.execute(insert(notes_table).values(**second))
        uow.publish(event_for(second))
        await uow.commit()
    assert [e.aggregate_id for e in events.published] == [first["id"], second["id"]]  # each once
    assert visible_to_subscriber == [1, 1]
    assert await count_notes(notes_db) == 2


async def test_events_of_an_abandoned_unit_of_work_do_not_leak_into_the_next(
    notes_db: ModuleDatabase,
) -> None:
    await migrate_notes(notes_db)
    events = EventRecorder()
    abandoned, kept = new_note("abandoned"), new_note("kept")
    uow = UnitOfWork(notes_db, events)
    async with uow:
        await uow.session.execute(insert(notes_table).values(**abandoned))
        uow.publish(event_for(abandoned))
    async with uow:
        await uow.session.execute(insert(notes_table).values(**kept))
        uow.publish(event_for(kept))
        await uow.commit()
    assert [e.aggregate_id for e in events.published] == [kept["id"]]
    assert await count_notes(notes_db) == 1


def test_unit_of_work_session_outside_the_block_is_an_error(tmp_path: Path) -> None:
    db = ModuleDatabase.connect("notes", f"sqlite+aiosqlite:///{tmp_path / 'splitstone.db'}")
    with pytest.raises(RuntimeError, match="outside 'async with'"):
        _ = UnitOfWork(db, EventRecorder()).session


async def test_concurrent_read_then_write_units_of_work_all_commit(notes_db: ModuleDatabase) -> None:
    """On SQLite a deferred transaction that reads, then writes after another writer committed, fails
    at once (SQLITE_BUSY); units of work take the write lock up front, so they queue instead."""
    await migrate_notes(notes_db)
    uow_factory = UnitOfWorkFactory(notes_db, EventRecorder())

    async def read_then_write(i: int) -> None:
        async with uow_factory() as uow:
            await uow.session.execute(select(func.count()).select_from(notes_table))
            await asyncio.sleep(0.01)  # let the others read too before anyone writes
            await uow.session.execute(insert(notes_table).values(**new_note(f"note {i}")))
            await uow.commit()

    await asyncio.gather(*(read_then_write(i) for i in range(8)))
    assert await count_notes(notes_db) == 8


async def test_a_read_only_unit_of_work_publishes_nothing(notes_db: ModuleDatabase) -> None:
    await migrate_notes(notes_db)
    uow_factory = UnitOfWorkFactory(notes_db, EventRecorder())
    async with uow_factory(read_only=True) as uow:
        assert (await uow.session.execute(select(notes_table))).all() == []
        with pytest.raises(RuntimeError, match="read-only"):
            uow.publish(event_for(new_note()))
