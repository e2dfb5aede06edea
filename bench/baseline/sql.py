"""Every statement the baseline runs. asyncpg prepares each once per connection and reuses it."""

from __future__ import annotations

ROLE = "SELECT role FROM auth.memberships WHERE org_id = $1 AND user_id = $2"
SESSION = "SELECT revoked_at, expires_at FROM auth.sessions WHERE id = $1 AND user_id = $2"
USER = "SELECT id, email, display_name, email_verified_at, created_at FROM auth.users WHERE id = $1"

_TASK = (
    "t.id, t.org_id, t.project_id, t.number, t.title, t.description, t.status, t.priority, t.assignee_id, "
    "t.due_date, t.labels, t.created_by, t.created_at, t.updated_at, t.version"
)
_TASK_AND_KEY = (
    f"SELECT {_TASK}, p.key AS project_key "
    "FROM projects.tasks t JOIN projects.projects p ON p.id = t.project_id"
)
TASK_BY_ID = f"{_TASK_AND_KEY} WHERE t.org_id = $1 AND t.id = $2"
TASK_BY_KEY = f"{_TASK_AND_KEY} WHERE p.org_id = $1 AND p.key = $2 AND t.number = $3"

PROJECT_BY_ID = "SELECT id, key, status FROM projects.projects WHERE org_id = $1 AND id = $2"
PROJECT_BY_KEY = "SELECT id, key, status FROM projects.projects WHERE org_id = $1 AND key = $2"


def task_page(*, search: bool, after: bool, descending: bool) -> str:
    """A project's tasks newest (or oldest) first: one range read of ix_tasks_project_created."""
    where = ["t.org_id = $1", "t.project_id = $2"]
    if search:
        where.append(f"t.search @@ websearch_to_tsquery('simple', ${len(where) + 1})")
    if after:
        where.append(f"t.id {'<' if descending else '>'} ${len(where) + 1}")
    order = "DESC" if descending else "ASC"
    return (
        f"SELECT {_TASK} FROM projects.tasks t WHERE {' AND '.join(where)} "
        f"ORDER BY t.id {order} LIMIT ${len(where) + 1}"
    )


# Billing: the organization's plan (cached), and this period's usage when the plan limits it.
BILLING_STATE = (
    "SELECT s.status, s.current_period_start, s.current_period_end, v.code, v.definition "
    "FROM billing.subscriptions s JOIN billing.plan_versions v ON v.id = s.plan_version_id "
    "WHERE s.org_id = $1"
)
USAGE_COUNT = (
    "SELECT count(*) FROM billing.usage_events "
    "WHERE org_id = $1 AND metric = $2 AND occurred_at >= $3 AND occurred_at < $4"
)
IS_MEMBER = "SELECT 1 FROM auth.memberships WHERE org_id = $1 AND user_id = $2"

# The create, in one transaction. The UPDATE takes the project's row lock (numbers never repeat) and
# returns its status under that lock (an archive committed meanwhile wins).
NEXT_NUMBER = (
    "UPDATE projects.projects SET last_number = last_number + 1 WHERE id = $1 AND org_id = $2 "
    "RETURNING last_number, status"
)
INSERT_TASK = (
    "INSERT INTO projects.tasks (id, org_id, project_id, number, title, description, status, priority, "
    "assignee_id, due_date, labels, created_by, created_at, updated_at, version) "
    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $13, 1)"
)
INSERT_LABELS = (
    "INSERT INTO projects.task_labels (task_id, org_id, label) SELECT $1, $2, unnest($3::varchar[])"
)
INSERT_WATCHERS = (
    "INSERT INTO projects.watchers (task_id, user_id, org_id, created_at) "
    "SELECT $1, unnest($2::uuid[]), $3, $4 ON CONFLICT DO NOTHING"
)
INSERT_ACTIVITY = (
    "INSERT INTO projects.activity (id, org_id, task_id, actor_id, kind, data, created_at) "
    "VALUES ($1, $2, $3, $4, 'created', $5, $6)"
)
INSERT_EVENT = (
    "INSERT INTO projects.outbox (event_id, event_name, event_version, aggregate_id, occurred_at, payload, "
    "created_at, traceparent, request_id) VALUES ($1, $2, 1, $3, $4, $5, $4, $6, $7)"
)
INSERT_JOB = (
    "INSERT INTO projects.jobs (id, kind, idempotency_key, payload, status, attempts, max_attempts, run_at, "
    "next_attempt_at, created_at, traceparent, request_id) "
    "VALUES ($1, $2, $3, $4, 'pending', 0, $5, $6, $6, $6, $7, $8) ON CONFLICT DO NOTHING"
)
# Wakes the worker's relay and job runner at commit, as splitstone's outbox sink does.
WAKE_WORKER = (
    "SELECT pg_notify('splitstone_wake', 'projects:outbox'), pg_notify('splitstone_wake', 'projects:jobs')"
)
