"""The supervisor with real child processes (small Python scripts): output, restarts, shutdown."""

from __future__ import annotations

import asyncio
import io
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from splitstone.kernel.supervisor import Backoff, Child, Supervisor

FAST = Backoff(initial=0.05, maximum=0.2, reset_after=60)


def script(tmp_path: Path, name: str, body: str) -> list[str]:
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(body))
    return [sys.executable, str(path)]


def alive(pid: int) -> bool:
    """Running (a zombie nobody reaped counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


async def until(condition: Callable[[], bool], within: float = 10) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


TALK = """
    import sys, time
    print("hello out", flush=True)
    print("hello err", file=sys.stderr, flush=True)
    time.sleep(300)
"""


async def test_each_line_is_prefixed_with_the_childs_name(tmp_path: Path) -> None:
    out = io.StringIO()
    supervisor = Supervisor(
        [Child("api", script(tmp_path, "talk", TALK)), Child("worker", script(tmp_path, "talk2", TALK))],
        output=out,
        color=False,
    )
    await supervisor.start()
    await until(lambda: out.getvalue().count("hello") == 4)
    pids = [s.pid for s in supervisor.states.values()]
    supervisor.stop()
    assert await supervisor.wait() == 0
    lines = out.getvalue().splitlines()
    for line in ("api    | hello out", "api    | hello err", "worker | hello out", "worker | hello err"):
        assert line in lines
    assert all(pid is not None and not alive(pid) for pid in pids)
    assert "\x1b[" not in out.getvalue()


async def test_colour_per_child_only_when_wanted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = io.StringIO()
    supervisor = Supervisor([Child("api", script(tmp_path, "talk", TALK))], output=out, color=True)
    await supervisor.start()
    await until(lambda: "hello out" in out.getvalue())
    supervisor.stop()
    await supervisor.wait()
    assert "\x1b[36mapi |\x1b[0m hello out" in out.getvalue()

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    terminal = Terminal()
    Supervisor([Child("api", ["true"])], output=terminal).say("hi")
    assert "\x1b[" in terminal.getvalue()
    monkeypatch.setenv("NO_COLOR", "1")
    plain = Terminal()
    Supervisor([Child("api", ["true"])], output=plain).say("hi")
    assert plain.getvalue() == "up  | hi\n"


CRASH = """
    import sys
    with open(sys.argv[1], "a") as counter:
        counter.write("start\\n")
    print("crashing", flush=True)
    sys.exit(3)
