"""Tenant isolation, generated from the route table: nobody outside a tenant reaches its data.

Tenant A gets one of everything (project, task, comment, member, invitation, API key, webhook endpoint
and delivery, usage, a paid invoice, a session, an inbox item). Then, for every operation on tenant
data, org B's owner, org B's all-scopes API key and an anonymous client use A's ids: under A's
organization, and under B's own organization with A's resource ids. Each must get a 401 (anonymous) or
404 (B) problem that shows none of A's data, and afterwards every read of A, as A's owner, answers
exactly what it answered before.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from splitstone.kernel.settings import ModuleSettings
from tests.security.tenancy_support import (
    STREAMS,
    Operation,
    Tenant,
    TenantFactory,
    Unclassified,
    body_for,
    classify,
    leaked,
    operations,
    reads_of,
    tenancy_module_settings,
)


@pytest.fixture
def module_settings(tmp_path: Path) -> dict[str, ModuleSettings]:
    return tenancy_module_settings(tmp_path)


def classified(app: FastAPI) -> dict[Operation, str]:
    kinds: dict[Operation, str] = {}
    unclassified: list[str] = []
    for op in operations(app):
        try:
            kinds[op] = classify(op)
        except Unclassified as error:
            unclassified.append(str(error))
    assert not unclassified, "routes the isolation matrix cannot cover:\n" + "\n".join(unclassified)
    return kinds


def attacks(
    op: Operation, kind: str, a: Tenant, b: Tenant
) -> list[tuple[str, dict[str, str], str, set[int]]]:
    """(who, their headers, the URL they call, the statuses they may get) for one operation."""
    anonymous: dict[str, str] = {}
    with_a_ids = op.url(a.path_values(op))
    if kind == "self":
        return [("anonymous", anonymous, with_a_ids, {401})]
    if kind == "user":
        return [
            ("anonymous", anonymous, with_a_ids, {401}),
            ("B's owner", b.owner.headers, with_a_ids, {404}),
            ("B's API key", b.key_headers, with_a_ids, {401, 403, 404}),
        ]
    found = [
        ("anonymous", anonymous, with_a_ids, {401}),
        ("B's owner", b.owner.headers, with_a_ids, {404}),
        ("B's API key", b.key_headers, with_a_ids, {404}),
    ]
    if len(op.params) > 1:  # A's resources under B's organization, where B may do anything
        under_b = op.url(a.path_values(op, org_of=b))
        found += [
            ("B's owner in B's org", b.owner.headers, under_b, {404}),
            ("B's API key in B's org", b.key_headers, under_b, {404}),
        ]
    return found


async def test_no_outsider_reaches_a_tenants_data(
    app: FastAPI, client: httpx.AsyncClient, tenancy_factory: TenantFactory, subtests: pytest.Subtests
) -> None:
    kinds = classified(app)
    a = await tenancy_factory.tenant("Alpha")
    b = await tenancy_factory.tenant("Bravo")
    before = await reads_of(client, kinds, a)
    failed_reads = {key: status for key, (status, _) in before.items() if status != 200}
    assert not failed_reads, failed_reads  # else "nothing changed" would compare errors

    tried = 0
    for op, kind in kinds.items():
        if kind == "public":
            continue
        body = body_for(app, op, a) if kind != "self" else None  # a caller with no account fails first
        for who, headers, url, statuses in attacks(op, kind, a, b):
            tried += 1
            with subtests.test(msg=f"{who}: {op.method} {url}"):
                response = await client.request(op.method, url, headers=headers, json=body)
                assert response.status_code in statuses, response.text
                assert response.headers["content-type"].startswith("application/problem+json")
                assert not leaked(response.text, a, url)
        if kind == "self" and op.method == "GET" and op.key not in STREAMS:
            for who, headers in (("B's owner", b.owner.headers), ("B's API key", b.key_headers)):
                tried += 1
                with subtests.test(msg=f"{who}: {op.key} shows nothing of A"):
                    response = await client.get(op.path, headers=headers)
                    assert response.status_code < 500, response.text
                    assert not leaked(response.text, a, op.path)

    for op, kind in kinds.items():  # B's own resources, with A's ids in the body
        body = body_for(app, op, a) if kind == "org" else None
        if body is None or not leaked(json.dumps(body), a, ""):
            continue
        tried += 1
        url = op.url(b.path_values(op))
        with subtests.test(msg=f"B's owner: {op.key} in B's org with A's ids in the body"):
            response = await client.request(op.method, url, headers=b.owner.headers, json=body)
            assert response.status_code in (404, 422), response.text
            assert not leaked(response.text, a, json.dumps(body))

    assert await reads_of(client, kinds, a) == before, "an outsider changed tenant A"
    assert tried > 150, tried
