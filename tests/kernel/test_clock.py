"""The injectable clock: always timezone-aware UTC, and a manual one that moves only when told."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from splitstone.kernel.clock import ManualClock, SystemClock


def test_system_clock_is_aware_utc() -> None:
    before = datetime.now(UTC)
    now = SystemClock().now()
    assert now.tzinfo is not None
    assert now.utcoffset() == timedelta(0)
    assert before <= now <= datetime.now(UTC)


def test_manual_clock_refuses_naive_times() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        ManualClock(datetime(2030, 1, 1))
    clock = ManualClock()
    with pytest.raises(ValueError, match="timezone-aware"):
        clock.set(datetime(2030, 1, 1))


def test_manual_clock_stands_still_and_advances_when_told() -> None:
    start = datetime(2030, 6, 1, 12, 0, tzinfo=UTC)
    clock = ManualClock(start)
    assert clock.now() == start
    assert clock.now() == start  # time does not pass by itself

    assert clock.advance(timedelta(minutes=15)) == start + timedelta(minutes=15)
    assert clock.now() == start + timedelta(minutes=15)

    elsewhere = datetime(2031, 1, 1, 9, 0, tzinfo=timezone(timedelta(hours=-5)))
    clock.set(elsewhere)
    assert clock.now() == elsewhere


def test_manual_clock_default_start_is_aware() -> None:
    assert ManualClock().now().tzinfo is not None
