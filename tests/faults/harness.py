"""One run: deploy, set up organizations, run the workload (with the faults), settle, check, report.

deploy  `splitstone up` (API + worker) on a fresh database behind PostgresGate, a nats-server of
        its own, an SMTP server and a webhook receiver (deployment.py)
set up  organizations on the paid plan, each with a project and a webhook endpoint (workload.py)
run     the mixed workload at `rate` requests/s for `seconds`; meanwhile the faults, one after the
        other, each waiting for the service to recover (faults.py)
settle  every started operation ends; writes of unknown outcome are sent again with their key
check   the invariants (invariants.py), then RSS of every process, then the report (report.py)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from tests.faults.client import Client
from tests.faults.deployment import Deployment
from tests.faults.faults import FaultResult, Faults
from tests.faults.invariants import Check, Effects, check_all
from tests.faults.workload import Workload
from tests.modules.notifications.webhook_support import Receiver
from tests.support.mailbox import smtp_server

UNBOUNDED = frozenset({"nats"})


@dataclass
class Config:
    root: Path
    seconds: float = 25.0
    rate: float = 10.0
    organizations: int = 3
    faults: bool = True
    nats_down_seconds: float = 2.0
    postgres_down_seconds: float = 3.0
    deadline_seconds: float = 10.0
    """The client's timeout for one attempt of a request."""
    recovery_within: float = 45.0
    events_within: float = 60.0
    rss_growth_bound: float | None = None
    """Fail when a process's RSS at the end exceeds this times its RSS after the warm-up."""
    warmup_seconds: float = 60.0
    sample_every: float = 30.0


@dataclass
class Report:
    config: Config
    phases: dict[str, float] = field(default_factory=dict)
    faults: list[FaultResult] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    effects: Effects = field(default_factory=Effects)
    rss: list[tuple[float, dict[str, int]]] = field(default_factory=list)
    rss_baseline: dict[str, int] = field(default_factory=dict)
    client: Client | None = None
    started_operations: int = 0
    jetstream_bytes: int = 0

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)


async def run(config: Config) -> Report:
    report = Report(config)
    began = time.monotonic()
    with smtp_server() as mailbox:
        async with Receiver() as receiver:
            deployment = Deployment(config.root, mailbox)
            try:
                await deployment.start()
                report.phases["deploy"] = round(time.monotonic() - began, 1)
                await _exercise(
                    config, report, deployment, Workload(_client(config, deployment), mailbox, receiver)
                )
            except BaseException:
                print(deployment.tail())
                raise
            finally:
                if report.client is not None:
                    await report.client.aclose()
                await deployment.stop()
    report.phases["total"] = round(time.monotonic() - began, 1)
    return report


def _client(config: Config, deployment: Deployment) -> Client:
    return Client(deployment.base_url, deadline=config.deadline_seconds)


async def _exercise(config: Config, report: Report, deployment: Deployment, workload: Workload) -> None:
    report.client = workload.client
    mark = time.monotonic()
    await workload.set_up(config.organizations)
    report.phases["set up"] = round(time.monotonic() - mark, 1)
    report.rss.append((0.0, deployment.rss_kib()))

    def on_tick(elapsed: float) -> None:
        last = report.rss[-1][0]
        if elapsed - last >= config.sample_every:
            report.rss.append((round(elapsed, 1), deployment.rss_kib()))
        if not report.rss_baseline and elapsed >= config.warmup_seconds:
            report.rss_baseline = deployment.rss_kib()

    faults = Faults(deployment, workload, within=config.recovery_within)
    mark = time.monotonic()
    load = asyncio.create_task(workload.run(config.seconds, config.rate, on_tick=on_tick))
    if config.faults:
        await _schedule(config, faults, mark)
    await load
    report.started_operations = workload.started
    report.phases["run"] = round(time.monotonic() - mark, 1)
    report.rss.append((round(time.monotonic() - mark, 1), deployment.rss_kib()))
    report.faults = faults.results

    mark = time.monotonic()
    await workload.drain(within=config.events_within)
    report.phases["settle"] = round(time.monotonic() - mark, 1)
    mark = time.monotonic()
    report.checks, report.effects = await check_all(workload, events_within=config.events_within)
    if config.faults:
        report.checks.append(
            Check(
                "recovered from every fault without help",
                len(faults.results) == 3,
                "; ".join(f"{f.name}: {f.event_recovery_seconds} s" for f in faults.results),
            )
        )
    else:
        outcomes = workload.client.tally.outcomes
        errors = {k: v for k, v in outcomes.items() if k.startswith("5xx") or k in ("timeout", "connection")}
        report.checks.append(Check("no errors without faults", not errors, f"errors: {errors or 'none'}"))
    report.jetstream_bytes = await deployment.jetstream_bytes()
    if config.rss_growth_bound is not None:
        report.checks.append(_rss_check(report, config.rss_growth_bound))
    report.phases["check"] = round(time.monotonic() - mark, 1)


async def _schedule(config: Config, faults: Faults, began: float) -> None:
    """The three faults at 15 %, 40 % and 65 % of the run, each after the previous one recovered."""
    plan: list[tuple[float, Callable[[], Awaitable[FaultResult]]]] = [
        (0.15, faults.kill_worker),
        (0.40, lambda: faults.restart_nats(config.nats_down_seconds)),
        (0.65, lambda: faults.postgres_outage(config.postgres_down_seconds)),
    ]
    for share, fault in plan:
        delay = began + share * config.seconds - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        await fault()


def _rss_check(report: Report, bound: float) -> Check:
    """Our processes' RSS must level off. nats-server's is reported, not bounded: it holds the streams'
    index and caches, which grow with the events kept (7 days of them) by design, not by a leak."""
    baseline = report.rss_baseline or report.rss[0][1]
    end = report.rss[-1][1]
    grown = {
        name: round(end[name] / baseline[name], 2) for name in baseline if name in end and baseline[name] > 0
    }
    ours = {name: ratio for name, ratio in grown.items() if name not in UNBOUNDED}
    return Check(
        f"RSS of serve and worker at the end within {bound:g}x of after warm-up",
        bool(ours) and all(ratio <= bound for ratio in ours.values()),
        f"end / after warm-up: {grown} (nats-server not bounded; JetStream holds "
        f"{report.jetstream_bytes / 1_048_576:.1f} MiB of events at the end)",
    )
