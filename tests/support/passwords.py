"""Cheap password hashing for tests whose subject is not the hash: argon2id at its smallest cost.

The default (t=2, 19 MiB) costs some 35 ms a hash on CI's machine, and every sign-up and sign-in in
the suite pays it; the smallest allowed (t=1, 7 MiB) costs some 7 ms and is still argon2id.
"""

from __future__ import annotations

from typing import Any

CHEAP_ARGON2: dict[str, Any] = {"argon2_time_cost": 1, "argon2_memory_kib": 7_168}
CHEAP_ARGON2_ENV = {
    "SPLITSTONE_AUTH_ARGON2_TIME_COST": str(CHEAP_ARGON2["argon2_time_cost"]),
    "SPLITSTONE_AUTH_ARGON2_MEMORY_KIB": str(CHEAP_ARGON2["argon2_memory_kib"]),
}
