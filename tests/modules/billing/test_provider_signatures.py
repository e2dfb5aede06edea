"""Stripe's webhook signature scheme (ours, against an injected clock) and event normalization."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from splitstone.modules.billing.api import WebhookRejected
from splitstone.modules.billing.provider import ProviderEventType
from splitstone.modules.billing.provider_signatures import header_value, normalize_event, sign, verify

SECRET = "whsec_test_secret"
NOW = datetime(2030, 5, 17, 12, 0, 0, tzinfo=UTC)
BODY = b'{"id":"evt_1","type":"payment_intent.succeeded","data":{"object":{"id":"pi_1"}}}'
TOLERANCE = 300


def rejected(body: bytes, header: str | None, *, now: datetime = NOW, secret: str = SECRET) -> str:
    """The detail of the rejection; fails if `verify` accepts."""
    with pytest.raises(WebhookRejected) as caught:
        verify(secret, body, header, now, TOLERANCE)
    return caught.value.detail


class TestSignAndVerify:
    def test_the_header_is_stripes_format(self) -> None:
        header = sign(SECRET, BODY, NOW)

        seconds = int(NOW.timestamp())
        digest = hmac.new(SECRET.encode(), f"{seconds}.".encode() + BODY, hashlib.sha256).hexdigest()
        assert header == f"t={seconds},v1={digest}"

    def test_a_signed_body_verifies(self) -> None:
        verify(SECRET, BODY, sign(SECRET, BODY, NOW), NOW, TOLERANCE)

    def test_within_the_tolerance_either_way_it_verifies(self) -> None:
        verify(SECRET, BODY, sign(SECRET, BODY, NOW - timedelta(seconds=TOLERANCE)), NOW, TOLERANCE)
        verify(SECRET, BODY, sign(SECRET, BODY, NOW + timedelta(seconds=TOLERANCE)), NOW, TOLERANCE)

    def test_a_tampered_body_is_rejected(self) -> None:
        header = sign(SECRET, BODY, NOW)

        assert "No v1 signature matches" in rejected(BODY.replace(b"succeeded", b"failed___"), header)

    def test_another_secret_is_rejected(self) -> None:
        assert "No v1 signature matches" in rejected(BODY, sign("whsec_other", BODY, NOW))

    def test_a_missing_header_is_rejected(self) -> None:
        assert rejected(BODY, None) == "The signature header is missing."
        assert rejected(BODY, "") == "The signature header is missing."

    @pytest.mark.parametrize(
        ("header", "detail"),
        [
            ("garbage", "is not key=value"),
            ("v1=abc", "no timestamp"),
            ("t=12x,v1=abc", "one t=<unix seconds>"),
            ("t=-5,v1=abc", "one t=<unix seconds>"),
            ("t=1,t=2,v1=abc", "one t=<unix seconds>"),
            (f"t={int(NOW.timestamp())}", "no v1 signature"),
            (f"t={int(NOW.timestamp())},v0=abc", "no v1 signature"),
        ],
    )
    def test_a_malformed_header_is_rejected_saying_why(self, header: str, detail: str) -> None:
        assert detail in rejected(BODY, header)

    def test_a_timestamp_older_than_the_tolerance_is_a_replay(self) -> None:
        header = sign(SECRET, BODY, NOW - timedelta(seconds=TOLERANCE + 1))

        detail = rejected(BODY, header)

        assert "301 s old" in detail
        assert "replayed or delayed" in detail

    def test_a_timestamp_too_far_in_the_future_is_rejected(self) -> None:
        header = sign(SECRET, BODY, NOW + timedelta(seconds=TOLERANCE + 60))

        detail = rejected(BODY, header)

        assert "360 s in the future" in detail
        assert "replayed or delayed" in detail

    def test_an_authentic_signature_is_checked_before_its_age(self) -> None:
        """A forged header learns nothing about the tolerance: it is refused as not matching."""
        old = sign("whsec_other", BODY, NOW - timedelta(days=1))

        assert "No v1 signature matches" in rejected(BODY, old)

    def test_any_of_several_v1_signatures_may_match(self) -> None:
        """While a secret is rolled, a header carries a signature for each secret."""
        current = sign(SECRET, BODY, NOW)
        seconds, signature = current.split(",")
        old = sign("whsec_previous", BODY, NOW).split(",")[1]

        verify(SECRET, BODY, f"{seconds},{old},{signature}", NOW, TOLERANCE)
        verify(SECRET, BODY, f"{seconds}, v0=ignored, {signature}, {old}", NOW, TOLERANCE)

    def test_non_ascii_signatures_are_rejected_not_crashing(self) -> None:
        assert "No v1 signature matches" in rejected(BODY, f"t={int(NOW.timestamp())},v1=é")

    def test_sign_needs_an_aware_time(self) -> None:
        with pytest.raises(ValueError, match="timezone-aware"):
            sign(SECRET, BODY, datetime(2030, 1, 1))

    @settings(max_examples=100, deadline=None)
    @given(body=st.binary(min_size=1, max_size=300), data=st.data())
    def test_any_tampered_byte_is_rejected(self, body: bytes, data: st.DataObject) -> None:
        header = sign(SECRET, body, NOW)
        position = data.draw(st.integers(0, len(body) - 1))
        flip = data.draw(st.integers(1, 255))
        tampered = body[:position] + bytes([body[position] ^ flip]) + body[position + 1 :]

        verify(SECRET, body, header, NOW, TOLERANCE)
        with pytest.raises(WebhookRejected):
            verify(SECRET, tampered, header, NOW, TOLERANCE)

    def test_header_lookup_ignores_case(self) -> None:
        assert header_value({"Stripe-Signature": "x"}, "stripe-signature") == "x"
        assert header_value({"stripe-signature": "y"}, "Stripe-Signature") == "y"
        assert header_value({"other": "z"}, "Stripe-Signature") is None


def event(event_type: str, subject: dict[str, Any] | None = None, **more: Any) -> bytes:
    payload = {"id": "evt_123", "type": event_type, "created": 1_900_000_000, "data": {"object": subject}}
    return json.dumps({**payload, **more}).encode()


class TestNormalizeEvent:
    def test_a_succeeded_payment_intent(self) -> None:
        invoice_id = uuid4()

        normalized = normalize_event(
            event(
                "payment_intent.succeeded",
                {"id": "pi_1", "object": "payment_intent", "metadata": {"invoice_id": str(invoice_id)}},
            )
        )

        assert normalized.id == "evt_123"
        assert normalized.type is ProviderEventType.PAYMENT_SUCCEEDED
        assert normalized.provider_type == "payment_intent.succeeded"
        assert normalized.payment_id == "pi_1"
        assert normalized.invoice_id == invoice_id
        assert normalized.failure_code is None
        assert normalized.failure_message is None

    def test_a_failed_payment_intent_prefers_the_decline_code(self) -> None:
        error = {"code": "card_declined", "decline_code": "insufficient_funds", "message": "No money."}

        normalized = normalize_event(
            event("payment_intent.payment_failed", {"id": "pi_2", "last_payment_error": error})
        )

        assert normalized.type is ProviderEventType.PAYMENT_FAILED
        assert normalized.payment_id == "pi_2"
        assert normalized.invoice_id is None
        assert normalized.failure_code == "insufficient_funds"
        assert normalized.failure_message == "No money."

    def test_a_failed_payment_intent_without_decline_code_gives_the_code(self) -> None:
        error = {"code": "expired_card", "decline_code": None, "message": "Your card has expired."}

        normalized = normalize_event(
            event("payment_intent.payment_failed", {"id": "pi_3", "last_payment_error": error})
        )

        assert normalized.failure_code == "expired_card"
        assert normalized.failure_message == "Your card has expired."

    def test_other_events_are_recorded_as_other(self) -> None:
        normalized = normalize_event(event("customer.created", {"id": "cus_1", "metadata": {}}))

        assert normalized.type is ProviderEventType.OTHER
        assert normalized.provider_type == "customer.created"
        assert normalized.payment_id is None  # a customer id is not a payment's
        assert normalized.invoice_id is None

    def test_other_payment_intent_events_still_name_the_payment(self) -> None:
        normalized = normalize_event(event("payment_intent.processing", {"id": "pi_4"}))

        assert normalized.type is ProviderEventType.OTHER
        assert normalized.payment_id == "pi_4"

    @pytest.mark.parametrize(
        ("payload", "detail"),
        [
            (b"not json", "not JSON"),
            (b"\xff\xfe", "not JSON"),
            (b"[1, 2]", "not a JSON object"),
            (json.dumps({"type": "payment_intent.succeeded", "data": {"object": {}}}).encode(), "no id"),
            (json.dumps({"id": "", "type": "x", "data": {"object": {}}}).encode(), "no id"),
            (json.dumps({"id": "evt_1", "data": {"object": {}}}).encode(), "no type"),
            (json.dumps({"id": "evt_1", "type": 7, "data": {"object": {}}}).encode(), "no type"),
            (json.dumps({"id": "evt_1", "type": "x"}).encode(), "no data.object"),
            (event("payment_intent.succeeded", {"amount": 5}), "payment intent has no id"),
            (event("payment_intent.succeeded", {"id": "pi_1", "metadata": "x"}), "metadata is not"),
            (
                event("payment_intent.succeeded", {"id": "pi_1", "metadata": {"invoice_id": "nope"}}),
                "is not a UUID",
            ),
            (
                event("payment_intent.succeeded", {"id": "pi_1", "metadata": {"invoice_id": 5}}),
                "is not a string",
            ),
        ],
    )
    def test_malformed_payloads_are_rejected(self, payload: bytes, detail: str) -> None:
        with pytest.raises(WebhookRejected) as caught:
            normalize_event(payload)

        assert detail in caught.value.detail
