"""The role matrix: every operation on an organization's data, as every role and as scoped API keys.

`EXPECTED` says, for each operation of the route table under `/orgs/{org_id}`, the permission it needs,
the lowest role that holds it and the scopes an API key needs. A member of each role and API keys with
exactly those scopes (and with every scope but one of them) call it: those allowed succeed, the others
get a 403 problem and change nothing. An operation missing from `EXPECTED` fails the test.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest
from fastapi import FastAPI

from splitstone.kernel.settings import ModuleSettings
from splitstone.modules.auth.api import Permission as P
from splitstone.modules.auth.api import Role
from tests.modules.auth.conftest import SignedIn
from tests.modules.auth.org_helpers import create_api_key, create_org, invite
from tests.security.tenancy_support import (
    QUIET_HOOK,
    Operation,
    Tenant,
    TenantFactory,
    body_for,
    classify,
    operations,
    reads_of,
    tenancy_module_settings,
)

# Who may do what does not depend on the database; PostgreSQL's run is the one CI keeps (~25 s).
pytestmark = pytest.mark.backends("postgres")

RANKED_ROLES = (Role.MEMBER, Role.ADMIN, Role.OWNER)
_unique = itertools.count(1)


@dataclass(frozen=True)
class Need:
    """What an operation needs: `permission`, held from role `lowest` up; an API key needs `key_scopes`
    (default: the permission; empty: no key may do it)."""

    permission: P
    lowest: Role = Role.MEMBER
    key_scopes: frozenset[P] | None = None

    @property
    def scopes(self) -> frozenset[P]:
        return frozenset({self.permission}) if self.key_scopes is None else self.key_scopes


ADMIN = Role.ADMIN
NO_KEY: frozenset[P] = frozenset()
ORG = "/api/v1/orgs/{org_id}"
EXPECTED: dict[str, Need] = {
    f"GET {ORG}": Need(P.ORG_READ),
    f"PATCH {ORG}": Need(P.ORG_UPDATE, ADMIN),
    f"GET {ORG}/members": Need(P.MEMBERS_READ),
    f"PATCH {ORG}/members/{{user_id}}": Need(P.MEMBERS_MANAGE, ADMIN),
    f"DELETE {ORG}/members/{{user_id}}": Need(P.MEMBERS_MANAGE, ADMIN),
    f"POST {ORG}/invitations": Need(P.MEMBERS_MANAGE, ADMIN),
    f"GET {ORG}/invitations": Need(P.MEMBERS_MANAGE, ADMIN),
    f"DELETE {ORG}/invitations/{{invitation_id}}": Need(P.MEMBERS_MANAGE, ADMIN),
    f"POST {ORG}/api-keys": Need(P.API_KEYS_MANAGE, ADMIN, NO_KEY),  # a key never mints keys
    f"GET {ORG}/api-keys": Need(P.API_KEYS_MANAGE, ADMIN),
    f"DELETE {ORG}/api-keys/{{key_id}}": Need(P.API_KEYS_MANAGE, ADMIN),
    f"GET {ORG}/billing/subscription": Need(P.BILLING_READ),
    f"POST {ORG}/billing/subscription/change": Need(P.BILLING_MANAGE, ADMIN),
    f"POST {ORG}/billing/subscription/cancel": Need(P.BILLING_MANAGE, ADMIN),
    f"POST {ORG}/billing/subscription/resume": Need(P.BILLING_MANAGE, ADMIN),
    f"GET {ORG}/billing/subscription/history": Need(P.BILLING_READ),
    f"GET {ORG}/billing/upcoming-invoice": Need(P.BILLING_READ),
    f"GET {ORG}/billing/account": Need(P.BILLING_READ),
    f"PATCH {ORG}/billing/account": Need(P.BILLING_MANAGE, ADMIN),
    f"POST {ORG}/billing/payment-method": Need(P.BILLING_MANAGE, ADMIN),
    f"POST {ORG}/billing/usage": Need(P.USAGE_WRITE, ADMIN),
    f"POST {ORG}/billing/usage/batch": Need(P.USAGE_WRITE, ADMIN),
    f"GET {ORG}/billing/usage": Need(P.BILLING_READ),
    f"GET {ORG}/billing/entitlements": Need(P.BILLING_READ),
    f"GET {ORG}/billing/invoices": Need(P.BILLING_READ),
    f"GET {ORG}/billing/invoices/{{invoice_id}}.html": Need(P.BILLING_READ),
    f"GET {ORG}/billing/invoices/{{invoice_id}}": Need(P.BILLING_READ),
    f"POST {ORG}/billing/invoices/{{invoice_id}}/pay": Need(P.BILLING_MANAGE, ADMIN),
    f"POST {ORG}/billing/invoices/{{invoice_id}}/void": Need(P.BILLING_MANAGE, ADMIN),
    f"POST {ORG}/billing/invoices/{{invoice_id}}/mark-uncollectible": Need(P.BILLING_MANAGE, ADMIN),
    f"POST {ORG}/webhooks": Need(P.WEBHOOKS_MANAGE, ADMIN),
    f"GET {ORG}/webhooks": Need(P.WEBHOOKS_MANAGE, ADMIN),
    f"GET {ORG}/webhooks/{{endpoint_id}}": Need(P.WEBHOOKS_MANAGE, ADMIN),
    f"PATCH {ORG}/webhooks/{{endpoint_id}}": Need(P.WEBHOOKS_MANAGE, ADMIN),
    f"DELETE {ORG}/webhooks/{{endpoint_id}}": Need(P.WEBHOOKS_MANAGE, ADMIN),
    f"GET {ORG}/webhooks/{{endpoint_id}}/secret": Need(P.WEBHOOKS_MANAGE, ADMIN),
    f"POST {ORG}/webhooks/{{endpoint_id}}/rotate-secret": Need(P.WEBHOOKS_MANAGE, ADMIN),
    f"POST {ORG}/webhooks/{{endpoint_id}}/test": Need(P.WEBHOOKS_MANAGE, ADMIN),
    f"GET {ORG}/webhooks/{{endpoint_id}}/deliveries": Need(P.WEBHOOKS_MANAGE, ADMIN),
    f"GET {ORG}/webhooks/{{endpoint_id}}/deliveries/{{delivery_id}}": Need(P.WEBHOOKS_MANAGE, ADMIN),
    f"POST {ORG}/webhooks/{{endpoint_id}}/deliveries/{{delivery_id}}/redeliver": Need(
        P.WEBHOOKS_MANAGE, ADMIN
    ),
    f"GET {ORG}/projects": Need(P.PROJECTS_READ),
    f"POST {ORG}/projects": Need(P.PROJECTS_MANAGE, ADMIN),
    f"GET {ORG}/projects/{{project_ref}}": Need(P.PROJECTS_READ),
    f"PATCH {ORG}/projects/{{project_ref}}": Need(P.PROJECTS_MANAGE, ADMIN),
    f"POST {ORG}/projects/{{project_ref}}/archive": Need(P.PROJECTS_MANAGE, ADMIN),
    f"POST {ORG}/projects/{{project_ref}}/unarchive": Need(P.PROJECTS_MANAGE, ADMIN),
    f"DELETE {ORG}/projects/{{project_ref}}": Need(P.PROJECTS_MANAGE, ADMIN),
    f"GET {ORG}/tasks": Need(P.TASKS_READ),
    f"GET {ORG}/projects/{{project_ref}}/tasks": Need(P.TASKS_READ),
    f"POST {ORG}/projects/{{project_ref}}/tasks": Need(P.TASKS_WRITE),
    f"GET {ORG}/tasks/{{task_ref}}": Need(P.TASKS_READ),
    f"PATCH {ORG}/tasks/{{task_ref}}": Need(P.TASKS_WRITE),
    f"POST {ORG}/tasks/{{task_ref}}/move": Need(P.TASKS_WRITE),
    f"DELETE {ORG}/tasks/{{task_ref}}": Need(P.TASKS_WRITE),
    f"GET {ORG}/tasks/{{task_ref}}/comments": Need(P.TASKS_READ),
    f"POST {ORG}/tasks/{{task_ref}}/comments": Need(P.TASKS_WRITE),
    # Only its author edits a comment (each caller edits one of their own); a key is nobody's author.
    f"PATCH {ORG}/tasks/{{task_ref}}/comments/{{comment_id}}": Need(P.TASKS_WRITE, key_scopes=NO_KEY),
    # Anyone deletes their own; a key deletes any comment with projects:manage as well.
    f"DELETE {ORG}/tasks/{{task_ref}}/comments/{{comment_id}}": Need(
        P.TASKS_WRITE, key_scopes=frozenset({P.TASKS_WRITE, P.PROJECTS_MANAGE})
    ),
    f"GET {ORG}/tasks/{{task_ref}}/activity": Need(P.TASKS_READ),
    # new-module inserts above this line: EXPECTED
}


@pytest.fixture
def module_settings(tmp_path: Path) -> dict[str, ModuleSettings]:
    return tenancy_module_settings(tmp_path)


@dataclass
class Caller:
    name: str
    headers: dict[str, str]
    allowed: bool
    user: SignedIn | None = None
    role: Role | None = None
    scopes: frozenset[P] = frozenset()


def _bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


async def callers(client: httpx.AsyncClient, tenant: Tenant, need: Need) -> list[Caller]:
    """Each role's member, a key with exactly the scopes needed, and keys lacking one of them."""
    users = {Role.MEMBER: tenant.member, Role.ADMIN: tenant.admin, Role.OWNER: tenant.owner}
    lowest = RANKED_ROLES.index(need.lowest)
    found = [
        Caller(role.value, user.headers, RANKED_ROLES.index(role) >= lowest, user, role)
        for role, user in users.items()
    ]
    org = str(tenant.org_id)
    if not need.scopes:
        key = await create_api_key(client, tenant.owner, org, scopes=list(P))
        return [*found, Caller("a key with every scope", _bearer(key["secret"]), False, scopes=frozenset(P))]
    key = await create_api_key(client, tenant.owner, org, scopes=sorted(need.scopes))
    found.append(
        Caller(f"a key with {sorted(need.scopes)}", _bearer(key["secret"]), True, scopes=need.scopes)
    )
    for missing in sorted(need.scopes):
        scopes = frozenset(P) - {missing}
        key = await create_api_key(client, tenant.owner, org, scopes=sorted(scopes))
        found.append(Caller(f"a key without {missing}", _bearer(key["secret"]), False, scopes=scopes))
    return found


