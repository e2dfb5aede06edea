"""Subscriptions through time: period ends (renewal, the end of a trial, a scheduled cancellation or
downgrade), trial-ending notices, and first payments that never came.

Each is a transactional job keyed by its subscription and moment, scheduled when the period (or the
trial) began, and a no-op when the subscription has changed since: so however many workers run, and
however late, each period ends once and is invoiced once (the invoice's dedupe key seals it).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from uuid import UUID

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from splitstone.kernel.clock import Clock
from splitstone.kernel.db import UnitOfWorkFactory
from splitstone.kernel.messaging.jobs import Job
from splitstone.modules.billing.accounts import load_account
from splitstone.modules.billing.api import SubscriptionStatus, TrialEnding
from splitstone.modules.billing.domain import Trigger, period_end_after
from splitstone.modules.billing.invoices import BillingReason, Invoices
from splitstone.modules.billing.plans import Plans
from splitstone.modules.billing.settings import BillingSettings
from splitstone.modules.billing.storage import subscriptions
from splitstone.modules.billing.subscriptions import (
    Subscription,
    Subscriptions,
    renew_job,
    subscription_from_row,
)

S = SubscriptionStatus
_RENEWABLE = (S.TRIALING, S.ACTIVE, S.PAST_DUE, S.UNPAID)


class Renewals:
    def __init__(
        self,
        uow: UnitOfWorkFactory,
        clock: Clock,
        plans: Plans,
        invoices: Invoices,
        subscriptions: Subscriptions,
        settings: BillingSettings,
    ) -> None:
        self._uow = uow
        self._clock = clock
        self._plans = plans
        self._invoices = invoices
        self._subscriptions = subscriptions
        self._settings = settings

    async def renew(self, job: Job) -> None:
        """Job `billing.renew`: the period that ends at `period_end` is over."""
        period_end = datetime.fromisoformat(job.payload["period_end"])
        async with self._uow() as uow:
            subscription = await self._lock(uow.session, UUID(job.payload["subscription_id"]))
            if (
                subscription is None
                or subscription.current_period_end != period_end
                or subscription.status not in _RENEWABLE
            ):
                return  # changed since this job was scheduled
            account = await load_account(uow.session, subscription.org_id)
            assert account is not None
            plan = await self._plans.by_id(subscription.plan_version_id)
            boundary = subscription.current_period_end
            delay = timedelta(seconds=self._settings.invoice_finalize_delay_seconds)
            if subscription.cancel_at_period_end and subscription.status is not S.UNPAID:
                await self._subscriptions.end(uow, subscription, account, Trigger.PERIOD_END_CANCEL, boundary)
                await uow.commit()
                return
            trial_ends = subscription.status is S.TRIALING
            scheduled = subscription.scheduled_plan_version_id
            new_plan = await self._plans.by_id(scheduled) if scheduled else plan
            interval = subscription.scheduled_interval or subscription.interval
            anchor = (
                boundary
                if trial_ends or interval is not subscription.interval
                else subscription.billing_anchor
            )
            new_end = period_end_after(anchor, interval, boundary)
            price = new_plan.price(interval)
            # Usage is billed in arrears, on the plan that was in force; a trial's usage is free.
            bill_usage = (
                not trial_ends and subscription.status is not S.UNPAID and bool(plan.definition.plan.metered)
            )
            change = "activated" if trial_ends else "downgraded" if scheduled else "renewed"
            renewed = await self._subscriptions.save(
                uow,
                subscription,
                change,
                trigger=Trigger.TRIAL_END if trial_ends else Trigger.RENEW,
                plan_code=new_plan.code,
                plan_version_id=new_plan.id,
                interval=interval.value,
                billing_anchor=anchor,
                current_period_start=boundary,
                current_period_end=new_end,
                scheduled_plan_version_id=None,
                scheduled_interval=None,
                prepaid_amount=price,
                prepaid_from=boundary,
                usage_open_from=subscription.usage_open_from if bill_usage else boundary,
            )
            uow.schedule(renew_job(renewed))
            if subscription.status is not S.UNPAID:  # an unpaid subscription's periods pass uninvoiced
                invoice = await self._invoices.create_draft(
                    uow,
                    account=account,
                    subscription_id=subscription.id,
                    reason=BillingReason.SUBSCRIPTION_CYCLE,
                    dedupe_key=f"cycle:{subscription.id}:{boundary.isoformat()}",
                    period_start=subscription.current_period_start,
                    period_end=boundary,
                    lines=[self._subscriptions.plan_line(new_plan, interval, boundary, new_end)]
                    if price
                    else [],
                    usage_plan_version_id=plan.id if bill_usage else None,
                    finalize_at=boundary + delay if bill_usage else boundary,
                )
                if invoice is not None and invoice.status.value == "paid":
                    await self._subscriptions.on_invoice_paid(uow, invoice)
            await uow.commit()

    async def announce_trial_end(self, job: Job) -> None:
        """Job `billing.trial_ending`: publish `TrialEnding` if the trial still ends then."""
        trial_end = datetime.fromisoformat(job.payload["trial_end"])
        async with self._uow() as uow:
            subscription = await self._lock(uow.session, UUID(job.payload["subscription_id"]))
            if (
                subscription is None
                or subscription.status is not S.TRIALING
                or subscription.trial_end != trial_end
            ):
                return
            account = await load_account(uow.session, subscription.org_id)
            assert account is not None
            plan = await self._plans.by_id(subscription.plan_version_id)
            uow.publish(
                TrialEnding(
                    occurred_at=self._clock.now(),
                    aggregate_id=subscription.id,
                    org_id=subscription.org_id,
                    org_name=account.org_name,
                    billing_email=account.billing_email,
                    subscription_id=subscription.id,
                    plan=plan.code,
                    plan_name=plan.name,
                    trial_end=trial_end,
                    has_payment_method=account.payment_method_id is not None,
                )
            )
            await uow.commit()

    async def expire_incomplete(self, job: Job) -> None:
        """Job `billing.expire_incomplete`: a new subscription whose first payment never succeeded ends."""
        async with self._uow() as uow:
            subscription = await self._lock(uow.session, UUID(job.payload["subscription_id"]))
            now = self._clock.now()
            if (
                subscription is None
                or subscription.status is not S.INCOMPLETE
                or subscription.incomplete_expires_at is None
                or subscription.incomplete_expires_at > now
            ):
                return
            account = await load_account(uow.session, subscription.org_id)
            assert account is not None
            await self._subscriptions.end(uow, subscription, account, Trigger.INCOMPLETE_EXPIRED, now)
            await uow.commit()

    @staticmethod
    async def _lock(session: AsyncConnection, subscription_id: UUID) -> Subscription | None:
        row = (
            (
                await session.execute(
                    select(subscriptions).where(subscriptions.c.id == subscription_id).with_for_update()
                )
            )
            .mappings()
            .first()
        )
        return subscription_from_row(row) if row else None
