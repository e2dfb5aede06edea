"""Fixtures for notifications tests: the module's settings, its service, users, and the worker."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from splitstone.kernel.container import Container
from splitstone.kernel.events import EventRecorder
from splitstone.kernel.messaging.worker import Worker
from splitstone.kernel.settings import ModuleSettings
from splitstone.modules.notifications.service import NotificationsService
from splitstone.modules.notifications.settings import NotificationsSettings
from tests.modules.auth.conftest import Users


@pytest.fixture
def mail_dir(tmp_path: Path) -> Path:
    return tmp_path / "mail"


@pytest.fixture
def notifications_settings(mail_dir: Path) -> NotificationsSettings:
    """Files for email, and webhooks allowed to reach the test's loopback receivers."""
    return NotificationsSettings(email_backend="file", mail_dir=mail_dir, webhook_allow_private_targets=True)


@pytest.fixture
def module_settings(notifications_settings: NotificationsSettings) -> dict[str, ModuleSettings]:
    return {"notifications": notifications_settings}


@pytest.fixture
def notifications(container: Container) -> NotificationsService:
    service = container.implementations["notifications"]
    assert isinstance(service, NotificationsService)
    return service


@pytest.fixture
def worker(container: Container) -> Worker:
    """Not started: call `await worker.settle()` to relay, handle and run everything due now."""
    return container.worker()


@pytest.fixture
def users(client: httpx.AsyncClient, events: EventRecorder) -> Users:
    return Users(client, events)
