"""The stored side of idempotency keys: claim a key, keep its response, release it, purge expired ones.

One row per (scope, key) in the module's `idempotency_keys` table (`kernel/messaging/tables.py`), so
the same statements serve every module, on SQLite and PostgreSQL. The HTTP side is `idempotency.py`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, Row, and_, delete, or_, select, update

from splitstone.kernel.clock import Clock
from splitstone.kernel.db import UnitOfWorkFactory, upsert_insert
from splitstone.kernel.messaging.tables import idempotency_keys as table

IN_PROGRESS = "in_progress"
DONE = "done"

DEFAULT_TTL = timedelta(hours=24)
DEFAULT_STALE_AFTER = timedelta(seconds=60)

# A key released between our failed insert and our read is free again; after this many such races in a
# row the caller is told the key is busy (and retries after a second).
_CLAIM_ATTEMPTS = 3


@dataclass(frozen=True)
class KeyUse:
    """One request sent with an idempotency key: who sent it, the key, and what it asked for."""

    scope: str
    key: str
    method: str
    path: str
    fingerprint: str


@dataclass(frozen=True)
class StoredResponse:
    """The response kept for a key: replayed as it was, with only the headers worth repeating."""

    status: int
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True)
class Claim:
    """This request holds the key: it runs, then keeps its response (`complete`) or frees it (`release`)."""

    use: KeyUse
    claimed_at: datetime


@dataclass(frozen=True)
class Existing:
    """An earlier request holds the key: still running (`response` is None) or done."""

    method: str
    path: str
    fingerprint: str
    response: StoredResponse | None


class IdempotencyRecords:
    """A module's idempotency keys.

    A key is held from `claim` until it expires (`ttl` after the claim). A claim left `in_progress`
    for `stale_after` is taken to be abandoned (its process died before it could finish) and may be
    claimed again by the same request.
    """

    def __init__(
        self,
        uow: UnitOfWorkFactory,
        clock: Clock,
        *,
        ttl: timedelta = DEFAULT_TTL,
        stale_after: timedelta = DEFAULT_STALE_AFTER,
    ) -> None:
        if ttl <= timedelta(0) or stale_after <= timedelta(0):
            raise ValueError("ttl and stale_after must be positive")
        self._uow = uow
        self._clock = clock
        self._ttl = ttl
        self._stale_after = stale_after

    async def claim(self, use: KeyUse) -> Claim | Existing:
        """Take the key for this request, or say who holds it.

        Committed before it returns, so a concurrent request with the same key sees the claim. Two
        simultaneous first uses cannot both win: the insert's conflict (`ON CONFLICT DO NOTHING`) and
        the conditional update decide on the row itself.
        """
        for _ in range(_CLAIM_ATTEMPTS):
            now = self._clock.now()
            values = {
                "method": use.method,
                "path": use.path,
                "fingerprint": use.fingerprint,
                "status": IN_PROGRESS,
                "response_status": None,
                "response_headers": None,
                "response_body": None,
                "created_at": now,
                "expires_at": now + self._ttl,
            }
            async with self._uow() as uow:
                session = uow.session
                inserted = await session.execute(
                    upsert_insert(table, session.dialect)
                    .values(scope=use.scope, key=use.key, **values)
                    .on_conflict_do_nothing(index_elements=["scope", "key"])
                )
                if _rowcount(inserted) == 1:
                    await uow.commit()
                    return Claim(use, now)
                replaced = await session.execute(
                    update(table)
                    .where(
                        _row(use.scope, use.key),
                        or_(
                            table.c.expires_at <= now,
                            and_(
                                table.c.status == IN_PROGRESS,
                                table.c.fingerprint == use.fingerprint,
                                table.c.created_at <= now - self._stale_after,
                            ),
                        ),
                    )
                    .values(**values)
                )
                if _rowcount(replaced) == 1:
                    await uow.commit()
                    return Claim(use, now)
                row = (await session.execute(select(table).where(_row(use.scope, use.key)))).first()
            if row is not None:
                return _existing(row)
        return Existing(use.method, use.path, use.fingerprint, response=None)

    async def complete(self, claim: Claim, response: StoredResponse) -> bool:
        """Keep the response of a claimed key; False if the claim was lost (taken over as abandoned)."""
        async with self._uow() as uow:
            kept = await uow.session.execute(
                update(table)
                .where(_claimed(claim))
                .values(
                    status=DONE,
                    response_status=response.status,
                    response_headers=json.dumps(response.headers),
                    response_body=response.body,
                )
            )
            await uow.commit()
        return _rowcount(kept) == 1

    async def release(self, claim: Claim) -> None:
        """Free a claimed key, so that a retry runs again."""
        async with self._uow() as uow:
            await uow.session.execute(delete(table).where(_claimed(claim)))
            await uow.commit()

    async def purge_expired(self) -> int:
        """Delete the expired keys of this module; returns how many."""
        async with self._uow() as uow:
            purged = await uow.session.execute(delete(table).where(table.c.expires_at <= self._clock.now()))
            await uow.commit()
        return _rowcount(purged)


def _row(scope: str, key: str) -> Any:
    return and_(table.c.scope == scope, table.c.key == key)


def _claimed(claim: Claim) -> Any:
    # The claim's time tells it apart from a later claim of the same key (after expiry or abandonment).
    return and_(
        _row(claim.use.scope, claim.use.key),
        table.c.status == IN_PROGRESS,
        table.c.created_at == claim.claimed_at,
    )


def _existing(row: Row[Any]) -> Existing:
    response = None
    if row.status == DONE:
        response = StoredResponse(
            status=row.response_status,
            headers=json.loads(row.response_headers or "{}"),
            body=bytes(row.response_body or b""),
        )
    return Existing(row.method, row.path, row.fingerprint, response)


def _rowcount(result: Any) -> int:
    return cast(CursorResult[Any], result).rowcount
