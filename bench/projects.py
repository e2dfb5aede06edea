"""Task lists and search benchmark: is a page as fast with 1M tasks as with 10k?

Seeds one organization on PostgreSQL with growing numbers of tasks (10k, 100k, 1M by default; SQL
`generate_series`, UUIDv7 ids), and at each size measures p50/p99 of `TaskLists.page` (50 tasks, the
same call the API makes) for the first page and for a deep page (the cursor after 90% of the list),
for these lists: newest first, by priority, by due date, and a search for a common and a rare word.
It prints each query's EXPLAIN (ANALYZE) plan with the indexes it uses, and the ratios of p50 at the
largest size to p50 at the smallest. Target: within 1.5x.

    .venv/bin/python -m bench.projects [--sizes 10000,100000,1000000] [--runs 100]

Needs PostgreSQL (SPLITSTONE_BENCH_PG_DSN, default postgresql://root@127.0.0.1/test); creates and
drops a database of its own. Results: bench/results/projects-latest.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import statistics
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import asyncpg
from sqlalchemy import event

from bench.common import commit
from bench.seeding import cursor_like, settle, uuid7_sql
from splitstone.kernel import migrations
from splitstone.kernel.clock import SystemClock
from splitstone.kernel.db import ModuleDatabase, ScheduledJob, UnitOfWorkFactory
from splitstone.kernel.events import Event
from splitstone.modules.projects.lists import TaskLists
from splitstone.modules.projects.module import module as projects_module

PG_DSN = os.environ.get("SPLITSTONE_BENCH_PG_DSN", "postgresql://root@127.0.0.1/test")
RESULTS = os.path.join(os.path.dirname(__file__), "results", "projects-latest.json")
PAGE = 50
ORG = uuid.UUID("01940000-0000-7000-8000-00000000beef")
PROJECTS = 20
COMMON_WORD = "login"  # in 1 task of 8
RARE_WORD = "zeppelin"  # in 1 task of 1,000
WORDS = ["login", "signup", "invoice", "export", "report", "search", "billing", "dashboard"]


@dataclass(frozen=True)
class Case:
    """A list to measure: the arguments of `page`, and the SQL that finds its row at 90%."""

    name: str
    params: dict[str, Any]
    order_by: str
    where: str = ""
    value: str | None = None  # the sort column whose value a cursor holds (None: the id alone)


CASES = [
    Case("newest", {}, "id DESC"),
    Case("priority", {"sort": "priority"}, "priority DESC, id DESC", value="priority"),
    Case("due", {"sort": "due"}, "due_date ASC NULLS LAST, id ASC", value="due_date"),
    Case(
        f"search {COMMON_WORD!r}",
        {"q": COMMON_WORD},
        "id DESC",
        f"AND search @@ websearch_to_tsquery('simple', '\"{COMMON_WORD}\"')",
    ),
    Case(
        f"search {RARE_WORD!r}",
        {"q": RARE_WORD},
        "id DESC",
        f"AND search @@ websearch_to_tsquery('simple', '\"{RARE_WORD}\"')",
    ),
]


@dataclass
class Measure:
    size: int
    case: str
    page: str  # first | deep
    p50_ms: float
    p99_ms: float
    db_ms: float  # the database's own execution time (EXPLAIN ANALYZE), median of a few runs
    plan: list[str] = field(default_factory=list)
    indexes: list[str] = field(default_factory=list)


class _NoSink:
    """The lists only read: nothing is ever staged."""

    async def stage(
        self, session: Any, events: Sequence[Event], jobs: Sequence[ScheduledJob], traces: Any, rows: Any = ()
    ) -> None:
        return None

    def committed(self, events: Sequence[Event], jobs: Sequence[ScheduledJob]) -> None:
        return None


# -- seeding ----------------------------------------------------------------------------------------------

SEED_PROJECTS = """
INSERT INTO projects.projects (id, org_id, key, name, description, status, last_number, created_by,
                               created_at, updated_at, archived_at)
SELECT ('01940000-0000-7000-8000-' || lpad(to_hex(p), 12, '0'))::uuid, $1, 'P' || p, 'Project ' || p,
       '', 'active', 0, NULL, now(), now(), NULL
FROM generate_series(1, $2::int) AS p
"""

# Task n: created n seconds after 2024-01-01 (its UUIDv7 id holds that time), in project n % 20,
# status/priority/assignee/due cycling, one of eight words in the title, a rare word in 1 of 1,000.
SEED_TASKS = f"""
INSERT INTO projects.tasks (id, org_id, project_id, number, title, description, status, priority,
                            assignee_id, due_date, labels, created_by, created_at, updated_at, version)
