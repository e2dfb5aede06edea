"""One Alembic history per module, with its version table in the module's own schema.

No env.py is needed: the kernel drives Alembic's `EnvironmentContext` itself, on the module's engine,
so `splitstone db upgrade` works the same on SQLite and PostgreSQL.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic.config import Config
from alembic.runtime.environment import EnvironmentContext
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection

from splitstone.kernel.db import ModuleDatabase

VERSION_TABLE = "alembic_version"


@dataclass(frozen=True)
class MigrationStatus:
    module: str
    current: str | None
    head: str | None

    @property
    def up_to_date(self) -> bool:
        return self.current == self.head


def script_directory(migrations: Path) -> ScriptDirectory:
    config = Config()
    config.set_main_option("script_location", str(migrations))
    return ScriptDirectory.from_config(config)


async def upgrade(db: ModuleDatabase, migrations: Path, revision: str = "heads") -> MigrationStatus:
    """Apply the module's migrations up to `revision` in its own schema."""
    await db.ensure_schema()
    script = script_directory(migrations)

    def run(connection: Connection) -> None:
        def upgrade_steps(rev: Any, _context: Any) -> Any:
            return script._upgrade_revs(revision, rev)

        _run(connection, db.schema, script, upgrade_steps)

    async with db.engine.begin() as conn:
        await conn.run_sync(run)
    return await status(db, migrations)


async def downgrade(db: ModuleDatabase, migrations: Path, revision: str = "base") -> MigrationStatus:
    script = script_directory(migrations)

    def run(connection: Connection) -> None:
        def downgrade_steps(rev: Any, _context: Any) -> Any:
            return script._downgrade_revs(revision, rev)

        _run(connection, db.schema, script, downgrade_steps)

    async with db.engine.begin() as conn:
        await conn.run_sync(run)
    return await status(db, migrations)


async def status(db: ModuleDatabase, migrations: Path) -> MigrationStatus:
    head = script_directory(migrations).get_current_head()

    def current(connection: Connection) -> str | None:
        context = MigrationContext.configure(
            connection, opts={"version_table": VERSION_TABLE, "version_table_schema": db.schema}
        )
        return context.get_current_revision()

    async with db.engine.connect() as conn:
        revision = await conn.run_sync(current)
    return MigrationStatus(db.schema, revision, head)


def _run(connection: Connection, schema: str, script: ScriptDirectory, fn: Any) -> None:
    config = Config()
    with EnvironmentContext(config, script, fn=fn) as env:
        env.configure(
            connection=connection,
            version_table=VERSION_TABLE,
            version_table_schema=schema,
            render_as_batch=connection.dialect.name == "sqlite",
            transactional_ddl=True,
        )
        with env.begin_transaction():
            env.run_migrations()
