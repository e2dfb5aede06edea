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
    savepoint = await uow.session.begin_nested()
    try:
        with ambient(uow):
            await call()
            await uow.stage()
        await savepoint.commit()
    except asyncio.CancelledError:
        raise
    except Exception as error:
        await savepoint.rollback()
        uow.discard_staged()
        return f"{type(error).__name__}: {error}"
    return None
