"""Tasks through the API: create, read by id and by key, PATCH with If-Match, move, delete; the
workflow, assignees, tenants, archived projects, the plan's task limit and billing's usage."""

from __future__ import annotations

import itertools
import json
from typing import Any
from uuid import UUID

import httpx
import pytest
from sqlalchemy import func, select

from splitstone.kernel.container import Container
from splitstone.kernel.events import EventRecorder
from splitstone.kernel.messaging.tables import jobs
from splitstone.kernel.messaging.worker import Worker
from splitstone.modules.billing.service import BillingService
from splitstone.modules.billing.usage import UsageEvent
from splitstone.modules.projects import domain
from splitstone.modules.projects.api import (
    IllegalStatusChange,
    TaskAssigned,
    TaskCreated,
    TaskNotFound,
    TaskStatus,
    TaskStatusChanged,
)
from splitstone.modules.projects.routes_tasks import parse_if_match
from splitstone.modules.projects.service import ProjectsService
from splitstone.modules.projects.storage import activity, comments, task_labels, tasks, watchers
from splitstone.modules.projects.tasks import REPORT_USAGE
from tests.modules.auth.org_helpers import assert_problem, bearer, create_api_key
from tests.modules.projects.conftest import NewOrg, Org, make_project

T = TaskStatus

# -- helpers ----------------------------------------------------------------------------------------------


async def create_task(
    client: httpx.AsyncClient, org: Org, project: str = "WEB", **body: Any
) -> httpx.Response:
    body.setdefault("title", "Fix the login redirect")
    return await client.post(f"{org.base}/projects/{project}/tasks", json=body, headers=org.owner.headers)


async def new_task(client: httpx.AsyncClient, org: Org, project: str = "WEB", **body: Any) -> dict[str, Any]:
    response = await create_task(client, org, project, **body)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def rows(container: Container, query: Any) -> list[Any]:
    async with container.units_of_work["projects"](read_only=True) as uow:
        return list((await uow.session.execute(query)).mappings())


async def activity_of(container: Container, task_id: str) -> list[tuple[str, dict[str, Any]]]:
    found = await rows(
        container, select(activity).where(activity.c.task_id == UUID(task_id)).order_by(activity.c.id)
    )
    return [(row["kind"], json.loads(row["data"])) for row in found]


def billing(container: Container) -> BillingService:
    service = container.implementations["billing"]
    assert isinstance(service, BillingService)
    return service


async def tasks_used(container: Container, org: Org) -> int:
    summary = await billing(container).usage.summary(org.id)
    return next(m.value for m in summary.metrics if m.metric == "tasks")


@pytest.fixture
async def org(new_org: NewOrg, client: httpx.AsyncClient) -> Org:
    """An organization with the active project WEB."""
    made = await new_org()
    await make_project(client, made, "WEB", "Website")
    return made


# -- create -----------------------------------------------------------------------------------------------


async def test_create_answers_201_with_location_etag_and_the_task(
    client: httpx.AsyncClient, org: Org
) -> None:
    response = await create_task(
        client,
        org,
        "web",  # a project key in any case
        title="  Fix the login redirect ",
        description="After signing in, users land on `/`.",
        priority="high",
        due_date="2030-07-01",
        labels=["Bug", " auth", "bug"],
    )
    assert response.status_code == 201, response.text
    task = response.json()
    assert response.headers["Location"] == f"/api/v1/orgs/{org.id}/tasks/{task['id']}"
    assert response.headers["ETag"] == '"1"'
    assert task["key"] == "WEB-1"
    assert task["project_key"] == "WEB"
    assert task["number"] == 1
    assert task["org_id"] == str(org.id)
    assert task["title"] == "Fix the login redirect"
    assert task["description"] == "After signing in, users land on `/`."
    assert task["status"] == "todo"
    assert task["priority"] == "high"
    assert task["due_date"] == "2030-07-01"
    assert task["labels"] == ["auth", "bug"]
    assert task["assignee_id"] is None
    assert task["created_by"] == str(org.owner.user_id)
    assert task["version"] == 1
    second = await new_task(client, org)
    assert (second["key"], second["number"], second["priority"]) == ("WEB-2", 2, "none")


