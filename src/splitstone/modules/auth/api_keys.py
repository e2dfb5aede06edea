"""API keys: an organization's credentials for machines, limited to scopes, shown once, stored as digests.

A key reads `ssk_<public id>_<secret>`. The public id (12 letters and digits) finds the row and is safe to
show in lists; the whole key's SHA-256 digest is what is stored and compared, in constant time.
"""

from __future__ import annotations

import secrets
import string
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from pydantic import BaseModel
from sqlalchemy import or_, select, update
from uuid6 import uuid7

from splitstone.kernel.clock import Clock
from splitstone.kernel.db import UnitOfWorkFactory
from splitstone.kernel.errors import InvalidInput, NotFound, PermissionDenied
from splitstone.modules.auth import domain
from splitstone.modules.auth.api import InvalidCredentials, OrganizationNotFound, Permission, Principal
from splitstone.modules.auth.organizations import Organizations, require_user
from splitstone.modules.auth.storage import api_keys

API_KEY_PREFIX = "ssk_"
PUBLIC_ID_LENGTH = 12
_PUBLIC_ID_ALPHABET = string.ascii_letters + string.digits  # no "_": the key splits unambiguously
_MAX_KEY_LENGTH = 200
LAST_USED_RESOLUTION = timedelta(minutes=1)  # write last_used_at at most this often per key

READ_SCOPES: frozenset[Permission] = frozenset(p for p in Permission if p.value.endswith(":read"))


class ApiKeyNotFound(NotFound):
    code = "api-key-not-found"
    title = "API key not found"


class ScopesNotAllowed(PermissionDenied):
    code = "scopes-not-allowed"
    title = "Scopes beyond your own permissions"


class ApiKeyView(BaseModel):
    id: UUID
    org_id: UUID
    name: str
    prefix: str
    scopes: list[Permission]
    created_at: datetime
    created_by: UUID
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None


class CreatedApiKey(ApiKeyView):
    secret: str  # the whole key; shown once, never stored


def key_prefix(public_id: str) -> str:
    return f"{API_KEY_PREFIX}{public_id}"


def parse_api_key(token: str) -> tuple[str, str] | None:
    """(public id, secret) of a well-formed key, else None."""
    if len(token) > _MAX_KEY_LENGTH or not token.startswith(API_KEY_PREFIX):
        return None
    public_id, separator, secret = token[len(API_KEY_PREFIX) :].partition("_")
    if (
        not separator
        or len(public_id) != PUBLIC_ID_LENGTH
        or any(c not in _PUBLIC_ID_ALPHABET for c in public_id)
        or len(secret) < 32
    ):
        return None
    return public_id, secret


