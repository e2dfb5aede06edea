"""The catalog file: what the shipped one defines, what an invalid one is told, and how a changed plan
becomes its next stored version while the earlier ones stay readable."""

from __future__ import annotations

from datetime import timedelta
from importlib import resources
from pathlib import Path

import pytest

from splitstone.kernel.clock import ManualClock
from splitstone.kernel.container import Container
from splitstone.modules.billing.api import Interval, UnknownPlan
from splitstone.modules.billing.catalog import Aggregation, Catalog, CatalogError, load_catalog, parse_catalog
from splitstone.modules.billing.plans import Plans
from splitstone.modules.billing.service import BillingService

SHIPPED = resources.files("splitstone.modules.billing").joinpath("catalog.toml").read_text(encoding="utf-8")
PRO_PRICES = "prices = { month = 1900, year = 19000 }"

# A small valid catalog that the invalid ones below change in one place each.
MINIMAL = """
currency = "USD"
default_plan = "free"

[metrics.api_calls]
name = "API calls"
aggregation = "sum"

[entitlements.projects]
kind = "limit"

[entitlements.webhooks]
kind = "feature"

[plans.free]
name = "Free"
prices = { month = 0 }
limits = { projects = 3 }
features = { webhooks = false }

[plans.pro]
name = "Pro"
prices = { month = 1900 }
limits = { projects = 50 }
features = { webhooks = true }

[[plans.pro.metered]]
metric = "api_calls"
model = "graduated"
tiers = [{ up_to = 1000, unit_amount = 40 }, { up_to = "inf", unit_amount = 25 }]
"""
TIERS = '[{ up_to = 1000, unit_amount = 40 }, { up_to = "inf", unit_amount = 25 }]'


def changed(text: str, old: str, new: str) -> str:
    """`text` with `old` (which must occur exactly once) replaced by `new`."""
    assert text.count(old) == 1, old
    return text.replace(old, new)


def error_of(text: str) -> str:
    with pytest.raises(CatalogError) as caught:
        parse_catalog(text, "test.toml")
    return str(caught.value)


def fingerprints(catalog: Catalog) -> dict[str, str]:
    return {d.code: d.fingerprint for d in catalog.definitions()}


# -- the shipped catalog ---------------------------------------------------------------------------------


def test_the_shipped_catalog_loads_with_its_three_plans_in_order() -> None:
    catalog = load_catalog()
    assert catalog.currency == "USD"
    assert catalog.default_plan == "free"
    assert list(catalog.plans) == ["free", "pro", "business"]
    assert list(catalog.entitlements) == ["projects", "members", "tasks_per_month", "webhooks", "audit_log"]
    assert catalog.entitlements["tasks_per_month"].metric == "tasks"
    pro = catalog.plans["pro"]
    assert pro.prices == {Interval.MONTH: 1900, Interval.YEAR: 19000}
    assert pro.trial_days == 14
    assert pro.limits == {"projects": 50, "members": 50, "tasks_per_month": 10000}
    assert pro.features == {"webhooks": True, "audit_log": False}
    business = catalog.plans["business"]
    assert business.limits == {"projects": None, "members": None, "tasks_per_month": None}
    assert [m.metric for m in business.metered] == ["api_calls", "active_users", "storage_gb"]
    assert catalog.metrics["active_users"].aggregation is Aggregation.UNIQUE_COUNT
    assert catalog.definition("free").is_free
    assert not catalog.definition("pro").is_free


def test_the_shipped_metered_prices_price_usage_over_the_included_quantity() -> None:
    catalog = load_catalog()
    pro_calls = catalog.plans["pro"].metered[0]
    assert pro_calls.amount(100_000) == 0
    assert pro_calls.amount(150_000) == 2500  # 50,000 over at 0.50 per 1,000
    business_calls = catalog.plans["business"].metered[0]
    # 1,000,000 included, then 1,000,000 at 0.40 per 1,000, then 0.25 per 1,000.
    assert business_calls.amount(2_000_000) == 40_000
    assert business_calls.amount(2_500_000) == 40_000 + 12_500


def test_a_catalog_file_is_read_from_a_path(tmp_path: Path) -> None:
    path = tmp_path / "catalog.toml"
    path.write_text(MINIMAL, encoding="utf-8")
    assert list(load_catalog(path).plans) == ["free", "pro"]
    with pytest.raises(CatalogError, match=r"cannot read the billing catalog .*missing\.toml"):
        load_catalog(tmp_path / "missing.toml")


# -- invalid catalogs --------------------------------------------------------------------------------------


