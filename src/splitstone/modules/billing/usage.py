"""Usage metering: idempotent usage events, and their aggregation over a period (Lago's model).

An event is recorded once per (organization, idempotency key): a repeated key returns the first record,
whatever the repeat says (as Lago's and Stripe's meter events do). A period's value of a metric is one
SQL aggregate over its events, by the metric's aggregation (`aggregate`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from pydantic import BaseModel, Field
from sqlalchemy import ColumnElement, func, select
from sqlalchemy.ext.asyncio import AsyncConnection
from uuid6 import uuid7

from splitstone.kernel.clock import Clock
from splitstone.kernel.db import UnitOfWorkFactory, upsert_insert
from splitstone.kernel.errors import DomainError, InvalidInput
from splitstone.modules.billing.api import InvalidUsage, UnknownMetric, UsagePeriodClosed, UsageRecord
from splitstone.modules.billing.catalog import Aggregation, Catalog, Metric
from splitstone.modules.billing.state import BillingState
from splitstone.modules.billing.storage import subscriptions, usage_events

StateReader = Callable[[UUID], Awaitable[BillingState]]

MAX_QUANTITY = 10**12
MAX_KEY_LENGTH = 255
MAX_UNIQUE_VALUE_LENGTH = 255
MAX_FUTURE = timedelta(minutes=5)
"""How far ahead of the clock `occurred_at` may be (clock skew between the reporter and us)."""
MAX_RANGE = timedelta(days=366)


async def aggregate(
    session: AsyncConnection,
    org_id: UUID,
    metric: str,
    aggregation: Aggregation,
    start: datetime,
    end: datetime,
) -> int:
    """The metric's usage in [start, end) under `aggregation` (0 when there is none).

    One query, answered from the index on (org_id, metric, occurred_at, quantity) except for
    `unique_count`. Pass the connection of the caller's transaction (an invoice's, say).
    """
    e = usage_events.c
    in_period = (e.org_id == org_id, e.metric == metric, e.occurred_at >= start, e.occurred_at < end)
    value: ColumnElement[Any]
    if aggregation is Aggregation.LATEST:
        query = select(e.quantity).where(*in_period).order_by(e.occurred_at.desc(), e.id.desc()).limit(1)
        return int(await session.scalar(query) or 0)
    if aggregation is Aggregation.COUNT:
        value = func.count()
    elif aggregation is Aggregation.SUM:
        value = func.sum(e.quantity)
    elif aggregation is Aggregation.MAX:
        value = func.max(e.quantity)
    else:
        value = func.count(e.unique_value.distinct())
    # PostgreSQL's SUM of a bigint is a numeric (a Decimal here).
    return int(await session.scalar(select(value).where(*in_period)) or 0)


@dataclass(frozen=True)
class UsageEvent:
    """One event to record (the arguments of `Usage.record`)."""

    metric: str
    quantity: int
    idempotency_key: str
    occurred_at: datetime | None = None
    unique_value: str | None = None


class MetricUsage(BaseModel):
    """A metric's usage in a period, and what it costs on the subscribed plan."""

    metric: str = Field(examples=["api_calls"])
    name: str = Field(examples=["API calls"])
    unit: str = Field(examples=["call"])
    aggregation: Aggregation = Field(examples=["sum"])
    value: int = Field(description="The period's usage under the metric's aggregation.", examples=[123456])
    included: int | None = Field(
        default=None,
        description="Included in the plan's price; null when the plan does not price this metric.",
        examples=[100000],
    )
    billable: int | None = Field(
        default=None, description="The usage over `included`; null when not priced.", examples=[23456]
    )
    amount: int | None = Field(
        default=None,
        description="What the billable usage costs so far, in minor units; null when not priced.",
        examples=[1173],
    )
    entitlement: str | None = Field(
        default=None, description="The limit this metric meters, if any.", examples=["tasks_per_month"]
    )
    limit: int | None = Field(
        default=None,
        description="That limit on the plan that applies; null when unlimited or when no limit meters it.",
    )


class UsageSummary(BaseModel):
    """Every metric of the catalog over a period: the current billing period, or an explicit range."""

    org_id: UUID
    period_start: datetime
    period_end: datetime = Field(description="Exclusive: usage up to, not including, this instant.")
    plan: str | None = Field(
        description="The subscribed plan, whose prices apply; null for an explicit range (values only).",
        examples=["pro"],
    )
    currency: str = Field(examples=["USD"])
    amount: int | None = Field(
        description="The metered amount so far, across metrics, in minor units; null for an explicit range.",
        examples=[1173],
    )
    metrics: list[MetricUsage]


