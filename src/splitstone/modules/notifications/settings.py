"""Notifications' own settings (`SPLITSTONE_NOTIFICATIONS_*`), handed to it by the composition root."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from splitstone.kernel.settings import ModuleSettings


class NotificationsSettings(ModuleSettings):
    model_config = SettingsConfigDict(env_prefix="SPLITSTONE_NOTIFICATIONS_", env_file=".env", extra="ignore")

    product_name: str = Field(default="Splitstone", description="Shown in emails' subjects and layout.")
    default_locale: str = Field(default="en", description="Locale of a recipient whose locale is unknown.")

    # Email
    email_backend: Literal["file", "smtp"] = Field(
        default="file", description='"file": write each message as .eml under mail_dir; "smtp": send it.'
    )
    mail_dir: Path | None = Field(default=None, description="Where the file backend writes (data_dir/mail).")
    mail_from: str = Field(default="Splitstone <no-reply@localhost>", description="The From header.")
    smtp_host: str = "127.0.0.1"
    smtp_port: int = Field(default=587, ge=1, le=65535)
    smtp_security: Literal["starttls", "tls", "none"] = Field(
        default="starttls", description='"starttls" (port 587), "tls" (implicit, port 465) or "none".'
    )
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_timeout_seconds: float = Field(default=30, gt=0, le=300)
    smtp_validate_certs: bool = True
    email_max_attempts: int = Field(default=8, ge=1, le=50, description="Sends tried before `failed`.")

    # Links in emails. `{base_url}` is the process's public base URL; `{token}` the one-time token;
    # `{org_id}` the organization's id; `{key}` a task's key.
    verify_email_url: str = "{base_url}/verify-email?token={token}"
    reset_password_url: str = "{base_url}/reset-password?token={token}"  # noqa: S105
    accept_invitation_url: str = "{base_url}/invitations/accept?token={token}"
    billing_url: str = Field(
        default="{base_url}/orgs/{org_id}/billing",
        description="An organization's billing page, linked from billing emails and in-app items.",
    )
    task_url: str = Field(
        default="{base_url}/orgs/{org_id}/tasks/{key}",
        description="A task's page (`{key}`: its key, such as WEB-42), linked from projects' notifications.",
    )
    app_url: str = Field(default="{base_url}", description="The link to the product in every email.")

    link_secret: SecretStr | None = Field(
        default=None, description="Signs unsubscribe links; generated under data/ outside production."
    )

    # Retention (the hourly `notifications.purge` job)
    delivery_log_retention_days: float = Field(
        default=90, gt=0, description="Keep finished deliveries (and idempotency keys) this long."
    )
    feed_retention_days: float = Field(default=180, gt=0, description="Keep in-app items this long.")
    webhook_log_retention_days: float = Field(
        default=30, gt=0, description="Keep finished webhook messages with their attempts this long."
    )

    # In-app stream
    stream_poll_seconds: float = Field(
        default=2.0, gt=0, le=60, description="Longest an SSE stream waits before looking for news."
    )
    stream_keepalive_seconds: float = Field(default=15.0, gt=0, le=300)
    stream_max_seconds: float = Field(
        default=900,
        gt=0,
        description="A stream ends after this long; the client reconnects (with Last-Event-ID), and its "
        "credentials are checked again, so a revoked session cannot keep listening.",
    )

    # Outgoing webhooks
    webhook_allow_private_targets: bool = Field(
        default=False,
        description="Allow webhook URLs that resolve to loopback, private or link-local addresses (tests).",
    )
    webhook_timeout_seconds: float = Field(default=15, gt=0, le=60)
    webhook_max_response_bytes: int = Field(default=64 * 1024, ge=1024, le=1024 * 1024)
    webhook_disable_after_days: float = Field(
        default=5, gt=0, description="An endpoint failing this long without one success is disabled."
    )
    webhook_secret_rotation_hours: float = Field(
        default=24, ge=0, description="How long the old secret keeps signing after a rotation."
    )
