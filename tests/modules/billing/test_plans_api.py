"""The public catalog over HTTP: every plan, one plan with its versions, caching with ETags, 404s."""

from __future__ import annotations

from datetime import timedelta
from importlib import resources

import httpx

from splitstone.kernel.clock import ManualClock
from splitstone.kernel.container import Container
from splitstone.modules.billing.catalog import parse_catalog
from splitstone.modules.billing.plans import Plans

PLANS = "/api/v1/billing/plans"


async def test_every_plan_in_catalog_order_with_the_entitlements(client: httpx.AsyncClient) -> None:
    response = await client.get(PLANS)  # no Authorization: the catalog is public
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["default_plan"] == "free"
    assert body["currency"] == "USD"
    assert body["entitlements"] == [
        {"key": "projects", "kind": "limit", "description": "Projects in the organization", "metric": None},
        {"key": "members", "kind": "limit", "description": "Members of the organization", "metric": None},
        {
            "key": "tasks_per_month",
            "kind": "limit",
            "description": "Tasks created per billing period",
            "metric": "tasks",
        },
        {"key": "webhooks", "kind": "feature", "description": "Outgoing webhooks", "metric": None},
        {"key": "audit_log", "kind": "feature", "description": "Audit log", "metric": None},
    ]
    assert [p["code"] for p in body["items"]] == ["free", "pro", "business"]
    free, pro, business = body["items"]
    assert free == {
        "code": "free",
        "name": "Free",
        "description": "For trying splitstone out and for small side projects.",
        "version": 1,
        "currency": "USD",
        "prices": [{"interval": "month", "amount": 0}, {"interval": "year", "amount": 0}],
        "trial_days": 0,
        "limits": {"projects": 3, "members": 5, "tasks_per_month": 500},
        "features": {"webhooks": False, "audit_log": False},
        "metered": [],
    }
    assert pro["prices"] == [{"interval": "month", "amount": 1900}, {"interval": "year", "amount": 19000}]
    assert pro["trial_days"] == 14
    assert pro["metered"] == [
        {
            "metric": "api_calls",
            "name": "API calls",
            "unit": "call",
            "aggregation": "sum",
            "included": 100000,
            "model": "unit",
            "unit_amount": 50,
            "per_units": 1000,
            "tiers": [],
        }
    ]
    assert business["limits"] == {"projects": None, "members": None, "tasks_per_month": None}
    assert business["features"] == {"webhooks": True, "audit_log": True}
    calls, users, storage = business["metered"]
    assert calls["model"] == "graduated"
    assert calls["unit_amount"] is None
    assert calls["tiers"] == [
        {"up_to": 1000000, "unit_amount": 40, "flat_amount": 0},
        {"up_to": None, "unit_amount": 25, "flat_amount": 0},
    ]
    assert (users["metric"], users["aggregation"], users["unit"]) == ("active_users", "unique_count", "user")
    assert (storage["metric"], storage["aggregation"], storage["unit"]) == ("storage_gb", "max", "GB")


async def test_the_list_is_cacheable_and_answers_304_to_its_etag(client: httpx.AsyncClient) -> None:
    first = await client.get(PLANS)
    assert first.headers["cache-control"] == "public, max-age=300"
    etag = first.headers["etag"]
    assert etag.startswith('"')
    assert etag.endswith('"')
    again = await client.get(PLANS)
    assert again.headers["etag"] == etag  # the same body, the same tag
    assert again.content == first.content

    for header in (etag, f"W/{etag}", f'"something-else", {etag}', "*"):
        cached = await client.get(PLANS, headers={"If-None-Match": header})
        assert cached.status_code == 304, header
        assert cached.content == b""
        assert cached.headers["etag"] == etag
        assert cached.headers["cache-control"] == "public, max-age=300"

    stale = await client.get(PLANS, headers={"If-None-Match": '"an-older-catalog"'})
    assert stale.status_code == 200
    assert stale.json() == first.json()


async def test_one_plan(client: httpx.AsyncClient) -> None:
    listed = {p["code"]: p for p in (await client.get(PLANS)).json()["items"]}
    response = await client.get(f"{PLANS}/business")
    assert response.status_code == 200
    assert response.headers["cache-control"] == "public, max-age=300"
    body = response.json()
    assert body.pop("versions") is None  # only with ?versions=true
    assert body == listed["business"]

    etag = response.headers["etag"]
    assert etag != (await client.get(f"{PLANS}/pro")).headers["etag"]
    cached = await client.get(f"{PLANS}/business", headers={"If-None-Match": etag})
    assert cached.status_code == 304


async def test_an_unknown_plan_is_a_404_problem(client: httpx.AsyncClient) -> None:
    response = await client.get(f"{PLANS}/gold")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"] == "/problems/plan-not-found"
    assert problem["code"] == "plan-not-found"
    assert problem["title"] == "No such plan"
    assert problem["detail"] == "There is no plan 'gold'; plans: free, pro, business."
    assert problem["plan"] == "gold"
    assert problem["instance"] == f"{PLANS}/gold"
    assert "etag" not in response.headers


async def test_versions_lists_every_stored_version_of_the_plan(
    client: httpx.AsyncClient, container: Container, clock: ManualClock
) -> None:
    # An earlier release's catalog, with Pro at 15.00, stored its plans before this one started.
    shipped = resources.files("splitstone.modules.billing").joinpath("catalog.toml").read_text()
    earlier = shipped.replace(
        "prices = { month = 1900, year = 19000 }", "prices = { month = 1500, year = 15000 }"
    )
    assert earlier != shipped
    first_stored = clock.now()
    await Plans(container.units_of_work["billing"], clock, parse_catalog(earlier)).sync()
    clock.advance(timedelta(days=40))

    response = await client.get(f"{PLANS}/pro", params={"versions": "true"})
    assert response.status_code == 200
    body = response.json()
    assert body["version"] == 2
    assert body["prices"][0] == {"interval": "month", "amount": 1900}
    assert [(v["version"], v["current"]) for v in body["versions"]] == [(1, False), (2, True)]
    assert body["versions"][0]["created_at"] == first_stored.isoformat().replace("+00:00", "Z")
    assert body["versions"][1]["created_at"] == clock.now().isoformat().replace("+00:00", "Z")
    plain = await client.get(f"{PLANS}/pro")
    assert plain.json()["versions"] is None
    assert plain.headers["etag"] != response.headers["etag"]

    free = (await client.get(f"{PLANS}/free", params={"versions": "true"})).json()
    assert [(v["version"], v["current"]) for v in free["versions"]] == [(1, True)]
    listed = (await client.get(PLANS)).json()["items"]
    assert [(p["code"], p["version"]) for p in listed] == [("free", 1), ("pro", 2), ("business", 1)]


async def test_the_routes_are_documented_in_the_openapi(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    listing = spec["paths"][PLANS]["get"]
    assert listing["tags"] == ["billing"]
    assert "security" not in listing
    assert set(listing["responses"]) >= {"200", "304"}
    one = spec["paths"][f"{PLANS}/{{code}}"]["get"]
    assert set(one["responses"]) >= {"200", "304", "404"}
    assert [p["name"] for p in one["parameters"]] == ["code", "versions"]
    schemas = spec["components"]["schemas"]
    assert schemas["PlanResponse"]["examples"][0]["code"] == "pro"
    assert {"default_plan", "currency", "entitlements", "items"} <= set(
        schemas["PlansResponse"]["properties"]
    )
