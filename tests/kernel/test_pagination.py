"""Opaque cursors: a round trip gives the id (and sort value) back; anything else is a clear 400 problem."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from uuid6 import uuid7

from splitstone.kernel.pagination import (
    InvalidCursor,
    decode_cursor,
    decode_keyset_cursor,
    encode_cursor,
    encode_keyset_cursor,
)


@given(st.uuids())
def test_a_cursor_gives_its_id_back(value: object) -> None:
    cursor = encode_cursor(value)  # type: ignore[arg-type]
    assert decode_cursor(cursor) == value
    assert "=" not in cursor
    assert len(cursor) == 22


@pytest.mark.parametrize(
    "cursor",
    [
        "",
        "not a cursor!",
        "AAAA",  # too short for an id
        encode_cursor(uuid7()) + "AA",  # too long
        encode_cursor(uuid7()) + "==",  # padded: not what the API returned
    ],
)
def test_anything_else_is_refused(cursor: str) -> None:
    with pytest.raises(InvalidCursor, match="not one this API returned") as refused:
        decode_cursor(cursor)
    assert (refused.value.status, refused.value.code) == (400, "invalid-cursor")


values = st.one_of(st.none(), st.integers(-(2**63), 2**63), st.text(max_size=40))


@given(values, st.uuids(), st.text(max_size=60))
def test_a_keyset_cursor_gives_its_value_and_id_back(value: object, last_id: object, scope: str) -> None:
    cursor = encode_keyset_cursor(value, last_id, scope=scope)  # type: ignore[arg-type]
    assert decode_keyset_cursor(cursor, scope=scope) == (value, last_id)
    assert "=" not in cursor
    assert cursor.isascii()


def test_a_keyset_cursor_belongs_to_its_list() -> None:
    cursor = encode_keyset_cursor("2026-01-01", uuid7(), scope='["due","asc"]')
    with pytest.raises(InvalidCursor, match="another list") as refused:
        decode_keyset_cursor(cursor, scope='["created","desc"]')
    assert (refused.value.status, refused.value.code) == (400, "invalid-cursor")
    # An id cursor is not a keyset cursor, nor the other way round.
    with pytest.raises(InvalidCursor):
        decode_keyset_cursor(encode_cursor(uuid7()))
    with pytest.raises(InvalidCursor):
        decode_cursor(cursor)


@pytest.mark.parametrize(
    "cursor",
    [
        "",
        "not a cursor!",
        "AAAA",
        "eyJhIjoxfQ",  # {"a":1}
        "WzEsMiwzXQ",  # [1,2,3]
        "WyJ4IiwxLjUsIjAwIl0",  # ["x",1.5,"00"]: a float, a bad id
        "WyJ4Iix0cnVlLCIwMTk0ZjBhNDQ0NDQ3YjNhOWQyZTVmNmE3YjhjOWQwZSJd",  # a boolean value
        encode_keyset_cursor(1, uuid7()) + "==",  # padded
        encode_keyset_cursor(1, uuid7()) + "A",  # too long
        "ü" * 8,  # not ASCII
    ],
)
def test_anything_else_is_refused_as_a_keyset_cursor(cursor: str) -> None:
    with pytest.raises(InvalidCursor, match="not one this API returned") as refused:
        decode_keyset_cursor(cursor)
    assert refused.value.status == 400
