"""No foreign key crosses a module's schema: in the declared tables, and in the migrated database.

A cross-schema foreign key would tie two modules' data together and make splitting them impossible;
cross-module references are plain ids, resolved through the other module's contract.
"""

from __future__ import annotations

from sqlalchemy import Column, Connection, ForeignKey, Table, Uuid, inspect, text
from sqlalchemy.exc import NoReferencedTableError
from sqlalchemy.ext.asyncio import create_async_engine

from splitstone.kernel.db import ModuleDatabase, module_metadata
from splitstone.kernel.messaging import tables as kernel_tables
from splitstone.kernel.module import Module
from tests.kernel.conftest import notes_module

PG_FOREIGN_KEYS = text(
    """
    SELECT con.conname, src_ns.nspname, src.relname, dst_ns.nspname, dst.relname
    FROM pg_constraint con
    JOIN pg_class src ON src.oid = con.conrelid
    JOIN pg_namespace src_ns ON src_ns.oid = src.relnamespace
    JOIN pg_class dst ON dst.oid = con.confrelid
    JOIN pg_namespace dst_ns ON dst_ns.oid = dst.relnamespace
    WHERE con.contype = 'f'
    """
)

PG_INFORMATION_SCHEMA_FOREIGN_KEYS = text(
    """
    SELECT tc.constraint_name, tc.table_schema, ccu.table_schema
    FROM information_schema.table_constraints tc
    JOIN information_schema.constraint_column_usage ccu
      ON ccu.constraint_name = tc.constraint_name AND ccu.constraint_schema = tc.constraint_schema
    WHERE tc.constraint_type = 'FOREIGN KEY'
    """
)


def schema_violations(module: Module) -> tuple[list[str], int]:
    """What in a module's declared tables leaves its schema, and how many foreign keys were checked."""
    if module.metadata is None:
        return [], 0
    problems: list[str] = []
    checked = 0
    for table in module.metadata.tables.values():
        if table.schema != module.name:
            problems.append(f"table {table.fullname} is outside schema {module.name!r}")
        for fk in table.foreign_keys:
            checked += 1
            try:
                target = fk.column.table
            except NoReferencedTableError:
                problems.append(f"{table.fullname}: {fk.target_fullname} is not among {module.name}'s tables")
                continue
            if target.schema != module.name:
                problems.append(f"{table.fullname}: foreign key to {target.fullname} leaves {module.name!r}")
    return problems, checked


def real_modules() -> tuple[Module, ...]:
    from splitstone.bootstrap import MODULES  # imported here: the kernel suite must not need them to load

    return MODULES


def test_the_check_catches_foreign_keys_that_leave_the_schema() -> None:
    clean, checked = schema_violations(notes_module())
    assert clean == []
    assert checked == 1  # tags.note_id -> notes.id

    metadata = module_metadata("notes")
    Table("notes", metadata, Column("id", Uuid, primary_key=True))
    Table("owners", metadata, Column("id", Uuid, primary_key=True), schema="billing")
    Table(
        "shares",
        metadata,
        Column("id", Uuid, primary_key=True),
        Column("user_id", Uuid, ForeignKey("auth.users.id")),  # another module's table
        Column("owner_id", Uuid, ForeignKey("billing.owners.id")),  # a table of ours in a foreign schema
        Column("note_id", Uuid, ForeignKey("notes.notes.id")),  # fine
    )
    problems, checked = schema_violations(notes_module(metadata=metadata))
    assert checked == 3
    assert sorted(problems) == [
        "notes.shares: auth.users.id is not among notes's tables",
        "notes.shares: foreign key to billing.owners leaves 'notes'",
        "table billing.owners is outside schema 'notes'",
    ]


def test_the_kernels_tables_belong_to_no_schema_and_reference_nothing() -> None:
    """The outbox, inbox, jobs and idempotency keys are declared once, without a schema, and each
    module's engine maps them into its own schema: so they must not name one, nor point at any other
    table."""
    assert set(kernel_tables.metadata.tables) == {"outbox", "inbox", "jobs", "idempotency_keys"}
    for table in kernel_tables.metadata.tables.values():
        assert table.schema is None, table.fullname
        assert table.foreign_keys == set(), table.fullname


def test_no_declared_foreign_key_crosses_a_module_schema() -> None:
    total = 0
    for module in real_modules():
        problems, checked = schema_violations(module)
        assert problems == [], f"module {module.name!r}: {problems}"
        total += checked
    assert total > 0, "no foreign keys were checked at all; is the metadata declared?"


