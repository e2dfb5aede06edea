"""What the benchmarks that seed PostgreSQL with SQL share: UUIDv7 ids made in SQL, deep cursors, and
settling the tables before measuring."""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

import asyncpg


def uuid7_sql(moment: str, n: str) -> str:
    """A SQL expression of a UUIDv7 for row `n` created at `moment` (SQL expressions both): the time in
    its first 48 bits, as the app's ids hold it, so ordering by id is ordering by creation time."""
    return (
        f"(lpad(to_hex((extract(epoch FROM {moment}) * 1000)::bigint), 12, '0') || '7'"
        f" || substr(md5(({n})::text), 1, 3) || '8' || substr(md5(({n})::text), 4, 15))::uuid"
    )


def cursor_like(first_cursor: str, value: Any, last_id: uuid.UUID) -> str:
    """A keyset cursor of the same list as `first_cursor` (it keeps its list digest), after the row
    (value, id): a page deep in a list without reading every page before it."""
    digest = json.loads(base64.urlsafe_b64decode(first_cursor + "=" * (-len(first_cursor) % 4)))[0]
    payload = json.dumps([digest, value, last_id.hex], separators=(",", ":"))
    return base64.urlsafe_b64encode(payload.encode()).rstrip(b"=").decode("ascii")


async def settle(conn: asyncpg.Connection, tables: list[str]) -> None:
    """Fresh statistics and visibility maps, and a checkpoint, so that the bulk writes neither mislead
    the planner nor slow the measures down."""
    for table in tables:
        await conn.execute(f"VACUUM ANALYZE {table}")
    await conn.execute("CHECKPOINT")
