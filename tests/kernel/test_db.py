"""Per-module databases: schemas and attached SQLite files, UTC timestamps, and the unit of work."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy import Column, Integer, MetaData, Table, func, insert, select, text
from sqlalchemy.exc import IntegrityError, OperationalError, StatementError
from uuid6 import uuid7

from splitstone.kernel import migrations
from splitstone.kernel.clock import ManualClock
from splitstone.kernel.db import (
    ModuleDatabase,
    ScheduledJob,
    UnitOfWork,
    UnitOfWorkFactory,
    sqlite_module_file,
)
from splitstone.kernel.events import EventRecorder
from splitstone.kernel.messaging.outbox import OutboxSink
from splitstone.kernel.messaging.tables import jobs, outbox
from tests.kernel.conftest import NoteAdded, migrate_notes, notes_table, tags_table

AT = datetime(2030, 1, 1, tzinfo=UTC)


def new_note(text_: str = "hello", at: datetime | None = None) -> dict[str, object]:
    return {"id": uuid7(), "text": text_, "created_at": at or AT}


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
    assert attached["main"] == ""  # a private in-memory main: nothing shared between modules to lock
    assert not main.exists()
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
    return NoteAdded(occurred_at=AT, aggregate_id=row["id"], text=str(row["text"]))


def outbox_sink(db: ModuleDatabase, recorder: EventRecorder | None = None) -> OutboxSink:
    """The module's real transaction sink (its outbox), telling `recorder` what each commit published."""
    sink = OutboxSink(db, ManualClock(AT), default_job_attempts=3)
    if recorder is not None:
        sink.add_commit_listener(lambda events, _jobs: recorder.committed(events))
    return sink


async def outbox_events(db: ModuleDatabase) -> list[NoteAdded]:
    """The events in the module's outbox, decoded, in outbox order (what a separate reader sees)."""
    async with db.session() as session:
        payloads = (await session.execute(select(outbox.c.payload).order_by(outbox.c.position))).scalars()
        return [NoteAdded.model_validate_json(payload) for payload in payloads]


async def test_unit_of_work_rolls_back_without_commit(notes_db: ModuleDatabase) -> None:
    await migrate_notes(notes_db)
    events = EventRecorder()
    uow_factory = UnitOfWorkFactory(notes_db, outbox_sink(notes_db, events))
    row = new_note()
    async with uow_factory() as uow:
        await uow.session.execute(insert(notes_table).values(**row))
        uow.publish(event_for(row))
        async with notes_db.session() as session:  # invisible to others while uncommitted
            assert (await session.execute(select(notes_table))).all() == []
    assert await count_notes(notes_db) == 0
    assert await outbox_events(notes_db) == []
    assert events.published == []


async def test_unit_of_work_rolls_back_on_error(notes_db: ModuleDatabase) -> None:
    await migrate_notes(notes_db)
    events = EventRecorder()
    row = new_note()

    async def failing_use_case() -> None:
        async with UnitOfWork(notes_db, outbox_sink(notes_db, events)) as uow:
            await uow.session.execute(insert(notes_table).values(**row))
            uow.publish(event_for(row))
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        await failing_use_case()
    assert await count_notes(notes_db) == 0
    assert await outbox_events(notes_db) == []
    assert events.published == []


async def test_outbox_rows_exist_only_after_the_commit(notes_db: ModuleDatabase) -> None:
    """The event is written with the state change, in its transaction: no event for an uncommitted
    change, and whoever hears of it (after the commit) can already read the change."""
    await migrate_notes(notes_db)
    events = EventRecorder()
    sink = outbox_sink(notes_db, events)
    in_transaction_when_told: list[bool] = []
    uow = UnitOfWorkFactory(notes_db, sink)()
    sink.add_commit_listener(
        lambda _events, _jobs: in_transaction_when_told.append(uow.session.in_transaction())
    )
    first, second = new_note("first"), new_note("second")
    first_added, second_added = event_for(first), event_for(second)
    async with uow:
        await uow.session.execute(insert(notes_table).values(**first))
        uow.publish(first_added)
        assert await outbox_events(notes_db) == []  # held until the commit
        assert events.published == []
        await uow.commit()
        assert await outbox_events(notes_db) == [first_added] == events.published
        assert await count_notes(notes_db) == 1
        await uow.session.execute(insert(notes_table).values(**second))
        uow.publish(second_added)
        assert await outbox_events(notes_db) == [first_added]
        await uow.commit()
    assert await outbox_events(notes_db) == [first_added, second_added]  # each once, in order
    assert events.published == [first_added, second_added]
    assert in_transaction_when_told == [False, False]  # listeners hear of events after the commit
    assert await count_notes(notes_db) == 2


