"""A task's activity through the API: what happened, by whom, oldest first, one page at a time."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import pytest
from uuid6 import uuid7

from splitstone.kernel.clock import ManualClock
from splitstone.kernel.pagination import InvalidCursor
from tests.modules.auth.org_helpers import assert_problem, create_api_key
from tests.modules.projects.conftest import NewOrg, Org, make_project


def activity_url(org: Org, ref: str) -> str:
    return f"{org.base}/tasks/{ref}/activity"


async def create_task(client: httpx.AsyncClient, org: Org, **body: Any) -> dict[str, Any]:
    response = await client.post(
        f"{org.base}/projects/WEB/tasks",
        json={"title": "Fix the checkout", **body},
        headers=org.owner.headers,
    )
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def patch_task(client: httpx.AsyncClient, org: Org, key: str, **body: Any) -> None:
    response = await client.patch(f"{org.base}/tasks/{key}", json=body, headers=org.owner.headers)
    assert response.status_code == 200, response.text


@pytest.fixture
async def org(client: httpx.AsyncClient, new_org: NewOrg) -> Org:
    made = await new_org()
    await make_project(client, made)
    return made


async def test_the_activity_lists_what_happened_oldest_first(
    client: httpx.AsyncClient, clock: ManualClock, org: Org
) -> None:
    member = await org.member()
    task = await create_task(client, org)
    key = task["key"]
    clock.advance(timedelta(minutes=1))
    await patch_task(client, org, key, assignee_id=str(member.user_id))
    clock.advance(timedelta(minutes=1))
    await patch_task(client, org, key, status="in_progress")
    clock.advance(timedelta(minutes=1))
    posted = await client.post(
        f"{org.base}/tasks/{key}/comments", json={"body": "On it."}, headers=member.headers
    )
    assert posted.status_code == 201, posted.text

    response = await client.get(activity_url(org, key), headers=member.headers)

    assert response.status_code == 200, response.text
    entries = response.json()["items"]
    assert [e["kind"] for e in entries] == ["created", "assigned", "status_changed", "commented"]
    owner, them = str(org.owner.user_id), str(member.user_id)
    assert [e["actor_id"] for e in entries] == [owner, owner, owner, them]
    assert entries[1]["data"] == {"from": None, "to": them}
    assert entries[2]["data"] == {"from": "todo", "to": "in_progress"}
    assert entries[3]["data"] == {"comment_id": posted.json()["id"]}
    assert [e["created_at"] for e in entries] == sorted(e["created_at"] for e in entries)
    assert set(entries[0]) == {"id", "kind", "actor_id", "data", "created_at"}
    assert response.json()["next_cursor"] is None
    by_id = await client.get(activity_url(org, task["id"]), headers=member.headers)
    assert by_id.json()["items"] == entries


async def test_the_activity_comes_in_pages(client: httpx.AsyncClient, org: Org) -> None:
    task = await create_task(client, org)
    key = task["key"]
    for n in range(4):
        await patch_task(client, org, key, title=f"Title {n}")

    seen: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = await client.get(activity_url(org, key), params=params, headers=org.owner.headers)
        assert page.status_code == 200, page.text
        seen.extend(page.json()["items"])
        cursor = page.json()["next_cursor"]
        if cursor is None:
            break

    assert [e["kind"] for e in seen] == ["created", "updated", "updated", "updated", "updated"]
    assert [e["data"]["title"]["to"] for e in seen[1:]] == [f"Title {n}" for n in range(4)]
    assert len({e["id"] for e in seen}) == 5


async def test_another_organization_s_task_has_no_activity_to_show(
    client: httpx.AsyncClient, org: Org, new_org: NewOrg
) -> None:
    task = await create_task(client, org)
    other = await new_org("Other")

    assert_problem(
        await client.get(activity_url(other, task["id"]), headers=other.owner.headers), 404, "task-not-found"
    )
    assert_problem(
        await client.get(activity_url(other, task["key"]), headers=other.owner.headers), 404, "task-not-found"
    )
    assert_problem(
        await client.get(activity_url(org, task["key"]), headers=other.owner.headers),
        404,
        "organization-not-found",
    )
    for ref in ("WEB-99", str(uuid7()), "what"):
        assert_problem(
            await client.get(activity_url(org, ref), headers=org.owner.headers), 404, "task-not-found"
        )


async def test_reading_the_activity_needs_tasks_read(client: httpx.AsyncClient, org: Org) -> None:
    task = await create_task(client, org)
    key = await create_api_key(client, org.owner, str(org.id), scopes=["projects:read"])
    headers = {"Authorization": f"Bearer {key['secret']}"}

    assert_problem(
        await client.get(activity_url(org, task["key"]), headers=headers), 403, "missing-permission"
    )
    bad = await client.get(activity_url(org, task["key"]), params={"cursor": "x"}, headers=org.owner.headers)
    assert_problem(bad, InvalidCursor.status, "invalid-cursor")
    too_many = await client.get(
        activity_url(org, task["key"]), params={"limit": 101}, headers=org.owner.headers
    )
    assert too_many.status_code == 422