ForeignKeyRow = tuple[str, str, str | None, str]
"""(schema, table, referenced schema or None when not found beside it, referenced table)"""


def table_names(connection: Connection, schema: str) -> list[str]:
    return inspect(connection).get_table_names(schema=schema)


async def database_foreign_keys(backend: str, url: str, schemas: list[str]) -> list[ForeignKeyRow]:
    """Every foreign key the database holds in the given schemas, read from the catalogue."""
    if backend == "postgres":
        engine = create_async_engine(url)
        try:
            async with engine.connect() as conn:
                keys = (await conn.execute(PG_FOREIGN_KEYS)).all()
                by_information_schema = (await conn.execute(PG_INFORMATION_SCHEMA_FOREIGN_KEYS)).all()
        finally:
            await engine.dispose()
        # Two views of the same catalogue must agree on which schemas each key joins.
        assert {(k[0], k[1], k[3]) for k in keys} == {tuple(k) for k in by_information_schema}
        return [(k[1], k[2], k[3], k[4]) for k in keys]

    # SQLite: each schema is its own file, and a foreign key names a table without a schema: the
    # referenced table must be in the same file, or the key points outside its module.
    found: list[ForeignKeyRow] = []
    for schema in schemas:
        db = ModuleDatabase.connect(schema, url)
        try:
            async with db.engine.connect() as conn:
                tables = set(await conn.run_sync(table_names, schema))
                for table in sorted(tables):
                    pragma = text(f'PRAGMA "{schema}".foreign_key_list("{table}")')
                    for row in (await conn.execute(pragma)).all():
                        target = row._mapping["table"]
                        found.append((schema, table, schema if target in tables else None, target))
        finally:
            await db.dispose()
    return found


async def test_the_database_check_sees_a_key_that_crosses_schemas(
    backend: str, empty_database_url: str
) -> None:
    notes, billing = (ModuleDatabase.connect(name, empty_database_url) for name in ("notes", "billing"))
    try:
        for db in (notes, billing):
            await db.ensure_schema()
        async with billing.engine.begin() as conn:
            await conn.execute(text("CREATE TABLE billing.owners (id INTEGER PRIMARY KEY)"))
        async with notes.engine.begin() as conn:
            await conn.execute(text("CREATE TABLE notes.own (id INTEGER PRIMARY KEY)"))
            # SQLite cannot qualify a referenced table: it always means one in the same file.
            owners, own = ("billing.owners", "notes.own") if backend == "postgres" else ("owners", "own")
            await conn.execute(
                text(
                    "CREATE TABLE notes.shares (id INTEGER PRIMARY KEY, "
                    f"owner_id INTEGER REFERENCES {owners} (id), own_id INTEGER REFERENCES {own} (id))"
                )
            )
    finally:
        await notes.dispose()
        await billing.dispose()

    keys = await database_foreign_keys(backend, empty_database_url, ["notes", "billing"])
    expected_crossing = ("notes", "shares", "billing" if backend == "postgres" else None, "owners")
    assert sorted(keys, key=str) == sorted([expected_crossing, ("notes", "shares", "notes", "own")], key=str)


async def test_no_migrated_foreign_key_crosses_a_schema(backend: str, database_url: str) -> None:
    """The real modules, migrated (the `database_url` fixture): every key stays in its schema."""
    names = [m.name for m in real_modules() if m.migrations is not None]
    keys = await database_foreign_keys(backend, database_url, names)
    assert keys, "the migrated database has no foreign keys at all; was it migrated?"
    crossing = [key for key in keys if key[0] != key[2]]
    assert crossing == [], f"foreign keys that leave their module's schema: {crossing}"
    assert {key[0] for key in keys} <= set(names)
    for name in [m.name for m in real_modules()]:  # each module has the kernel's tables of its own
        db = ModuleDatabase.connect(name, database_url)
        try:
            async with db.engine.connect() as conn:
                tables = set(await conn.run_sync(table_names, name))
        finally:
            await db.dispose()
        assert {"outbox", "inbox", "jobs"} <= tables, f"module {name!r} lacks the kernel's tables"
    if backend == "postgres":
        engine = create_async_engine(database_url)
        try:
            async with engine.connect() as conn:
                schemas = (
                    await conn.execute(
                        text(
                            "SELECT DISTINCT table_schema FROM information_schema.tables "
                            "WHERE table_schema NOT IN ('pg_catalog', 'information_schema')"
                        )
                    )
                ).scalars()
                assert set(schemas) <= set(names), "tables outside the modules' schemas"
        finally:
            await engine.dispose()
