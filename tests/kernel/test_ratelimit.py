"""Rate limits: in memory for one process, in Redis when several share the count."""

from __future__ import annotations

import socket
import uuid
from collections.abc import AsyncIterator

import pytest

from splitstone.kernel.errors import RateLimited
from splitstone.kernel.ratelimit import RateLimiter
from tests.conftest import require_service

REDIS_URL = "redis://127.0.0.1:6379/0"


def redis_reachable() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=1) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def test_rules_are_parsed() -> None:
    rule = RateLimiter.parse("5 per 15 minutes")
    assert rule.amount == 5
    assert rule.get_expiry() == 15 * 60


async def test_memory_limiter_raises_rate_limited_with_retry_after() -> None:
    limiter = RateLimiter("memory://")
    rule = RateLimiter.parse("2/minute")
    await limiter.hit(rule, "login", "203.0.113.7")
    await limiter.hit(rule, "login", "203.0.113.7")
    with pytest.raises(RateLimited) as caught:
        await limiter.hit(rule, "login", "203.0.113.7")
    assert 1 <= caught.value.retry_after <= 60
    assert caught.value.status == 429
    assert str(caught.value.retry_after) in caught.value.detail

    await limiter.hit(rule, "login", "198.51.100.1")  # another key has its own count
    await limiter.clear(rule, "login", "203.0.113.7")
    await limiter.hit(rule, "login", "203.0.113.7")  # cleared


async def test_a_disabled_limiter_never_refuses() -> None:
    limiter = RateLimiter("memory://", enabled=False)
    rule = RateLimiter.parse("1/hour")
    for _ in range(5):
        await limiter.hit(rule, "k")


async def test_reset_forgets_every_count() -> None:
    limiter = RateLimiter("memory://")
    rule = RateLimiter.parse("1/hour")
    await limiter.hit(rule, "k")
    with pytest.raises(RateLimited):
        await limiter.hit(rule, "k")
    await limiter.reset()
    await limiter.hit(rule, "k")


@pytest.fixture
async def redis_key() -> AsyncIterator[str]:
    require_service(redis_reachable(), "Redis at 127.0.0.1:6379")
    key = f"splitstone-test-{uuid.uuid4().hex}"
    yield key
    await RateLimiter(REDIS_URL).clear(RateLimiter.parse("3/minute"), key)


async def test_redis_limiter_shares_the_count_between_limiters(redis_key: str) -> None:
    rule = RateLimiter.parse("3/minute")
    one, two = RateLimiter(REDIS_URL), RateLimiter(REDIS_URL)  # like two processes
    await one.hit(rule, redis_key)
    await two.hit(rule, redis_key)
    await one.hit(rule, redis_key)
    with pytest.raises(RateLimited) as caught:
        await two.hit(rule, redis_key)
    assert 1 <= caught.value.retry_after <= 60

    await one.clear(rule, redis_key)
    await two.hit(rule, redis_key)
