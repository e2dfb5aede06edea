"""Entitlements: features, counted and metered limits, unlimited plans, the upgrade path, `require`'s
402s, and the per-organization cache of the plan."""

from __future__ import annotations

from datetime import timedelta

import pytest
from uuid6 import uuid7

from splitstone.kernel.clock import ManualClock
from splitstone.kernel.errors import InvalidInput
from splitstone.modules.billing.api import (
    EntitlementExceeded,
    FeatureNotInPlan,
    UnknownEntitlement,
)
from splitstone.modules.billing.catalog import parse_catalog
from splitstone.modules.billing.entitlements import Entitlements
from splitstone.modules.billing.service import BillingService
from splitstone.modules.billing.usage import UsageEvent
from tests.modules.billing.usage_support import (
    UPGRADE_URL,
    FakeStates,
    entitlements_with,
    past_period,
    usage_with,
)


@pytest.fixture
def states(billing: BillingService, clock: ManualClock) -> FakeStates:
    start = clock.now() - timedelta(days=3)
    return FakeStates(billing.catalog, start, start + timedelta(days=30))


@pytest.fixture
def entitlements(billing: BillingService, clock: ManualClock, states: FakeStates) -> Entitlements:
    return entitlements_with(billing, clock, states)


# -- features ------------------------------------------------------------------------------------------


async def test_a_feature_is_allowed_when_the_plan_has_it(
    entitlements: Entitlements, states: FakeStates
) -> None:
    free, pro = uuid7(), uuid7()
    states.set(pro, plan="pro")

    webhooks = await entitlements.check(free, "webhooks")
    assert (webhooks.allowed, webhooks.limit, webhooks.used, webhooks.plan) == (False, None, None, "free")
    assert webhooks.upgrade_plans == ["pro", "business"]
    assert (await entitlements.check(pro, "webhooks")).allowed is True
    audit_log = await entitlements.check(pro, "audit_log")
    assert (audit_log.allowed, audit_log.upgrade_plans) == (False, ["business"])


async def test_the_effective_plan_applies_not_the_subscribed_one(
    entitlements: Entitlements, states: FakeStates
) -> None:
    org = uuid7()
    states.set(org, plan="pro", effective="free")  # say, unpaid
    webhooks = await entitlements.check(org, "webhooks")
    assert (webhooks.allowed, webhooks.plan) == (False, "free")
    assert (await entitlements.check(org, "projects", current=3)).allowed is False


# -- limits --------------------------------------------------------------------------------------------


async def test_a_counted_limit_compares_current_and_requested(entitlements: Entitlements) -> None:
    org = uuid7()
    fits = await entitlements.check(org, "projects", current=2)
    assert (fits.allowed, fits.limit, fits.used, fits.requested) == (True, 3, 2, 1)
    full = await entitlements.check(org, "projects", current=3)
    assert (full.allowed, full.used, full.upgrade_plans) == (False, 3, ["pro", "business"])
    assert (await entitlements.check(org, "projects", requested=3)).used == 0  # no current: none yet
    assert (await entitlements.check(org, "projects", requested=4)).allowed is False
    # 3 + 48 = 51 projects: more than Pro's 50.
    assert (await entitlements.check(org, "projects", requested=48, current=3)).upgrade_plans == ["business"]
    assert (await entitlements.check(org, "projects", requested=0, current=3)).allowed is True


async def test_an_unlimited_limit_allows_anything(entitlements: Entitlements, states: FakeStates) -> None:
    org = uuid7()
    states.set(org, plan="business")
    projects = await entitlements.check(org, "projects", requested=10**6, current=10**9)
    assert (projects.allowed, projects.limit, projects.used) == (True, None, 10**9)
    assert projects.upgrade_plans == []  # no other plan allows that many
    tasks = await entitlements.check(org, "tasks_per_month", requested=10**6)
    assert (tasks.allowed, tasks.limit, tasks.used) == (True, None, 0)


async def test_require_allows_an_unlimited_metered_limit_without_counting(
    billing: BillingService, clock: ManualClock, states: FakeStates
) -> None:
    """Every task creation asks; on a plan without a limit, its answer needs no usage query."""

    class UncountedUsage:
        async def value(self, *_args: object) -> int:
            raise AssertionError("the usage was read")

    entitlements = Entitlements(
        catalog=states.catalog,
        state=states,
        usage=UncountedUsage(),  # type: ignore[arg-type]
        clock=clock,
        ttl_seconds=30,
        upgrade_url=UPGRADE_URL,
    )
    org = uuid7()
    states.set(org, plan="business")
    tasks = await entitlements.require(org, "tasks_per_month", requested=10**6)
    assert (tasks.allowed, tasks.limit, tasks.used, tasks.upgrade_plans) == (True, None, None, [])
    states.set(org, plan="pro")
    entitlements.invalidate(org)
    with pytest.raises(AssertionError, match="the usage was read"):  # a limit: counted
        await entitlements.require(org, "tasks_per_month")


