"""Task lists and search: filters, sorts and keyset pagination over the indexes of `storage.py`.

Every page is one indexed range read, from the first page to the last: the next page starts strictly
after the last row of this one on (sort value, id), a row-value comparison that both databases answer
from the `ix_tasks_<scope>_<sort>` index, which ends in `id`. Never OFFSET.

Tasks without a due date sort last, in either order, on both databases (PostgreSQL and SQLite place
nulls differently): a due-date list reads the dated tasks first, `due_date IS NOT NULL` and
`(due_date, id) > (:due, :id)`, and then the undated ones, `due_date IS NULL AND id > :id`. Both are
range reads of `ix_tasks_*_due`; a cursor names the part it stopped in.

Text search: on PostgreSQL the generated `tasks.search` tsvector (GIN index), on SQLite the FTS5 table
`tasks_fts`; both made by migration 0002 and outside the table metadata, so named here as text. The
user's words are quoted one by one, so neither parser sees an operator: every word must appear.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum
from typing import Any, Literal, NamedTuple, TypeVar
from uuid import UUID

from sqlalchemy import ColumnElement, RowMapping, Select, bindparam, literal, select, text, tuple_
from sqlalchemy.ext.asyncio import AsyncConnection

from splitstone.kernel.clock import Clock
from splitstone.kernel.db import UnitOfWork, UnitOfWorkFactory
from splitstone.kernel.errors import InvalidInput
from splitstone.kernel.pagination import (
    InvalidCursor,
    KeyValue,
    decode_keyset_cursor,
    encode_keyset_cursor,
)
from splitstone.kernel.reads import PreparedQuery
from splitstone.modules.projects.api import TaskStatus
from splitstone.modules.projects.projects import find_project
from splitstone.modules.projects.storage import projects, task_labels, tasks
from splitstone.modules.projects.tasks import Task, task_of

MAX_PAGE = 100
MAX_QUERY = 200  # characters of a search
MAX_TERMS = 16  # words of a search

# A word: letters and digits (both full-text parsers split on everything else).
_WORD = re.compile(r"[^\W_]+")


class TaskSort(StrEnum):
    CREATED = "created"
    UPDATED = "updated"
    PRIORITY = "priority"
    DUE = "due"


class SortOrder(StrEnum):
    ASC = "asc"
    DESC = "desc"


DEFAULT_ORDER: dict[TaskSort, SortOrder] = {
    TaskSort.CREATED: SortOrder.DESC,  # newest first
    TaskSort.UPDATED: SortOrder.DESC,  # most recently changed first
    TaskSort.PRIORITY: SortOrder.DESC,  # urgent first, none last
    TaskSort.DUE: SortOrder.ASC,  # soonest first; undated last
}

_SORT_COLUMN = {
    TaskSort.CREATED: tasks.c.id,  # UUIDv7: creation order
    TaskSort.UPDATED: tasks.c.updated_at,
    TaskSort.PRIORITY: tasks.c.priority,
    TaskSort.DUE: tasks.c.due_date,
}

Unassigned = Literal["none"]


class InvalidSearch(InvalidInput):
    code = "invalid-search"
    title = "Invalid search"


class TaskPage(NamedTuple):
    items: list[Task]
    next_cursor: str | None


@dataclass(frozen=True)
class _Position:
    """Where a page starts: after the row (value, id); `undated`: in the due list's undated part."""

    value: Any
    id: UUID
    undated: bool = False


def search_terms(q: str) -> list[str]:
    """The words of a search, lower-cased; `InvalidSearch` (422) when there are none or too many."""
    if len(q) > MAX_QUERY:
        raise InvalidSearch(f"A search has at most {MAX_QUERY} characters.", field="q")
    terms = [word.lower() for word in _WORD.findall(q)]
    if not terms:
        raise InvalidSearch("The search has no word to look for (letters or digits).", field="q")
    if len(terms) > MAX_TERMS:
        raise InvalidSearch(f"A search has at most {MAX_TERMS} words.", field="q")
    return terms


def _match_expression(terms: list[str]) -> str:
    """`"a" "b"`: each word quoted, so FTS5 and websearch_to_tsquery read phrases, never operators."""
    return " ".join(f'"{term}"' for term in terms)


