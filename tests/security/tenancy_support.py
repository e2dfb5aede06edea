"""The route table as a list of operations, what each path parameter names, and tenants to attack.

`operations(app)` reads every route the app serves. Each must be explained by one of the tables below:
public (with the reason), the caller's own account (with the reason), or tenant data reached by ids in
its path, every one of which `RESOURCE_PARAMS` knows how to fill from a `Tenant`. A route none of them
explains makes `classify` raise, so a new route cannot escape the isolation and role matrices.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
from fastapi import FastAPI
from fastapi.routing import iter_route_contexts
from starlette.routing import compile_path

from splitstone.kernel.events import EventRecorder
from splitstone.kernel.messaging.worker import Worker
from splitstone.kernel.settings import ModuleSettings
from splitstone.modules.auth.api import Permission
from splitstone.modules.auth.settings import AuthSettings
from splitstone.modules.billing.settings import BillingSettings
from splitstone.modules.notifications.api import Recipient
from splitstone.modules.notifications.catalog import KINDS
from splitstone.modules.notifications.service import NotificationsService
from splitstone.modules.notifications.settings import NotificationsSettings
from tests.modules.auth.conftest import SignedIn, Users
from tests.modules.auth.org_helpers import add_member, create_api_key, create_org, invite

ADD_TO_TABLE = "add it to tests/security/tenancy_support.py"


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    params: tuple[str, ...]

    @property
    def key(self) -> str:
        return f"{self.method} {self.path}"

    def url(self, values: dict[str, str]) -> str:
        return re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)], self.path)


def operations(app: FastAPI) -> list[Operation]:
    """Every (method, path) the app answers, HEAD left out where GET is there (Starlette adds it)."""
    found: list[Operation] = []
    for route in iter_route_contexts(app.routes):
        path = route.path
        assert path is not None, f"a route without a path: {route!r}"
        methods = set(route.methods or ())
        if "GET" in methods:
            methods.discard("HEAD")
        params = tuple(compile_path(path)[2])
        found += [Operation(method, path, params) for method in sorted(methods)]
    return found


PUBLIC: dict[str, str] = {
    "GET /openapi.json": "the API description",
    "GET /docs": "the API description",
    "GET /docs/oauth2-redirect": "the API description",
    "GET /redoc": "the API description",
    "GET /healthz": "a probe",
    "GET /readyz": "a probe; names no tenant",
    "GET /.well-known/jwks.json": "public keys that verify access tokens",
    "POST /api/v1/auth/register": "sign-up",
    "POST /api/v1/auth/verify-email": "proof is the emailed single-use token",
    "POST /api/v1/auth/verify-email/resend": "answers the same for every address",
    "POST /api/v1/auth/login": "sign-in",
    "POST /api/v1/auth/refresh": "proof is the refresh token",
    "POST /api/v1/auth/password/forgot": "answers the same for every address",
    "POST /api/v1/auth/password/reset": "proof is the emailed single-use token",
    "GET /api/v1/billing/plans": "the public price list",
    "GET /api/v1/billing/plans/{code}": "the public price list",
    "POST /api/v1/billing/webhooks/{provider}": "the payment provider's calls, proved by their signature",
    "GET /api/v1/notifications/kinds": "the catalogue of notification kinds, no tenant data",
    "GET /api/v1/webhooks/event-types": "the catalogue of webhook event types, no tenant data",
    "GET /api/v1/notifications/unsubscribe": "proof is the signed token in the emailed link",
    "POST /api/v1/notifications/unsubscribe": "proof is the signed token in the emailed link",
}

SELF: dict[str, str] = {
    "GET /api/v1/auth/me": "the caller's own profile",
    "PATCH /api/v1/auth/me": "the caller's own profile",
    "POST /api/v1/auth/logout": "ends the caller's own session",
    "GET /api/v1/auth/sessions": "the caller's own sessions",
    "POST /api/v1/auth/password": "the caller's own password",
    "POST /api/v1/orgs": "creates an organization owned by the caller",
    "GET /api/v1/orgs": "the caller's own memberships",
    "POST /api/v1/invitations/accept": "proof is the emailed invitation token",
    "GET /api/v1/notifications": "the caller's own inbox",
    "GET /api/v1/notifications/unread-count": "the caller's own inbox",
    "POST /api/v1/notifications/read-all": "the caller's own inbox",
    "GET /api/v1/notifications/stream": "the caller's own inbox, live",
    "GET /api/v1/notifications/preferences": "the caller's own preferences",
    "PUT /api/v1/notifications/preferences": "the caller's own preferences",
}
"""Operations on the caller's own account: no id in them can name someone else's data."""

PUBLIC_PARAMS = {"code": "pro", "provider": "sandbox"}

RESOURCE_PARAMS: dict[str, str] = {
    "org_id": "org_id",
    "user_id": "member_id",
    "invitation_id": "invitation_id",
    "key_id": "api_key_id",
    "endpoint_id": "endpoint_id",
    "delivery_id": "delivery_id",
    "invoice_id": "invoice_id",
    "project_ref": "project_id",
    "task_ref": "task_id",
    "comment_id": "comment_id",
    "session_id": "session_id",
    "item_id": "inbox_item_id",
    # new-module inserts above this line: RESOURCE_PARAMS
}
"""Path parameter → the `Tenant` attribute that fills it: each is one resource of the tenant."""

STREAMS = {"GET /api/v1/notifications/stream"}
"""Never end for a signed-in reader: only called anonymously."""

USER_OWNED = {"session_id", "item_id"}
"""Resources of a user rather than of an organization (no `org_id` in their paths)."""


class Unclassified(AssertionError):
    pass


def classify(op: Operation) -> str:
    """The kind: "public", "self", "org" (an `{org_id}` path) or "user" (a user's resource by id)."""
    if op.key in PUBLIC:
        return "public"
    if op.key in SELF:
        return "self"
    unknown = [p for p in op.params if p not in RESOURCE_PARAMS]
    if unknown or not op.params:
        why = f"unknown path parameters {', '.join(unknown)}" if unknown else "no id in its path"
        raise Unclassified(
            f"{op.key}: cannot tell whose data this is ({why}); "
            f"{ADD_TO_TABLE}: to PUBLIC or SELF with the reason, or its parameters to RESOURCE_PARAMS "
            "(and a factory in build_tenant)"
        )
    if "org_id" in op.params:
        return "org"
    if set(op.params) <= USER_OWNED:
        return "user"
    raise Unclassified(f"{op.key}: tenant ids without an organization or user owner; {ADD_TO_TABLE}")


@dataclass
class Tenant:
    """An organization with one of everything, created through the API; its owner's own resources too."""

    name: str
    org_id: UUID
    owner: SignedIn
    admin: SignedIn
    member: SignedIn
    colleague: SignedIn
    """Another member: the one whose membership is changed or ended (never the caller's own)."""
    api_key_id: str
    api_key_secret: str
    project_id: str
    project_key: str
    task_id: str
    comment_id: str
    invitation_id: str
    endpoint_id: str
    delivery_id: str
    invoice_id: str
    inbox_item_id: str
    # new-module inserts above this line: Tenant fields
    markers: set[str] = field(default_factory=set)

    @property
    def member_id(self) -> UUID:
        return self.colleague.user_id

    @property
    def session_id(self) -> UUID:
        return self.owner.session_id

    @property
    def key_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key_secret}"}

    def path_values(self, op: Operation, *, org_of: Tenant | None = None) -> dict[str, str]:
        """This tenant's ids for `op`'s parameters; `org_of` puts another tenant's organization in."""
        values = {p: str(getattr(self, RESOURCE_PARAMS[p])) for p in op.params if p in RESOURCE_PARAMS}
        values |= {p: v for p, v in PUBLIC_PARAMS.items() if p in op.params}
        if org_of is not None and "org_id" in values:
            values["org_id"] = str(org_of.org_id)
        return values


