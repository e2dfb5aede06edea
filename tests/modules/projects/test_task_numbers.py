"""Task numbers under concurrency: simultaneous creations in one project get distinct, consecutive
numbers (PostgreSQL, where transactions really run side by side)."""

from __future__ import annotations

import asyncio
from uuid import UUID

import httpx
import pytest
from sqlalchemy import select

from splitstone.kernel.container import Container
from splitstone.kernel.messaging.worker import Worker
from splitstone.modules.auth.api import Principal
from splitstone.modules.billing.service import BillingService
from splitstone.modules.projects.service import ProjectsService
from splitstone.modules.projects.storage import projects as projects_table
from splitstone.modules.projects.storage import tasks
from tests.modules.projects.conftest import NewOrg, make_project

pytestmark = pytest.mark.backends("postgres")

N = 50


async def test_concurrent_creations_get_distinct_consecutive_numbers(
    client: httpx.AsyncClient,
    container: Container,
    new_org: NewOrg,
    projects: ProjectsService,
    worker: Worker,
) -> None:
    org = await new_org()
    project = await make_project(client, org, "WEB", "Website")
    principal = Principal(kind="user", user_id=org.owner.user_id, session_id=org.owner.session_id)

    created = await asyncio.gather(
        *(projects.tasks.create(principal, org.id, "WEB", title=f"Task {i}") for i in range(N))
    )

    assert sorted(task.number for task in created) == list(range(1, N + 1))
    assert len({task.key for task in created}) == N
    async with container.units_of_work["projects"](read_only=True) as uow:
        stored = (await uow.session.execute(select(tasks.c.number).where(tasks.c.org_id == org.id))).scalars()
        assert sorted(stored) == list(range(1, N + 1))
        last = await uow.session.scalar(
            select(projects_table.c.last_number).where(projects_table.c.id == UUID(project["id"]))
        )
        assert last == N
    # And billing hears of each exactly once.
    await worker.settle()
    billing = container.implementations["billing"]
    assert isinstance(billing, BillingService)
    summary = await billing.usage.summary(org.id)
    assert next(m.value for m in summary.metrics if m.metric == "tasks") == N


async def test_concurrent_creations_over_http_too(
    client: httpx.AsyncClient, container: Container, new_org: NewOrg
) -> None:
    org = await new_org()
    await make_project(client, org, "API", "API")
    responses = await asyncio.gather(
        *(
            client.post(
                f"{org.base}/projects/API/tasks", json={"title": f"Task {i}"}, headers=org.owner.headers
            )
            for i in range(N)
        )
    )
    assert [r.status_code for r in responses] == [201] * N
    assert sorted(r.json()["number"] for r in responses) == list(range(1, N + 1))
