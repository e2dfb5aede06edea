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
# The kernel's own tables (outbox, inbox, jobs, idempotency keys) in every module's schema, with
# their own history.
KERNEL_MIGRATIONS = Path(__file__).parent / "messaging" / "migrations"
KERNEL_VERSION_TABLE = "splitstone_kernel_version"


@dataclass(frozen=True)
class MigrationStatus:
    module: str
    current: str | None
    head: str | None
    history: str = "module"

    @property
    def up_to_date(self) -> bool:
        return self.current == self.head


def script_directory(migrations: Path) -> ScriptDirectory:
    config = Config()
    config.set_main_option("script_location", str(migrations))
    return ScriptDirectory.from_config(config)


async def upgrade(
    db: ModuleDatabase, migrations: Path, revision: str = "heads", *, version_table: str = VERSION_TABLE
) -> MigrationStatus:
    """Apply the module's migrations up to `revision` in its own schema."""
    await db.ensure_schema()
    script = script_directory(migrations)

    def run(connection: Connection) -> None:
        def upgrade_steps(rev: Any, _context: Any) -> Any:
            return script._upgrade_revs(revision, rev)

        _run(connection, db.schema, script, upgrade_steps, version_table)

    async with db.engine.begin() as conn:
        await conn.run_sync(run)
    return await status(db, migrations, version_table=version_table)


async def downgrade(
    db: ModuleDatabase, migrations: Path, revision: str = "base", *, version_table: str = VERSION_TABLE
) -> MigrationStatus:
    script = script_directory(migrations)

    def run(connection: Connection) -> None:
        def downgrade_steps(rev: Any, _context: Any) -> Any:
            return script._downgrade_revs(revision, rev)

        _run(connection, db.schema, script, downgrade_steps, version_table)

    async with db.engine.begin() as conn:
        await conn.run_sync(run)
    return await status(db, migrations, version_table=version_table)


async def status(
    db: ModuleDatabase, migrations: Path, *, version_table: str = VERSION_TABLE
) -> MigrationStatus:
    head = script_directory(migrations).get_current_head()

    def current(connection: Connection) -> str | None:
        context = MigrationContext.configure(
            connection, opts={"version_table": version_table, "version_table_schema": db.schema}
        )
        return context.get_current_revision()

    async with db.engine.connect() as conn:
        revision = await conn.run_sync(current)
    history = "kernel" if version_table == KERNEL_VERSION_TABLE else "module"
    return MigrationStatus(db.schema, revision, head, history)


async def upgrade_module(db: ModuleDatabase, migrations: Path | None) -> list[MigrationStatus]:
    """The kernel's tables, then the module's own history, each to its head."""
    states = [await upgrade(db, KERNEL_MIGRATIONS, version_table=KERNEL_VERSION_TABLE)]
    if migrations is not None:
        states.append(await upgrade(db, migrations))
    return states


async def status_module(db: ModuleDatabase, migrations: Path | None) -> list[MigrationStatus]:
    states = [await status(db, KERNEL_MIGRATIONS, version_table=KERNEL_VERSION_TABLE)]
    if migrations is not None:
        states.append(await status(db, migrations))
    return states


def _run(connection: Connection, schema: str, script: ScriptDirectory, fn: Any, version_table: str) -> None:
    config = Config()
    with EnvironmentContext(config, script, fn=fn) as env:
        env.configure(
            connection=connection,
            version_table=version_table,
            version_table_schema=schema,
            render_as_batch=connection.dialect.name == "sqlite",
            transactional_ddl=True,
        )
        with env.begin_transaction():
            env.run_migrations()
