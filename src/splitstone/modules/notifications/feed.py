"""The in-app inbox: a user's feed items, read and marked, and the wake-up of their live streams.

Items are written by the dispatcher inside its own transaction (`add`), which then `announce`s the
users after it commits. Ids are UUIDv7, so ordering by id is ordering by creation, and a page cursor is
just the last id of the page.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any
from uuid import UUID

from pydantic import BaseModel, Field
from sqlalchemy import Select, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection
from uuid6 import uuid7

from splitstone.kernel.clock import Clock
from splitstone.kernel.db import UnitOfWorkFactory
from splitstone.kernel.pagination import decode_cursor, encode_cursor
from splitstone.modules.notifications.api import Category, NotificationNotFound
from splitstone.modules.notifications.storage import feed_items

_ITEM_ID = "0192b3c4-5d6e-7f80-9a1b-2c3d4e5f6a7b"
_ORG_ID = "0191f0a4-7c1e-7b3a-9d2e-5f6a7b8c9d0e"


class InboxItem(BaseModel):
    """One entry of a user's in-app inbox, as the API and the live stream show it."""

    id: UUID = Field(examples=[_ITEM_ID])
    kind: str = Field(examples=["auth.member_joined"])
    category: Category = Field(examples=["organization"])
    title: str = Field(examples=["Linus joined Acme Inc."])
    body: str = Field(examples=["Linus (linus@example.com) joined as member."])
    link: str | None = Field(description="Where the item leads in the app, if anywhere.")
    data: dict[str, Any] = Field(
        description="The notification's data, for clients that render items themselves.",
        examples=[{"member_name": "Linus", "member_email": "linus@example.com", "role": "member"}],
    )
    org_id: UUID | None = Field(description="The organization it concerns, if any.", examples=[_ORG_ID])
    created_at: datetime
    read_at: datetime | None = Field(description="When it was marked read; null while unread.")
    archived_at: datetime | None = Field(description="When it was archived; archived items leave the inbox.")


class InboxPage(BaseModel):
    items: list[InboxItem] = Field(description="Newest first.")
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null on the last page.", examples=["AZKzxF1uf4Ca"]
    )


class StreamBatch(BaseModel):
    """What a live stream reads on each wake-up: items after a position (oldest first), and the badge."""

    items: list[InboxItem]
    unread: int