def test_the_minimal_catalog_is_valid() -> None:
    assert list(parse_catalog(MINIMAL).plans) == ["free", "pro"]


def test_a_plan_missing_a_limit_is_named() -> None:
    message = error_of(changed(MINIMAL, "limits = { projects = 50 }", "limits = {}"))
    assert (
        message
        == "test.toml: invalid catalog:\n  (top): Value error, plan 'pro' limits: missing ['projects']"
    )


def test_a_plan_with_an_undeclared_limit_or_feature_is_named() -> None:
    message = error_of(
        changed(MINIMAL, "features = { webhooks = true }", "features = { webhooks = true, sso = true }")
    )
    assert "plan 'pro' features: unknown ['sso']" in message


def test_a_price_of_an_unknown_metric_is_named() -> None:
    message = error_of(changed(MINIMAL, 'metric = "api_calls"', 'metric = "calls"'))
    assert message.endswith("plan 'pro' prices unknown metric 'calls'")


def test_an_entitlement_metering_an_unknown_metric_is_named() -> None:
    text = changed(
        MINIMAL,
        '[entitlements.projects]\nkind = "limit"',
        '[entitlements.projects]\nkind = "limit"\nmetric = "nope"',
    )
    assert "entitlement 'projects' meters unknown metric 'nope'" in error_of(text)


def test_the_default_plan_must_be_free() -> None:
    message = error_of(changed(MINIMAL, 'default_plan = "free"', 'default_plan = "pro"'))
    assert message.endswith("default_plan 'pro' must be free: no price, trial or metering")
    with_trial = changed(MINIMAL, "prices = { month = 0 }", "prices = { month = 0 }\ntrial_days = 7")
    assert "default_plan 'free' must be free" in error_of(with_trial)
    assert "default_plan 'gold' is not a plan" in error_of(
        changed(MINIMAL, 'default_plan = "free"', 'default_plan = "gold"')
    )


def test_tiers_must_increase() -> None:
    tiers = (
        "[{ up_to = 1000, unit_amount = 40 }, { up_to = 1000, unit_amount = 30 }, "
        '{ up_to = "inf", unit_amount = 25 }]'
    )
    message = error_of(changed(MINIMAL, TIERS, tiers))
    assert (
        message
        == "test.toml: invalid catalog:\n  plans.pro.metered.0: Value error, tiers' up_to must increase"
    )


def test_only_the_last_tier_is_open_and_it_must_be() -> None:
    open_first = '[{ up_to = "inf", unit_amount = 40 }, { up_to = 1000, unit_amount = 25 }]'
    expected = (
        'plans.pro.metered.0: Value error, only the last tier is open-ended (up_to = "inf"), and it must be'
    )
    assert error_of(changed(MINIMAL, TIERS, open_first)).endswith(expected)
    never_open = "[{ up_to = 1000, unit_amount = 40 }, { up_to = 2000, unit_amount = 25 }]"
    assert error_of(changed(MINIMAL, TIERS, never_open)).endswith(expected)


def test_a_unit_price_has_no_tiers_and_a_graduated_one_no_unit_amount() -> None:
    unit_with_tiers = changed(MINIMAL, 'model = "graduated"', 'model = "unit"\nunit_amount = 5')
    assert error_of(unit_with_tiers).endswith(
        "plans.pro.metered.0: Value error, a unit price has unit_amount and no tiers"
    )
    graduated_with_unit = changed(MINIMAL, 'model = "graduated"', 'model = "graduated"\nunit_amount = 5')
    assert error_of(graduated_with_unit).endswith("a graduated price has tiers and no unit_amount")


def test_a_negative_limit_is_refused() -> None:
    message = error_of(changed(MINIMAL, "projects = 50", "projects = -1"))
    assert message.endswith(
        """plans.pro.limits: Value error, limit 'projects' must be 0 or more, or "unlimited\""""
    )


def test_unknown_keys_and_bad_values_are_named_by_their_place() -> None:
    message = error_of(changed(MINIMAL, 'name = "Pro"', 'name = "Pro"\ncolour = "blue"'))
    assert "plans.pro.colour: Extra inputs are not permitted" in message
    assert "plans.pro.prices.week" in error_of(
        changed(MINIMAL, "prices = { month = 1900 }", "prices = { week = 1900 }")
    )
    assert "currency: String should match pattern" in error_of(
        changed(MINIMAL, 'currency = "USD"', 'currency = "usd"')
    )


def test_bad_toml_says_where() -> None:
    message = error_of(changed(MINIMAL, 'name = "Pro"', "name = Pro"))
    assert message.startswith("test.toml: not valid TOML: ")
    assert "(at line 22, column 8)" in message


