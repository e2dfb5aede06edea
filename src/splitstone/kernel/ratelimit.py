"""Rate limits on top of the `limits` library: in memory by default, Redis when configured."""

from __future__ import annotations

import math
import time

from limits import RateLimitItem, parse
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import storage_from_string

from splitstone.kernel.errors import RateLimited


class RateLimiter:
    def __init__(self, storage_url: str = "memory://", *, enabled: bool = True) -> None:
        url = storage_url
        if url.startswith(("redis://", "rediss://")):
            url = "async+" + url
        elif url == "memory://":
            url = "async+memory://"
        self._storage = storage_from_string(url)
        self._limiter = MovingWindowRateLimiter(self._storage)
        self._enabled = enabled

    @staticmethod
    def parse(rule: str) -> RateLimitItem:
        """A rule such as "10/minute" or "5 per 15 minutes"."""
        return parse(rule)

    @staticmethod
    def scaled(rule: RateLimitItem, factor: int) -> RateLimitItem:
        """The same window as `rule`, allowing `factor` times as many hits."""
        return type(rule)(rule.amount * factor, rule.multiples, rule.namespace)

    async def hit(self, rule: RateLimitItem, *key: str) -> None:
        """Count one attempt; raise `RateLimited` with a Retry-After once over the limit."""
        if not self._enabled:
            return
        if await self._limiter.hit(rule, *key):
            return
        stats = await self._limiter.get_window_stats(rule, *key)
        raise RateLimited(retry_after=max(1, math.ceil(stats.reset_time - time.time())))

    async def clear(self, rule: RateLimitItem, *key: str) -> None:
        await self._limiter.clear(rule, *key)

    async def reset(self) -> None:
        await self._storage.reset()  # type: ignore[misc]  # limits types sync and async storages together
