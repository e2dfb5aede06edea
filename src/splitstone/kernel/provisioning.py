"""Database roles per module on PostgreSQL: each module connects as a role that owns its own schema and
may touch nothing else (rule 3, enforced by the database rather than by review).

`provision_module_roles` is what `splitstone db provision` runs as an administrator, once per database,
before the services migrate their own schemas as their own roles. It is idempotent: an existing role or
schema is left as it is (a schema's owner is corrected), so it can run on every deploy.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import asyncpg
from sqlalchemy.engine import make_url


class ProvisioningError(ValueError):
    """The module URLs cannot be provisioned as asked (not PostgreSQL, several databases, no user)."""


@dataclass(frozen=True)
class Provisioned:
    module: str
    role: str
    database: str
    actions: tuple[str, ...]
    """What was done ("created role", "created schema", ...); empty when everything was in place."""


async def provision_module_roles(admin_url: str, module_urls: Mapping[str, str]) -> list[Provisioned]:
    """For each module whose URL names a user: that role (LOGIN, with the URL's password if any), and
    the module's schema owned by it, in the URL's database; PUBLIC loses CREATE on schema `public`.

    `admin_url` is a PostgreSQL URL of a superuser (or a role with CREATEROLE and CREATE on the database);
    it connects to each module's database in turn.
    """
    done: list[Provisioned] = []
    for module, url in module_urls.items():
        parsed = make_url(url)
        if parsed.get_backend_name() != "postgresql":
            raise ProvisioningError(f"module '{module}' is not on PostgreSQL ({parsed.get_backend_name()})")
        if not parsed.username or not parsed.database:
            raise ProvisioningError(f"the URL of module '{module}' names no user or no database")
        admin = make_url(admin_url).set(drivername="postgresql", database=parsed.database)
        conn = await asyncpg.connect(admin.render_as_string(hide_password=False))
        try:
            actions = await _provision(conn, module, parsed.username, parsed.password)
        finally:
            await conn.close()
        done.append(Provisioned(module, parsed.username, parsed.database, tuple(actions)))
    return done


async def _provision(conn: asyncpg.Connection, schema: str, role: str, password: str | None) -> list[str]:
    actions: list[str] = []
    quoted_role, quoted_schema = _quote(role), _quote(schema)
    async with conn.transaction():
        if not await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role):
            await conn.execute(f"CREATE ROLE {quoted_role} LOGIN")
            actions.append("created role")
        if password:
            # A literal, not a parameter: utility statements take none. Quoted as a string literal.
            literal = "'" + password.replace("'", "''") + "'"
            await conn.execute(f"ALTER ROLE {quoted_role} PASSWORD {literal}")
        owner = await conn.fetchval(
            "SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = $1", schema
        )
        if owner is None:
            await conn.execute(f"CREATE SCHEMA {quoted_schema} AUTHORIZATION {quoted_role}")
            actions.append("created schema")
        elif owner != role:
            await conn.execute(f"ALTER SCHEMA {quoted_schema} OWNER TO {quoted_role}")
            actions.append(f"schema owner {owner} → {role}")
        await conn.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
    return actions


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'
