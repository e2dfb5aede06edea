"""Projects' tables, all in the `projects` schema, with indexes designed from the queries that use them.

Ids are UUIDv7, so ordering by id is ordering by creation time. Every query is scoped by `org_id`
(or by a project, itself found by org), and every list is keyset-paginated on (sort key, id): each
index below ends in `id`, names the query it serves, and lets that query read one page without OFFSET
and without a sort, from the first page to the millionth row. docs/projects.md lists them again, and
`make bench-projects` prints the plans PostgreSQL chooses at 10k to 1M tasks.
"""

from __future__ import annotations

from sqlalchemy import (
    Column,
    Date,
    Index,
    Integer,
    PrimaryKeyConstraint,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
    Uuid,
)

from splitstone.kernel.db import UtcDateTime, module_metadata

SCHEMA = "projects"
metadata = module_metadata(SCHEMA)

projects = Table(
    "projects",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("org_id", Uuid, nullable=False),
    Column("key", String(10), nullable=False),  # upper case, 2-10 of A-Z and 0-9, starting with a letter
    Column("name", String(200), nullable=False),
    Column("description", Text, nullable=False),
    Column("status", String(10), nullable=False),
    # The last task number handed out: UPDATE ... SET next = next + 1 RETURNING takes the row's lock.
    Column("last_number", Integer, nullable=False),
    Column("created_by", Uuid, nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Column("archived_at", UtcDateTime, nullable=True),
    # GET /orgs/{org}/projects/{KEY}, and "is this key free?"
    UniqueConstraint("org_id", "key", name="uq_projects_org_key"),
    # GET /orgs/{org}/projects: newest first (keyset on id).
    Index("ix_projects_org", "org_id", "id"),
)

tasks = Table(
    "tasks",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("org_id", Uuid, nullable=False),
    Column("project_id", Uuid, nullable=False),
    Column("number", Integer, nullable=False),
    Column("title", String(300), nullable=False),
    Column("description", Text, nullable=False),  # markdown
    Column("status", String(12), nullable=False),
    Column("priority", SmallInteger, nullable=False),
    Column("assignee_id", Uuid, nullable=True),
    Column("due_date", Date, nullable=True),
    Column("labels", Text, nullable=False),  # JSON array, for reading; task_labels serves filtering
    Column("created_by", Uuid, nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Column("version", Integer, nullable=False),  # optimistic concurrency: If-Match
    # GET /orgs/{org}/tasks/WEB-42
    UniqueConstraint("project_id", "number", name="uq_tasks_project_number"),
    # Lists of a project, newest first / by status / by update / by priority / by due date.
    Index("ix_tasks_project_created", "project_id", "id"),
    Index("ix_tasks_project_status", "project_id", "status", "id"),
    Index("ix_tasks_project_updated", "project_id", "updated_at", "id"),
    Index("ix_tasks_project_priority", "project_id", "priority", "id"),
    Index("ix_tasks_project_due", "project_id", "due_date", "id"),
    # Lists across the organization, the same sorts, and "assigned to me".
    Index("ix_tasks_org_created", "org_id", "id"),
    Index("ix_tasks_org_updated", "org_id", "updated_at", "id"),
    Index("ix_tasks_org_priority", "org_id", "priority", "id"),
    Index("ix_tasks_org_due", "org_id", "due_date", "id"),
    Index("ix_tasks_org_assignee", "org_id", "assignee_id", "id"),
    Index("ix_tasks_org_status", "org_id", "status", "id"),
)

# One row per label of a task: WHERE label = ? AND org_id = ? walks (org_id, label, task_id).
task_labels = Table(
    "task_labels",
    metadata,
    Column("task_id", Uuid, nullable=False),
    Column("org_id", Uuid, nullable=False),
    Column("label", String(50), nullable=False),
    PrimaryKeyConstraint("task_id", "label", name="pk_task_labels"),
    Index("ix_task_labels_org_label", "org_id", "label", "task_id"),
)

# Who hears about a task's comments: its creator and assignee, automatically.
watchers = Table(
    "watchers",
    metadata,
    Column("task_id", Uuid, nullable=False),
    Column("user_id", Uuid, nullable=False),
    Column("org_id", Uuid, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    PrimaryKeyConstraint("task_id", "user_id", name="pk_watchers"),
)

comments = Table(
    "comments",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("org_id", Uuid, nullable=False),
    Column("task_id", Uuid, nullable=False),
    Column("author_id", Uuid, nullable=True),
    Column("body", Text, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Column("edited_at", UtcDateTime, nullable=True),
    # GET .../tasks/{task}/comments: oldest first (keyset on id).
    Index("ix_comments_task", "task_id", "id"),
)

# Append-only: what happened to a task, by whom.
activity = Table(
    "activity",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("org_id", Uuid, nullable=False),
    Column("task_id", Uuid, nullable=False),
    Column("actor_id", Uuid, nullable=True),
    Column("kind", String(30), nullable=False),  # created, status_changed, assigned, commented, ...
    Column("data", Text, nullable=False),  # JSON: what changed, from and to
    Column("created_at", UtcDateTime, nullable=False),
    # GET .../tasks/{task}/activity: oldest first.
    Index("ix_activity_task", "task_id", "id"),
)
