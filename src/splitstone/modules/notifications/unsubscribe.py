"""Signed one-click unsubscribe links (RFC 8058): who and what, in the link, so no sign-in is needed.

A token is base64url (no padding) of `version (1 byte) | user id (16 bytes) | category (UTF-8) | MAC`,
where the MAC is HMAC-SHA256 over a purpose label and everything before it. The label keeps these
MACs apart from anything else the same secret may sign later; the version lets the format change
while old links keep working. Unsubscribe links do not expire: mail stays in inboxes for years.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from urllib.parse import urlencode
from uuid import UUID

from splitstone.kernel.app import API_PREFIX
from splitstone.kernel.errors import InvalidInput
from splitstone.modules.notifications.api import Category

UNSUBSCRIBE_PATH = f"{API_PREFIX}/notifications/unsubscribe"

_VERSION = 1
_PURPOSE = b"splitstone/notifications/unsubscribe\x00"
_MAC_SIZE = hashlib.sha256().digest_size
_MAX_TOKEN = 200  # far above any real token; refuses junk before decoding it


class InvalidUnsubscribeLink(InvalidInput):
    code = "invalid-unsubscribe-link"
    title = "Invalid unsubscribe link"


class UnsubscribeLinks:
    """Makes and checks the links that turn one category's email off for one user."""

    def __init__(self, secret: bytes, base_url: str) -> None:
        if not secret:
            raise ValueError("unsubscribe links need a secret")
        self._secret = secret
        self._base_url = base_url.rstrip("/")

    def url(self, user_id: UUID, category: Category) -> str:
        """The link for a `List-Unsubscribe` header and an email's footer."""
        return f"{self._base_url}{UNSUBSCRIBE_PATH}?{urlencode({'token': self.token(user_id, category)})}"

    def token(self, user_id: UUID, category: Category) -> str:
        payload = bytes([_VERSION]) + user_id.bytes + category.value.encode()
        return base64.urlsafe_b64encode(payload + self._mac(payload)).rstrip(b"=").decode()

    def verify(self, token: str) -> tuple[UUID, Category]:
        """The user and category a token was made for; `InvalidUnsubscribeLink` if it was not made here."""
        raw = _decode(token)
        payload, mac = raw[:-_MAC_SIZE], raw[-_MAC_SIZE:]
        # Checked before anything else is read from the payload, in constant time.
        if len(payload) < 18 or not hmac.compare_digest(mac, self._mac(payload)):
            raise InvalidUnsubscribeLink("The link is damaged or was not made by this service.")
        if payload[0] != _VERSION:
            raise InvalidUnsubscribeLink("The link's format is not supported any more.")
        try:
            category = Category(payload[17:].decode())
        except (UnicodeDecodeError, ValueError):
            raise InvalidUnsubscribeLink("The link is for a category that no longer exists.") from None
        return UUID(bytes=payload[1:17]), category

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._secret, _PURPOSE + payload, hashlib.sha256).digest()


def _decode(token: str) -> bytes:
    if not token or len(token) > _MAX_TOKEN or not token.isascii():
        raise InvalidUnsubscribeLink("The link is damaged or was not made by this service.")
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        raise InvalidUnsubscribeLink("The link is damaged or was not made by this service.") from None
    # The decoder skips stray characters; only the exact encoding is a token.
    if len(raw) <= _MAC_SIZE or base64.urlsafe_b64encode(raw).rstrip(b"=").decode() != token:
        raise InvalidUnsubscribeLink("The link is damaged or was not made by this service.")
    return raw