class Usage:
    """Records usage events and reads them back per period."""

    def __init__(self, uow: UnitOfWorkFactory, clock: Clock, catalog: Catalog, state: StateReader) -> None:
        self._uow = uow
        self._clock = clock
        self._catalog = catalog
        self._state = state

    async def record(
        self,
        org_id: UUID,
        metric: str,
        quantity: int,
        idempotency_key: str,
        occurred_at: datetime | None = None,
        unique_value: str | None = None,
    ) -> UsageRecord:
        """Record one event; see `BillingApi.record_usage`. A repeated key returns the first record
        with `duplicate=True`. Raises `UnknownMetric`, `InvalidUsage`, `UsagePeriodClosed`."""
        event = UsageEvent(metric, quantity, idempotency_key, occurred_at, unique_value)
        (record,) = await self._record(org_id, [event], batch=False)
        return record

    async def record_many(self, org_id: UUID, events: Sequence[UsageEvent]) -> list[UsageRecord]:
        """Record several events at once, all or none: one record per event, in order.

        Each event is deduplicated by its own key (within the batch too: the first occurrence wins).
        An invalid event refuses the whole batch, its error naming the event's `index`.
        """
        return await self._record(org_id, events, batch=True)

    async def _record(self, org_id: UUID, events: Sequence[UsageEvent], *, batch: bool) -> list[UsageRecord]:
        now = self._clock.now()
        rows = []
        for index, event in enumerate(events):
            try:
                rows.append(self._row(org_id, event, now))
            except DomainError as error:
                raise _in_batch(error, index) if batch else error from None
        if not rows:
            return []
        first: dict[str, dict[str, Any]] = {}
        for row in rows:
            first.setdefault(row["idempotency_key"], row)
        state = await self._state(org_id)
        async with self._uow() as uow:
            session = uow.session
            open_from = await _usage_open_from(session, org_id, state.usage_open_from)
            # Sorted by key, so concurrent batches take their key locks in one order and cannot deadlock.
            fresh = sorted(
                (r for r in first.values() if r["occurred_at"] >= open_from),
                key=lambda r: r["idempotency_key"],
            )
            inserted: set[str] = set()
            if fresh:
                insert = upsert_insert(usage_events, session.dialect).values(fresh)
                result = await session.execute(
                    insert.on_conflict_do_nothing(index_elements=["org_id", "idempotency_key"]).returning(
                        usage_events.c.idempotency_key
                    )
                )
                inserted = set(result.scalars())
            stored = await _stored(session, org_id, [k for k in first if k not in inserted])
            for index, row in enumerate(rows):
                # A closed period's usage is refused, unless it repeats a key recorded in time.
                key = row["idempotency_key"]
                if row["occurred_at"] < open_from and key not in stored and key not in inserted:
                    closed = UsagePeriodClosed(
                        f"Usage before {open_from.isoformat()} is refused: that period is invoiced.",
                        open_from=open_from.isoformat(),
                    )
                    raise _in_batch(closed, index) if batch else closed
            if inserted:
                await uow.commit()
        records = []
        for row in rows:
            key = row["idempotency_key"]
            if key not in inserted:
                records.append(stored[key])
            elif first[key] is row:
                records.append(UsageRecord(**row))
            else:  # a key repeated within the batch
                records.append(UsageRecord(**first[key], duplicate=True))
        return records

    def _row(self, org_id: UUID, event: UsageEvent, now: datetime) -> dict[str, Any]:
        """The event as a row of `usage_events`; raises when it is not valid (before any I/O)."""
        metric = self._catalog.metrics.get(event.metric)
        if metric is None:
            known = list(self._catalog.metrics)
            raise UnknownMetric(
                f"There is no metric {event.metric!r}; metrics: {', '.join(known)}.",
                metric=event.metric,
                known=known,
            )
        quantity = event.quantity
        if isinstance(quantity, bool) or not isinstance(quantity, int) or not 0 <= quantity <= MAX_QUANTITY:
            raise InvalidUsage(f"quantity must be a whole number from 0 to {MAX_QUANTITY}.", field="quantity")
        key = event.idempotency_key
        if not isinstance(key, str) or not 1 <= len(key) <= MAX_KEY_LENGTH or not key.isprintable():
            raise InvalidUsage(
                f"idempotency_key must be 1 to {MAX_KEY_LENGTH} printable characters.",
                field="idempotency_key",
            )
        unique_value = event.unique_value
        if metric.aggregation is Aggregation.UNIQUE_COUNT and not unique_value:
            raise InvalidUsage(
                f"Metric {event.metric!r} counts distinct values: unique_value is required.",
                field="unique_value",
            )
        if unique_value is not None and len(unique_value) > MAX_UNIQUE_VALUE_LENGTH:
            raise InvalidUsage(
                f"unique_value must be at most {MAX_UNIQUE_VALUE_LENGTH} characters.", field="unique_value"
            )
        occurred_at = now if event.occurred_at is None else event.occurred_at
        if occurred_at.tzinfo is None or occurred_at.utcoffset() is None:
            raise InvalidUsage("occurred_at needs a time zone (such as Z or +00:00).", field="occurred_at")
        if occurred_at > now + MAX_FUTURE:
            raise InvalidUsage(
                f"occurred_at is more than {int(MAX_FUTURE.total_seconds() // 60)} minutes in the future.",
                field="occurred_at",
            )
        return {
            "id": uuid7(),
            "org_id": org_id,
            "metric": event.metric,
            "quantity": quantity,
            "unique_value": unique_value,
            "idempotency_key": key,
            "occurred_at": occurred_at.astimezone(UTC),
            "recorded_at": now,
        }

    async def value(self, org_id: UUID, metric: str, start: datetime, end: datetime) -> int:
        """One metric's usage in [start, end), by its catalog aggregation (one indexed query)."""
        aggregation = self._catalog.metrics[metric].aggregation
        async with self._uow(read_only=True) as uow:
            return await aggregate(uow.session, org_id, metric, aggregation, start, end)

    async def values(
        self, org_id: UUID, metrics: Iterable[str], start: datetime, end: datetime
    ) -> dict[str, int]:
        """Several metrics' usage in [start, end), by their catalog aggregations."""
        return await self._values(org_id, {m: self._catalog.metrics[m] for m in metrics}, start, end)

    async def _values(
        self, org_id: UUID, metrics: Mapping[str, Metric], start: datetime, end: datetime
    ) -> dict[str, int]:
        async with self._uow(read_only=True) as uow:
            return {
                code: await aggregate(uow.session, org_id, code, metric.aggregation, start, end)
                for code, metric in metrics.items()
            }

    async def summary(self, org_id: UUID) -> UsageSummary:
        """The current period: every metric's value, with its price on the subscribed plan and the
        limit that meters it on the plan that applies."""
        state = await self._state(org_id)
        # A subscription keeps the metric definitions of its plan's version: those are what it pays for.
        definitions = {**self._catalog.metrics, **state.plan.metrics}
        values = await self._values(org_id, definitions, state.period_start, state.period_end)
        prices = {p.metric: p for p in state.plan.plan.metered}
        metering = {d.metric: key for key, d in self._catalog.entitlements.items() if d.metric is not None}
        metrics = []
        for code, metric in definitions.items():
            value = values[code]
            priced: dict[str, Any] = {}
            price = prices.get(code)
            if price is not None:
                priced = {
                    "included": price.included,
                    "billable": price.billable(value),
                    "amount": price.amount(value),
                }
            key = metering.get(code)
            if key is not None:
                priced |= {"entitlement": key, "limit": state.effective.plan.limits.get(key)}
            metrics.append(
                MetricUsage(
                    metric=code,
                    name=metric.name,
                    unit=metric.unit,
                    aggregation=metric.aggregation,
                    value=value,
                    **priced,
                )
            )
        return UsageSummary(
            org_id=org_id,
            period_start=state.period_start,
            period_end=state.period_end,
            plan=state.plan.code,
            currency=state.plan.currency,
            amount=sum(m.amount or 0 for m in metrics),
            metrics=metrics,
        )

    async def summary_between(self, org_id: UUID, start: datetime, end: datetime) -> UsageSummary:
        """Every metric's value in an explicit [start, end) of at most 366 days, without prices.
        Raises `InvalidInput` for a naive, empty, reversed or longer range."""
        if start.tzinfo is None or end.tzinfo is None:
            raise InvalidInput("from and to need a time zone (such as Z or +00:00).")
        if end <= start:
            raise InvalidInput("to must be after from.", field="to")
        if end - start > MAX_RANGE:
            raise InvalidInput(f"A range spans at most {MAX_RANGE.days} days.", field="to")
        start, end = start.astimezone(UTC), end.astimezone(UTC)
        values = await self._values(org_id, self._catalog.metrics, start, end)
        return UsageSummary(
            org_id=org_id,
            period_start=start,
            period_end=end,
            plan=None,
            currency=self._catalog.currency,
            amount=None,
            metrics=[
                MetricUsage(
                    metric=code, name=m.name, unit=m.unit, aggregation=m.aggregation, value=values[code]
                )
                for code, m in self._catalog.metrics.items()
            ],
        )


