"""Per-user opt-outs by category and channel. No row means the default: delivered.

`security` is transactional (sign-in and account mail): it is always delivered, so it cannot be
turned off, and the dispatcher never asks about it.
"""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from splitstone.kernel.clock import Clock
from splitstone.kernel.db import UnitOfWorkFactory, upsert_insert
from splitstone.kernel.errors import InvalidInput
from splitstone.modules.notifications.api import Category, Channel
from splitstone.modules.notifications.storage import preferences

LOCKED = frozenset({Category.SECURITY})


class PreferenceLocked(InvalidInput):
    code = "preference-locked"
    title = "This category is always delivered"


class PreferenceChange(BaseModel):
    """One choice: deliver `category` on `channel`, or not."""

    model_config = ConfigDict(extra="forbid")

    category: Category = Field(examples=["organization"])
    channel: Channel = Field(examples=["email"])
    enabled: bool = Field(examples=[False])


class Preference(BaseModel):
    category: Category = Field(examples=["organization"])
    channel: Channel = Field(examples=["email"])
    enabled: bool = Field(description="Whether this category is delivered on this channel.")
    locked: bool = Field(description="Always delivered (security mail); it cannot be turned off.")


class Preferences:
    """Reads and writes a user's opt-outs."""

    def __init__(self, uow: UnitOfWorkFactory, clock: Clock) -> None:
        self._uow = uow
        self._clock = clock

    async def opted_out(
        self, session: AsyncConnection, user_ids: Sequence[UUID], category: Category
    ) -> set[tuple[UUID, Channel]]:
        """The (user, channel) pairs among `user_ids` that turned `category` off, read with `session`."""
        if not user_ids or category in LOCKED:
            return set()
        rows = await session.execute(
            select(preferences.c.user_id, preferences.c.channel).where(
                preferences.c.user_id.in_(set(user_ids)),
                preferences.c.category == category,
                preferences.c.enabled.is_(False),
            )
        )
        return {(user_id, Channel(channel)) for user_id, channel in rows}

    async def get(self, user_id: UUID) -> list[Preference]:
        """Every category on every channel, in declaration order, with the defaults filled in."""
        async with self._uow(read_only=True) as uow:
            rows = await uow.session.execute(
                select(preferences.c.category, preferences.c.channel, preferences.c.enabled).where(
                    preferences.c.user_id == user_id
                )
            )
            chosen = {(category, channel): enabled for category, channel, enabled in rows}
        return [
            Preference(
                category=category,
                channel=channel,
                enabled=category in LOCKED or chosen.get((category.value, channel.value), True),
                locked=category in LOCKED,
            )
            for category in Category
            for channel in Channel
        ]

    async def put(self, user_id: UUID, changes: Sequence[PreferenceChange]) -> list[Preference]:
        """Apply the changes (others stay as they are) and return the whole matrix.

        Raises `PreferenceLocked` when a change turns off a locked category; nothing is applied then.
        """
        refused = sorted({c.category.value for c in changes if c.category in LOCKED and not c.enabled})
        if refused:
            raise PreferenceLocked(
                f"{', '.join(refused)} notifications are always delivered and cannot be turned off."
            )
        await self._write(user_id, {(c.category, c.channel): c.enabled for c in changes})
        return await self.get(user_id)

    async def unsubscribe(self, user_id: UUID, category: Category) -> None:
        """Turn off email for `category` (the one-click unsubscribe); idempotent."""
        if category in LOCKED:
            raise PreferenceLocked(f"{category.value} email is always delivered; it has no unsubscribe.")
        await self._write(user_id, {(category, Channel.EMAIL): False})

    async def _write(self, user_id: UUID, wanted: dict[tuple[Category, Channel], bool]) -> None:
        wanted = {key: enabled for key, enabled in wanted.items() if key[0] not in LOCKED}
        if not wanted:
            return
        now = self._clock.now()
        async with self._uow() as uow:
            session = uow.session
            for (category, channel), enabled in wanted.items():
                statement = upsert_insert(preferences, session.dialect).values(
                    user_id=user_id, category=category, channel=channel, enabled=enabled, updated_at=now
                )
                await session.execute(
                    statement.on_conflict_do_update(
                        index_elements=["user_id", "category", "channel"],
                        set_={"enabled": statement.excluded.enabled, "updated_at": now},
                    )
                )
            await uow.commit()