Fresh = Callable[[TenantFactory, Tenant, Caller, dict[str, str]], Awaitable[str]]


async def _post(
    f: TenantFactory, t: Tenant, path: str, body: dict[str, Any] | None = None, expect: int = 201
) -> Any:
    return await f.call("POST", f"/api/v1/orgs/{t.org_id}{path}", t.owner, expect, json=body)


async def _project(f: TenantFactory, t: Tenant, _: Caller, __: dict[str, str]) -> str:
    return str((await _post(f, t, "/projects", {"key": f"FR{next(_unique)}", "name": "Fresh"}))["id"])


async def _task(f: TenantFactory, t: Tenant, _: Caller, __: dict[str, str]) -> str:
    return str((await _post(f, t, f"/projects/{t.project_id}/tasks", {"title": "Fresh"}))["id"])


async def _member(f: TenantFactory, t: Tenant, _: Caller, __: dict[str, str]) -> str:
    return str((await f.member(t.owner, t.org_id, "member")).user_id)


async def _invitation(f: TenantFactory, t: Tenant, _: Caller, __: dict[str, str]) -> str:
    body = {"email": f"fresh{next(_unique)}@example.com", "role": "member"}
    return str((await _post(f, t, "/invitations", body))["id"])


async def _api_key(f: TenantFactory, t: Tenant, _: Caller, __: dict[str, str]) -> str:
    return str((await create_api_key(f.client, t.owner, str(t.org_id), name="fresh"))["id"])


