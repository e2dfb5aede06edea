"""The worker's loops outlive a database outage, and a loop that dies anyway takes the worker down.

The faults run found both: the inbox and job runners asked the database how long to sleep outside their
error handling, so one failed query during an outage ended the loop for good (events piled up, the
process stayed up, and nothing restarted it).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest

from splitstone.kernel.clock import SystemClock
from splitstone.kernel.db import ModuleDatabase
from splitstone.kernel.messaging.queues import seconds_until_due
from splitstone.kernel.messaging.tables import inbox, jobs
from splitstone.kernel.messaging.transport import InProcessTransport
from splitstone.kernel.messaging.worker import Worker
from tests.support.mailbox import free_port


@pytest.mark.parametrize("table", [inbox, jobs], ids=["inbox", "jobs"])
async def test_how_long_to_sleep_is_the_idle_poll_while_the_database_is_away(table: object) -> None:
    nobody_listens = f"postgresql+asyncpg://root@127.0.0.1:{free_port()}/gone"
    db = ModuleDatabase.connect("notifications", nobody_listens)
    try:
        assert await seconds_until_due(db, table, SystemClock(), 0.75) == 0.75  # type: ignore[arg-type]
    finally:
        await db.dispose()


@dataclass
class DyingLoop:
    """A worker loop (as the retention loop is) that fails at once."""

    module: str = "projects"

    async def run(self) -> None:
        raise RuntimeError("the loop's own bug")


async def test_a_loop_that_ends_is_reported_so_the_worker_can_exit() -> None:
    worker = Worker(InProcessTransport(), [], [], [], retention=[DyingLoop()])  # type: ignore[list-item]
    await worker.start()
    try:
        ended = await asyncio.wait_for(worker.wait_loop_ended(), 5)
    finally:
        with pytest.raises(RuntimeError, match="the loop's own bug"):
            await worker.stop()
    assert ended == ['splitstone-retention-projects: RuntimeError("the loop\'s own bug")']
