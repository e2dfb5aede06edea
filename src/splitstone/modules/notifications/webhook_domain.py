"""Webhook rules with no I/O: delivery states, triggers, event-type filters and the message body."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from uuid6 import uuid7

from splitstone.modules.notifications.api import UnknownWebhookEventType
from splitstone.modules.notifications.catalog import WEBHOOK_EVENT_TYPES


class WebhookDeliveryStatus(StrEnum):
    """Where one message stands with one endpoint."""

    PENDING = "pending"  # an attempt is due, or running
    SUCCEEDED = "succeeded"  # the endpoint answered 2xx
    FAILED = "failed"  # the last attempt failed and none is scheduled
    CANCELED = "canceled"  # the endpoint was disabled before it succeeded


class Trigger(StrEnum):
    """Why an attempt was made."""

    SCHEDULED = "scheduled"  # a message was sent (or its retry came due)
    MANUAL = "manual"  # someone asked to deliver it again
    TEST = "test"  # someone sent a test event


def check_event_types(event_types: Iterable[str]) -> list[str]:
    """The filter to store: each type known (else `UnknownWebhookEventType`), once, in the given order."""
    chosen = list(dict.fromkeys(event_types))
    unknown = [t for t in chosen if t not in WEBHOOK_EVENT_TYPES]
    if unknown:
        raise UnknownWebhookEventType(
            f"Unknown webhook event type {', '.join(map(repr, unknown))}; "
            f"known types: {', '.join(WEBHOOK_EVENT_TYPES)}.",
            event_types=unknown,
        )
    return chosen


def wants(event_types: list[str], event_type: str) -> bool:
    """Whether an endpoint with this filter gets `event_type`: an empty filter means every type."""
    return not event_types or event_type in event_types


def new_message_id() -> str:
    """A `webhook-id`: `msg_` and a UUIDv7 in hex, so ids sort by creation time."""
    return f"msg_{uuid7().hex}"


def message_body(event_type: str, timestamp: datetime, data: dict[str, Any]) -> str:
    """The exact JSON body that is signed and sent: `{"type", "timestamp", "data"}`."""
    moment = timestamp.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return json.dumps(
        {"type": event_type, "timestamp": moment, "data": data}, separators=(",", ":"), default=str
    )
