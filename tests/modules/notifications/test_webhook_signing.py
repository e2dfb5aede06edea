"""Signatures checked with an independent implementation (the `standardwebhooks` package), and the
retry schedule."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from splitstone.modules.notifications.webhook_domain import message_body
from splitstone.modules.notifications.webhook_schedule import RETRY_DELAYS, RetrySchedule
from splitstone.modules.notifications.webhook_signing import generate_secret, secret_key, signed_headers


def test_secrets_are_whsec_and_24_random_bytes() -> None:
    secret = generate_secret()
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"))) == 24
    assert secret_key(secret) == base64.b64decode(secret.removeprefix("whsec_"))
    assert generate_secret() != secret


@pytest.mark.parametrize("bad", ["", "whsec_", "sk_abc", "whsec_not base64!"])
def test_secret_key_refuses_malformed_secrets(bad: str) -> None:
    with pytest.raises(ValueError, match="secret"):
        secret_key(bad)


def test_standard_webhooks_verifies_our_signature() -> None:
    secret = generate_secret()
    now = datetime.now(UTC)
    body = message_body("auth.MemberJoined", now, {"org_id": "o", "note": "ünïcödé"})
    headers = signed_headers("msg_1", now, body, [secret])
    assert Webhook(secret).verify(body.encode(), headers) == {
        "type": "auth.MemberJoined",
        "timestamp": now.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "data": {"org_id": "o", "note": "ünïcödé"},
    }
    assert headers["webhook-id"] == "msg_1"
    assert headers["webhook-timestamp"] == str(int(now.timestamp()))
    assert headers["content-type"] == "application/json"
    assert headers["user-agent"] == "Splitstone-Webhooks/1"


def test_a_tampered_body_or_another_secret_fails() -> None:
    secret = generate_secret()
    now = datetime.now(UTC)
    headers = signed_headers("msg_1", now, '{"a":1}', [secret])
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(b'{"a":2}', headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(generate_secret()).verify(b'{"a":1}', headers)


def test_two_secrets_sign_side_by_side() -> None:
    new, old = generate_secret(), generate_secret()
    now = datetime.now(UTC)
    headers = signed_headers("msg_2", now, "{}", [new, old])
    assert len(headers["webhook-signature"].split(" ")) == 2
    Webhook(new).verify("{}", headers)
    Webhook(old).verify("{}", headers)


def test_the_schedule_spans_about_three_days() -> None:
    schedule = RetrySchedule(rng=lambda: 0.5)  # no jitter
    assert schedule.max_attempts == 10
    assert [schedule.delay(n) for n in range(1, 10)] == list(RETRY_DELAYS)
    total = sum(RETRY_DELAYS, timedelta())
    assert timedelta(days=3) <= total <= timedelta(days=3, hours=4)
    with pytest.raises(ValueError, match="attempts 1 to 9"):
        schedule.delay(10)


def test_jitter_stays_within_twenty_percent() -> None:
    assert RetrySchedule(rng=lambda: 0.0).delay(2) == timedelta(minutes=4)
    assert RetrySchedule(rng=lambda: 0.999999).delay(2) < timedelta(minutes=6)
    assert RetrySchedule(rng=lambda: 0.999999).delay(2) > timedelta(minutes=5, seconds=59)
    delays = {RetrySchedule().delay(1) for _ in range(50)}
    assert len(delays) > 1
    assert all(timedelta(seconds=4) <= d <= timedelta(seconds=6) for d in delays)
