"""Auth's tables, all in the `auth` schema. Secrets (tokens, API keys) are stored only as hashes."""

from __future__ import annotations

from sqlalchemy import JSON, Column, ForeignKey, Index, PrimaryKeyConstraint, String, Table, Uuid

from splitstone.kernel.db import UtcDateTime, module_metadata

SCHEMA = "auth"
metadata = module_metadata(SCHEMA)

users = Table(
    "users",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("email", String(320), nullable=False, unique=True),  # stored normalised (lower-case)
    Column("display_name", String(200), nullable=False),
    Column("password_hash", String(255), nullable=False),
    Column("email_verified_at", UtcDateTime, nullable=True),
    Column("password_changed_at", UtcDateTime, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
)

email_verifications = Table(
    "email_verifications",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("user_id", Uuid, ForeignKey("auth.users.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("expires_at", UtcDateTime, nullable=False),
    Column("used_at", UtcDateTime, nullable=True),
)

password_resets = Table(
    "password_resets",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("user_id", Uuid, ForeignKey("auth.users.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("token_hash", String(64), nullable=False, unique=True),
    # A digest of the password hash at request time: a later password change invalidates the token.
    Column("password_fingerprint", String(64), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("expires_at", UtcDateTime, nullable=False),
    Column("used_at", UtcDateTime, nullable=True),
)

# A session is one refresh-token family: every rotation stays in it, and reuse revokes all of it.
sessions = Table(
    "sessions",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("user_id", Uuid, ForeignKey("auth.users.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("last_used_at", UtcDateTime, nullable=False),
    Column("expires_at", UtcDateTime, nullable=False),
    Column("revoked_at", UtcDateTime, nullable=True),
    Column("revoked_reason", String(40), nullable=True),
    Column("user_agent", String(500), nullable=True),
    Column("ip_address", String(64), nullable=True),
)

refresh_tokens = Table(
    "refresh_tokens",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column(
        "session_id", Uuid, ForeignKey("auth.sessions.id", ondelete="CASCADE"), nullable=False, index=True
    ),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("expires_at", UtcDateTime, nullable=False),
    Column("used_at", UtcDateTime, nullable=True),  # set when rotated; presenting it again is reuse
)

organizations = Table(
    "organizations",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("name", String(200), nullable=False),
    Column("created_by", Uuid, ForeignKey("auth.users.id", ondelete="RESTRICT"), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
)

memberships = Table(
    "memberships",
    metadata,
    Column("org_id", Uuid, ForeignKey("auth.organizations.id", ondelete="CASCADE"), nullable=False),
    Column("user_id", Uuid, ForeignKey("auth.users.id", ondelete="CASCADE"), nullable=False),
    Column("role", String(20), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    PrimaryKeyConstraint("org_id", "user_id"),
    Index("ix_memberships_user_id", "user_id"),  # "my organizations"
)

invitations = Table(
    "invitations",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column(
        "org_id", Uuid, ForeignKey("auth.organizations.id", ondelete="CASCADE"), nullable=False, index=True
    ),
    Column("email", String(320), nullable=False),
    Column("role", String(20), nullable=False),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("invited_by", Uuid, ForeignKey("auth.users.id", ondelete="CASCADE"), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("expires_at", UtcDateTime, nullable=False),
    Column("accepted_at", UtcDateTime, nullable=True),
    Column("accepted_by", Uuid, nullable=True),
    Column("revoked_at", UtcDateTime, nullable=True),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column(
        "org_id", Uuid, ForeignKey("auth.organizations.id", ondelete="CASCADE"), nullable=False, index=True
    ),
    Column("name", String(200), nullable=False),
    Column("public_id", String(32), nullable=False, unique=True),  # the visible part after the prefix
    Column("secret_hash", String(64), nullable=False),
    Column("scopes", JSON, nullable=False),
    Column("created_by", Uuid, ForeignKey("auth.users.id", ondelete="CASCADE"), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("expires_at", UtcDateTime, nullable=True),
    Column("last_used_at", UtcDateTime, nullable=True),
    Column("revoked_at", UtcDateTime, nullable=True),
)
