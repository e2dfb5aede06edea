"""Wake-ups between the parts of one process: a commit wakes the relay, a hand-off wakes the inbox."""

from __future__ import annotations

import asyncio
import contextlib


class Wakeup:
    """A level-triggered nudge: `set()` from anywhere in the loop, `wait(timeout)` in one consumer."""

    def __init__(self) -> None:
        self._event: asyncio.Event | None = None

    def _get(self) -> asyncio.Event:
        if self._event is None:
            self._event = asyncio.Event()
        return self._event

    def set(self) -> None:
        self._get().set()

    async def wait(self, seconds: float) -> bool:
        """True when woken, False when `seconds` passed first. Clears the flag either way."""
        event = self._get()
        woken = False
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), seconds)
            woken = True
        event.clear()
        return woken