async def _usage_open_from(session: AsyncConnection, org_id: UUID, read: datetime) -> datetime:
    """`usage_open_from` as of this transaction (the later of it and `read`, the state's).

    On PostgreSQL the subscription row is share-locked until the commit: an invoice that locks it
    (FOR UPDATE) to aggregate the period and close it then either sees this usage or makes it refused,
    never misses it. On SQLite the transaction holds the write lock, which does the same.
    """
    query = (
        select(subscriptions.c.usage_open_from)
        .where(subscriptions.c.org_id == org_id)
        .with_for_update(read=True)
    )
    locked: datetime | None = await session.scalar(query)
    return read if locked is None else max(read, locked)


async def _stored(session: AsyncConnection, org_id: UUID, keys: list[str]) -> dict[str, UsageRecord]:
    """The recorded events of these keys, as duplicates."""
    if not keys:
        return {}
    e = usage_events.c
    rows = (
        await session.execute(select(usage_events).where(e.org_id == org_id, e.idempotency_key.in_(keys)))
    ).mappings()
    return {row["idempotency_key"]: UsageRecord(**row, duplicate=True) for row in rows}


def _in_batch(error: DomainError, index: int) -> DomainError:
    """The same error, naming the batch's event (`events[3]: ...`, and `index`)."""
    return type(error)(f"events[{index}]: {error.detail}", index=index, **error.extra)
