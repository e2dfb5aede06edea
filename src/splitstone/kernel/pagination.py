"""Opaque keyset cursors over UUIDv7 ids: a page ends at an id, the next page starts below (or above) it.

UUIDv7 ids order by creation time, so "newest first, from a cursor" is `WHERE id < :cursor ORDER BY
id DESC`, which an index on (scope, id) answers without OFFSET. The cursor is the id's bytes in
base64url: opaque to clients, and refused unless it is exactly what `encode_cursor` produced.
"""

from __future__ import annotations

import base64
import binascii
from uuid import UUID

from splitstone.kernel.errors import InvalidInput


class InvalidCursor(InvalidInput):
    code = "invalid-cursor"
    title = "Invalid cursor"


def encode_cursor(last_id: UUID) -> str:
    return base64.urlsafe_b64encode(last_id.bytes).rstrip(b"=").decode("ascii")


def decode_cursor(cursor: str) -> UUID:
    """The id behind a cursor from `encode_cursor`; `InvalidCursor` for anything else."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    except (binascii.Error, ValueError):
        raise InvalidCursor("The cursor is not one this API returned.") from None
    if len(raw) != 16 or encode_cursor(UUID(bytes=raw)) != cursor:
        raise InvalidCursor("The cursor is not one this API returned.")
    return UUID(bytes=raw)
