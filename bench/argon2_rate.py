"""How many argon2 verifies one core makes per second: the ceiling of logins/s.

Verifies a real password hash (the seeded users') with argon2-cffi, with the parameters auth's settings
give (`SPLITSTONE_AUTH_ARGON2_*`, the same environment as the server), in a loop for a few seconds.
Run it pinned to the server's core: `taskset -c 0 python -m bench.argon2_rate HASH PASSWORD`.
"""

from __future__ import annotations

import argparse
import json
import time

from argon2 import PasswordHasher, Type

from splitstone.modules.auth.settings import AuthSettings


def verifies_per_second(password_hash: str, password: str, seconds: float) -> tuple[int, float]:
    """(verifies, elapsed seconds) of verifying `password` against `password_hash` for `seconds`."""
    settings = AuthSettings()
    hasher = PasswordHasher(
        time_cost=settings.argon2_time_cost,
        memory_cost=settings.argon2_memory_kib,
        parallelism=settings.argon2_parallelism,
        type=Type.ID,
    )
    if hasher.check_needs_rehash(password_hash):
        raise SystemExit("the hash was made with other parameters than auth's settings")
    hasher.verify(password_hash, password)  # warm: the first call allocates
    count = 0
    began = time.perf_counter()
    while (elapsed := time.perf_counter() - began) < seconds:
        hasher.verify(password_hash, password)
        count += 1
    return count, elapsed


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("hash")
    parser.add_argument("password")
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    count, elapsed = verifies_per_second(args.hash, args.password, args.seconds)
    print(json.dumps({"verifies": count, "seconds": elapsed, "per_second": count / elapsed}))
