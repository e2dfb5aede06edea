"""The servers a benchmark runs: started pinned to a core, waited for, measured from /proc, stopped."""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class ServerError(Exception):
    """A server did not start or answer; the message holds the end of its log."""


@dataclass
class Server:
    name: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    _log: IO[bytes] = field(repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def memory_mb(self) -> dict[str, float]:
        """VmRSS (now) and VmHWM (the peak) of the process, in MB (MiB)."""
        found: dict[str, float] = {}
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                found[name] = round(int(value.split()[0]) / 1024, 1)
        return found

    def cpu_seconds(self) -> float:
        """User and system CPU time the process has used so far."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime

    def log_tail(self, lines: int = 30) -> str:
        self._log.flush()
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


def start(
    name: str, command: list[str], port: int, env: dict[str, str], log_dir: Path, *, core: int = 0
) -> Server:
    """Start `command` pinned to `core` and wait until its /healthz answers 200."""
    log_path = log_dir / f"{name}.log"
    log = log_path.open("wb")
    process = subprocess.Popen(
        ["taskset", "-c", str(core), *command],
        env={**os.environ, **env},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    server = Server(name, port, process, log_path, log)
    try:
        wait_healthy(port, timeout=60, process=process)
    except ServerError as error:
        server.stop()
        raise ServerError(f"{name} did not start: {error}\n{server.log_tail()}") from None
    return server


def wait_healthy(port: int, *, timeout: float, process: subprocess.Popen[bytes] | None = None) -> None:
    """Poll GET /healthz every 10 ms until it answers 200."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise ServerError(f"it exited with {process.returncode}")
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
        try:
            connection.request("GET", "/healthz")
            if connection.getresponse().status == 200:
                return
        except OSError:
            pass
        finally:
            connection.close()
        time.sleep(0.01)
    raise ServerError(f"no 200 from /healthz on port {port} within {timeout:.0f} s")


def time_to_healthy(command: list[str], port: int, env: dict[str, str], log_path: Path) -> float:
    """Seconds from spawning `command` (pinned to core 0, with exactly `env`) to its first 200 from
    /healthz; then stops it."""
    with log_path.open("wb") as log:
        began = time.perf_counter()
        process = subprocess.Popen(
            ["taskset", "-c", "0", *command], env=env, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            wait_healthy(port, timeout=30, process=process)
            return time.perf_counter() - began
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
