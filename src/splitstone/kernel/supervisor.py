"""Runs child processes side by side, as `splitstone up` does for the services of a topology.

- Output: every line a child writes (stdout or stderr) is printed as `name | line`, the name in a colour
  of its own (no colour when the output is not a terminal, or NO_COLOR is set).
- Restarts: a child that exits while the supervisor runs is started again after 1 s, 2 s, 4 s... up to
  30 s; the delay starts over once a child has stayed up 60 s. A child that exits `max_failures` times in
  a row without staying up that long (or cannot be started at all) is a configuration error, not a
  crash: the supervisor gives up, stops the others and exits 1, rather than hide it behind restarts.
- Shutdown (SIGINT, SIGTERM, or `stop()`): SIGTERM to every child, SIGKILL to what is left after
  `stop_timeout` seconds (or at once on a second signal). Each child runs in a process group of its own,
  so what it started goes too; and a terminal's Ctrl-C reaches only the supervisor, which then stops the
  children in order. A supervisor killed with SIGKILL cannot do any of this: its children stay.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

LINE_LIMIT = 1024 * 1024
COLOURS = (36, 33, 35, 32, 34, 31, 96, 93, 95, 92, 94, 91)
"""ANSI foreground colours, one per child in turn: cyan, yellow, magenta, green, blue, red, then bright."""
PUMP_GRACE_SECONDS = 1.0


@dataclass(frozen=True)
class Child:
    """A process to run: `env` is added to the supervisor's own environment."""

    name: str
    argv: Sequence[str]
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: Path | None = None


@dataclass(frozen=True)
class Backoff:
    """Delay before the n-th restart in a row: initial * 2^(n-1), at most `maximum`."""

    initial: float = 1.0
    maximum: float = 30.0
    reset_after: float = 60.0
    """A child that stayed up this long counts as healthy again: its next restart waits `initial`."""

    def delay(self, failures: int) -> float:
        return float(min(self.initial * 2 ** max(failures - 1, 0), self.maximum))


@dataclass
class ChildState:
    spec: Child
    process: asyncio.subprocess.Process | None = None
    starts: int = 0
    failures: int = 0
    """Exits in a row, each before the child had stayed up `Backoff.reset_after` seconds."""

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None


