"""When a failed webhook delivery is tried again: a fixed schedule spanning about three days, jittered.

The delays after attempts 1 to 9 are 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 14 h, 20 h and 24 h: ten
attempts within 75 h 35 min (about 3.1 days) of the first one, like Svix's and Stripe's schedules.
Each delay is spread by up to ±20 %, so that the deliveries that failed together during a receiver's
outage do not all come back at the same moment.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from datetime import timedelta

RETRY_DELAYS: tuple[timedelta, ...] = (
    timedelta(seconds=5),
    timedelta(minutes=5),
    timedelta(minutes=30),
    timedelta(hours=2),
    timedelta(hours=5),
    timedelta(hours=10),
    timedelta(hours=14),
    timedelta(hours=20),
    timedelta(hours=24),
)


class RetrySchedule:
    """The delay before the next attempt, after a failed attempt number `attempt` (1-based)."""

    def __init__(
        self,
        delays: Sequence[timedelta] = RETRY_DELAYS,
        *,
        jitter: float = 0.2,
        rng: Callable[[], float] = random.random,
    ) -> None:
        if not delays:
            raise ValueError("a retry schedule needs at least one delay")
        if not 0 <= jitter < 1:
            raise ValueError("jitter is a fraction in [0, 1)")
        self.delays = tuple(delays)
        self._jitter = jitter
        self._rng = rng

    @property
    def max_attempts(self) -> int:
        """The first attempt and one per delay."""
        return len(self.delays) + 1

    def delay(self, attempt: int) -> timedelta:
        """The jittered delay after attempt `attempt` failed; `ValueError` past the schedule's end."""
        if not 1 <= attempt <= len(self.delays):
            raise ValueError(f"the schedule has delays after attempts 1 to {len(self.delays)}, not {attempt}")
        spread = 1 + self._jitter * (2 * self._rng() - 1)
        return self.delays[attempt - 1] * spread
