"""The ambient unit of work: inside an event or job handler, the module's `uow()` joins the handler's
transaction, so the handler's writes, events and jobs commit with its inbox (or job) record, or not at
all. Only the module's own factory joins; every other module keeps transactions of its own."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta
from pathlib import Path
from uuid import UUID

import pytest
from sqlalchemy import func, insert, select
from uuid6 import uuid7

from splitstone.kernel.db import UnitOfWork, ambient
from splitstone.kernel.messaging.execution import run_in_savepoint
from splitstone.kernel.messaging.jobs import job
from tests.kernel.messaging.helpers import START, EventApp, decode_payloads, event_app
from tests.support.eventapp import Posted, Tallied, Tally, applied, entries


def tally_uow(app: EventApp) -> UnitOfWork:
    """A unit of work of tally's, as the inbox opens one around a handler."""
    factory = app.container.units_of_work["tally"]
    return UnitOfWork(factory.db, factory.sink)


async def applied_rows(app: EventApp) -> int:
    async with app.db("tally").session() as connection:
        return int((await connection.execute(select(func.count()).select_from(applied))).scalar_one())


async def record(uow: UnitOfWork, kind: str = "event") -> None:
    await uow.session.execute(insert(applied).values(row_id=uuid7(), event_id=uuid7(), kind=kind))


def tallied() -> Tallied:
    return Tallied(occurred_at=START, aggregate_id=uuid7(), event_id=uuid7())


async def test_the_modules_factory_joins_the_ambient_unit_of_work(
    empty_database_url: str, tmp_path: Path
) -> None:
    async with event_app(empty_database_url, tmp_path) as app:
        factory = app.container.units_of_work["tally"]
        async with tally_uow(app) as outer:
            with ambient(outer):
                async with factory() as joined:
                    assert joined is not outer
                    assert joined.session is outer.session  # the same connection, the same transaction
                    await record(joined)
                    await joined.commit()  # does not commit the handler's transaction
                async with factory(read_only=True) as reader:
                    assert reader.session is outer.session
                    assert (
                        await reader.session.execute(select(func.count()).select_from(applied))
                    ).scalar() == 1
            assert await applied_rows(app) == 0  # nobody else sees it: nothing is committed yet
            await outer.commit()
        assert await applied_rows(app) == 1

        standalone = factory()  # outside the block, a unit of work of its own again
        assert isinstance(standalone, UnitOfWork)


async def test_rolling_back_the_ambient_unit_of_work_undoes_what_the_joined_one_did(
    empty_database_url: str, tmp_path: Path
) -> None:
    async with event_app(empty_database_url, tmp_path) as app:
        factory = app.container.units_of_work["tally"]
        async with tally_uow(app) as outer:
            with ambient(outer):
                async with factory() as joined:
                    await record(joined)
                    joined.publish(tallied())
                    joined.schedule(job("tally.recount", {}, run_at=START))
                    await joined.commit()
            # the handler failed later: its runner leaves without committing
        assert await applied_rows(app) == 0
        assert await app.outbox("tally") == []
        assert await app.jobs() == []
        assert app.recorder.published == []


async def test_events_and_jobs_of_the_joined_unit_of_work_commit_with_the_ambient_one(
    empty_database_url: str, tmp_path: Path
) -> None:
    async with event_app(empty_database_url, tmp_path) as app:
        factory = app.container.units_of_work["tally"]
        event = tallied()
        async with tally_uow(app) as outer:
            with ambient(outer):
                async with factory() as joined:
                    joined.publish(event)
                    joined.schedule(job("tally.recount", {"n": 1}, run_at=START, idempotency_key="once"))
                    await joined.commit()
            assert await app.outbox("tally") == []  # staged with the ambient unit of work's commit
            assert app.recorder.published == []
            await outer.commit()
        assert decode_payloads(await app.outbox("tally"), Tallied) == [event]
        [scheduled] = await app.jobs()
        assert (scheduled["kind"], scheduled["idempotency_key"], scheduled["status"]) == (
            "tally.recount",
            "once",
            "pending",
        )
        assert app.recorder.published == [event]


async def test_other_modules_keep_their_own_transactions(empty_database_url: str, tmp_path: Path) -> None:
    """A tally handler that calls ledger: ledger's unit of work is its own, committed by ledger, and
    stays committed whatever becomes of the handler's transaction."""
    async with event_app(empty_database_url, tmp_path) as app:
        async with tally_uow(app) as outer:
            await record(outer)  # the handler's transaction is under way, as an inbox's always is
            with ambient(outer):
                ledger_uow = app.container.units_of_work["ledger"]()
                assert isinstance(ledger_uow, UnitOfWork)
                async with ledger_uow:
                    assert ledger_uow.session is not outer.session
                entry = await asyncio.wait_for(app.ledger.post(9), timeout=10)
            # the handler fails: its runner rolls its transaction back
        async with app.db("ledger").session() as connection:
            assert (await connection.execute(select(entries.c.id))).scalars().all() == [entry]
        [row] = await app.outbox("ledger")
        assert decode_payloads([row], Posted)[0].aggregate_id == entry


