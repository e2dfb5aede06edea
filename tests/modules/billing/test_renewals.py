"""Clock-driven scenarios: periods end, invoices are drafted, usage is priced, numbers run in order,
and two schedulers at once still invoice each period once."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import pytest

from splitstone.kernel.clock import ManualClock
from splitstone.kernel.container import Container
from splitstone.kernel.events import EventRecorder
from splitstone.kernel.messaging.worker import Worker
from splitstone.kernel.ratelimit import RateLimiter
from splitstone.kernel.settings import ModuleSettings, Settings
from splitstone.modules.billing.api import InvoiceFinalized, UsagePeriodClosed
from splitstone.modules.billing.service import BillingService
from splitstone.modules.billing.settings import BillingSettings
from tests.modules.billing.conftest import Org
from tests.modules.billing.support import call, change_plan, invoices, lines, set_card, subscription


async def _paid_pro(client: httpx.AsyncClient, org: Org, worker: Worker, plan: str = "pro") -> dict:  # type: ignore[type-arg]
    """An org on a paid plan, its first period paid, without a trial."""
    await change_plan(client, org, plan)
    await call(client, org, "POST", "/subscription/cancel", json={"at_period_end": False})
    await set_card(client, org)
    await change_plan(client, org, plan)
    await worker.settle()
    sub = await subscription(client, org)
    assert sub["status"] == "active"
    return sub


def _end(sub: dict) -> datetime:  # type: ignore[type-arg]
    return datetime.fromisoformat(sub["current_period_end"])


async def test_a_month_passes_and_exactly_one_invoice_bills_it(
    new_org,
    client: httpx.AsyncClient,
    worker: Worker,
    clock: ManualClock,
    billing: BillingService,  # type: ignore[no-untyped-def]
) -> None:
    org: Org = await new_org()
    sub = await _paid_pro(client, org, worker)
    start = datetime.fromisoformat(sub["current_period_start"])
    # Pro includes 100,000 API calls and charges 0.50 per 1,000 beyond: 123,456 calls → 23,456 billable
    # → 11.728 → 11.73.
    clock.set(start + timedelta(days=21))
    await billing.record_usage(org.id, "api_calls", 100_000, "batch-1", occurred_at=start + timedelta(days=1))
    await billing.record_usage(org.id, "api_calls", 23_456, "batch-2", occurred_at=start + timedelta(days=20))
    await billing.record_usage(org.id, "api_calls", 23_456, "batch-2", occurred_at=start + timedelta(days=20))

    clock.set(_end(sub) + timedelta(hours=2))  # past the hour drafts wait for late usage
    await worker.settle()
    first, renewal = await invoices(client, org)
    assert first["billing_reason"] == "subscription_create"
    assert renewal["billing_reason"] == "subscription_cycle"
    assert renewal["period_start"] == sub["current_period_start"]
    assert renewal["period_end"] == sub["current_period_end"]
    assert lines(renewal) == [("subscription", 1900), ("usage", 1173)]
    usage_line = renewal["lines"][1]
    assert usage_line["metric"] == "api_calls"
    assert usage_line["quantity"] == 23_456
    assert renewal["total"] == renewal["amount_paid"] == 3073
    assert renewal["status"] == "paid"
    assert [first["number"][-4:], renewal["number"][-4:]] == ["0001", "0002"]
    renewed = await subscription(client, org)
    assert renewed["current_period_start"] == sub["current_period_end"]


@pytest.fixture
def billing_settings() -> BillingSettings:
    """Drafts wait an hour for late usage reports before they are final."""
    return BillingSettings(sandbox_webhook_url=None, invoice_finalize_delay_seconds=3600)


async def test_late_usage_counts_until_the_draft_is_final_then_is_refused(
    new_org,
    client: httpx.AsyncClient,
    worker: Worker,
    clock: ManualClock,
    billing: BillingService,  # type: ignore[no-untyped-def]
) -> None:
    org: Org = await new_org()
    sub = await _paid_pro(client, org, worker)
    end = _end(sub)
    clock.set(end + timedelta(minutes=10))
    await worker.settle()
    _, draft = await invoices(client, org)
    assert draft["status"] == "draft"
    assert draft["number"] is None
    # Reported late, but it happened in the period: it still counts.
    await billing.record_usage(org.id, "api_calls", 101_000, "late", occurred_at=end - timedelta(seconds=1))

    clock.set(end + timedelta(hours=1, seconds=1))
    await worker.settle()
    _, final = await invoices(client, org)
    assert final["status"] == "paid"
    assert lines(final) == [("subscription", 1900), ("usage", 50)]
    with pytest.raises(UsagePeriodClosed):
        await billing.record_usage(org.id, "api_calls", 1, "too-late", occurred_at=end - timedelta(seconds=1))
    recorded = await billing.record_usage(
        org.id, "api_calls", 1, "next", occurred_at=end + timedelta(seconds=1)
    )
    assert not recorded.duplicate


async def test_the_free_plan_renews_without_invoices(
    new_org,
    client: httpx.AsyncClient,
    worker: Worker,
    clock: ManualClock,  # type: ignore[no-untyped-def]
) -> None:
    org: Org = await new_org()
    sub = await subscription(client, org)
    for _ in range(3):
        clock.set(_end(await subscription(client, org)) + timedelta(seconds=1))
        await worker.settle()
    renewed = await subscription(client, org)
    assert datetime.fromisoformat(renewed["current_period_start"]) > _end(sub)
    assert renewed["status"] == "active"
    assert await invoices(client, org) == []
    history = await call(client, org, "GET", "/subscription/history")
    assert [h["change"] for h in history["items"]].count("renewed") == 3


async def test_numbers_run_in_order_per_organization(
    new_org,
    client: httpx.AsyncClient,
    worker: Worker,
    clock: ManualClock,
    events: EventRecorder,  # type: ignore[no-untyped-def]
) -> None:
    org: Org = await new_org()
    other: Org = await new_org("Other")
    await _paid_pro(client, org, worker)
    await _paid_pro(client, other, worker, "business")
    for _ in range(3):
        clock.set(_end(await subscription(client, org)) + timedelta(hours=2))
        await worker.settle()
        await worker.settle()
    mine = [i["number"] for i in await invoices(client, org)]
    prefix = org.id.hex[:8].upper()
    assert mine == [f"{prefix}-{n:04d}" for n in range(1, 5)]
    theirs = [i["number"] for i in await invoices(client, other)]
    assert theirs[0] == f"{other.id.hex[:8].upper()}-0001"
    finalized = [e.number for e in events.of_type(InvoiceFinalized) if e.org_id == org.id]
    assert finalized == mine


@pytest.mark.backends("postgres")
async def test_two_schedulers_at_once_invoice_each_period_once(
    new_org,  # type: ignore[no-untyped-def]
    client: httpx.AsyncClient,
    worker: Worker,
    clock: ManualClock,
    settings: Settings,
    module_settings: dict[str, ModuleSettings],
) -> None:
    orgs: list[Org] = [await new_org(f"Org {n}") for n in range(4)]
    for org in orgs:
        await _paid_pro(client, org, worker)
    from splitstone.bootstrap import MODULES

    second = Container.build(
        settings,
        MODULES,
        clock=clock,
        recorder=EventRecorder(),
        rate_limiter=RateLimiter("memory://"),
        module_settings=module_settings,
    )
    try:
        rival = second.worker()
        ends = [_end(await subscription(client, o)) for o in orgs]
        clock.set(max(ends) + timedelta(hours=2))
        for _ in range(3):
            await asyncio.gather(worker.settle(), rival.settle())
    finally:
        await second.aclose()
    for org in orgs:
        bills = await invoices(client, org)
        assert [i["billing_reason"] for i in bills] == ["subscription_create", "subscription_cycle"]
        assert all(i["status"] == "paid" for i in bills)
        payments = await _payment_count(client, org)
        assert payments == 2


async def _payment_count(client: httpx.AsyncClient, org: Org) -> int:
    return sum(i["attempt_count"] for i in await invoices(client, org))


async def test_a_changed_catalog_leaves_existing_subscriptions_on_their_version(
    new_org,  # type: ignore[no-untyped-def]
    client: httpx.AsyncClient,
    worker: Worker,
    clock: ManualClock,
    settings: Settings,
    module_settings: dict[str, ModuleSettings],
    tmp_path: Path,
) -> None:
    """A price rise in the catalog is version 2 of the plan: organizations already on version 1 keep
    paying its price at renewal; a new subscription gets version 2."""
    early: Org = await new_org("Early")
    sub = await _paid_pro(client, early, worker)
    assert sub["plan"]["version"] == 1

    from splitstone.bootstrap import MODULES
    from splitstone.kernel.app import create_app
    from splitstone.modules.billing.catalog import load_catalog

    shipped = (Path(load_catalog.__code__.co_filename).parent / "catalog.toml").read_text()
    dearer = tmp_path / "catalog.toml"
    dearer.write_text(
        shipped.replace("prices = { month = 1900, year = 19000 }", "prices = { month = 2900, year = 29000 }")
    )
    billing = module_settings["billing"]
    assert isinstance(billing, BillingSettings)
    later = Container.build(
        settings,
        MODULES,
        clock=clock,
        recorder=EventRecorder(),
        rate_limiter=RateLimiter("memory://"),
        module_settings={**module_settings, "billing": billing.model_copy(update={"catalog_path": dearer})},
    )
    try:
        transport = httpx.ASGITransport(app=create_app(later))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as upgraded:
            plans = (await upgraded.get("/api/v1/billing/plans")).json()["items"]
            pro = next(p for p in plans if p["code"] == "pro")
            assert pro["version"] == 2
            assert pro["prices"][0] == {"interval": "month", "amount": 2900}
            newcomer: Org = await new_org("Newcomer")
            started = await upgraded.post(
                f"{newcomer.base}/subscription/change", json={"plan": "pro"}, headers=await newcomer.headers()
            )
            assert started.json()["plan"]["version"] == 2
            assert started.json()["price"]["amount"] == 2900
            clock.set(_end(sub) + timedelta(hours=2))
            rival = later.worker()
            await rival.settle()
            renewed = await upgraded.get(f"{early.base}/subscription", headers=await early.headers())
            assert renewed.json()["plan"]["version"] == 1
            assert renewed.json()["price"]["amount"] == 1900
            bills = (await upgraded.get(f"{early.base}/invoices", headers=await early.headers())).json()[
                "items"
            ]
            assert lines(bills[0]) == [("subscription", 1900)]
    finally:
        await later.aclose()
