"""projects: projects, tasks (with labels and watchers), comments and the activity log.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

SCHEMA = "projects"


def upgrade() -> None:
    op.create_table(
        "activity",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("org_id", sa.Uuid(), nullable=False),
        sa.Column("task_id", sa.Uuid(), nullable=False),
        sa.Column("actor_id", sa.Uuid(), nullable=True),
        sa.Column("kind", sa.String(length=30), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_activity")),
        schema=SCHEMA,
    )
    op.create_index("ix_activity_task", "activity", ["task_id", "id"], unique=False, schema=SCHEMA)
    op.create_table(
        "comments",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("org_id", sa.Uuid(), nullable=False),
        sa.Column("task_id", sa.Uuid(), nullable=False),
        sa.Column("author_id", sa.Uuid(), nullable=True),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("edited_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_comments")),
        schema=SCHEMA,
    )
    op.create_index("ix_comments_task", "comments", ["task_id", "id"], unique=False, schema=SCHEMA)
    op.create_table(
        "projects",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("org_id", sa.Uuid(), nullable=False),
        sa.Column("key", sa.String(length=10), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("last_number", sa.Integer(), nullable=False),
        sa.Column("created_by", sa.Uuid(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("archived_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_projects")),
        sa.UniqueConstraint("org_id", "key", name="uq_projects_org_key"),
        schema=SCHEMA,
    )
    op.create_index("ix_projects_org", "projects", ["org_id", "id"], unique=False, schema=SCHEMA)
    op.create_table(
        "task_labels",
        sa.Column("task_id", sa.Uuid(), nullable=False),
        sa.Column("org_id", sa.Uuid(), nullable=False),
        sa.Column("label", sa.String(length=50), nullable=False),
        sa.PrimaryKeyConstraint("task_id", "label", name="pk_task_labels"),
        schema=SCHEMA,
    )
    op.create_index(
        "ix_task_labels_org_label", "task_labels", ["org_id", "label", "task_id"], unique=False, schema=SCHEMA
    )
    op.create_table(
        "tasks",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("org_id", sa.Uuid(), nullable=False),
        sa.Column("project_id", sa.Uuid(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("title", sa.String(length=300), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("priority", sa.SmallInteger(), nullable=False),
        sa.Column("assignee_id", sa.Uuid(), nullable=True),
        sa.Column("due_date", sa.Date(), nullable=True),
        sa.Column("labels", sa.Text(), nullable=False),
        sa.Column("created_by", sa.Uuid(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tasks")),
        sa.UniqueConstraint("project_id", "number", name="uq_tasks_project_number"),
        schema=SCHEMA,
    )
    op.create_index(
        "ix_tasks_org_assignee", "tasks", ["org_id", "assignee_id", "id"], unique=False, schema=SCHEMA
    )
    op.create_index("ix_tasks_org_created", "tasks", ["org_id", "id"], unique=False, schema=SCHEMA)
    op.create_index("ix_tasks_org_due", "tasks", ["org_id", "due_date", "id"], unique=False, schema=SCHEMA)
    op.create_index(
        "ix_tasks_org_priority", "tasks", ["org_id", "priority", "id"], unique=False, schema=SCHEMA
    )
    op.create_index("ix_tasks_org_status", "tasks", ["org_id", "status", "id"], unique=False, schema=SCHEMA)
    op.create_index(
        "ix_tasks_org_updated", "tasks", ["org_id", "updated_at", "id"], unique=False, schema=SCHEMA
    )
    op.create_index("ix_tasks_project_created", "tasks", ["project_id", "id"], unique=False, schema=SCHEMA)
    op.create_index(
        "ix_tasks_project_due", "tasks", ["project_id", "due_date", "id"], unique=False, schema=SCHEMA
    )
    op.create_index(
        "ix_tasks_project_priority", "tasks", ["project_id", "priority", "id"], unique=False, schema=SCHEMA
    )
    op.create_index(
        "ix_tasks_project_status", "tasks", ["project_id", "status", "id"], unique=False, schema=SCHEMA
    )
    op.create_index(
        "ix_tasks_project_updated", "tasks", ["project_id", "updated_at", "id"], unique=False, schema=SCHEMA
    )
    op.create_table(
        "watchers",
        sa.Column("task_id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("org_id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("task_id", "user_id", name="pk_watchers"),
        schema=SCHEMA,
    )


def downgrade() -> None:
    op.drop_table("watchers", schema=SCHEMA)
    op.drop_index("ix_tasks_org_assignee", table_name="tasks", schema=SCHEMA)
    op.drop_index("ix_tasks_org_created", table_name="tasks", schema=SCHEMA)
    op.drop_index("ix_tasks_org_due", table_name="tasks", schema=SCHEMA)
    op.drop_index("ix_tasks_org_priority", table_name="tasks", schema=SCHEMA)
    op.drop_index("ix_tasks_org_status", table_name="tasks", schema=SCHEMA)
    op.drop_index("ix_tasks_org_updated", table_name="tasks", schema=SCHEMA)
    op.drop_index("ix_tasks_project_created", table_name="tasks", schema=SCHEMA)
    op.drop_index("ix_tasks_project_due", table_name="tasks", schema=SCHEMA)
    op.drop_index("ix_tasks_project_priority", table_name="tasks", schema=SCHEMA)
    op.drop_index("ix_tasks_project_status", table_name="tasks", schema=SCHEMA)
    op.drop_index("ix_tasks_project_updated", table_name="tasks", schema=SCHEMA)
    op.drop_table("tasks", schema=SCHEMA)
    op.drop_index("ix_task_labels_org_label", table_name="task_labels", schema=SCHEMA)
    op.drop_table("task_labels", schema=SCHEMA)
    op.drop_index("ix_projects_org", table_name="projects", schema=SCHEMA)
    op.drop_table("projects", schema=SCHEMA)
    op.drop_index("ix_comments_task", table_name="comments", schema=SCHEMA)
    op.drop_table("comments", schema=SCHEMA)
    op.drop_index("ix_activity_task", table_name="activity", schema=SCHEMA)
    op.drop_table("activity", schema=SCHEMA)
