"""What the benchmarks share: the NATS server they use, the commit they measure, stream clean-up."""

from __future__ import annotations

import os
import subprocess

import nats

NATS_URL = os.environ.get("SPLITSTONE_BENCH_NATS_URL", "nats://127.0.0.1:4222")


def commit() -> str:
    """The short hash of the checked-out commit, or "unknown" outside a git checkout."""
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


async def delete_streams(prefix: str) -> None:
    """Delete the JetStream streams a run made (their names begin with its prefix)."""
    nc = await nats.connect(NATS_URL)
    try:
        js = nc.jetstream()
        for info in await js.streams_info():
            if info.config.name and info.config.name.lower().startswith(prefix.lower()):
                await js.delete_stream(info.config.name)
    finally:
        await nc.close()
