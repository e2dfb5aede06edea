"""Auth's own settings (`SPLITSTONE_AUTH_*`), handed to it by the composition root."""

from __future__ import annotations

import os

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from splitstone.kernel.settings import ModuleSettings


class AuthSettings(ModuleSettings):
    model_config = SettingsConfigDict(env_prefix="SPLITSTONE_AUTH_", env_file=".env", extra="ignore")

    jwt_private_key: SecretStr | None = Field(
        default=None,
        description="PEM Ed25519 key that signs access tokens; generated under data/ outside production.",
    )
    jwt_issuer: str = "splitstone"
    jwt_audience: str = "splitstone"
    access_token_ttl_seconds: int = Field(default=900, ge=30, le=86_400)
    refresh_token_ttl_seconds: int = Field(default=30 * 86_400, ge=300)
    email_verification_ttl_seconds: int = Field(default=48 * 3600, ge=60)
    password_reset_ttl_seconds: int = Field(default=3600, ge=60)
    invitation_ttl_seconds: int = Field(default=7 * 86_400, ge=60)
    require_verified_email: bool | None = Field(
        default=None,
        description="Refuse login until the email address is verified. Default: on in production only.",
    )

    # Used by the other services when auth runs in its own (see remote.py). Issuer and audience above
    # must be the same in every service, since each verifies access tokens itself.
    remote_principal_cache_seconds: int = Field(
        default=30,
        ge=0,
        le=3600,
        description="How long another service reuses auth's answer for an API key (0: ask every time). "
        "A revoked or expired key may keep working that long on other services.",
    )
    remote_principal_cache_size: int = Field(default=10_000, ge=1, description="API keys cached at most.")
    remote_jwks_refresh_seconds: int = Field(
        default=30,
        ge=1,
        description="Least time between two fetches of auth's JWKS when tokens name an unknown key.",
    )
    remote_jwks_max_age_seconds: int = Field(
        default=300,
        ge=1,
        description="Refetch auth's JWKS once it is this old, so a key auth stopped publishing stops "
        "verifying on other services too.",
    )

    # Argon2id at or above OWASP's minimum (m=19 MiB, t=2, p=1). Raising them rehashes on next login.
    argon2_time_cost: int = Field(default=2, ge=1)
    argon2_memory_kib: int = Field(default=19_456, ge=7_168)
    argon2_parallelism: int = Field(default=1, ge=1)
    password_hash_workers: int = Field(
        default_factory=lambda: min(64, len(os.sched_getaffinity(0))),
        ge=1,
        le=64,
        description="Threads that may hash at once (default: the cores this process may run on; more "
        "only make argon2's 19 MiB working sets take turns on a core and evict each other's cache).",
    )
    min_password_length: int = Field(default=8, ge=8)
    min_password_score: int = Field(default=2, ge=0, le=4, description="zxcvbn score a password must reach.")

    login_rate_per_ip: str = "30/minute"
    login_rate_per_account: str = "10 per 15 minutes"
    register_rate_per_ip: str = "20/hour"
    forgot_password_rate_per_ip: str = "20/hour"  # noqa: S105 (a rate, not a password)
    forgot_password_rate_per_account: str = "3/hour"  # noqa: S105
    verification_resend_rate_per_account: str = "3/hour"