"""


async def test_a_child_that_exits_is_restarted_with_backoff(tmp_path: Path) -> None:
    counter = tmp_path / "starts"
    out = io.StringIO()
    supervisor = Supervisor(
        [Child("flaky", [*script(tmp_path, "crash", CRASH), str(counter)])],
        output=out,
        color=False,
        backoff=FAST,
        max_failures=100,
    )
    await supervisor.start()
    await until(lambda: counter.exists() and len(counter.read_text().splitlines()) >= 4)
    supervisor.stop()
    assert await supervisor.wait() == 0
    assert supervisor.states["flaky"].starts >= 4
    text = out.getvalue()
    assert "flaky exited with code 3" in text
    for delay in ("restarting in 0.05 s", "restarting in 0.1 s", "restarting in 0.2 s"):
        assert delay in text
    assert "flaky restarted (pid" in text


async def test_a_stop_while_a_child_restarts_stops_that_child_too(tmp_path: Path) -> None:
    first_then_stay = """
        import pathlib, sys, time
        flag = pathlib.Path(sys.argv[1])
        if not flag.exists():
            flag.touch()
            sys.exit(3)
        time.sleep(300)
    """
    supervisor = Supervisor(
        [Child("flaky", [*script(tmp_path, "flaky", first_then_stay), str(tmp_path / "flag")])],
        output=io.StringIO(),
        color=False,
        backoff=FAST,
    )
    spawn = supervisor._spawn
    spawned: list[asyncio.subprocess.Process] = []

    async def stopped_while_spawning(child: Child) -> asyncio.subprocess.Process:
        if spawned:  # the restart: the stop comes while it is being started
            supervisor.stop()
        spawned.append(await spawn(child))
        return spawned[-1]

    supervisor._spawn = stopped_while_spawning  # type: ignore[method-assign]
    await supervisor.start()
    assert await asyncio.wait_for(supervisor.wait(), 5) == 0
    assert len(spawned) == 2
    assert not alive(spawned[1].pid)


async def test_it_gives_up_on_a_child_that_keeps_failing_at_start(tmp_path: Path) -> None:
    out = io.StringIO()
    supervisor = Supervisor(
        [
            Child("broken", [*script(tmp_path, "crash", CRASH), str(tmp_path / "starts")]),
            Child("fine", script(tmp_path, "talk", TALK)),
        ],
        output=out,
        color=False,
        backoff=FAST,
        max_failures=3,
    )
    await supervisor.start()
    fine = supervisor.states["fine"].pid
    assert await asyncio.wait_for(supervisor.wait(), 10) == 1
    assert supervisor.states["broken"].starts == 3
    assert "giving up" in out.getvalue()
    assert fine is not None
    assert not alive(fine)  # the others are stopped too


async def test_the_backoff_starts_over_after_a_child_stayed_up(tmp_path: Path) -> None:
    slow_crash = """
        import sys, time
        time.sleep(0.3)
        sys.exit(1)
    """
    supervisor = Supervisor(
        [Child("slow", script(tmp_path, "slow", slow_crash))],
        output=io.StringIO(),
        color=False,
        backoff=Backoff(initial=0.05, maximum=1, reset_after=0.2),
        max_failures=2,
    )
    await supervisor.start()
    await until(lambda: supervisor.states["slow"].starts >= 4)
    assert supervisor.states["slow"].failures <= 1  # each run lasted past reset_after: never "in a row"
    supervisor.stop()
    assert await supervisor.wait() == 0


async def test_a_child_that_cannot_be_started_fails_the_supervisor(tmp_path: Path) -> None:
    out = io.StringIO()
    supervisor = Supervisor([Child("ghost", [str(tmp_path / "no-such-program")])], output=out, color=False)
    await supervisor.start()
    assert await asyncio.wait_for(supervisor.wait(), 5) == 1
    assert "cannot start ghost" in out.getvalue()


async def test_a_child_that_ignores_sigterm_is_killed_after_the_timeout(tmp_path: Path) -> None:
    stubborn = """
        import signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("ready", flush=True)
        time.sleep(300)
    """
    out = io.StringIO()
    supervisor = Supervisor(
        [Child("stubborn", script(tmp_path, "stubborn", stubborn))], output=out, color=False, stop_timeout=0.5
    )
    await supervisor.start()
    await until(lambda: "ready" in out.getvalue())
    pid = supervisor.states["stubborn"].pid
    started = time.monotonic()
    supervisor.stop()
    await supervisor.wait()
    assert 0.4 < time.monotonic() - started < 5
    assert pid is not None
    assert not alive(pid)
    assert "killing stubborn" in out.getvalue()


async def test_what_a_child_started_goes_with_it(tmp_path: Path) -> None:
    parent = """
        import subprocess, sys, time
        grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
        open(sys.argv[1], "w").write(str(grandchild.pid))
        time.sleep(300)
    """
    pid_file = tmp_path / "grandchild.pid"
    supervisor = Supervisor(
        [Child("parent", [*script(tmp_path, "parent", parent), str(pid_file)])],
        output=io.StringIO(),
        color=False,
    )
    await supervisor.start()
    await until(lambda: pid_file.exists() and pid_file.read_text() != "")
    grandchild = int(pid_file.read_text())
    assert alive(grandchild)
    supervisor.stop()
    await supervisor.wait()
    await until(lambda: not alive(grandchild), within=5)


async def test_the_environment_is_the_supervisors_plus_the_childs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHARED_ONE", "from-parent")
    show = """
        import os
        print(os.environ["SHARED_ONE"], os.environ["OWN_ONE"], flush=True)
    """
    out = io.StringIO()
    supervisor = Supervisor([], output=out, color=False)
    code = await supervisor.run_once(Child("env", script(tmp_path, "show", show), env={"OWN_ONE": "mine"}))
    assert code == 0
    assert "env | from-parent mine" in out.getvalue()
    assert await supervisor.run_once(Child("fail", [sys.executable, "-c", "raise SystemExit(4)"])) == 4


def test_sigint_stops_every_child_and_exits_0(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    child = script(
        tmp_path,
        "child",
        """
        import os, sys, time
        open(sys.argv[1], "w").write(str(os.getpid()))
        time.sleep(300)
        """,
    )
    runner = tmp_path / "runner.py"
    runner.write_text(
        textwrap.dedent(
            f"""
            import asyncio, sys
            from splitstone.kernel.supervisor import Child, Supervisor
            children = [Child("child", {[*child, str(pid_file)]!r})]
            supervisor = Supervisor(children, color=False)
            sys.exit(asyncio.run(supervisor.run(on_started=lambda: print("STARTED", flush=True))))
            """
        )
    )
    process = subprocess.Popen(  # noqa: S603 (the test's own script)
        [sys.executable, str(runner)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        lines = []
        for line in process.stdout:
            lines.append(line)
            if "STARTED" in line:
                break
        deadline = time.monotonic() + 10
        while not (pid_file.exists() and pid_file.read_text()):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        child_pid = int(pid_file.read_text())
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=15) == 0
        rest = process.stdout.read()
    finally:
        if process.poll() is None:
            process.kill()
    assert "SIGINT: stopping" in rest
    assert "stopped" in rest
    deadline = time.monotonic() + 5
    while alive(child_pid):
        assert time.monotonic() < deadline, "the child outlived the supervisor"
        time.sleep(0.02)


def test_the_backoff_doubles_up_to_its_maximum() -> None:
    assert [Backoff().delay(n) for n in range(1, 8)] == [1, 2, 4, 8, 16, 30, 30]


def test_children_need_distinct_names() -> None:
    with pytest.raises(ValueError, match="distinct names"):
        Supervisor([Child("a", ["true"]), Child("a", ["true"])])
