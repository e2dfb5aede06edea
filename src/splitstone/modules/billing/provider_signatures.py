"""Stripe's webhook signatures and event shape, shared by the Stripe adapter and the sandbox.

Our own implementation rather than the SDK's, because the SDK checks the timestamp against the wall
clock and we check it against the injected one. A signature header is `t=<unix seconds>,v1=<hex>`,
where the hex is HMAC-SHA256(secret, "<t>." + body); a header may carry several `v1` entries (while a
secret is being rolled) and any one of them may match.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from uuid import UUID

from splitstone.modules.billing.api import WebhookRejected
from splitstone.modules.billing.provider import ProviderEvent, ProviderEventType

_EVENT_TYPES = {
    "payment_intent.succeeded": ProviderEventType.PAYMENT_SUCCEEDED,
    "payment_intent.payment_failed": ProviderEventType.PAYMENT_FAILED,
}
_UNIX_SECONDS = re.compile(r"[0-9]{1,12}")


def sign(secret: str, body: bytes, timestamp: datetime) -> str:
    """The signature header's value for `body`, sent at `timestamp`."""
    if timestamp.tzinfo is None:
        raise ValueError("timestamp must be timezone-aware")
    seconds = int(timestamp.timestamp())
    return f"t={seconds},v1={_digest(secret, seconds, body)}"


def verify(secret: str, body: bytes, header: str | None, now: datetime, tolerance_seconds: int) -> None:
    """Check that `header` signs `body` with `secret`, no more than `tolerance_seconds` from `now`.

    Raises `WebhookRejected` saying what is wrong.
    """
    if not header:
        raise WebhookRejected("The signature header is missing.")
    timestamp: int | None = None
    signatures: list[str] = []
    for item in header.split(","):
        key, equals, value = item.strip().partition("=")
        if not equals:
            raise WebhookRejected(f"The signature header is malformed: {item.strip()!r} is not key=value.")
        if key == "t":
            if timestamp is not None or not _UNIX_SECONDS.fullmatch(value):
                raise WebhookRejected("The signature header is malformed: it needs one t=<unix seconds>.")
            timestamp = int(value)
        elif key == "v1":
            signatures.append(value)
        # Other schemes (Stripe's test-only v0) are ignored, as Stripe's own libraries do.
    if timestamp is None:
        raise WebhookRejected("The signature header is malformed: it has no timestamp (t=...).")
    if not signatures:
        raise WebhookRejected("The signature header has no v1 signature.")
    expected = _digest(secret, timestamp, body).encode()
    # Every entry is compared, in constant time, so timing tells nothing about which one was close.
    matches = [hmac.compare_digest(expected, s.encode("utf-8", "replace")) for s in signatures]
    if not any(matches):
        raise WebhookRejected("No v1 signature matches the body and the timestamp with this secret.")
    age = now.timestamp() - timestamp
    if age > tolerance_seconds:
        raise WebhookRejected(
            f"The signature is {age:.0f} s old, more than the {tolerance_seconds} s allowed: "
            "replayed or delayed."
        )
    if -age > tolerance_seconds:
        raise WebhookRejected(
            f"The signature is dated {-age:.0f} s in the future, more than the {tolerance_seconds} s "
            "allowed: replayed or delayed."
        )


def header_value(headers: Mapping[str, str], name: str) -> str | None:
    """`headers[name]`, ignoring case (a plain dict of headers may spell names any way)."""
    wanted = name.lower()
    for key, value in headers.items():
        if key.lower() == wanted:
            return value
    return None


def normalize_event(payload: bytes) -> ProviderEvent:
    """A Stripe-shaped event (`{"id", "type", "created", "data": {"object": {...}}}`), normalized.

    Raises `WebhookRejected` for a body that is not such an event.
    """
    try:
        event = json.loads(payload)
    except (UnicodeDecodeError, ValueError):
        raise WebhookRejected("The body is not JSON.") from None
    if not isinstance(event, dict):
        raise WebhookRejected("The body is not a JSON object.")
    event_id, provider_type = event.get("id"), event.get("type")
    if not isinstance(event_id, str) or not event_id:
        raise WebhookRejected("The event has no id.")
    if not isinstance(provider_type, str) or not provider_type:
        raise WebhookRejected("The event has no type.")
    data = event.get("data")
    subject = data.get("object") if isinstance(data, dict) else None
    if not isinstance(subject, dict):
        raise WebhookRejected("The event has no data.object.")
    kind = _EVENT_TYPES.get(provider_type, ProviderEventType.OTHER)
    payment_id: str | None = None
    if provider_type.startswith("payment_intent."):
        payment_id = subject.get("id")
        if not isinstance(payment_id, str) or not payment_id:
            raise WebhookRejected("The event's payment intent has no id.")
    failure_code = failure_message = None
    if kind is ProviderEventType.PAYMENT_FAILED:
        error = subject.get("last_payment_error")
        if isinstance(error, dict):
            failure_code = _text(error.get("decline_code")) or _text(error.get("code"))
            failure_message = _text(error.get("message"))
    return ProviderEvent(
        id=event_id,
        type=kind,
        provider_type=provider_type,
        payment_id=payment_id,
        invoice_id=_invoice_id(subject),
        failure_code=failure_code,
        failure_message=failure_message,
    )


def _digest(secret: str, timestamp: int, body: bytes) -> str:
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def _invoice_id(subject: dict[str, Any]) -> UUID | None:
    metadata = subject.get("metadata")
    if metadata is None:
        return None
    if not isinstance(metadata, dict):
        raise WebhookRejected("The event's metadata is not an object.")
    value = metadata.get("invoice_id")
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise WebhookRejected("The event's metadata.invoice_id is not a string.")
    try:
        return UUID(value)
    except ValueError:
        raise WebhookRejected(f"The event's metadata.invoice_id {value!r} is not a UUID.") from None


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None
