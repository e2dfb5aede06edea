"""Sessions over HTTP: refresh-token rotation and reuse detection, logout, listing and revoking, expiry."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any
from uuid import uuid4

import httpx
import pytest

from splitstone.kernel.clock import ManualClock
from splitstone.kernel.settings import ModuleSettings
from splitstone.modules.auth.settings import AuthSettings
from tests.modules.auth.conftest import SignedIn, Users
from tests.modules.auth.org_helpers import assert_problem

AUTH = "/api/v1/auth"


@pytest.fixture
def module_settings() -> dict[str, ModuleSettings]:
    return {"auth": AuthSettings(argon2_time_cost=1, argon2_memory_kib=7_168)}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def refresh(client: httpx.AsyncClient, token: str) -> httpx.Response:
    return await client.post(f"{AUTH}/refresh", json={"refresh_token": token})


async def sessions(client: httpx.AsyncClient, who: SignedIn | str) -> list[dict[str, Any]]:
    """The active sessions listed for a signed-in user (or for an access token)."""
    headers = who.headers if isinstance(who, SignedIn) else bearer(who)
    response = await client.get(f"{AUTH}/sessions", headers=headers)
    assert response.status_code == 200, response.text
    return list(response.json()["items"])


class TestRefresh:
    async def test_rotation_gives_a_new_pair_in_the_same_session(
        self, client: httpx.AsyncClient, users: Users
    ) -> None:
        ada = await users.signed_in()

        response = await refresh(client, ada.refresh_token)

        assert response.status_code == 200, response.text
        pair = response.json()
        assert response.headers["cache-control"] == "no-store"
        assert pair["session_id"] == str(ada.session_id)
        assert pair["refresh_token"] != ada.refresh_token
        assert pair["access_token"] != ada.access_token
        me = await client.get(f"{AUTH}/me", headers=bearer(pair["access_token"]))
        assert me.json()["id"] == str(ada.user_id)
        # The chain goes on: the new refresh token rotates too.
        assert (await refresh(client, pair["refresh_token"])).status_code == 200

    async def test_reuse_revokes_the_whole_family(self, client: httpx.AsyncClient, users: Users) -> None:
        ada = await users.signed_in()
        newest = (await refresh(client, ada.refresh_token)).json()

        # Someone presents the already-rotated token (a thief, or the victim after the thief).
        reused = await refresh(client, ada.refresh_token)

        body = assert_problem(reused, 401, "invalid-credentials")
        assert "revoked" in body["detail"]
        assert_problem(await refresh(client, newest["refresh_token"]), 401, "invalid-credentials")
        ended = await client.get(f"{AUTH}/me", headers=bearer(newest["access_token"]))
        assert_problem(ended, 401, "session-ended")

    async def test_reuse_leaves_other_sessions_alone(self, client: httpx.AsyncClient, users: Users) -> None:
        ada = await users.signed_in()
        laptop = await users.login(ada.email)
        await refresh(client, ada.refresh_token)

        await refresh(client, ada.refresh_token)

        assert (await refresh(client, laptop["refresh_token"])).status_code == 200

    async def test_concurrent_use_of_one_token_counts_as_reuse(
        self, client: httpx.AsyncClient, users: Users
    ) -> None:
        ada = await users.signed_in()

        answers = await asyncio.gather(*(refresh(client, ada.refresh_token) for _ in range(3)))

        assert sorted(a.status_code for a in answers) == [200, 401, 401]
        [winner] = [a.json() for a in answers if a.status_code == 200]
        assert_problem(await refresh(client, winner["refresh_token"]), 401, "invalid-credentials")

    async def test_unknown_token(self, client: httpx.AsyncClient) -> None:
        assert_problem(await refresh(client, "no-such-token"), 401, "invalid-credentials")

    async def test_refresh_token_expires_but_use_extends_the_session(
        self, client: httpx.AsyncClient, users: Users, clock: ManualClock
    ) -> None:
        ada = await users.signed_in()
        idle = await users.login(ada.email)

        clock.advance(timedelta(days=20))
        kept_alive = (await refresh(client, ada.refresh_token)).json()
        assert kept_alive["refresh_expires_in"] == 30 * 86_400
        clock.advance(timedelta(days=10, seconds=1))

        assert_problem(await refresh(client, idle["refresh_token"]), 401, "invalid-credentials")
        assert (await refresh(client, kept_alive["refresh_token"])).status_code == 200


class TestAccessTokens:
    async def test_access_token_expires_by_the_clock_and_refresh_renews_it(
        self, client: httpx.AsyncClient, users: Users, clock: ManualClock
    ) -> None:
        ada = await users.signed_in()

        clock.advance(timedelta(minutes=15, seconds=31))
        expired = await client.get(f"{AUTH}/me", headers=ada.headers)
        renewed = (await refresh(client, ada.refresh_token)).json()

        assert_problem(expired, 401, "token-expired")
        assert expired.headers["www-authenticate"].startswith("Bearer")
        assert (await client.get(f"{AUTH}/me", headers=bearer(renewed["access_token"]))).status_code == 200


class TestLogout:
    async def test_logout_ends_this_session_only(self, client: httpx.AsyncClient, users: Users) -> None:
        ada = await users.signed_in()
        phone = await users.login(ada.email)

        response = await client.post(f"{AUTH}/logout", headers=ada.headers)

        assert response.status_code == 204
        assert response.content == b""
        assert_problem(await refresh(client, ada.refresh_token), 401, "invalid-credentials")
        assert_problem(await client.get(f"{AUTH}/me", headers=ada.headers), 401, "session-ended")
        assert (await client.get(f"{AUTH}/me", headers=bearer(phone["access_token"]))).status_code == 200

    async def test_logout_needs_a_token(self, client: httpx.AsyncClient) -> None:
        assert_problem(await client.post(f"{AUTH}/logout"), 401, "not-authenticated")


class TestSessions:
    async def test_list_shows_active_sessions_with_the_current_one_marked(
        self, client: httpx.AsyncClient, users: Users, clock: ManualClock
    ) -> None:
        ada = await users.signed_in()
        clock.advance(timedelta(minutes=1))
        phone = (
            await client.post(
                f"{AUTH}/login",
                json={"email": ada.email, "password": ada.password},
                headers={"User-Agent": "Phone/1.0"},
            )
        ).json()
        gone = await users.login(ada.email)
        await client.post(f"{AUTH}/logout", headers=bearer(gone["access_token"]))

        listed = await sessions(client, ada)

        assert [s["id"] for s in listed] == [phone["session_id"], str(ada.session_id)]  # recent first
        assert [s["current"] for s in listed] == [False, True]
        assert listed[0]["user_agent"] == "Phone/1.0"
        assert listed[0]["ip_address"] == "203.0.113.7"
        assert set(listed[0]) == {
            "id",
            "created_at",
            "last_used_at",
            "expires_at",
            "user_agent",
            "ip_address",
            "current",
        }

    async def test_expired_sessions_are_not_listed(
        self, client: httpx.AsyncClient, users: Users, clock: ManualClock
    ) -> None:
        ada = await users.signed_in()
        clock.advance(timedelta(days=29))
        fresh = await users.login(ada.email)
        clock.advance(timedelta(days=1, seconds=1))

        renewed = (await refresh(client, fresh["refresh_token"])).json()

        listed = await sessions(client, renewed["access_token"])

        assert [s["id"] for s in listed] == [fresh["session_id"]]

    async def test_revoke_one_of_my_sessions(self, client: httpx.AsyncClient, users: Users) -> None:
        ada = await users.signed_in()
        phone = await users.login(ada.email)

        response = await client.delete(f"{AUTH}/sessions/{phone['session_id']}", headers=ada.headers)

        assert response.status_code == 204
        assert [s["id"] for s in await sessions(client, ada)] == [str(ada.session_id)]
        assert_problem(await refresh(client, phone["refresh_token"]), 401, "invalid-credentials")
        again = await client.delete(f"{AUTH}/sessions/{phone['session_id']}", headers=ada.headers)
        assert_problem(again, 404, "session-not-found")

    async def test_another_users_session_is_not_found(self, client: httpx.AsyncClient, users: Users) -> None:
        ada = await users.signed_in()
        bob = await users.signed_in()

        response = await client.delete(f"{AUTH}/sessions/{bob.session_id}", headers=ada.headers)
        unknown = await client.delete(f"{AUTH}/sessions/{uuid4()}", headers=ada.headers)

        # Someone else's session looks exactly like one that does not exist.
        assert_problem(response, 404, "session-not-found")
        assert_problem(unknown, 404, "session-not-found")
        assert (await refresh(client, bob.refresh_token)).status_code == 200

    async def test_revoking_my_current_session_signs_me_out(
        self, client: httpx.AsyncClient, users: Users
    ) -> None:
        ada = await users.signed_in()
        assert (
            await client.delete(f"{AUTH}/sessions/{ada.session_id}", headers=ada.headers)
        ).status_code == 204
        assert_problem(await client.get(f"{AUTH}/me", headers=ada.headers), 401, "session-ended")

    async def test_session_id_must_be_a_uuid(self, client: httpx.AsyncClient, users: Users) -> None:
        ada = await users.signed_in()
        response = await client.delete(f"{AUTH}/sessions/not-a-uuid", headers=ada.headers)
        assert_problem(response, 422, "validation-error")
