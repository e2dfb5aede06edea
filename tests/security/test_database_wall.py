"""The database as a wall between modules: the running app's module sessions touch their own tables only.

tests/kernel/test_provisioning.py proves the provisioning (one role per module, owning its schema) with a
raw connection of one role. This proves it where it matters: the container built for a topology in which
each module connects as its own role serves requests, and each of its module databases reads and writes
its own tables while every read and write of another module's table is refused by PostgreSQL.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx
import pytest
from sqlalchemy import make_url, text
from sqlalchemy.exc import ProgrammingError

from splitstone.bootstrap import MODULES
from splitstone.kernel import migrations
from splitstone.kernel.app import create_app
from splitstone.kernel.container import Container
from splitstone.kernel.db import ModuleDatabase
from splitstone.kernel.ratelimit import RateLimiter
from splitstone.kernel.settings import Environment, Settings
from tests.conftest import PG_ADMIN_DSN, _probe_postgres, require_service
from tests.support.split import create_module_roles, drop_module_roles

pytestmark = pytest.mark.backends("postgres")


@pytest.fixture
async def module_role_urls(backend: str) -> AsyncIterator[dict[str, str]]:
    """A database migrated by each module as its own role; {module: URL with that role}."""
    require_service(await _probe_postgres(), "PostgreSQL")
    database = f"splitstone_wall_{os.getpid()}_{secrets.token_hex(4)}"
    urls = await create_module_roles(database)
    try:
        for module in MODULES:
            db = ModuleDatabase.connect(module.name, urls[module.name])
            try:
                await migrations.upgrade_module(db, module.migrations)
            finally:
                await db.dispose()
        yield urls
    finally:
        await drop_module_roles(database)


async def _tables_by_schema(database_url: str) -> dict[str, list[str]]:
    admin = await asyncpg.connect(PG_ADMIN_DSN.rsplit("/", 1)[0] + "/" + database_url.rsplit("/", 1)[1])
    try:
        rows = await admin.fetch(
            "SELECT table_schema, table_name FROM information_schema.tables WHERE table_schema = ANY($1)",
            [m.name for m in MODULES],
        )
    finally:
        await admin.close()
    found: dict[str, list[str]] = {}
    for row in rows:
        found.setdefault(row["table_schema"], []).append(row["table_name"])
    return found


_READ = "SELECT count(*) FROM {table}"
_WRITE = "DELETE FROM {table} WHERE false"  # no row changes; the privilege is still checked


async def _refused(db: ModuleDatabase, statement: str, schema: str, table: str) -> bool:
    """Whether PostgreSQL refuses `statement` on `table` on `db`'s connection for lack of privilege."""
    sql = statement.format(table=f'"{schema}"."{table}"')  # names read from information_schema
    try:
        async with db.engine.begin() as connection:
            await connection.execute(text(sql))
    except ProgrammingError as error:
        if "permission denied" in str(error.orig):
            return True
        raise
    return False


async def test_the_running_apps_modules_reach_only_their_own_tables(
    module_role_urls: dict[str, str], tmp_path: Path, subtests: pytest.Subtests
) -> None:
    settings = Settings(env=Environment.TEST, data_dir=tmp_path, module_database_urls=module_role_urls)
    container = Container.build(settings, MODULES, rate_limiter=RateLimiter("memory://"))
    app = create_app(container)
    tables = await _tables_by_schema(next(iter(module_role_urls.values())))
    assert set(tables) == {m.name for m in MODULES}, tables
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            ready = await client.get("/readyz")
            assert ready.status_code == 200, ready.text  # every module database answers, as its own role
            registered = await client.post(
                "/api/v1/auth/register",
                json={
                    "email": "wall@example.com",
                    "password": "correct horse battery 42",
                    "display_name": "W",
                },
            )
            assert registered.status_code == 202, registered.text

        checked = 0
        for module in MODULES:
            db = container.databases[module.name]
            assert await _current_user(db) == make_url(module_role_urls[module.name]).username
            for schema, names in tables.items():
                for table in names:
                    with subtests.test(msg=f"{module.name} → {schema}.{table}"):
                        checked += 1
                        if schema == module.name:
                            assert not await _refused(db, _READ, schema, table)
                            assert not await _refused(db, _WRITE, schema, table)
                        else:
                            assert await _refused(db, _READ, schema, table)
                            assert await _refused(db, _WRITE, schema, table)
        assert checked == sum(len(names) for names in tables.values()) * len(MODULES)
    finally:
        await container.aclose()


async def _current_user(db: ModuleDatabase) -> str:
    async with db.session() as connection:
        return str(await connection.scalar(text("SELECT current_user")))