BODIES: dict[str, Callable[[Tenant], dict[str, Any]]] = {
    "PATCH /api/v1/orgs/{org_id}": lambda t: {"name": "Renamed by an outsider"},
    "PATCH /api/v1/orgs/{org_id}/members/{user_id}": lambda t: {"role": "admin"},
    "POST /api/v1/orgs/{org_id}/invitations": lambda t: {
        "email": f"spy{next(_unique)}@example.com",
        "role": "member",
    },
    "POST /api/v1/orgs/{org_id}/api-keys": lambda t: {"name": "stolen", "scopes": ["org:read"]},
    "POST /api/v1/orgs/{org_id}/billing/subscription/change": lambda t: {"plan": "pro"},
    "POST /api/v1/orgs/{org_id}/billing/subscription/cancel": lambda t: {"at_period_end": False},
    "PATCH /api/v1/orgs/{org_id}/billing/account": lambda t: {"billing_email": "spy@example.com"},
    "POST /api/v1/orgs/{org_id}/billing/payment-method": lambda t: {"token": "pm_card_visa"},
    "POST /api/v1/orgs/{org_id}/billing/usage": lambda t: {
        "metric": "api_calls",
        "quantity": 1,
        "idempotency_key": f"usage-{next(_unique)}",
    },
    "POST /api/v1/orgs/{org_id}/billing/usage/batch": lambda t: {
        "events": [{"metric": "api_calls", "quantity": 1, "idempotency_key": f"usage-{next(_unique)}"}]
    },
    "POST /api/v1/orgs/{org_id}/webhooks": lambda t: {
        "url": "https://hooks.example.invalid/spy",
        **QUIET_HOOK,
    },
    "PATCH /api/v1/orgs/{org_id}/webhooks/{endpoint_id}": lambda t: {
        "url": "https://hooks.example.invalid/spy"
    },
    "POST /api/v1/orgs/{org_id}/projects": lambda t: {"key": f"SPY{next(_unique)}", "name": "Spy"},
    "PATCH /api/v1/orgs/{org_id}/projects/{project_ref}": lambda t: {"name": "Renamed by an outsider"},
    "POST /api/v1/orgs/{org_id}/projects/{project_ref}/tasks": lambda t: {
        "title": "Planted",
        "assignee_id": str(t.member_id),
    },
    "PATCH /api/v1/orgs/{org_id}/tasks/{task_ref}": lambda t: {"assignee_id": str(t.member_id)},
    "POST /api/v1/orgs/{org_id}/tasks/{task_ref}/move": lambda t: {"project": t.project_id},
    "POST /api/v1/orgs/{org_id}/tasks/{task_ref}/comments": lambda t: {"body": "Planted"},
    "PATCH /api/v1/orgs/{org_id}/tasks/{task_ref}/comments/{comment_id}": lambda t: {"body": "Edited"},
    # new-module inserts above this line: BODIES
}
"""A valid body for each tenant operation that takes one (an invalid one would be refused with 422
before any access check, and prove nothing)."""

