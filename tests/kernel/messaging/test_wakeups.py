"""Cross-process wake-ups on PostgreSQL beyond the relay: jobs scheduled elsewhere, dead letters retried
by an operator, and a LISTEN connection that is lost and comes back."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest

from splitstone.kernel.clock import SystemClock
from splitstone.kernel.messaging.admin import MessagingAdmin
from splitstone.kernel.messaging.inbox import DEAD, DONE
from tests.conftest import PG_ADMIN_DSN
from tests.kernel.messaging.helpers import event_app, wait_until

pytestmark = pytest.mark.backends("postgres")

SLOW_POLL = 20.0  # whatever happens sooner than this was woken by a NOTIFY, not found by polling
IDLE = 0.3
WAKE_LATENCY = 3.0  # well under SLOW_POLL, and generous for a loaded two-core CI machine


async def test_a_job_scheduled_in_another_process_runs_at_once(
    empty_database_url: str, tmp_path: Path
) -> None:
    async with (
        event_app(empty_database_url, tmp_path / "a", clock=SystemClock()) as writer,
        event_app(
            empty_database_url,
            tmp_path / "b",
            clock=SystemClock(),
            prepare=False,
            worker_poll_seconds=SLOW_POLL,
        ) as runner,
    ):
        await runner.worker.start()
        await asyncio.sleep(IDLE)
        await writer.tally.schedule(writer.container.clock.now(), key="now")

        async def done() -> bool:
            return [r["status"] for r in await writer.jobs()] == [DONE]

        assert await wait_until(done, within=SLOW_POLL, what="the job run by B") < WAKE_LATENCY


async def test_an_operator_retry_wakes_the_running_worker(empty_database_url: str, tmp_path: Path) -> None:
    async with event_app(
        empty_database_url, tmp_path, clock=SystemClock(), worker_poll_seconds=SLOW_POLL, event_max_attempts=1
    ) as app:
        app.tally.fail_always = True
        await app.worker.start()
        await app.ledger.post(4)

        async def dead() -> bool:
            return [r["status"] for r in await app.inbox_rows()] == [DEAD]

        await wait_until(dead, within=SLOW_POLL, what="the event dead after one attempt")
        await asyncio.sleep(IDLE)
        app.tally.fail_always = False
        admin = MessagingAdmin(app.container.databases, app.container.clock)
        assert len(await admin.retry_events(every=True)) == 1  # the CLI's `events dead retry --all`

        async def handled() -> bool:
            return await app.effects() == (4, 1, 1)

        assert await wait_until(handled, within=SLOW_POLL, what="the retried event handled") < WAKE_LATENCY


async def test_a_lost_listen_connection_comes_back(empty_database_url: str, tmp_path: Path) -> None:
    async with (
        event_app(empty_database_url, tmp_path / "a") as writer,
        event_app(
            empty_database_url, tmp_path / "b", prepare=False, worker_poll_seconds=SLOW_POLL
        ) as relayer,
    ):
        await relayer.worker.start()
        listener = next(li for li in relayer.worker.listeners if li.module == "ledger")
        await asyncio.wait_for(listener.listening.wait(), 5)

        assert listener.connections == 1
        database = writer.db("ledger").engine.url.database
        admin = await asyncpg.connect(PG_ADMIN_DSN)
        try:  # kill every LISTEN connection on the test database, as a network cut or failover would
            killed = await admin.fetchval(
                "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = $1 AND query LIKE 'LISTEN%') AS terminated",
                database,
            )
        finally:
            await admin.close()
        assert killed >= 1

        async def reconnected() -> bool:
            return listener.connections == 2 and listener.listening.is_set()

        await wait_until(reconnected, within=5, what="the listener back after losing its connection")
        await asyncio.sleep(IDLE)
        await writer.ledger.post(6)

        async def relayed() -> bool:
            return [r["published_at"] is not None for r in await writer.outbox()] == [True]

        assert (
            await wait_until(relayed, within=SLOW_POLL, what="the event relayed after the reconnect")
            < WAKE_LATENCY
        )
