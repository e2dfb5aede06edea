"""The usage API: report usage (one event or a batch) with an API key, and read the period's usage."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx

from splitstone.kernel.clock import ManualClock
from splitstone.kernel.events import EventRecorder
from splitstone.modules.billing.service import BillingService
from tests.modules.auth.conftest import Users
from tests.modules.auth.org_helpers import add_member, assert_problem, bearer, create_api_key
from tests.modules.billing.conftest import Org


async def _usage_key(client: httpx.AsyncClient, org: Org, scopes: list[str] | None = None) -> dict[str, str]:
    key = await create_api_key(client, org.owner, str(org.id), scopes=scopes or ["usage:write"])
    return bearer(key["secret"])


def _event(**changes: Any) -> dict[str, Any]:
    return {"metric": "api_calls", "quantity": 250, "idempotency_key": "req-1"} | changes


async def test_an_api_key_records_usage_once_per_key(
    client: httpx.AsyncClient,
    new_org,
    clock: ManualClock,  # type: ignore[no-untyped-def]
) -> None:
    org = await new_org()
    key = await _usage_key(client, org)

    created = await client.post(f"{org.base}/usage", json=_event(), headers=key)
    assert created.status_code == 201, created.text
    record = created.json()
    assert {k: record[k] for k in ("metric", "quantity", "idempotency_key", "duplicate", "unique_value")} == {
        "metric": "api_calls",
        "quantity": 250,
        "idempotency_key": "req-1",
        "duplicate": False,
        "unique_value": None,
    }
    assert record["org_id"] == str(org.id)
    assert record["occurred_at"].startswith(clock.now().strftime("%Y-%m-%dT%H:%M:%S"))

    again = await client.post(f"{org.base}/usage", json=_event(quantity=999), headers=key)
    assert again.status_code == 200, again.text
    assert again.json() == record | {"duplicate": True}


async def test_owners_and_admins_may_report_usage_members_may_not(
    client: httpx.AsyncClient,
    new_org,
    users: Users,
    events: EventRecorder,  # type: ignore[no-untyped-def]
) -> None:
    org = await new_org()
    owner = await client.post(f"{org.base}/usage", json=_event(), headers=org.owner.headers)
    assert owner.status_code == 201, owner.text
    admin = await add_member(client, events, users, org.owner, str(org.id), role="admin")
    response = await client.post(f"{org.base}/usage", json=_event(idempotency_key="a"), headers=admin.headers)
    assert response.status_code == 201, response.text
    member = await add_member(client, events, users, org.owner, str(org.id), role="member")
    response = await client.post(
        f"{org.base}/usage", json=_event(idempotency_key="m"), headers=member.headers
    )
    assert assert_problem(response, 403, "missing-permission")["permission"] == "usage:write"


async def test_a_key_without_the_usage_scope_is_refused(client: httpx.AsyncClient, new_org) -> None:  # type: ignore[no-untyped-def]
    org = await new_org()
    key = await _usage_key(client, org, scopes=["billing:read"])
    response = await client.post(f"{org.base}/usage", json=_event(), headers=key)
    assert_problem(response, 403, "missing-permission")
    response = await client.post(f"{org.base}/usage/batch", json={"events": [_event()]}, headers=key)
    assert_problem(response, 403, "missing-permission")


async def test_another_organization_is_not_found_and_no_auth_is_401(
    client: httpx.AsyncClient,
    new_org,  # type: ignore[no-untyped-def]
) -> None:
    mine, theirs = await new_org(), await new_org("Other")
    key = await _usage_key(client, mine)
    assert_problem(
        await client.post(f"{theirs.base}/usage", json=_event(), headers=key), 404, "organization-not-found"
    )
    response = await client.post(f"{theirs.base}/usage", json=_event(), headers=mine.owner.headers)
    assert_problem(response, 404, "organization-not-found")
    assert_problem(await client.get(f"{theirs.base}/usage", headers=key), 404, "organization-not-found")
    assert_problem(await client.post(f"{mine.base}/usage", json=_event()), 401, "not-authenticated")
    assert_problem(await client.get(f"{mine.base}/usage"), 401, "not-authenticated")


BAD_BODIES = [
    {"metric": "api_calls", "quantity": 1},  # no key
    _event(quantity=-1),
    _event(quantity=10**12 + 1),
    _event(quantity="many"),
    _event(idempotency_key=""),
    _event(idempotency_key="k" * 256),
    _event(occurred_at="2030-01-01T00:00:00"),  # no time zone
    _event(unique_value="u" * 256),
    _event(surprise=True),
]


async def test_a_bad_body_is_422(client: httpx.AsyncClient, new_org) -> None:  # type: ignore[no-untyped-def]
    org = await new_org()
    key = await _usage_key(client, org)
    for body in BAD_BODIES:
        response = await client.post(f"{org.base}/usage", json=body, headers=key)
        assert assert_problem(response, 422, "validation-error")["errors"], body
        response = await client.post(
            f"{org.base}/usage/batch", json={"events": [_event(), body]}, headers=key
        )
        assert assert_problem(response, 422, "validation-error")["errors"], body
    response = await client.post(f"{org.base}/usage/batch", json={"events": [], "extra": 1}, headers=key)
    assert len(assert_problem(response, 422, "validation-error")["errors"]) == 2


async def test_the_domain_refusals_are_problems(
    client: httpx.AsyncClient,
    new_org,
    clock: ManualClock,  # type: ignore[no-untyped-def]
) -> None:
    org = await new_org()
    key = await _usage_key(client, org)
    unknown = assert_problem(
        await client.post(f"{org.base}/usage", json=_event(metric="nope"), headers=key), 422, "unknown-metric"
    )
    assert unknown["known"] == ["tasks", "api_calls", "storage_gb", "active_users"]
    response = await client.post(f"{org.base}/usage", json=_event(metric="active_users"), headers=key)
    assert assert_problem(response, 422, "invalid-usage")["field"] == "unique_value"
    future = (clock.now() + timedelta(minutes=6)).isoformat()
    response = await client.post(f"{org.base}/usage", json=_event(occurred_at=future), headers=key)
    assert_problem(response, 422, "invalid-usage")
    past = (clock.now() - timedelta(days=1)).isoformat()  # before the organization's first period
    closed = assert_problem(
        await client.post(f"{org.base}/usage", json=_event(occurred_at=past), headers=key),
        422,
        "usage-period-closed",
    )
    assert closed["open_from"]


async def test_the_idempotency_key_header_replays_the_answer(client: httpx.AsyncClient, new_org) -> None:  # type: ignore[no-untyped-def]
    org = await new_org()
    headers = await _usage_key(client, org) | {"Idempotency-Key": "retry-1"}
    first = await client.post(f"{org.base}/usage", json=_event(), headers=headers)
    replayed = await client.post(f"{org.base}/usage", json=_event(), headers=headers)
    assert (first.status_code, replayed.status_code) == (201, 201)
    assert replayed.headers["Idempotent-Replayed"] == "true"
    assert replayed.json() == first.json()


# -- batches -------------------------------------------------------------------------------------------


async def test_a_batch_answers_each_event_in_order(
    client: httpx.AsyncClient,
    new_org,
    billing: BillingService,  # type: ignore[no-untyped-def]
) -> None:
    org = await new_org()
    key = await _usage_key(client, org)
    await client.post(f"{org.base}/usage", json=_event(idempotency_key="seen", quantity=5), headers=key)
    batch = [
        _event(idempotency_key="b-1", quantity=10),
        _event(idempotency_key="seen", quantity=20),
        {"metric": "active_users", "idempotency_key": "b-2", "unique_value": "user-7"},
        _event(idempotency_key="b-1", quantity=30),
    ]
    response = await client.post(f"{org.base}/usage/batch", json={"events": batch}, headers=key)
    assert response.status_code == 200, response.text
    items = response.json()["items"]
    assert [(i["idempotency_key"], i["quantity"], i["duplicate"]) for i in items] == [
        ("b-1", 10, False),
        ("seen", 5, True),
        ("b-2", 1, False),
        ("b-1", 10, True),
    ]
    summary = (await client.get(f"{org.base}/usage", headers=org.owner.headers)).json()
    values = {m["metric"]: m["value"] for m in summary["metrics"]}
    assert (values["api_calls"], values["active_users"]) == (15, 1)


async def test_a_batch_is_all_or_none_and_at_most_100(client: httpx.AsyncClient, new_org) -> None:  # type: ignore[no-untyped-def]
    org = await new_org()
    key = await _usage_key(client, org)
    batch = [_event(idempotency_key="ok"), _event(idempotency_key="bad", metric="nope")]
    problem = assert_problem(
        await client.post(f"{org.base}/usage/batch", json={"events": batch}, headers=key),
        422,
        "unknown-metric",
    )
    assert problem["index"] == 1
    assert problem["detail"].startswith("events[1]: ")
    summary = (await client.get(f"{org.base}/usage", headers=org.owner.headers)).json()
    assert all(m["value"] == 0 for m in summary["metrics"])

    too_many = {"events": [_event(idempotency_key=f"k-{i}") for i in range(101)]}
    assert_problem(
        await client.post(f"{org.base}/usage/batch", json=too_many, headers=key), 422, "validation-error"
    )
    assert_problem(
        await client.post(f"{org.base}/usage/batch", json={"events": []}, headers=key),
        422,
        "validation-error",
    )
    full = {"events": [_event(idempotency_key=f"k-{i}", quantity=1) for i in range(100)]}
    assert (await client.post(f"{org.base}/usage/batch", json=full, headers=key)).status_code == 200


# -- reading -------------------------------------------------------------------------------------------


async def test_the_summary_shows_the_current_period(
    client: httpx.AsyncClient,
    new_org,
    billing: BillingService,  # type: ignore[no-untyped-def]
) -> None:
    org = await new_org()
    key = await _usage_key(client, org)
    for i in range(3):
        await client.post(
            f"{org.base}/usage", json=_event(metric="tasks", idempotency_key=f"t-{i}"), headers=key
        )

    response = await client.get(f"{org.base}/usage", headers=org.owner.headers)
    assert response.status_code == 200, response.text
    summary = response.json()
    state = await billing.subscriptions.state(org.id)
    assert (summary["plan"], summary["currency"], summary["amount"]) == ("free", "USD", 0)
    assert summary["period_start"] == state.period_start.isoformat().replace("+00:00", "Z")
    tasks = next(m for m in summary["metrics"] if m["metric"] == "tasks")
    assert tasks == {
        "metric": "tasks",
        "name": "Tasks created",
        "unit": "task",
        "aggregation": "count",
        "value": 3,
        "included": None,
        "billable": None,
        "amount": None,
        "entitlement": "tasks_per_month",
        "limit": 500,
    }


async def test_a_member_reads_usage_of_an_explicit_range(
    client: httpx.AsyncClient,
    new_org,
    users: Users,
    events: EventRecorder,
    clock: ManualClock,  # type: ignore[no-untyped-def]
) -> None:
    org = await new_org()
    member = await add_member(client, events, users, org.owner, str(org.id), role="member")
    await client.post(f"{org.base}/usage", json=_event(quantity=7), headers=org.owner.headers)
    start = clock.now() - timedelta(days=1)
    params = {"from": start.isoformat(), "to": (start + timedelta(days=2)).isoformat()}
    response = await client.get(f"{org.base}/usage", params=params, headers=member.headers)
    assert response.status_code == 200, response.text
    summary = response.json()
    assert (summary["plan"], summary["amount"]) == (None, None)
    calls = next(m for m in summary["metrics"] if m["metric"] == "api_calls")
    assert (calls["value"], calls["included"]) == (7, None)


BAD_RANGES = [
    ("2030-01-01T00:00:00Z", None),
    (None, "2030-01-02T00:00:00Z"),
    ("2030-01-10T00:00:00Z", "2030-01-09T00:00:00Z"),
    ("2030-01-10T00:00:00Z", "2030-01-10T00:00:00Z"),
    ("2030-01-01T00:00:00Z", "2031-01-03T00:00:00Z"),  # 367 days
    ("2030-01-01T00:00:00", "2030-01-02T00:00:00Z"),  # no time zone
    ("yesterday", "2030-01-02T00:00:00Z"),
]


async def test_a_bad_range_is_422(client: httpx.AsyncClient, new_org) -> None:  # type: ignore[no-untyped-def]
    org = await new_org()
    for start, end in BAD_RANGES:
        params = {name: value for name, value in (("from", start), ("to", end)) if value is not None}
        response = await client.get(f"{org.base}/usage", params=params, headers=org.owner.headers)
        assert response.status_code == 422, (params, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
    params = {"from": "2032-01-01T00:00:00Z", "to": "2033-01-01T00:00:00Z"}  # 366 days: a leap year
    response = await client.get(f"{org.base}/usage", params=params, headers=org.owner.headers)
    assert response.status_code == 200, response.text
