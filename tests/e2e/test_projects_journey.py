"""Projects over real HTTP against a running server: a team's tasks, up to the plan's limit.

An owner and the member they invited work in project WEB: numbered tasks, assignment, edits guarded by
ETags, the status workflow, comments, the activity log, filtered lists walked by cursor, full-text
search, the free plan's project limit (asked of billing), task usage metered by billing, and another
organization that cannot see any of it.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.e2e.conftest import RunningServer
from tests.e2e.support import Person, join, organization, person, problem
from tests.e2e.test_billing_journey import _until

pytestmark = pytest.mark.e2e


def _tasks_used(usage: dict[str, Any]) -> int | None:
    """This period's `tasks` metric in a usage summary (None until the summary has one)."""
    for metric in usage.get("metrics", []):
        if metric["metric"] == "tasks":
            return int(metric["value"])
    return None


async def _walk(http: httpx.AsyncClient, url: str, who: Person, **params: Any) -> list[str]:
    """Every task key of a list, one page at a time, following `next_cursor` to the end."""
    keys: list[str] = []
    cursor: str | None = None
    while True:
        query = {**params, "limit": 1, **({"cursor": cursor} if cursor else {})}
        page = await http.get(url, params=query, headers=who.auth)
        assert page.status_code == 200, page.text
        body = page.json()
        assert len(body["items"]) <= 1
        keys += [t["key"] for t in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            return keys
        assert len(keys) < 50, "the cursor never ends"


async def test_the_projects_journey(http: httpx.AsyncClient, server: RunningServer) -> None:
    # A team: Olga owns Acme and invites Max, who accepts from the email's link.
    olga = await person(http, server, "olga.projects@example.com")
    org_id = await organization(http, olga, "Acme")
    max_ = await join(http, server, olga, org_id, "max.projects@example.com")
    org = f"/api/v1/orgs/{org_id}"

    # Olga creates the WEB project; its key is stored upper case.
    created = await http.post(f"{org}/projects", json={"key": "web", "name": "Website"}, headers=olga.auth)
    assert created.status_code == 201, created.text
    assert created.json()["key"] == "WEB"
    assert created.headers["Location"].endswith(f"/projects/{created.json()['id']}")
    taken = await http.post(f"{org}/projects", json={"key": "WEB", "name": "Again"}, headers=olga.auth)
    problem(taken, 409, "project-key-taken")

    # Tasks are numbered in their project, one after the other.
    first = await http.post(
        f"{org}/projects/WEB/tasks",
        json={"title": "Fix the login redirect", "priority": "high", "labels": ["Bug", "auth"]},
        headers=olga.auth,
    )
    assert first.status_code == 201, first.text
    assert first.json()["key"] == "WEB-1"
    assert first.json()["labels"] == ["auth", "bug"]
    assert first.headers["ETag"] == '"1"'
    second = await http.post(
        f"{org}/projects/web/tasks",
        json={"title": "Checkout layout", "description": "The pay button overlaps the footer on phones."},
        headers=max_.auth,
    )
    assert second.status_code == 201, second.text
    assert second.json()["key"] == "WEB-2"
    third = await http.post(
        f"{org}/projects/WEB/tasks",
        json={"title": "Write the changelog", "labels": ["docs"]},
        headers=max_.auth,
    )
    assert third.json()["key"] == "WEB-3"

    # A task is found by its key, in any case, as by its id.
    by_key = await http.get(f"{org}/tasks/web-1", headers=max_.auth)
    assert by_key.status_code == 200, by_key.text
    assert by_key.json()["id"] == first.json()["id"]
    assert by_key.json()["title"] == "Fix the login redirect"
    assert by_key.headers["ETag"] == '"1"'
    problem(await http.get(f"{org}/tasks/WEB-99", headers=max_.auth), 404, "task-not-found")

    # Only a member of the organization can be assigned; Max can.
    stranger = await person(http, server, "sam@example.com")
    refused = await http.patch(
        f"{org}/tasks/WEB-1", json={"assignee_id": stranger.user_id}, headers=olga.auth
    )
    assert problem(refused, 422, "not-assignable")["assignee_id"] == stranger.user_id
    assigned = await http.patch(
        f"{org}/tasks/WEB-1", json={"assignee_id": max_.user_id}, headers={**olga.auth, "If-Match": '"1"'}
    )
    assert assigned.status_code == 200, assigned.text
    assert assigned.json()["assignee_id"] == max_.user_id
    assert assigned.headers["ETag"] == '"2"'

    # An edit based on what someone read before that change is refused, not applied over it.
    stale = await http.patch(
        f"{org}/tasks/WEB-1", json={"title": "Fix login"}, headers={**max_.auth, "If-Match": '"1"'}
    )
    mismatch = problem(stale, 412, "version-mismatch")
    assert (mismatch["expected_version"], mismatch["current_version"]) == (1, 2)
    assert (await http.get(f"{org}/tasks/WEB-1", headers=max_.auth)).json()[
        "title"
    ] == "Fix the login redirect"

    # The workflow: a task to do cannot be done before it is started.
    skipped = await http.patch(f"{org}/tasks/WEB-1", json={"status": "done"}, headers=max_.auth)
    assert problem(skipped, 409, "illegal-status-change")["allowed"] == ["canceled", "in_progress"]
    for status in ("in_progress", "done"):
        moved = await http.patch(f"{org}/tasks/WEB-1", json={"status": status}, headers=max_.auth)
        assert moved.status_code == 200, moved.text
        assert moved.json()["status"] == status
    assert moved.json()["version"] == 4

    # Comments, oldest first.
    for who, text in ((max_, "Fixed: the redirect keeps the query string."), (olga, "Thanks, verified.")):
        comment = await http.post(f"{org}/tasks/WEB-1/comments", json={"body": text}, headers=who.auth)
        assert comment.status_code == 201, comment.text
        assert comment.json()["author_id"] == who.user_id
    comments = await http.get(f"{org}/tasks/WEB-1/comments", headers=olga.auth)
    assert comments.status_code == 200, comments.text
    assert [(c["author_id"], c["body"]) for c in comments.json()["items"]] == [
        (max_.user_id, "Fixed: the redirect keeps the query string."),
        (olga.user_id, "Thanks, verified."),
    ]
    problem(
        await http.post(f"{org}/tasks/WEB-1/comments", json={"body": "   "}, headers=olga.auth),
        422,
        "validation-error",
    )

    # The task's activity tells its story, with who did what.
    activity = await http.get(f"{org}/tasks/WEB-1/activity", headers=olga.auth)
    assert activity.status_code == 200, activity.text
    story = [(a["kind"], a["actor_id"]) for a in activity.json()["items"]]
    assert story == [
        ("created", olga.user_id),
        ("assigned", olga.user_id),
        ("status_changed", max_.user_id),
        ("status_changed", max_.user_id),
        ("commented", max_.user_id),
        ("commented", olga.user_id),
    ]
    assert [a["data"] for a in activity.json()["items"][2:4]] == [
        {"from": "todo", "to": "in_progress"},
        {"from": "in_progress", "to": "done"},
    ]

    # Lists: filters combine, and a page of one walks the whole list by cursor, newest first.
    tasks = f"{org}/projects/WEB/tasks"
    assert await _walk(http, tasks, olga) == ["WEB-3", "WEB-2", "WEB-1"]
    assert await _walk(http, f"{org}/tasks", max_, status="todo") == ["WEB-3", "WEB-2"]
    assert await _walk(http, tasks, max_, assignee="me") == ["WEB-1"]
    assert await _walk(http, tasks, olga, assignee="none", label="docs") == ["WEB-3"]
    assert await _walk(http, tasks, olga, sort="priority") == ["WEB-1", "WEB-3", "WEB-2"]
    foreign_cursor = (await http.get(tasks, params={"limit": 1}, headers=olga.auth)).json()["next_cursor"]
    problem(
        await http.get(
            tasks, params={"limit": 1, "sort": "due", "cursor": foreign_cursor}, headers=olga.auth
        ),
        400,
        "invalid-cursor",
    )

    # Full-text search finds a task by words of its description, whole words in any case.
    found = await http.get(f"{org}/tasks", params={"q": "Footer PHONES"}, headers=olga.auth)
    assert found.status_code == 200, found.text
    assert [t["key"] for t in found.json()["items"]] == ["WEB-2"]
    none = await http.get(f"{org}/tasks", params={"q": "foot"}, headers=olga.auth)
    assert none.json()["items"] == []
    problem(await http.get(f"{org}/tasks", params={"q": "!!"}, headers=olga.auth), 422, "invalid-search")

    # The free plan allows 3 projects: billing says no to the fourth, naming the limit.
    for key in ("API", "OPS"):
        more = await http.post(f"{org}/projects", json={"key": key, "name": key}, headers=olga.auth)
        assert more.status_code == 201, more.text
    over = await http.post(f"{org}/projects", json={"key": "MOBILE", "name": "Apps"}, headers=olga.auth)
    limit = problem(over, 402, "entitlement-exceeded")
    assert (limit["key"], limit["limit"], limit["plan"]) == ("projects", 3, "free")
    assert "pro" in limit["upgrade_plans"]
    listed = await http.get(f"{org}/projects", headers=olga.auth)
    assert [p["key"] for p in listed.json()["items"]] == ["OPS", "API", "WEB"]

    # Billing meters the tasks created, reported by projects in the background.
    usage = await _until(http, f"{org}/billing/usage", olga.auth, lambda u: _tasks_used(u) == 3)
    [tasks_metric] = [m for m in usage["metrics"] if m["metric"] == "tasks"]
    assert (tasks_metric["entitlement"], tasks_metric["limit"]) == ("tasks_per_month", 500)

    # Another organization's member sees none of it: not the project, not the task, by key or by id.
    elsewhere = await organization(http, stranger, "Elsewhere")
    problem(await http.get(f"{org}/projects/WEB", headers=stranger.auth), 404, "organization-not-found")
    problem(await http.get(f"{org}/tasks/WEB-1", headers=stranger.auth), 404, "organization-not-found")
    problem(
        await http.get(f"/api/v1/orgs/{elsewhere}/tasks/{first.json()['id']}", headers=stranger.auth),
        404,
        "task-not-found",
    )
    problem(
        await http.get(f"/api/v1/orgs/{elsewhere}/projects/WEB", headers=stranger.auth),
        404,
        "project-not-found",
    )