async def test_create_writes_labels_watchers_activity_events_and_the_usage_job(
    client: httpx.AsyncClient, container: Container, org: Org, events: EventRecorder
) -> None:
    member = await org.member()
    task = await new_task(client, org, assignee_id=str(member.user_id), labels=["bug", "ui"])
    task_id = UUID(task["id"])
    labels = await rows(container, select(task_labels.c.label).where(task_labels.c.task_id == task_id))
    assert sorted(r["label"] for r in labels) == ["bug", "ui"]
    watching = await rows(container, select(watchers.c.user_id).where(watchers.c.task_id == task_id))
    assert {r["user_id"] for r in watching} == {org.owner.user_id, member.user_id}
    assert [kind for kind, _ in await activity_of(container, task["id"])] == ["created"]
    created = events.last(TaskCreated)
    assert (created.task_id, created.key, created.assignee_id) == (task_id, "WEB-1", member.user_id)
    assert created.created_by == org.owner.user_id
    assigned = events.last(TaskAssigned)
    assert (assigned.task_id, assigned.assignee_id, assigned.previous_assignee_id) == (
        task_id,
        member.user_id,
        None,
    )
    scheduled = await rows(container, select(jobs).where(jobs.c.kind == REPORT_USAGE))
    assert [r["idempotency_key"] for r in scheduled] == [task["id"]]
    payload = json.loads(scheduled[0]["payload"])
    assert payload["org_id"] == str(org.id)
    assert payload["task_id"] == task["id"]


async def test_usage_is_reported_to_billing_once_per_task(
    client: httpx.AsyncClient, container: Container, org: Org, worker: Worker
) -> None:
    for _ in range(3):
        await new_task(client, org)
    assert await tasks_used(container, org) == 0  # not yet: the job runs in the worker
    await worker.settle()
    assert await tasks_used(container, org) == 3
    response = await client.get(f"{org.base}/billing/usage", headers=org.owner.headers)
    assert response.status_code == 200, response.text
    metrics = {m["metric"]: m for m in response.json()["metrics"]}
    assert metrics["tasks"]["value"] == 3
    # Reporting again (a retried job) counts nothing twice.
    await worker.settle()
    assert await tasks_used(container, org) == 3


async def use_tasks(container: Container, org: Org, count: int) -> None:
    """Record `count` task creations with billing directly. `tasks` is a `count` metric: it counts
    events, whatever their quantity, so this takes `count` events (one batch), not one of `count`."""
    events = [UsageEvent("tasks", 1, f"bulk:{i}") for i in range(count)]
    await billing(container).usage.record_many(org.id, events)


async def test_over_the_plans_monthly_task_limit_is_402(
    client: httpx.AsyncClient, container: Container, org: Org, worker: Worker
) -> None:
    await use_tasks(container, org, 499)
    await new_task(client, org)  # the free plan's 500th this month
    await worker.settle()
    body = assert_problem(await create_task(client, org), 402, "entitlement-exceeded")
    assert body["key"] == "tasks_per_month"
    assert body["limit"] == 500
    async with container.units_of_work["projects"](read_only=True) as uow:
        assert await uow.session.scalar(select(func.count()).select_from(tasks)) == 1
        assert await uow.session.scalar(select(func.count()).select_from(activity)) == 1


async def test_an_assignee_who_is_not_a_member_is_422(
    client: httpx.AsyncClient, org: Org, new_org: NewOrg
) -> None:
    outsider = await new_org("Other")
    body = assert_problem(
        await create_task(client, org, assignee_id=str(outsider.owner.user_id)), 422, "not-assignable"
    )
    assert body["assignee_id"] == str(outsider.owner.user_id)
    task = await new_task(client, org)
    response = await client.patch(
        f"{org.base}/tasks/{task['key']}",
        json={"assignee_id": str(outsider.owner.user_id)},
        headers=org.owner.headers,
    )
    assert_problem(response, 422, "not-assignable")


async def test_creating_in_an_archived_project_is_409_and_its_tasks_are_read_only(
    client: httpx.AsyncClient, org: Org
) -> None:
    task = await new_task(client, org)
    archived = await client.post(f"{org.base}/projects/WEB/archive", headers=org.owner.headers)
    assert archived.status_code == 200, archived.text
    assert_problem(await create_task(client, org), 409, "project-archived")
    url = f"{org.base}/tasks/{task['key']}"
    assert_problem(
        await client.patch(url, json={"title": "x"}, headers=org.owner.headers), 409, "project-archived"
    )
    assert_problem(await client.delete(url, headers=org.owner.headers), 409, "project-archived")
    # Still readable.
    assert (await client.get(url, headers=org.owner.headers)).status_code == 200


