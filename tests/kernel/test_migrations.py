"""One Alembic history per module, applied in the module's own schema (the fake "notes" module), after
the kernel's own history, which puts the outbox, inbox, job and idempotency key tables in every
module's schema."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, MetaData, column, func, insert, inspect, select, text
from sqlalchemy import table as sql_table
from sqlalchemy.exc import DBAPIError
from uuid6 import uuid7

from splitstone.kernel import migrations
from splitstone.kernel.db import ModuleDatabase
from splitstone.kernel.messaging.tables import metadata as kernel_metadata
from splitstone.kernel.messaging.tables import outbox
from tests.kernel.conftest import NOTES_HEAD, NOTES_MIGRATIONS, notes_table


async def tables_in(db: ModuleDatabase, schema: str) -> set[str]:
    async with db.engine.connect() as conn:
        return set(await conn.run_sync(lambda sync: inspect(sync).get_table_names(schema=schema)))


async def main_schema_tables(db: ModuleDatabase, backend: str) -> set[str]:
    return await tables_in(db, "public" if backend == "postgres" else "main")


def test_script_directory_reads_the_module_history() -> None:
    script = migrations.script_directory(NOTES_MIGRATIONS)
    assert script.get_current_head() == NOTES_HEAD
    assert [rev.revision for rev in script.walk_revisions()] == ["0002", "0001"]


async def test_status_before_and_after_upgrade(notes_db: ModuleDatabase) -> None:
    before = await migrations.status(notes_db, NOTES_MIGRATIONS)
    assert before == migrations.MigrationStatus("notes", None, NOTES_HEAD)
    assert not before.up_to_date

    after = await migrations.upgrade(notes_db, NOTES_MIGRATIONS)
    assert after == migrations.MigrationStatus("notes", NOTES_HEAD, NOTES_HEAD)
    assert after.up_to_date
    assert await migrations.status(notes_db, NOTES_MIGRATIONS) == after
    assert {"notes", "tags"} <= await tables_in(notes_db, "notes")


async def test_upgrade_step_by_step_and_idempotent(notes_db: ModuleDatabase) -> None:
    partial = await migrations.upgrade(notes_db, NOTES_MIGRATIONS, "0001")
    assert partial.current == "0001"
    assert not partial.up_to_date
    assert await tables_in(notes_db, "notes") >= {"notes"}
    assert "tags" not in await tables_in(notes_db, "notes")

    await migrations.upgrade(notes_db, NOTES_MIGRATIONS)
    note_id = uuid7()
    async with notes_db.engine.begin() as conn:
        await conn.execute(
            insert(notes_table).values(id=note_id, text="survives", created_at=datetime.now(UTC))
        )
    again = await migrations.upgrade(notes_db, NOTES_MIGRATIONS)
    assert again.current == NOTES_HEAD
    async with notes_db.engine.connect() as conn:
        assert (await conn.execute(select(notes_table.c.text))).scalars().all() == ["survives"]


async def test_downgrade(notes_db: ModuleDatabase) -> None:
    await migrations.upgrade(notes_db, NOTES_MIGRATIONS)

    one_back = await migrations.downgrade(notes_db, NOTES_MIGRATIONS, "0001")
    assert one_back.current == "0001"
    assert "tags" not in await tables_in(notes_db, "notes")
    assert "notes" in await tables_in(notes_db, "notes")

    to_base = await migrations.downgrade(notes_db, NOTES_MIGRATIONS)
    assert to_base.current is None
    assert not ({"notes", "tags"} & await tables_in(notes_db, "notes"))

    back_up = await migrations.upgrade(notes_db, NOTES_MIGRATIONS)
    assert back_up.up_to_date


async def test_version_table_lives_in_the_module_schema(backend: str, notes_db: ModuleDatabase) -> None:
    await migrations.upgrade(notes_db, NOTES_MIGRATIONS)
    assert "alembic_version" in await tables_in(notes_db, "notes")
    assert "alembic_version" not in await main_schema_tables(notes_db, backend)
    async with notes_db.engine.connect() as conn:
        version = (await conn.execute(text("SELECT version_num FROM notes.alembic_version"))).scalar_one()
        assert version == NOTES_HEAD
    if backend == "postgres":  # (SQLite resolves an unqualified name through attached databases)
        async with notes_db.engine.connect() as conn:
            with pytest.raises(DBAPIError, match="alembic_version"):
                await conn.execute(text("SELECT version_num FROM alembic_version"))


async def test_two_modules_keep_separate_histories_in_one_database(empty_database_url: str) -> None:
    notes = ModuleDatabase.connect("notes", empty_database_url)
    other = ModuleDatabase.connect("archive", empty_database_url)
    try:
        await migrations.upgrade(notes, NOTES_MIGRATIONS)
        archive_state = await migrations.status(other, NOTES_MIGRATIONS)
        assert archive_state.module == "archive"
        assert archive_state.current is None  # notes' version row is not archive's
    finally:
        await notes.dispose()
        await other.dispose()


# --- the kernel's history: outbox, inbox, jobs and idempotency keys in every module's schema ---------

KERNEL_HEAD = migrations.script_directory(migrations.KERNEL_MIGRATIONS).get_current_head()
KERNEL_TABLES = {"outbox", "inbox", "jobs", "idempotency_keys", migrations.KERNEL_VERSION_TABLE}


async def version_in(db: ModuleDatabase, table: str) -> str | None:
    async with db.engine.connect() as conn:
        version_table = sql_table(table, column("version_num"), schema=db.schema)
        return (await conn.execute(select(version_table.c.version_num))).scalar()


async def test_upgrade_module_migrates_the_kernel_history_then_the_modules(
    backend: str, notes_db: ModuleDatabase
) -> None:
    before = await migrations.status_module(notes_db, NOTES_MIGRATIONS)
    assert before == [
        migrations.MigrationStatus("notes", None, KERNEL_HEAD, "kernel"),
        migrations.MigrationStatus("notes", None, NOTES_HEAD, "module"),
    ]

    after = await migrations.upgrade_module(notes_db, NOTES_MIGRATIONS)
    assert after == [
        migrations.MigrationStatus("notes", KERNEL_HEAD, KERNEL_HEAD, "kernel"),
        migrations.MigrationStatus("notes", NOTES_HEAD, NOTES_HEAD, "module"),
    ]
    assert all(state.up_to_date for state in after)
    assert await migrations.status_module(notes_db, NOTES_MIGRATIONS) == after
    assert KERNEL_TABLES | {"alembic_version", "notes", "tags"} <= await tables_in(notes_db, "notes")
    assert not KERNEL_TABLES & await main_schema_tables(notes_db, backend)
    assert await version_in(notes_db, migrations.KERNEL_VERSION_TABLE) == KERNEL_HEAD
    assert await version_in(notes_db, "alembic_version") == NOTES_HEAD


async def test_upgrade_module_is_idempotent_and_keeps_the_outbox(notes_db: ModuleDatabase) -> None:
    await migrations.upgrade_module(notes_db, NOTES_MIGRATIONS)
    now = datetime.now(UTC)
    event_id = uuid7()
    row = {
        "event_id": event_id,
        "event_name": "notes.NoteAdded",
        "event_version": 1,
        "aggregate_id": uuid7(),
        "occurred_at": now,
        "payload": "{}",
        "created_at": now,
    }
    async with notes_db.engine.begin() as conn:
        await conn.execute(insert(outbox).values(**row))  # no schema: the engine maps it to "notes"
    again = await migrations.upgrade_module(notes_db, NOTES_MIGRATIONS)
    assert [state.current for state in again] == [KERNEL_HEAD, NOTES_HEAD]
    async with notes_db.engine.connect() as conn:
        stored = (await conn.execute(text("SELECT event_id, attempts FROM notes.outbox"))).one()
    assert stored.attempts == 0
    assert str(stored.event_id).replace("-", "") == event_id.hex


async def test_a_module_without_migrations_still_gets_the_kernel_tables(empty_database_url: str) -> None:
    db = ModuleDatabase.connect("archive", empty_database_url)
    try:
        states = await migrations.upgrade_module(db, None)
        assert states == [migrations.MigrationStatus("archive", KERNEL_HEAD, KERNEL_HEAD, "kernel")]
        assert await migrations.status_module(db, None) == states
        tables = await tables_in(db, "archive")
        assert tables >= KERNEL_TABLES
        assert "alembic_version" not in tables
    finally:
        await db.dispose()


async def test_the_kernel_and_module_histories_move_independently(notes_db: ModuleDatabase) -> None:
    await migrations.upgrade_module(notes_db, NOTES_MIGRATIONS)

    module_gone = await migrations.downgrade(notes_db, NOTES_MIGRATIONS)
    assert module_gone.current is None
    tables = await tables_in(notes_db, "notes")
    assert not {"notes", "tags"} & tables
    assert tables >= KERNEL_TABLES  # the module's downgrade leaves the kernel's tables alone
    kernel, module = await migrations.status_module(notes_db, NOTES_MIGRATIONS)
    assert kernel.up_to_date
    assert not module.up_to_date

    kernel_gone = await migrations.downgrade(
        notes_db, migrations.KERNEL_MIGRATIONS, version_table=migrations.KERNEL_VERSION_TABLE
    )
    assert kernel_gone == migrations.MigrationStatus("notes", None, KERNEL_HEAD, "kernel")
    assert not {"outbox", "inbox", "jobs", "idempotency_keys"} & await tables_in(notes_db, "notes")

    back = await migrations.upgrade_module(notes_db, NOTES_MIGRATIONS)
    assert all(state.up_to_date for state in back)


async def test_each_module_has_its_own_kernel_tables(empty_database_url: str) -> None:
    notes = ModuleDatabase.connect("notes", empty_database_url)
    archive = ModuleDatabase.connect("archive", empty_database_url)
    try:
        await migrations.upgrade_module(notes, NOTES_MIGRATIONS)
        assert (await migrations.status_module(archive, None))[0].current is None  # not notes' row
        await migrations.upgrade_module(archive, None)
        now = datetime.now(UTC)
        async with notes.engine.begin() as conn:
            await conn.execute(
                insert(outbox).values(
                    event_id=uuid7(),
                    event_name="notes.NoteAdded",
                    event_version=1,
                    aggregate_id=uuid7(),
                    occurred_at=now,
                    payload="{}",
                    created_at=now,
                )
            )
        async with notes.engine.connect() as conn:
            assert (await conn.execute(select(func.count()).select_from(outbox))).scalar_one() == 1
        async with archive.engine.connect() as conn:
            assert (await conn.execute(select(func.count()).select_from(outbox))).scalar_one() == 0
    finally:
        await notes.dispose()
        await archive.dispose()


async def test_the_kernel_history_creates_exactly_the_kernel_tables(notes_db: ModuleDatabase) -> None:
    """The kernel's migrations and `messaging/tables.py` agree: columns, types, keys and indexes."""
    await migrations.upgrade_module(notes_db, None)
    # The tables are declared without a schema; compare them as they land in this module's.
    declared = MetaData(schema=notes_db.schema)
    for kernel_table in kernel_metadata.tables.values():
        kernel_table.to_metadata(declared, schema=notes_db.schema)

    def differences(connection: Connection) -> list[Any]:
        def include_name(name: str | None, kind: str, _parent: Any) -> bool:
            if kind == "schema":
                return name == notes_db.schema
            return name != migrations.KERNEL_VERSION_TABLE

        context = MigrationContext.configure(
            connection, opts={"include_schemas": True, "include_name": include_name, "compare_type": True}
        )
        return list(compare_metadata(context, declared))

    async with notes_db.engine.connect() as connection:
        assert await connection.run_sync(differences) == []
