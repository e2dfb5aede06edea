"""Task lists and search through the API: every filter and sort (and their combinations) against a
model computed in Python, full-text search on both databases, hostile searches, cursors, tenants."""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import httpx
import pytest
from sqlalchemy import select, update
from uuid6 import uuid7

from splitstone.kernel.container import Container
from splitstone.modules.projects.api import TaskStatus
from splitstone.modules.projects.storage import projects as projects_table
from splitstone.modules.projects.storage import task_labels, tasks
from tests.modules.auth.org_helpers import assert_problem, create_api_key
from tests.modules.projects.conftest import NewOrg, Org, make_project

T = TaskStatus
BASE_TIME = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)

# -- seeding tasks directly (the lists are what is tested here, not task creation) -----------------------


@dataclass
class Seed:
    """A task as the lists should see it; `insert_tasks` writes it (ids increase in seed order)."""

    title: str = "A task"
    description: str = ""
    status: TaskStatus = T.TODO
    priority: int = 0
    assignee_id: UUID | None = None
    due_date: date | None = None
    labels: list[str] = field(default_factory=list)
    updated_minutes: int = 0  # updated_at = created_at + this
    id: UUID = field(default_factory=uuid7)
    project_id: UUID | None = None
    created_at: datetime = BASE_TIME

    @property
    def updated_at(self) -> datetime:
        return self.created_at + timedelta(minutes=self.updated_minutes)


async def insert_project(container: Container, org_id: UUID, key: str = "WEB") -> UUID:
    """A project written directly (for tests that need no API: any org id will do)."""
    project_id = uuid7()
    async with container.units_of_work["projects"]() as uow:
        await uow.session.execute(
            projects_table.insert().values(
                id=project_id,
                org_id=org_id,
                key=key,
                name=key,
                description="",
                status="active",
                last_number=0,
                created_by=None,
                created_at=BASE_TIME,
                updated_at=BASE_TIME,
            )
        )
        await uow.commit()
    return project_id


async def insert_tasks(container: Container, org_id: UUID, project_id: UUID, seeds: list[Seed]) -> None:
    """Writes the seeds as tasks of the project (numbers after its last), with their labels."""
    if not seeds:
        return
    async with container.units_of_work["projects"]() as uow:
        session = uow.session
        last = (
            await session.execute(
                select(projects_table.c.last_number).where(projects_table.c.id == project_id)
            )
        ).scalar_one()
        rows, labels = [], []
        for number, seed in enumerate(seeds, start=last + 1):
            seed.project_id = project_id
            seed.created_at = BASE_TIME + timedelta(seconds=number)
            rows.append(
                {
                    "id": seed.id,
                    "org_id": org_id,
                    "project_id": project_id,
                    "number": number,
                    "title": seed.title,
                    "description": seed.description,
                    "status": seed.status.value,
                    "priority": seed.priority,
                    "assignee_id": seed.assignee_id,
                    "due_date": seed.due_date,
                    "labels": json.dumps(sorted(seed.labels)),
                    "created_by": None,
                    "created_at": seed.created_at,
                    "updated_at": seed.updated_at,
                    "version": 1,
                }
            )
            labels += [{"task_id": seed.id, "org_id": org_id, "label": label} for label in seed.labels]
        await session.execute(tasks.insert(), rows)
        if labels:
            await session.execute(task_labels.insert(), labels)
        await session.execute(
            update(projects_table)
            .where(projects_table.c.id == project_id)
            .values(last_number=last + len(seeds))
        )
        await uow.commit()


# -- the model: what a list should hold, in its order -----------------------------------------------------

DEFAULT_ORDER = {"created": "desc", "updated": "desc", "priority": "desc", "due": "asc"}


def expected(
    seeds: list[Seed], *, sort: str = "created", order: str | None = None, **filters: Any
) -> list[UUID]:
    """The ids a list with these filters and this sort holds, in order."""
    order = order or DEFAULT_ORDER[sort]
    matching = [s for s in seeds if _matches(s, **filters)]
    reverse = order == "desc"
    if sort == "due":
        dated = sorted((s for s in matching if s.due_date), key=lambda s: (s.due_date, s.id), reverse=reverse)
        undated = sorted((s for s in matching if not s.due_date), key=lambda s: s.id, reverse=reverse)
        return [s.id for s in [*dated, *undated]]
    keys = {
        "created": lambda s: (s.id,),
        "updated": lambda s: (s.updated_at, s.id),
        "priority": lambda s: (s.priority, s.id),
    }
    return [s.id for s in sorted(matching, key=keys[sort], reverse=reverse)]


