"""Subscriptions: one per organization, moved through Stripe's states by plan changes, period ends,
trials and payments (the rules are in `domain`)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from uuid import UUID

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection
from uuid6 import uuid7

from splitstone.kernel.clock import Clock
from splitstone.kernel.db import ScheduledJob, UnitOfWork, UnitOfWorkFactory, upsert_insert
from splitstone.kernel.errors import InvalidInput
from splitstone.kernel.messaging.jobs import job
from splitstone.kernel.pagination import decode_cursor, encode_cursor
from splitstone.modules.billing.accounts import Account, ensure_account, load_account, require_payment_method
from splitstone.modules.billing.api import (
    IllegalTransition,
    Interval,
    InvoiceStatus,
    PlanSummary,
    SubscriptionChanged,
    SubscriptionInfo,
    SubscriptionNotFound,
    SubscriptionStatus,
)
from splitstone.modules.billing.domain import (
    Trigger,
    add_intervals,
    grants_plan,
    period_end_after,
    prorate,
    share,
    transition,
)
from splitstone.modules.billing.invoices import BillingReason, Invoice, Invoices, LineKind, LineSpec
from splitstone.modules.billing.job_kinds import EXPIRE_INCOMPLETE, RENEW, TRIAL_ENDING
from splitstone.modules.billing.plans import Plans, PlanVersion
from splitstone.modules.billing.settings import BillingSettings
from splitstone.modules.billing.state import BillingState
from splitstone.modules.billing.storage import (
    accounts,
    invoices,
    pending_items,
    subscription_history,
    subscriptions,
)

S = SubscriptionStatus
When = Literal["now", "period_end"]


@dataclass(frozen=True)
class Subscription:
    id: UUID
    org_id: UUID
    status: SubscriptionStatus
    plan_code: str
    plan_version_id: UUID
    interval: Interval
    billing_anchor: datetime
    current_period_start: datetime
    current_period_end: datetime
    trial_start: datetime | None
    trial_end: datetime | None
    cancel_at_period_end: bool
    canceled_at: datetime | None
    scheduled_plan_version_id: UUID | None
    scheduled_interval: Interval | None
    prepaid_amount: int
    prepaid_from: datetime
    incomplete_expires_at: datetime | None
    usage_open_from: datetime
    created_at: datetime
    updated_at: datetime


def subscription_from_row(row: Any) -> Subscription:
    values = dict(row)
    values["status"] = SubscriptionStatus(values["status"])
    values["interval"] = Interval(values["interval"])
    if values["scheduled_interval"] is not None:
        values["scheduled_interval"] = Interval(values["scheduled_interval"])
    return Subscription(**values)


async def load_subscription(
    session: AsyncConnection, org_id: UUID, *, lock: bool = False
) -> Subscription | None:
    query = select(subscriptions).where(subscriptions.c.org_id == org_id)
    if lock:
        query = query.with_for_update()
    row = (await session.execute(query)).mappings().first()
    return subscription_from_row(row) if row else None


def calendar_month(moment: datetime) -> tuple[datetime, datetime]:
    """The UTC calendar month around `moment`: the period of an organization without a subscription."""
    start = datetime(moment.year, moment.month, 1, tzinfo=UTC)
    return start, add_intervals(start, Interval.MONTH, 1)


async def record_history(
    uow: UnitOfWork,
    before: Subscription | None,
    after: Subscription,
    change: str,
    detail: str | None = None,
) -> None:
    await uow.session.execute(
        subscription_history.insert().values(
            id=uuid7(),
            subscription_id=after.id,
            org_id=after.org_id,
            change=change,
            from_status=before.status.value if before else None,
            to_status=after.status.value,
            from_plan=before.plan_code if before else None,
            to_plan=after.plan_code,
            detail=detail,
            occurred_at=after.updated_at,
        )
    )


@dataclass(frozen=True)
class HistoryEntry:
    id: UUID
    change: str
    from_status: str | None
    to_status: str
    from_plan: str | None
    to_plan: str
    detail: dict[str, Any] | None
    occurred_at: datetime


@dataclass(frozen=True)
class HistoryPage:
    items: list[HistoryEntry]
    next_cursor: str | None


def renew_job(subscription: Subscription) -> ScheduledJob:
    end = subscription.current_period_end
    return job(
        RENEW,
        {"subscription_id": str(subscription.id), "period_end": end.isoformat()},
        run_at=end,
        idempotency_key=f"{subscription.id}:{end.isoformat()}",
    )


def _monthly(plan: PlanVersion, interval: Interval) -> float:
    """A price per month, to compare plans across intervals (only for ordering, never for money)."""
    return plan.price(interval) / (1 if interval is Interval.MONTH else 12)


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC")


class Subscriptions:
    """Reads and changes subscriptions; `renewals.py` moves them through time."""

    def __init__(
        self,
        uow: UnitOfWorkFactory,
        clock: Clock,
        plans: Plans,
        invoices: Invoices,
        settings: BillingSettings,
        provider_name: str,
    ) -> None:
        self._uow = uow
        self._clock = clock
        self._plans = plans
        self._invoices = invoices
        self._settings = settings
        self._provider_name = provider_name
        self.plan_changed: list[Callable[[UUID], None]] = []
        """Called with the organization once a change of its plan or status has committed."""

    # -- reading ---------------------------------------------------------------------------------------

    async def get(self, org_id: UUID) -> Subscription | None:
        async with self._uow(read_only=True) as uow:
            return await load_subscription(uow.session, org_id)

    async def by_id(self, session: AsyncConnection, subscription_id: UUID | None) -> Subscription | None:
        if subscription_id is None:
            return None
        row = (
            (await session.execute(select(subscriptions).where(subscriptions.c.id == subscription_id)))
            .mappings()
            .first()
        )
        return subscription_from_row(row) if row else None

    async def state(self, org_id: UUID) -> BillingState:
        """The plan and period that apply to `org_id` now."""
        subscription = await self.get(org_id)
        default = await self._plans.default()
        if subscription is None:
            start, end = calendar_month(self._clock.now())
            return BillingState(
                org_id=org_id,
                status=None,
                plan=default.definition,
                effective=default.definition,
                period_start=start,
                period_end=end,
                usage_open_from=start,
            )
        plan = await self._plans.by_id(subscription.plan_version_id)
        return BillingState(
            org_id=org_id,
            status=subscription.status,
            plan=plan.definition,
            effective=plan.definition if grants_plan(subscription.status) else default.definition,
            period_start=subscription.current_period_start,
            period_end=subscription.current_period_end,
            usage_open_from=subscription.usage_open_from,
        )

    async def info(self, org_id: UUID) -> SubscriptionInfo:
        subscription = await self.get(org_id)
        if subscription is None:
            raise SubscriptionNotFound(f"Organization {org_id} has no subscription.", org_id=str(org_id))
        return await self.to_info(subscription)

    async def to_info(self, subscription: Subscription) -> SubscriptionInfo:
        plan = await self._plans.by_id(subscription.plan_version_id)
        effective = plan.code if grants_plan(subscription.status) else self._plans.default_code
        return SubscriptionInfo(
            id=subscription.id,
            org_id=subscription.org_id,
            status=subscription.status,
            plan=PlanSummary(code=plan.code, name=plan.name, version=plan.version),
            interval=subscription.interval,
            effective_plan=effective,
            current_period_start=subscription.current_period_start,
            current_period_end=subscription.current_period_end,
            trial_end=subscription.trial_end,
            cancel_at_period_end=subscription.cancel_at_period_end,
        )

    async def history(self, org_id: UUID, *, limit: int, cursor: str | None) -> HistoryPage:
        """Every change of the organization's subscription, newest first."""
        query = select(subscription_history).where(subscription_history.c.org_id == org_id)
        if cursor is not None:
            query = query.where(subscription_history.c.id < decode_cursor(cursor))
        query = query.order_by(subscription_history.c.id.desc()).limit(limit + 1)
        async with self._uow(read_only=True) as uow:
            rows = (await uow.session.execute(query)).mappings().all()
        items = [
            HistoryEntry(
                id=r["id"],
                change=r["change"],
                from_status=r["from_status"],
                to_status=r["to_status"],
                from_plan=r["from_plan"],
                to_plan=r["to_plan"],
                detail=json.loads(r["detail"]) if r["detail"] else None,
                occurred_at=r["occurred_at"],
            )
            for r in rows[:limit]
        ]
        next_cursor = encode_cursor(items[-1].id) if len(rows) > limit else None
        return HistoryPage(items=items, next_cursor=next_cursor)

    # -- opening ---------------------------------------------------------------------------------------

    async def open_account(self, org_id: UUID, org_name: str) -> Subscription:
        """A new organization's billing account, on the default plan (idempotent)."""
        plan = await self._plans.default()
        async with self._uow() as uow:
            subscription, _ = await self._open(uow, org_id, org_name, plan)
            await uow.commit()
        return subscription

    async def _open(
        self, uow: UnitOfWork, org_id: UUID, org_name: str, plan: PlanVersion
    ) -> tuple[Subscription, Account]:
        account = await ensure_account(
            uow.session,
            org_id=org_id,
            org_name=org_name,
            currency=self._plans.catalog.currency,
            provider=self._provider_name,
            now=self._clock.now(),
        )
        return await self.create_free(uow, org_id, plan), account

    async def create_free(self, uow: UnitOfWork, org_id: UUID, plan: PlanVersion) -> Subscription:
        """The default plan for a new organization (a no-op when it has a subscription)."""
        now = self._clock.now()
        interval = Interval.MONTH if Interval.MONTH in plan.definition.plan.prices else Interval.YEAR
        values = {
            "id": uuid7(),
            "org_id": org_id,
            "status": S.ACTIVE.value,
            "plan_code": plan.code,
            "plan_version_id": plan.id,
            "interval": interval.value,
            "billing_anchor": now,
            "current_period_start": now,
            "current_period_end": period_end_after(now, interval, now),
            "trial_start": None,
            "trial_end": None,
            "cancel_at_period_end": False,
            "canceled_at": None,
            "scheduled_plan_version_id": None,
            "scheduled_interval": None,
            "prepaid_amount": 0,
            "prepaid_from": now,
            "incomplete_expires_at": None,
            "usage_open_from": now,
            "created_at": now,
            "updated_at": now,
        }
        session = uow.session
        inserted = await session.execute(
            upsert_insert(subscriptions, session.dialect).values(**values).on_conflict_do_nothing()
        )
        subscription = await load_subscription(session, org_id, lock=True)
        assert subscription is not None
        if inserted.rowcount:
            await record_history(uow, None, subscription, "created")
            uow.schedule(renew_job(subscription))
        return subscription

    async def _locked(self, uow: UnitOfWork, org_id: UUID) -> tuple[Subscription, Account]:
        """The organization's subscription and account, locked; opened on the default plan if missing
        (an organization that existed before billing did)."""
        subscription = await load_subscription(uow.session, org_id, lock=True)
        account = await load_account(uow.session, org_id, lock=True)
        if subscription is not None and account is not None:
            return subscription, account
        return await self._open(uow, org_id, f"Organization {org_id}", await self._plans.default())

    # -- changing --------------------------------------------------------------------------------------

    async def save(
        self,
        uow: UnitOfWork,
        before: Subscription,
        change: str,
        *,
        trigger: Trigger | None,
        target: SubscriptionStatus | None = None,
        detail: dict[str, Any] | None = None,
        **values: Any,
    ) -> Subscription:
        """Apply a change: the status `trigger` leads to (409 when it may not), the given columns, a
        history entry, a `SubscriptionChanged` event, and fresh entitlements after the commit."""
        status = transition(trigger, before.status, target) if trigger is not None else before.status
        await uow.session.execute(
            update(subscriptions)
            .where(subscriptions.c.id == before.id)
            .values(status=status.value, updated_at=self._clock.now(), **values)
        )
        after = await load_subscription(uow.session, before.org_id)
        assert after is not None
        await record_history(uow, before, after, change, json.dumps(detail) if detail else None)
        await self._announce(uow, before, after, change)
        org_id = after.org_id
        for listener in self.plan_changed:
            uow.after_commit(lambda listener=listener: listener(org_id))  # type: ignore[misc]
        return after

    async def _announce(
        self, uow: UnitOfWork, before: Subscription, after: Subscription, change: str
    ) -> None:
        account = await load_account(uow.session, after.org_id)
        assert account is not None
        plan = await self._plans.by_id(after.plan_version_id)
        uow.publish(
            SubscriptionChanged(
                occurred_at=self._clock.now(),
                aggregate_id=after.id,
                org_id=after.org_id,
                org_name=account.org_name,
                billing_email=account.billing_email,
                subscription_id=after.id,
                change=change,
                status=after.status,
                previous_status=before.status,
                plan=plan.code,
                plan_name=plan.name,
                previous_plan=before.plan_code,
                effective_plan=plan.code if grants_plan(after.status) else self._plans.default_code,
                current_period_end=after.current_period_end,
            )
        )

    async def change(
        self, org_id: UUID, plan_code: str, interval: Interval | None = None, when: When | None = None
    ) -> Subscription:
        """Move to another plan or interval.

        From the default plan or an ended subscription this starts a new one: a trial when the plan
        has one and the organization never had one, else a paid start (`incomplete` until the first
        invoice is paid; a payment method is required). On a live subscription an upgrade applies now,
        with proration items on the next invoice, and a downgrade at the period's end, unless `when`
        says otherwise; an interval change starts a new period now and is invoiced at once.
        """
        target = await self._plans.current(plan_code)
        default = await self._plans.default()
        async with self._uow() as uow:
            subscription, account = await self._locked(uow, org_id)
            current = await self._plans.by_id(subscription.plan_version_id)
            interval = self._interval(target, interval, subscription.interval)
            on_default = current.code == default.code and subscription.status is S.ACTIVE
            if subscription.status is S.CANCELED or on_default:
                changed = await self._start(uow, subscription, account, target, interval)
            elif subscription.status in (S.TRIALING, S.ACTIVE):
                changed = await self._switch(uow, subscription, current, target, interval, when, default)
            else:
                transition(Trigger.CHANGE_PLAN, subscription.status)
                raise AssertionError("unreachable")
            await uow.commit()
        return changed

    @staticmethod
    def _interval(plan: PlanVersion, asked: Interval | None, current: Interval) -> Interval:
        prices = plan.definition.plan.prices
        if asked is not None:
            if asked not in prices:
                offered = ", ".join(i.value for i in prices)
                raise InvalidInput(
                    f"The {plan.name} plan is not offered per {asked.value}; it is per {offered}.",
                    interval=asked.value,
                )
            return asked
        return current if current in prices else next(iter(prices))

    async def _start(
        self,
        uow: UnitOfWork,
        subscription: Subscription,
        account: Account,
        plan: PlanVersion,
        interval: Interval,
    ) -> Subscription:
        now = self._clock.now()
        fresh: dict[str, Any] = {
            "plan_code": plan.code,
            "plan_version_id": plan.id,
            "interval": interval.value,
            "cancel_at_period_end": False,
            "canceled_at": None,
            "scheduled_plan_version_id": None,
            "scheduled_interval": None,
            "incomplete_expires_at": None,
            "prepaid_from": now,
        }
        if plan.code == self._plans.default_code:
            if subscription.status is not S.CANCELED:
                return subscription  # already there
            end = period_end_after(now, interval, now)
            started = await self.save(
                uow,
                subscription,
                "started",
                trigger=Trigger.START_FREE,
                **fresh,
                billing_anchor=now,
                current_period_start=now,
                current_period_end=end,
                prepaid_amount=0,
                usage_open_from=now,
            )
            uow.schedule(renew_job(started))
            return started
        trial_days = plan.definition.plan.trial_days
        if trial_days and not account.trial_used:
            trial_end = now + timedelta(days=trial_days)
            started = await self.save(
                uow,
                subscription,
                "trial_started",
                trigger=Trigger.START_TRIAL,
                **fresh,
                billing_anchor=trial_end,
                current_period_start=now,
                current_period_end=trial_end,
                trial_start=now,
                trial_end=trial_end,
                prepaid_amount=0,
                usage_open_from=now,
            )
            await uow.session.execute(
                update(accounts).where(accounts.c.org_id == account.org_id).values(trial_used=True)
            )
            notice = max(now, trial_end - timedelta(days=self._settings.trial_ending_notice_days))
            uow.schedule(
                job(
                    TRIAL_ENDING,
                    {"subscription_id": str(started.id), "trial_end": trial_end.isoformat()},
                    run_at=notice,
                    idempotency_key=f"{started.id}:{trial_end.isoformat()}",
                )
            )
            uow.schedule(renew_job(started))
            return started
        require_payment_method(account)
        end = period_end_after(now, interval, now)
        price = plan.price(interval)
        expires = now + timedelta(hours=self._settings.incomplete_expiry_hours)
        fresh["incomplete_expires_at"] = expires
        started = await self.save(
            uow,
            subscription,
            "started",
            trigger=Trigger.START_PAID,
            **fresh,
            billing_anchor=now,
            current_period_start=now,
            current_period_end=end,
            trial_start=None,
            trial_end=None,
            prepaid_amount=price,
            usage_open_from=now,
        )
        uow.schedule(
            job(
                EXPIRE_INCOMPLETE,
                {"subscription_id": str(started.id)},
                run_at=expires,
                idempotency_key=f"{started.id}:{expires.isoformat()}",
            )
        )
        uow.schedule(renew_job(started))
        invoice = await self._invoices.create_draft(
            uow,
            account=account,
            subscription_id=started.id,
            reason=BillingReason.SUBSCRIPTION_CREATE,
            dedupe_key=f"create:{started.id}:{now.isoformat()}",
            period_start=now,
            period_end=end,
            lines=[self.plan_line(plan, interval, now, end)],
            usage_plan_version_id=None,
            finalize_at=now,
        )
        return await self._settled(uow, started, invoice)

    async def _settled(
        self, uow: UnitOfWork, subscription: Subscription, invoice: Invoice | None
    ) -> Subscription:
        """After invoicing at once: an invoice with nothing due (credit covered it) counts as paid."""
        if invoice is not None and invoice.status is InvoiceStatus.PAID:
            await self.on_invoice_paid(uow, invoice)
            found = await load_subscription(uow.session, subscription.org_id)
            assert found is not None
            return found
        return subscription

    async def _switch(
        self,
        uow: UnitOfWork,
        subscription: Subscription,
        current: PlanVersion,
        target: PlanVersion,
        interval: Interval,
        when: When | None,
        default: PlanVersion,
    ) -> Subscription:
        now = self._clock.now()
        cleared: dict[str, Any] = {"scheduled_plan_version_id": None, "scheduled_interval": None}
        if target.id == current.id and interval is subscription.interval:
            if subscription.scheduled_plan_version_id is None:
                return subscription
            return await self.save(
                uow, subscription, "change_unscheduled", trigger=Trigger.CHANGE_PLAN, **cleared
            )
        up = _monthly(target, interval) > _monthly(current, subscription.interval)
        direction = "upgraded" if up else "downgraded"
        switched: dict[str, Any] = {
            "plan_code": target.code,
            "plan_version_id": target.id,
            "interval": interval.value,
        }
        if subscription.status is S.TRIALING:
            if target.id == default.id:  # leaving the trial for the default plan: it ends now
                end = period_end_after(now, interval, now)
                changed = await self.save(
                    uow,
                    subscription,
                    "downgraded",
                    trigger=Trigger.CHANGE_PLAN,
                    target=S.ACTIVE,
                    **switched,
                    **cleared,
                    billing_anchor=now,
                    current_period_start=now,
                    current_period_end=end,
                    trial_end=now,
                    prepaid_amount=0,
                    prepaid_from=now,
                )
                uow.schedule(renew_job(changed))
                return changed
            return await self.save(
                uow,
                subscription,
                direction,
                trigger=Trigger.CHANGE_PLAN,
                target=S.TRIALING,
                **switched,
                **cleared,
            )
        if interval is not subscription.interval and target.id != default.id:
            return await self._new_cycle(uow, subscription, current, target, interval, direction)
        if (when or ("now" if up else "period_end")) == "period_end":
            return await self.save(
                uow,
                subscription,
                "downgrade_scheduled" if not up else "change_scheduled",
                trigger=Trigger.CHANGE_PLAN,
                scheduled_plan_version_id=target.id,
                scheduled_interval=interval.value,
            )
        proration = prorate(
            prepaid=subscription.prepaid_amount,
            prepaid_from=subscription.prepaid_from,
            new_price=target.price(interval),
            at=now,
            period_start=subscription.current_period_start,
            period_end=subscription.current_period_end,
        )
        end = subscription.current_period_end
        await self._pending(
            uow,
            subscription,
            current,
            proration.credit,
            f"Unused time on {current.name} after {_stamp(now)}",
            now,
            end,
        )
        await self._pending(
            uow,
            subscription,
            target,
            proration.charge,
            f"Remaining time on {target.name} from {_stamp(now)}",
            now,
            end,
        )
        return await self.save(
            uow,
            subscription,
            direction,
            trigger=Trigger.CHANGE_PLAN,
            detail={"credit": proration.credit, "charge": proration.charge},
            **switched,
            **cleared,
            prepaid_amount=proration.charge,
            prepaid_from=now,
        )

    async def _new_cycle(
        self,
        uow: UnitOfWork,
        subscription: Subscription,
        current: PlanVersion,
        target: PlanVersion,
        interval: Interval,
        direction: str,
    ) -> Subscription:
        """An interval change: credit the unused time, start a new period now, invoice it at once."""
        now = self._clock.now()
        old_end = subscription.current_period_end
        credit = -share(subscription.prepaid_amount, old_end - now, old_end - subscription.prepaid_from)
        await self._pending(
            uow,
            subscription,
            current,
            credit,
            f"Unused time on {current.name} after {_stamp(now)}",
            now,
            old_end,
        )
        end = period_end_after(now, interval, now)
        price = target.price(interval)
        changed = await self.save(
            uow,
            subscription,
            direction,
            trigger=Trigger.CHANGE_PLAN,
            detail={"credit": credit, "charge": price},
            plan_code=target.code,
            plan_version_id=target.id,
            interval=interval.value,
            scheduled_plan_version_id=None,
            scheduled_interval=None,
            billing_anchor=now,
            current_period_start=now,
            current_period_end=end,
            prepaid_amount=price,
            prepaid_from=now,
        )
        uow.schedule(renew_job(changed))
        account = await load_account(uow.session, subscription.org_id)
        assert account is not None
        current_has_usage = bool(current.definition.plan.metered)
        invoice = await self._invoices.create_draft(
            uow,
            account=account,
            subscription_id=changed.id,
            reason=BillingReason.SUBSCRIPTION_UPDATE,
            dedupe_key=f"update:{changed.id}:{now.isoformat()}",
            period_start=subscription.current_period_start,
            period_end=now,
            lines=[self.plan_line(target, interval, now, end)],
            usage_plan_version_id=current.id if current_has_usage else None,
            finalize_at=now,
        )
        return await self._settled(uow, changed, invoice)

    async def _pending(
        self,
        uow: UnitOfWork,
        subscription: Subscription,
        plan: PlanVersion,
        amount: int,
        description: str,
        start: datetime,
        end: datetime,
    ) -> None:
        if amount == 0:
            return
        await uow.session.execute(
            pending_items.insert().values(
                id=uuid7(),
                org_id=subscription.org_id,
                subscription_id=subscription.id,
                kind=LineKind.PRORATION.value,
                description=description,
                amount=amount,
                plan_code=plan.code,
                period_start=start,
                period_end=end,
                invoice_id=None,
                created_at=self._clock.now(),
            )
        )

    @staticmethod
    def plan_line(plan: PlanVersion, interval: Interval, start: datetime, end: datetime) -> LineSpec:
        price = plan.price(interval)
        return LineSpec(
            kind=LineKind.SUBSCRIPTION,
            description=f"{plan.name} ({interval.value}ly)",
            amount=price,
            unit_amount=price,
            plan_code=plan.code,
            period_start=start,
            period_end=end,
        )

    async def cancel(self, org_id: UUID, *, at_period_end: bool = True) -> Subscription:
        """End the subscription at its period's end (undo with `resume`), or now: then its usage so
        far and any proration items are invoiced, and the default plan applies at once."""
        default = await self._plans.default()
        async with self._uow() as uow:
            subscription, account = await self._locked(uow, org_id)
            if subscription.plan_code == default.code and subscription.status is S.ACTIVE:
                raise IllegalTransition(
                    "The organization is on the free plan: there is nothing to cancel.",
                    subscription_status=subscription.status.value,
                    trigger=(Trigger.SCHEDULE_CANCEL if at_period_end else Trigger.CANCEL_NOW).value,
                )
            if at_period_end:
                transition(Trigger.SCHEDULE_CANCEL, subscription.status)
                if subscription.cancel_at_period_end:
                    return subscription
                changed = await self.save(
                    uow,
                    subscription,
                    "cancel_scheduled",
                    trigger=Trigger.SCHEDULE_CANCEL,
                    cancel_at_period_end=True,
                    canceled_at=self._clock.now(),
                    scheduled_plan_version_id=None,
                    scheduled_interval=None,
                )
            else:
                changed = await self.end(uow, subscription, account, Trigger.CANCEL_NOW, self._clock.now())
            await uow.commit()
        return changed

    async def end(
        self,
        uow: UnitOfWork,
        subscription: Subscription,
        account: Account,
        trigger: Trigger,
        at: datetime,
        target: SubscriptionStatus | None = None,
    ) -> Subscription:
        """Cancel now (or at a period's end, `at`): the final invoice takes the usage of the period so
        far and the pending items; an unpaid first invoice is voided."""
        was = subscription.status
        ended = await self.save(
            uow,
            subscription,
            "canceled",
            trigger=trigger,
            target=target,
            cancel_at_period_end=False,
            canceled_at=subscription.canceled_at or at,
            scheduled_plan_version_id=None,
            scheduled_interval=None,
            incomplete_expires_at=None,
        )
        if was is S.INCOMPLETE:
            for invoice_id in await self._open_invoice_ids(uow, subscription.id):
                await self._invoices.close(uow, invoice_id, InvoiceStatus.VOID)
            return ended
        plan = await self._plans.by_id(subscription.plan_version_id)
        bill_usage = was in (S.ACTIVE, S.PAST_DUE) and bool(plan.definition.plan.metered)
        invoice = await self._invoices.create_draft(
            uow,
            account=account,
            subscription_id=subscription.id,
            reason=BillingReason.SUBSCRIPTION_CANCEL,
            dedupe_key=f"cancel:{subscription.id}:{at.isoformat()}",
            period_start=subscription.current_period_start,
            period_end=at,
            lines=[],
            usage_plan_version_id=plan.id if bill_usage else None,
            finalize_at=at + timedelta(seconds=self._settings.invoice_finalize_delay_seconds)
            if bill_usage
            else at,
        )
        return await self._settled(uow, ended, invoice)

    async def resume(self, org_id: UUID) -> Subscription:
        """Undo a scheduled cancellation or plan change (409 when none is scheduled)."""
        async with self._uow() as uow:
            subscription, _ = await self._locked(uow, org_id)
            transition(Trigger.RESUME, subscription.status)
            if not subscription.cancel_at_period_end and subscription.scheduled_plan_version_id is None:
                raise IllegalTransition(
                    "Nothing is scheduled: no cancellation or plan change to undo.",
                    subscription_status=subscription.status.value,
                    trigger=Trigger.RESUME.value,
                )
            changed = await self.save(
                uow,
                subscription,
                "resumed",
                trigger=Trigger.RESUME,
                cancel_at_period_end=False,
                canceled_at=None,
                scheduled_plan_version_id=None,
                scheduled_interval=None,
            )
            await uow.commit()
        return changed

    # -- payments' consequences ----------------------------------------------------------------------

    async def on_invoice_paid(self, uow: UnitOfWork, invoice: Invoice) -> None:
        """A paid invoice reactivates its subscription once none of its invoices is still open."""
        subscription = await self.by_id(uow.session, invoice.subscription_id)
        if subscription is None or subscription.status not in (S.INCOMPLETE, S.PAST_DUE, S.UNPAID):
            return
        if await self._open_invoice_ids(uow, subscription.id):
            return
        await self.save(
            uow, subscription, "activated", trigger=Trigger.PAYMENT_SUCCEEDED, incomplete_expires_at=None
        )

    async def on_payment_failed(self, uow: UnitOfWork, invoice: Invoice, *, final: bool) -> None:
        """A failed payment makes a live subscription past due; the last one ends dunning."""
        subscription = await self.by_id(uow.session, invoice.subscription_id)
        if subscription is None:
            return
        status = transition(Trigger.PAYMENT_FAILED, subscription.status)
        if status is not subscription.status:
            subscription = await self.save(uow, subscription, "past_due", trigger=Trigger.PAYMENT_FAILED)
        if not final or subscription.status is not S.PAST_DUE:
            return
        if self._settings.dunning_final_action == "unpaid":
            await self.save(uow, subscription, "unpaid", trigger=Trigger.DUNNING_EXHAUSTED, target=S.UNPAID)
            return
        account = await load_account(uow.session, subscription.org_id)
        assert account is not None
        await self._invoices.close(uow, invoice.id, InvoiceStatus.UNCOLLECTIBLE)
        await self.end(
            uow, subscription, account, Trigger.DUNNING_EXHAUSTED, self._clock.now(), target=S.CANCELED
        )

    async def _open_invoice_ids(self, uow: UnitOfWork, subscription_id: UUID) -> list[UUID]:
        rows = await uow.session.execute(
            select(invoices.c.id).where(
                invoices.c.subscription_id == subscription_id,
                invoices.c.status == InvoiceStatus.OPEN.value,
                invoices.c.amount_due > 0,
            )
        )
        return list(rows.scalars())
