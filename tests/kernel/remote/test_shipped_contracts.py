"""The four shipped contracts travel: each is described, served by fakes and called through its client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import httpx
import pytest
from fastapi import FastAPI
from uuid6 import uuid7

from splitstone.bootstrap import MODULES
from splitstone.kernel.container import _check_implements
from splitstone.kernel.contracts import describe
from splitstone.kernel.http.problems import install_problem_handlers
from splitstone.kernel.remote import RemoteContracts, internal_router
from splitstone.modules.auth.api import (
    Access,
    AuthApi,
    OrganizationNotFound,
    Permission,
    Principal,
    Role,
)
from splitstone.modules.billing.api import BillingApi, Entitlement, EntitlementExceeded, UsageRecord
from splitstone.modules.notifications.api import (
    Channel,
    Delivery,
    DeliveryStatus,
    NotificationsApi,
    NotifyResult,
    Recipient,
)
from splitstone.modules.projects.api import ProjectsApi
from tests.kernel.remote.conftest import CALLER, TOKEN

BASE_URL = "http://peer.internal"
HIDDEN_ORG = uuid7()


class FakeAuth(AuthApi):
    def __init__(self) -> None:
        self.principals: list[Principal] = []

    async def authorize(self, principal: Principal, org_id: UUID, permission: Permission) -> Access:
        self.principals.append(principal)
        if org_id == HIDDEN_ORG:
            raise OrganizationNotFound(f"No organization {org_id}.")
        return Access(
            org_id=org_id, principal=principal, role=Role.ADMIN, permissions=frozenset({permission})
        )


class FakeBilling(BillingApi):
    async def require_entitlement(
        self, org_id: UUID, key: str, requested: int = 1, current: int | None = None
    ) -> Entitlement:
        raise EntitlementExceeded(
            f"The free plan allows 3 {key}.",
            key=key,
            limit=3,
            used=current,
            requested=requested,
            plan="free",
            upgrade_plans=["pro"],
            upgrade_url="/billing/plans",
        )

    async def record_usage(
        self,
        org_id: UUID,
        metric: str,
        quantity: int,
        idempotency_key: str,
        occurred_at: datetime | None = None,
        unique_value: str | None = None,
    ) -> UsageRecord:
        now = datetime(2025, 3, 1, tzinfo=UTC)
        return UsageRecord(
            id=uuid7(),
            org_id=org_id,
            metric=metric,
            quantity=quantity,
            unique_value=unique_value,
            idempotency_key=idempotency_key,
            occurred_at=occurred_at or now,
            recorded_at=now,
        )


class FakeNotifications(NotificationsApi):
    async def notify(
        self,
        kind: str,
        recipients: list[Recipient],
        data: dict[str, Any],
        idempotency_key: str,
        org_id: UUID | None = None,
    ) -> NotifyResult:
        deliveries = [
            Delivery(
                id=uuid7(),
                channel=Channel.EMAIL,
                user_id=r.user_id,
                address=f"{r.email}|{data['greeting']}",
                status=DeliveryStatus.QUEUED,
            )
            for r in recipients
        ]
        return NotifyResult(notification_id=uuid7(), duplicate=False, deliveries=deliveries)


class FakeProjects(ProjectsApi):
    async def count_projects(self, org_id: UUID) -> int:
        return 4


@pytest.fixture
def auth() -> FakeAuth:
    return FakeAuth()


@pytest.fixture
async def clients(auth: FakeAuth) -> AsyncIterator[dict[str, Any]]:
    """A client of each shipped contract, against one application serving all four fakes."""
    fakes: dict[str, tuple[type, object]] = {
        "auth": (AuthApi, auth),
        "billing": (BillingApi, FakeBilling()),
        "notifications": (NotificationsApi, FakeNotifications()),
        "projects": (ProjectsApi, FakeProjects()),
    }
    app = FastAPI()
    install_problem_handlers(app)
    for module, (protocol, fake) in fakes.items():
        app.include_router(internal_router(module, protocol, fake, service_token=TOKEN))
    remote = RemoteContracts(
        service_token=TOKEN,
        caller=CALLER,
        connect_timeout=1,
        timeout=5,
        retries=0,
        transport=httpx.ASGITransport(app=app),
    )
    yield {module: remote.client(protocol, module, BASE_URL) for module, (protocol, _) in fakes.items()}
    await remote.aclose()


def test_every_shipped_contract_can_travel() -> None:
    for module in MODULES:
        description = describe(module.contract)
        assert description.operations, module.name
        assert description.version >= 1


async def test_each_generated_client_implements_its_module(clients: dict[str, Any]) -> None:
    by_name = {module.name: module for module in MODULES}
    for name, client in clients.items():
        _check_implements(by_name[name], client)


def test_a_principal_travels_as_an_argument_of_authorize() -> None:
    principal = Principal(
        kind="api_key",
        api_key_id=uuid7(),
        org_id=uuid7(),
        scopes=frozenset({Permission.TASKS_READ, Permission.USAGE_WRITE}),
    )
    arguments = describe(AuthApi).operations["authorize"].bind((principal, uuid7(), Permission.ORG_READ), {})

    again = type(arguments).model_validate_json(arguments.model_dump_json())

    assert again == arguments
    assert again.principal == principal  # type: ignore[attr-defined]
    assert isinstance(again.principal, Principal)  # type: ignore[attr-defined]


async def test_auth_authorize(clients: dict[str, Any], auth: FakeAuth) -> None:
    principal = Principal(kind="user", user_id=uuid7(), session_id=uuid7())
    org_id = uuid7()

    access = await clients["auth"].authorize(principal, org_id, Permission.PROJECTS_MANAGE)

    assert access == Access(
        org_id=org_id,
        principal=principal,
        role=Role.ADMIN,
        permissions=frozenset({Permission.PROJECTS_MANAGE}),
    )
    assert auth.principals == [principal]
    with pytest.raises(OrganizationNotFound, match="No organization"):
        await clients["auth"].authorize(principal, HIDDEN_ORG, "org:read")


async def test_billing_record_usage_and_entitlement_errors(clients: dict[str, Any]) -> None:
    org_id = uuid7()
    record = await clients["billing"].record_usage(org_id, "tasks", 2, idempotency_key="task:1")
    assert (record.org_id, record.metric, record.quantity, record.idempotency_key) == (
        org_id,
        "tasks",
        2,
        "task:1",
    )
    assert record.occurred_at == datetime(2025, 3, 1, tzinfo=UTC)

    with pytest.raises(EntitlementExceeded) as raised:
        await clients["billing"].require_entitlement(org_id, "projects", current=3)
    assert type(raised.value) is EntitlementExceeded
    assert raised.value.extra == {
        "key": "projects",
        "limit": 3,
        "used": 3,
        "requested": 1,
        "plan": "free",
        "upgrade_plans": ["pro"],
        "upgrade_url": "/billing/plans",
    }


async def test_notifications_notify(clients: dict[str, Any]) -> None:
    result = await clients["notifications"].notify(
        "welcome", [Recipient(email="ada@example.com")], {"greeting": "Hello"}, idempotency_key="k1"
    )
    assert isinstance(result, NotifyResult)
    assert [d.address for d in result.deliveries] == ["ada@example.com|Hello"]


async def test_projects_count_projects(clients: dict[str, Any]) -> None:
    assert await clients["projects"].count_projects(uuid7()) == 4