class Supervisor:
    """`await Supervisor(children).run()` until a signal; or `start()`, then `wait()`, with `stop()`."""

    def __init__(
        self,
        children: Sequence[Child],
        *,
        output: TextIO | None = None,
        color: bool | None = None,
        backoff: Backoff | None = None,
        max_failures: int = 5,
        stop_timeout: float = 10.0,
        name: str = "up",
    ) -> None:
        names = [c.name for c in children]
        if len(set(names)) != len(names):
            raise ValueError(f"children need distinct names: {names}")
        self.states = {c.name: ChildState(c) for c in children}
        self._output = output or sys.stdout
        self._color = _wants_color(self._output) if color is None else color
        self._backoff = backoff or Backoff()
        self._max_failures = max_failures
        self._stop_timeout = stop_timeout
        self._name = name
        self._width = max([len(name), *(len(n) for n in names)])
        self._colours = {n: COLOURS[i % len(COLOURS)] for i, n in enumerate(names)}
        self._stopping = asyncio.Event()
        self._kill_now = asyncio.Event()
        self._started = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._exit_code = 0

    # --- the public face ------------------------------------------------------------------------------

    async def run(self, *, on_started: Callable[[], None] | None = None) -> int:
        """Start every child, keep them running until SIGINT or SIGTERM; the exit code (0, or 1 on give-up).

        `on_started` runs once every child has been started (e.g. to print their pids).
        """
        loop = asyncio.get_running_loop()
        handled = (signal.SIGINT, signal.SIGTERM)
        with contextlib.suppress(NotImplementedError):
            for sig in handled:
                loop.add_signal_handler(sig, self._on_signal, sig)
        try:
            await self.start()
            if on_started is not None:
                on_started()
            return await self.wait()
        finally:
            for sig in handled:
                with contextlib.suppress(NotImplementedError, ValueError):
                    loop.remove_signal_handler(sig)

    async def start(self) -> None:
        """Start every child (returns once each has been started once, or has failed to)."""
        for state in self.states.values():
            started = asyncio.Event()
            self._tasks.append(
                asyncio.create_task(self._keep(state, started), name=f"keep-{state.spec.name}")
            )
            await started.wait()

    async def wait(self) -> int:
        """Until `stop()` (or a signal, or giving up); then stop every child. The exit code."""
        await self._stopping.wait()
        await self._shutdown()
        return self._exit_code

    def stop(self) -> None:
        """Ask for a clean shutdown (`wait()` then stops the children); a second call kills them at once."""
        if self._stopping.is_set():
            self._kill_now.set()
        self._stopping.set()

    async def run_once(self, child: Child) -> int:
        """Run one command to its end (e.g. a migration), its output prefixed like the others'."""
        self._colours.setdefault(child.name, COLOURS[len(self._colours) % len(COLOURS)])
        self._width = max(self._width, len(child.name))
        process = await self._spawn(child)
        try:
            await self._drain(child.name, process)
            return await process.wait()
        finally:
            if process.returncode is None:  # interrupted (Ctrl-C): the command goes too
                _signal_group(process.pid, signal.SIGKILL)
                await process.wait()

    def say(self, message: str) -> None:
        """A line of the supervisor's own, prefixed with its name."""
        self._write(self._name, message, bold=True)

    # --- keeping one child running --------------------------------------------------------------------

    async def _keep(self, state: ChildState, started: asyncio.Event) -> None:
        name = state.spec.name
        try:
            while not self._stopping.is_set():
                try:
                    process = await self._spawn(state.spec)
                except OSError as error:
                    self.say(f"cannot start {name} ({' '.join(state.spec.argv)}): {error}; giving up")
                    self._give_up()
                    return
                state.process = process
                if self._stopping.is_set():  # stopped while it was starting: `_shutdown` may not see it
                    _signal_group(process.pid, signal.SIGKILL)
                    await process.wait()
                    return
                state.starts += 1
                began = time.monotonic()
                self.say(f"{name} {'started' if state.starts == 1 else 'restarted'} (pid {process.pid})")
                started.set()
                code = await self._drain(name, process)
                _signal_group(process.pid, signal.SIGKILL)  # what it left behind, before it starts again
                if self._stopping.is_set():
                    return
                uptime = time.monotonic() - began
                if uptime >= self._backoff.reset_after:
                    state.failures = 0
                state.failures += 1
                if state.failures >= self._max_failures:
                    self.say(
                        f"{name} exited with code {code} {state.failures} times in a row, each within "
                        f"{self._backoff.reset_after:g} s of starting; giving up"
                    )
                    self._give_up()
                    return
                delay = self._backoff.delay(state.failures)
                self.say(f"{name} exited with code {code} after {uptime:.1f} s; restarting in {delay:g} s")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), delay)
        finally:
            started.set()

    async def _spawn(self, child: Child) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            *child.argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **child.env},
            cwd=child.cwd,
            start_new_session=True,
            limit=LINE_LIMIT,
        )

    async def _drain(self, name: str, process: asyncio.subprocess.Process) -> int:
        """Print the child's output until it exits; its exit code."""
        assert process.stdout is not None
        assert process.stderr is not None
        pumps = [asyncio.create_task(self._pump(name, s)) for s in (process.stdout, process.stderr)]
        try:
            code = await process.wait()
            # Something it started may hold the pipes open: do not wait for that.
            await asyncio.wait(pumps, timeout=PUMP_GRACE_SECONDS)
        finally:
            for pump in pumps:
                pump.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
        return code

    async def _pump(self, name: str, stream: asyncio.StreamReader) -> None:
        while True:
            try:
                line = await stream.readline()
            except ValueError:
                self._write(name, f"[a line longer than {LINE_LIMIT} bytes, dropped]")
                continue
            if not line:
                return
            self._write(name, line.decode(errors="replace").rstrip("\r\n"))

    # --- stopping -------------------------------------------------------------------------------------

    def _give_up(self) -> None:
        self._exit_code = 1
        self._stopping.set()

    def _on_signal(self, sig: signal.Signals) -> None:
        if self._stopping.is_set():
            self.say(f"{sig.name} again: killing every child now")
        else:
            self.say(f"{sig.name}: stopping (again to kill at once)")
        self.stop()

    async def _shutdown(self) -> None:
        running = [s for s in self.states.values() if s.running]
        for state in running:
            assert state.process is not None
            _signal_group(state.process.pid, signal.SIGTERM)
        waits = [asyncio.create_task(s.process.wait()) for s in running if s.process is not None]
        if waits:
            kill = asyncio.create_task(self._kill_now.wait())
            either: list[asyncio.Future[Any]] = [asyncio.gather(*waits), kill]
            await asyncio.wait(either, timeout=self._stop_timeout, return_when=asyncio.FIRST_COMPLETED)
            kill.cancel()
        late = [s for s in running if s.running]
        if late:
            self.say(f"killing {', '.join(s.spec.name for s in late)} (still running after SIGTERM)")
        for state in self.states.values():
            if state.process is not None:
                _signal_group(state.process.pid, signal.SIGKILL)
        await asyncio.gather(*waits, return_exceptions=True)
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.say("stopped")

    # --- output ---------------------------------------------------------------------------------------

    def _write(self, name: str, text: str, *, bold: bool = False) -> None:
        label = f"{name:<{self._width}} |"
        if self._color:
            code = "1" if bold else str(self._colours.get(name, 37))
            label = f"\x1b[{code}m{label}\x1b[0m"
        self._output.write(f"{label} {text}\n")
        self._output.flush()


def _signal_group(pid: int, sig: signal.Signals) -> None:
    """Signal the process group a child leads (it runs in a session of its own)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def _wants_color(output: TextIO) -> bool:
    if os.environ.get("NO_COLOR"):
        return False
    if os.environ.get("FORCE_COLOR"):
        return True
    isatty = getattr(output, "isatty", None)
    return bool(isatty and isatty())
