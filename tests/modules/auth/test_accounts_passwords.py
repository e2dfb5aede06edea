"""Passwords over HTTP: change, forgot and reset, and rehashing when the argon2 parameters change."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any
from uuid import UUID

import httpx
import pytest
from sqlalchemy import select

from splitstone.bootstrap import MODULES
from splitstone.kernel.app import create_app
from splitstone.kernel.clock import ManualClock
from splitstone.kernel.container import Container
from splitstone.kernel.events import EventRecorder
from splitstone.kernel.ratelimit import RateLimiter
from splitstone.kernel.settings import ModuleSettings, Settings
from splitstone.modules.auth.api import PasswordChanged, PasswordResetRequested
from splitstone.modules.auth.settings import AuthSettings
from splitstone.modules.auth.storage import users as users_table
from tests.modules.auth.conftest import STRONG_PASSWORD, SignedIn, Users
from tests.modules.auth.org_helpers import assert_problem

AUTH = "/api/v1/auth"
NEW_PASSWORD = "purple elephant juggling tangerines 7"


def cheap(**overrides: Any) -> AuthSettings:
    """Auth settings with the cheapest argon2 parameters (fast tests), plus `overrides`."""
    return AuthSettings(argon2_time_cost=1, argon2_memory_kib=7_168, **overrides)


@pytest.fixture
def module_settings() -> dict[str, ModuleSettings]:
    return {"auth": cheap()}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def login(client: httpx.AsyncClient, email: str, password: str) -> httpx.Response:
    return await client.post(f"{AUTH}/login", json={"email": email, "password": password})


async def refresh(client: httpx.AsyncClient, token: str) -> httpx.Response:
    return await client.post(f"{AUTH}/refresh", json={"refresh_token": token})


async def change(
    client: httpx.AsyncClient, who: SignedIn, current: str = STRONG_PASSWORD, new: str = NEW_PASSWORD
) -> httpx.Response:
    body = {"current_password": current, "new_password": new}
    return await client.post(f"{AUTH}/password", json=body, headers=who.headers)


async def forgot(client: httpx.AsyncClient, events: EventRecorder, email: str) -> str:
    """Ask for a reset link; the token from the event."""
    response = await client.post(f"{AUTH}/password/forgot", json={"email": email})
    assert response.status_code == 202, response.text
    return events.last(PasswordResetRequested).reset_token


async def reset(client: httpx.AsyncClient, token: str, new: str = NEW_PASSWORD) -> httpx.Response:
    return await client.post(f"{AUTH}/password/reset", json={"token": token, "new_password": new})


async def stored_hash(container: Container, user_id: UUID) -> str:
    async with container.databases["auth"].session() as session:
        query = select(users_table.c.password_hash).where(users_table.c.id == user_id)
        return str((await session.execute(query)).scalar_one())


class TestChangePassword:
    async def test_change_keeps_this_session_and_ends_the_others(
        self, client: httpx.AsyncClient, users: Users, events: EventRecorder
    ) -> None:
        ada = await users.signed_in()
        phone = await users.login(ada.email)

        response = await change(client, ada)

        assert response.status_code == 204, response.text
        assert events.last(PasswordChanged).user_id == ada.user_id
        assert (await client.get(f"{AUTH}/me", headers=ada.headers)).status_code == 200
        assert (await refresh(client, ada.refresh_token)).status_code == 200
        assert_problem(await refresh(client, phone["refresh_token"]), 401, "invalid-credentials")
        ended = await client.get(f"{AUTH}/me", headers=bearer(phone["access_token"]))
        assert_problem(ended, 401, "session-ended")
        assert_problem(await login(client, ada.email, STRONG_PASSWORD), 401, "invalid-credentials")
        assert (await login(client, ada.email, NEW_PASSWORD)).status_code == 200

    async def test_wrong_current_password(
        self, client: httpx.AsyncClient, users: Users, events: EventRecorder
    ) -> None:
        ada = await users.signed_in()

        response = await change(client, ada, current="not my password at all")

        body = assert_problem(response, 400, "wrong-password")
        assert "current password" in body["detail"]
        assert events.of_type(PasswordChanged) == []
        assert (await login(client, ada.email, STRONG_PASSWORD)).status_code == 200

    async def test_the_policy_applies(self, client: httpx.AsyncClient, users: Users) -> None:
        ada = await users.signed_in()
        assert_problem(await change(client, ada, new="password1"), 422, "weak-password")
        assert (await login(client, ada.email, STRONG_PASSWORD)).status_code == 200

    async def test_change_invalidates_outstanding_reset_links(
        self, client: httpx.AsyncClient, users: Users, events: EventRecorder
    ) -> None:
        ada = await users.signed_in()
        token = await forgot(client, events, ada.email)

        await change(client, ada)

        assert_problem(await reset(client, token, "yet another fine passphrase 5"), 400, "invalid-token")
        assert (await login(client, ada.email, NEW_PASSWORD)).status_code == 200


class TestForgotAndReset:
    async def test_forgot_answers_alike_and_sends_only_to_accounts(
        self, client: httpx.AsyncClient, users: Users, events: EventRecorder, clock: ManualClock
    ) -> None:
        ada = await users.signed_in()

        known = await client.post(f"{AUTH}/password/forgot", json={"email": ada.email.upper()})
        unknown = await client.post(f"{AUTH}/password/forgot", json={"email": "nobody@example.com"})

        assert known.status_code == unknown.status_code == 202
        assert known.json() == unknown.json()
        [sent] = events.of_type(PasswordResetRequested)
        assert sent.user_id == ada.user_id
        assert sent.email == ada.email
        assert sent.reset_expires_at == clock.now() + timedelta(hours=1)

    async def test_reset_sets_the_password_and_ends_every_session(
        self, client: httpx.AsyncClient, users: Users, events: EventRecorder
    ) -> None:
        ada = await users.signed_in()
        token = await forgot(client, events, ada.email)

        response = await reset(client, token)

        assert response.status_code == 204, response.text
        assert events.last(PasswordChanged).user_id == ada.user_id
        assert_problem(await refresh(client, ada.refresh_token), 401, "invalid-credentials")
        assert_problem(await client.get(f"{AUTH}/me", headers=ada.headers), 401, "session-ended")
        assert_problem(await login(client, ada.email, STRONG_PASSWORD), 401, "invalid-credentials")
        assert (await login(client, ada.email, NEW_PASSWORD)).status_code == 200

    async def test_a_reset_token_works_once(
        self, client: httpx.AsyncClient, users: Users, events: EventRecorder
    ) -> None:
        ada = await users.signed_in()
        token = await forgot(client, events, ada.email)

        assert (await reset(client, token)).status_code == 204
        again = await reset(client, token, "yet another fine passphrase 5")

        assert_problem(again, 400, "invalid-token")
        assert (await login(client, ada.email, NEW_PASSWORD)).status_code == 200

    async def test_one_reset_voids_the_other_links(
        self, client: httpx.AsyncClient, users: Users, events: EventRecorder
    ) -> None:
        ada = await users.signed_in()
        first = await forgot(client, events, ada.email)
        second = await forgot(client, events, ada.email)

        assert (await reset(client, second)).status_code == 204
        assert_problem(await reset(client, first, "yet another fine passphrase 5"), 400, "invalid-token")

    async def test_a_reset_token_expires(
        self, client: httpx.AsyncClient, users: Users, events: EventRecorder, clock: ManualClock
    ) -> None:
        ada = await users.signed_in()
        token = await forgot(client, events, ada.email)

        clock.advance(timedelta(hours=1, seconds=1))

        assert_problem(await reset(client, token), 400, "invalid-token")

    async def test_a_weak_new_password_leaves_the_token_usable(
        self, client: httpx.AsyncClient, users: Users, events: EventRecorder
    ) -> None:
        ada = await users.signed_in()
        token = await forgot(client, events, ada.email)

        assert_problem(await reset(client, token, "password1"), 422, "weak-password")
        assert (await reset(client, token)).status_code == 204

    async def test_an_unknown_token(self, client: httpx.AsyncClient) -> None:
        assert_problem(await reset(client, "no-such-token"), 400, "invalid-token")


class TestForgotRateLimits:
    @pytest.fixture
    def module_settings(self) -> dict[str, ModuleSettings]:
        return {
            "auth": cheap(forgot_password_rate_per_account="2/hour", forgot_password_rate_per_ip="6/hour")
        }

    async def test_per_account_known_or_not(self, client: httpx.AsyncClient, users: Users) -> None:
        ada = await users.signed_in()
        for email in (ada.email, "nobody@example.com"):
            answers = [await client.post(f"{AUTH}/password/forgot", json={"email": email}) for _ in range(3)]
            assert [a.status_code for a in answers] == [202, 202, 429]
            assert int(answers[-1].headers["retry-after"]) > 0

    async def test_per_ip(self, client: httpx.AsyncClient) -> None:
        answers = [
            await client.post(f"{AUTH}/password/forgot", json={"email": f"user{i}@example.com"})
            for i in range(7)
        ]
        assert [a.status_code for a in answers] == [202] * 6 + [429]


@asynccontextmanager
async def app_with(
    container_settings: Settings,
    clock: ManualClock,
    events: EventRecorder,
    auth: AuthSettings,
) -> AsyncIterator[tuple[Container, httpx.AsyncClient]]:
    """A second instance of the app on the same database, with other auth settings (a redeploy)."""
    container = Container.build(
        container_settings,
        MODULES,
        clock=clock,
        recorder=events,
        rate_limiter=RateLimiter("memory://"),
        module_settings={"auth": auth},
    )
    try:
        transport = httpx.ASGITransport(app=create_app(container), client=("203.0.113.7", 4711))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            yield container, http
    finally:
        await container.aclose()


async def test_login_rehashes_when_the_argon2_parameters_change(
    users: Users,
    container: Container,
    settings: Settings,
    clock: ManualClock,
    events: EventRecorder,
) -> None:
    ada = await users.signed_in()
    old_hash = await stored_hash(container, ada.user_id)
    assert "$m=7168,t=1,p=1$" in old_hash

    stronger = AuthSettings(argon2_time_cost=2, argon2_memory_kib=8_192)
    async with app_with(settings, clock, events, stronger) as (redeployed, http):
        assert (await login(http, ada.email, STRONG_PASSWORD)).status_code == 200
        new_hash = await stored_hash(redeployed, ada.user_id)
        assert "$m=8192,t=2,p=1$" in new_hash

        # Once upgraded, a login leaves the hash alone; the password is unchanged throughout.
        assert (await login(http, ada.email, STRONG_PASSWORD)).status_code == 200
        assert await stored_hash(redeployed, ada.user_id) == new_hash
        assert_problem(await login(http, ada.email, "not the password 123"), 401, "invalid-credentials")
    assert events.of_type(PasswordChanged) == []  # a rehash is not a password change
