"""The API benchmark's data: one busy organization on PostgreSQL, prepared in about a minute.

`prepare` drops and recreates a database, migrates every module, seeds the demo organization through
the API (`splitstone.demo.seed_demo`: owner, members, projects), and then adds in bulk SQL what an API
would take hours to make: a few thousand verified members sharing the demo password (one real argon2
hash, copied), and 100k tasks in the project WEB (`generate_series`, UUIDv7 ids spread over the last
year; statuses, priorities, assignees, due dates, labels and descriptions vary; the word `login` is in
1 title of 8), each with its label rows, watchers and "created" activity as the app writes them. Then,
through the API again: the organization moves to a business-plan trial (no task limit), and the deep
cursor is taken from a real first page.

    .venv/bin/python -m bench.dataset [--name splitstone_bench] [--users 3000] [--tasks 100000]

The result is saved as JSON (default bench/results/dataset-<name>.json, with the server's data dir
next to it: the JWT signing key lives there) and read back with `Dataset.load`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import time
import uuid
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from bench.seeding import cursor_like, settle, uuid7_sql
from splitstone.bootstrap import build_container
from splitstone.demo import DEMO_EMAIL, DEMO_PASSWORD, MEMBERS, seed_demo
from splitstone.kernel import migrations
from splitstone.kernel.app import create_app
from splitstone.kernel.logging import configure_logging
from splitstone.kernel.ratelimit import RateLimiter
from splitstone.kernel.settings import Settings

RESULTS = Path(__file__).parent / "results"
ADMIN_DSN = os.environ.get("SPLITSTONE_BENCH_PG_DSN", "postgresql://root@127.0.0.1/test")
PROJECT_KEY = "WEB"
SEARCH_WORD = "login"
SAMPLE = 1000  # task ids kept for the get-one-task requests
PEOPLE = 50  # creators and assignees: the demo's five people and the first bulk users
TASK_SPACING = timedelta(minutes=5)  # 100k tasks span about a year, the newest made just now
CHUNK = 50_000

# Titles: "<verb> the <area> <part>". The search word is one of the eight areas, picked by n % 8, and
# appears nowhere else, so it is in exactly 1 title of 8, spread evenly over the list.
VERBS = ["Fix", "Improve", "Redesign", "Document", "Test", "Speed up", "Review", "Clean up", "Add metrics to"]
AREAS = ["dashboard", "billing", SEARCH_WORD, "settings", "export", "onboarding", "invoice", "profile"]
PARTS = ["page", "form", "modal", "table", "email", "API call", "empty state"]
DESCRIPTIONS = [
    "",
    "Reported by a customer last week; see the support thread.",
    "Part of this quarter's goals.",
    "**Acceptance:** works on mobile and desktop, with tests.",
    "Follow-up from the last retrospective.",
    "Small, but it keeps coming up in feedback.",
    "Steps to reproduce:\n\n1. Open the page on a slow connection.\n2. Click twice before it loads.\n"
    "3. See the spinner never stop.\n\nExpected: one request, then the result. Seen on Firefox and Safari.",
    "Context: the current version was written before we had teams. It reads every row on each visit "
    "and renders them all at once, which is slow for the larger accounts. Proposal: paginate, cache the "
    "counts, and measure before and after.",
]
LABEL_SETS = [
    [],
    ["bug"],
    ["feature"],
    ["bug", "frontend"],
    [],
    ["ux"],
    ["feature", "frontend", "ux"],
    ["performance"],
    ["accessibility", "frontend"],
    ["bug", "performance"],
]

SEED_USERS = f"""
INSERT INTO auth.users (id, email, display_name, password_hash, email_verified_at, password_changed_at,
                        created_at, updated_at)
SELECT {uuid7_sql("u.ts", "u.n")}, 'user' || lpad(u.n::text, 5, '0') || '@bench.example.com',
       'Bench User ' || u.n, $1, u.ts, u.ts, u.ts, u.ts
