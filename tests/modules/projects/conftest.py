"""Fixtures for projects tests: users, the worker, the service, organizations and projects.

`await new_org()` gives an organization with a signed-in owner whose billing account is open on the
free plan (billing opens it when the worker handles `auth.OrganizationCreated`); `await org.member()`
adds a member through an invitation; `await make_project(client, org)` creates a project.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import httpx
import pytest

from splitstone.kernel.container import Container
from splitstone.kernel.events import EventRecorder
from splitstone.kernel.messaging.worker import Worker
from splitstone.kernel.settings import ModuleSettings
from splitstone.modules.billing.settings import BillingSettings
from splitstone.modules.projects.service import ProjectsService
from tests.modules.auth.conftest import SignedIn, Users
from tests.modules.auth.org_helpers import add_member, create_org


@pytest.fixture
def module_settings() -> dict[str, ModuleSettings]:
    """The billing sandbox posts no webhooks (nothing listens in tests)."""
    return {"billing": BillingSettings(sandbox_webhook_url=None, invoice_finalize_delay_seconds=0)}


@pytest.fixture
def users(client: httpx.AsyncClient, events: EventRecorder) -> Users:
    return Users(client, events)


@pytest.fixture
def worker(container: Container) -> Worker:
    """Not started: call `await worker.settle()` to relay, handle and run everything due now."""
    return container.worker()


@pytest.fixture
def projects(container: Container) -> ProjectsService:
    service = container.implementations["projects"]
    assert isinstance(service, ProjectsService)
    return service


@dataclass
class Org:
    """An organization with its signed-in owner; `member()` adds another user with a role."""

    id: UUID
    owner: SignedIn
    users: Users
    client: httpx.AsyncClient
    events: EventRecorder

    @property
    def base(self) -> str:
        return f"/api/v1/orgs/{self.id}"

    async def member(self, role: str = "member") -> SignedIn:
        """A new signed-in user who joined this organization with `role` by accepting an invitation."""
        return await add_member(self.client, self.events, self.users, self.owner, str(self.id), role)


NewOrg = Callable[..., Awaitable[Org]]


@pytest.fixture
def new_org(client: httpx.AsyncClient, users: Users, events: EventRecorder, worker: Worker) -> NewOrg:
    """`await new_org(name="Acme")`: an organization, its billing account opened on the free plan."""

    async def make(name: str = "Acme") -> Org:
        owner = await users.signed_in()
        org_id = UUID(await create_org(client, owner, name))
        await worker.settle()
        return Org(id=org_id, owner=owner, users=users, client=client, events=events)

    return make


async def make_project(
    client: httpx.AsyncClient,
    org: Org,
    key: str = "WEB",
    name: str = "Website",
    *,
    by: SignedIn | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Create a project as the owner (or `by`); returns its JSON representation."""
    response = await client.post(
        f"{org.base}/projects",
        json={"key": key, "name": name, **extra},
        headers=(by or org.owner).headers,
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body
