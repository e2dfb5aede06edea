"""Notifications' tables, all in the `notifications` schema.

Each index names the query it serves. Ids are UUIDv7, so ordering by id is ordering by creation time:
cursors over the in-app feed and the delivery logs are ids.
"""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    Uuid,
    text,
)

from splitstone.kernel.db import UtcDateTime, module_metadata

SCHEMA = "notifications"
metadata = module_metadata(SCHEMA)

# -- notify(): one row per call, deduplicated by its idempotency key ------------------------------------

notifications = Table(
    "notifications",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("kind", String(100), nullable=False),
    Column("org_id", Uuid, nullable=True),
    Column("idempotency_key", String(200), nullable=False, unique=True),
    Column("data", Text, nullable=False),  # JSON
    Column("created_at", UtcDateTime, nullable=False),
)

# One row per recipient and channel: the delivery-status log (queued → sent | failed | bounced,
# or suppressed by a preference). An email's rendered content is kept, so a retry sends the same bytes.
deliveries = Table(
    "deliveries",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column(
        "notification_id",
        Uuid,
        ForeignKey("notifications.notifications.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("kind", String(100), nullable=False),
    Column("category", String(20), nullable=False),
    Column("channel", String(10), nullable=False),
    Column("user_id", Uuid, nullable=True),
    Column("address", String(320), nullable=True),
    Column("recipient_name", String(200), nullable=True),
    Column("locale", String(10), nullable=False),
    Column("status", String(12), nullable=False),
    Column("subject", String(500), nullable=True),
    Column("body_text", Text, nullable=True),
    Column("body_html", Text, nullable=True),
    Column("headers", Text, nullable=True),  # JSON object of extra headers (List-Unsubscribe)
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("last_error", Text, nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Column("sent_at", UtcDateTime, nullable=True),
    # notify()'s duplicate answer: the deliveries of one notification.
    Index("ix_deliveries_notification", "notification_id"),
    # A user's delivery history, newest first.
    Index("ix_deliveries_user", "user_id", "id"),
)

# -- in-app inbox ------------------------------------------------------------------------------------------

feed_items = Table(
    "feed_items",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("user_id", Uuid, nullable=False),
    Column("org_id", Uuid, nullable=True),
    Column("notification_id", Uuid, nullable=True),
    Column("kind", String(100), nullable=False),
    Column("category", String(20), nullable=False),
    Column("title", String(300), nullable=False),
    Column("body", Text, nullable=False),
    Column("link", String(2000), nullable=True),
    Column("data", Text, nullable=False),  # JSON
    Column("created_at", UtcDateTime, nullable=False),
    Column("read_at", UtcDateTime, nullable=True),
    Column("archived_at", UtcDateTime, nullable=True),
    # The inbox page: a user's items newest first, from a cursor (`id < :cursor`); the stream: `id > :last`.
    Index("ix_feed_items_user", "user_id", "id"),
    # The unread badge: count of a user's unread, unarchived items. Partial, so it stays small.
    Index(
        "ix_feed_items_unread",
        "user_id",
        postgresql_where=text("read_at IS NULL AND archived_at IS NULL"),
        sqlite_where=text("read_at IS NULL AND archived_at IS NULL"),
    ),
)

# -- preferences: a row only where a user chose; no row means the default (enabled) ---------------------

preferences = Table(
    "preferences",
    metadata,
    Column("user_id", Uuid, nullable=False),
    Column("category", String(20), nullable=False),
    Column("channel", String(10), nullable=False),
    Column("enabled", Boolean, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    PrimaryKeyConstraint("user_id", "category", "channel"),
)

# -- outgoing webhooks ------------------------------------------------------------------------------------

webhook_endpoints = Table(
    "webhook_endpoints",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("org_id", Uuid, nullable=False),
    Column("url", String(2000), nullable=False),
    Column("description", String(500), nullable=False, server_default=""),
    Column("event_types", Text, nullable=False),  # JSON list; empty means every type
    # Kept in clear: signing needs it. `whsec_` + base64 of 24 random bytes.
    Column("secret", String(100), nullable=False),
    Column("previous_secret", String(100), nullable=True),
    Column("previous_secret_expires_at", UtcDateTime, nullable=True),
    Column("enabled", Boolean, nullable=False),
    Column("disabled_reason", String(300), nullable=True),
    Column("disabled_at", UtcDateTime, nullable=True),
    Column("failing_since", UtcDateTime, nullable=True),  # first failure since the last success
    Column("created_by", Uuid, nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    # An organization's endpoints: the list page and the fan-out of each message.
    Index("ix_webhook_endpoints_org", "org_id", "id"),
)

webhook_messages = Table(
    "webhook_messages",
    metadata,
    Column("id", String(40), primary_key=True),  # the `webhook-id`: "msg_" + UUIDv7 hex
    Column("org_id", Uuid, nullable=False),
    Column("event_type", String(200), nullable=False),
    Column("payload", Text, nullable=False),  # the exact body that is signed and sent
    Column("idempotency_key", String(200), nullable=False, unique=True),
    Column("created_at", UtcDateTime, nullable=False),
)

# One row per (message, endpoint): where that message stands with that endpoint.
webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column(
        "message_id",
        String(40),
        ForeignKey("notifications.webhook_messages.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column(
        "endpoint_id",
        Uuid,
        ForeignKey("notifications.webhook_endpoints.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("org_id", Uuid, nullable=False),
    Column("event_type", String(200), nullable=False),
    Column("status", String(12), nullable=False),  # pending | succeeded | failed | canceled
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("next_attempt_at", UtcDateTime, nullable=True),
    Column("last_attempt_at", UtcDateTime, nullable=True),
    Column("last_status_code", Integer, nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Index("uq_webhook_deliveries_message_endpoint", "message_id", "endpoint_id", unique=True),
    # An endpoint's delivery log, newest first.
    Index("ix_webhook_deliveries_endpoint", "endpoint_id", "id"),
)

# Every HTTP attempt of a delivery: status, latency and what the receiver answered.
webhook_attempts = Table(
    "webhook_attempts",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column(
        "delivery_id",
        Uuid,
        ForeignKey("notifications.webhook_deliveries.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("endpoint_id", Uuid, nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("trigger", String(10), nullable=False),  # scheduled | manual | test
    Column("started_at", UtcDateTime, nullable=False),
    Column("latency_ms", Integer, nullable=True),
    Column("status_code", Integer, nullable=True),
    Column("succeeded", Boolean, nullable=False),
    Column("response_excerpt", Text, nullable=True),
    Column("error", Text, nullable=True),
    # A delivery's attempts in order.
    Index("ix_webhook_attempts_delivery", "delivery_id", "id"),
)