_unique = itertools.count(1)

QUIET_HOOK = {"event_types": ["billing.TrialEnding"]}
"""Webhook endpoints here hear one event nothing sends, so settling the worker tries no deliveries
(their hosts, under .invalid, never resolve); a test event reaches them whatever their filter."""


def body_for(app: FastAPI, op: Operation, tenant: Tenant) -> dict[str, Any] | None:
    """`op`'s body with `tenant`'s ids; raises if `op` takes a body that `BODIES` does not give."""
    if op.key in BODIES:
        return BODIES[op.key](tenant)
    operation = app.openapi()["paths"].get(op.path, {}).get(op.method.lower(), {})
    if "requestBody" in operation:
        raise Unclassified(f"{op.key} takes a body; {ADD_TO_TABLE}: a valid one to BODIES")
    return None


def tenancy_module_settings(tmp_path: Path) -> dict[str, ModuleSettings]:
    """Invoices finalized at once, no outgoing sandbox webhooks, mail to files, limits out of the way
    (one client address signs up every user here)."""
    return {
        "auth": AuthSettings(register_rate_per_ip="10000/hour", login_rate_per_ip="10000/minute"),
        "billing": BillingSettings(sandbox_webhook_url=None, invoice_finalize_delay_seconds=0),
        "notifications": NotificationsSettings(email_backend="file", mail_dir=tmp_path / "mail"),
    }


