"""Helpers for billing tests: drive an organization's billing through the public API."""

from __future__ import annotations

from typing import Any

import httpx

from tests.modules.billing.conftest import Org


async def call(
    client: httpx.AsyncClient, org: Org, method: str, path: str, expect: int = 200, **kwargs: Any
) -> dict[str, Any]:
    """`method path` (under the org's billing) as its owner, signed in afresh; the answer's JSON."""
    response = await client.request(method, f"{org.base}{path}", headers=await org.headers(), **kwargs)
    assert response.status_code == expect, response.text
    body: dict[str, Any] = response.json()
    return body


async def change_plan(
    client: httpx.AsyncClient, org: Org, plan: str, expect: int = 200, **extra: Any
) -> dict[str, Any]:
    return await call(client, org, "POST", "/subscription/change", expect, json={"plan": plan, **extra})


async def set_card(client: httpx.AsyncClient, org: Org, token: str = "pm_card_visa") -> dict[str, Any]:  # noqa: S107
    return await call(client, org, "POST", "/payment-method", json={"token": token})


async def subscription(client: httpx.AsyncClient, org: Org) -> dict[str, Any]:
    return await call(client, org, "GET", "/subscription")


async def invoices(client: httpx.AsyncClient, org: Org) -> list[dict[str, Any]]:
    """The org's invoices, oldest first."""
    items: list[dict[str, Any]] = (await call(client, org, "GET", "/invoices?limit=100"))["items"]
    return list(reversed(items))


def lines(invoice: dict[str, Any]) -> list[tuple[str, int]]:
    return [(line["kind"], line["amount"]) for line in invoice["lines"]]
