"""Opaque cursors: a round trip gives the id back; anything else is a clear 422 problem."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from uuid6 import uuid7

from splitstone.kernel.pagination import InvalidCursor, decode_cursor, encode_cursor


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
    assert (refused.value.status, refused.value.code) == (422, "invalid-cursor")