async def test_the_outbox_row_describes_the_event(notes_db: ModuleDatabase) -> None:
    await migrate_notes(notes_db)
    row = new_note("described")
    event = event_for(row)
    async with UnitOfWorkFactory(notes_db, outbox_sink(notes_db))() as uow:
        await uow.session.execute(insert(notes_table).values(**row))
        uow.publish(event)
        await uow.commit()
    async with notes_db.session() as session:
        stored = (await session.execute(select(outbox))).mappings().one()
    assert stored["event_id"] == event.id
    assert stored["event_name"] == "notes.NoteAdded"
    assert stored["event_version"] == 1
    assert stored["aggregate_id"] == row["id"]
    assert stored["occurred_at"] == AT
    assert NoteAdded.model_validate_json(stored["payload"]) == event
    assert stored["created_at"] == AT  # from the sink's clock
    assert stored["published_at"] is None
    assert stored["attempts"] == 0
    assert stored["next_attempt_at"] is None


async def test_events_of_an_abandoned_unit_of_work_do_not_leak_into_the_next(
    notes_db: ModuleDatabase,
) -> None:
    await migrate_notes(notes_db)
    events = EventRecorder()
    abandoned, kept = new_note("abandoned"), new_note("kept")
    uow = UnitOfWork(notes_db, outbox_sink(notes_db, events))
    async with uow:
        await uow.session.execute(insert(notes_table).values(**abandoned))
        uow.publish(event_for(abandoned))
    async with uow:
        await uow.session.execute(insert(notes_table).values(**kept))
        uow.publish(event_for(kept))
        await uow.commit()
    assert [e.aggregate_id for e in events.published] == [kept["id"]]
    assert [e.aggregate_id for e in await outbox_events(notes_db)] == [kept["id"]]
    assert await count_notes(notes_db) == 1


def test_unit_of_work_session_outside_the_block_is_an_error(tmp_path: Path) -> None:
    db = ModuleDatabase.connect("notes", f"sqlite+aiosqlite:///{tmp_path / 'splitstone.db'}")
    with pytest.raises(RuntimeError, match="outside 'async with'"):
        _ = UnitOfWork(db, outbox_sink(db)).session


async def test_concurrent_read_then_write_units_of_work_all_commit(notes_db: ModuleDatabase) -> None:
    """On SQLite a deferred transaction that reads, then writes after another writer committed, fails
    at once (SQLITE_BUSY); units of work take the write lock up front, so they queue instead."""
    await migrate_notes(notes_db)
    uow_factory = UnitOfWorkFactory(notes_db, outbox_sink(notes_db))

    async def read_then_write(i: int) -> None:
        async with uow_factory() as uow:
            await uow.session.execute(select(func.count()).select_from(notes_table))
            await asyncio.sleep(0.01)  # let the others read too before anyone writes
            row = new_note(f"note {i}")
            await uow.session.execute(insert(notes_table).values(**row))
            uow.publish(event_for(row))
            await uow.commit()

    await asyncio.gather(*(read_then_write(i) for i in range(8)))
    assert await count_notes(notes_db) == 8
    assert sorted(e.text for e in await outbox_events(notes_db)) == sorted(f"note {i}" for i in range(8))


async def test_a_read_only_unit_of_work_publishes_nothing(notes_db: ModuleDatabase) -> None:
    await migrate_notes(notes_db)
    uow_factory = UnitOfWorkFactory(notes_db, outbox_sink(notes_db))
    async with uow_factory(read_only=True) as uow:
        assert (await uow.session.execute(select(notes_table))).all() == []
        with pytest.raises(RuntimeError, match="read-only"):
            uow.publish(event_for(new_note()))
        with pytest.raises(RuntimeError, match="read-only"):
            uow.schedule(ScheduledJob("notes.reindex", "{}", AT))
    assert await outbox_events(notes_db) == []


async def test_rows_given_to_insert_commit_with_the_events_or_not_at_all(notes_db: ModuleDatabase) -> None:
    """`uow.insert` rows are written at commit with the events (on PostgreSQL, a unit that wrote nothing
    else sends them in one statement without a transaction block): a row that fails takes the events
    with it, and the pooled connection is transactional again afterwards."""
    await migrate_notes(notes_db)
    uow_factory = UnitOfWorkFactory(notes_db, outbox_sink(notes_db))
    first = new_note("first")
    async with uow_factory() as uow:
        uow.insert(notes_table, [first])
        uow.publish(event_for(first))
        await uow.commit()
    async with uow_factory() as uow:
        second = new_note("second")
        uow.insert(notes_table, [second, first])  # `first` again: its primary key is taken
        uow.publish(event_for(second))
        with pytest.raises(IntegrityError):
            await uow.commit()
    async with uow_factory() as uow:
        await uow.session.execute(insert(notes_table).values(**new_note("never committed")))
    assert await count_notes(notes_db) == 1
    assert [e.text for e in await outbox_events(notes_db)] == ["first"]


