"""Do two servers answer alike? The same status, JSON body and headers for the same request, and, for
a write, the same rows in the database; values that must differ (ids, times, tokens) are masked first.
"""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from uuid import UUID

import asyncpg

COMPARED_HEADERS = ("content-type", "etag", "location")
MASK = "<masked>"
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.IGNORECASE)
_TIME = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:?\d{2})?")
_HASH = re.compile(r"\b[0-9a-f]{64}\b")


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes


@dataclass(frozen=True)
class Comparison:
    problems: list[str]  # differences that make the servers' work not comparable
    notes: list[str]  # differences that do not (the same JSON in other bytes)


def masked(value: Any, keys: frozenset[str]) -> Any:
    """`value` (parsed JSON) with the values of `keys`, at any depth, replaced by a mask."""
    if isinstance(value, dict):
        return {k: MASK if k in keys else masked(v, keys) for k, v in value.items()}
    if isinstance(value, list):
        return [masked(item, keys) for item in value]
    return value


def compare(ours: Answer, theirs: Answer, *, mask: frozenset[str] = frozenset()) -> Comparison:
    """How `theirs` differs from `ours`: status, the headers ours sends, and the JSON body (`mask`: keys
    whose values may differ, such as a new task's id). UUIDs in a Location header are masked too."""
    problems: list[str] = []
    notes: list[str] = []
    if ours.status != theirs.status:
        problems.append(f"status: ours {ours.status}, baseline {theirs.status}")
    for name in COMPARED_HEADERS:
        if name not in ours.headers:
            continue
        mine, other = ours.headers[name], theirs.headers.get(name)
        if name == "location" and mask:
            mine, other = _UUID.sub(MASK, mine), _UUID.sub(MASK, other or "") or None
        if mine != other:
            problems.append(f"header {name}: ours {mine!r}, baseline {other!r}")
    try:
        mine_json, other_json = json.loads(ours.body), json.loads(theirs.body)
    except ValueError as error:
        if ours.body != theirs.body:
            problems.append(
                f"body (not JSON: {error}):\n  ours     {ours.body[:300]!r}\n  baseline {theirs.body[:300]!r}"
            )
        return Comparison(problems, notes)
    mine_json, other_json = masked(mine_json, mask), masked(other_json, mask)
    if mine_json != other_json:
        problems.append("body:\n" + diff(mine_json, other_json))
    elif not mask and ours.body != theirs.body:
        notes.append("the same JSON in other bytes (key order, spacing or escapes)")
    return Comparison(problems, notes)


def diff(ours: Any, theirs: Any) -> str:
    """A unified diff of two JSON values, pretty-printed with sorted keys."""
    mine = json.dumps(ours, indent=1, sort_keys=True, default=str).splitlines()
    other = json.dumps(theirs, indent=1, sort_keys=True, default=str).splitlines()
    return "\n".join(difflib.unified_diff(mine, other, "ours", "baseline", lineterm="", n=2))


# -- the rows a write leaves ------------------------------------------------------------------------------

# (table, column that names the new thing): what a task creation or a login writes.
CREATE_ROWS = [
    ("projects.tasks", "id"),
    ("projects.task_labels", "task_id"),
    ("projects.watchers", "task_id"),
    ("projects.activity", "task_id"),
    ("projects.outbox", "aggregate_id"),
    ("projects.jobs", "idempotency_key"),
]
LOGIN_ROWS = [("auth.sessions", "id"), ("auth.refresh_tokens", "session_id")]


async def rows_written(
    dsn: str, tables: list[tuple[str, str]], new_id: UUID, known: dict[str, str], extra: dict[str, str]
) -> dict[str, list[dict[str, str]]]:
    """The rows of `tables` that name `new_id`, each value as comparable text: `known` ids (and `extra`
    values, such as the task's key) become their names, other UUIDs, times and hashes masks."""
    conn = await asyncpg.connect(dsn)
    try:
        found: dict[str, list[dict[str, str]]] = {}
        for table, column in tables:
            value: Any = str(new_id) if column == "idempotency_key" else new_id
            rows = await conn.fetch(f"SELECT * FROM {table} WHERE {column} = $1", value)
            names = {str(new_id): "<new>", **known, **extra}
            found[table] = sorted(
                ({k: _comparable(k, v, names) for k, v in dict(row).items()} for row in rows),
                key=lambda row: json.dumps(row, sort_keys=True),
            )
        return found
    finally:
        await conn.close()


def _comparable(column: str, value: Any, names: dict[str, str]) -> str:
    if value is None:
        return "NULL"
    if column in ("position", "number", "search", "request_id", "traceparent"):
        return "<set>"  # sequences, a tsvector of the title, and per-request observability
    if isinstance(value, datetime | date):
        return "<time>"
    text = str(value)
    for raw, name in sorted(names.items(), key=lambda item: -len(item[0])):
        text = text.replace(raw, name)
    return _HASH.sub("<hash>", _TIME.sub("<time>", _UUID.sub("<uuid>", text)))


def compare_rows(ours: dict[str, list[dict[str, str]]], theirs: dict[str, list[dict[str, str]]]) -> list[str]:
    """The tables whose rows differ, each with a diff."""
    return [
        f"rows of {table}:\n" + diff(ours[table], theirs.get(table, []))
        for table in ours
        if ours[table] != theirs.get(table, [])
    ]