async def test_a_metered_limit_counts_the_period_usage(billing: BillingService, new_org) -> None:  # type: ignore[no-untyped-def]
    org = await new_org()
    for batch in range(5):
        events = [UsageEvent("tasks", 1, f"task-{batch}-{i}") for i in range(100)]
        await billing.usage.record_many(org.id, events)

    tasks = await billing.check_entitlement(org.id, "tasks_per_month")
    assert (tasks.allowed, tasks.limit, tasks.used, tasks.plan) == (False, 500, 500, "free")
    assert tasks.upgrade_plans == ["pro", "business"]
    assert (await billing.check_entitlement(org.id, "tasks_per_month", requested=0)).allowed is True
    with pytest.raises(EntitlementExceeded) as exceeded:
        await billing.require_entitlement(org.id, "tasks_per_month")
    assert exceeded.value.detail == (
        "The Free plan allows 500 tasks per month; the organization has used 500 this period and asked "
        "for 1 more. Pro or Business allow more."
    )


async def test_metered_usage_is_read_fresh_within_the_period(
    entitlements: Entitlements, billing: BillingService, clock: ManualClock, states: FakeStates
) -> None:
    usage = usage_with(billing, clock, states)
    org = uuid7()
    states.set(org, usage_open_from=states.period_start - timedelta(days=1))
    await usage.record(org, "tasks", 1, "before-the-period", states.period_start - timedelta(seconds=1))
    assert (await entitlements.check(org, "tasks_per_month", requested=500)).allowed is True
    await usage.record(org, "tasks", 1, "in-the-period", states.period_start)
    tasks = await entitlements.check(org, "tasks_per_month", requested=500)  # cached plan, fresh usage
    assert (tasks.allowed, tasks.used) == (False, 1)


async def test_upgrade_plans_are_cheapest_first_whatever_the_catalog_order(
    billing: BillingService, clock: ManualClock
) -> None:
    catalog = parse_catalog(
        """
        currency = "USD"
        default_plan = "free"
        [entitlements.seats]
        kind = "limit"
        [plans.enterprise]
        name = "Enterprise"
        prices = { month = 50000 }
        limits = { seats = "unlimited" }
        [plans.free]
        name = "Free"
        prices = { month = 0 }
        limits = { seats = 1 }
        [plans.yearly_team]
        name = "Team"
        prices = { year = 12000 }  # 1,000 a month: cheaper than Pro's 1,900
        limits = { seats = 20 }
        [plans.pro]
        name = "Pro"
        prices = { month = 1900, year = 9000 }  # by its monthly price, not its cheaper yearly one
        limits = { seats = 10 }
        """
    )
    states = FakeStates(catalog, *past_period(clock, days=60))
    entitlements = entitlements_with(billing, clock, states)
    org = uuid7()
    assert (await entitlements.check(org, "seats", current=1)).upgrade_plans == [
        "yearly_team",
        "pro",
        "enterprise",
    ]
    assert (await entitlements.check(org, "seats", current=15)).upgrade_plans == ["yearly_team", "enterprise"]
    states.set(org, plan="pro")
    assert (await entitlements.check(org, "seats", current=10)).upgrade_plans == ["yearly_team", "enterprise"]


# -- require -------------------------------------------------------------------------------------------


async def test_require_returns_what_is_allowed(entitlements: Entitlements) -> None:
    allowed = await entitlements.require(uuid7(), "projects", current=1)
    assert (allowed.allowed, allowed.used) == (True, 1)


async def test_require_refuses_a_limit_with_the_upgrade_path(entitlements: Entitlements) -> None:
    org = uuid7()
    with pytest.raises(EntitlementExceeded) as exceeded:
        await entitlements.require(org, "projects", current=3)
    error = exceeded.value
    assert type(error) is EntitlementExceeded
    assert (error.status, error.code) == (402, "entitlement-exceeded")
    assert error.detail == (
        "The Free plan allows 3 projects; the organization has 3 and asked for 1 more. "
        "Pro or Business allow more."
    )
    assert error.extra == {
        "key": "projects",
        "limit": 3,
        "used": 3,
        "requested": 1,
        "plan": "free",
        "upgrade_plans": ["pro", "business"],
        "upgrade_url": f"https://app.example.com/orgs/{org}/billing/plans",
    }
    with pytest.raises(EntitlementExceeded) as only_one:
        await entitlements.require(org, "members", requested=10, current=45)
    assert only_one.value.detail.endswith("Business allows more.")
    assert only_one.value.extra["upgrade_plans"] == ["business"]


async def test_require_refuses_a_missing_feature(entitlements: Entitlements, states: FakeStates) -> None:
    org = uuid7()
    states.set(org, plan="pro")
    with pytest.raises(FeatureNotInPlan) as missing:
        await entitlements.require(org, "audit_log")
    error = missing.value
    assert (error.status, error.code) == (402, "feature-not-in-plan")
    assert error.detail == "The Pro plan does not include 'audit_log' (Audit log). Business includes it."
    assert error.extra["limit"] is None
    assert error.extra["used"] is None
    assert (error.extra["plan"], error.extra["upgrade_plans"]) == ("pro", ["business"])