FROM (SELECT n, $2::timestamptz + n * interval '1 second' AS ts FROM generate_series(1, $3::int) AS n) AS u
"""

SEED_MEMBERSHIPS = """
INSERT INTO auth.memberships (org_id, user_id, role, created_at)
SELECT $1, id, 'member', created_at FROM auth.users WHERE email LIKE '%@bench.example.com'
"""

# Task n (1..N, numbered n): created (n - N) * spacing from now; status ~40% todo, 25% in progress,
# 28% done, 7% canceled (each move a version); priority ~20% none ... 7% urgent; 80% assigned; 60%
# due within a month or so of now; labels from LABEL_SETS (sorted JSON, as the app stores them).
SEED_TASKS = f"""
INSERT INTO projects.tasks (id, org_id, project_id, number, title, description, status, priority,
                            assignee_id, due_date, labels, created_by, created_at, updated_at, version)
SELECT {uuid7_sql("t.ts", "t.n")}, $1, $2, t.n,
       ($5::text[])[1 + t.n % cardinality($5::text[])] || ' the ' || ($6::text[])[1 + t.n % 8] || ' '
           || ($7::text[])[1 + (t.n / 8) % cardinality($7::text[])],
       ($8::text[])[1 + (t.n / 3) % cardinality($8::text[])],
       t.status,
       CASE WHEN t.p < 20 THEN 0 WHEN t.p < 45 THEN 1 WHEN t.p < 75 THEN 2 WHEN t.p < 93 THEN 3 ELSE 4 END,
       CASE WHEN t.n % 5 = 0 THEN NULL ELSE ($9::uuid[])[1 + (t.n * 7) % cardinality($9::uuid[])] END,
       CASE WHEN t.n % 5 < 2 THEN NULL ELSE $10::date + ((t.n * 13) % 76 - 30) END,
       ($11::text[])[1 + (t.n * 11) % cardinality($11::text[])],
       ($9::uuid[])[1 + (t.n * 3) % cardinality($9::uuid[])],
       t.ts,
       LEAST(t.ts + ((t.n * 7919) % 604800) * interval '1 second', $12::timestamptz),
       CASE t.status WHEN 'todo' THEN 1 WHEN 'done' THEN 3 ELSE 2 END
FROM (SELECT n, $12::timestamptz - ($4::int - n) * $13::interval AS ts, (n * 53) % 100 AS p,
             CASE WHEN (n * 37) % 100 < 40 THEN 'todo' WHEN (n * 37) % 100 < 65 THEN 'in_progress'
                  WHEN (n * 37) % 100 < 93 THEN 'done' ELSE 'canceled' END AS status
      FROM generate_series($3::int, $14::int) AS n) AS t
