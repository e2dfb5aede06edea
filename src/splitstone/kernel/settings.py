"""Process-wide settings, read once by the composition root.

Business code never reads these directly (rule 5): the composition root hands each module what it needs.
A module that has settings of its own declares a `ModuleSettings` subclass with its own prefix.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Environment(StrEnum):
    DEVELOPMENT = "development"
    TEST = "test"
    PRODUCTION = "production"


class Settings(BaseSettings):
    """Settings of the whole process (`SPLITSTONE_*` environment variables or `.env`)."""

    model_config = SettingsConfigDict(env_prefix="SPLITSTONE_", env_file=".env", extra="ignore")

    env: Environment = Environment.DEVELOPMENT
    data_dir: Path = Field(default=Path("data"), description="Where SQLite files and generated secrets live.")
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy async URL shared by all modules. Default: SQLite files under data_dir.",
    )
    module_database_urls: dict[str, str] = Field(
        default_factory=dict,
        description='Per-module URL overrides, e.g. {"billing": "postgresql+asyncpg://..."}.',
    )
    database_pool_size: int = Field(default=5, ge=1, le=100)
    database_echo: bool = False
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    public_base_url: str = "http://127.0.0.1:8000"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["auto", "console", "json"] = "auto"
    max_request_body_bytes: int = Field(default=1_048_576, ge=1024)
    rate_limit_storage_url: str = Field(
        default="memory://", description='"memory://" (one process) or "redis://host:port/db" (shared).'
    )
    rate_limits_enabled: bool = True

    event_transport: Literal["inprocess", "nats"] = Field(
        default="inprocess", description="How events travel: inside this process, or through NATS JetStream."
    )
    nats_url: str = "nats://127.0.0.1:4222"
    nats_stream_prefix: str = Field(
        default="splitstone",
        pattern=r"^[A-Za-z0-9_-]{1,32}$",
        description="Prefix of JetStream stream, subject and consumer names (one per installation).",
    )
    event_max_attempts: int = Field(default=10, ge=1, description="Handler attempts before a dead letter.")
    event_retry_base_seconds: float = Field(
        default=1.0, gt=0, description="First retry delay; doubles after."
    )
    event_retry_max_seconds: float = Field(default=600.0, gt=0)
    job_max_attempts: int = Field(default=10, ge=1)
    external_job_concurrency: int = Field(
        default=8, ge=1, le=256, description="External jobs (emails, webhooks) one module runs at once."
    )
    external_job_lease_seconds: float = Field(
        default=300,
        ge=5,
        description="How long an external job is leased; one that crashes mid-run is retried after it.",
    )
    event_retention_days: float = Field(
        default=7, gt=0, description="Keep published outbox rows, handled inbox rows and done jobs this long."
    )
    worker_poll_seconds: float = Field(
        default=1.0, gt=0, le=60, description="Longest a relay, inbox or job runner sleeps without a wake-up."
    )
    run_worker: bool = Field(
        default=True,
        description="Run relays, event handlers and jobs inside `serve` (false: `splitstone worker`).",
    )

    topology: Path | None = Field(
        default=None,
        description="A topology file (TOML): which service runs which modules. Default: one service, all.",
    )
    service: str | None = Field(
        default=None,
        description="Which service of the topology this process is (needed when it has several).",
    )
    service_token: SecretStr | None = Field(
        default=None,
        description="The credential services present to each other's internal contract routes; "
        "generated under data_dir outside production.",
    )
    remote_connect_timeout_seconds: float = Field(default=1.0, gt=0, le=60)
    remote_timeout_seconds: float = Field(
        default=10.0, gt=0, le=300, description="Longest a remote contract call may take, retries included."
    )
    remote_retries: int = Field(
        default=2, ge=0, le=10, description="Retries of an idempotent remote call after a failure to connect."
    )

    @field_validator("public_base_url")
    @classmethod
    def _strip_trailing_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @property
    def is_production(self) -> bool:
        return self.env is Environment.PRODUCTION

    def database_url_for(self, module: str) -> str:
        """The URL a module's tables live behind: its override, the shared URL, or the embedded SQLite."""
        if module in self.module_database_urls:
            return self.module_database_urls[module]
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{self.data_dir / 'splitstone.db'}"

    def json_logs(self) -> bool:
        if self.log_format == "auto":
            return self.is_production
        return self.log_format == "json"


class ModuleSettings(BaseSettings):
    """Base for a module's own settings; subclasses set `env_prefix`, e.g. `SPLITSTONE_AUTH_`."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore")