# -- fingerprints ------------------------------------------------------------------------------------------


def test_a_fingerprint_changes_exactly_when_its_plan_changes() -> None:
    shipped = fingerprints(parse_catalog(SHIPPED))
    assert fingerprints(parse_catalog(SHIPPED)) == shipped  # stable

    pro_price = fingerprints(
        parse_catalog(changed(SHIPPED, PRO_PRICES, "prices = { month = 2900, year = 29000 }"))
    )
    assert {code for code in shipped if pro_price[code] != shipped[code]} == {"pro"}

    # A metric is part of the definition of every plan that prices it, and of no other.
    users = changed(SHIPPED, 'name = "Active users"', 'name = "Monthly active users"')
    assert {c for c, f in fingerprints(parse_catalog(users)).items() if f != shipped[c]} == {"business"}
    calls = changed(SHIPPED, 'name = "API calls"', 'name = "API requests"')
    assert {c for c, f in fingerprints(parse_catalog(calls)).items() if f != shipped[c]} == {
        "pro",
        "business",
    }

    # What no plan's definition holds changes none: comments, entitlement descriptions, unused metrics.
    cosmetic = changed(SHIPPED, 'description = "Audit log"', 'description = "The audit log"')
    cosmetic = changed(cosmetic, 'name = "Tasks created"', 'name = "Tasks"') + "\n# a comment\n"
    assert fingerprints(parse_catalog(cosmetic)) == shipped

    # The currency is part of every definition.
    euros = fingerprints(parse_catalog(changed(SHIPPED, 'currency = "USD"', 'currency = "EUR"')))
    assert all(euros[code] != shipped[code] for code in shipped)


# -- plan versions -----------------------------------------------------------------------------------------


async def test_a_changed_plan_is_stored_as_version_2_and_version_1_stays_readable(
    billing: BillingService, container: Container, clock: ManualClock
) -> None:
    first = {v.code: v for v in await billing.plans.all_current()}
    assert {code: v.version for code, v in first.items()} == {"free": 1, "pro": 1, "business": 1}

    clock.advance(timedelta(days=30))
    raised = parse_catalog(changed(SHIPPED, PRO_PRICES, "prices = { month = 2900, year = 29000 }"))
    plans = Plans(container.units_of_work["billing"], clock, raised)
    pro = await plans.current("pro")
    assert pro.version == 2
    assert pro.price(Interval.MONTH) == 2900
    assert pro.created_at == clock.now()
    assert (await plans.current("free")).id == first["free"].id  # unchanged plans keep their version
    assert (await plans.current("business")).id == first["business"].id

    stored = await plans.versions("pro")
    assert [(v.version, v.price(Interval.MONTH)) for v in stored] == [(1, 1900), (2, 2900)]
    old = await plans.by_id(first["pro"].id)
    assert old.version == 1
    assert old.definition == first["pro"].definition
    assert old.created_at == first["pro"].created_at
    # The process that still runs the old catalog keeps answering version 1.
    assert (await billing.plans.current("pro")).version == 1


async def test_syncing_the_same_catalog_again_stores_nothing_new(
    billing: BillingService, container: Container, clock: ManualClock
) -> None:
    await billing.plans.all_current()
    uow = container.units_of_work["billing"]
    for _ in range(2):  # fresh instances, as in new processes: nothing cached
        again = Plans(uow, clock, load_catalog())
        assert [v.version for v in await again.all_current()] == [1, 1, 1]
    for code in ("free", "pro", "business"):
        assert [v.version for v in await billing.plans.versions(code)] == [1]


async def test_reverting_a_change_returns_to_the_earlier_version(
    billing: BillingService, container: Container, clock: ManualClock
) -> None:
    await billing.plans.all_current()
    uow = container.units_of_work["billing"]
    raised = parse_catalog(changed(SHIPPED, PRO_PRICES, "prices = { month = 2900, year = 29000 }"))
    assert (await Plans(uow, clock, raised).current("pro")).version == 2
    # The shipped definition is stored already (as version 1 of this database), so no version 3.
    reverted = await Plans(uow, clock, load_catalog()).current("pro")
    assert reverted.version == 1
    assert [v.version for v in await billing.plans.versions("pro")] == [1, 2]


async def test_an_unknown_plan_code_names_the_plans(billing: BillingService) -> None:
    with pytest.raises(UnknownPlan, match=r"There is no plan 'gold'; plans: free, pro, business\."):
        await billing.plans.current("gold")