SELECT {uuid7_sql("t.ts", "t.n")},
       $1,
       ('01940000-0000-7000-8000-' || lpad(to_hex(1 + t.n % $4::int), 12, '0'))::uuid,
       t.n,
       'Task ' || t.n || ' ' || ($5::text[])[1 + t.n % 8] || ' ' || ($5::text[])[1 + (t.n / 8) % 8]
           || CASE WHEN t.n % 1000 = 7 THEN ' zeppelin' ELSE '' END,
       'Steps to reproduce: open the ' || ($5::text[])[1 + (t.n / 3) % 8] || ' page and look.',
       (ARRAY['todo', 'in_progress', 'done', 'canceled'])[1 + t.n % 4],
       (t.n * 7) % 5,
       CASE WHEN t.n % 3 = 0 THEN NULL
            ELSE ('01940000-0000-7000-8000-' || lpad(to_hex(100 + t.n % 50), 12, '0'))::uuid END,
       CASE WHEN t.n % 20 = 0 THEN NULL ELSE DATE '2025-01-01' + (t.n * 13) % 730 END,
       '[]', NULL, t.ts, t.ts + ((t.n * 31) % 100000) * interval '1 second', 1
FROM (SELECT n, TIMESTAMPTZ '2024-01-01 00:00:00+00' + n * interval '1 second' AS ts
      FROM generate_series($2::int, $3::int) AS n) AS t