async def _endpoint(f: TenantFactory, t: Tenant, _: Caller, __: dict[str, str]) -> str:
    return str(
        (await _post(f, t, "/webhooks", {"url": "https://hooks.example.invalid/fresh", **QUIET_HOOK}))["id"]
    )


async def _delivery(f: TenantFactory, t: Tenant, _: Caller, values: dict[str, str]) -> str:
    return str((await _post(f, t, f"/webhooks/{values['endpoint_id']}/test", expect=202))["delivery_id"])


async def _comment(f: TenantFactory, t: Tenant, caller: Caller, values: dict[str, str]) -> str:
    author = caller.user or t.owner  # each user edits or deletes a comment of their own
    url = f"/api/v1/orgs/{t.org_id}/tasks/{values['task_ref']}/comments"
    return str((await f.call("POST", url, author, 201, json={"body": "Fresh"}))["id"])


async def _open_invoice(f: TenantFactory, t: Tenant, _: Caller, __: dict[str, str]) -> str:
    return await f.open_invoice(t.owner, t.org_id)


FRESH: dict[str, Fresh] = {
    "project_ref": _project,
    "task_ref": _task,
    "user_id": _member,
    "invitation_id": _invitation,
    "key_id": _api_key,
    "endpoint_id": _endpoint,
    "delivery_id": _delivery,
    "comment_id": _comment,
    "invoice_id": _open_invoice,
}
"""A new resource for each caller allowed to change one, made by the owner, in path order (an endpoint
before its delivery)."""

_SUBSCRIPTION = f"{ORG}/billing/subscription"
PREPARE: dict[str, list[tuple[str, dict[str, Any] | None]]] = {
    f"POST {ORG}/projects/{{project_ref}}/unarchive": [("/projects/{project_ref}/archive", None)],
    f"POST {_SUBSCRIPTION}/cancel": [("/billing/subscription/change", {"plan": "pro"})],
    f"POST {_SUBSCRIPTION}/resume": [
        ("/billing/subscription/change", {"plan": "pro"}),
        ("/billing/subscription/cancel", {"at_period_end": True}),
    ],
}
"""What the owner does first, so that an allowed caller's call is possible in the resource's state."""