async def test_a_failed_use_case_inside_a_handler_leaves_nothing_behind(
    empty_database_url: str, tmp_path: Path
) -> None:
    """A handler may call one of its module's use cases and carry on when it fails (an expected domain
    error, say). The use case's unit of work rolls back, as it does anywhere: none of its writes, events
    or jobs commit with the handler, and the handler's own work does."""
    async with event_app(empty_database_url, tmp_path) as app:
        factory = app.container.units_of_work["tally"]
        kept = tallied()

        async def failing_use_case() -> None:
            async with factory() as uow:
                await record(uow, kind="failed")
                uow.publish(tallied())
                uow.schedule(job("tally.recount", {}, run_at=START))
                raise LookupError("expected, and handled by the caller")

        async with tally_uow(app) as outer:
            await record(outer, kind="runner")
            with ambient(outer, savepoints=True):
                with pytest.raises(LookupError):
                    await failing_use_case()
                async with factory() as uow:  # the handler carries on and commits its own work
                    await record(uow, kind="kept")
                    uow.publish(kept)
                    await uow.commit()
            await outer.commit()

        async with app.db("tally").session() as connection:
            kinds = (await connection.execute(select(applied.c.kind))).scalars().all()
        assert sorted(kinds) == ["kept", "runner"]
        assert decode_payloads(await app.outbox("tally"), Tallied) == [kept]
        assert await app.jobs() == []
        assert app.recorder.published == [kept]


async def test_a_use_case_left_without_commit_inside_a_handler_is_rolled_back(
    empty_database_url: str, tmp_path: Path
) -> None:
    async with event_app(empty_database_url, tmp_path) as app:
        factory = app.container.units_of_work["tally"]
        async with tally_uow(app) as outer:
            with ambient(outer, savepoints=True):
                async with factory() as uow:
                    await record(uow)
                    uow.publish(tallied())
                    # no commit: a unit of work rolls back unless committed, joined or not
            await outer.commit()
        assert await applied_rows(app) == 0
        assert await app.outbox("tally") == []


async def test_a_nested_use_case_shares_the_fate_of_the_one_that_called_it(
    empty_database_url: str, tmp_path: Path
) -> None:
    async with event_app(empty_database_url, tmp_path) as app:
        factory = app.container.units_of_work["tally"]

        async def inner() -> None:
            async with factory() as uow:
                await record(uow, kind="inner")
                uow.publish(tallied())
                await uow.commit()

        async def outer_use_case() -> None:
            async with factory():
                await inner()  # committed, but only as far as its caller is
                raise LookupError("the caller fails after it")

        async with tally_uow(app) as outer:
            with ambient(outer, savepoints=True), pytest.raises(LookupError):
                await outer_use_case()
            await outer.commit()
        assert await applied_rows(app) == 0
        assert await app.outbox("tally") == []
        assert app.recorder.published == []


async def test_without_savepoints_an_uncommitted_unit_abandons_the_handlers_transaction(
    empty_database_url: str, tmp_path: Path
) -> None:
    """The inbox's fast path runs handlers without savepoints: a joined unit of work that ends without
    commit then cannot be undone alone, so the whole transaction must not commit."""
    async with event_app(empty_database_url, tmp_path) as app:
        factory = app.container.units_of_work["tally"]
        async with tally_uow(app) as outer:
            with ambient(outer):
                async with factory(read_only=True) as reader:  # a read-only unit has nothing to undo
                    await reader.session.execute(select(applied))
                async with factory():  # nor has one that never touched the database
                    pass
                assert outer.abandoned is None

                async def failing_use_case() -> None:
                    async with factory() as uow:
                        await record(uow)
                        uow.publish(tallied())
                        raise LookupError("failed")

                with pytest.raises(LookupError):
                    await failing_use_case()
            assert outer.abandoned is not None
            with pytest.raises(RuntimeError, match="cannot commit"):
                await outer.commit()
        assert await applied_rows(app) == 0
        assert await app.outbox("tally") == []


async def test_the_ambient_unit_of_work_belongs_to_its_own_task(
    empty_database_url: str, tmp_path: Path
) -> None:
    """Handlers run concurrently with requests: a request's use case never joins a handler's transaction."""
    async with event_app(empty_database_url, tmp_path) as app:
        factory = app.container.units_of_work["tally"]
        inside, outside = asyncio.Event(), asyncio.Event()
        seen: dict[str, object] = {}

        async def handler() -> None:
            async with tally_uow(app) as outer:
                with ambient(outer):
                    seen["handler"] = factory()
                    inside.set()
                    await outside.wait()

        async def request() -> None:
            await inside.wait()
            seen["request"] = factory()
            outside.set()

        await asyncio.wait_for(asyncio.gather(handler(), request()), timeout=10)
        assert not isinstance(seen["handler"], UnitOfWork)  # joined
        assert isinstance(seen["request"], UnitOfWork)  # its own


