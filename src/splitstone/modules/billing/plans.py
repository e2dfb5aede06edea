"""Plan versions: the catalog's plans as stored, so a subscription keeps the version it signed up to.

On first use in a process, every plan of the catalog whose definition is new is stored as that plan's
next version (`sync`). Any number of processes may sync at once: a definition is unique per plan
(its fingerprint), so each is stored once.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection
from uuid6 import uuid7

from splitstone.kernel.clock import Clock
from splitstone.kernel.db import UnitOfWorkFactory, upsert_insert
from splitstone.modules.billing.api import Interval, UnknownPlan
from splitstone.modules.billing.catalog import Catalog, PlanDefinition
from splitstone.modules.billing.storage import plan_versions

_SYNC_ATTEMPTS = 5


@dataclass(frozen=True)
class PlanVersion:
    id: UUID
    code: str
    version: int
    definition: PlanDefinition
    created_at: datetime

    @property
    def name(self) -> str:
        return self.definition.plan.name

    def price(self, interval: Interval) -> int:
        return self.definition.price(interval)


class Plans:
    """The catalog, and every stored version of its plans."""

    def __init__(self, uow: UnitOfWorkFactory, clock: Clock, catalog: Catalog) -> None:
        self._uow = uow
        self._clock = clock
        self.catalog = catalog
        self._current: dict[str, PlanVersion] = {}
        self._by_id: dict[UUID, PlanVersion] = {}
        self._lock = asyncio.Lock()

    @property
    def default_code(self) -> str:
        return self.catalog.default_plan

    async def current(self, code: str) -> PlanVersion:
        """The version of `code` the catalog defines now; raises `UnknownPlan`."""
        current = await self.sync()
        try:
            return current[code]
        except KeyError:
            known = ", ".join(self.catalog.plans)
            raise UnknownPlan(f"There is no plan {code!r}; plans: {known}.", plan=code) from None

    async def default(self) -> PlanVersion:
        return await self.current(self.catalog.default_plan)

    async def all_current(self) -> list[PlanVersion]:
        """The catalog's plans, in its order."""
        current = await self.sync()
        return [current[code] for code in self.catalog.plans]

    async def by_id(self, version_id: UUID) -> PlanVersion:
        """Any stored version (versions never change, so they are cached for good)."""
        found = self._by_id.get(version_id)
        if found is not None:
            return found
        async with self._uow(read_only=True) as uow:
            row = (
                (await uow.session.execute(select(plan_versions).where(plan_versions.c.id == version_id)))
                .mappings()
                .one()
            )
        version = _version(row)
        self._by_id[version.id] = version
        return version

    async def versions(self, code: str) -> list[PlanVersion]:
        """Every stored version of a plan, oldest first."""
        async with self._uow(read_only=True) as uow:
            rows = (
                (
                    await uow.session.execute(
                        select(plan_versions)
                        .where(plan_versions.c.code == code)
                        .order_by(plan_versions.c.version)
                    )
                )
                .mappings()
                .all()
            )
        return [_version(r) for r in rows]

    async def sync(self) -> dict[str, PlanVersion]:
        """The current version of each plan, storing the catalog's new definitions first.

        Cached once the storing transaction has committed: inside an event or job handler it joins
        the handler's transaction (SQLite has one writer), which may still roll back.
        """
        if self._current:
            return self._current
        async with self._lock:
            if self._current:
                return self._current
            found: dict[str, PlanVersion] = {}
            async with self._uow() as uow:
                for definition in self.catalog.definitions():
                    found[definition.code] = await self._store(uow.session, definition)
                uow.after_commit(lambda: self._remember(found))
                await uow.commit()
            return found

    def _remember(self, versions: dict[str, PlanVersion]) -> None:
        self._current = versions
        self._by_id.update({v.id: v for v in versions.values()})

    async def _store(self, session: AsyncConnection, definition: PlanDefinition) -> PlanVersion:
        fingerprint = definition.fingerprint
        for _ in range(_SYNC_ATTEMPTS):
            existing = (
                (
                    await session.execute(
                        select(plan_versions).where(
                            plan_versions.c.code == definition.code,
                            plan_versions.c.fingerprint == fingerprint,
                        )
                    )
                )
                .mappings()
                .first()
            )
            if existing is not None:
                return _version(existing)
            latest = await session.scalar(
                select(func.max(plan_versions.c.version)).where(plan_versions.c.code == definition.code)
            )
            insert = upsert_insert(plan_versions, session.dialect).values(
                id=uuid7(),
                code=definition.code,
                version=(latest or 0) + 1,
                fingerprint=fingerprint,
                definition=definition.model_dump_json(),
                created_at=self._clock.now(),
            )
            # Another process may store this definition, or another one as the same version, first.
            await session.execute(insert.on_conflict_do_nothing())
        raise RuntimeError(f"could not store plan {definition.code!r} after {_SYNC_ATTEMPTS} attempts")


def _version(row: object) -> PlanVersion:
    mapping = dict(row)  # type: ignore[call-overload]
    return PlanVersion(
        id=mapping["id"],
        code=mapping["code"],
        version=mapping["version"],
        definition=PlanDefinition.model_validate_json(mapping["definition"]),
        created_at=mapping["created_at"],
    )
