"""Inbound provider webhooks: signatures and timestamps verified, each event applied once, and the
sandbox's asynchronous payments settled by webhooks it sends to a running server."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from splitstone.kernel.clock import ManualClock
from splitstone.kernel.events import EventRecorder
from splitstone.kernel.messaging.worker import Worker
from splitstone.modules.billing.api import InvoicePaid, PaymentFailed
from splitstone.modules.billing.provider_sandbox import SandboxProvider
from splitstone.modules.billing.provider_signatures import sign
from splitstone.modules.billing.service import BillingService
from splitstone.modules.billing.settings import BillingSettings
from tests.modules.auth.org_helpers import assert_problem
from tests.modules.billing.conftest import Org
from tests.modules.billing.support import call, change_plan, invoices, set_card, subscription
from tests.support.mailbox import free_port
from tests.support.servers import serve_in_loop

URL = "/api/v1/billing/webhooks/sandbox"


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def billing_settings(port: int) -> BillingSettings:
    """The sandbox posts its webhooks to the server `live` runs on `port`."""
    return BillingSettings(
        sandbox_webhook_url=f"http://127.0.0.1:{port}{URL}",
        invoice_finalize_delay_seconds=0,
        sandbox_settle_seconds=5,
    )


@pytest.fixture
async def live(app: FastAPI, port: int) -> AsyncIterator[None]:
    async with serve_in_loop(app, port=port):
        yield


async def _paid_start(client: httpx.AsyncClient, org: Org, token: str) -> None:
    await change_plan(client, org, "pro")
    await call(client, org, "POST", "/subscription/cancel", json={"at_period_end": False})
    await set_card(client, org, token)
    started = await change_plan(client, org, "pro")
    assert started["status"] == "incomplete"


@pytest.mark.usefixtures("live")
async def test_an_asynchronous_payment_settles_by_webhook(
    new_org,
    client: httpx.AsyncClient,
    worker: Worker,
    clock: ManualClock,
    events: EventRecorder,  # type: ignore[no-untyped-def]
) -> None:
    org: Org = await new_org()
    await _paid_start(client, org, "pm_debit_success")
    await worker.settle()
    [invoice] = await invoices(client, org)
    assert invoice["status"] == "open"  # the debit is processing
    assert (await subscription(client, org))["status"] == "incomplete"

    clock.advance(timedelta(seconds=5))
    await worker.settle()  # the sandbox settles, and posts payment_intent.succeeded to the server
    await worker.settle()
    [invoice] = await invoices(client, org)
    assert invoice["status"] == "paid"
    assert (await subscription(client, org))["status"] == "active"
    assert [e.invoice_id for e in events.of_type(InvoicePaid)] == [invoice_id(invoice)]


@pytest.mark.usefixtures("live")
async def test_an_asynchronous_failure_arrives_by_webhook(
    new_org,
    client: httpx.AsyncClient,
    worker: Worker,
    clock: ManualClock,
    events: EventRecorder,  # type: ignore[no-untyped-def]
) -> None:
    org: Org = await new_org()
    await _paid_start(client, org, "pm_debit_failure")
    await worker.settle()
    clock.advance(timedelta(seconds=5))
    await worker.settle()
    await worker.settle()
    failed = events.last(PaymentFailed)
    assert failed.failure_code == "debit_refused"
    [invoice] = await invoices(client, org)
    assert invoice["status"] == "open"
    assert (await subscription(client, org))["status"] == "incomplete"


def _event(invoice: str, payment: str, kind: str = "payment_intent.payment_failed") -> dict[str, Any]:
    return {
        "id": "evt_test_0001",
        "type": kind,
        "created": 1,
        "data": {
            "object": {
                "id": payment,
                "object": "payment_intent",
                "metadata": {"invoice_id": invoice},
                "last_payment_error": {"code": "card_declined", "message": "Your card was declined."},
            }
        },
    }


async def _open_invoice(client: httpx.AsyncClient, org: Org, worker: Worker) -> dict[str, Any]:
    """A paid start whose charge is processing (so its outcome is still to come)."""
    await _paid_start(client, org, "pm_debit_success")
    await worker.settle()
    [invoice] = await invoices(client, org)
    return invoice


def invoice_id(invoice: dict[str, Any]) -> Any:
    from uuid import UUID

    return UUID(invoice["id"])


async def test_signatures_timestamps_and_replays(
    new_org,  # type: ignore[no-untyped-def]
    client: httpx.AsyncClient,
    worker: Worker,
    clock: ManualClock,
    billing: BillingService,
    events: EventRecorder,
) -> None:
    provider = billing.provider
    assert isinstance(provider, SandboxProvider)
    secret = provider._secret
    org: Org = await new_org()
    invoice = await _open_invoice(client, org, worker)
    payment = await _payment_id(billing, invoice)
    body = json.dumps(_event(invoice["id"], payment)).encode()

    def post(raw: bytes, header: str | None) -> Any:
        headers = {"Content-Type": "application/json"} | ({"Sandbox-Signature": header} if header else {})
        return client.post(URL, content=raw, headers=headers)

    good = sign(secret, body, clock.now())
    tampered = body.replace(b"card_declined", b"card_accepted")
    assert_problem(await post(tampered, good), 400, "webhook-rejected")
    assert_problem(await post(body, None), 400, "webhook-rejected")
    assert_problem(await post(body, sign("whsec_wrong", body, clock.now())), 400, "webhook-rejected")
    old = sign(secret, body, clock.now() - timedelta(minutes=6))
    assert_problem(await post(body, old), 400, "webhook-rejected")
    assert events.of_type(PaymentFailed) == []

    first = await post(body, good)
    assert first.status_code == 200, first.text
    assert first.json()["duplicate"] is False
    replayed = await post(body, sign(secret, body, clock.now()))
    assert replayed.status_code == 200
    assert replayed.json()["duplicate"] is True
    assert len(events.of_type(PaymentFailed)) == 1, "a replayed event has no second effect"

    assert_problem(
        await client.post("/api/v1/billing/webhooks/stripe", content=body), 404, "unknown-payment-provider"
    )


async def _payment_id(billing: BillingService, invoice: dict[str, Any]) -> str:
    from sqlalchemy import select

    from splitstone.modules.billing.storage import payments

    async with billing.payments._uow(read_only=True) as uow:
        found = await uow.session.scalar(
            select(payments.c.provider_payment_id).where(payments.c.invoice_id == invoice_id(invoice))
        )
    assert found
    return str(found)


async def test_provider_events_are_forgotten_after_their_retention(
    new_org,  # type: ignore[no-untyped-def]
    client: httpx.AsyncClient,
    worker: Worker,
    clock: ManualClock,
    billing: BillingService,
) -> None:
    provider = billing.provider
    assert isinstance(provider, SandboxProvider)
    org: Org = await new_org()
    invoice = await _open_invoice(client, org, worker)
    body = json.dumps(_event(invoice["id"], await _payment_id(billing, invoice))).encode()
    headers = {
        "Content-Type": "application/json",
        "Sandbox-Signature": sign(provider._secret, body, clock.now()),
    }
    assert (await client.post(URL, content=body, headers=headers)).json()["duplicate"] is False

    clock.advance(timedelta(days=29))
    assert await billing.retention.purge() == 0
    clock.advance(timedelta(days=1, seconds=1))
    await worker.settle()  # the daily job
    headers = {
        "Content-Type": "application/json",
        "Sandbox-Signature": sign(provider._secret, body, clock.now()),
    }
    again = await client.post(URL, content=body, headers=headers)
    assert (
        again.json()["duplicate"] is False
    )  # forgotten; its effect is still applied once (the payment is final)
