"""Where a live stream stands: the window that catches late commits, and what counts as sent."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import UUID

from uuid6 import uuid7

from splitstone.modules.notifications.api import Category
from splitstone.modules.notifications.feed import InboxItem
from splitstone.modules.notifications.stream import LATE_WINDOW, Position, window_floor


def _id(millis: int) -> UUID:
    """A UUIDv7 made at `millis`, with some randomness below."""
    return UUID(int=(millis << 80) | (7 << 76) | (2 << 62) | 12345)


def _item(item_id: UUID) -> InboxItem:
    return InboxItem(
        id=item_id,
        kind="auth.member_joined",
        category=Category.ORGANIZATION,
        title="t",
        body="b",
        link=None,
        data={},
        org_id=None,
        created_at=datetime.now(UTC),
        read_at=None,
        archived_at=None,
    )


def test_the_floor_is_the_window_before_an_id() -> None:
    window = int(LATE_WINDOW.total_seconds() * 1000)
    at = 1_800_000_000_000
    floor = window_floor(_id(at))
    assert floor.int >> 80 == at - window
    assert floor < _id(at - window) < _id(at)
    assert window_floor(_id(5)) == UUID(int=0)


def test_a_new_stream_sends_only_what_it_has_not_sent() -> None:
    a, b, c = uuid7(), uuid7(), uuid7()
    position = Position(newest=b, sent={a, b})
    assert [i.id for i in position.take([_item(a), _item(b), _item(c)])] == [c]
    assert position.newest == c
    assert position.take([_item(a), _item(b), _item(c)]) == []


def test_a_late_commit_below_the_newest_id_is_still_sent_once() -> None:
    early, late_commit, newest = uuid7(), uuid7(), uuid7()
    position = Position(newest=None)
    assert [i.id for i in position.take([_item(early), _item(newest)])] == [early, newest]
    # `late_commit` got its id before `newest` but became visible after it.
    assert [i.id for i in position.take([_item(early), _item(late_commit), _item(newest)])] == [late_commit]
    assert position.newest == newest
    assert position.take([_item(early), _item(late_commit), _item(newest)]) == []


def test_ids_out_of_the_window_are_forgotten() -> None:
    window = int(LATE_WINDOW.total_seconds() * 1000)
    old, recent = _id(1_800_000_000_000), _id(1_800_000_000_000 + window + 1)
    position = Position(newest=None)
    position.take([_item(old), _item(recent)])
    assert position.sent == {recent}
    assert position.floor is not None
    assert position.floor > old
