"""Auth as other services see it when auth runs in its own service.

Access tokens are verified here, with the public keys of auth's JWKS: no call to auth per request, and the
same checks and errors as auth's own (`TokenVerifier`). The JWKS is cached and fetched again when a token
names an unknown `kid` (a key rotation), at most once per `remote_jwks_refresh_seconds` however many
requests miss at once, so forged `kid`s cannot make this service hammer auth; and once it is
`remote_jwks_max_age_seconds` old, so a key auth stopped publishing stops verifying here too. While auth
is unreachable the known keys keep working.

API keys are resolved by auth (through its contract) and the answer reused for
`remote_principal_cache_seconds`: a revoked or expired key may keep working that long on other services.
Every other method is a plain call to auth.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import cast
from uuid import UUID

import httpx
import structlog
from cachetools import TTLCache
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from splitstone.kernel import tracing
from splitstone.kernel.clock import Clock
from splitstone.kernel.errors import ServiceUnavailable
from splitstone.kernel.module import RemoteContext
from splitstone.modules.auth.api import (
    Access,
    AuthApi,
    InvalidCredentials,
    MemberInfo,
    Permission,
    Principal,
    UserInfo,
)
from splitstone.modules.auth.api_keys import API_KEY_PREFIX, parse_api_key
from splitstone.modules.auth.settings import AuthSettings
from splitstone.modules.auth.tokens import TokenVerifier, bearer_credentials, public_keys_from_jwks

JWKS_PATH = "/.well-known/jwks.json"
# Until a key is known every token fails, so a failed first fetch is retried soon, not an interval later.
RETRY_WITHOUT_KEYS = timedelta(seconds=1)

log = structlog.get_logger("splitstone.auth")


class JwksKeys:
    """Auth's public signing keys, as fetched from its JWKS: cached, refreshed sparingly."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        url: str,
        clock: Clock,
        *,
        refresh_interval: timedelta,
        max_age: timedelta,
        retry_without_keys: timedelta = RETRY_WITHOUT_KEYS,
    ) -> None:
        self._http = http
        self._url = url
        self._clock = clock
        self._refresh_interval = refresh_interval
        self._max_age = max_age
        self._retry_without_keys = retry_without_keys
        self._keys: dict[str, Ed25519PublicKey] = {}
        self._fetched_at: datetime | None = None
        self._attempted_at: datetime | None = None
        self._lock = asyncio.Lock()

    async def for_kid(self, kid: str) -> Mapping[str, Ed25519PublicKey]:
        """The known keys, fetched again first if `kid` is not among them or they are old (when allowed).

        Raises `ServiceUnavailable` while no key was ever fetched: auth is down, not the token wrong.
        """
        if kid in self._keys:
            if self._stale() and self._may_fetch() and not self._lock.locked():
                async with self._lock:
                    await self._fetch()
        elif self._lock.locked() or self._may_fetch():
            # Misses wait for a fetch in flight rather than start their own: it may bring their key.
            async with self._lock:
                if kid not in self._keys and self._may_fetch():
                    await self._fetch()
        if self._fetched_at is None:
            raise ServiceUnavailable("The keys that verify access tokens cannot be fetched from auth now.")
        return self._keys

    def _stale(self) -> bool:
        return self._fetched_at is None or self._clock.now() - self._fetched_at >= self._max_age

    def _may_fetch(self) -> bool:
        if self._attempted_at is None:
            return True
        wait = self._refresh_interval if self._fetched_at is not None else self._retry_without_keys
        return self._clock.now() - self._attempted_at >= wait

    async def _fetch(self) -> None:
        self._attempted_at = self._clock.now()
        try:
            response = await self._http.get(self._url, headers=tracing.outgoing_headers())
            response.raise_for_status()
            keys = public_keys_from_jwks(response.json())
        except (httpx.HTTPError, ValueError) as error:  # ValueError: the body is not JSON
            log.warning("auth.jwks_fetch_failed", url=self._url, error=str(error) or type(error).__name__)
            return
        if not keys:
            log.warning("auth.jwks_without_keys", url=self._url)
            return
        if keys.keys() != self._keys.keys():
            log.info("auth.jwks_keys_changed", url=self._url, kids=sorted(keys))
        self._keys = keys
        self._fetched_at = self._attempted_at


