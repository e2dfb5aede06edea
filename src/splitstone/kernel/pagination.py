"""Opaque keyset cursors: a page ends at a row, the next page starts after it, never with OFFSET.

Two kinds. `encode_cursor` is the id alone: UUIDv7 ids order by creation time, so "newest first, from
a cursor" is `WHERE id < :cursor ORDER BY id DESC`, which an index on (scope, id) answers. It is the
id's bytes in base64url.

`encode_keyset_cursor` is for lists sorted on another column: it holds the last row's sort value and
id, so the next page is `WHERE (sort_col, id) < (:value, :id)`, answered by an index on (scope,
sort_col, id). It also names the list it belongs to (a digest of the sort and the filters), so a
cursor taken from one list is refused by another instead of silently skipping rows.

Both are opaque to clients and refused (400 `invalid-cursor`) unless they are exactly what the
encoder produced.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from uuid import UUID

from splitstone.kernel.errors import InvalidInput

KeyValue = str | int | None
"""A sort value a keyset cursor can hold (dates and times as ISO strings)."""


class InvalidCursor(InvalidInput):
    code = "invalid-cursor"
    status = 400
    title = "Invalid cursor"


_NOT_OURS = "The cursor is not one this API returned."


def encode_cursor(last_id: UUID) -> str:
    return base64.urlsafe_b64encode(last_id.bytes).rstrip(b"=").decode("ascii")


def decode_cursor(cursor: str) -> UUID:
    """The id behind a cursor from `encode_cursor`; `InvalidCursor` for anything else."""
    raw = _unbase64(cursor)
    if len(raw) != 16 or encode_cursor(UUID(bytes=raw)) != cursor:
        raise InvalidCursor(_NOT_OURS)
    return UUID(bytes=raw)


def encode_keyset_cursor(value: KeyValue, last_id: UUID, *, scope: str = "") -> str:
    """A cursor after the row (`value`, `last_id`) of the list named by `scope` (its sort and filters)."""
    payload = json.dumps([_digest(scope), value, last_id.hex], separators=(",", ":"))
    return base64.urlsafe_b64encode(payload.encode()).rstrip(b"=").decode("ascii")


def decode_keyset_cursor(cursor: str, *, scope: str = "") -> tuple[KeyValue, UUID]:
    """(sort value, id) behind a cursor from `encode_keyset_cursor` for the same `scope`.

    `InvalidCursor` for anything else, including a cursor of another list (another sort or filters).
    The caller still checks that the value has the type its sort column expects.
    """
    raw = _unbase64(cursor)
    try:
        digest, value, id_hex = json.loads(raw.decode())
        last_id = UUID(hex=id_hex)
    except (ValueError, TypeError, AttributeError):
        raise InvalidCursor(_NOT_OURS) from None
    if not (value is None or isinstance(value, str | int)) or isinstance(value, bool):
        raise InvalidCursor(_NOT_OURS)
    if encode_keyset_cursor(value, last_id, scope=scope) != cursor:
        if isinstance(digest, str) and digest != _digest(scope):
            raise InvalidCursor("The cursor belongs to another list (another sort, order or filters).")
        raise InvalidCursor(_NOT_OURS)
    return value, last_id


def _unbase64(cursor: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(cursor.encode("ascii") + b"=" * (-len(cursor) % 4))
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raise InvalidCursor(_NOT_OURS) from None


def _digest(scope: str) -> str:
    return hashlib.sha256(scope.encode()).hexdigest()[:12]
