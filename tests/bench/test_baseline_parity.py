"""The benchmark's floor answers as splitstone does: the same status, body and ETag for every benchmarked
request (deep pages, searches, other tenants, missing tokens included), and the same rows for a create.

PostgreSQL only: the baseline is asyncpg. Ours runs in-process from the composition root (the `client`
fixture), the baseline in-process too, on the same database and with the same signing key.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg
import httpx
import pytest
from bench.baseline.app import create_app
from bench.baseline.settings import SIGNING_KEY_FILE, BaselineSettings
from uuid6 import uuid7

from splitstone.kernel.container import Container
from splitstone.kernel.events import EventRecorder
from splitstone.kernel.settings import ModuleSettings, Settings
from splitstone.modules.billing.settings import BillingSettings
from tests.modules.auth.conftest import SignedIn, Users
from tests.modules.auth.org_helpers import create_org

pytestmark = pytest.mark.backends("postgres")

TASKS = 130  # three pages of 50, so the last page is a deep one
HEADERS = {"X-Request-ID": "parity-check"}  # problems carry the request id: the same on both sides
SCHEMAS = ("auth", "billing", "notifications", "projects")


@dataclass
class World:
    ours: httpx.AsyncClient
    baseline: httpx.AsyncClient
    dsn: str
    owner: SignedIn
    org_id: UUID
    project_id: UUID
    task_ids: list[UUID]
    other: SignedIn
    other_org_id: UUID

    @property
    def tasks_path(self) -> str:
        return f"/api/v1/orgs/{self.org_id}/projects/{self.project_id}/tasks"


@pytest.fixture
def module_settings() -> dict[str, ModuleSettings]:
    return {"billing": BillingSettings(sandbox_webhook_url=None)}


@pytest.fixture
async def world(
    client: httpx.AsyncClient,
    events: EventRecorder,
    container: Container,
    settings: Settings,
    database_url: str,
) -> AsyncIterator[World]:
    """Two tenants made through our API (billing opens both on the free plan), and 130 tasks in WEB."""
    users = Users(client, events)
    owner, other = await users.signed_in(), await users.signed_in()
    org_id = UUID(await create_org(client, owner, "Acme"))
    other_org_id = UUID(await create_org(client, other, "Rival"))
    await container.worker().settle()
    response = await client.post(
        f"/api/v1/orgs/{org_id}/projects", json={"key": "WEB", "name": "Website"}, headers=owner.headers
    )
    assert response.status_code == 201, response.text
    project_id = UUID(response.json()["id"])
    dsn = database_url.replace("postgresql+asyncpg://", "postgresql://", 1)
    task_ids = await _seed_tasks(dsn, org_id, project_id, owner.user_id)

    key = (settings.data_dir / "secrets" / SIGNING_KEY_FILE).read_text()
    app = create_app(BaselineSettings(dsn=dsn, signing_key_pem=key))
    await app.state.baseline.open()  # ASGITransport runs no lifespan
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as baseline:
            yield World(client, baseline, dsn, owner, org_id, project_id, task_ids, other, other_org_id)
    finally:
        await app.state.baseline.close()


async def _seed_tasks(dsn: str, org_id: UUID, project_id: UUID, owner_id: UUID) -> list[UUID]:
    """Varied tasks, as the app stores them: every third mentions "login", some have unicode and quotes."""
    now = datetime.now(UTC).replace(microsecond=123456)
    rows = []
    for n in range(1, TASKS + 1):
        labels = [["bug"], [], ["feature", "ux"]][n % 3]
        rows.append(
            (
                uuid7(),
                n,
                f"{['Fix', 'Test', 'Ship'][n % 3]} the {'login' if n % 3 == 0 else 'billing'} page {n}",
                ["", 'Café "naïve" <b>résumé</b> ✓', "Steps:\n\n1. open\n2. click"][n % 3],
                ["todo", "in_progress", "done", "canceled"][n % 4],
                n % 5,
                owner_id if n % 2 else None,
                (now + timedelta(days=n)).date() if n % 4 else None,
                json.dumps(labels),
                now - timedelta(minutes=TASKS - n),
            )
        )
    conn = await asyncpg.connect(dsn)
    try:
        await conn.executemany(
            """INSERT INTO projects.tasks (id, org_id, project_id, number, title, description, status,
                   priority, assignee_id, due_date, labels, created_by, created_at, updated_at, version)
               VALUES ($1, $11, $12, $2, $3, $4, $5, $6, $7, $8, $9, $13, $10, $10, 1)""",
            [(*row, org_id, project_id, owner_id) for row in rows],
        )
        await conn.execute("UPDATE projects.projects SET last_number = $1 WHERE id = $2", TASKS, project_id)
    finally:
        await conn.close()
    return [row[0] for row in rows]


async def _both(world: World, method: str, path: str, who: SignedIn | None, **kwargs: Any) -> httpx.Response:
    """Ask ours and the baseline; they answer alike (status, body bytes, ETag). Ours's answer."""
    headers = {**HEADERS, **(who.headers if who else {})}
    ours = await world.ours.request(method, path, headers=headers, **kwargs)
    theirs = await world.baseline.request(method, path, headers=headers, **kwargs)
    assert (theirs.status_code, theirs.content) == (ours.status_code, ours.content), f"{method} {path}"
    assert theirs.headers.get("etag") == ours.headers.get("etag")
    assert theirs.headers.get("content-type") == ours.headers.get("content-type")
    return ours


