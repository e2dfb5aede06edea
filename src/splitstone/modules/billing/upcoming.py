"""The upcoming invoice: what the next period's invoice would hold if the period ended now
(Stripe's "upcoming invoice"), computed without writing anything."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from sqlalchemy import select

from splitstone.kernel.clock import Clock
from splitstone.kernel.db import UnitOfWorkFactory
from splitstone.kernel.errors import NotFound
from splitstone.modules.billing.accounts import load_account
from splitstone.modules.billing.api import SubscriptionStatus
from splitstone.modules.billing.domain import period_end_after
from splitstone.modules.billing.invoices import LineKind, LineSpec
from splitstone.modules.billing.plans import Plans
from splitstone.modules.billing.storage import pending_items
from splitstone.modules.billing.subscriptions import Subscriptions, load_subscription
from splitstone.modules.billing.usage import aggregate

S = SubscriptionStatus


class NoUpcomingInvoice(NotFound):
    code = "no-upcoming-invoice"
    title = "No invoice is coming"


@dataclass(frozen=True)
class UpcomingInvoice:
    currency: str
    period_start: datetime  # the period whose usage and changes it bills
    period_end: datetime  # when it will be drafted
    lines: list[LineSpec]
    subtotal: int
    credit_applied: int
    total: int


class Upcoming:
    def __init__(
        self, uow: UnitOfWorkFactory, clock: Clock, plans: Plans, subscriptions: Subscriptions
    ) -> None:
        self._uow = uow
        self._clock = clock
        self._plans = plans
        self._subscriptions = subscriptions

    async def preview(self, org_id: UUID) -> UpcomingInvoice:
        """The invoice the current period's end would bring, with usage so far (`NoUpcomingInvoice` when
        the subscription ends then, has ended, or waits for its first payment)."""
        async with self._uow(read_only=True) as uow:
            session = uow.session
            subscription = await load_subscription(session, org_id)
            account = await load_account(session, org_id)
            if (
                subscription is None
                or account is None
                or subscription.status not in (S.TRIALING, S.ACTIVE, S.PAST_DUE)
                or subscription.cancel_at_period_end
            ):
                raise NoUpcomingInvoice(
                    "No invoice is coming: the subscription is not running on to another period.",
                    org_id=str(org_id),
                )
            plan = await self._plans.by_id(subscription.plan_version_id)
            scheduled = subscription.scheduled_plan_version_id
            next_plan = await self._plans.by_id(scheduled) if scheduled else plan
            interval = subscription.scheduled_interval or subscription.interval
            start, end = subscription.current_period_start, subscription.current_period_end
            lines: list[LineSpec] = []
            if next_plan.price(interval):
                keeps_anchor = interval is subscription.interval and subscription.status is not S.TRIALING
                next_end = period_end_after(
                    subscription.billing_anchor if keeps_anchor else end, interval, end
                )
                lines.append(self._subscriptions.plan_line(next_plan, interval, end, next_end))
            pending = (
                await session.execute(
                    select(pending_items)
                    .where(
                        pending_items.c.subscription_id == subscription.id,
                        pending_items.c.invoice_id.is_(None),
                    )
                    .order_by(pending_items.c.id)
                )
            ).mappings()
            lines += [
                LineSpec(
                    kind=LineKind.PRORATION,
                    description=p["description"],
                    amount=p["amount"],
                    plan_code=p["plan_code"],
                    period_start=p["period_start"],
                    period_end=p["period_end"],
                )
                for p in pending
            ]
            if subscription.status is not S.TRIALING:
                for price in plan.definition.plan.metered:
                    metric = plan.definition.metrics[price.metric]
                    quantity = await aggregate(session, org_id, price.metric, metric.aggregation, start, end)
                    if quantity:
                        lines.append(
                            LineSpec(
                                kind=LineKind.USAGE,
                                description=f"{metric.name}: {quantity:,} {metric.unit}s so far, "
                                f"{price.included:,} included",
                                amount=price.amount(quantity),
                                quantity=price.billable(quantity),
                                plan_code=plan.code,
                                metric=price.metric,
                                period_start=start,
                                period_end=end,
                            )
                        )
        subtotal = sum(line.amount for line in lines)
        credit = min(account.credit_balance, subtotal) if subtotal > 0 else 0
        return UpcomingInvoice(
            currency=account.currency,
            period_start=start,
            period_end=end,
            lines=lines,
            subtotal=subtotal,
            credit_applied=credit,
            total=max(subtotal - credit, 0),
        )
