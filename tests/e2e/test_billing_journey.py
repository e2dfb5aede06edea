"""Billing over real HTTP against a running server and its worker: a trial, a paid start settled by
the sandbox's webhook coming back to the server, the invoice, and the emails."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import RunningServer
from tests.e2e.test_auth_journey import bearer, sign_up

pytestmark = pytest.mark.e2e


async def _until(
    http: httpx.AsyncClient, url: str, headers: dict[str, str], done: Any, within: float = 20
) -> dict[str, Any]:
    """GET `url` until `done(body)` holds (the worker acts in the background)."""
    deadline = time.monotonic() + within
    while True:
        body: dict[str, Any] = (await http.get(url, headers=headers)).json()
        if done(body):
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {within} s: {body}")
        await asyncio.sleep(0.1)


async def test_the_billing_journey(http: httpx.AsyncClient, server: RunningServer) -> None:
    plans = await http.get("/api/v1/billing/plans")
    assert plans.status_code == 200
    assert [p["code"] for p in plans.json()["items"]] == ["free", "pro", "business"]

    carol = await sign_up(http, server, "carol@example.com")
    auth = bearer(carol["access_token"])
    created = await http.post("/api/v1/orgs", json={"name": "Carol & Co"}, headers=auth)
    assert created.status_code == 201, created.text
    base = f"/api/v1/orgs/{created.json()['id']}/billing"
    # The free plan arrives with the organization's event, through the worker (and NATS on PostgreSQL).
    free = await _until(http, f"{base}/subscription", auth, lambda b: b.get("plan", {}).get("code") == "free")
    assert free["status"] == "active"

    trial = await http.post(f"{base}/subscription/change", json={"plan": "pro"}, headers=auth)
    assert trial.status_code == 200, trial.text
    assert trial.json()["status"] == "trialing"
    [started] = await server.mailbox.wait_for("carol@example.com", containing="trial")
    assert "Pro" in started.subject

    ended = await http.post(f"{base}/subscription/cancel", json={"at_period_end": False}, headers=auth)
    assert ended.json()["status"] == "canceled"
    card = await http.post(f"{base}/payment-method", json={"token": "pm_debit_success"}, headers=auth)
    assert card.status_code == 200, card.text
    paid_start = await http.post(
        f"{base}/subscription/change",
        json={"plan": "business"},
        headers={**auth, "Idempotency-Key": "start-1"},
    )
    assert paid_start.status_code == 200, paid_start.text
    assert paid_start.json()["status"] == "incomplete"

    # The debit settles in the sandbox, whose signed webhook comes back to this server and pays the invoice.
    active = await _until(http, f"{base}/subscription", auth, lambda b: b["status"] == "active")
    assert active["effective_plan"] == "business"
    [invoice] = (await http.get(f"{base}/invoices", headers=auth)).json()["items"]
    assert invoice["status"] == "paid"
    assert invoice["amount_paid"] == 9900
    page = await http.get(invoice["html_url"], headers=auth)
    assert page.status_code == 200
    assert invoice["number"] in page.text
    [receipt] = await server.mailbox.wait_for("carol@example.com", containing=invoice["number"])
    assert "99.00 USD" in receipt.text

    replay = await http.post(
        f"{base}/subscription/change",
        json={"plan": "business"},
        headers={**auth, "Idempotency-Key": "start-1"},
    )
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.json()["status"] == "incomplete"  # the first answer, as it was