async def test_when_no_plan_allows_it_the_detail_says_so(billing: BillingService, clock: ManualClock) -> None:
    catalog = parse_catalog(
        """
        currency = "USD"
        default_plan = "free"
        [entitlements.sso]
        kind = "feature"
        [plans.free]
        name = "Free"
        prices = { month = 0 }
        features = { sso = false }
        """
    )
    entitlements = entitlements_with(billing, clock, FakeStates(catalog, *past_period(clock)))
    with pytest.raises(FeatureNotInPlan) as missing:
        await entitlements.require(uuid7(), "sso")
    assert missing.value.detail == "The Free plan does not include 'sso'. No plan includes it."
    assert missing.value.extra["upgrade_plans"] == []


# -- input ---------------------------------------------------------------------------------------------


async def test_an_unknown_key_names_the_known_ones(entitlements: Entitlements) -> None:
    with pytest.raises(UnknownEntitlement) as unknown:
        await entitlements.check(uuid7(), "seats")
    assert unknown.value.status == 422
    assert unknown.value.extra == {
        "key": "seats",
        "known": ["projects", "members", "tasks_per_month", "webhooks", "audit_log"],
    }


@pytest.mark.parametrize(("requested", "current"), [(-1, None), (1, -1)])
async def test_negative_numbers_are_refused(
    entitlements: Entitlements, requested: int, current: int | None
) -> None:
    with pytest.raises(InvalidInput):
        await entitlements.check(uuid7(), "projects", requested=requested, current=current)


# -- the cache -----------------------------------------------------------------------------------------


async def test_the_plan_is_cached_until_the_ttl_passes(
    entitlements: Entitlements, states: FakeStates, clock: ManualClock
) -> None:
    org = uuid7()
    assert (await entitlements.check(org, "webhooks")).allowed is False
    assert (await entitlements.check(org, "projects", current=1)).allowed is True
    assert states.calls == 1  # a check costs no query for the plan once it is cached

    states.set(org, plan="pro")
    clock.advance(timedelta(seconds=29))
    assert (await entitlements.check(org, "webhooks")).allowed is False  # not seen yet
    clock.advance(timedelta(seconds=1))
    assert (await entitlements.check(org, "webhooks")).allowed is True
    assert states.calls == 2


async def test_invalidate_forgets_the_cached_plan(entitlements: Entitlements, states: FakeStates) -> None:
    org, other = uuid7(), uuid7()
    await entitlements.check(org, "webhooks")
    await entitlements.check(other, "webhooks")
    states.set(org, plan="pro")
    states.set(other, plan="pro")
    entitlements.invalidate(org)
    assert (await entitlements.check(org, "webhooks")).allowed is True
    assert (await entitlements.check(other, "webhooks")).allowed is False  # still cached
    entitlements.invalidate(uuid7())  # nothing cached: nothing to do


async def test_a_cached_plan_is_dropped_when_its_period_ends(
    entitlements: Entitlements, states: FakeStates, clock: ManualClock
) -> None:
    org = uuid7()
    states.set(org, period_end=clock.now() + timedelta(seconds=10))
    await entitlements.check(org, "webhooks")
    clock.advance(timedelta(seconds=10))
    await entitlements.check(org, "webhooks")
    assert states.calls == 2


async def test_a_ttl_of_zero_caches_nothing(
    billing: BillingService, clock: ManualClock, states: FakeStates
) -> None:
    entitlements = entitlements_with(billing, clock, states, ttl_seconds=0)
    org = uuid7()
    await entitlements.check(org, "webhooks")
    states.set(org, plan="pro")
    assert (await entitlements.check(org, "webhooks")).allowed is True
    assert states.calls == 2


# -- the listing ---------------------------------------------------------------------------------------


async def test_every_entitlement_of_the_plan_is_listed(
    entitlements: Entitlements, billing: BillingService, clock: ManualClock, states: FakeStates
) -> None:
    org = uuid7()
    states.set(org, plan="pro")
    await usage_with(billing, clock, states).record(org, "tasks", 1, "t", states.period_start)
    listed = {e.key: e for e in await entitlements.for_org(org)}
    assert list(listed) == list(billing.catalog.entitlements)
    assert listed["projects"].model_dump() == {
        "key": "projects",
        "kind": "limit",
        "description": "Projects in the organization",
        "limit": 50,
        "used": None,
        "enabled": None,
        "plan": "pro",
    }
    assert (listed["tasks_per_month"].limit, listed["tasks_per_month"].used) == (10_000, 1)
    assert (listed["webhooks"].kind, listed["webhooks"].enabled, listed["webhooks"].limit) == (
        "feature",
        True,
        None,
    )
    assert listed["audit_log"].enabled is False