async def test_a_missing_project_is_404(client: httpx.AsyncClient, org: Org) -> None:
    assert_problem(await create_task(client, org, "NOPE"), 404, "project-not-found")
    assert_problem(await create_task(client, org, "not a key!"), 404, "project-not-found")


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"title": ""},
        {"title": "   "},
        {"title": "x" * 301},
        {"title": "ok", "priority": "critical"},
        {"title": "ok", "priority": 3},
        {"title": "ok", "status": "blocked"},
        {"title": "ok", "labels": ["no\nnewlines"]},
        {"title": "ok", "labels": [f"l{i}" for i in range(21)]},
        {"title": "ok", "assignee_id": "nobody"},
        {"title": "ok", "due_date": "tomorrow"},
        {"title": "ok", "surprise": True},
    ],
)
async def test_bad_input_to_create_is_422(client: httpx.AsyncClient, org: Org, body: dict[str, Any]) -> None:
    response = await client.post(f"{org.base}/projects/WEB/tasks", json=body, headers=org.owner.headers)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")


async def test_create_replays_an_idempotency_key(
    client: httpx.AsyncClient, container: Container, org: Org
) -> None:
    headers = {**org.owner.headers, "Idempotency-Key": "create-once"}
    url = f"{org.base}/projects/WEB/tasks"
    first = await client.post(url, json={"title": "Once"}, headers=headers)
    again = await client.post(url, json={"title": "Once"}, headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.headers["Location"] == first.headers["Location"]
    async with container.units_of_work["projects"](read_only=True) as uow:
        assert await uow.session.scalar(select(func.count()).select_from(tasks)) == 1
    reused = await client.post(url, json={"title": "Twice"}, headers=headers)
    assert_problem(reused, 422, "idempotency-key-reused")


# -- read -------------------------------------------------------------------------------------------------


async def test_get_by_id_and_by_key_in_any_case(client: httpx.AsyncClient, org: Org) -> None:
    task = await new_task(client, org)
    for ref in (task["id"], "WEB-1", "web-1", "Web-1"):
        response = await client.get(f"{org.base}/tasks/{ref}", headers=org.owner.headers)
        assert response.status_code == 200, response.text
        assert response.json() == task
        assert response.headers["ETag"] == '"1"'


@pytest.mark.parametrize(
    "ref", ["WEB-2", "WEB-0", "API-1", "WEB", "not-a-ref", "0191f0a4-7777-7b3a-9d2e-5f6a7b8c9d0e"]
)
async def test_an_unknown_task_is_404(client: httpx.AsyncClient, org: Org, ref: str) -> None:
    await new_task(client, org)
    assert_problem(
        await client.get(f"{org.base}/tasks/{ref}", headers=org.owner.headers), 404, "task-not-found"
    )


async def test_another_orgs_task_is_404_by_id_and_by_key(
    client: httpx.AsyncClient, org: Org, new_org: NewOrg
) -> None:
    task = await new_task(client, org)
    other = await new_org("Other")
    await make_project(client, other, "WEB", "Their website")
    for ref in (task["id"], task["key"]):
        url = f"{other.base}/tasks/{ref}"
        # Through the other organization's URL: its own WEB has no task 1.
        assert_problem(await client.get(url, headers=other.owner.headers), 404, "task-not-found")
        patched = await client.patch(url, json={"title": "Mine"}, headers=other.owner.headers)
        assert_problem(patched, 404, "task-not-found")
        assert_problem(await client.delete(url, headers=other.owner.headers), 404, "task-not-found")
        moved = await client.post(f"{url}/move", json={"project": "WEB"}, headers=other.owner.headers)
        assert_problem(moved, 404, "task-not-found")
        # Through this organization's URL, with the other organization's credentials.
        response = await client.get(f"{org.base}/tasks/{ref}", headers=other.owner.headers)
        assert response.status_code == 404
    assert (await client.get(f"{org.base}/tasks/{task['id']}", headers=org.owner.headers)).json() == task


async def test_permissions_of_api_keys(client: httpx.AsyncClient, org: Org) -> None:
    task = await new_task(client, org)
    reader = await create_api_key(client, org.owner, str(org.id), scopes=["tasks:read"])
    headers = bearer(reader["secret"])
    assert (await client.get(f"{org.base}/tasks/{task['key']}", headers=headers)).status_code == 200
    response = await client.patch(f"{org.base}/tasks/{task['key']}", json={"title": "x"}, headers=headers)
    assert response.status_code == 403
    response = await client.post(f"{org.base}/projects/WEB/tasks", json={"title": "x"}, headers=headers)
    assert response.status_code == 403
    writer = await create_api_key(client, org.owner, str(org.id), scopes=["tasks:read", "tasks:write"])
    response = await client.post(
        f"{org.base}/projects/WEB/tasks", json={"title": "By a key"}, headers=bearer(writer["secret"])
    )
    assert response.status_code == 201, response.text
    assert response.json()["created_by"] is None
    assert (await client.get(f"{org.base}/tasks/WEB-1")).status_code == 401


# -- update -----------------------------------------------------------------------------------------------


async def test_patch_changes_only_the_fields_sent_and_bumps_the_version(
    client: httpx.AsyncClient, container: Container, org: Org
) -> None:
    task = await new_task(client, org, description="Keep me", labels=["bug"], due_date="2030-01-01")
    url = f"{org.base}/tasks/{task['key']}"
    response = await client.patch(
        url,
        json={"title": "Renamed", "priority": "urgent", "labels": ["UI", "ui"]},
        headers=org.owner.headers,
    )
    assert response.status_code == 200, response.text
    patched = response.json()
    assert response.headers["ETag"] == '"2"'
    assert patched["version"] == 2
    assert (patched["title"], patched["priority"], patched["labels"]) == ("Renamed", "urgent", ["ui"])
    assert (patched["description"], patched["due_date"]) == ("Keep me", "2030-01-01")
    labels = await rows(
        container, select(task_labels.c.label).where(task_labels.c.task_id == UUID(task["id"]))
    )
    assert [r["label"] for r in labels] == ["ui"]
    cleared = await client.patch(url, json={"due_date": None}, headers=org.owner.headers)
    assert cleared.json()["due_date"] is None
    assert cleared.json()["version"] == 3
    kinds = await activity_of(container, task["id"])
    assert kinds[1] == (
        "updated",
        {
            "fields": ["title", "priority", "labels"],
            "title": {"from": "Fix the login redirect", "to": "Renamed"},
            "priority": {"from": "none", "to": "urgent"},
            "labels": {"from": ["bug"], "to": ["ui"]},
        },
    )
    assert kinds[2][1]["fields"] == ["due_date"]
    # A change to nothing changes nothing.
    same = await client.patch(url, json={"title": "Renamed"}, headers=org.owner.headers)
    assert same.json()["version"] == 3
    assert len(await activity_of(container, task["id"])) == 3


@pytest.mark.parametrize(
    "body",
    [
        {"title": None},
        {"status": None},
        {"labels": None},
        {"priority": None},
        {"title": ""},
        {"priority": "meh"},
        {"version": 7},
        {"key": "WEB-9"},
    ],
)
async def test_bad_patches_are_422(client: httpx.AsyncClient, org: Org, body: dict[str, Any]) -> None:
    await new_task(client, org)
    response = await client.patch(f"{org.base}/tasks/WEB-1", json=body, headers=org.owner.headers)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")


async def test_if_match_stale_is_412_matching_is_200_missing_is_allowed(
    client: httpx.AsyncClient, org: Org
) -> None:
    task = await new_task(client, org)
    url = f"{org.base}/tasks/{task['id']}"
    ok = await client.patch(url, json={"title": "Two"}, headers={**org.owner.headers, "If-Match": '"1"'})
    assert ok.status_code == 200, ok.text
    assert ok.headers["ETag"] == '"2"'
    stale = await client.patch(url, json={"title": "Lost"}, headers={**org.owner.headers, "If-Match": '"1"'})
    body = assert_problem(stale, 412, "version-mismatch")
    assert body["current_version"] == 2
    assert body["expected_version"] == 1
    for if_match, version in (('W/"2"', 3), ("3", 4), ("*", 5)):
        response = await client.patch(
            url, json={"title": f"v{version}"}, headers={**org.owner.headers, "If-Match": if_match}
        )
        assert response.status_code == 200, response.text
        assert response.json()["version"] == version
    without = await client.patch(url, json={"title": "Last write wins"}, headers=org.owner.headers)
    assert without.status_code == 200
    assert without.json()["version"] == 6
    got = await client.get(url, headers=org.owner.headers)
    assert (got.json()["title"], got.headers["ETag"]) == ("Last write wins", '"6"')


@pytest.mark.parametrize("header", ['"abc"', "", "1, 2", '"-1"', "W/", '"99999999999"'])
async def test_a_malformed_if_match_is_400(client: httpx.AsyncClient, org: Org, header: str) -> None:
    await new_task(client, org)
    response = await client.patch(
        f"{org.base}/tasks/WEB-1", json={"title": "x"}, headers={**org.owner.headers, "If-Match": header}
    )
    assert_problem(response, 400, "invalid-if-match")


def test_parse_if_match() -> None:
    assert parse_if_match(None) is None
    assert parse_if_match("*") is None
    assert parse_if_match('"3"') == 3
    assert parse_if_match('W/"3"') == 3
    assert parse_if_match(" 3 ") == 3


async def test_status_follows_the_workflow(
    client: httpx.AsyncClient, container: Container, org: Org, events: EventRecorder
) -> None:
    task = await new_task(client, org)
    url = f"{org.base}/tasks/{task['key']}"

    async def to(status: str) -> httpx.Response:
        return await client.patch(url, json={"status": status}, headers=org.owner.headers)

    body = assert_problem(await to("done"), 409, "illegal-status-change")
    assert (body["current_status"], body["target_status"]) == ("todo", "done")
    assert body["allowed"] == ["canceled", "in_progress"]
    assert (await to("in_progress")).status_code == 200
    changed = events.last(TaskStatusChanged)
    assert (changed.task_id, changed.previous_status, changed.status) == (
        UUID(task["id"]),
        T.TODO,
        T.IN_PROGRESS,
    )
    assert changed.changed_by == org.owner.user_id
    assert (await to("done")).status_code == 200
    assert_problem(await to("in_progress"), 409, "illegal-status-change")
    assert_problem(await to("canceled"), 409, "illegal-status-change")
    reopened = await to("todo")
    assert reopened.json()["status"] == "todo"
    kinds = [
        (kind, data) for kind, data in await activity_of(container, task["id"]) if kind == "status_changed"
    ]
    assert [d for _, d in kinds] == [
        {"from": "todo", "to": "in_progress"},
        {"from": "in_progress", "to": "done"},
        {"from": "done", "to": "todo"},
    ]
    assert len(events.of_type(TaskStatusChanged)) == 3


@pytest.mark.parametrize(("current", "target"), list(itertools.product(TaskStatus, TaskStatus)))
def test_every_pair_of_the_workflow(current: TaskStatus, target: TaskStatus) -> None:
    allowed = {
        (T.TODO, T.IN_PROGRESS),
        (T.TODO, T.CANCELED),
        (T.IN_PROGRESS, T.TODO),
        (T.IN_PROGRESS, T.DONE),
        (T.IN_PROGRESS, T.CANCELED),
        (T.DONE, T.TODO),
        (T.CANCELED, T.TODO),
    }
    if current is target or (current, target) in allowed:
        assert domain.change_status(current, target) is target
    else:
        with pytest.raises(IllegalStatusChange):
            domain.change_status(current, target)


async def test_assigning_and_unassigning(
    client: httpx.AsyncClient, container: Container, org: Org, events: EventRecorder
) -> None:
    member = await org.member()
    task = await new_task(client, org)
    url = f"{org.base}/tasks/{task['key']}"
    assigned = await client.patch(url, json={"assignee_id": str(member.user_id)}, headers=org.owner.headers)
    assert assigned.status_code == 200, assigned.text
    assert assigned.json()["assignee_id"] == str(member.user_id)
    event = events.last(TaskAssigned)
    assert (event.assignee_id, event.previous_assignee_id, event.assigned_by) == (
        member.user_id,
        None,
        org.owner.user_id,
    )
    watching = await rows(container, select(watchers.c.user_id).where(watchers.c.task_id == UUID(task["id"])))
    assert member.user_id in {r["user_id"] for r in watching}
    unassigned = await client.patch(url, json={"assignee_id": None}, headers=org.owner.headers)
    assert unassigned.json()["assignee_id"] is None
    event = events.last(TaskAssigned)
    assert (event.assignee_id, event.previous_assignee_id) == (None, member.user_id)
    entries = [data for kind, data in await activity_of(container, task["id"]) if kind == "assigned"]
    assert entries == [{"from": None, "to": str(member.user_id)}, {"from": str(member.user_id), "to": None}]
    # A member may change tasks too.
    by_member = await client.patch(url, json={"status": "in_progress"}, headers=member.headers)
    assert by_member.status_code == 200, by_member.text


# -- move -------------------------------------------------------------------------------------------------


async def test_move_gives_the_task_the_next_number_of_its_new_project(
    client: httpx.AsyncClient, container: Container, org: Org
) -> None:
    await make_project(client, org, "API", "API")
    await new_task(client, org, "API")
    task = await new_task(client, org)
    response = await client.post(
        f"{org.base}/tasks/WEB-1/move", json={"project": "api"}, headers=org.owner.headers
    )
    assert response.status_code == 200, response.text
    moved = response.json()
    assert (moved["id"], moved["key"], moved["project_key"], moved["number"]) == (
        task["id"],
        "API-2",
        "API",
        2,
    )
    assert moved["version"] == 2
    assert response.headers["ETag"] == '"2"'
    assert_problem(
        await client.get(f"{org.base}/tasks/WEB-1", headers=org.owner.headers), 404, "task-not-found"
    )
    assert (await client.get(f"{org.base}/tasks/API-2", headers=org.owner.headers)).json() == moved
    kind, data = (await activity_of(container, task["id"]))[-1]
    assert kind == "moved"
    assert (data["from"], data["to"]) == ("WEB-1", "API-2")
    # WEB's numbers are not reused.
    assert (await new_task(client, org))["key"] == "WEB-2"


async def test_move_refuses_archived_and_unknown_projects_and_stale_versions(
    client: httpx.AsyncClient, org: Org, new_org: NewOrg
) -> None:
    await make_project(client, org, "OLD", "Old")
    await client.post(f"{org.base}/projects/OLD/archive", headers=org.owner.headers)
    await new_task(client, org)
    url = f"{org.base}/tasks/WEB-1/move"
    assert_problem(
        await client.post(url, json={"project": "OLD"}, headers=org.owner.headers), 409, "project-archived"
    )
    assert_problem(
        await client.post(url, json={"project": "NOPE"}, headers=org.owner.headers), 404, "project-not-found"
    )
    other = await new_org("Other")
    theirs = await make_project(client, other, "THEIRS", "Theirs")
    response = await client.post(url, json={"project": theirs["id"]}, headers=org.owner.headers)
    assert_problem(response, 404, "project-not-found")
    await make_project(client, org, "API", "API")
    stale = await client.post(url, json={"project": "API"}, headers={**org.owner.headers, "If-Match": '"7"'})
    assert_problem(stale, 412, "version-mismatch")
    assert (await client.post(url, json={}, headers=org.owner.headers)).status_code == 422


# -- delete -----------------------------------------------------------------------------------------------


async def test_delete_removes_the_task_with_its_labels_watchers_comments_and_activity(
    client: httpx.AsyncClient, container: Container, org: Org
) -> None:
    keep = await new_task(client, org, labels=["bug"])
    task = await new_task(client, org, labels=["bug"])
    task_id = UUID(task["id"])
    await client.post(
        f"{org.base}/tasks/{task['key']}/comments", json={"body": "Going away"}, headers=org.owner.headers
    )
    response = await client.delete(f"{org.base}/tasks/{task['key']}", headers=org.owner.headers)
    assert response.status_code == 204, response.text
    assert_problem(
        await client.get(f"{org.base}/tasks/{task['id']}", headers=org.owner.headers), 404, "task-not-found"
    )
    assert_problem(
        await client.delete(f"{org.base}/tasks/{task['id']}", headers=org.owner.headers),
        404,
        "task-not-found",
    )
    for table in (task_labels, watchers, comments, activity):
        assert await rows(container, select(table).where(table.c.task_id == task_id)) == []
    assert (await client.get(f"{org.base}/tasks/{keep['key']}", headers=org.owner.headers)).status_code == 200
    assert await rows(container, select(task_labels).where(task_labels.c.task_id == UUID(keep["id"])))
    assert (await new_task(client, org))["key"] == "WEB-3"  # numbers are not reused


# -- the contract -----------------------------------------------------------------------------------------


async def test_the_contracts_get_task(client: httpx.AsyncClient, container: Container, org: Org) -> None:
    task = await new_task(client, org, priority="low", labels=["x"])
    service = container.implementations["projects"]
    assert isinstance(service, ProjectsService)
    info = await service.get_task(org.id, UUID(task["id"]))
    assert (info.key, info.priority.name, info.labels, info.version) == ("WEB-1", "LOW", ["x"], 1)
    with pytest.raises(TaskNotFound):
        await service.get_task(UUID(int=1), UUID(task["id"]))
