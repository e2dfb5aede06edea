"""Fixtures of the security suite. Tenancy's (`tenancy_*`) build tenants through the public API."""

from __future__ import annotations

import httpx
import pytest

from splitstone.kernel.container import Container
from splitstone.kernel.events import EventRecorder
from splitstone.modules.notifications.service import NotificationsService
from tests.modules.auth.conftest import Users
from tests.security.tenancy_support import TenantFactory


@pytest.fixture
def tenancy_factory(client: httpx.AsyncClient, container: Container, events: EventRecorder) -> TenantFactory:
    """Builds tenants with one of everything. Tests using it override `module_settings` with
    `tenancy_module_settings` (rate limits out of the way, invoices at once)."""
    notifications = container.implementations["notifications"]
    assert isinstance(notifications, NotificationsService)
    return TenantFactory(client, Users(client, events), events, container.worker(), notifications)
