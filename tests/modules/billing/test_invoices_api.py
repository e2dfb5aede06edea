"""Invoices through the API: list and detail, the printable page, paying, voiding and writing off."""

from __future__ import annotations

from datetime import datetime, timedelta

import httpx

from splitstone.kernel.clock import ManualClock
from splitstone.kernel.messaging.worker import Worker
from tests.modules.auth.org_helpers import assert_problem
from tests.modules.billing.conftest import Org
from tests.modules.billing.support import call, change_plan, invoices, set_card, subscription


async def _declined_start(client: httpx.AsyncClient, org: Org, worker: Worker, plan: str = "pro") -> dict:  # type: ignore[type-arg]
    """A paid start whose first payment was declined: one open invoice."""
    await change_plan(client, org, plan)
    await call(client, org, "POST", "/subscription/cancel", json={"at_period_end": False})
    await set_card(client, org, "pm_card_insufficient_funds")
    await change_plan(client, org, plan)
    await worker.settle()
    [invoice] = await invoices(client, org)
    assert invoice["status"] == "open"
    return invoice


async def test_detail_list_filter_and_pages(
    new_org, client: httpx.AsyncClient, worker: Worker, clock: ManualClock
) -> None:  # type: ignore[no-untyped-def]
    org: Org = await new_org()
    await change_plan(client, org, "pro")
    await call(client, org, "POST", "/subscription/cancel", json={"at_period_end": False})
    await set_card(client, org)
    sub = await change_plan(client, org, "pro")
    await worker.settle()
    for _ in range(2):
        clock.set(
            datetime.fromisoformat((await subscription(client, org))["current_period_end"])
            + timedelta(hours=2)
        )
        await worker.settle()
    first_page = await call(client, org, "GET", "/invoices?limit=2")
    assert len(first_page["items"]) == 2
    rest = await call(client, org, "GET", f"/invoices?limit=2&cursor={first_page['next_cursor']}")
    assert len(rest["items"]) == 1
    assert rest["next_cursor"] is None
    oldest = rest["items"][0]
    assert oldest["billing_reason"] == "subscription_create"
    detail = await call(client, org, "GET", f"/invoices/{oldest['id']}")
    assert detail == oldest
    assert detail["customer_name"] == "Acme"
    assert detail["lines"][0]["period_start"] == sub["current_period_start"]
    paid = await call(client, org, "GET", "/invoices?status=paid")
    assert len(paid["items"]) == 3
    assert (await call(client, org, "GET", "/invoices?status=void"))["items"] == []
    assert_problem(
        await client.get(f"{org.base}/invoices?cursor=nope", headers=await org.headers()),
        400,
        "invalid-cursor",
    )


async def test_the_printable_page(new_org, client: httpx.AsyncClient, worker: Worker) -> None:  # type: ignore[no-untyped-def]
    org: Org = await new_org("Acme <script>")
    invoice = await _declined_start(client, org, worker)
    response = await client.get(f"{org.base}/invoices/{invoice['id']}.html", headers=await org.headers())
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["cache-control"] == "private, no-store"
    assert "default-src 'none'" in response.headers["content-security-policy"]
    page = response.text
    assert invoice["number"] in page
    assert "19.00 USD" in page
    assert "Acme &lt;script&gt;" in page
    assert "<script>" not in page
    assert invoice["html_url"] == f"{org.base}/invoices/{invoice['id']}.html"


async def test_pay_now_with_a_new_card(new_org, client: httpx.AsyncClient, worker: Worker) -> None:  # type: ignore[no-untyped-def]
    org: Org = await new_org()
    invoice = await _declined_start(client, org, worker)
    again = await call(client, org, "POST", f"/invoices/{invoice['id']}/pay", 202)
    assert again["status"] == "open"
    await worker.settle()
    [still] = await invoices(client, org)
    assert still["status"] == "open"
    assert still["attempt_count"] == 2
    await call(client, org, "POST", "/payment-method", json={"token": "pm_card_mastercard"})
    await worker.settle()
    [paid] = await invoices(client, org)
    assert paid["status"] == "paid"
    assert paid["amount_paid"] == 1900
    assert (await subscription(client, org))["status"] == "active"
    problem = await call(client, org, "POST", f"/invoices/{invoice['id']}/pay", 409)
    assert problem["code"] == "illegal-transition"


async def test_void_and_write_off(
    new_org, client: httpx.AsyncClient, worker: Worker, clock: ManualClock
) -> None:  # type: ignore[no-untyped-def]
    org: Org = await new_org()
    invoice = await _declined_start(client, org, worker)
    voided = await call(client, org, "POST", f"/invoices/{invoice['id']}/void")
    assert voided["status"] == "void"
    assert voided["voided_at"] is not None
    # Voiding the first invoice of a new subscription means it never starts.
    sub = await subscription(client, org)
    assert sub["status"] == "canceled"
    for action in ("void", "mark-uncollectible", "pay"):
        problem = await call(client, org, "POST", f"/invoices/{invoice['id']}/{action}", 409)
        assert problem["code"] == "illegal-transition"

    other: Org = await new_org("Other")
    await change_plan(client, other, "pro")
    await set_card(client, other, "pm_card_chargeDeclined")
    clock.set(
        datetime.fromisoformat((await subscription(client, other))["current_period_end"])
        + timedelta(seconds=1)
    )
    await worker.settle()
    assert (await subscription(client, other))["status"] == "past_due"
    [renewal] = await invoices(client, other)
    written_off = await call(client, other, "POST", f"/invoices/{renewal['id']}/mark-uncollectible")
    assert written_off["status"] == "uncollectible"
    assert written_off["next_payment_attempt_at"] is None
    assert (await subscription(client, other))["status"] == "active"  # nothing is owed any more
    assert_problem(
        await client.get(f"{org.base}/invoices/{renewal['id']}", headers=await org.headers()),
        404,
        "invoice-not-found",
    )
