"""PostgreSQL: what a unit of work writes at commit, in one statement.

Its rows (`uow.insert`), outbox events and jobs become data-modifying CTEs of one statement, which
also sends the NOTIFY of each queue it fills (delivered to the workers of other processes when the
transaction commits, never if it rolls back): one round trip, where a statement each would cost one
round trip per table. Every table's rows are bound as one array per column and expanded with
`unnest(...) WITH ORDINALITY`, so a statement has one shape for any number of rows: SQLAlchemy
compiles it once (a multi-row VALUES is compiled anew on every execution), and rows keep their order
(an outbox's positions follow the order events were published).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from sqlalchemy import (
    ColumnElement,
    Insert,
    Select,
    Table,
    bindparam,
    column,
    func,
    insert,
    literal_column,
    select,
)
from sqlalchemy.dialects import postgresql as pg

from splitstone.kernel.db import Rows
from splitstone.kernel.messaging.tables import jobs, outbox
from splitstone.kernel.messaging.wakeups import CHANNEL, JOBS, OUTBOX

_EVENT_COLUMNS = tuple(
    c.name
    for c in outbox.c
    if c.name not in {"position", "published_at", "attempts", "next_attempt_at", "last_error"}
)
_JOB_COLUMNS = tuple(c.name for c in jobs.c if c.name not in {"finished_at", "last_error"})

_I = TypeVar("_I", bound=Insert)
_Shape = tuple[tuple[tuple[Table, tuple[str, ...]], ...], bool, bool]
_MAX_SHAPES = 256  # the shapes a build uses are few (its tables, and which queues a commit fills)
_statements: dict[_Shape, Select[Any]] = {}


def staging(
    schema: str,
    rows: Sequence[Rows],
    event_rows: Sequence[Mapping[str, object]],
    job_rows: Sequence[Mapping[str, object]],
) -> tuple[Select[Any], dict[str, object]]:
    """The statement writing `rows`, the outbox rows and the job rows of `schema`, and its parameters."""
    tables: dict[tuple[Table, tuple[str, ...]], list[dict[str, Any]]] = {}
    for table, group in rows:
        tables.setdefault((table, tuple(group[0])), []).extend(group)
    shape: _Shape = (tuple(tables), bool(event_rows), bool(job_rows))
    statement = _statements.get(shape)
    if statement is None:
        statement = _statement(shape)
        if len(_statements) < _MAX_SHAPES:
            _statements[shape] = statement
    params: dict[str, object] = {}
    for i, ((_, columns), group) in enumerate(tables.items()):
        params.update(_arrays(f"rows{i}_", columns, group))
    if event_rows:
        params["wake_outbox"] = f"{schema}:{OUTBOX}"
        params.update(_arrays("event_", _EVENT_COLUMNS, event_rows))
    if job_rows:
        params["wake_jobs"] = f"{schema}:{JOBS}"
        params.update(_arrays("job_", _JOB_COLUMNS, job_rows))
    return statement, params


def _statement(shape: _Shape) -> Select[Any]:
    tables, events, scheduled = shape
    writes = [
        _from_arrays(insert(table), table, columns, f"rows{i}_").cte(f"rows{i}")
        for i, (table, columns) in enumerate(tables)
    ]
    wakeups: list[ColumnElement[Any]] = []
    if events:
        writes.append(_from_arrays(insert(outbox), outbox, _EVENT_COLUMNS, "event_").cte("staged_events"))
        wakeups.append(func.pg_notify(CHANNEL, bindparam("wake_outbox")))
    if scheduled:
        # A repeated (kind, idempotency key) is ignored: scheduling is idempotent.
        jobs_insert = _from_arrays(pg.insert(jobs), jobs, _JOB_COLUMNS, "job_").on_conflict_do_nothing()
        writes.append(jobs_insert.cte("staged_jobs"))
        wakeups.append(func.pg_notify(CHANNEL, bindparam("wake_jobs")))
    return select(*wakeups or [literal_column("1")]).add_cte(*writes)


def _from_arrays(statement: _I, table: Table, columns: Sequence[str], prefix: str) -> _I:
    """`INSERT INTO table (columns) SELECT ... FROM unnest(<one array per column>) WITH ORDINALITY`."""
    arrays = [bindparam(prefix + name, type_=pg.ARRAY(table.c[name].type)) for name in columns]
    unnested = (
        func.unnest(*arrays)
        .table_valued(*(column(name, table.c[name].type) for name in columns), with_ordinality="ordinal")
        .render_derived()
    )
    rows = select(*(unnested.c[name] for name in columns)).order_by(unnested.c.ordinal)
    return statement.from_select(list(columns), rows)


def _arrays(prefix: str, columns: Sequence[str], rows: Sequence[Mapping[str, object]]) -> dict[str, object]:
    return {prefix + name: [row[name] for row in rows] for name in columns}