@dataclass
class TenantFactory:
    """Builds tenants through the public API (and the inbox through the notifications service)."""

    client: httpx.AsyncClient
    users: Users
    events: EventRecorder
    worker: Worker
    notifications: NotificationsService

    async def call(self, method: str, url: str, who: SignedIn, expect: int, **kwargs: Any) -> Any:
        response = await self.client.request(method, url, headers=who.headers, **kwargs)
        assert response.status_code == expect, f"{method} {url}: {response.text}"
        return response.json()

    async def member(self, owner: SignedIn, org_id: UUID, role: str) -> SignedIn:
        return await add_member(self.client, self.events, self.users, owner, str(org_id), role)

    async def open_invoice(self, owner: SignedIn, org_id: UUID) -> str:
        """A paid plan started with a declined card: one open invoice (and the plan not started)."""
        billing = f"/api/v1/orgs/{org_id}/billing"
        await self.call("POST", f"{billing}/subscription/change", owner, 200, json={"plan": "pro"})
        await self.call("POST", f"{billing}/subscription/cancel", owner, 200, json={"at_period_end": False})
        declined = {"token": "pm_card_insufficient_funds"}
        await self.call("POST", f"{billing}/payment-method", owner, 200, json=declined)
        await self.call("POST", f"{billing}/subscription/change", owner, 200, json={"plan": "pro"})
        await self.worker.settle()
        page = await self.call("GET", f"{billing}/invoices?status=open", owner, 200)
        return str(page["items"][0]["id"])

    async def paid_plan(self, owner: SignedIn, org_id: UUID) -> str:
        """The pro plan, its first invoice paid after a declined first attempt (room for 50 projects
        and members); that invoice's id."""
        invoice_id = await self.open_invoice(owner, org_id)
        billing = f"/api/v1/orgs/{org_id}/billing"
        await self.call("POST", f"{billing}/payment-method", owner, 200, json={"token": "pm_card_visa"})
        await self.worker.settle()
        subscription = await self.call("GET", f"{billing}/subscription", owner, 200)
        assert (subscription["status"], subscription["effective_plan"]) == ("active", "pro"), subscription
        return invoice_id

    async def tenant(self, name: str) -> Tenant:
        owner = await self.users.signed_in()
        org_id = UUID(await create_org(self.client, owner, f"{name} Corp"))
        await self.worker.settle()  # billing opens the organization's account
        admin = await self.member(owner, org_id, "admin")
        member = await self.member(owner, org_id, "member")
        colleague = await self.member(owner, org_id, "member")
        base = f"/api/v1/orgs/{org_id}"
        key = await create_api_key(
            self.client, owner, str(org_id), name=f"{name} key", scopes=list(Permission)
        )
        project_key = name.upper()[:4]
        project = await self.call(
            "POST",
            f"{base}/projects",
            owner,
            201,
            json={"key": project_key, "name": f"{name} secret project"},
        )
        task = await self.call(
            "POST",
            f"{base}/projects/{project['id']}/tasks",
            owner,
            201,
            json={"title": f"{name} secret task", "assignee_id": str(member.user_id)},
        )
        comment = await self.call(
            "POST", f"{base}/tasks/{task['id']}/comments", owner, 201, json={"body": f"{name} secret comment"}
        )
        invitation, _ = await invite(
            self.client, self.events, owner, str(org_id), f"{name.lower()}-invitee@example.com"
        )
        endpoint = await self.call(
            "POST",
            f"{base}/webhooks",
            owner,
            201,
            json={"url": f"https://hooks.example.invalid/{name.lower()}", **QUIET_HOOK},
        )
        delivery = await self.call("POST", f"{base}/webhooks/{endpoint['id']}/test", owner, 202)
        await self.call(
            "POST",
            f"{base}/billing/usage",
            owner,
            201,
            json={"metric": "api_calls", "quantity": 7, "idempotency_key": f"{name}-usage"},
        )
        invoice_id = await self.paid_plan(owner, org_id)
        kind = KINDS["auth.member_joined"]
        await self.notifications.notify(
            kind.name, [Recipient(user_id=owner.user_id)], dict(kind.example), f"{name}-inbox", org_id
        )
        inbox = await self.call("GET", "/api/v1/notifications", owner, 200)
        tenant = Tenant(
            name=name,
            org_id=org_id,
            owner=owner,
            admin=admin,
            member=member,
            colleague=colleague,
            api_key_id=str(key["id"]),
            api_key_secret=str(key["secret"]),
            project_id=str(project["id"]),
            project_key=project_key,
            task_id=str(task["id"]),
            comment_id=str(comment["id"]),
            invitation_id=str(invitation["id"]),
            endpoint_id=str(endpoint["id"]),
            delivery_id=str(delivery["delivery_id"]),
            invoice_id=invoice_id,
            inbox_item_id=str(inbox["items"][0]["id"]),
        )
        # new-module inserts above this line: tenant resources
        tenant.markers = {
            f"{name} Corp",
            f"{name} secret",
            f"{name} key",
            str(key["prefix"]),
            str(endpoint["secret"]),
            f"hooks.example.invalid/{name.lower()}",
            owner.email,
            admin.email,
            member.email,
            colleague.email,
            *(str(getattr(tenant, attr)) for attr in RESOURCE_PARAMS.values()),
        }
        return tenant


_VOLATILE = {"request_id", "last_used_at"}
"""Fields that change without anyone changing the data: a problem's request id, a key's last use."""


def _stable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _stable(v) for k, v in value.items() if k not in _VOLATILE}
    if isinstance(value, list):
        return [_stable(v) for v in value]
    return value


async def reads_of(client: httpx.AsyncClient, kinds: dict[Operation, str], tenant: Tenant) -> dict[str, Any]:
    """Every read of `tenant`'s data as its owner: what "nothing changed" is checked against."""
    seen: dict[str, Any] = {}
    for op, kind in kinds.items():
        if op.method != "GET" or kind not in ("org", "user", "self") or op.key in STREAMS:
            continue
        response = await client.get(op.url(tenant.path_values(op)), headers=tenant.owner.headers)
        is_json = "json" in response.headers["content-type"]
        seen[op.key] = (response.status_code, _stable(response.json()) if is_json else response.text)
    return seen


def leaked(body: str, tenant: Tenant, url: str) -> list[str]:
    """Which of `tenant`'s markers `body` shows, leaving out the ids the caller itself put in `url`."""
    return sorted(m for m in tenant.markers if m in body and m not in url)
