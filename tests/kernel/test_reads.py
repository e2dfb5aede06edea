"""Prepared reads: the same rows on the driver (read-only units on PostgreSQL) as through SQLAlchemy."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import bindparam, insert, select
from sqlalchemy.exc import StatementError
from uuid6 import uuid7

from splitstone.kernel.clock import ManualClock
from splitstone.kernel.db import ModuleDatabase, UnitOfWorkFactory
from splitstone.kernel.messaging.outbox import OutboxSink
from splitstone.kernel.messaging.tables import outbox
from splitstone.kernel.reads import PreparedQuery
from tests.kernel.conftest import migrate_notes, notes_table

AT = datetime(2030, 1, 1, tzinfo=UTC)

NOTES_SINCE = PreparedQuery(
    select(notes_table.c.id, notes_table.c.text, notes_table.c.created_at)
    .where(notes_table.c.created_at >= bindparam("since"), notes_table.c.text != "skipped")
    .order_by(notes_table.c.created_at)
)


@pytest.fixture
async def units(notes_db: ModuleDatabase) -> UnitOfWorkFactory:
    await migrate_notes(notes_db)
    units = UnitOfWorkFactory(notes_db, OutboxSink(notes_db, ManualClock(AT), default_job_attempts=3))
    async with units() as uow:
        for minutes, text in [(0, "first"), (1, "skipped"), (2, "second")]:
            note = {"id": uuid7(), "text": text, "created_at": AT + timedelta(minutes=minutes)}
            await uow.session.execute(insert(notes_table).values(**note))
        await uow.commit()
    return units


async def test_a_read_only_unit_and_a_writing_one_read_the_same_rows(
    backend: str, units: UnitOfWorkFactory
) -> None:
    async with units(read_only=True) as reading:
        read_only = await reading.fetch_all(NOTES_SINCE, since=AT)
        # On PostgreSQL the read went to asyncpg itself: SQLAlchemy never began a transaction.
        assert reading.session.in_transaction() is (backend == "sqlite")
    async with units() as writing:
        in_transaction = await writing.fetch_all(NOTES_SINCE, since=AT)

    def plain(rows: object) -> list[tuple[object, ...]]:
        return [(row["id"], row["text"], row["created_at"]) for row in rows]  # type: ignore[attr-defined]

    assert plain(read_only) == plain(in_transaction)
    assert [row["text"] for row in read_only] == ["first", "second"]
    assert read_only[1]["created_at"] == AT + timedelta(minutes=2)
    assert read_only[1]["created_at"].tzinfo is not None


async def test_fetch_one_is_the_first_row_or_none(units: UnitOfWorkFactory) -> None:
    async with units(read_only=True) as uow:
        first = await uow.fetch_one(NOTES_SINCE, since=AT)
        none = await uow.fetch_one(NOTES_SINCE, since=AT + timedelta(days=1))
    assert first is not None
    assert first["text"] == "first"
    assert none is None


async def test_a_naive_datetime_is_refused_on_the_driver_too(units: UnitOfWorkFactory) -> None:
    async with units(read_only=True) as uow:
        with pytest.raises((ValueError, StatementError), match="naive datetime"):
            await uow.fetch_all(NOTES_SINCE, since=datetime(2030, 1, 1))


@pytest.mark.backends("postgres")
@pytest.mark.parametrize(
    ("statement", "refusal"),
    [
        (select(notes_table).where(notes_table.c.id.in_(bindparam("ids", expanding=True))), "not lists"),
        (select(outbox.c.event_id).where(outbox.c.event_id == bindparam("id")), "own tables"),
    ],
    ids=["in-list", "kernel-table"],
)
async def test_what_the_driver_cannot_run_as_compiled_is_refused(
    units: UnitOfWorkFactory, statement: object, refusal: str
) -> None:
    async with units(read_only=True) as uow:
        with pytest.raises(ValueError, match=refusal):
            await uow.fetch_all(PreparedQuery(statement), ids=[uuid7()], id=uuid7())  # type: ignore[arg-type]
