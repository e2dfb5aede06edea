"""Event pipeline benchmark: commit → outbox → relay → transport → inbox → handled.

Prints events/s and commit-to-handled latency (p50/p99) for the in-process and NATS transports, beside
a baseline measured in the same run: raw nats-py JetStream publish + pull-consume + ack of the same
payloads. Targets (issue 3): outbox→NATS→inbox on PostgreSQL ≥ 30% of the baseline's throughput, and
p99 commit-to-handled latency under 250 ms at 1,000 events/s.

    .venv/bin/python -m bench.events [--events 5000] [--rate 1000] [--seconds 5]

Needs PostgreSQL (SPLITSTONE_BENCH_PG_DSN, default postgresql://root@127.0.0.1/test) and NATS
(SPLITSTONE_BENCH_NATS_URL, default nats://127.0.0.1:4222). Results: bench/results/events-latest.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import ClassVar, Protocol

import asyncpg
import nats
from nats.js.api import StorageType, StreamConfig

from bench.common import NATS_URL, commit, delete_streams
from splitstone.kernel import migrations
from splitstone.kernel.container import Container
from splitstone.kernel.events import Event
from splitstone.kernel.module import Module, ModuleContext
from splitstone.kernel.settings import Environment, Settings

PG_DSN = os.environ.get("SPLITSTONE_BENCH_PG_DSN", "postgresql://root@127.0.0.1/test")
RESULTS = Path(__file__).parent / "results" / "events-latest.json"
PAYLOAD_PADDING = "x" * 200  # a realistic event body is a few hundred bytes


class Measured(Event):
    name: ClassVar[str] = "source.Measured"
    sequence: int
    padding: str


class SourceApi(Protocol):
    async def emit(self, sequences: Sequence[int]) -> None: ...


class SinkApi(Protocol):
    async def count(self) -> int: ...


class Source:
    def __init__(self, ctx: ModuleContext) -> None:
        self._uow, self._clock = ctx.uow, ctx.clock

    async def emit(self, sequences: Sequence[int]) -> None:
        async with self._uow() as uow:
            now = self._clock.now()
            for n in sequences:
                uow.publish(
                    Measured(occurred_at=now, aggregate_id=uuid.uuid4(), sequence=n, padding=PAYLOAD_PADDING)
                )
            await uow.commit()


class Sink:
    """Records each event's commit-to-handled latency, in memory.

    The handler writes nothing itself, so what is measured is the pipeline's own durable work (outbox
    row, relay, transport, inbox row, claim, done mark), not the cost of a particular handler.
    """

    def __init__(self, ctx: ModuleContext) -> None:
        self._uow = ctx.uow
        self.latencies: list[float] = []
        self.handled = 0
        self.done = asyncio.Event()
        self.expected = 0

    async def on_measured(self, event: Measured) -> None:
        self.latencies.append(time.time() - event.occurred_at.timestamp())
        self.handled += 1
        if self.handled >= self.expected:
            self.done.set()

    async def count(self) -> int:
        return self.handled


MODULES = (
    Module(name="source", contract=SourceApi, factory=Source, publishes=[Measured]),
    Module(
        name="sink",
        contract=SinkApi,
        factory=Sink,
        subscriptions={Measured: lambda s: s.on_measured},
    ),
)


@dataclass
class Result:
    pipeline: str
    database: str
    events: int
    events_per_second: float
    p50_ms: float | None = None
    p99_ms: float | None = None
    rate: int | None = None


async def _fresh_pg_database() -> str:
    name = f"splitstone_bench_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(PG_DSN)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    return name


async def _drop_pg_database(name: str) -> None:
    conn = await asyncpg.connect(PG_DSN)
    await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await conn.close()


async def _container(url: str, transport: str, prefix: str) -> Container:
    settings = Settings(
        env=Environment.TEST,
        database_url=url,
        event_transport=transport,
        nats_url=NATS_URL,
        nats_stream_prefix=prefix,
        worker_poll_seconds=1.0,
    )
    container = Container.build(settings, MODULES)
    for module in container.modules:
        db = container.databases[module.name]
        await migrations.upgrade_module(db, None)
        if module.metadata is not None:
            async with db.engine.begin() as conn:
                await conn.run_sync(module.metadata.create_all)
    return container


async def _pipeline(
    url: str, database: str, transport: str, events: int, rate: int, seconds: float
) -> list[Result]:
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    container = await _container(url, transport, prefix)
    source: Source = container.implementations["source"]  # type: ignore[assignment]
    sink: Sink = container.implementations["sink"]  # type: ignore[assignment]
    worker = container.worker()
    await worker.start()
    results = []
    try:
        # Throughput: commit as fast as batches of 100 allow, time until the last is handled.
        sink.expected, sink.handled, sink.done = events, 0, asyncio.Event()
        started = time.perf_counter()
        for first in range(0, events, 100):
            await source.emit(range(first, min(events, first + 100)))
        await asyncio.wait_for(sink.done.wait(), timeout=600)
        elapsed = time.perf_counter() - started
        results.append(Result(f"outbox→{transport}→inbox", database, events, events / elapsed))
        # Latency at a fixed rate: batches of 10 every 10 ms = 1,000 events/s.
        total = int(rate * seconds)
        sink.expected, sink.handled, sink.done, sink.latencies = total, 0, asyncio.Event(), []
        batch = max(1, rate // 100)
        started = time.perf_counter()
        for i, first in enumerate(range(0, total, batch)):
            await source.emit(range(first, min(total, first + batch)))
            delay = started + (i + 1) * batch / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
        await asyncio.wait_for(sink.done.wait(), timeout=600)
        p50, p99 = _percentiles(sink.latencies)
        results.append(Result(f"outbox→{transport}→inbox @rate", database, total, rate, p50, p99, rate))
    finally:
        await worker.stop()
        await container.aclose()
        if transport == "nats":
            await delete_streams(prefix)
    return results


async def _raw_nats(events: int, rate: int, seconds: float) -> list[Result]:
    """The floor: nats-py JetStream publish + durable pull consume + ack, same payload sizes."""
    nc = await nats.connect(NATS_URL)
    js = nc.jetstream()
    stream = f"BENCHRAW{uuid.uuid4().hex[:8]}".upper()
    subject = f"{stream.lower()}.events"
    await js.add_stream(StreamConfig(name=stream, subjects=[subject], storage=StorageType.FILE))
    payload = json.dumps({"sequence": 0, "padding": PAYLOAD_PADDING, "id": str(uuid.uuid4())}).encode()
    psub = await js.pull_subscribe(subject, durable="raw", stream=stream)
    latencies: list[float] = []
    try:

        async def consume(count: int, track: bool) -> None:
            seen = 0
            while seen < count:
                try:
                    msgs = await psub.fetch(256, timeout=1)
                except nats.errors.TimeoutError:
                    continue
                for msg in msgs:
                    if track:
                        latencies.append(time.time() - float(msg.headers["sent"]))  # type: ignore[index]
                    await msg.ack()
                seen += len(msgs)

        started = time.perf_counter()
        consumer = asyncio.create_task(consume(events, False))
        for first in range(0, events, 100):
            await asyncio.gather(
                *(
                    js.publish(
                        subject, payload, headers={"Nats-Msg-Id": f"{first}-{i}", "sent": str(time.time())}
                    )
                    for i in range(min(100, events - first))
                )
            )
        await consumer
        throughput = events / (time.perf_counter() - started)
        total = int(rate * seconds)
        consumer = asyncio.create_task(consume(total, True))
        batch = max(1, rate // 100)
        started = time.perf_counter()
        for i, first in enumerate(range(0, total, batch)):
            await asyncio.gather(
                *(
                    js.publish(
                        subject, payload, headers={"Nats-Msg-Id": f"r{first}-{j}", "sent": str(time.time())}
                    )
                    for j in range(min(batch, total - first))
                )
            )
            delay = started + (i + 1) * batch / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
        await consumer
        p50, p99 = _percentiles(latencies)
    finally:
        await js.delete_stream(stream)
        await nc.close()
    return [
        Result("raw nats-py (baseline)", "-", events, throughput),
        Result("raw nats-py (baseline) @rate", "-", total, rate, p50, p99, rate),
    ]


def _percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    p50 = statistics.median(ordered) * 1000
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000
    return round(p50, 2), round(p99, 2)


async def main(events: int, rate: int, seconds: float, transports: list[str]) -> None:
    results = await _raw_nats(events, rate, seconds)
    baseline = results[0].events_per_second
    with tempfile.TemporaryDirectory() as folder:
        results += await _pipeline(
            f"sqlite+aiosqlite:///{folder}/main.db", "sqlite", "inprocess", events, rate, seconds
        )
    for transport in transports:
        name = await _fresh_pg_database()
        try:
            url = PG_DSN.replace("postgresql://", "postgresql+asyncpg://").rsplit("/", 1)[0] + f"/{name}"
            results += await _pipeline(url, "postgresql", transport, events, rate, seconds)
        finally:
            await _drop_pg_database(name)
    _report(results, baseline)


def _report(results: list[Result], baseline: float) -> None:
    print(
        f"{'pipeline':34} {'db':10} {'events':>7} {'events/s':>10} {'vs raw':>7} {'p50 ms':>8} {'p99 ms':>8}"
    )
    rows = []
    for r in results:
        ratio = r.events_per_second / baseline if r.rate is None else None
        rows.append({**asdict(r), "ratio_to_baseline": ratio})
        print(
            f"{r.pipeline:34} {r.database:10} {r.events:>7} {r.events_per_second:>10.0f} "
            f"{'' if ratio is None else f'{ratio:.2f}':>7} {'' if r.p50_ms is None else r.p50_ms:>8} "
            f"{'' if r.p99_ms is None else r.p99_ms:>8}"
        )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {"commit": commit(), "machine": platform.platform(), "cpus": os.cpu_count(), "results": rows},
            indent=2,
        )
        + "\n"
    )
    print(f"written: {RESULTS}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--transports", default="inprocess,nats", help="on PostgreSQL, comma-separated")
    args = parser.parse_args()
    asyncio.run(main(args.events, args.rate, args.seconds, args.transports.split(",")))
