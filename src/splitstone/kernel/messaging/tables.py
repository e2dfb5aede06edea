"""The kernel's tables, present in every module's schema: outbox, inbox, jobs and idempotency keys.

They are declared without a schema; each module's engine maps "no schema" to the module's own schema
(`schema_translate_map`), so the same definitions serve every module on PostgreSQL and SQLite.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    Uuid,
    text,
)

from splitstone.kernel.db import NAMING_CONVENTION, UtcDateTime
from splitstone.kernel.messaging.traces import REQUEST_ID_LENGTH, TRACEPARENT_LENGTH

metadata = MetaData(naming_convention=NAMING_CONVENTION)

# SQLite only autoincrements an INTEGER PRIMARY KEY (the rowid alias).
_Position = BigInteger().with_variant(Integer(), "sqlite")


def _trace_columns() -> list[Column[str]]:
    """The trace context the row's handler continues (see `kernel.messaging.traces`); NULL for none."""
    return [
        Column("traceparent", String(TRACEPARENT_LENGTH), nullable=True),
        Column("request_id", String(REQUEST_ID_LENGTH), nullable=True),
    ]


outbox = Table(
    "outbox",
    metadata,
    Column("position", _Position, primary_key=True, autoincrement=True),
    Column("event_id", Uuid, nullable=False, unique=True),
    Column("event_name", String(200), nullable=False),
    Column("event_version", Integer, nullable=False),
    Column("aggregate_id", Uuid, nullable=False),
    Column("occurred_at", UtcDateTime, nullable=False),
    Column("payload", Text, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("published_at", UtcDateTime, nullable=True),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("next_attempt_at", UtcDateTime, nullable=True),
    Column("last_error", Text, nullable=True),
    *_trace_columns(),
    # The relay's query: unpublished rows in order. Partial, so it stays as small as the backlog.
    Index(
        "ix_outbox_unpublished",
        "position",
        postgresql_where=text("published_at IS NULL"),
        sqlite_where=text("published_at IS NULL"),
    ),
)

# One row per (event, handler): the dedupe record and the handler's durable work queue.
inbox = Table(
    "inbox",
    metadata,
    Column("event_id", Uuid, nullable=False),
    Column("handler", String(200), nullable=False),
    Column("event_name", String(200), nullable=False),
    Column("event_version", Integer, nullable=False),
    Column("aggregate_id", Uuid, nullable=False),
    Column("occurred_at", UtcDateTime, nullable=False),
    Column("payload", Text, nullable=False),
    Column("status", String(10), nullable=False),  # pending | done | dead | discarded
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("received_at", UtcDateTime, nullable=False),
    Column("next_attempt_at", UtcDateTime, nullable=False),
    Column("handled_at", UtcDateTime, nullable=True),
    Column("last_error", Text, nullable=True),
    *_trace_columns(),
    PrimaryKeyConstraint("event_id", "handler"),
    # The processor's query: pending rows that are due.
    Index(
        "ix_inbox_due",
        "next_attempt_at",
        postgresql_where=text("status = 'pending'"),
        sqlite_where=text("status = 'pending'"),
    ),
)

jobs = Table(
    "jobs",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("kind", String(200), nullable=False),
    Column("idempotency_key", String(200), nullable=True),
    Column("payload", Text, nullable=False),
    Column("status", String(10), nullable=False),  # pending | done | dead | discarded
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("max_attempts", Integer, nullable=False),
    Column("run_at", UtcDateTime, nullable=False),
    Column("next_attempt_at", UtcDateTime, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("finished_at", UtcDateTime, nullable=True),
    Column("last_error", Text, nullable=True),
    *_trace_columns(),
    Index("uq_jobs_kind_idempotency_key", "kind", "idempotency_key", unique=True),
    Index(
        "ix_jobs_due",
        "next_attempt_at",
        postgresql_where=text("status = 'pending'"),
        sqlite_where=text("status = 'pending'"),
    ),
)

# The first response to an HTTP request sent with an `Idempotency-Key` (see `kernel.http.idempotency`).
idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("scope", String(200), nullable=False),  # who sent it, e.g. "user:<uuid>"
    Column("key", String(255), nullable=False),
    Column("method", String(10), nullable=False),
    Column("path", Text, nullable=False),
    Column("fingerprint", String(64), nullable=False),  # sha256 of method, path, query and body
    Column("status", String(12), nullable=False),  # in_progress | done
    Column("response_status", Integer, nullable=True),
    Column("response_headers", Text, nullable=True),  # JSON: content-type and location
    Column("response_body", LargeBinary, nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("expires_at", UtcDateTime, nullable=False),
    PrimaryKeyConstraint("scope", "key"),
    Index("ix_idempotency_keys_expires_at", "expires_at"),
)
