"""The background half of a process: a relay per module, an inbox per subscribing module, job runners.

`splitstone serve` runs it inside the API process by default; `splitstone worker` runs it alone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING

import structlog

from splitstone.kernel.messaging.inbox import Handlers, Inbox
from splitstone.kernel.messaging.jobs import JobRunner
from splitstone.kernel.messaging.outbox import Relay
from splitstone.kernel.messaging.retention import RetentionLoop
from splitstone.kernel.messaging.retry import RetryPolicy
from splitstone.kernel.messaging.transport import InProcessTransport, Subscription, Transport
from splitstone.kernel.messaging.wakeups import INBOX, JOBS, OUTBOX, PostgresListener
from splitstone.kernel.settings import Settings

if TYPE_CHECKING:
    from splitstone.kernel.container import Container

log = structlog.get_logger("splitstone.worker")

STOP_TIMEOUT_SECONDS = 10.0


def build_transport(settings: Settings, publishers: Sequence[str]) -> Transport:
    if settings.event_transport == "nats":
        from splitstone.kernel.messaging.nats import NatsTransport  # only when configured

        nats: Transport = NatsTransport(
            settings.nats_url,
            prefix=settings.nats_stream_prefix,
            publishers=publishers,
            # A stream may not keep an event longer than the inboxes keep its dedupe record, or a
            # consumer recreated later could apply it a second time.
            max_age=timedelta(days=settings.event_retention_days),
        )
        return nats
    return InProcessTransport()


def retry_policy(settings: Settings) -> RetryPolicy:
    return RetryPolicy(
        max_attempts=settings.event_max_attempts,
        base_delay=timedelta(seconds=settings.event_retry_base_seconds),
        max_delay=timedelta(seconds=settings.event_retry_max_seconds),
    )


@dataclass
class Worker:
    transport: Transport
    relays: list[Relay]
    inboxes: list[Inbox]
    job_runners: list[JobRunner]
    retention: list[RetentionLoop] = field(default_factory=list)
    listeners: list[PostgresListener] = field(default_factory=list)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _transport_started: bool = False
    _loop_ended: asyncio.Event = field(default_factory=asyncio.Event)
    ended_loops: list[str] = field(default_factory=list)
    """Loops that ended by themselves (they run until cancelled, so an end is a bug): 'name: error'."""

    @classmethod
    def for_container(cls, container: Container, *, transport: Transport | None = None) -> Worker:
        settings = container.settings
        poll = timedelta(seconds=settings.worker_poll_seconds)
        retry = retry_policy(settings)
        publishers = [m.name for m in container.modules]
        transport = transport or build_transport(settings, publishers)
        relays = [
            Relay(
                container.databases[m.name],
                transport,
                container.clock,
                container.sinks[m.name].outbox_ready,
                idle_poll=poll,
            )
            for m in container.modules
        ]
        inboxes = []
        job_runners = []
        for module in container.modules:
            implementation = container.implementations[module.name]
            if module.subscriptions:
                handlers = Handlers(
                    module.name,
                    {event.name: factory(implementation) for event, factory in module.subscriptions.items()},
                )
                inboxes.append(
                    Inbox(
                        container.databases[module.name],
                        container.units_of_work[module.name],
                        handlers,
                        container.catalog,
                        container.clock,
                        retry=retry,
                        idle_poll=poll,
                    )
                )
            if module.jobs or module.external_jobs or module.recurring:
                job_runners.append(
                    JobRunner(
                        container.databases[module.name],
                        container.units_of_work[module.name],
                        {kind: factory(implementation) for kind, factory in module.jobs.items()},
                        container.clock,
                        container.sinks[module.name].jobs_ready,
                        retry=RetryPolicy(
                            max_attempts=settings.job_max_attempts,
                            base_delay=retry.base_delay,
                            max_delay=retry.max_delay,
                        ),
                        idle_poll=poll,
                        external={k: f(implementation) for k, f in module.external_jobs.items()},
                        concurrency=settings.external_job_concurrency,
                        lease=timedelta(seconds=settings.external_job_lease_seconds),
                        recurring=module.recurring,
                    )
                )
        keep = timedelta(days=settings.event_retention_days)
        retention = [
            RetentionLoop(container.databases[m.name], container.clock, keep, interval=timedelta(hours=1))
            for m in container.modules
        ]
        listeners = []
        for module in container.modules:
            db = container.databases[module.name]
            if db.engine.dialect.name != "postgresql":
                continue  # SQLite: one process writes; its loops poll when no local signal wakes them
            wakeups = {
                OUTBOX: container.sinks[module.name].outbox_ready,
                JOBS: container.sinks[module.name].jobs_ready,
            }
            for inbox in inboxes:
                if inbox.module == module.name:
                    wakeups[INBOX] = inbox.ready
            listeners.append(PostgresListener(db, wakeups))
        return cls(transport, relays, inboxes, job_runners, retention, listeners)

    def subscriptions(self) -> list[Subscription]:
        return [Subscription(i.module, i._handlers.event_names, i.deliver) for i in self.inboxes]

    async def _start_transport(self) -> None:
        if not self._transport_started:
            await self.transport.start(self.subscriptions())
            self._transport_started = True

    async def start(self) -> None:
        await self._start_transport()
        loops = [
            *(("relay", r.module, r.run) for r in self.relays),
            *(("inbox", i.module, i.run) for i in self.inboxes),
            *(("jobs", j.module, j.run) for j in self.job_runners),
            *(("retention", r.module, r.run) for r in self.retention),
            *(("listen", listener.module, listener.run) for listener in self.listeners),
        ]
        for kind, module, run in loops:
            task = asyncio.create_task(run(), name=f"splitstone-{kind}-{module}")
            task.add_done_callback(self._on_loop_done)
            self._tasks.append(task)
        log.info(
            "worker started",
            relays=len(self.relays),
            inboxes=len(self.inboxes),
            job_runners=len(self.job_runners),
        )

    async def wait_loop_ended(self) -> list[str]:
        """Until a loop ends by itself; `ended_loops`. `splitstone worker` then exits with an error, so
        its supervisor starts a whole worker again rather than leave one without, say, its inbox."""
        await self._loop_ended.wait()
        return self.ended_loops

    def _on_loop_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        error = task.exception()
        self.ended_loops.append(f"{task.get_name()}: {error!r}")
        log.error("a worker loop ended", loop=task.get_name(), error=repr(error))
        self._loop_ended.set()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            # A loop stuck in a driver call that ignores cancellation (a half-open connection) must not
            # hang the shutdown: it is logged and left behind.
            _, stuck = await asyncio.wait(self._tasks, timeout=STOP_TIMEOUT_SECONDS)
            for task in stuck:
                log.error("a worker loop did not stop in time", loop=task.get_name())
        failed = [t.exception() for t in self._tasks if t.done() and not t.cancelled() and t.exception()]
        self._tasks.clear()
        if failed:  # a loop that died of an error says so, as awaiting it would have
            raise failed[0]  # type: ignore[misc]
        if self._transport_started:
            await self.transport.close()
            self._transport_started = False

    async def settle(self, *, rounds: int = 3) -> None:
        """Relay, deliver and handle everything due now, without background tasks (tests, CLI)."""
        await self._start_transport()
        for _ in range(rounds):
            moved = 0
            for relay in self.relays:
                while (n := await relay.relay_once()) > 0:
                    moved += n
            for inbox in self.inboxes:
                moved += await inbox.drain()
            for runner in self.job_runners:
                moved += await runner.drain()
            if moved == 0:
                return