@pytest.mark.backends("postgres")  # SQLite has no LISTEN: its workers poll
async def test_a_commit_writes_its_events_and_jobs_and_wakes_other_processes(
    backend: str, notes_db: ModuleDatabase, empty_database_url: str
) -> None:
    """On PostgreSQL the outbox rows, the job rows and the NOTIFY of each queue go in one statement; the
    notifications reach a LISTEN connection only when the transaction commits."""
    await migrate_notes(notes_db)
    uow_factory = UnitOfWorkFactory(notes_db, outbox_sink(notes_db))
    heard: list[str] = []
    listener = await asyncpg.connect(empty_database_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await listener.add_listener("splitstone_wake", lambda *args: heard.append(str(args[-1])))
        for commit in (False, True):
            async with uow_factory() as uow:
                row = new_note(f"committed: {commit}")
                await uow.session.execute(insert(notes_table).values(**row))
                uow.publish(event_for(row))
                uow.schedule(ScheduledJob("notes.reindex", "{}", AT, idempotency_key=str(commit)))
                await uow.stage()
                if commit:
                    await uow.commit()
            await asyncio.sleep(0.2)
            assert heard == (["notes:outbox", "notes:jobs"] if commit else [])
    finally:
        await listener.close()
    assert [e.text for e in await outbox_events(notes_db)] == ["committed: True"]
    async with notes_db.session() as session:
        assert (await session.execute(select(jobs.c.kind, jobs.c.idempotency_key))).all() == [
            ("notes.reindex", "True")
        ]


@pytest.mark.backends("postgres")  # SQLite reads keep their deferred transaction
async def test_a_read_only_unit_of_work_on_postgresql_opens_no_transaction(
    backend: str, notes_db: ModuleDatabase
) -> None:
    """Its statements run in autocommit: no BEGIN and ROLLBACK round trips around a pure read."""
    await migrate_notes(notes_db)
    uow_factory = UnitOfWorkFactory(notes_db, outbox_sink(notes_db))

    async def transaction_starts(read_only: bool) -> set[datetime]:
        """now() is when the transaction began: one value per transaction."""
        async with uow_factory(read_only=read_only) as uow:
            first = (await uow.session.execute(text("SELECT now()"))).scalar_one()
            await asyncio.sleep(0.01)
            return {first, (await uow.session.execute(text("SELECT now()"))).scalar_one()}

    assert len(await transaction_starts(read_only=True)) == 2
    assert len(await transaction_starts(read_only=False)) == 1


@pytest.mark.backends("postgres")  # SQLite has no server to lose
async def test_a_pooled_connection_the_server_closed_is_replaced(
    backend: str, notes_db: ModuleDatabase
) -> None:
    """After a server restart (here: its backends terminated) the next unit of work gets a fresh
    connection instead of failing on a dead one; no ping is spent on healthy connections for that."""
    await migrate_notes(notes_db)
    uow_factory = UnitOfWorkFactory(notes_db, outbox_sink(notes_db))
    async with notes_db.engine.connect() as other:  # another connection than the one to terminate
        async with uow_factory(read_only=True) as uow:
            pid = (await uow.session.execute(text("SELECT pg_backend_pid()"))).scalar_one()
        await other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    await asyncio.sleep(0.1)  # the event loop hears the server close it
    async with uow_factory() as uow:
        await uow.session.execute(insert(notes_table).values(**new_note("after the restart")))
        await uow.commit()
    assert await count_notes(notes_db) == 1


async def test_two_modules_units_of_work_do_not_exclude_each_other(empty_database_url: str) -> None:
    """A use case may call another module's use case inside its own unit of work (a handler calling
    another module's contract, say). Each locks only its own module's data, on SQLite too: a shared
    lock would make the inner one wait for the outer, which waits for it."""
    notes = ModuleDatabase.connect("notes", empty_database_url)
    archive = ModuleDatabase.connect("archive", empty_database_url)
    try:
        await migrate_notes(notes)
        await migrations.upgrade_module(archive, None)
        note = new_note("outer")
        archived = event_for(new_note("inner"))

        async def nested() -> None:
            async with UnitOfWorkFactory(notes, outbox_sink(notes))() as outer:
                await outer.session.execute(insert(notes_table).values(**note))
                async with UnitOfWorkFactory(archive, outbox_sink(archive))() as inner:
                    inner.publish(archived)
                    await inner.commit()
                await outer.commit()

        await asyncio.wait_for(nested(), timeout=5)
        assert await count_notes(notes) == 1
        assert await outbox_events(archive) == [archived]
    finally:
        await notes.dispose()
        await archive.dispose()