"""

SEED_TASK_ROWS = [
    """INSERT INTO projects.task_labels (task_id, org_id, label)
       SELECT id, org_id, jsonb_array_elements_text(labels::jsonb)
       FROM projects.tasks WHERE project_id = $1""",
    """INSERT INTO projects.watchers (task_id, user_id, org_id, created_at)
       SELECT id, created_by, org_id, created_at FROM projects.tasks WHERE project_id = $1
       UNION SELECT id, assignee_id, org_id, created_at FROM projects.tasks
       WHERE project_id = $1 AND assignee_id IS NOT NULL""",
    f"""INSERT INTO projects.activity (id, org_id, task_id, actor_id, kind, data, created_at)
       SELECT {uuid7_sql("created_at", "-number")}, org_id, id, created_by, 'created',
              jsonb_build_object('key', $2 || '-' || number, 'title', title, 'status', 'todo')::text,
              created_at
       FROM projects.tasks WHERE project_id = $1""",
    """UPDATE projects.projects
       SET last_number = (SELECT max(number) FROM projects.tasks WHERE project_id = $1) WHERE id = $1""",
]

SETTLED = [
    "auth.users",
    "auth.memberships",
    "projects.tasks",
    "projects.task_labels",
    "projects.watchers",
    "projects.activity",
    "projects.projects",
]


class DatasetError(Exception):
    """A step of the preparation did not give what the benchmark needs; the message says which."""


@dataclass(frozen=True)
class Dataset:
    """What a benchmark needs to know of a prepared database (`prepare`), and how to serve it."""

    database_url: str  # postgresql+asyncpg://root@127.0.0.1/<name>  (SPLITSTONE_DATABASE_URL)
    dsn: str  # postgresql://root@127.0.0.1/<name>  (asyncpg)
    data_dir: str  # SPLITSTONE_DATA_DIR: holds the generated secrets (the JWT signing key)
    org_id: str
    project_id: str
    project_key: str
    password: str  # every seeded user's password
    owner_email: str
    user_emails: list[str]  # verified members of the org, all with `password`
    task_ids: list[str]  # a sample of the busy project's task ids
    deep_cursor: str  # the `cursor` query value of the newest-first list at 90% of it
    search_query: str  # a word found in about 1 task of 8
    tasks: int = 0  # how many tasks the busy project holds

    def server_env(self) -> dict[str, str]:
        """The environment (to add to os.environ) of `splitstone serve` and of the baseline."""
        return {
            "SPLITSTONE_DATABASE_URL": self.database_url,
            "SPLITSTONE_DATA_DIR": self.data_dir,
            "SPLITSTONE_LOG_LEVEL": "warning",
        }

    @property
    def name(self) -> str:
        return self.dsn.rsplit("/", 1)[1]

    def has_data_dir(self) -> bool:
        return Path(self.data_dir).is_dir()

    def save(self, path: str) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(asdict(self), indent=1) + "\n")

    @classmethod
    def load(cls, path: str) -> Dataset:
        raw = json.loads(Path(path).read_text())
        return cls(**{f.name: raw[f.name] for f in fields(cls) if f.name in raw})


def default_path(name: str) -> str:
    return str(RESULTS / f"dataset-{name}.json")


async def prepare(
    *,
    name: str = "splitstone_bench",
    users: int = 3000,
    tasks: int = 100_000,
    admin_dsn: str = ADMIN_DSN,
    progress: bool = True,
) -> Dataset:
    """Drop and recreate database `name`, migrate, seed `users` members and `tasks` tasks, and check
    through the API that the owner, a bulk user, the deep cursor and the search all work."""
    say = _reporter(progress)
    configure_logging(level="warning", json=False)
    if users < 1 + len(MEMBERS) + 1 or tasks < 100:
        raise DatasetError(f"need more than {1 + len(MEMBERS)} users and at least 100 tasks")
    dsn = admin_dsn.rsplit("/", 1)[0] + f"/{name}"
    database_url = dsn.replace("postgresql://", "postgresql+asyncpg://", 1)
    data_dir = RESULTS / f"dataset-{name}"
    shutil.rmtree(data_dir, ignore_errors=True)
    data_dir.mkdir(parents=True)

    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    settings = Settings(database_url=database_url, data_dir=data_dir, log_level="warning")
    await _migrate(settings)
    say(f"database {name} created and migrated")

    seeded = await seed_demo(settings, tasks=0, password=DEMO_PASSWORD)
    org_id = seeded.org_id
    say("demo organization seeded through the API")

    conn = await asyncpg.connect(dsn)
    try:
        project_id = await conn.fetchval(
            "SELECT id FROM projects.projects WHERE org_id = $1 AND key = $2", org_id, PROJECT_KEY
        )
        password_hash = await conn.fetchval(
            "SELECT password_hash FROM auth.users WHERE email = $1", DEMO_EMAIL
        )
        now = datetime.now(UTC)
        bulk_users = users - 1 - len(MEMBERS)
        await conn.execute(SEED_USERS, password_hash, now - timedelta(seconds=bulk_users + 60), bulk_users)
        await conn.execute(SEED_MEMBERSHIPS, org_id)
        say(f"{bulk_users:,} members added")

        demo_people = [DEMO_EMAIL, *(p.email for p in MEMBERS)]
        rows = await conn.fetch(
            "SELECT id, email FROM auth.users ORDER BY email LIKE '%@bench.example.com', email LIMIT $1",
            PEOPLE,
        )
        people = [r["id"] for r in rows]
        for low in range(1, tasks + 1, CHUNK):
            await conn.execute(
                SEED_TASKS,
                org_id,
                project_id,
                low,
                tasks,
                VERBS,
                AREAS,
                PARTS,
                DESCRIPTIONS,
                people,
                now.date(),
                [json.dumps(labels) for labels in LABEL_SETS],
                now,
                TASK_SPACING,
                min(tasks, low + CHUNK - 1),
            )
            say(f"{min(tasks, low + CHUNK - 1):,} tasks")
        for statement in SEED_TASK_ROWS:
            await conn.execute(statement, project_id, *([PROJECT_KEY] if "$2" in statement else []))
        await settle(conn, SETTLED)
        say("labels, watchers, activity; vacuumed")

        user_emails = demo_people + [
            r["email"]
            for r in await conn.fetch(
                "SELECT email FROM auth.users WHERE email LIKE '%@bench.example.com' ORDER BY email"
            )
        ]
        task_ids = [
            str(r["id"])
            for r in await conn.fetch(
                "SELECT id FROM projects.tasks WHERE project_id = $1 ORDER BY md5(id::text) LIMIT $2",
                project_id,
                SAMPLE,
            )
        ]
        deep_id = await conn.fetchval(
            "SELECT id FROM projects.tasks WHERE project_id = $1 ORDER BY id DESC OFFSET $2 LIMIT 1",
            project_id,
            int(tasks * 0.9),
        )
    finally:
        await conn.close()

    deep_cursor = await _through_the_api(settings, org_id, project_id, deep_id, user_emails[-1])
    say("checked through the API (business plan, logins, deep cursor, search)")
    return Dataset(
        database_url=database_url,
        dsn=dsn,
        data_dir=str(data_dir.resolve()),
        org_id=str(org_id),
        project_id=str(project_id),
        project_key=PROJECT_KEY,
        password=DEMO_PASSWORD,
        owner_email=DEMO_EMAIL,
        user_emails=user_emails,
        task_ids=task_ids,
        deep_cursor=deep_cursor,
        search_query=SEARCH_WORD,
        tasks=tasks,
    )


async def exists(dataset: Dataset, admin_dsn: str = ADMIN_DSN) -> bool:
    """True when the dataset's database is there and still holds its organization's busy project."""
    if not dataset.has_data_dir():
        return False
    admin = await asyncpg.connect(admin_dsn)
    try:
        found = await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", dataset.name)
    finally:
        await admin.close()
    if not found:
        return False
    conn = await asyncpg.connect(dataset.dsn)
    try:
        count = await conn.fetchval(
            "SELECT count(*) FROM projects.tasks WHERE project_id = $1", uuid.UUID(dataset.project_id)
        )
    except asyncpg.PostgresError:
        return False
    finally:
        await conn.close()
    return bool(count and count >= dataset.tasks)


FORGET = [
    "DELETE FROM projects.task_labels WHERE task_id IN (SELECT id FROM new_tasks)",
    "DELETE FROM projects.watchers WHERE task_id IN (SELECT id FROM new_tasks)",
    "DELETE FROM projects.activity WHERE task_id IN (SELECT id FROM new_tasks)",
    "DELETE FROM projects.tasks WHERE id IN (SELECT id FROM new_tasks)",
    "DELETE FROM projects.outbox WHERE published_at IS NULL",
    "DELETE FROM projects.jobs WHERE status = 'pending'",
    "DELETE FROM auth.sessions",  # and their refresh tokens (cascade): the logins of earlier runs
]


async def forget_writes(dataset: Dataset) -> int:
    """Undo what benchmark runs wrote (their tasks with their rows, events and jobs; their logins), so
    that every run measures the same data; returns how many tasks went."""
    conn = await asyncpg.connect(dataset.dsn)
    try:
        project = uuid.UUID(dataset.project_id)
        async with conn.transaction():
            await conn.execute(
                "CREATE TEMP TABLE new_tasks ON COMMIT DROP AS "
                "SELECT id FROM projects.tasks WHERE project_id = $1 AND number > $2",
                project,
                dataset.tasks,
            )
            gone = int(await conn.fetchval("SELECT count(*) FROM new_tasks"))
            for statement in FORGET:
                await conn.execute(statement)
            await conn.execute(
                "UPDATE projects.projects SET last_number = $2 WHERE id = $1", project, dataset.tasks
            )
        if gone:
            await settle(
                conn, ["projects.tasks", "projects.task_labels", "projects.watchers", "projects.activity"]
            )
        return gone
    finally:
        await conn.close()


async def _migrate(settings: Settings) -> None:
    container = build_container(settings)
    try:
        for module in container.modules:
            await migrations.upgrade_module(container.databases[module.name], module.migrations)
    finally:
        await container.aclose()


async def _through_the_api(
    settings: Settings, org_id: uuid.UUID, project_id: uuid.UUID, deep_id: uuid.UUID, member_email: str
) -> str:
    """Move the organization to a business-plan trial, check that a bulk member logs in, and return the
    deep cursor, built from the first page's and accepted by the API."""
    container = build_container(settings, rate_limiter=RateLimiter("memory://", enabled=False))
    worker = container.worker()
    base = f"/api/v1/orgs/{org_id}"
    try:
        transport = httpx.ASGITransport(app=create_app(container))
        async with httpx.AsyncClient(transport=transport, base_url="http://bench.invalid") as client:

            async def call(method: str, path: str, token: str | None = None, **kwargs: Any) -> Any:
                headers = {"Authorization": f"Bearer {token}"} if token else {}
                response = await client.request(method, path, headers=headers, **kwargs)
                if not response.is_success:
                    raise DatasetError(f"{method} {path} answered {response.status_code}: {response.text}")
                return response.json()

            async def login(email: str) -> str:
                body = {"email": email, "password": DEMO_PASSWORD}
                return str((await call("POST", "/api/v1/auth/login", json=body))["access_token"])

            owner = await login(DEMO_EMAIL)
            plan = await call("POST", f"{base}/billing/subscription/change", owner, json={"plan": "business"})
            await worker.settle()
            member = await login(member_email)
            me = await call("GET", "/api/v1/auth/me", member)
            if me["email"] != member_email:
                raise DatasetError(f"{member_email} logged in as {me['email']}")
            tasks_path = f"{base}/projects/{project_id}/tasks"
            first = await call("GET", tasks_path, member, params={"limit": 50})
            deep_cursor = cursor_like(first["next_cursor"], None, deep_id)
            deep = await call("GET", tasks_path, member, params={"limit": 50, "cursor": deep_cursor})
            found = await call("GET", tasks_path, member, params={"limit": 50, "q": SEARCH_WORD})
            if len(deep["items"]) != 50 or len(found["items"]) != 50:
                raise DatasetError("the deep page or the search gave fewer than 50 tasks")
            if plan["effective_plan"] != "business":
                raise DatasetError(f"the organization is not on the business plan: {plan}")
            return deep_cursor
    finally:
        await worker.stop()
        await container.aclose()


def _reporter(enabled: bool) -> Any:
    began = time.perf_counter()

    def say(step: str) -> None:
        if enabled:
            print(f"  [{time.perf_counter() - began:5.1f} s] {step}", flush=True)

    return say


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--name", default="splitstone_bench", help="the database to (re)create")
    parser.add_argument("--users", type=int, default=3000, help="members of the organization, all verified")
    parser.add_argument("--tasks", type=int, default=100_000, help="tasks in the busy project")
    parser.add_argument(
        "--out", default=None, help="where to save it (default bench/results/dataset-<name>.json)"
    )
    args = parser.parse_args()
    began = time.perf_counter()
    dataset = asyncio.run(prepare(name=args.name, users=args.users, tasks=args.tasks))
    out = args.out or default_path(args.name)
    dataset.save(out)
    print(f"prepared {args.name} in {time.perf_counter() - began:.1f} s: {out}")


if __name__ == "__main__":
    main()