class Waiter:
    """One live stream's doorbell: `wait` returns early when its user is announced."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._event = asyncio.Event()

    def ring(self) -> None:
        # `announce` may run on another thread's loop (a worker beside the server): never touch the
        # event from there directly.
        with contextlib.suppress(RuntimeError):  # its loop is closed: nobody is listening any more
            self._loop.call_soon_threadsafe(self._event.set)

    async def wait(self, seconds: float) -> bool:
        """Until rung or `seconds` pass; True when rung. A ring while nobody waited counts."""
        try:
            async with asyncio.timeout(seconds):
                await self._event.wait()
        except TimeoutError:
            return False
        self._event.clear()
        return True


class Feed:
    """Writes, reads and marks feed items; keeps the doorbells of the live streams in this process."""

    def __init__(self, uow: UnitOfWorkFactory, clock: Clock) -> None:
        self._uow = uow
        self._clock = clock
        self._waiters: dict[UUID, set[Waiter]] = {}
        self._lock = threading.Lock()

    # -- written by the dispatcher ------------------------------------------------------------------------

    async def add(
        self,
        session: AsyncConnection,
        *,
        user_id: UUID,
        org_id: UUID | None,
        notification_id: UUID | None,
        kind: str,
        category: Category,
        title: str,
        body: str,
        link: str | None,
        data: dict[str, Any],
    ) -> UUID:
        """Insert one item in the caller's transaction (not committed here); returns its id.

        A title longer than its column is cut, and a link longer than its column left out, rather than
        failing the whole notification.
        """
        item_id = uuid7()
        await session.execute(
            feed_items.insert().values(
                id=item_id,
                user_id=user_id,
                org_id=org_id,
                notification_id=notification_id,
                kind=kind,
                category=category,
                title=title[:300],
                body=body,
                link=link if link is None or len(link) <= 2000 else None,
                data=json.dumps(data, default=str),
                created_at=self._clock.now(),
            )
        )
        return item_id

    def announce(self, user_ids: Iterable[UUID]) -> None:
        """Wake the live streams of these users in this process (after the items were committed)."""
        with self._lock:
            waiters = [w for user_id in set(user_ids) for w in self._waiters.get(user_id, ())]
        for waiter in waiters:
            waiter.ring()

    @property
    def listening(self) -> int:
        """How many live streams this process has open."""
        with self._lock:
            return sum(len(waiters) for waiters in self._waiters.values())

    @contextmanager
    def subscribe(self, user_id: UUID) -> Iterator[Waiter]:
        """A doorbell rung by `announce(user_id)`, for as long as the `with` block lasts."""
        waiter = Waiter()
        with self._lock:
            self._waiters.setdefault(user_id, set()).add(waiter)
        try:
            yield waiter
        finally:
            with self._lock:
                remaining = self._waiters.get(user_id, set())
                remaining.discard(waiter)
                if not remaining:
                    self._waiters.pop(user_id, None)

    # -- the inbox ------------------------------------------------------------------------------------

    async def page(
        self,
        user_id: UUID,
        *,
        cursor: str | None = None,
        limit: int = 20,
        unread_only: bool = False,
        archived: bool = False,
        org_id: UUID | None = None,
    ) -> InboxPage:
        """A page of the user's items, newest first: archived ones only, or (default) none of them."""
        archived_at = feed_items.c.archived_at
        archived_filter = archived_at.is_not(None) if archived else archived_at.is_(None)
        query = _items(user_id).where(archived_filter).order_by(feed_items.c.id.desc()).limit(limit + 1)
        if cursor is not None:
            query = query.where(feed_items.c.id < decode_cursor(cursor))
        if unread_only:
            query = query.where(feed_items.c.read_at.is_(None))
        if org_id is not None:
            query = query.where(feed_items.c.org_id == org_id)
        async with self._uow(read_only=True) as uow:
            rows = (await uow.session.execute(query)).mappings().all()
        items = [_item(r) for r in rows[:limit]]
        more = len(rows) > limit
        return InboxPage(items=items, next_cursor=encode_cursor(items[-1].id) if more else None)

    async def unread_count(self, user_id: UUID, org_id: UUID | None = None) -> int:
        """How many of the user's items are unread and not archived (the badge)."""
        async with self._uow(read_only=True) as uow:
            return await _unread(uow.session, user_id, org_id)

    async def mark_read(self, user_id: UUID, item_id: UUID) -> InboxItem:
        """Idempotent: an item read before keeps its first `read_at`."""
        return await self._mark(user_id, item_id, "read_at", read=True)

    async def mark_unread(self, user_id: UUID, item_id: UUID) -> InboxItem:
        return await self._mark(user_id, item_id, "read_at", read=False)

    async def archive(self, user_id: UUID, item_id: UUID) -> InboxItem:
        return await self._mark(user_id, item_id, "archived_at", read=True)

    async def unarchive(self, user_id: UUID, item_id: UUID) -> InboxItem:
        return await self._mark(user_id, item_id, "archived_at", read=False)

    async def mark_all_read(self, user_id: UUID, org_id: UUID | None = None) -> int:
        """Mark every unread, unarchived item read (of one organization, if given); how many changed."""
        statement = (
            update(feed_items)
            .where(
                feed_items.c.user_id == user_id,
                feed_items.c.read_at.is_(None),
                feed_items.c.archived_at.is_(None),
            )
            .values(read_at=self._clock.now())
        )
        if org_id is not None:
            statement = statement.where(feed_items.c.org_id == org_id)
        async with self._uow() as uow:
            changed = (await uow.session.execute(statement)).rowcount
            await uow.commit()
        if changed:
            self.announce([user_id])
        return int(changed)

    async def _mark(self, user_id: UUID, item_id: UUID, column: str, *, read: bool) -> InboxItem:
        """Set (`read=True`) or clear a timestamp column of the user's own item; 404 for anyone else's."""
        target = feed_items.c[column]
        async with self._uow() as uow:
            changed = await uow.session.execute(
                update(feed_items)
                .where(
                    feed_items.c.id == item_id,
                    feed_items.c.user_id == user_id,
                    target.is_(None) if read else target.is_not(None),
                )
                .values({column: self._clock.now() if read else None})
            )
            row = (
                (await uow.session.execute(_items(user_id).where(feed_items.c.id == item_id)))
                .mappings()
                .first()
            )
            if row is None:
                raise NotificationNotFound(f"You have no notification {item_id}.")
            await uow.commit()
        if changed.rowcount:
            self.announce([user_id])  # other tabs' badges
        return _item(row)

    # -- the live stream ----------------------------------------------------------------------------------

    async def latest_id(self, user_id: UUID) -> UUID | None:
        """The id of the user's newest item, if any."""
        async with self._uow(read_only=True) as uow:
            found = await uow.session.execute(
                select(feed_items.c.id)
                .where(feed_items.c.user_id == user_id)
                .order_by(feed_items.c.id.desc())
                .limit(1)
            )
            return found.scalar()

    async def ids_between(self, user_id: UUID, after: UUID | None, upto: UUID) -> list[UUID]:
        """The ids of the user's items in (`after`, `upto`]."""
        query = select(feed_items.c.id).where(feed_items.c.user_id == user_id, feed_items.c.id <= upto)
        if after is not None:
            query = query.where(feed_items.c.id > after)
        async with self._uow(read_only=True) as uow:
            return list((await uow.session.execute(query)).scalars())

    async def after(self, user_id: UUID, position: UUID | None, limit: int) -> StreamBatch:
        """Up to `limit` of the user's items with ids above `position`, oldest first, and the badge."""
        query = _items(user_id).order_by(feed_items.c.id).limit(limit)
        if position is not None:
            query = query.where(feed_items.c.id > position)
        async with self._uow(read_only=True) as uow:
            rows = (await uow.session.execute(query)).mappings().all()
            unread = await _unread(uow.session, user_id, None)
        return StreamBatch(items=[_item(r) for r in rows], unread=unread)


def _items(user_id: UUID) -> Select[Any]:
    return select(feed_items).where(feed_items.c.user_id == user_id)


async def _unread(session: AsyncConnection, user_id: UUID, org_id: UUID | None) -> int:
    # The same predicate as the partial index `ix_feed_items_unread`, so the count reads only that.
    query = select(func.count()).where(
        feed_items.c.user_id == user_id,
        feed_items.c.read_at.is_(None),
        feed_items.c.archived_at.is_(None),
    )
    if org_id is not None:
        query = query.where(feed_items.c.org_id == org_id)
    return int((await session.execute(query)).scalar_one())


def _item(row: Any) -> InboxItem:
    return InboxItem(
        id=row["id"],
        kind=row["kind"],
        category=Category(row["category"]),
        title=row["title"],
        body=row["body"],
        link=row["link"],
        data=json.loads(row["data"]),
        org_id=row["org_id"],
        created_at=row["created_at"],
        read_at=row["read_at"],
        archived_at=row["archived_at"],
    )
