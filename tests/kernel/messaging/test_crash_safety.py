"""Crash safety: a worker process killed with SIGKILL anywhere in the event flow loses nothing and
applies nothing twice.

The test process produces a stream of `ledger.Posted` events (the outbox fills as the use case
commits); a separate worker process (`python -m tests.support.eventapp worker`) relays them and runs
`tally`'s deliberately non-idempotent handler. The worker is killed again and again: at random
moments, and at named crash points (`kernel.messaging.crashpoints`) in the windows where a bug would
show: after the transport accepted a batch but before the outbox marks it, after a handler ran but
before its transaction commits, after the NATS consumer committed an inbox row but before its ack.
Sometimes two workers share the work and die one after the other. Two last workers are left to finish;
then every event must have been handled exactly once in effect, and nothing may be left over.

A failing run prints the random seed; `SPLITSTONE_CRASH_SEED=<seed>` replays its kill timings.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from splitstone.kernel.container import Container
from splitstone.kernel.messaging.crashpoints import ENV_VAR, parse
from splitstone.kernel.messaging.inbox import inbox_counts
from splitstone.kernel.messaging.nats import consumer_name, stream_name
from splitstone.kernel.messaging.outbox import outbox_backlog
from tests.kernel.messaging.conftest import consumer_caught_up
from tests.support.eventapp import MODULES, Ledger, Posted, Tally, prepare, settings_for

REPO_ROOT = Path(__file__).resolve().parents[3]
EVENTS = 3000
BATCH = 50
READY_TIMEOUT = 20.0
CRASH_TIMEOUT = 30.0
SETTLE_TIMEOUT = 60.0


@dataclass(frozen=True)
class Phase:
    """One worker's life: armed crash points (it must die at one of them), or killed at random.

    Killed at random, `side_by_side` workers run at once (sharing the work) and die one by one.
    """

    crashpoints: str = ""
    side_by_side: int = 1

    def __post_init__(self) -> None:
        if self.crashpoints and self.side_by_side != 1:
            raise ValueError("a phase with crash points runs one worker: the one that must die")

    @property
    def points(self) -> list[str]:
        return [item.partition(":")[0] for item in self.crashpoints.split(",") if item]


IN_PROCESS_PHASES = (
    Phase("relay.after_publish:2"),
    Phase(),
    Phase("inbox.after_handler:2"),
    Phase(side_by_side=2),
    Phase("relay.after_publish:1"),
    Phase("inbox.after_handler:4"),
    Phase(),
)
NATS_PHASES = (
    Phase("relay.after_publish:2"),
    Phase("nats.after_deliver:2"),
    Phase(),
    Phase("inbox.after_handler:2"),
    Phase("nats.after_deliver:1"),
    Phase(side_by_side=2),
    Phase("inbox.after_handler:4"),
)


# --- the worker process ---------------------------------------------------------------------------


class WorkerProcess:
    """`python -m tests.support.eventapp worker ...` with its output collected."""

    def __init__(self, args: Sequence[str], crashpoints: str) -> None:
        self._args = list(args)
        self._crashpoints = crashpoints
        self._process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self.output: list[str] = []

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.returncode is None

    @property
    def process(self) -> asyncio.subprocess.Process:
        assert self._process is not None, "worker not started"
        return self._process

    async def start(self) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
        env.pop(ENV_VAR, None)
        if self._crashpoints:
            env[ENV_VAR] = self._crashpoints
        self._process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.support.eventapp",
            "worker",
            *self._args,
            cwd=REPO_ROOT,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        self._reader = asyncio.create_task(self._read())
        ready = asyncio.create_task(self._ready.wait())
        exited = asyncio.create_task(self.process.wait())
        await asyncio.wait({ready, exited}, timeout=READY_TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
        ready.cancel()
        exited.cancel()
        if self._ready.is_set():
            return
        await self.kill()
        raise AssertionError(f"the worker did not get ready:\n{self.transcript()}")

    async def _read(self) -> None:
        assert self.process.stdout is not None
        async for raw in self.process.stdout:
            line = raw.decode(errors="replace").rstrip()
            self.output.append(line)
            if line == "worker ready":
                self._ready.set()

    async def wait_for_crash(self) -> int:
        """Wait until the process dies; its return code."""
        try:
            code = await asyncio.wait_for(self.process.wait(), CRASH_TIMEOUT)
        except TimeoutError:
            await self.kill()
            raise AssertionError(
                f"the worker never reached {self._crashpoints}:\n{self.transcript()}"
            ) from None
        await self._drain_output()
        return code

    async def kill(self) -> int:
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGKILL)
        code = await self.process.wait()
        await self._drain_output()
        return code

    async def stop(self) -> int:
        """SIGTERM: a clean shutdown."""
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = await asyncio.wait_for(self.process.wait(), 15)
        except TimeoutError:
            return await self.kill()
        await self._drain_output()
        return code

    async def _drain_output(self) -> None:
        if self._reader is not None:
            await asyncio.wait_for(self._reader, 5)

    def transcript(self, lines: int = 40) -> str:
        return "\n".join(self.output[-lines:])


# --- the scenario ---------------------------------------------------------------------------------


@dataclass
class Stream:
    """The events the test has produced so far, and their sum."""

    produced: int = 0
    total: int = 0


async def produce(ledger: Ledger, stream: Stream, count: int, rng: random.Random) -> None:
    """Post `count` events in batches, paced so that the worker is busy while it gets killed."""
    left = count
    while left > 0:
        amounts = [rng.randint(1, 1000) for _ in range(min(BATCH, left))]
        await ledger.post_many(amounts)
        stream.produced += len(amounts)
        stream.total += sum(amounts)
        left -= len(amounts)
        await asyncio.sleep(rng.uniform(0.0, 0.03))


@dataclass(frozen=True)
class Snapshot:
    """What the databases say about the stream."""

    ledger_unpublished: int
    tally_unpublished: int
    inbox: dict[str, int]
    total: int
    applications: int
    distinct_events: int

    def finished(self, stream: Stream) -> bool:
        return (
            self.ledger_unpublished == 0
            and self.tally_unpublished == 0
            and self.inbox == {"done": stream.produced}
        )

    def hopeless(self, stream: Stream) -> bool:
        """Already wrong beyond repair: no point waiting any longer."""
        return self.applications > stream.produced


async def snapshot(container: Container) -> Snapshot:
    tally: Tally = container.implementations["tally"]  # type: ignore[assignment]
    async with container.databases["tally"].session() as session:
        inbox = await inbox_counts(session)
    return Snapshot(
        ledger_unpublished=(await outbox_backlog(container.databases["ledger"]))[0],
        tally_unpublished=(await outbox_backlog(container.databases["tally"]))[0],
        inbox=inbox,
        total=await tally.total(),
        applications=await tally.applications(),
        distinct_events=await tally.distinct_events(),
    )


async def survive_crashes(
    database_url: str,
    phases: Sequence[Phase],
    worker_args: Sequence[str],
    settings_options: dict[str, str],
    *,
    transport_drained: Callable[[], Awaitable[bool]] | None = None,
) -> None:
    """Produce EVENTS while workers die phase after phase; a last worker finishes; check the effect.

    `transport_drained`, if given, must also hold before the check: NATS redelivers what a killed
    worker fetched but did not ack only after the ack wait, and the test waits for that, so that the
    redeliveries are part of what it checks.
    """
    seed = int(os.environ.get("SPLITSTONE_CRASH_SEED") or random.randrange(1 << 32))
    rng = random.Random(seed)
    print(f"crash-safety seed: SPLITSTONE_CRASH_SEED={seed}; worker: {' '.join(worker_args)}", flush=True)
    container = Container.build(settings_for(database_url, **settings_options), MODULES)
    ledger: Ledger = container.implementations["ledger"]  # type: ignore[assignment]
    stream = Stream()
    per_phase = EVENTS // (len(phases) + 1)
    fired: list[str] = []
    workers: list[WorkerProcess] = []
    producing: asyncio.Task[None] | None = None
    try:
        await prepare(container)
        for phase in phases:
            worker = WorkerProcess(worker_args, phase.crashpoints)
            workers.append(worker)
            await worker.start()
            partners = [WorkerProcess(worker_args, "") for _ in range(phase.side_by_side - 1)]
            workers += partners
            for partner in partners:
                await partner.start()
            producing = asyncio.create_task(produce(ledger, stream, per_phase, rng))
            if phase.crashpoints:
                code = await worker.wait_for_crash()
                assert code == -signal.SIGKILL, (
                    f"the worker armed with {phase.crashpoints} exited with {code}:\n{worker.transcript()}"
                )
                output = "\n".join(worker.output)
                hits = [p for p in phase.points if f"splitstone crashpoint {p} hit" in output]
                assert hits, f"no crash point of {phase.crashpoints} fired:\n{worker.transcript()}"
                fired += hits
            else:
                for victim in [worker, *partners]:
                    await asyncio.sleep(rng.uniform(0.2, 1.2))
                    assert await victim.kill() == -signal.SIGKILL, victim.transcript()
            await producing

        last = [WorkerProcess(worker_args, ""), WorkerProcess(worker_args, "")]  # sharing the work
        workers += last
        for worker in last:
            await worker.start()
        await produce(ledger, stream, EVENTS - stream.produced, rng)
        deadline = time.monotonic() + SETTLE_TIMEOUT
        now = await snapshot(container)
        while time.monotonic() < deadline and not now.hopeless(stream):
            if now.finished(stream) and (transport_drained is None or await transport_drained()):
                break
            await asyncio.sleep(0.2)
            now = await snapshot(container)
        for worker in last:
            assert await worker.stop() == 0, worker.transcript()
    finally:
        if producing is not None and not producing.done():
            producing.cancel()
        for worker in workers:
            if worker.running:
                await worker.kill()
        await container.aclose()

    armed = {p for phase in phases for p in phase.points}
    assert armed <= set(fired), f"crash points never fired: {sorted(armed - set(fired))}"
    assert stream.produced == EVENTS
    assert now == Snapshot(
        ledger_unpublished=0,
        tally_unpublished=0,
        inbox={"done": EVENTS},
        total=stream.total,
        applications=EVENTS,
        distinct_events=EVENTS,
    ), f"seed {seed}"


# --- the tests ------------------------------------------------------------------------------------


async def test_in_process_transport_survives_sigkill_anywhere(empty_database_url: str) -> None:
    """SQLite and PostgreSQL (the suite's `--backend`); `prepare` migrates the empty database."""
    await survive_crashes(empty_database_url, IN_PROCESS_PHASES, ["--database-url", empty_database_url], {})


@pytest.mark.backends("postgres")  # SQLite's crash safety is covered in-process; NATS adds nothing there
async def test_nats_transport_survives_sigkill_anywhere(
    postgres_url: str, nats_url: str, nats_prefix: str
) -> None:
    await survive_crashes(
        postgres_url,
        NATS_PHASES,
        [
            "--database-url",
            postgres_url,
            "--transport",
            "nats",
            "--nats-url",
            nats_url,
            "--prefix",
            nats_prefix,
        ],
        {"transport": "nats", "nats_url": nats_url, "prefix": nats_prefix},
        transport_drained=lambda: consumer_caught_up(
            nats_url, stream_name(nats_prefix, "ledger"), consumer_name("tally", Posted.name)
        ),
    )


# --- fixtures -------------------------------------------------------------------------------------


@pytest.fixture
def postgres_url(backend: str, empty_database_url: str) -> str:
    assert backend == "postgres"
    return empty_database_url


def test_a_crash_point_spec_names_points_and_their_fatal_hit() -> None:
    assert parse(" relay.after_publish:3, inbox.after_handler ,") == {
        "relay.after_publish": 3,
        "inbox.after_handler": 1,
    }
    assert parse("") == {}
    for nonsense in ("relay.after_publish:0", ":2", "relay.after_publish:x"):
        with pytest.raises(ValueError, match="SPLITSTONE_CRASHPOINTS: expected 'name:count'"):
            parse(nonsense)
