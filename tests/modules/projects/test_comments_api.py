"""Comments on tasks through the API: add, page, edit one's own, delete (one's own, or any as an admin).

Tasks are written straight into projects' tables here (`insert_task`), so these tests depend on no
other part of projects than the comments and the tables.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from uuid import UUID

import httpx
import pytest
from sqlalchemy import select, update
from uuid6 import uuid7

from splitstone.kernel.clock import ManualClock
from splitstone.kernel.container import Container
from splitstone.kernel.events import EventRecorder
from splitstone.kernel.pagination import InvalidCursor
from splitstone.modules.projects.api import TaskCommented
from splitstone.modules.projects.comments import MAX_BODY, clean_body, excerpt
from splitstone.modules.projects.storage import projects, tasks, watchers
from splitstone.modules.projects.watchers import watch
from tests.modules.auth.org_helpers import assert_problem, create_api_key
from tests.modules.projects.conftest import NewOrg, Org


async def insert_task(
    container: Container,
    clock: ManualClock,
    org_id: UUID,
    *,
    key: str = "WEB",
    title: str = "Fix the checkout button",
    created_by: UUID | None = None,
    assignee_id: UUID | None = None,
) -> tuple[UUID, str]:
    """A task in project `key` of the organization (made if missing), written into projects' tables as
    tasks.py would; its creator and assignee watch it. Returns its id and key (`WEB-1`)."""
    now = clock.now()
    async with container.units_of_work["projects"]() as uow:
        session = uow.session
        project_id = (
            await session.execute(
                select(projects.c.id).where(projects.c.org_id == org_id, projects.c.key == key)
            )
        ).scalar_one_or_none()
        if project_id is None:
            project_id = uuid7()
            await session.execute(
                projects.insert().values(
                    id=project_id,
                    org_id=org_id,
                    key=key,
                    name=key.title(),
                    description="",
                    status="active",
                    last_number=0,
                    created_by=created_by,
                    created_at=now,
                    updated_at=now,
                    archived_at=None,
                )
            )
        number = (
            await session.execute(
                update(projects)
                .where(projects.c.id == project_id)
                .values(last_number=projects.c.last_number + 1)
                .returning(projects.c.last_number)
            )
        ).scalar_one()
        task_id = uuid7()
        await session.execute(
            tasks.insert().values(
                id=task_id,
                org_id=org_id,
                project_id=project_id,
                number=number,
                title=title,
                description="",
                status="todo",
                priority=0,
                assignee_id=assignee_id,
                due_date=None,
                labels="[]",
                created_by=created_by,
                created_at=now,
                updated_at=now,
                version=1,
            )
        )
        for user_id in {created_by, assignee_id} - {None}:
            assert user_id is not None
            await watch(session, task_id=task_id, user_id=user_id, org_id=org_id, now=now)
        await uow.commit()
    return task_id, f"{key}-{number}"


async def archive_project(container: Container, org_id: UUID, key: str) -> None:
    async with container.units_of_work["projects"]() as uow:
        await uow.session.execute(
            update(projects)
            .where(projects.c.org_id == org_id, projects.c.key == key)
            .values(status="archived")
        )
        await uow.commit()


async def watcher_ids(container: Container, task_id: UUID) -> set[UUID]:
    async with container.units_of_work["projects"](read_only=True) as uow:
        rows = await uow.session.execute(select(watchers.c.user_id).where(watchers.c.task_id == task_id))
        return set(rows.scalars())


def comments_url(org: Org, ref: str | UUID) -> str:
    return f"{org.base}/tasks/{ref}/comments"


async def comment(
    client: httpx.AsyncClient, org: Org, ref: str | UUID, body: str, headers: dict[str, str]
) -> dict[str, Any]:
    response = await client.post(comments_url(org, ref), json={"body": body}, headers=headers)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


@pytest.fixture
async def org(new_org: NewOrg) -> Org:
    return await new_org()


async def test_comments_are_added_paged_oldest_first_edited_and_deleted(
    client: httpx.AsyncClient, container: Container, clock: ManualClock, org: Org
) -> None:
    task_id, key = await insert_task(container, clock, org.id, created_by=org.owner.user_id)
    h = org.owner.headers

    first = await comment(client, org, key, "  First, with **markdown**.  \n", h)
    second = await comment(client, org, key.lower(), "Second", h)  # keys in any case
    third = await comment(client, org, task_id, "Third", h)  # or the task's id

    assert first["body"] == "First, with **markdown**."
    assert first["task_id"] == str(task_id)
    assert first["author_id"] == str(org.owner.user_id)
    assert first["edited_at"] is None
    assert first["created_at"] == first["updated_at"]
    page = await client.get(comments_url(org, key), params={"limit": 2}, headers=h)
    assert page.status_code == 200, page.text
    assert [c["body"] for c in page.json()["items"]] == [first["body"], "Second"]
    rest = await client.get(
        comments_url(org, key), params={"limit": 2, "cursor": page.json()["next_cursor"]}, headers=h
    )
    assert [c["id"] for c in rest.json()["items"]] == [third["id"]]
    assert rest.json()["next_cursor"] is None

    clock.advance(timedelta(minutes=5))
    edited = await client.patch(f"{comments_url(org, key)}/{second['id']}", json={"body": "2nd"}, headers=h)
    assert edited.status_code == 200, edited.text
    assert edited.json()["body"] == "2nd"
    assert edited.json()["edited_at"] == edited.json()["updated_at"] != second["created_at"]

    deleted = await client.delete(f"{comments_url(org, key)}/{first['id']}", headers=h)
    assert deleted.status_code == 204
    listed = await client.get(comments_url(org, key), headers=h)
    assert [(c["id"], c["body"]) for c in listed.json()["items"]] == [
        (second["id"], "2nd"),
        (third["id"], "Third"),
    ]
    gone = await client.delete(f"{comments_url(org, key)}/{first['id']}", headers=h)
    assert_problem(gone, 404, "comment-not-found")


async def test_the_author_watches_the_task_and_watchers_are_announced(
    client: httpx.AsyncClient, container: Container, clock: ManualClock, events: EventRecorder, org: Org
) -> None:
    member = await org.member()
    task_id, key = await insert_task(container, clock, org.id, created_by=org.owner.user_id)
    long_body = "word " * 100

    created = await comment(client, org, key, long_body, member.headers)

    assert await watcher_ids(container, task_id) == {org.owner.user_id, member.user_id}
    event = events.last(TaskCommented)
    assert event.comment_id == UUID(created["id"])
    assert event.task_id == task_id
    assert event.key == key
    assert event.title == "Fix the checkout button"
    assert event.author_id == member.user_id
    assert set(event.watcher_ids) == {org.owner.user_id, member.user_id}
    assert len(event.excerpt) <= 200
    assert event.excerpt.endswith("…")
    assert long_body.startswith(event.excerpt[:-1])


async def test_only_the_author_edits_and_only_the_author_or_an_admin_deletes(
    client: httpx.AsyncClient, container: Container, clock: ManualClock, org: Org
) -> None:
    alice, bob, admin = await org.member(), await org.member(), await org.member("admin")
    _, key = await insert_task(container, clock, org.id, created_by=alice.user_id)
    mine = await comment(client, org, key, "Alice's", alice.headers)
    url = f"{comments_url(org, key)}/{mine['id']}"

    for other in (bob, admin, org.owner):  # not even an owner edits another's words
        refused = await client.patch(url, json={"body": "Not Alice's"}, headers=other.headers)
        assert_problem(refused, 403, "not-the-author")
    assert_problem(await client.delete(url, headers=bob.headers), 403, "not-the-author")

    assert (await client.delete(url, headers=admin.headers)).status_code == 204
    owners = await comment(client, org, key, "Alice's again", alice.headers)
    assert (
        await client.delete(f"{comments_url(org, key)}/{owners['id']}", headers=org.owner.headers)
    ).status_code == 204
    own = await comment(client, org, key, "Bob's", bob.headers)
    assert (
        await client.delete(f"{comments_url(org, key)}/{own['id']}", headers=bob.headers)
    ).status_code == 204
    assert (await client.get(comments_url(org, key), headers=bob.headers)).json()["items"] == []


async def test_an_api_key_comments_anonymously_and_cannot_edit(
    client: httpx.AsyncClient, container: Container, clock: ManualClock, org: Org
) -> None:
    _, key = await insert_task(container, clock, org.id, created_by=org.owner.user_id)
    api_key = await create_api_key(client, org.owner, str(org.id), scopes=["tasks:read", "tasks:write"])
    headers = {"Authorization": f"Bearer {api_key['secret']}"}

    created = await comment(client, org, key, "From CI: build 812 passed.", headers)

    assert created["author_id"] is None
    refused = await client.patch(
        f"{comments_url(org, key)}/{created['id']}", json={"body": "changed"}, headers=headers
    )
    assert_problem(refused, 403, "not-the-author")
    read_only = await create_api_key(client, org.owner, str(org.id), scopes=["tasks:read"])
    denied = await client.post(
        comments_url(org, key),
        json={"body": "no"},
        headers={"Authorization": f"Bearer {read_only['secret']}"},
    )
    assert_problem(denied, 403, "missing-permission")


async def test_another_organization_s_task_is_not_found(
    client: httpx.AsyncClient, container: Container, clock: ManualClock, org: Org, new_org: NewOrg
) -> None:
    task_id, key = await insert_task(container, clock, org.id, created_by=org.owner.user_id)
    mine = await comment(client, org, key, "Private", org.owner.headers)
    other = await new_org("Other")
    await insert_task(container, clock, other.id, key="WEB")  # the same key in the other organization

    for ref in (key, task_id):
        listed = await client.get(comments_url(other, ref), headers=other.owner.headers)
        if ref == key:  # their own WEB-1 exists and has no comments
            assert listed.json()["items"] == []
        else:
            assert_problem(listed, 404, "task-not-found")
    assert_problem(
        await client.post(comments_url(other, task_id), json={"body": "x"}, headers=other.owner.headers),
        404,
        "task-not-found",
    )
    their_url = f"{comments_url(other, 'WEB-1')}/{mine['id']}"
    assert_problem(await client.delete(their_url, headers=other.owner.headers), 404, "comment-not-found")
    assert_problem(
        await client.get(comments_url(org, key), headers=other.owner.headers), 404, "organization-not-found"
    )
    for ref in ("WEB-99", "NOPE-1", "not-a-ref", str(uuid7())):
        assert_problem(
            await client.get(comments_url(org, ref), headers=org.owner.headers), 404, "task-not-found"
        )


@pytest.mark.parametrize(
    "body",
    [
        {"body": ""},
        {"body": "  \n\t "},
        {"body": "x" * (MAX_BODY + 1)},
        {},
        {"body": "ok", "author_id": str(uuid7())},
        {"body": 42},
    ],
)
async def test_a_bad_body_is_422(
    client: httpx.AsyncClient, container: Container, clock: ManualClock, org: Org, body: dict[str, Any]
) -> None:
    _, key = await insert_task(container, clock, org.id, created_by=org.owner.user_id)
    mine = await comment(client, org, key, "ok", org.owner.headers)

    added = await client.post(comments_url(org, key), json=body, headers=org.owner.headers)
    edited = await client.patch(
        f"{comments_url(org, key)}/{mine['id']}", json=body, headers=org.owner.headers
    )

    for response in (added, edited):
        assert response.status_code == 422, response.text
        assert response.headers["content-type"].startswith("application/problem+json")


async def test_a_body_of_the_longest_length_is_taken_after_trimming(
    client: httpx.AsyncClient, container: Container, clock: ManualClock, org: Org
) -> None:
    _, key = await insert_task(container, clock, org.id, created_by=org.owner.user_id)

    created = await comment(client, org, key, "\n" + "x" * MAX_BODY + "\n", org.owner.headers)

    assert len(created["body"]) == MAX_BODY


async def test_a_bad_cursor_is_refused_and_an_unknown_comment_is_404(
    client: httpx.AsyncClient, container: Container, clock: ManualClock, org: Org
) -> None:
    _, key = await insert_task(container, clock, org.id, created_by=org.owner.user_id)
    h = org.owner.headers

    bad = await client.get(comments_url(org, key), params={"cursor": "nope"}, headers=h)
    assert_problem(bad, InvalidCursor.status, "invalid-cursor")
    missing = f"{comments_url(org, key)}/{uuid7()}"
    assert_problem(await client.patch(missing, json={"body": "x"}, headers=h), 404, "comment-not-found")
    assert_problem(await client.delete(missing, headers=h), 404, "comment-not-found")
    assert (await client.delete(f"{comments_url(org, key)}/not-a-uuid", headers=h)).status_code == 422


async def test_an_archived_project_takes_no_new_comments_but_keeps_its_own(
    client: httpx.AsyncClient, container: Container, clock: ManualClock, org: Org
) -> None:
    _, key = await insert_task(container, clock, org.id, created_by=org.owner.user_id)
    kept = await comment(client, org, key, "Before archiving", org.owner.headers)
    await archive_project(container, org.id, "WEB")

    refused = await client.post(comments_url(org, key), json={"body": "After"}, headers=org.owner.headers)
    assert_problem(refused, 409, "project-archived")
    listed = await client.get(comments_url(org, key), headers=org.owner.headers)
    assert [c["id"] for c in listed.json()["items"]] == [kept["id"]]


async def test_a_retried_post_with_an_idempotency_key_comments_once(
    client: httpx.AsyncClient, container: Container, clock: ManualClock, org: Org
) -> None:
    _, key = await insert_task(container, clock, org.id, created_by=org.owner.user_id)
    headers = {**org.owner.headers, "Idempotency-Key": "comment-1"}

    first = await client.post(comments_url(org, key), json={"body": "Once"}, headers=headers)
    again = await client.post(comments_url(org, key), json={"body": "Once"}, headers=headers)

    assert first.status_code == again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    listed = await client.get(comments_url(org, key), headers=org.owner.headers)
    assert len(listed.json()["items"]) == 1


# -- rules without I/O ---------------------------------------------------------------------------------


def test_a_body_is_trimmed_and_bounded() -> None:
    assert clean_body("  hi \n") == "hi"
    assert len(clean_body("x" * MAX_BODY)) == MAX_BODY


def test_an_excerpt_is_one_line_of_at_most_200_characters() -> None:
    assert excerpt("Line one\n\nline   two") == "Line one line two"
    assert excerpt("x" * 200) == "x" * 200
    cut = excerpt("word " * 60)
    assert len(cut) <= 200
    assert cut.endswith("word…")


async def test_the_routes_are_documented_in_the_openapi(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    task = "/api/v1/orgs/{org_id}/tasks/{task_ref}"
    operations = {
        ("get", f"{task}/comments"): "200",
        ("post", f"{task}/comments"): "201",
        ("patch", f"{task}/comments/{{comment_id}}"): "200",
        ("delete", f"{task}/comments/{{comment_id}}"): "204",
        ("get", f"{task}/activity"): "200",
    }
    for (method, path), success in operations.items():
        operation = spec["paths"][path][method]
        assert operation["tags"] == ["tasks"]
        assert operation["summary"]
        assert {success, "404"} <= set(operation["responses"])
        assert operation["security"] == [{"HTTPBearer": []}]
        headers = {p["name"] for p in operation["parameters"] if p["in"] == "header"}
        assert ("Idempotency-Key" in headers) == (method in ("post", "patch")), (method, path)
    schemas = spec["components"]["schemas"]
    assert schemas["CommentCreate"]["additionalProperties"] is False
    # The limit holds after trimming: a pattern states it; `maxLength` bounds the text as sent.
    assert f"{{0,{MAX_BODY - 2}}}" in schemas["CommentCreate"]["properties"]["body"]["pattern"]
    assert {"id", "kind", "actor_id", "data", "created_at"} == set(schemas["ActivityResponse"]["properties"])
