"""The entitlements API: what the organization's plan allows, with this period's metered usage."""

from __future__ import annotations

from uuid import UUID

import httpx

from splitstone.kernel.events import EventRecorder
from splitstone.modules.billing.service import BillingService
from tests.modules.auth.conftest import Users
from tests.modules.auth.org_helpers import add_member, assert_problem, bearer, create_api_key


async def test_every_entitlement_of_the_plan_with_metered_usage(
    client: httpx.AsyncClient,
    new_org,  # type: ignore[no-untyped-def]
    billing: BillingService,
    users: Users,
    events: EventRecorder,
) -> None:
    org = await new_org()
    for i in range(2):
        await billing.record_usage(org.id, "tasks", 1, f"task-{i}")
    member = await add_member(client, events, users, org.owner, str(org.id), role="member")

    response = await client.get(f"{org.base}/entitlements", headers=member.headers)
    assert response.status_code == 200, response.text
    items = response.json()["items"]
    assert items == [
        {
            "key": "projects",
            "kind": "limit",
            "description": "Projects in the organization",
            "limit": 3,
            "used": None,
            "enabled": None,
            "plan": "free",
        },
        {
            "key": "members",
            "kind": "limit",
            "description": "Members of the organization",
            "limit": 5,
            "used": None,
            "enabled": None,
            "plan": "free",
        },
        {
            "key": "tasks_per_month",
            "kind": "limit",
            "description": "Tasks created per billing period",
            "limit": 500,
            "used": 2,
            "enabled": None,
            "plan": "free",
        },
        {
            "key": "webhooks",
            "kind": "feature",
            "description": "Outgoing webhooks",
            "limit": None,
            "used": None,
            "enabled": False,
            "plan": "free",
        },
        {
            "key": "audit_log",
            "kind": "feature",
            "description": "Audit log",
            "limit": None,
            "used": None,
            "enabled": False,
            "plan": "free",
        },
    ]


async def test_reading_entitlements_needs_billing_read(client: httpx.AsyncClient, new_org) -> None:  # type: ignore[no-untyped-def]
    org, other = await new_org(), await new_org("Other")
    reader = bearer((await create_api_key(client, org.owner, str(org.id), scopes=["billing:read"]))["secret"])
    assert (await client.get(f"{org.base}/entitlements", headers=reader)).status_code == 200
    writer = bearer((await create_api_key(client, org.owner, str(org.id), scopes=["usage:write"]))["secret"])
    response = await client.get(f"{org.base}/entitlements", headers=writer)
    assert assert_problem(response, 403, "missing-permission")["permission"] == "billing:read"
    assert_problem(
        await client.get(f"{other.base}/entitlements", headers=reader), 404, "organization-not-found"
    )
    assert_problem(await client.get(f"{org.base}/entitlements"), 401, "not-authenticated")


async def test_an_over_limit_write_elsewhere_answers_402_with_the_limit_and_the_upgrade_path(
    new_org,
    app,
    client,
    billing,  # type: ignore[no-untyped-def]
) -> None:
    """What a module's route answers when it asks `require_entitlement` before a write (projects will)."""
    org = await new_org()

    @app.post("/test-only/orgs/{org_id}/projects")
    async def create_project(org_id: UUID) -> dict[str, str]:
        await billing.require_entitlement(org_id, "projects", 1, current=3)
        return {"created": "never"}

    response = await client.post(f"/test-only/orgs/{org.id}/projects")
    problem = assert_problem(response, 402, "entitlement-exceeded")
    assert problem["key"] == "projects"
    assert problem["limit"] == 3
    assert problem["used"] == 3
    assert problem["plan"] == "free"
    assert problem["upgrade_plans"] == ["pro", "business"]
    assert problem["upgrade_url"].endswith("/api/v1/billing/plans")
    assert "Pro or Business" in problem["detail"]
