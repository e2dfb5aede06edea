"""Projects through the API: create, list, read, update, archive, delete; keys, roles, tenants and plans."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any
from uuid import UUID

import httpx
import pytest
from sqlalchemy import func, select
from uuid6 import uuid7

from splitstone.kernel.clock import ManualClock
from splitstone.kernel.container import Container
from splitstone.kernel.events import EventRecorder
from splitstone.kernel.pagination import InvalidCursor
from splitstone.modules.projects.api import ProjectArchived, ProjectNotFound, ProjectStatus
from splitstone.modules.projects.projects import load_project, next_number
from splitstone.modules.projects.service import ProjectsService
from splitstone.modules.projects.storage import activity, comments, projects, task_labels, tasks, watchers
from tests.modules.auth.org_helpers import assert_problem, bearer, create_api_key
from tests.modules.projects.conftest import NewOrg, Org, make_project

# -- helpers ----------------------------------------------------------------------------------------------


async def insert_task(container: Container, org_id: UUID, project_id: UUID, author: UUID) -> UUID:
    """A task with a label, a watcher, a comment and an activity entry, written directly (not the API)."""
    task_id = uuid7()
    now = container.clock.now()
    async with container.units_of_work["projects"]() as uow:
        session = uow.session
        number = await next_number(session, project_id)
        await session.execute(
            tasks.insert().values(
                id=task_id,
                org_id=org_id,
                project_id=project_id,
                number=number,
                title=f"Task {number}",
                description="",
                status="todo",
                priority=0,
                assignee_id=None,
                due_date=None,
                labels=json.dumps(["bug"]),
                created_by=author,
                created_at=now,
                updated_at=now,
                version=1,
            )
        )
        await session.execute(task_labels.insert().values(task_id=task_id, org_id=org_id, label="bug"))
        await session.execute(
            watchers.insert().values(task_id=task_id, user_id=author, org_id=org_id, created_at=now)
        )
        await session.execute(
            comments.insert().values(
                id=uuid7(),
                org_id=org_id,
                task_id=task_id,
                author_id=author,
                body="First!",
                created_at=now,
                updated_at=now,
                edited_at=None,
            )
        )
        await session.execute(
            activity.insert().values(
                id=uuid7(),
                org_id=org_id,
                task_id=task_id,
                actor_id=author,
                kind="created",
                data="{}",
                created_at=now,
            )
        )
        await uow.commit()
    return task_id


async def row_counts(container: Container) -> dict[str, int]:
    counts = {}
    async with container.units_of_work["projects"](read_only=True) as uow:
        for table in (projects, tasks, task_labels, watchers, comments, activity):
            counts[table.name] = int(
                (await uow.session.execute(select(func.count()).select_from(table))).scalar_one()
            )
    return counts


async def upgrade_to_pro(client: httpx.AsyncClient, org: Org) -> None:
    response = await client.post(
        f"{org.base}/billing/subscription/change", json={"plan": "pro"}, headers=org.owner.headers
    )
    assert response.status_code == 200, response.text


# -- create and read ----------------------------------------------------------------------------------------


async def test_create_then_read_by_id_and_by_key(
    new_org: NewOrg, client: httpx.AsyncClient, clock: ManualClock
) -> None:
    org = await new_org()
    response = await client.post(
        f"{org.base}/projects",
        json={"key": " web ", "name": " Website ", "description": "The *public* site."},
        headers=org.owner.headers,
    )
    assert response.status_code == 201, response.text
    project = response.json()
    assert response.headers["Location"] == f"{org.base}/projects/{project['id']}"
    assert project["org_id"] == str(org.id)
    assert (project["key"], project["name"], project["description"]) == (
        "WEB",
        "Website",
        "The *public* site.",
    )
    assert project["status"] == "active"
    assert project["created_by"] == str(org.owner.user_id)
    assert project["archived_at"] is None
    assert project["created_at"] == project["updated_at"]
    assert project["created_at"].startswith(clock.now().isoformat()[:19])

    for ref in (project["id"], "WEB", "web", "Web"):
        got = await client.get(f"{org.base}/projects/{ref}", headers=org.owner.headers)
        assert got.status_code == 200, got.text
        assert got.json() == project
    assert (await client.get(f"{org.base}/projects/{project['id']}")).status_code == 401


async def test_unknown_projects_are_404(new_org: NewOrg, client: httpx.AsyncClient) -> None:
    org = await new_org()
    for ref in (str(uuid7()), "NOPE", "not a key", "1AB", "-"):
        assert_problem(
            await client.get(f"{org.base}/projects/{ref}", headers=org.owner.headers),
            404,
            "project-not-found",
        )
    for method, path in (
        ("PATCH", "/projects/NOPE"),
        ("POST", "/projects/NOPE/archive"),
        ("POST", "/projects/NOPE/unarchive"),
        ("DELETE", "/projects/NOPE"),
    ):
        body = {"name": "x"} if method == "PATCH" else None
        response = await client.request(method, f"{org.base}{path}", json=body, headers=org.owner.headers)
        assert_problem(response, 404, "project-not-found")


async def test_list_newest_first_in_pages(new_org: NewOrg, client: httpx.AsyncClient) -> None:
    org = await new_org()
    created = [await make_project(client, org, key=k, name=f"Project {k}") for k in ("AAA", "BBB", "CCC")]
    url = f"{org.base}/projects"

    first = await client.get(url, params={"limit": 2}, headers=org.owner.headers)
    assert first.status_code == 200, first.text
    assert [p["key"] for p in first.json()["items"]] == ["CCC", "BBB"]
    cursor = first.json()["next_cursor"]
    assert cursor
    second = await client.get(url, params={"limit": 2, "cursor": cursor}, headers=org.owner.headers)
    assert [p["key"] for p in second.json()["items"]] == ["AAA"]
    assert second.json()["next_cursor"] is None
    assert second.json()["items"][0] == created[0]

    whole = (await client.get(url, headers=org.owner.headers)).json()
    assert [p["key"] for p in whole["items"]] == ["CCC", "BBB", "AAA"]
    assert whole["next_cursor"] is None

    await client.post(f"{url}/BBB/archive", headers=org.owner.headers)
    active = (await client.get(url, params={"status": "active"}, headers=org.owner.headers)).json()
    assert [p["key"] for p in active["items"]] == ["CCC", "AAA"]
    archived = (await client.get(url, params={"status": "archived"}, headers=org.owner.headers)).json()
    assert [p["key"] for p in archived["items"]] == ["BBB"]


async def test_bad_list_parameters_are_problems(new_org: NewOrg, client: httpx.AsyncClient) -> None:
    org = await new_org()
    url = f"{org.base}/projects"
    for cursor in ("nonsense!", "AAAA", "x" * 22):
        response = await client.get(url, params={"cursor": cursor}, headers=org.owner.headers)
        assert_problem(response, InvalidCursor.status, "invalid-cursor")
    for params in ({"limit": 0}, {"limit": 101}, {"status": "deleted"}, {"cursor": "x" * 101}):
        response = await client.get(url, params=params, headers=org.owner.headers)
        assert response.status_code == 422, response.text
        assert response.headers["content-type"].startswith("application/problem+json")


# -- keys ----------------------------------------------------------------------------------------------------


async def test_key_rules(new_org: NewOrg, client: httpx.AsyncClient) -> None:
    org = await new_org()
    url = f"{org.base}/projects"
    for key in ("A", "1AB", "WEB-1", "ÄBC", "ABCDEFGHIJK", " ", "W B"):
        response = await client.post(url, json={"key": key, "name": "x"}, headers=org.owner.headers)
        assert_problem(response, 422, "invalid-project-key")
    await make_project(client, org, key="WEB")
    for key in ("WEB", "web", " Web "):
        response = await client.post(url, json={"key": key, "name": "Again"}, headers=org.owner.headers)
        body = assert_problem(response, 409, "project-key-taken")
        assert body["key"] == "WEB"
    # Another organization may use the same key.
    other = await new_org("Globex")
    await make_project(client, other, key="WEB")


async def test_invalid_bodies_are_problems(new_org: NewOrg, client: httpx.AsyncClient) -> None:
    org = await new_org()
    url = f"{org.base}/projects"
    for body in (
        {"key": "WEB"},
        {"name": "Website"},
        {"key": "WEB", "name": ""},
        {"key": "WEB", "name": "   "},
        {"key": "WEB", "name": "x" * 201},
        {"key": "WEB", "name": "Website", "owner": "me"},
        {"key": 42, "name": "Website"},
    ):
        response = await client.post(url, json=body, headers=org.owner.headers)
        assert response.status_code == 422, (body, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
    response = await client.post(url, content=b"{not json", headers=org.owner.headers)
    assert response.status_code == 422


async def test_simultaneous_creations_with_one_key(new_org: NewOrg, client: httpx.AsyncClient) -> None:
    org = await new_org()
    url = f"{org.base}/projects"
    responses = await asyncio.gather(
        *(client.post(url, json={"key": "WEB", "name": f"W{i}"}, headers=org.owner.headers) for i in range(2))
    )
    assert sorted(r.status_code for r in responses) == [201, 409]


# -- update, archive, unarchive ------------------------------------------------------------------------------


async def test_update(new_org: NewOrg, client: httpx.AsyncClient, clock: ManualClock) -> None:
    org = await new_org()
    project = await make_project(client, org)
    url = f"{org.base}/projects/{project['id']}"
    clock.advance(timedelta(seconds=60))

    renamed = await client.patch(url, json={"name": "Marketing site"}, headers=org.owner.headers)
    assert renamed.status_code == 200, renamed.text
    assert renamed.json()["name"] == "Marketing site"
    assert renamed.json()["description"] == ""
    assert renamed.json()["updated_at"] > project["updated_at"]

    described = await client.patch(
        f"{org.base}/projects/web", json={"description": "New"}, headers=org.owner.headers
    )
    assert (described.json()["name"], described.json()["description"]) == ("Marketing site", "New")

    unchanged = await client.patch(url, json={}, headers=org.owner.headers)
    assert unchanged.status_code == 200
    assert unchanged.json() == described.json()

    for body in ({"key": "NEW"}, {"name": ""}, {"name": None, "status": "archived"}):
        response = await client.patch(url, json=body, headers=org.owner.headers)
        assert response.status_code == 422, response.text


async def test_archive_and_unarchive(
    new_org: NewOrg, client: httpx.AsyncClient, events: EventRecorder, clock: ManualClock
) -> None:
    org = await new_org()
    project = await make_project(client, org)
    url = f"{org.base}/projects/{project['id']}"

    archived = await client.post(f"{url}/archive", headers=org.owner.headers)
    assert archived.status_code == 200, archived.text
    assert archived.json()["status"] == "archived"
    assert archived.json()["archived_at"] == archived.json()["updated_at"]
    event = events.last(ProjectArchived)
    assert (event.project_id, event.org_id, event.key) == (UUID(project["id"]), org.id, "WEB")
    assert (event.project_name, event.archived_by) == ("Website", org.owner.user_id)

    clock.advance(timedelta(seconds=5))
    again = await client.post(f"{org.base}/projects/web/archive", headers=org.owner.headers)
    assert again.json() == archived.json()
    assert len(events.of_type(ProjectArchived)) == 1

    response = await client.patch(url, json={"name": "Nope"}, headers=org.owner.headers)
    assert_problem(response, 409, "project-archived")

    active = await client.post(f"{url}/unarchive", headers=org.owner.headers)
    assert active.status_code == 200, active.text
    assert (active.json()["status"], active.json()["archived_at"]) == ("active", None)
    still = await client.post(f"{url}/unarchive", headers=org.owner.headers)
    assert still.json() == active.json()
    assert (await client.patch(url, json={"name": "Yes"}, headers=org.owner.headers)).status_code == 200


# -- delete --------------------------------------------------------------------------------------------------


async def test_delete_an_empty_project(new_org: NewOrg, client: httpx.AsyncClient) -> None:
    org = await new_org()
    project = await make_project(client, org)
    response = await client.delete(f"{org.base}/projects/WEB", headers=org.owner.headers)
    assert response.status_code == 204, response.text
    assert response.content == b""
    missing = await client.get(f"{org.base}/projects/{project['id']}", headers=org.owner.headers)
    assert_problem(missing, 404, "project-not-found")
    # The key is free again.
    await make_project(client, org, key="WEB")


async def test_delete_a_project_with_tasks_needs_cascade(
    new_org: NewOrg, client: httpx.AsyncClient, container: Container
) -> None:
    org = await new_org()
    project = await make_project(client, org)
    kept = await make_project(client, org, key="API", name="API")
    project_id, kept_id = UUID(project["id"]), UUID(kept["id"])
    for _ in range(2):
        await insert_task(container, org.id, project_id, org.owner.user_id)
    await insert_task(container, org.id, kept_id, org.owner.user_id)
    before = await row_counts(container)
    assert before == {
        "projects": 2,
        "tasks": 3,
        "task_labels": 3,
        "watchers": 3,
        "comments": 3,
        "activity": 3,
    }

    url = f"{org.base}/projects/{project['id']}"
    body = assert_problem(await client.delete(url, headers=org.owner.headers), 409, "project-not-empty")
    assert body["key"] == "WEB"
    assert await row_counts(container) == before
    response = await client.delete(url, params={"cascade": "maybe"}, headers=org.owner.headers)
    assert response.status_code == 422

    response = await client.delete(url, params={"cascade": "true"}, headers=org.owner.headers)
    assert response.status_code == 204, response.text
    # Only the deleted project's rows are gone; the other project keeps its task and what hangs off it.
    assert await row_counts(container) == {key: 1 for key in before}


# -- who may do what ---------------------------------------------------------------------------------------


async def test_members_read_but_do_not_manage(new_org: NewOrg, client: httpx.AsyncClient) -> None:
    org = await new_org()
    project = await make_project(client, org)
    member = await org.member()
    base = f"{org.base}/projects"
    assert (await client.get(base, headers=member.headers)).json()["items"] == [project]
    assert (await client.get(f"{base}/WEB", headers=member.headers)).json() == project
    for method, path, body in (
        ("POST", base, {"key": "API", "name": "API"}),
        ("PATCH", f"{base}/WEB", {"name": "Mine"}),
        ("POST", f"{base}/WEB/archive", None),
        ("POST", f"{base}/WEB/unarchive", None),
        ("DELETE", f"{base}/WEB", None),
    ):
        response = await client.request(method, path, json=body, headers=member.headers)
        assert response.status_code == 403, (method, path, response.text)
    admin = await org.member("admin")
    created = await make_project(client, org, key="API", name="API", by=admin)
    assert created["created_by"] == str(admin.user_id)


async def test_api_keys_act_within_their_scopes(new_org: NewOrg, client: httpx.AsyncClient) -> None:
    org = await new_org()
    manage = bearer(
        (await create_api_key(client, org.owner, str(org.id), scopes=["projects:manage"]))["secret"]
    )
    read = bearer((await create_api_key(client, org.owner, str(org.id), scopes=["projects:read"]))["secret"])
    base = f"{org.base}/projects"

    response = await client.post(base, json={"key": "CI", "name": "From CI"}, headers=manage)
    assert response.status_code == 201, response.text
    assert response.json()["created_by"] is None
    assert (await client.get(f"{base}/CI", headers=read)).status_code == 200
    response = await client.post(base, json={"key": "RO", "name": "Read only"}, headers=read)
    assert response.status_code == 403, response.text
    assert (await client.post(f"{base}/CI/archive", headers=read)).status_code == 403
    assert (await client.post(f"{base}/CI/archive", headers=manage)).status_code == 200


async def test_another_organizations_projects_are_404(new_org: NewOrg, client: httpx.AsyncClient) -> None:
    acme = await new_org("Acme")
    globex = await new_org("Globex")
    theirs = await make_project(client, globex, key="SECRET", name="Secret")
    mine = await make_project(client, acme, key="WEB")

    # Through my own organization, their project does not exist.
    for ref in (theirs["id"], "SECRET"):
        response = await client.get(f"{acme.base}/projects/{ref}", headers=acme.owner.headers)
        assert_problem(response, 404, "project-not-found")
    for method, suffix in (("PATCH", ""), ("POST", "/archive"), ("DELETE", "")):
        response = await client.request(
            method,
            f"{acme.base}/projects/{theirs['id']}{suffix}",
            json={"name": "Mine now"} if method == "PATCH" else None,
            headers=acme.owner.headers,
        )
        assert_problem(response, 404, "project-not-found")
    # Through their organization, I am no member: 404 as well, and nothing leaks.
    for method, path in (
        ("GET", f"{globex.base}/projects"),
        ("GET", f"{globex.base}/projects/{theirs['id']}"),
        ("POST", f"{globex.base}/projects"),
        ("DELETE", f"{globex.base}/projects/{theirs['id']}"),
    ):
        body = {"key": "EVIL", "name": "Evil"} if method == "POST" else None
        response = await client.request(method, path, json=body, headers=acme.owner.headers)
        assert response.status_code == 404, (method, path, response.text)
    assert (await client.get(f"{globex.base}/projects/SECRET", headers=globex.owner.headers)).json() == theirs
    listed = (await client.get(f"{acme.base}/projects", headers=acme.owner.headers)).json()["items"]
    assert listed == [mine]


# -- the plan's limit --------------------------------------------------------------------------------------


async def test_the_free_plan_allows_three_projects(new_org: NewOrg, client: httpx.AsyncClient) -> None:
    org = await new_org()
    for key in ("ONE", "TWO", "THREE"):
        await make_project(client, org, key=key)
    await client.post(f"{org.base}/projects/THREE/archive", headers=org.owner.headers)  # archived ones count

    response = await client.post(
        f"{org.base}/projects", json={"key": "FOUR", "name": "4"}, headers=org.owner.headers
    )
    body = assert_problem(response, 402, "entitlement-exceeded")
    assert (body["key"], body["limit"], body["used"], body["plan"]) == ("projects", 3, 3, "free")
    assert "pro" in body["upgrade_plans"]
    assert body["upgrade_url"]
    # A taken key is still reported as such, not as the limit.
    response = await client.post(
        f"{org.base}/projects", json={"key": "ONE", "name": "1"}, headers=org.owner.headers
    )
    assert_problem(response, 409, "project-key-taken")

    await client.delete(f"{org.base}/projects/TWO", headers=org.owner.headers)
    await make_project(client, org, key="FOUR")

    await upgrade_to_pro(client, org)
    await make_project(client, org, key="FIVE")


@pytest.mark.backends("postgres")
async def test_simultaneous_creations_respect_the_limit(new_org: NewOrg, client: httpx.AsyncClient) -> None:
    org = await new_org()
    responses = await asyncio.gather(
        *(
            client.post(
                f"{org.base}/projects", json={"key": f"P{i}", "name": str(i)}, headers=org.owner.headers
            )
            for i in range(5)
        )
    )
    assert sorted(r.status_code for r in responses) == [201, 201, 201, 402, 402]


# -- idempotency -------------------------------------------------------------------------------------------


async def test_idempotency_key_replays_a_creation(new_org: NewOrg, client: httpx.AsyncClient) -> None:
    org = await new_org()
    headers = {**org.owner.headers, "Idempotency-Key": "create-web-1"}
    body = {"key": "WEB", "name": "Website"}
    first = await client.post(f"{org.base}/projects", json=body, headers=headers)
    again = await client.post(f"{org.base}/projects", json=body, headers=headers)
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    assert again.headers["Location"] == first.headers["Location"]
    listed = (await client.get(f"{org.base}/projects", headers=org.owner.headers)).json()["items"]
    assert len(listed) == 1
    reused = await client.post(f"{org.base}/projects", json={**body, "name": "Other"}, headers=headers)
    assert_problem(reused, 422, "idempotency-key-reused")


# -- the contract and the helpers for tasks ------------------------------------------------------------------


async def test_the_contract(new_org: NewOrg, client: httpx.AsyncClient, projects: ProjectsService) -> None:
    org = await new_org()
    project = await make_project(client, org)
    info = await projects.get_project(org.id, UUID(project["id"]))
    assert (info.id, info.org_id, info.key, info.name, info.status) == (
        UUID(project["id"]),
        org.id,
        "WEB",
        "Website",
        ProjectStatus.ACTIVE,
    )
    assert await projects.count_projects(org.id) == 1
    other = await new_org("Globex")
    assert await projects.count_projects(other.id) == 0
    with pytest.raises(ProjectNotFound):
        await projects.get_project(other.id, UUID(project["id"]))
    with pytest.raises(ProjectNotFound):
        await projects.get_project(org.id, uuid7())


async def test_task_numbers_are_allocated_one_by_one(
    new_org: NewOrg, client: httpx.AsyncClient, container: Container
) -> None:
    org = await new_org()
    project_id = UUID((await make_project(client, org))["id"])
    factory = container.units_of_work["projects"]

    async def allocate() -> int:
        async with factory() as uow:
            number = await next_number(uow.session, project_id)
            await uow.commit()
            return number

    numbers = await asyncio.gather(*(allocate() for _ in range(5)))
    assert sorted(numbers) == [1, 2, 3, 4, 5]
    async with factory() as uow:
        row: Any = await load_project(uow.session, org.id, project_id, lock=True)
        assert row["last_number"] == 5
        assert await load_project(uow.session, uuid7(), project_id) is None
        with pytest.raises(ProjectNotFound):
            await next_number(uow.session, uuid7())


async def test_the_routes_are_documented_in_the_openapi(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    base = "/api/v1/orgs/{org_id}/projects"
    one = f"{base}/{{project_ref}}"
    operations = {
        ("get", base): "200",
        ("post", base): "201",
        ("get", one): "200",
        ("patch", one): "200",
        ("delete", one): "204",
        ("post", f"{one}/archive"): "200",
        ("post", f"{one}/unarchive"): "200",
    }
    for (method, path), success in operations.items():
        operation = spec["paths"][path][method]
        assert operation["tags"] == ["projects"]
        assert operation["summary"]
        assert success in operation["responses"]
        assert operation["security"] == [{"HTTPBearer": []}]
        headers = {p["name"] for p in operation["parameters"] if p["in"] == "header"}
        assert ("Idempotency-Key" in headers) == (method in ("post", "patch")), (method, path)
    ref = next(p for p in spec["paths"][one]["get"]["parameters"] if p["name"] == "project_ref")
    assert "key" in ref["description"]
    schemas = spec["components"]["schemas"]
    assert schemas["ProjectCreate"]["properties"]["key"]["examples"] == ["WEB"]
    assert schemas["ProjectCreate"]["additionalProperties"] is False
    assert {"id", "key", "status", "archived_at"} <= set(schemas["ProjectResponse"]["properties"])