async def test_reads_answer_alike(world: World) -> None:
    owner, org = world.owner, f"/api/v1/orgs/{world.org_id}"
    assert (await _both(world, "GET", "/healthz", None)).json() == {"status": "ok"}
    assert (await _both(world, "GET", "/api/v1/auth/me", owner)).json()["id"] == str(owner.user_id)
    await _both(world, "GET", "/api/v1/auth/me", None)
    bad = await world.ours.get("/api/v1/auth/me", headers={**HEADERS, "Authorization": "Bearer not.a.jwt"})
    assert bad.status_code == 401
    assert (await world.baseline.get("/api/v1/auth/me", headers=bad.request.headers)).content == bad.content

    for ref in (*world.task_ids[:3], "WEB-7", "web-12"):
        assert (await _both(world, "GET", f"{org}/tasks/{ref}", owner)).status_code == 200
    for missing in (uuid7(), "WEB-999", "no such task"):
        assert (await _both(world, "GET", f"{org}/tasks/{missing}", owner)).status_code == 404
    other_tenant = f"/api/v1/orgs/{world.other_org_id}"
    assert (await _both(world, "GET", f"{other_tenant}/tasks/{world.task_ids[0]}", owner)).status_code == 404
    assert (await _both(world, "GET", f"{org}/tasks/{world.task_ids[0]}", world.other)).status_code == 404
    assert (await _both(world, "GET", f"{org}/tasks/{world.task_ids[0]}", None)).status_code == 401

    for params in ({"limit": 50}, {"limit": 20, "q": "login"}, {"limit": 7, "order": "asc"}):
        pages, cursor = 0, None
        while True:
            page_params = {**params, "cursor": cursor} if cursor else params
            page = await _both(world, "GET", world.tasks_path, owner, params=page_params)
            assert page.status_code == 200
            pages, cursor = pages + 1, page.json()["next_cursor"]
            if cursor is None:
                break
        assert pages >= 2  # the last page is the deep one

    first = (await _both(world, "GET", world.tasks_path, owner, params={"limit": 50})).json()
    assert first["items"][0]["id"] == str(world.task_ids[-1])  # newest first
    problems = [
        {"q": "login", "cursor": first["next_cursor"]},  # another list's cursor
        {"cursor": "not-a-cursor"},
        {"q": "!!!"},  # no word to look for
    ]
    for params in problems:
        assert (await _both(world, "GET", world.tasks_path, owner, params=params)).status_code in (400, 422)
    for path in (
        f"{org}/projects/web/tasks",
        f"{org}/projects/NOPE/tasks",
        f"{other_tenant}/projects/WEB/tasks",
    ):
        await _both(world, "GET", path, owner, params={"limit": 50, "q": "Login page"})
    assert (await _both(world, "GET", world.tasks_path, None)).status_code == 401


