"""RetryPolicy: exponential backoff with jitter, capped, then exhausted (dead-lettered)."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from splitstone.kernel.messaging.retry import RetryPolicy

policies = st.builds(
    RetryPolicy,
    max_attempts=st.integers(min_value=1, max_value=1_000_000),
    base_delay=st.timedeltas(min_value=timedelta(milliseconds=1), max_value=timedelta(minutes=5)),
    max_delay=st.timedeltas(min_value=timedelta(milliseconds=1), max_value=timedelta(days=7)),
)
attempts = st.integers(min_value=1, max_value=10_000)


class FixedRandom(random.Random):
    """A random source that always draws the same fraction: pins the jitter."""

    def __init__(self, fraction: float) -> None:
        super().__init__()
        self.fraction = fraction

    def random(self) -> float:
        return self.fraction


def ceiling(policy: RetryPolicy, attempt: int) -> timedelta:
    """The largest delay the policy may choose after `attempt` failures: base doubled, then capped
    (computed exactly, in whole microseconds)."""
    micro = timedelta(microseconds=1)
    doubled: int = (policy.base_delay // micro) * 2 ** (attempt - 1)
    return timedelta(microseconds=min(policy.max_delay // micro, doubled))


@given(policy=policies, attempt=attempts, seed=st.integers(min_value=0, max_value=2**32))
def test_the_delay_stays_between_a_tenth_of_the_ceiling_and_the_ceiling(
    policy: RetryPolicy, attempt: int, seed: int
) -> None:
    delay = policy.delay(attempt, rng=random.Random(seed))
    top = ceiling(policy, attempt)
    tolerance = timedelta(microseconds=2)  # timedelta rounds to whole microseconds
    assert top * 0.1 - tolerance <= delay <= top + tolerance
    assert delay <= policy.max_delay + tolerance
    assert delay > timedelta(0)  # a retry never lands on the very instant of the failure


@given(policy=policies, attempt=st.integers(min_value=1, max_value=200))
def test_the_ceiling_doubles_with_each_failure_until_the_cap(policy: RetryPolicy, attempt: int) -> None:
    top = FixedRandom(1.0)
    this, following = policy.delay(attempt, rng=top), policy.delay(attempt + 1, rng=top)
    tolerance = timedelta(microseconds=2)
    if ceiling(policy, attempt + 1) < policy.max_delay:
        assert abs(following - this * 2) <= tolerance  # still growing: exactly twice
    else:
        assert abs(following - policy.max_delay) <= tolerance  # capped from here on
    assert following >= this - tolerance  # never shrinks


@given(policy=policies, attempt=attempts)
def test_the_jitter_spans_a_tenth_of_the_ceiling_to_the_ceiling(policy: RetryPolicy, attempt: int) -> None:
    top = ceiling(policy, attempt)
    tolerance = timedelta(microseconds=2)
    assert abs(policy.delay(attempt, rng=FixedRandom(0.0)) - top * 0.1) <= tolerance  # floor
    assert abs(policy.delay(attempt, rng=FixedRandom(0.05)) - top * 0.1) <= tolerance  # still the floor
    assert abs(policy.delay(attempt, rng=FixedRandom(0.5)) - top * 0.5) <= tolerance
    assert abs(policy.delay(attempt, rng=FixedRandom(0.999999)) - top * 0.999999) <= tolerance


def test_the_jitter_spreads_retries_apart() -> None:
    """Many consumers failing together must not all come back at the same instant."""
    policy = RetryPolicy(base_delay=timedelta(seconds=1), max_delay=timedelta(minutes=10))
    rng = random.Random(7)
    delays = [policy.delay(4, rng=rng) for _ in range(200)]
    assert len(set(delays)) > 150
    assert min(delays) < timedelta(seconds=3) < max(delays)  # spread over the 0.8 s to 8 s range


def test_the_documented_schedule() -> None:
    policy = RetryPolicy(max_attempts=5, base_delay=timedelta(seconds=1), max_delay=timedelta(seconds=10))
    top = FixedRandom(1.0)
    assert [policy.delay(n, rng=top).total_seconds() for n in range(1, 7)] == [1, 2, 4, 8, 10, 10]


@given(policy=policies)
def test_a_very_long_outage_never_breaks_the_policy(policy: RetryPolicy) -> None:
    """The relay retries a refused publish practically forever; its backoff must not overflow."""
    for attempt in (63, 64, 65, 1_000, 1_000_000):
        assert policy.delay(attempt) <= policy.max_delay + timedelta(microseconds=1)


@given(
    max_attempts=st.integers(min_value=1, max_value=1000), attempt=st.integers(min_value=0, max_value=2000)
)
def test_exhausted_after_max_attempts(max_attempts: int, attempt: int) -> None:
    policy = RetryPolicy(max_attempts=max_attempts)
    assert policy.exhausted(attempt) is (attempt >= max_attempts)


@pytest.mark.parametrize("max_attempts", [0, -1])
def test_at_least_one_attempt(max_attempts: int) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        RetryPolicy(max_attempts=max_attempts)
