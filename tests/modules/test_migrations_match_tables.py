"""Each module's migrations create exactly the tables, columns and indexes its `storage.py` declares.

A table changed in code without a migration (or a migration that drifted from the code) fails here,
on SQLite and PostgreSQL, instead of in production.
"""

from __future__ import annotations

from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, MetaData

from splitstone.bootstrap import MODULES
from splitstone.kernel.db import ModuleDatabase
from splitstone.kernel.messaging.tables import metadata as kernel_metadata
from splitstone.kernel.module import Module

# The kernel's tables live in every module's schema; they have migrations of their own.
KERNEL_TABLES = {*kernel_metadata.tables, "alembic_version", "splitstone_kernel_version"}
# Dialect-specific search structures that a migration adds outside the metadata (projects' 0002):
# PostgreSQL's generated `tasks.search` column and its GIN index, SQLite's FTS5 table and its shadows.
SEARCH_COLUMNS = {("tasks", "search")}
SEARCH_INDEXES = {"ix_tasks_search"}
SEARCH_TABLE_PREFIX = "tasks_fts"


def _differences(connection: Connection, metadata: MetaData) -> list[Any]:
    def include_name(name: str | None, kind: str, parent: Any) -> bool:
        if kind == "schema":
            return name == metadata.schema
        if kind == "table":
            return name not in KERNEL_TABLES and not (name or "").startswith(SEARCH_TABLE_PREFIX)
        if kind == "column":
            return (parent.get("table_name"), name) not in SEARCH_COLUMNS
        return not (kind == "index" and name in SEARCH_INDEXES)

    context = MigrationContext.configure(
        connection,
        opts={"include_schemas": True, "include_name": include_name, "compare_type": True},
    )
    return list(compare_metadata(context, metadata))


@pytest.mark.parametrize("module", [m for m in MODULES if m.metadata is not None], ids=lambda m: m.name)
async def test_migrations_match_the_declared_tables(module: Module, database_url: str) -> None:
    assert module.metadata is not None
    db = ModuleDatabase.connect(module.name, database_url)
    try:
        async with db.engine.connect() as connection:
            differences = await connection.run_sync(_differences, module.metadata)
    finally:
        await db.dispose()
    assert differences == []
