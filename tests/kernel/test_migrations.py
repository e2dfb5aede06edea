"""One Alembic history per module, applied in the module's own schema (the fake "notes" module)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import insert, inspect, select, text
from sqlalchemy.exc import DBAPIError
from uuid6 import uuid7

from splitstone.kernel import migrations
from splitstone.kernel.db import ModuleDatabase
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
