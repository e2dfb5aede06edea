"""`splitstone db provision`: on PostgreSQL each module connects as its own role, which owns its schema and
can read no other module's tables."""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from typer.testing import CliRunner

from splitstone.bootstrap import MODULES
from splitstone.cli import app
from splitstone.kernel import migrations
from splitstone.kernel.db import ModuleDatabase
from splitstone.kernel.provisioning import ProvisioningError, provision_module_roles
from tests.conftest import PG_ADMIN_DSN, _probe_postgres, require_service

pytestmark = pytest.mark.backends("postgres")


@pytest.fixture
async def database(backend: str) -> AsyncIterator[str]:
    require_service(await _probe_postgres(), "PostgreSQL")
    name = f"splitstone_p_{os.getpid()}_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(PG_ADMIN_DSN)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        for module in MODULES:
            await admin.execute(f'DROP ROLE IF EXISTS "{name}_{module.name}"')
        await admin.close()


def _urls(database: str) -> dict[str, str]:
    host = PG_ADMIN_DSN.split("@", 1)[1].rsplit("/", 1)[0]
    return {m.name: f"postgresql+asyncpg://{database}_{m.name}@{host}/{database}" for m in MODULES}


async def test_each_module_migrates_as_its_own_role_and_cannot_read_another_modules_tables(
    database: str,
) -> None:
    urls = _urls(database)
    done = await provision_module_roles(PG_ADMIN_DSN, urls)
    assert {(d.module, d.actions) for d in done} == {
        (m.name, ("created role", "created schema")) for m in MODULES
    }
    for module in MODULES:  # each migrates its own schema, with no right to create schemas
        db = ModuleDatabase.connect(module.name, urls[module.name])
        try:
            await migrations.upgrade_module(db, module.migrations)
        finally:
            await db.dispose()

    billing = await asyncpg.connect(urls["billing"].replace("+asyncpg", ""))
    try:
        assert await billing.fetchval("SELECT count(*) FROM billing.subscriptions") == 0
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await billing.fetchval("SELECT count(*) FROM auth.users")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await billing.execute("CREATE TABLE public.sneaky (x int)")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await billing.execute("CREATE SCHEMA elsewhere")
    finally:
        await billing.close()

    again = await provision_module_roles(PG_ADMIN_DSN, urls)  # idempotent: nothing left to do
    assert {d.actions for d in again} == {()}


async def test_refuses_urls_it_cannot_provision(database: str) -> None:
    with pytest.raises(ProvisioningError, match="not on PostgreSQL"):
        await provision_module_roles(PG_ADMIN_DSN, {"auth": "sqlite+aiosqlite:///x.db"})
    with pytest.raises(ProvisioningError, match="no user"):
        await provision_module_roles(PG_ADMIN_DSN, {"auth": f"postgresql+asyncpg://127.0.0.1/{database}"})


def test_the_cli_provisions_the_roles_of_a_topology(database: str, tmp_path: Path) -> None:
    urls = _urls(database)
    topology = tmp_path / "t.toml"
    topology.write_text(
        f"version = 1\n[services.one]\nmodules = [{', '.join(repr(m.name) for m in MODULES)}]\n"
        'url = "http://127.0.0.1:8101"\n[services.one.database_urls]\n'
        + "".join(f'{m} = "{u}"\n' for m, u in urls.items())
    )
    result = CliRunner().invoke(
        app, ["db", "provision", "--topology", str(topology), "--admin-url", PG_ADMIN_DSN]
    )
    assert result.exit_code == 0, result.output
    assert f"auth: role {database}_auth in {database}: created role, created schema" in result.output
    again = CliRunner().invoke(
        app, ["db", "provision", "--topology", str(topology), "--admin-url", PG_ADMIN_DSN]
    )
    assert again.exit_code == 0, again.output
    assert f"billing: role {database}_billing in {database}: in place" in again.output
