"""Crash points: a test aid that kills this process at a named place in the messaging core.

The crash-safety tests run a worker as a separate process and need it to die in the narrow windows
where a bug would lose or repeat an event (the transport accepted a batch but the outbox does not say
so yet; a handler ran but its transaction has not committed; ...). Timing alone hits those windows
only by luck, so the messaging core calls `crashpoint(name)` there, and the environment arms some:

    SPLITSTONE_CRASHPOINTS="relay.after_publish:3,inbox.after_handler:5"

means: SIGKILL this process the 3rd time it reaches `relay.after_publish`, and the 5th time it reaches
`inbox.after_handler`. SIGKILL, because nothing may run after it: no `finally`, no rollback, no ack,
exactly like a power cut. The variable is read once, on the first call; unset (always, outside tests),
`crashpoint` does nothing. Never set it in production.

The points:

- `relay.after_publish`: the transport accepted a batch, the outbox rows are not yet marked published.
- `nats.after_deliver`: the NATS consumer committed envelopes to an inbox but has not acked them.
- `inbox.after_handler`: a batch of handlers ran and their rows are marked done, in a transaction not
  yet committed (the careful path, which runs handlers one by one, reaches it after each handler).
"""

from __future__ import annotations

import os
import signal
import sys

ENV_VAR = "SPLITSTONE_CRASHPOINTS"

_armed: dict[str, int] | None = None  # point -> the hit that kills; None until the variable is read
_hits: dict[str, int] = {}


def parse(spec: str) -> dict[str, int]:
    """`"a.b:3,c.d:1"` -> `{"a.b": 3, "c.d": 1}`; a point without a count fires on its first hit."""
    armed: dict[str, int] = {}
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        name, _, count = (part.strip() for part in item.partition(":"))
        hit = int(count) if count.isdigit() else 0 if count else 1
        if not name or hit < 1:
            raise ValueError(f"{ENV_VAR}: expected 'name:count' with count >= 1, got {item!r}")
        armed[name] = hit
    return armed


def crashpoint(name: str) -> None:
    """SIGKILL this process if `name` is armed and this is its fatal hit; otherwise do nothing."""
    global _armed
    if _armed is None:
        _armed = parse(os.environ.get(ENV_VAR, ""))
    if name not in _armed:
        return
    _hits[name] = hit = _hits.get(name, 0) + 1
    if hit == _armed[name]:
        # The test reads this line to know which point fired; then nothing else runs.
        sys.stderr.write(f"splitstone crashpoint {name} hit {hit}: SIGKILL pid {os.getpid()}\n")
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)