async def test_creates_write_the_same_rows(world: World) -> None:
    bodies = [
        {"title": "Bench task", "priority": "high", "labels": ["bench"]},
        {
            "title": "  Ship the résumé page  ",
            "description": "Soon.",
            "status": "in_progress",
            "assignee_id": str(world.owner.user_id),
            "due_date": "2031-01-02",
            "labels": ["Ops", "bench", "ops "],
        },
    ]
    for body in bodies:
        before = await _row_counts(world.dsn)
        ours = await world.ours.post(world.tasks_path, json=body, headers=world.owner.headers)
        middle = await _row_counts(world.dsn)
        theirs = await world.baseline.post(world.tasks_path, json=body, headers=world.owner.headers)
        after = await _row_counts(world.dsn)
        assert (ours.status_code, theirs.status_code) == (201, 201), (ours.text, theirs.text)
        written = _grown(before, middle)
        assert written == _grown(middle, after)
        expected = {"projects.tasks", "projects.task_labels", "projects.watchers", "projects.activity"}
        assert expected | {"projects.outbox", "projects.jobs"} <= written.keys()
        assert _masked(theirs.json()) == _masked(ours.json())
        assert theirs.headers["etag"] == ours.headers["etag"] == '"1"'
        assert theirs.headers["location"].endswith(f"/tasks/{theirs.json()['id']}")
        assert await _messages(world.dsn, UUID(theirs.json()["id"])) == await _messages(
            world.dsn, UUID(ours.json()["id"])
        )


async def test_an_exhausted_plan_refuses_alike(world: World) -> None:
    """The free plan's 500 tasks a period are used up: both answer the same 402 and write nothing."""
    conn = await asyncpg.connect(world.dsn)
    try:
        start = await conn.fetchval(
            "SELECT current_period_start FROM billing.subscriptions WHERE org_id = $1", world.org_id
        )
        await conn.executemany(
            """INSERT INTO billing.usage_events (id, org_id, metric, quantity, idempotency_key, occurred_at,
                   recorded_at) VALUES ($1, $2, 'tasks', 1, $3, $4, $4)""",
            [(uuid7(), world.org_id, f"task:{n}", start + timedelta(seconds=1)) for n in range(500)],
        )
    finally:
        await conn.close()
    before = await _row_counts(world.dsn)
    refused = await _both(world, "POST", world.tasks_path, world.owner, json={"title": "One too many"})
    assert refused.status_code == 402
    assert refused.json()["upgrade_plans"] == ["pro", "business"]
    assert await _row_counts(world.dsn) == before


async def _row_counts(dsn: str) -> dict[str, int]:
    conn = await asyncpg.connect(dsn)
    try:
        tables = await conn.fetch(
            "SELECT table_schema || '.' || table_name AS name FROM information_schema.tables "
            "WHERE table_schema = ANY($1::text[]) AND table_type = 'BASE TABLE' ORDER BY 1",
            list(SCHEMAS),
        )
        # Table names from the catalog, not from input.
        return {t["name"]: await conn.fetchval(f"SELECT count(*) FROM {t['name']}") for t in tables}  # noqa: S608
    finally:
        await conn.close()


def _grown(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {name: after[name] - before[name] for name in after if after[name] != before[name]}


def _masked(task: dict[str, Any]) -> dict[str, Any]:
    """A created task without what differs between two creates: id, number, key and times."""
    return {k: v for k, v in task.items() if k not in {"id", "number", "key", "created_at", "updated_at"}}


async def _messages(dsn: str, task_id: UUID) -> list[tuple[str, list[str], bool]]:
    """The task's outbox events and jobs: (name, payload members, traced), ids and times aside."""
    conn = await asyncpg.connect(dsn)
    try:
        events = await conn.fetch(
            "SELECT event_name AS name, payload, traceparent FROM projects.outbox "
            "WHERE aggregate_id = $1 ORDER BY position",
            task_id,
        )
        jobs = await conn.fetch(
            "SELECT kind AS name, payload, traceparent FROM projects.jobs WHERE idempotency_key = $1",
            str(task_id),
        )
        activity = await conn.fetch(
            "SELECT kind AS name, data AS payload, 'x' AS traceparent "
            "FROM projects.activity WHERE task_id = $1",
            task_id,
        )
    finally:
        await conn.close()
    return [
        (row["name"], list(json.loads(row["payload"])), row["traceparent"] is not None)
        for row in [*events, *jobs, *activity]
    ]