def _matches(
    seed: Seed,
    *,
    project_id: UUID | None = None,
    status: list[TaskStatus] | None = None,
    assignee_id: UUID | str | None = None,
    label: str | None = None,
    due_before: date | None = None,
    due_after: date | None = None,
    words: list[str] | None = None,
) -> bool:
    text = f"{seed.title} {seed.description}".lower().split()
    return (
        (project_id is None or seed.project_id == project_id)
        and (not status or seed.status in status)
        and (
            assignee_id is None
            or (seed.assignee_id is None if assignee_id == "none" else seed.assignee_id == assignee_id)
        )
        and (label is None or label in seed.labels)
        and (due_before is None or (seed.due_date is not None and seed.due_date < due_before))
        and (due_after is None or (seed.due_date is not None and seed.due_date > due_after))
        and (words is None or all(w in text for w in words))
    )


# -- reading lists through the API ------------------------------------------------------------------------


async def list_all(
    client: httpx.AsyncClient, org: Org, params: dict[str, Any], *, path: str = "/tasks", limit: int = 3
) -> list[UUID]:
    """Every id of a list, following `next_cursor` page by page."""
    ids: list[UUID] = []
    cursor = None
    for _ in range(200):
        query = {**params, "limit": limit, **({"cursor": cursor} if cursor else {})}
        response = await client.get(f"{org.base}{path}", params=query, headers=org.owner.headers)
        assert response.status_code == 200, response.text
        body = response.json()
        assert len(body["items"]) <= limit
        ids += [UUID(item["id"]) for item in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            return ids
        assert body["items"], "a page with a next cursor is never empty"
    raise AssertionError("the list never ended")


WORDS = ["login", "redirect", "signup", "invoice", "export"]


def sample_seeds(owner: UUID, member: UUID) -> list[Seed]:
    """A varied set: every status, priority and assignee; some due dates (ties too), labels and words."""
    seeds = []
    for i in range(26):
        seeds.append(
            Seed(
                title=f"{WORDS[i % 5].capitalize()} task {i}",
                description=f"About {WORDS[(i * 2) % 5]} and more" if i % 3 else "",
                status=list(T)[i % 4],
                priority=(i * 3) % 5,
                assignee_id=[owner, member, None][i % 3],
                due_date=None if i % 4 == 0 else date(2026, 4, 1) + timedelta(days=i % 6),
                labels=[["bug"], ["bug", "ui"], [], ["ui"]][i % 4],
                updated_minutes=(i * 7) % 11,  # ties across tasks: the id breaks them
            )
        )
    return seeds


@pytest.fixture
async def org(new_org: NewOrg, client: httpx.AsyncClient) -> Org:
    made = await new_org()
    await make_project(client, made, "WEB", "Website")
    await make_project(client, made, "API", "Api")
    return made


async def project_ids(container: Container, org: Org) -> dict[str, UUID]:
    async with container.units_of_work["projects"](read_only=True) as uow:
        found = await uow.session.execute(
            select(projects_table.c.key, projects_table.c.id).where(projects_table.c.org_id == org.id)
        )
        return {row.key: row.id for row in found}


@pytest.fixture
async def seeded(container: Container, org: Org) -> tuple[Org, list[Seed], dict[str, UUID]]:
    """The org with sample tasks in WEB and API, and another org with look-alike tasks."""
    ids = await project_ids(container, org)
    member = uuid4()
    seeds = sample_seeds(org.owner.user_id, member)
    await insert_tasks(container, org.id, ids["WEB"], seeds[::2])
    await insert_tasks(container, org.id, ids["API"], seeds[1::2])
    seeds.sort(key=lambda s: s.id)
    # Another tenant's tasks match every filter; they must never show.
    other_org = uuid4()
    other_project = await insert_project(container, other_org)
    await insert_tasks(container, other_org, other_project, sample_seeds(org.owner.user_id, member))
    return org, seeds, ids


# -- filters and sorts ------------------------------------------------------------------------------------


async def test_every_sort_and_order_lists_every_task_once_in_order(
    client: httpx.AsyncClient, seeded: tuple[Org, list[Seed], dict[str, UUID]]
) -> None:
    org, seeds, _ = seeded
    for sort, order in itertools.product(["created", "updated", "priority", "due"], [None, "asc", "desc"]):
        params = {"sort": sort, **({"order": order} if order else {})}
        assert await list_all(client, org, params) == expected(seeds, sort=sort, order=order), params


async def test_each_filter_and_their_combinations_with_each_sort(
    client: httpx.AsyncClient, seeded: tuple[Org, list[Seed], dict[str, UUID]]
) -> None:
    org, seeds, ids = seeded
    owner = org.owner.user_id
    member = next(s.assignee_id for s in seeds if s.assignee_id not in (None, owner))
    filters: list[tuple[dict[str, Any], dict[str, Any]]] = [  # (query, model)
        ({"status": "todo"}, {"status": [T.TODO]}),
        ({"status": ["todo", "done"]}, {"status": [T.TODO, T.DONE]}),
        ({"assignee": "me"}, {"assignee_id": owner}),
        ({"assignee": str(member)}, {"assignee_id": member}),
        ({"assignee": "none"}, {"assignee_id": "none"}),
        ({"label": "bug"}, {"label": "bug"}),
        ({"label": "UI "}, {"label": "ui"}),
        ({"due_before": "2026-04-03"}, {"due_before": date(2026, 4, 3)}),
        ({"due_after": "2026-04-03"}, {"due_after": date(2026, 4, 3)}),
        ({"q": "login"}, {"words": ["login"]}),
        (
            {"status": ["todo", "in_progress"], "label": "bug", "assignee": "none"},
            {"status": [T.TODO, T.IN_PROGRESS], "label": "bug", "assignee_id": "none"},
        ),
        (
            {"due_after": "2026-04-01", "due_before": "2026-04-06", "label": "ui", "q": "signup"},
            {
                "due_after": date(2026, 4, 1),
                "due_before": date(2026, 4, 6),
                "label": "ui",
                "words": ["signup"],
            },
        ),
        (
            {"assignee": "me", "q": "export", "status": "in_progress"},
            {"assignee_id": owner, "words": ["export"], "status": [T.IN_PROGRESS]},
        ),
    ]
    for (query, model), sort in itertools.product(filters, ["created", "updated", "priority", "due"]):
        want = expected(seeds, sort=sort, **model)
        assert await list_all(client, org, {**query, "sort": sort}) == want, (query, sort)
        # The same in one project, by key or by id.
        in_web = expected(seeds, sort=sort, project_id=ids["WEB"], **model)
        assert await list_all(client, org, {**query, "sort": sort}, path="/projects/web/tasks") == in_web
        path = f"/projects/{ids['API']}/tasks"
        in_api = expected(seeds, sort=sort, order="asc", project_id=ids["API"], **model)
        assert await list_all(client, org, {**query, "sort": sort, "order": "asc"}, path=path) == in_api


async def test_a_task_item_has_the_task_resources_fields(
    client: httpx.AsyncClient, seeded: tuple[Org, list[Seed], dict[str, UUID]]
) -> None:
    org, seeds, ids = seeded
    response = await client.get(
        f"{org.base}/projects/WEB/tasks",
        params={"limit": 1, "sort": "created", "order": "asc"},
        headers=org.owner.headers,
    )
    assert response.status_code == 200, response.text
    (item,) = response.json()["items"]
    first = next(s for s in seeds if s.project_id == ids["WEB"])
    assert item["id"] == str(first.id)
    assert item["key"] == "WEB-1"
    assert item["project_key"] == "WEB"
    assert item["number"] == 1
    assert item["project_id"] == str(ids["WEB"])
    assert item["org_id"] == str(org.id)
    assert item["title"] == first.title
    assert item["description"] == first.description
    assert item["status"] == first.status.value
    assert item["labels"] == sorted(first.labels)
    assert item["version"] == 1
    assert item["created_by"] is None
    assert {"priority", "assignee_id", "due_date", "created_at", "updated_at"} <= item.keys()


async def test_tasks_created_through_the_api_are_listed_and_found(
    client: httpx.AsyncClient, org: Org
) -> None:
    for title in ["Fix the login redirect", "Export invoices as CSV"]:
        response = await client.post(
            f"{org.base}/projects/WEB/tasks",
            json={"title": title, "description": "Reported by support", "labels": ["Bug"]},
            headers=org.owner.headers,
        )
        assert response.status_code == 201, response.text
    listed = (await client.get(f"{org.base}/tasks", headers=org.owner.headers)).json()
    assert [t["key"] for t in listed["items"]] == ["WEB-2", "WEB-1"]
    found = await client.get(f"{org.base}/tasks", params={"q": "LOGIN"}, headers=org.owner.headers)
    assert [t["key"] for t in found.json()["items"]] == ["WEB-1"]
    found = await client.get(f"{org.base}/tasks", params={"q": "support csv"}, headers=org.owner.headers)
    assert [t["key"] for t in found.json()["items"]] == ["WEB-2"]
    # A change of title is searchable at once (PostgreSQL's generated column, SQLite's trigger).
    changed = await client.patch(
        f"{org.base}/tasks/WEB-2", json={"title": "Download receipts"}, headers=org.owner.headers
    )
    assert changed.status_code == 200, changed.text
    assert (await client.get(f"{org.base}/tasks", params={"q": "csv"}, headers=org.owner.headers)).json()[
        "items"
    ] == []
    found = await client.get(f"{org.base}/tasks", params={"q": "receipts"}, headers=org.owner.headers)
    assert [t["key"] for t in found.json()["items"]] == ["WEB-2"]
    deleted = await client.delete(f"{org.base}/tasks/WEB-2", headers=org.owner.headers)
    assert deleted.status_code == 204, deleted.text
    found = await client.get(f"{org.base}/tasks", params={"q": "receipts"}, headers=org.owner.headers)
    assert found.json()["items"] == []


# -- search -----------------------------------------------------------------------------------------------


async def test_search_matches_whole_words_of_title_and_description_in_any_case(
    client: httpx.AsyncClient, container: Container, org: Org
) -> None:
    ids = await project_ids(container, org)
    seeds = [
        Seed(title="Fix the login redirect", description="Users land on the home page"),
        Seed(title="Signup form", description="The LOGIN button is hidden on mobile"),
        Seed(title="Café menu", description="front-end des crêpes"),
        Seed(title="Logins are slow", description=""),
        Seed(title="Ship v2 release", description="see RFC 9457"),
    ]
    await insert_tasks(container, org.id, ids["WEB"], seeds)

    async def search(q: str) -> list[str]:
        response = await client.get(
            f"{org.base}/tasks", params={"q": q, "order": "asc"}, headers=org.owner.headers
        )
        assert response.status_code == 200, response.text
        return [item["title"] for item in response.json()["items"]]

    assert await search("login") == ["Fix the login redirect", "Signup form"]  # not "Logins"
    assert await search("Login HIDDEN") == ["Signup form"]  # every word, across title and description
    assert await search("redirect home") == ["Fix the login redirect"]
    assert await search("login missing") == []
    assert await search("café") == ["Café menu"]
    assert await search("crêpes front") == ["Café menu"]
    assert await search("v2") == ["Ship v2 release"]
    assert await search("9457") == ["Ship v2 release"]
    # Operators of either syntax are words like any other.
    assert await search("login OR hidden") == []
    assert await search("-login redirect") == ["Fix the login redirect"]
    assert await search('"users land"') == ["Fix the login redirect"]


HOSTILE_SEARCHES = [
    "NEAR(",
    "AND OR",
    "login AND",
    "NOT login",
    "title:login",
    "login*",
    "^login",
    '"login',
    "(login",
    "login)",
    "a'b",
    "x\\y",
    "100%",
    "<script>",
    "🙂 login",
    "NEAR(login redirect, 2)",
    "{title description}: login",
]
WORDLESS_SEARCHES = ['"', "*", "   ", "", "()", "-", ":", "🙂", "^*-", "___"]


async def test_hostile_searches_are_answered_and_wordless_ones_are_422(
    client: httpx.AsyncClient, org: Org
) -> None:
    for q in HOSTILE_SEARCHES:
        response = await client.get(f"{org.base}/tasks", params={"q": q}, headers=org.owner.headers)
        assert response.status_code == 200, (q, response.text)
    for q in WORDLESS_SEARCHES:
        response = await client.get(f"{org.base}/tasks", params={"q": q}, headers=org.owner.headers)
        assert_problem(response, 422, "invalid-search")


async def test_a_search_too_long_is_422(client: httpx.AsyncClient, org: Org) -> None:
    response = await client.get(f"{org.base}/tasks", params={"q": "word " * 41}, headers=org.owner.headers)
    assert response.status_code == 422
    response = await client.get(f"{org.base}/tasks", params={"q": "w " * 17}, headers=org.owner.headers)
    assert_problem(response, 422, "invalid-search")


# -- cursors and limits -----------------------------------------------------------------------------------


async def test_bad_cursors_are_400(
    client: httpx.AsyncClient, seeded: tuple[Org, list[Seed], dict[str, UUID]]
) -> None:
    org, _, _ = seeded

    async def page(**params: Any) -> httpx.Response:
        return await client.get(f"{org.base}/tasks", params={"limit": 2, **params}, headers=org.owner.headers)

    for garbage in ["nope", "AAAA", "!!!", "eyJhIjoxfQ", "WzEsMiwzXQ", "x" * 400]:
        assert_problem(await page(cursor=garbage), 400, "invalid-cursor")
    created = (await page(sort="created")).json()["next_cursor"]
    due = (await page(sort="due")).json()["next_cursor"]
    labelled = (await page(label="bug")).json()["next_cursor"]
    assert (await page(sort="created", cursor=created)).status_code == 200
    assert (await page(sort="due", cursor=due)).status_code == 200
    for params in [
        {"sort": "due", "cursor": created},
        {"sort": "priority", "cursor": created},
        {"sort": "created", "cursor": due},
        {"sort": "created", "order": "asc", "cursor": created},
        {"sort": "created", "cursor": labelled},
        {"sort": "created", "label": "ui", "cursor": labelled},
        {"sort": "created", "q": "login", "cursor": created},
    ]:
        assert_problem(await page(**params), 400, "invalid-cursor")
    # Another project's (or another organization's) list refuses it too.
    other = await client.get(
        f"{org.base}/projects/WEB/tasks", params={"limit": 2, "cursor": created}, headers=org.owner.headers
    )
    assert_problem(other, 400, "invalid-cursor")


BAD_PARAMETERS: list[tuple[dict[str, Any], str]] = [
    ({"limit": 101}, "validation-error"),
    ({"limit": 0}, "validation-error"),
    ({"sort": "title"}, "validation-error"),
    ({"order": "up"}, "validation-error"),
    ({"status": "open"}, "validation-error"),
    ({"due_before": "soon"}, "validation-error"),
    ({"assignee": "somebody"}, "invalid-input"),
]


async def test_bad_parameters_are_422(client: httpx.AsyncClient, org: Org) -> None:
    for params, code in BAD_PARAMETERS:
        response = await client.get(f"{org.base}/tasks", params=params, headers=org.owner.headers)
        assert_problem(response, 422, code)


async def test_the_limit_defaults_to_50_and_goes_up_to_100(
    client: httpx.AsyncClient, container: Container, org: Org
) -> None:
    ids = await project_ids(container, org)
    await insert_tasks(container, org.id, ids["WEB"], [Seed(title=f"T{i}") for i in range(120)])
    first = (await client.get(f"{org.base}/tasks", headers=org.owner.headers)).json()
    assert len(first["items"]) == 50
    assert first["next_cursor"]
    full = (await client.get(f"{org.base}/tasks", params={"limit": 100}, headers=org.owner.headers)).json()
    assert len(full["items"]) == 100
    rest = await client.get(
        f"{org.base}/tasks", params={"limit": 100, "cursor": full["next_cursor"]}, headers=org.owner.headers
    )
    assert len(rest.json()["items"]) == 20
    assert rest.json()["next_cursor"] is None


# -- tenants and permissions ------------------------------------------------------------------------------


async def test_another_organizations_tasks_and_projects_are_never_listed(
    client: httpx.AsyncClient, new_org: NewOrg, container: Container, org: Org
) -> None:
    other = await new_org("Globex")
    await make_project(client, other, "WEB", "Their website")
    other_ids = await project_ids(container, other)
    await insert_tasks(container, other.id, other_ids["WEB"], [Seed(title="Secret login plan")] * 1)
    for params in [{}, {"q": "login"}, {"assignee": "none"}]:
        mine = await client.get(f"{org.base}/tasks", params=params, headers=org.owner.headers)
        assert mine.json()["items"] == []
    # Their project, by id or key, is not found in my organization; their org is not mine to read.
    by_id = await client.get(f"{org.base}/projects/{other_ids['WEB']}/tasks", headers=org.owner.headers)
    assert_problem(by_id, 404, "project-not-found")
    assert_problem(
        await client.get(f"{org.base}/projects/NOPE/tasks", headers=org.owner.headers),
        404,
        "project-not-found",
    )
    assert_problem(
        await client.get(f"{org.base}/projects/not a key/tasks", headers=org.owner.headers),
        404,
        "project-not-found",
    )
    theirs = await client.get(f"{other.base}/tasks", headers=org.owner.headers)
    assert theirs.status_code == 404


async def test_a_member_reads_lists_and_an_api_key_cannot_say_me(client: httpx.AsyncClient, org: Org) -> None:
    member = await org.member("member")
    assert (await client.get(f"{org.base}/tasks", headers=member.headers)).status_code == 200
    assert (await client.get(f"{org.base}/tasks")).status_code == 401
    key = await create_api_key(client, org.owner, str(org.id), scopes=["tasks:read"])
    headers = {"Authorization": f"Bearer {key['secret']}"}
    assert (await client.get(f"{org.base}/tasks", headers=headers)).status_code == 200
    assert_problem(
        await client.get(f"{org.base}/tasks", params={"assignee": "me"}, headers=headers),
        422,
        "invalid-input",
    )
