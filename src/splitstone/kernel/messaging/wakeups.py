"""Wake-ups across processes on PostgreSQL: NOTIFY in the committing transaction, LISTEN in the worker.

A commit that leaves work behind (an outbox row, a job, an inbox row set back to pending by an operator)
sends `NOTIFY splitstone_wake, '<schema>:<queue>'`; PostgreSQL delivers it only if the transaction
commits. Each worker keeps one LISTEN connection per module database and wakes the matching loop at
once, instead of on its next poll. When that connection is lost, the loops poll until it is back.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping

import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from splitstone.kernel.db import ModuleDatabase
from splitstone.kernel.messaging.signals import Wakeup

log = structlog.get_logger("splitstone.wakeups")

CHANNEL = "splitstone_wake"
OUTBOX, INBOX, JOBS = "outbox", "inbox", "jobs"


async def notify(connection: AsyncConnection, schema: str, queue: str) -> None:
    """Announce, at commit, new work in `schema`'s `queue` to the workers of other processes."""
    if connection.dialect.name == "postgresql":
        await connection.execute(
            text("SELECT pg_notify(:channel, :payload)"), {"channel": CHANNEL, "payload": f"{schema}:{queue}"}
        )


class PostgresListener:
    """One module's LISTEN connection, kept open (reconnecting with backoff) for the worker's life."""

    def __init__(
        self, db: ModuleDatabase, wakeups: Mapping[str, Wakeup], *, max_reconnect_delay: float = 30.0
    ) -> None:
        self._db = db
        self._wakeups = dict(wakeups)
        self._max_delay = max_reconnect_delay
        self.listening = asyncio.Event()
        self.connections = 0  # how many times it has started listening (reconnects show here)

    @property
    def module(self) -> str:
        return self._db.schema

    async def run(self) -> None:
        delay = 1.0
        while True:
            lost = asyncio.Event()
            try:
                async with self._db.engine.connect() as conn:
                    driver = (await conn.get_raw_connection()).driver_connection
                    await driver.add_listener(CHANNEL, self._on_notify)  # type: ignore[union-attr]
                    driver.add_termination_listener(_setter(lost))  # type: ignore[union-attr]
                    self.listening.set()
                    self.connections += 1
                    delay = 1.0
                    for wakeup in self._wakeups.values():  # catch up on what was committed unheard
                        wakeup.set()
                    await lost.wait()
                    await conn.invalidate()
                log.warning("LISTEN connection lost; polling until it is back", module=self.module)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                log.warning(
                    "LISTEN unavailable; polling until it is back", module=self.module, error=repr(error)
                )
            finally:
                self.listening.clear()
            await asyncio.sleep(delay)
            delay = min(self._max_delay, delay * 2)

    def _on_notify(self, *args: object) -> None:
        schema, _, queue = str(args[-1]).partition(":")
        if schema == self.module and queue in self._wakeups:
            self._wakeups[queue].set()


def _setter(event: asyncio.Event) -> Callable[..., None]:
    def set_event(*_args: object) -> None:
        event.set()

    return set_event
