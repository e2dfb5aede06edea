"""kernel: the trace context of outbox, inbox and job rows (`traceparent`, `request_id`; NULL for none).

ALTER TABLE is not schema-translated the way CREATE TABLE is, so the statements name the module's
schema: the one the engine maps "no schema" to.

Revision ID: k0003
Revises: k0002
Create Date: 2026-12-10
"""

import sqlalchemy as sa
from alembic import op

revision = "k0003"
down_revision = "k0002"
branch_labels = None
depends_on = None

_TABLES = ("outbox", "inbox", "jobs")


def _schema() -> str | None:
    translate: dict[str | None, str] = op.get_bind().get_execution_options().get("schema_translate_map", {})
    return translate.get(None)


def upgrade() -> None:
    schema = _schema()
    for table in _TABLES:
        op.add_column(table, sa.Column("traceparent", sa.String(length=64), nullable=True), schema=schema)
        op.add_column(table, sa.Column("request_id", sa.String(length=128), nullable=True), schema=schema)


def downgrade() -> None:
    schema = _schema()
    for table in _TABLES:
        op.drop_column(table, "request_id", schema=schema)
        op.drop_column(table, "traceparent", schema=schema)
