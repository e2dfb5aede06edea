"""Webhook secrets and signatures, as the Standard Webhooks specification defines them.

A secret reads `whsec_<base64 of 24 random bytes>`; the HMAC key is those bytes. A message is signed
as `v1,<base64 HMAC-SHA256(key, "<webhook-id>.<webhook-timestamp>.<body>")>`, and `webhook-signature`
carries one such signature per valid secret, separated by spaces, so that a receiver can verify with
either the old or the new secret while a rotation is under way.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Sequence
from datetime import datetime

SECRET_PREFIX = "whsec_"  # noqa: S105 (a prefix, not a secret)
SECRET_BYTES = 24
USER_AGENT = "Splitstone-Webhooks/1"


def generate_secret() -> str:
    """A new endpoint secret: `whsec_` and the base64 of 24 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


def secret_key(secret: str) -> bytes:
    """The HMAC key of a `whsec_...` secret; `ValueError` if it is not one."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError("a webhook secret starts with 'whsec_'")
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except binascii.Error as bad:
        raise ValueError("a webhook secret is base64 after 'whsec_'") from bad
    if not key:
        raise ValueError("a webhook secret may not be empty")
    return key


def sign(secret: str, message_id: str, timestamp: int, body: str) -> str:
    """One `v1,<signature>` of the message, with one secret."""
    signed = f"{message_id}.{timestamp}.{body}".encode()
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def signed_headers(
    message_id: str, sent_at: datetime, body: str, signing_secrets: Sequence[str]
) -> dict[str, str]:
    """Every header of a webhook request: its id, timestamp and signatures (one per secret)."""
    if not signing_secrets:
        raise ValueError("at least one secret signs a message")
    timestamp = int(sent_at.timestamp())
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(sign(s, message_id, timestamp, body) for s in signing_secrets),
        "content-type": "application/json",
        "user-agent": USER_AGENT,
    }
