"""Running a handler inside the transaction that records it, behind a savepoint."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from splitstone.kernel.db import UnitOfWork, ambient


async def run_in_savepoint(uow: UnitOfWork, call: Callable[[], Awaitable[None]]) -> str | None:
    """Run `call` with `uow` as the module's ambient unit of work.

    On success the handler's writes, events and jobs stay in `uow` (committed with the caller's mark).
    On failure they are rolled back to the savepoint and the error text is returned, so the caller can
    record the attempt in the same transaction.
    """
    mark = uow.staged_mark()
    connection = uow.session
    # One fixed savepoint name (not SQLAlchemy's numbered ones), so the driver prepares these three
    # statements once instead of once per event: on PostgreSQL that was most of a handler's cost.
    await connection.exec_driver_sql(f"SAVEPOINT {_SAVEPOINT}")
    try:
        # Savepoints for the handler's own units of work too: one that fails (and that the handler
        # survives) must leave nothing behind while the handler's other work commits.
        with ambient(uow, savepoints=True):
            await call()
            await uow.stage()
        await connection.exec_driver_sql(f"RELEASE SAVEPOINT {_SAVEPOINT}")
    except asyncio.CancelledError:
        raise
    except Exception as error:
        await connection.exec_driver_sql(f"ROLLBACK TO SAVEPOINT {_SAVEPOINT}")
        await connection.exec_driver_sql(f"RELEASE SAVEPOINT {_SAVEPOINT}")
        uow.discard_staged(since=mark)
        return f"{type(error).__name__}: {error}"
    return None


_SAVEPOINT = "splitstone_handler"
