"""Keyset pagination as a property: with any page size, sort, order and filters, paging through a
list gives every matching task exactly once, in order, even while tasks are created between pages.

Tasks created meanwhile may or may not show (depending on where they sort), but none of the tasks
that existed at the start is repeated or skipped. Each example uses an organization of its own.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any
from uuid import UUID, uuid4

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from splitstone.kernel.container import Container
from splitstone.modules.projects.api import TaskStatus
from splitstone.modules.projects.lists import TaskSort
from splitstone.modules.projects.service import ProjectsService
from tests.modules.projects.test_task_lists_api import Seed, expected, insert_project, insert_tasks

ASSIGNEES = [uuid4(), uuid4()]
WORDS = ["alpha", "beta", "gamma"]
DAYS = [date(2026, 5, 1) + timedelta(days=n) for n in range(4)]

seeds = st.builds(
    Seed,
    title=st.sampled_from(WORDS),
    description=st.sampled_from(["", *WORDS]),
    status=st.sampled_from(list(TaskStatus)),
    priority=st.integers(0, 4),
    assignee_id=st.sampled_from([None, *ASSIGNEES]),
    due_date=st.sampled_from([None, *DAYS]),
    labels=st.sampled_from([[], ["x"], ["x", "y"]]),
    updated_minutes=st.integers(0, 3),
)

# (what the service receives, what the model checks)
filters = st.sampled_from(
    [
        ({}, {}),
        ({"status": [TaskStatus.TODO, TaskStatus.DONE]}, {"status": [TaskStatus.TODO, TaskStatus.DONE]}),
        ({"assignee_id": ASSIGNEES[0]}, {"assignee_id": ASSIGNEES[0]}),
        ({"assignee_id": "none"}, {"assignee_id": "none"}),
        ({"label": "x"}, {"label": "x"}),
        ({"due_before": DAYS[2]}, {"due_before": DAYS[2]}),
        ({"due_after": DAYS[0]}, {"due_after": DAYS[0]}),
        ({"q": "beta"}, {"words": ["beta"]}),
        ({"label": "y", "q": "alpha"}, {"label": "y", "words": ["alpha"]}),
    ]
)


def sort_key(sort: str, seed: Seed) -> tuple[Any, ...]:
    if sort == "due":  # undated last, whatever the order: compared separately below
        return (seed.due_date is None, seed.due_date or date.min, seed.id)
    return {
        "created": (seed.id,),
        "updated": (seed.updated_at, seed.id),
        "priority": (seed.priority, seed.id),
    }[sort]


@settings(
    max_examples=30,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    initial=st.lists(seeds, max_size=14),
    sort=st.sampled_from([s.value for s in TaskSort]),
    order=st.sampled_from([None, "asc", "desc"]),
    chosen=filters,
    limit=st.integers(1, 5),
    arrivals=st.lists(st.lists(seeds, max_size=3), max_size=4),
)
async def test_paging_gives_every_task_that_existed_once_in_order(
    container: Container,
    projects: ProjectsService,
    initial: list[Seed],
    sort: str,
    order: str | None,
    chosen: tuple[dict[str, Any], dict[str, Any]],
    limit: int,
    arrivals: list[list[Seed]],
) -> None:
    params, model = chosen
    org_id = uuid4()
    project_id = await insert_project(container, org_id)
    initial = [Seed(**{**vars(s), "id": Seed().id}) for s in initial]  # fresh ids, increasing
    await insert_tasks(container, org_id, project_id, initial)
    by_id = {s.id: s for s in initial}

    listed: list[UUID] = []
    cursor = None
    for page_number in range(100):
        page = await projects.lists.page(org_id, sort=sort, order=order, limit=limit, cursor=cursor, **params)
        assert len(page.items) <= limit
        listed += [task.id for task in page.items]
        if page.next_cursor is None:
            break
        assert page.items
        cursor = page.next_cursor
        if page_number < len(arrivals):  # others create tasks between two pages
            new = [Seed(**{**vars(s), "id": Seed().id}) for s in arrivals[page_number]]
            await insert_tasks(container, org_id, project_id, new)
            by_id |= {s.id: s for s in new}
    else:
        raise AssertionError("the list never ended")

    assert len(listed) == len(set(listed)), "a task was listed twice"
    # Every task of the start that matches, exactly once and in order; the new ones do not disturb it.
    from_the_start = [task_id for task_id in listed if task_id in {s.id for s in initial}]
    assert from_the_start == expected(initial, sort=sort, order=order, **model)
    # Whatever was listed matches the filters and is in the list's order.
    assert all(
        task_id in expected(list(by_id.values()), sort=sort, order=order, **model) for task_id in listed
    )
    keys = [sort_key(sort, by_id[task_id]) for task_id in listed]
    descending = (order or ("asc" if sort == "due" else "desc")) == "desc"
    if sort == "due":
        dated = [k for k in keys if not k[0]]
        assert keys == dated + [k for k in keys if k[0]], "undated tasks come last"
        undated = [k for k in keys if k[0]]
        assert dated == sorted(dated, reverse=descending)
        assert undated == sorted(undated, reverse=descending)
    else:
        assert keys == sorted(keys, reverse=descending)
