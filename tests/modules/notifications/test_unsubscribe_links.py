"""Unsubscribe tokens: what `url` signs, `verify` gives back, and nothing else passes."""

from __future__ import annotations

import base64
from urllib.parse import parse_qs, urlsplit
from uuid import UUID

import pytest
from uuid6 import uuid7

from splitstone.modules.notifications.api import Category
from splitstone.modules.notifications.unsubscribe import InvalidUnsubscribeLink, UnsubscribeLinks

SECRET = b"k" * 32


def _token(url: str) -> str:
    return parse_qs(urlsplit(url).query)["token"][0]


def _raw(token: str) -> bytes:
    return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))


def _encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def test_url_points_at_the_unsubscribe_route_and_verifies() -> None:
    links = UnsubscribeLinks(SECRET, "https://app.example/")
    user_id = uuid7()
    url = links.url(user_id, Category.PROJECTS)
    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc, parts.path) == (
        "https",
        "app.example",
        "/api/v1/notifications/unsubscribe",
    )
    assert links.verify(_token(url)) == (user_id, Category.PROJECTS)


def test_tokens_are_compact_url_safe_and_stable() -> None:
    links = UnsubscribeLinks(SECRET, "https://app.example")
    user_id = UUID("0192b3c4-5d6e-7f80-9a1b-2c3d4e5f6a7b")
    token = links.token(user_id, Category.ORGANIZATION)
    assert token == links.token(user_id, Category.ORGANIZATION)
    assert len(token) < 100
    assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


@pytest.mark.parametrize("category", list(Category))
def test_every_category_round_trips(category: Category) -> None:
    links = UnsubscribeLinks(SECRET, "https://app.example")
    user_id = uuid7()
    assert links.verify(links.token(user_id, category)) == (user_id, category)


def test_another_secret_refuses_the_token() -> None:
    token = UnsubscribeLinks(SECRET, "https://a").token(uuid7(), Category.BILLING)
    with pytest.raises(InvalidUnsubscribeLink):
        UnsubscribeLinks(b"x" * 32, "https://a").verify(token)


def test_a_changed_user_or_category_is_refused() -> None:
    links = UnsubscribeLinks(SECRET, "https://a")
    raw = _raw(links.token(uuid7(), Category.PROJECTS))
    other_user = raw[:1] + uuid7().bytes + raw[17:]
    other_category = raw[:17] + b"billing" + raw[-32:]
    for forged in (other_user, other_category):
        with pytest.raises(InvalidUnsubscribeLink):
            links.verify(_encode(forged))


@pytest.mark.parametrize(
    "token",
    ["", "not base64 !", "A" * 300, "AAAA", "é" * 10, _encode(b"\x01" * 40)],
)
def test_junk_is_refused(token: str) -> None:
    with pytest.raises(InvalidUnsubscribeLink):
        UnsubscribeLinks(SECRET, "https://a").verify(token)


def test_only_the_exact_encoding_is_accepted() -> None:
    links = UnsubscribeLinks(SECRET, "https://a")
    token = links.token(uuid7(), Category.PROJECTS)
    with pytest.raises(InvalidUnsubscribeLink):
        links.verify(token[:10] + "." + token[10:])  # a decoder would skip the stray character
    with pytest.raises(InvalidUnsubscribeLink):
        links.verify(token + "==")


def test_an_unknown_version_is_refused_even_when_signed() -> None:
    links = UnsubscribeLinks(SECRET, "https://a")
    payload = bytes([2]) + uuid7().bytes + b"projects"
    with pytest.raises(InvalidUnsubscribeLink, match="format"):
        links.verify(_encode(payload + links._mac(payload)))
