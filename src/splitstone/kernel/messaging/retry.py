"""How failed deliveries and jobs are retried: exponential backoff with full jitter, then dead-letter."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import timedelta


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 10
    base_delay: timedelta = timedelta(seconds=1)
    max_delay: timedelta = timedelta(minutes=10)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")

    def delay(self, attempt: int, *, rng: random.Random | None = None) -> timedelta:
        """The wait before attempt `attempt + 1`, after `attempt` failures (1-based): full jitter."""
        # In float seconds, with the doublings bounded: as a timedelta, base * 2**n overflows after a few
        # dozen failures, and the relay retries a refused publish practically forever.
        doublings = min(max(0, attempt - 1), 64)
        ceiling = min(self.max_delay.total_seconds(), self.base_delay.total_seconds() * 2.0**doublings)
        fraction = float((rng or random).random())  # jitter, not security
        # At least a tenth of the ceiling, so a retry never lands on the very same instant.
        return timedelta(seconds=ceiling * max(0.1, fraction))

    def exhausted(self, attempts: int) -> bool:
        return attempts >= self.max_attempts
