"""What the baseline reads at start-up: the environment `splitstone serve` reads, for the parts it needs."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

SIGNING_KEY_FILE = "auth-jwt-ed25519.pem"  # where auth keeps its generated key under <data dir>/secrets


@dataclass(frozen=True)
class BaselineSettings:
    dsn: str
    signing_key_pem: str
    issuer: str = "splitstone"
    audience: str = "splitstone"
    pool_size: int = 5
    job_max_attempts: int = 10
    entitlement_cache_seconds: float = 30.0
    upgrade_url: str = "http://127.0.0.1:8000/api/v1/billing/plans"
    catalog_path: Path | None = None
    access_log: bool = False

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> BaselineSettings:
        """Settings from `SPLITSTONE_*` variables, with splitstone's defaults; PostgreSQL only."""
        url = env.get("SPLITSTONE_DATABASE_URL", "")
        if not url.startswith("postgresql"):
            raise ValueError(
                "the baseline runs on PostgreSQL: set SPLITSTONE_DATABASE_URL=postgresql+asyncpg://..."
            )
        dsn = "postgresql://" + url.split("://", 1)[1]
        key = env.get("SPLITSTONE_AUTH_JWT_PRIVATE_KEY")
        if not key:
            key_file = Path(env.get("SPLITSTONE_DATA_DIR", "data")) / "secrets" / SIGNING_KEY_FILE
            if not key_file.exists():
                raise ValueError(f"no JWT signing key at {key_file}: start splitstone once on this data dir")
            key = key_file.read_text()
        base_url = env.get("SPLITSTONE_PUBLIC_BASE_URL", "http://127.0.0.1:8000").rstrip("/")
        upgrade = env.get("SPLITSTONE_BILLING_UPGRADE_URL", "{base_url}/api/v1/billing/plans")
        catalog = env.get("SPLITSTONE_BILLING_CATALOG_PATH")
        return cls(
            dsn=dsn,
            signing_key_pem=key,
            issuer=env.get("SPLITSTONE_AUTH_JWT_ISSUER", "splitstone"),
            audience=env.get("SPLITSTONE_AUTH_JWT_AUDIENCE", "splitstone"),
            pool_size=int(env.get("SPLITSTONE_DATABASE_POOL_SIZE", "5")),
            job_max_attempts=int(env.get("SPLITSTONE_JOB_MAX_ATTEMPTS", "10")),
            entitlement_cache_seconds=float(env.get("SPLITSTONE_BILLING_ENTITLEMENT_CACHE_SECONDS", "30")),
            upgrade_url=upgrade.replace("{base_url}", base_url),
            catalog_path=Path(catalog) if catalog else None,
            access_log=env.get("SPLITSTONE_LOG_LEVEL", "info").lower() in ("debug", "info"),
        )