class ApiKeys:
    """Create, list and revoke an organization's keys, and authenticate requests made with them."""

    def __init__(self, *, uow: UnitOfWorkFactory, clock: Clock, organizations: Organizations) -> None:
        self._uow = uow
        self._clock = clock
        self._organizations = organizations

    async def authenticate(self, token: str) -> Principal:
        """The principal of an API key; `InvalidCredentials` if malformed, unknown, revoked or expired."""
        parsed = parse_api_key(token)
        if parsed is None:
            raise InvalidCredentials("The API key is malformed.")
        public_id, _ = parsed
        now = self._clock.now()
        async with self._uow() as uow:
            row = (
                (await uow.session.execute(select(api_keys).where(api_keys.c.public_id == public_id)))
                .mappings()
                .one_or_none()
            )
            if row is None or not domain.digests_match(domain.token_digest(token), row["secret_hash"]):
                raise InvalidCredentials("The API key is not valid.")
            if row["revoked_at"] is not None:
                raise InvalidCredentials("The API key has been revoked.")
            if row["expires_at"] is not None and row["expires_at"] <= now:
                raise InvalidCredentials("The API key has expired.")
            last_used = row["last_used_at"]
            if last_used is None or now - last_used >= LAST_USED_RESOLUTION:
                stale_before = now - LAST_USED_RESOLUTION
                await uow.session.execute(
                    update(api_keys)
                    .where(
                        api_keys.c.id == row["id"],
                        or_(api_keys.c.last_used_at.is_(None), api_keys.c.last_used_at <= stale_before),
                    )
                    .values(last_used_at=now)
                )
                await uow.commit()
        return Principal(
            kind="api_key", api_key_id=row["id"], org_id=row["org_id"], scopes=frozenset(_scopes(row))
        )

    async def create(
        self,
        principal: Principal,
        org_id: UUID,
        *,
        name: str,
        scopes: frozenset[Permission],
        expires_at: datetime | None = None,
    ) -> CreatedApiKey:
        """A new key of `org_id`, with scopes the creating user holds; its secret is in the result only."""
        if principal.kind == "api_key" and principal.org_id != org_id:
            raise OrganizationNotFound(f"No organization {org_id} that you can access.")
        user_id = require_user(principal, "create API keys")
        access = await self._organizations.authorize(principal, org_id, Permission.API_KEYS_MANAGE)
        if not scopes:
            raise InvalidInput("An API key needs at least one scope.")
        beyond = scopes - access.permissions
        if beyond:
            raise ScopesNotAllowed(
                f"You cannot grant scopes your role lacks: {', '.join(sorted(beyond))}.",
                scopes=sorted(beyond),
            )
        now = self._clock.now()
        if expires_at is not None and expires_at <= now:
            raise InvalidInput("expires_at must be in the future.")
        public_id = "".join(secrets.choice(_PUBLIC_ID_ALPHABET) for _ in range(PUBLIC_ID_LENGTH))
        token = f"{key_prefix(public_id)}_{secrets.token_urlsafe(32)}"
        key_id = uuid7()
        ordered_scopes = sorted(scopes)
        async with self._uow() as uow:
            await uow.session.execute(
                api_keys.insert().values(
                    id=key_id,
                    org_id=org_id,
                    name=name,
                    public_id=public_id,
                    secret_hash=domain.token_digest(token),
                    scopes=[s.value for s in ordered_scopes],
                    created_by=user_id,
                    created_at=now,
                    expires_at=expires_at,
                )
            )
            await uow.commit()
        return CreatedApiKey(
            id=key_id,
            org_id=org_id,
            name=name,
            prefix=key_prefix(public_id),
            scopes=ordered_scopes,
            created_at=now,
            created_by=user_id,
            expires_at=expires_at,
            last_used_at=None,
            revoked_at=None,
            secret=token,
        )

    async def list_keys(self, principal: Principal, org_id: UUID) -> list[ApiKeyView]:
        """Every key of the organization, revoked ones included, oldest first; never a secret."""
        await self._organizations.authorize(principal, org_id, Permission.API_KEYS_MANAGE)
        async with self._uow(read_only=True) as uow:
            rows = (
                (
                    await uow.session.execute(
                        select(api_keys)
                        .where(api_keys.c.org_id == org_id)
                        .order_by(api_keys.c.created_at, api_keys.c.id)
                    )
                )
                .mappings()
                .all()
            )
        return [_view(row) for row in rows]

    async def revoke(self, principal: Principal, org_id: UUID, key_id: UUID) -> None:
        """Revoke a key; it authenticates no more. Revoking a revoked key changes nothing."""
        await self._organizations.authorize(principal, org_id, Permission.API_KEYS_MANAGE)
        async with self._uow() as uow:
            row = (
                await uow.session.execute(
                    select(api_keys.c.revoked_at).where(api_keys.c.id == key_id, api_keys.c.org_id == org_id)
                )
            ).one_or_none()
            if row is None:
                raise ApiKeyNotFound(f"No API key {key_id} in this organization.")
            if row.revoked_at is None:
                await uow.session.execute(
                    update(api_keys).where(api_keys.c.id == key_id).values(revoked_at=self._clock.now())
                )
                await uow.commit()


def _scopes(row: Any) -> list[Permission]:
    known = {p.value for p in Permission}
    return sorted(Permission(s) for s in row["scopes"] if s in known)


def _view(row: Any) -> ApiKeyView:
    return ApiKeyView(
        id=row["id"],
        org_id=row["org_id"],
        name=row["name"],
        prefix=key_prefix(row["public_id"]),
        scopes=_scopes(row),
        created_at=row["created_at"],
        created_by=row["created_by"],
        expires_at=row["expires_at"],
        last_used_at=row["last_used_at"],
        revoked_at=row["revoked_at"],
    )