OWN_ORGANIZATION = {
    f"POST {_SUBSCRIPTION}/change",
    f"POST {_SUBSCRIPTION}/cancel",
    f"POST {_SUBSCRIPTION}/resume",
    f"POST {ORG}/billing/invoices/{{invoice_id}}/pay",
    f"POST {ORG}/billing/invoices/{{invoice_id}}/void",
    f"POST {ORG}/billing/invoices/{{invoice_id}}/mark-uncollectible",
}
"""Each allowed caller gets an organization of its own: one organization has one subscription."""


async def own_organization(f: TenantFactory, a: Tenant, caller: Caller) -> tuple[Tenant, Caller]:
    """A new organization of A's owner in which `caller` has the same role or scopes."""
    org_id = UUID(await create_org(f.client, a.owner, "Fresh Corp"))
    await f.worker.settle()
    fresh = dataclasses.replace(a, org_id=org_id)
    if caller.role is Role.ADMIN:
        _, token = await invite(f.client, f.events, a.owner, str(org_id), a.admin.email, "admin")
        await f.call("POST", "/api/v1/invitations/accept", a.admin, 200, json={"token": token})
    if caller.user is None:
        key = await create_api_key(f.client, a.owner, str(org_id), scopes=sorted(caller.scopes))
        caller = dataclasses.replace(caller, headers=_bearer(key["secret"]))
    return fresh, caller


async def allowed_call(f: TenantFactory, a: Tenant, op: Operation, caller: Caller) -> tuple[str, Caller]:
    """The URL for an allowed caller's call (resources of its own where it changes one), and who calls."""
    tenant = a
    if op.key in OWN_ORGANIZATION:
        tenant, caller = await own_organization(f, a, caller)
    values = tenant.path_values(op)
    if op.method != "GET":
        for param in op.params:
            if param in FRESH:
                values[param] = await FRESH[param](f, tenant, caller, values)
    for path, body in PREPARE.get(op.key, []):
        await f.call("POST", Operation("POST", ORG + path, ()).url(values), tenant.owner, 200, json=body)
    return op.url(values), caller


def guarded(app: FastAPI) -> list[tuple[Operation, Need]]:
    ops = [op for op in operations(app) if classify(op) == "org"]
    missing = [op.key for op in ops if op.key not in EXPECTED]
    assert not missing, (
        "operations missing from EXPECTED in tests/security/test_role_matrix.py:\n" + "\n".join(missing)
    )
    stale = set(EXPECTED) - {op.key for op in ops}
    assert not stale, f"EXPECTED names operations the app no longer has: {sorted(stale)}"
    return [(op, EXPECTED[op.key]) for op in ops]


async def test_every_role_gets_exactly_its_permissions(
    app: FastAPI, client: httpx.AsyncClient, tenancy_factory: TenantFactory, subtests: pytest.Subtests
) -> None:
    assert set(Role) == set(RANKED_ROLES), "a new role: rank it in RANKED_ROLES"
    matrix = guarded(app)
    a = await tenancy_factory.tenant("Alpha")
    kinds = {op: classify(op) for op in operations(app)}
    everyone = [(op, need, await callers(client, a, need)) for op, need in matrix]
    before = await reads_of(client, kinds, a)

    allowed_later: list[tuple[Operation, Caller]] = []
    cases = 0
    for op, _, its_callers in everyone:
        for caller in its_callers:
            if caller.allowed:
                allowed_later.append((op, caller))
                continue
            cases += 1
            url = op.url(a.path_values(op))
            with subtests.test(msg=f"{caller.name} may not {op.method} {url}"):
                response = await client.request(
                    op.method, url, headers=caller.headers, json=body_for(app, op, a)
                )
                assert response.status_code == 403, response.text
                assert response.headers["content-type"].startswith("application/problem+json")
    after = await reads_of(client, kinds, a)
    changed = {key for key in before if before[key] != after[key]}
    assert not changed, f"a refused caller changed: {sorted(changed)}"

    for op, caller in allowed_later:
        cases += 1
        url, caller = await allowed_call(tenancy_factory, a, op, caller)
        with subtests.test(msg=f"{caller.name} may {op.method} {url}"):
            response = await client.request(op.method, url, headers=caller.headers, json=body_for(app, op, a))
            assert 200 <= response.status_code < 300, response.text
    assert cases > 200, cases