class TaskLists:
    """Lists of an organization's tasks (or a project's), filtered, sorted and searched, page by page.

    Authorization is the caller's (the routes check `tasks:read`); every query is scoped by `org_id`.
    """

    def __init__(self, uow: UnitOfWorkFactory, clock: Clock) -> None:
        self._uow = uow
        self._clock = clock

    async def page(
        self,
        org_id: UUID,
        *,
        project_id: UUID | str | None = None,
        status: list[TaskStatus] | None = None,
        assignee_id: UUID | Unassigned | None = None,
        label: str | None = None,
        due_before: date | None = None,
        due_after: date | None = None,
        q: str | None = None,
        sort: TaskSort | str = TaskSort.CREATED,
        order: SortOrder | str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> TaskPage:
        """One page of tasks and the cursor of the next (None on the last page).

        `project_id` is a project's id or key (404 `project-not-found` if not the organization's);
        `assignee_id` "none" lists unassigned tasks; `due_before`/`due_after` are exclusive; `q` needs
        every word in the title or description. A cursor is valid only with the same sort, order and
        filters it came from (else 400 `invalid-cursor`).
        """
        sort = _as(TaskSort, sort, "sort")
        order = DEFAULT_ORDER[sort] if order is None else _as(SortOrder, order, "order")
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidInput(f"limit is 1 to {MAX_PAGE}.", field="limit")
        terms = search_terms(q) if q is not None else None
        label = label.strip().lower() if label is not None else None
        statuses = sorted({_as(TaskStatus, s, "status") for s in status}) if status else None

        async with self._uow(read_only=True) as uow:
            session = uow.session
            project: UUID | None = None
            project_key: str | None = None
            if project_id is not None:
                project, project_key = await _list_project(uow, org_id, project_id)
            scope = json.dumps(
                [
                    sort,
                    order,
                    str(org_id),
                    str(project) if project else None,
                    statuses,
                    str(assignee_id) if assignee_id is not None else None,
                    label,
                    due_before.isoformat() if due_before else None,
                    due_after.isoformat() if due_after else None,
                    terms,
                ]
            )
            start = _decode(cursor, sort, scope) if cursor is not None else None

            query = select(tasks).where(tasks.c.org_id == org_id)
            if project is not None:
                query = query.where(tasks.c.project_id == project)
            if statuses:
                query = query.where(tasks.c.status.in_([s.value for s in statuses]))
            if assignee_id == "none":
                query = query.where(tasks.c.assignee_id.is_(None))
            elif assignee_id is not None:
                query = query.where(tasks.c.assignee_id == assignee_id)
            if label is not None:
                query = query.join(
                    task_labels,
                    (task_labels.c.task_id == tasks.c.id)
                    & (task_labels.c.org_id == org_id)
                    & (task_labels.c.label == label),
                )
            if due_before is not None:
                query = query.where(tasks.c.due_date < due_before)
            if due_after is not None:
                query = query.where(tasks.c.due_date > due_after)
            if terms is not None:
                query = query.where(_search_clause(session.dialect.name, terms))

            rows = await _read(session, query, sort, order, start, limit + 1)
            if project is not None and project_key is not None:
                keys = {project: project_key}  # one project's list: every task has its key
            else:
                keys = await _project_keys(session, org_id, {row["project_id"] for row in rows[:limit]})

        items = [task_of(row, keys[row["project_id"]]) for row in rows[:limit]]
        next_cursor = None
        if len(rows) > limit:
            last = rows[limit - 1]
            next_cursor = encode_keyset_cursor(_cursor_value(sort, last), last["id"], scope=scope)
        return TaskPage(items, next_cursor)


# -- the query --------------------------------------------------------------------------------------------


_PROJECT_BY_ID = PreparedQuery(
    select(projects.c.id, projects.c.key).where(
        projects.c.id == bindparam("project_id"), projects.c.org_id == bindparam("org_id")
    )
)


async def _list_project(uow: UnitOfWork, org_id: UUID, ref: UUID | str) -> tuple[UUID, str]:
    """The id and key of the project a list is of, by its id or its key (as `find_project`)."""
    project_id = ref if isinstance(ref, UUID) else _as_uuid(ref)
    if project_id is not None:
        row = await uow.fetch_one(_PROJECT_BY_ID, project_id=project_id, org_id=org_id)
        if row is not None:
            return row["id"], row["key"]
    found = await find_project(uow.session, org_id, ref)  # by key, or its 404
    return found.id, found.key


def _as_uuid(value: str) -> UUID | None:
    try:
        return UUID(value)
    except ValueError:
        return None


async def _read(
    session: AsyncConnection,
    query: Select[Any],
    sort: TaskSort,
    order: SortOrder,
    start: _Position | None,
    count: int,
) -> list[RowMapping]:
    column = _SORT_COLUMN[sort]
    descending = order is SortOrder.DESC

    def ordered(q: Select[Any], *columns: Any) -> Select[Any]:
        return q.order_by(*(c.desc() if descending else c.asc() for c in columns))

    def after(columns: ColumnElement[Any], position: ColumnElement[Any]) -> ColumnElement[bool]:
        return columns < position if descending else columns > position

    if sort is TaskSort.CREATED:
        if start is not None:
            query = query.where(after(tasks.c.id, _literal_id(start.id)))
        return await _fetch(session, ordered(query, tasks.c.id).limit(count))

    if sort is not TaskSort.DUE:  # not null columns: one range
        if start is not None:
            query = query.where(
                after(tuple_(column, tasks.c.id), tuple_(_bound(column, start.value), _literal_id(start.id)))
            )
        return await _fetch(session, ordered(query, column, tasks.c.id).limit(count))

    # Due date: the dated tasks, then the undated ones (last in either order).
    rows: list[RowMapping] = []
    if start is None or not start.undated:
        dated = query.where(column.is_not(None))
        if start is not None:
            dated = dated.where(
                after(tuple_(column, tasks.c.id), tuple_(_bound(column, start.value), _literal_id(start.id)))
            )
        rows = await _fetch(session, ordered(dated, column, tasks.c.id).limit(count))
    if len(rows) < count:
        undated = query.where(column.is_(None))
        if start is not None and start.undated:
            undated = undated.where(after(tasks.c.id, _literal_id(start.id)))
        rows += await _fetch(session, ordered(undated, tasks.c.id).limit(count - len(rows)))
    return rows


async def _fetch(session: AsyncConnection, query: Select[Any]) -> list[RowMapping]:
    return list((await session.execute(query)).mappings().all())


def _bound(column: Any, value: Any) -> Any:
    return literal(value, column.type)


def _literal_id(value: UUID) -> Any:
    return literal(value, tasks.c.id.type)


def _search_clause(dialect: str, terms: list[str]) -> ColumnElement[bool]:
    expression = _match_expression(terms)
    if dialect == "postgresql":
        clause = text("tasks.search @@ websearch_to_tsquery('simple', :search_q)")
    else:
        clause = text("tasks.rowid IN (SELECT rowid FROM projects.tasks_fts WHERE tasks_fts MATCH :search_q)")
    return clause.bindparams(search_q=expression)  # type: ignore[return-value]


async def _project_keys(session: AsyncConnection, org_id: UUID, ids: set[UUID]) -> dict[UUID, str]:
    if not ids:
        return {}
    query = select(projects.c.id, projects.c.key).where(projects.c.org_id == org_id, projects.c.id.in_(ids))
    return {row.id: row.key for row in await session.execute(query)}


# -- cursors ----------------------------------------------------------------------------------------------


def _cursor_value(sort: TaskSort, row: RowMapping) -> KeyValue:
    value = row[_SORT_COLUMN[sort].name]
    if sort is TaskSort.CREATED:
        return None  # the id is the sort value
    if sort is TaskSort.PRIORITY:
        return int(value)
    if sort is TaskSort.UPDATED:
        return str(value.isoformat())
    return value.isoformat() if value is not None else None  # due: None in the undated part


def _decode(cursor: str, sort: TaskSort, scope: str) -> _Position:
    value, last_id = decode_keyset_cursor(cursor, scope=scope)
    try:
        if sort is TaskSort.CREATED:
            if value is not None:
                raise ValueError
            return _Position(None, last_id)
        if sort is TaskSort.PRIORITY:
            if not isinstance(value, int):
                raise ValueError
            return _Position(value, last_id)
        if sort is TaskSort.UPDATED:
            if not isinstance(value, str):
                raise ValueError
            moment = datetime.fromisoformat(value)
            if moment.tzinfo is None:
                raise ValueError
            return _Position(moment, last_id)
        if value is None:
            return _Position(None, last_id, undated=True)
        if not isinstance(value, str):
            raise ValueError
        return _Position(date.fromisoformat(value), last_id)
    except ValueError:
        raise InvalidCursor("The cursor is not one this API returned.") from None


_E = TypeVar("_E", bound=StrEnum)


def _as(kind: type[_E], raw: _E | str, field: str) -> _E:
    try:
        return kind(raw)
    except ValueError:
        allowed = ", ".join(member.value for member in kind)
        raise InvalidInput(f"{raw!r} is not a {field}: one of {allowed}.", field=field) from None