async def test_a_handler_runs_with_its_module_joined(empty_database_url: str, tmp_path: Path) -> None:
    """End to end: tally's handler writes through `uow()` and the inbox commits it with the done mark."""
    async with event_app(empty_database_url, tmp_path) as app:
        await app.ledger.post(3)
        app.clock.advance(timedelta(seconds=1))
        await app.worker.settle()
        [row] = await app.inbox_rows()
        assert (row["status"], row["handled_at"]) == ("done", START + timedelta(seconds=1))
        assert await app.effects() == (3, 1, 1)


@pytest.mark.parametrize("use_case", ["reads", "fails", "reads after its commit"])
async def test_a_handler_that_survives_a_failed_use_case_is_handled_once(
    use_case: str, empty_database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """End to end through the inbox: the fast path (no savepoints) gives way to the careful one when a
    handler's unit of work ended uncommitted; the event is handled once, without the failed use case."""
    on_posted = Tally.on_posted
    calls: list[UUID] = []

    async def handler(self: Tally, event: Posted) -> None:
        calls.append(event.id)
        if use_case == "reads":
            async with self._uow(read_only=True) as uow:
                await uow.session.execute(select(applied))
        elif use_case == "reads after its commit":
            async with self._uow() as uow:
                await uow.commit()
                await uow.session.execute(select(applied))  # harmless, but the fast path cannot tell
        else:
            with contextlib.suppress(LookupError):
                async with self._uow() as uow:
                    await uow.session.execute(
                        insert(applied).values(row_id=uuid7(), event_id=event.id, kind="failed")
                    )
                    uow.publish(tallied())
                    raise LookupError("an expected failure the handler gets over")
        await on_posted(self, event)

    monkeypatch.setattr(Tally, "on_posted", handler)
    async with event_app(empty_database_url, tmp_path) as app:
        await app.ledger.post_many([1, 2])
        await app.worker.settle()
        assert {(r["status"], r["attempts"]) for r in await app.inbox_rows()} == {("done", 1)}
        assert await app.effects() == (3, 2, 2)
        async with app.db("tally").session() as connection:
            kinds = (await connection.execute(select(applied.c.kind))).scalars().all()
        assert kinds == ["event", "event"]
        tallied_for = [e.event_id for e in decode_payloads(await app.outbox("tally"), Tallied)]  # type: ignore[attr-defined]
        assert sorted(tallied_for) == sorted(set(calls))
        # Reading costs nothing; a failed use case sends the batch down the careful path once more.
        assert len(calls) == (2 if use_case == "reads" else 4)


async def test_after_commit_callbacks_run_once_committed_and_never_after_a_rollback(
    empty_database_url: str, tmp_path: Path
) -> None:
    async with event_app(empty_database_url, tmp_path) as app:
        factory = app.container.units_of_work["tally"]
        calls: list[str] = []

        async with factory() as standalone:
            standalone.after_commit(lambda: calls.append("standalone"))
            assert calls == []
            await standalone.commit()
        assert calls == ["standalone"]

        async with factory() as rolled_back:
            rolled_back.after_commit(lambda: calls.append("rolled back"))
        async with tally_uow(app) as outer:
            with ambient(outer):
                async with factory() as joined:
                    joined.after_commit(lambda: calls.append("joined"))
                    await joined.commit()
                async with factory() as left:  # ends without commit: its callback goes with its writes
                    left.after_commit(lambda: calls.append("left"))
            assert calls == ["standalone"]  # the handler's transaction has not committed yet
            await outer.commit()
        assert calls == ["standalone", "joined"]


async def test_a_failing_handler_takes_its_after_commit_callbacks_with_it(
    empty_database_url: str, tmp_path: Path
) -> None:
    async with event_app(empty_database_url, tmp_path) as app:
        factory = app.container.units_of_work["tally"]
        calls: list[str] = []

        async def handler(name: str, fail: bool) -> None:
            async with factory() as uow:
                uow.after_commit(lambda: calls.append(name))
                await uow.commit()
            if fail:
                raise RuntimeError("handler failed after its commit")

        async with tally_uow(app) as outer:
            assert await run_in_savepoint(outer, lambda: handler("failed", True)) is not None
            assert await run_in_savepoint(outer, lambda: handler("succeeded", False)) is None
            await outer.commit()
        assert calls == ["succeeded"]
