"""Driving wrk from Python: the data file its Lua scripts read, one pinned run, and its numbers.

The scripts under bench/lua/ end with `common.done`, which prints one line `BENCH_JSON {...}` with the
run's counts and latency percentiles (microseconds); `parse` reads it from wrk's output.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

LUA_DIR = Path(__file__).parent / "lua"
MARKER = "BENCH_JSON "


class WrkError(Exception):
    """wrk did not run, or printed no numbers; the message holds its output."""


@dataclass(frozen=True)
class WrkResult:
    requests: int
    seconds: float
    errors: dict[str, int]  # connect, read, write, status (non-2xx/3xx answers), timeout
    latency_ms: dict[str, float]  # min, mean, max, stdev, p50, p90, p99, p999

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def failed(self) -> int:
        return sum(self.errors.values())


def parse(output: str) -> WrkResult:
    """The numbers of a run from wrk's stdout (the `BENCH_JSON` line `common.done` printed)."""
    for line in output.splitlines():
        if line.startswith(MARKER):
            raw = json.loads(line[len(MARKER) :])
            return WrkResult(
                requests=int(raw["requests"]),
                seconds=raw["duration_us"] / 1e6,
                errors={name: int(count) for name, count in raw["errors"].items()},
                latency_ms={name: value / 1000 for name, value in raw["latency_us"].items()},
            )
    raise WrkError(f"wrk printed no {MARKER.strip()} line:\n{output}")


def version() -> str:
    found = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
    first = (found.stdout or found.stderr).splitlines()
    return first[0].split(" Copyright")[0].strip() if first else "unknown"


def lua_table(values: dict[str, list[str]]) -> str:
    """A Lua chunk returning `values` (lists of strings), for a script's `common.data()`."""
    lines = ["return {"]
    for name, items in values.items():
        # JSON string escapes are valid Lua string escapes for what we write (ASCII, \" and \\).
        lines.append(f"  {name} = {{{', '.join(json.dumps(item) for item in items)}}},")
    lines.append("}")
    return "\n".join(lines) + "\n"


def run(
    script: str,
    url: str,
    *,
    seconds: float,
    connections: int,
    env: dict[str, str],
    core: int = 1,
    timeout_seconds: int = 10,
) -> WrkResult:
    """One wrk run (1 thread) pinned to `core`, with bench/lua/<script>.lua and `env` for the script."""
    command = [
        "taskset",
        "-c",
        str(core),
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        f"--timeout={timeout_seconds}s",
        "--latency",
        "-s",
        str(LUA_DIR / f"{script}.lua"),
        url,
    ]
    script_env = {**os.environ, "BENCH_LUA_DIR": str(LUA_DIR), **env}
    done = subprocess.run(
        command, capture_output=True, text=True, env=script_env, timeout=seconds + 60, check=False
    )
    if done.returncode != 0:
        raise WrkError(f"{' '.join(command)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return parse(done.stdout)


def installed() -> bool:
    return shutil.which("wrk") is not None and shutil.which("taskset") is not None


def install() -> None:
    """apt-get install wrk (with sudo unless root); `WrkError` when that is not possible here."""
    if shutil.which("apt-get") is None:
        raise WrkError("wrk is not installed and there is no apt-get: install wrk and taskset, then rerun")
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    install = [*sudo, "apt-get", "install", "-y", "wrk"]
    if subprocess.run(install, check=False).returncode != 0:
        subprocess.run([*sudo, "apt-get", "update"], check=True)
        subprocess.run(install, check=True)
