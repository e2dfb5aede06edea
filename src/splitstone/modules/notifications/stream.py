"""The live inbox: a user's new feed items as Server-Sent Events.

A stream wakes when `Feed.announce` rings its doorbell (items written by this process) and otherwise
every `poll_seconds` (items written by another process, such as a worker running apart). On each
wake-up it reads the items it has not sent yet, sends each as a `notification` event whose `id` is the
item id, then an `unread` event with the badge count whenever that changed.

Ids are UUIDv7 and taken before their transaction commits, so an item can become visible after one
with a higher id (two transactions in flight, or clocks of two hosts a little apart). A plain
`id > last sent` would skip it for good; the stream therefore rereads a window of `LATE_WINDOW`
before its newest item and remembers which ids in that window it has sent.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from uuid import UUID

import anyio
from sse_starlette import ServerSentEvent

from splitstone.kernel.errors import InvalidInput
from splitstone.modules.notifications.feed import Feed, InboxItem, Waiter

LATE_WINDOW = timedelta(seconds=60)
BATCH = 100  # items read per query; a longer backlog is read in several


class InvalidLastEventId(InvalidInput):
    code = "invalid-last-event-id"
    title = "Invalid Last-Event-ID"


def window_floor(item_id: UUID) -> UUID:
    """The smallest UUIDv7 of the moment `LATE_WINDOW` before `item_id` was made."""
    millis = (item_id.int >> 80) - int(LATE_WINDOW.total_seconds() * 1000)
    return UUID(int=max(millis, 0) << 80)


@dataclass
class Position:
    """Where a stream stands: its newest item, and every item id it has sent within the window."""

    newest: UUID | None
    sent: set[UUID] = field(default_factory=set)

    @property
    def floor(self) -> UUID | None:
        """Everything above this is read on each wake-up."""
        return None if self.newest is None else window_floor(self.newest)

    def take(self, items: Iterable[InboxItem]) -> list[InboxItem]:
        """The items not sent yet, now counted as sent; forgets ids that fell out of the window."""
        fresh = [item for item in items if item.id not in self.sent]
        for item in fresh:
            self.sent.add(item.id)
            if self.newest is None or item.id > self.newest:
                self.newest = item.id
        floor = self.floor
        if floor is not None:
            self.sent = {i for i in self.sent if i > floor}
        return fresh


async def open_position(feed: Feed, user_id: UUID, last_event_id: str | None) -> Position:
    """Where a new stream starts: after `last_event_id` (a resumed stream), or after everything so far."""
    if last_event_id is None:
        newest = await feed.latest_id(user_id)
    else:
        try:
            newest = UUID(last_event_id.strip())
        except ValueError:
            newest = None
        if newest is None or newest.version != 7:
            raise InvalidLastEventId("Last-Event-ID must be the id of an event this stream sent.")
    if newest is None:
        return Position(newest=None)
    return Position(newest=newest, sent=set(await feed.ids_between(user_id, window_floor(newest), newest)))


async def events(
    feed: Feed,
    user_id: UUID,
    position: Position,
    *,
    poll_seconds: float,
    stop: anyio.Event,
    max_seconds: float = float("inf"),
) -> AsyncIterator[ServerSentEvent]:
    """The stream's events until `stop` is set (server shutdown) or `max_seconds` passed; a
    disconnect cancels it instead."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max_seconds
    unread: int | None = None
    with feed.subscribe(user_id) as doorbell:
        # Ending on our own, rather than being cancelled, lets the response finish its body properly.
        ringer = asyncio.create_task(_ring_when(stop, doorbell))
        try:
            while not stop.is_set() and loop.time() < deadline:
                # The window holds at most `len(sent)` items already sent, so this reads every new one
                # up to BATCH of them.
                limit = len(position.sent) + BATCH
                batch = await feed.after(user_id, position.floor, limit)
                fresh = position.take(batch.items)
                for item in fresh:
                    yield notification_event(item)
                if fresh or batch.unread != unread:
                    unread = batch.unread
                    yield unread_event(unread)
                if len(batch.items) < limit:  # else there is more to read at once
                    await doorbell.wait(max(0.0, min(poll_seconds, deadline - loop.time())))
        finally:
            ringer.cancel()


async def _ring_when(stop: anyio.Event, doorbell: Waiter) -> None:
    await stop.wait()
    doorbell.ring()


def notification_event(item: InboxItem) -> ServerSentEvent:
    return ServerSentEvent(item.model_dump_json(), event="notification", id=str(item.id))


def unread_event(count: int) -> ServerSentEvent:
    # No `id`: the client's last event id stays that of the last item.
    return ServerSentEvent(json.dumps({"unread": count}), event="unread")


def keepalive() -> ServerSentEvent:
    return ServerSentEvent(comment="ping")