"""


async def _seed(dsn: str, start: int, end: int) -> float:
    began = time.perf_counter()
    conn = await asyncpg.connect(dsn)
    try:
        if start == 1:
            await conn.execute(SEED_PROJECTS, ORG, PROJECTS)
        chunk = 250_000
        for low in range(start, end + 1, chunk):
            await conn.execute(SEED_TASKS, ORG, low, min(end, low + chunk - 1), PROJECTS, WORDS)
        await settle(conn, ["projects.tasks", "projects.projects"])
    finally:
        await conn.close()
    return time.perf_counter() - began


# -- measuring --------------------------------------------------------------------------------------------


async def _deep_cursor(dsn: str, lists: TaskLists, case: Case) -> str | None:
    conn = await asyncpg.connect(dsn)
    try:
        where = f"org_id = $1 {case.where}"
        total = await conn.fetchval(f"SELECT count(*) FROM projects.tasks WHERE {where}", ORG)
        column = case.value or "id"
        row = await conn.fetchrow(
            f"SELECT id, {column} AS value FROM projects.tasks WHERE {where} "
            f"ORDER BY {case.order_by} OFFSET $2 LIMIT 1",
            ORG,
            int(total * 0.9),
        )
    finally:
        await conn.close()
    first = await lists.page(ORG, limit=PAGE, **case.params)
    if row is None or first.next_cursor is None:
        return None
    value = row["value"] if case.value else None
    if isinstance(value, date):
        value = value.isoformat()
    return cursor_like(first.next_cursor, value, row["id"])


async def _timed(lists: TaskLists, case: Case, cursor: str | None, runs: int) -> tuple[float, float]:
    for _ in range(max(3, runs // 10)):  # warm the cache and the connection pool
        await lists.page(ORG, limit=PAGE, cursor=cursor, **case.params)
    samples = []
    for _ in range(runs):
        began = time.perf_counter()
        page = await lists.page(ORG, limit=PAGE, cursor=cursor, **case.params)
        samples.append(time.perf_counter() - began)
        assert len(page.items) == PAGE or page.next_cursor is None
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return round(statistics.median(ordered) * 1000, 2), round(p99 * 1000, 2)


async def _plan(
    db: ModuleDatabase, lists: TaskLists, case: Case, cursor: str | None
) -> tuple[list[str], list[str], float]:
    """EXPLAIN ANALYZE of the task queries one `page` call runs (not the project-keys lookup): the
    plan, the indexes it names, and the median execution time the database reports."""
    statements: list[tuple[str, Any]] = []

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, _many: bool) -> None:
        if "FROM projects.tasks" in statement and not statement.startswith("EXPLAIN"):
            statements.append((statement, parameters))

    event.listen(db.engine.sync_engine, "before_cursor_execute", record)
    try:
        await lists.page(ORG, limit=PAGE, cursor=cursor, **case.params)
    finally:
        event.remove(db.engine.sync_engine, "before_cursor_execute", record)
    lines: list[str] = []
    timings: list[float] = []
    async with db.engine.connect() as conn:
        for attempt in range(7):
            total = 0.0
            for statement, parameters in statements:
                result = await conn.exec_driver_sql("EXPLAIN (ANALYZE, COSTS OFF) " + statement, parameters)
                plan = [row[0] for row in result]
                total += sum(float(m) for m in re.findall(r"Execution Time: ([0-9.]+) ms", "\n".join(plan)))
                if attempt == 0:
                    lines += [*plan, "--"]
            timings.append(total)
    indexes = sorted(set(re.findall(r"\b(?:ix|pk|uq)_tasks\w*", "\n".join(lines))))
    return lines[:-1], indexes, round(statistics.median(timings), 3)


async def main(sizes: list[int], runs: int, show_plans: bool) -> None:
    name = f"splitstone_bench_projects_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(PG_DSN)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    dsn = PG_DSN.rsplit("/", 1)[0] + f"/{name}"
    db = ModuleDatabase.connect("projects", dsn.replace("postgresql://", "postgresql+asyncpg://", 1))
    results: list[Measure] = []
    try:
        await migrations.upgrade_module(db, projects_module.migrations)
        lists = TaskLists(UnitOfWorkFactory(db, _NoSink()), SystemClock())
        seeded = 0
        for size in sorted(sizes):
            took = await _seed(dsn, seeded + 1, size)
            seeded = size
            print(f"\n== {size:,} tasks (seeded in {took:.1f} s)")
            for case in CASES:
                deep = await _deep_cursor(dsn, lists, case)
                for label, cursor in (("first", None), ("deep", deep)):
                    if label == "deep" and deep is None:
                        continue
                    p50, p99 = await _timed(lists, case, cursor, runs)
                    plan, indexes, db_ms = await _plan(db, lists, case, cursor)
                    results.append(Measure(size, case.name, label, p50, p99, db_ms, plan, indexes))
                    print(
                        f"{case.name:20} {label:5} p50 {p50:7.2f} ms  p99 {p99:7.2f} ms  "
                        f"db {db_ms:7.3f} ms  {', '.join(indexes)}"
                    )
                    if show_plans or size == max(sizes):
                        print("    " + "\n    ".join(plan))
    finally:
        await db.dispose()
        admin = await asyncpg.connect(PG_DSN)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
    _report(results, sorted(sizes))


def _report(results: list[Measure], sizes: list[int]) -> None:
    smallest, largest = sizes[0], sizes[-1]
    print(f"\n{largest:,} / {smallest:,} tasks: ratio of p50 (end to end) and of the database's time")
    print("(target: p50 at most 1.5x)")
    ratios = []
    for case in CASES:
        for label in ("first", "deep"):
            found = {m.size: m for m in results if m.case == case.name and m.page == label}
            if smallest in found and largest in found and found[smallest].p50_ms > 0:
                small, large = found[smallest], found[largest]
                ratio = large.p50_ms / small.p50_ms
                db_ratio = large.db_ms / small.db_ms if small.db_ms else None
                ratios.append(
                    {"case": case.name, "page": label, "p50_ratio": round(ratio, 2), "db_ratio": db_ratio}
                )
                verdict = "ok" if ratio <= 1.5 else "OVER"
                db_text = f"{db_ratio:6.2f}x" if db_ratio is not None else "     -"
                print(f"{case.name:20} {label:5} p50 {ratio:6.2f}x {verdict:4}  db {db_text}")
    os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
    with open(RESULTS, "w") as out:
        json.dump(
            {
                "commit": commit(),
                "machine": platform.platform(),
                "cpus": os.cpu_count(),
                "at": datetime.now(UTC).isoformat(),
                "page_size": PAGE,
                "results": [vars(m) for m in results],
                "ratios": ratios,
            },
            out,
            indent=2,
        )
        out.write("\n")
    print(f"written: {RESULTS}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--sizes", default="10000,100000,1000000", help="comma-separated task counts, seeded in turn"
    )
    parser.add_argument("--runs", type=int, default=100, help="timed calls per page")
    parser.add_argument(
        "--plans", action="store_true", help="print the plans at every size, not only the largest"
    )
    args = parser.parse_args()
    asyncio.run(main([int(s) for s in args.sizes.split(",")], args.runs, args.plans))
