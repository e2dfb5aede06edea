"""The account parts of auth's contract (what other modules and the operator CLI call), in process."""

from __future__ import annotations

from uuid import uuid4

import httpx
import pytest

from splitstone.kernel.container import Container
from splitstone.kernel.events import EventRecorder
from splitstone.kernel.settings import ModuleSettings
from splitstone.modules.auth.accounts import EmailTaken
from splitstone.modules.auth.api import UserNotFound
from splitstone.modules.auth.passwords import WeakPassword
from splitstone.modules.auth.service import AuthService
from splitstone.modules.auth.settings import AuthSettings
from tests.modules.auth.conftest import STRONG_PASSWORD, Users


@pytest.fixture
def module_settings() -> dict[str, ModuleSettings]:
    return {"auth": AuthSettings(argon2_time_cost=1, argon2_memory_kib=7_168)}


@pytest.fixture
def auth(container: Container) -> AuthService:
    service = container.implementations["auth"]
    assert isinstance(service, AuthService)
    return service


async def test_get_user(auth: AuthService, users: Users) -> None:
    ada = await users.signed_in()

    user = await auth.get_user(ada.user_id)

    assert user.id == ada.user_id
    assert user.email == ada.email
    assert user.email_verified is True


async def test_get_unknown_user(auth: AuthService) -> None:
    with pytest.raises(UserNotFound):
        await auth.get_user(uuid4())


async def test_get_users_returns_those_that_exist(auth: AuthService, users: Users) -> None:
    ada = await users.signed_in()
    bob = await users.signed_in()

    found = await auth.get_users([ada.user_id, uuid4(), bob.user_id, ada.user_id])

    assert sorted(u.email for u in found) == sorted([ada.email, bob.email])
    assert await auth.get_users([]) == []


async def test_create_user_for_the_operator(
    auth: AuthService, client: httpx.AsyncClient, events: EventRecorder
) -> None:
    user = await auth.accounts.create_user(
        email=" Root@Example.com ", password=STRONG_PASSWORD, display_name=" Root ", verified=True
    )

    assert user.email == "root@example.com"
    assert user.display_name == "Root"
    assert user.email_verified is True
    assert events.published == []  # nothing to deliver: the operator knows the password
    login = {"email": "root@example.com", "password": STRONG_PASSWORD}
    assert (await client.post("/api/v1/auth/login", json=login)).status_code == 200


async def test_create_user_refuses_a_taken_address_and_weak_passwords(auth: AuthService) -> None:
    await auth.accounts.create_user(
        email="root@example.com", password=STRONG_PASSWORD, display_name="Root", verified=False
    )

    with pytest.raises(EmailTaken, match=r"root@example\.com"):
        await auth.accounts.create_user(
            email="ROOT@example.com", password=STRONG_PASSWORD, display_name="Root", verified=False
        )
    with pytest.raises(WeakPassword):
        await auth.accounts.create_user(
            email="other@example.com", password="password", display_name="Other", verified=False
        )