class PrincipalCache:
    """Recent successful API key resolutions, by the key's SHA-256 (never the key), for a short time."""

    def __init__(self, clock: Clock, *, ttl: timedelta, max_entries: int) -> None:
        seconds = ttl.total_seconds()
        self._entries: TTLCache[bytes, Principal] | None = (
            TTLCache(maxsize=max_entries, ttl=seconds, timer=lambda: clock.now().timestamp())
            if seconds > 0
            else None
        )

    def get(self, credentials: str) -> Principal | None:
        return self._entries.get(_digest(credentials)) if self._entries is not None else None

    def put(self, credentials: str, principal: Principal) -> None:
        if self._entries is not None:
            self._entries[_digest(credentials)] = principal

    def __len__(self) -> int:
        return len(self._entries) if self._entries is not None else 0


class RemoteAuth:
    """`AuthApi` for a service where auth runs elsewhere: tokens verified here, the rest asked of auth."""

    def __init__(
        self, client: AuthApi, verifier: TokenVerifier, keys: JwksKeys, principals: PrincipalCache
    ) -> None:
        self._client = client
        self._verifier = verifier
        self._keys = keys
        self._principals = principals

    async def resolve_principal(self, authorization: str) -> Principal:
        credentials = bearer_credentials(authorization)
        if credentials.startswith(API_KEY_PREFIX):
            return await self._resolve_api_key(authorization, credentials)
        kid = self._verifier.key_id(credentials)
        return self._verifier.verify(credentials, await self._keys.for_kid(kid))

    async def authorize(self, principal: Principal, org_id: UUID, permission: Permission) -> Access:
        return await self._client.authorize(principal, org_id, permission)

    async def get_user(self, user_id: UUID) -> UserInfo:
        return await self._client.get_user(user_id)

    async def get_users(self, user_ids: list[UUID]) -> list[UserInfo]:
        return await self._client.get_users(user_ids)

    async def get_member(self, org_id: UUID, user_id: UUID) -> MemberInfo:
        return await self._client.get_member(org_id, user_id)

    async def list_members(self, org_id: UUID) -> list[MemberInfo]:
        return await self._client.list_members(org_id)

    async def _resolve_api_key(self, authorization: str, credentials: str) -> Principal:
        if parse_api_key(credentials) is None:  # auth would say the same; no need to ask
            raise InvalidCredentials("The API key is malformed.")
        cached = self._principals.get(credentials)
        if cached is not None:
            return cached
        principal = await self._client.resolve_principal(authorization)
        self._principals.put(credentials, principal)
        return principal


def build_remote(ctx: RemoteContext) -> RemoteAuth:
    """The `remote` hook of auth's declaration: what other services get for `AuthApi`."""
    settings = cast(AuthSettings, ctx.module_settings or AuthSettings())
    verifier = TokenVerifier(issuer=settings.jwt_issuer, audience=settings.jwt_audience, clock=ctx.clock)
    keys = JwksKeys(
        ctx.http,
        ctx.base_url.rstrip("/") + JWKS_PATH,
        ctx.clock,
        refresh_interval=timedelta(seconds=settings.remote_jwks_refresh_seconds),
        max_age=timedelta(seconds=settings.remote_jwks_max_age_seconds),
    )
    principals = PrincipalCache(
        ctx.clock,
        ttl=timedelta(seconds=settings.remote_principal_cache_seconds),
        max_entries=settings.remote_principal_cache_size,
    )
    return RemoteAuth(cast(AuthApi, ctx.client), verifier, keys, principals)


def _digest(credentials: str) -> bytes:
    return hashlib.sha256(credentials.encode()).digest()
