"""Accounts over HTTP: registration, email verification, login, the profile, and what must not leak."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from pydantic import SecretStr

from splitstone.kernel.clock import ManualClock
from splitstone.kernel.events import EventRecorder
from splitstone.kernel.settings import Environment, ModuleSettings, Settings
from splitstone.modules.auth.api import EmailVerificationRequested, EmailVerified, UserRegistered
from splitstone.modules.auth.settings import AuthSettings
from splitstone.modules.auth.tokens import generate_signing_key_pem
from splitstone.modules.billing.settings import BillingSettings
from splitstone.modules.notifications.settings import NotificationsSettings
from tests.modules.auth.conftest import STRONG_PASSWORD, Users
from tests.modules.auth.org_helpers import assert_problem, create_api_key, create_org

AUTH = "/api/v1/auth"


def cheap(**overrides: Any) -> dict[str, ModuleSettings]:
    """Auth settings with the cheapest argon2 parameters (fast tests), plus `overrides`."""
    return {"auth": AuthSettings(argon2_time_cost=1, argon2_memory_kib=7_168, **overrides)}


@pytest.fixture
def module_settings() -> dict[str, ModuleSettings]:
    return cheap()


def without_request_id(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k != "request_id"}


async def register(client: httpx.AsyncClient, email: str, password: str = STRONG_PASSWORD) -> httpx.Response:
    body = {"email": email, "password": password, "display_name": "Ada Lovelace"}
    return await client.post(f"{AUTH}/register", json=body)


async def login(client: httpx.AsyncClient, email: str, password: str = STRONG_PASSWORD) -> httpx.Response:
    return await client.post(f"{AUTH}/login", json={"email": email, "password": password})


class TestRegistration:
    async def test_register_verify_login_and_me(
        self, client: httpx.AsyncClient, users: Users, events: EventRecorder, clock: ManualClock
    ) -> None:
        response = await register(client, "ada@example.com")

        assert response.status_code == 202
        assert "verify" in response.json()["detail"]
        registered = events.last(UserRegistered)
        assert registered.email == "ada@example.com"
        assert registered.display_name == "Ada Lovelace"
        assert registered.verification_expires_at == clock.now() + timedelta(hours=48)

        verified = await client.post(f"{AUTH}/verify-email", json={"token": registered.verification_token})
        assert verified.status_code == 200, verified.text
        assert verified.json()["email_verified"] is True
        assert events.last(EmailVerified).user_id == registered.user_id

        tokens = (await login(client, "ada@example.com")).json()
        me = await client.get(f"{AUTH}/me", headers={"Authorization": f"Bearer {tokens['access_token']}"})
        assert me.status_code == 200
        assert me.json() == {
            "id": str(registered.user_id),
            "email": "ada@example.com",
            "display_name": "Ada Lovelace",
            "email_verified": True,
            "created_at": clock.now().isoformat().replace("+00:00", "Z"),
        }

    async def test_email_is_normalised(self, client: httpx.AsyncClient, events: EventRecorder) -> None:
        await register(client, "  Ada.Lovelace@Example.COM ")

        assert events.last(UserRegistered).email == "ada.lovelace@example.com"
        assert (await login(client, "ADA.LOVELACE@example.com")).status_code == 200

    async def test_a_taken_address_gets_the_same_answer_and_no_event(
        self, client: httpx.AsyncClient, events: EventRecorder
    ) -> None:
        first = await register(client, "ada@example.com")
        published = len(events.published)

        again = await register(client, "ADA@example.com", password="another strong passphrase 77")

        assert again.status_code == first.status_code == 202
        assert again.json() == first.json()
        assert len(events.published) == published
        # The first registration's password still holds; the second one changed nothing.
        assert (await login(client, "ada@example.com")).status_code == 200
        assert (await login(client, "ada@example.com", "another strong passphrase 77")).status_code == 401

    @pytest.mark.parametrize(
        ("password", "hint"),
        [("short", "at least 8 characters"), ("password123", "common"), ("adalovelace2030", "guess")],
    )
    async def test_weak_password_is_refused_with_its_code(
        self, client: httpx.AsyncClient, events: EventRecorder, password: str, hint: str
    ) -> None:
        response = await register(client, "ada.lovelace@example.com", password)

        body = assert_problem(response, 422, "weak-password")
        assert hint in body["detail"]
        assert events.of_type(UserRegistered) == []

    async def test_overlong_password_is_refused_before_hashing(self, client: httpx.AsyncClient) -> None:
        response = await register(client, "ada@example.com", "x" * 1025)
        body = assert_problem(response, 422, "validation-error")
        assert body["errors"][0]["loc"] == ["body", "password"]

    @pytest.mark.parametrize(
        "body",
        [
            {"email": "not-an-email", "password": STRONG_PASSWORD, "display_name": "Ada"},
            {"email": "ada@example.com", "password": STRONG_PASSWORD, "display_name": "   "},
            {"email": "ada@example.com", "password": STRONG_PASSWORD, "display_name": "x" * 201},
            {"email": "ada@example.com", "password": STRONG_PASSWORD},
            {"email": "ada@example.com", "password": STRONG_PASSWORD, "display_name": "Ada", "admin": True},
        ],
    )
    async def test_invalid_registrations_are_validation_errors(
        self, client: httpx.AsyncClient, body: dict[str, Any]
    ) -> None:
        assert_problem(await client.post(f"{AUTH}/register", json=body), 422, "validation-error")

    async def test_display_name_is_trimmed(self, client: httpx.AsyncClient, events: EventRecorder) -> None:
        body = {"email": "ada@example.com", "password": STRONG_PASSWORD, "display_name": "  Ada  "}
        await client.post(f"{AUTH}/register", json=body)
        assert events.last(UserRegistered).display_name == "Ada"


class TestEmailVerification:
    async def test_a_token_works_once(self, client: httpx.AsyncClient, users: Users) -> None:
        registered = await users.register()
        body = {"token": registered.verification_token}

        assert (await client.post(f"{AUTH}/verify-email", json=body)).status_code == 200
        again = await client.post(f"{AUTH}/verify-email", json=body)

        assert_problem(again, 400, "invalid-token")

    async def test_a_token_expires(self, client: httpx.AsyncClient, users: Users, clock: ManualClock) -> None:
        early = await users.register()
        late = await users.register()

        clock.advance(timedelta(hours=48) - timedelta(seconds=1))
        ok = await client.post(f"{AUTH}/verify-email", json={"token": early.verification_token})
        clock.advance(timedelta(seconds=1))
        expired = await client.post(f"{AUTH}/verify-email", json={"token": late.verification_token})

        assert ok.status_code == 200
        body = assert_problem(expired, 400, "invalid-token")
        assert "expired" in body["detail"]

    async def test_an_unknown_token_is_invalid(self, client: httpx.AsyncClient) -> None:
        response = await client.post(f"{AUTH}/verify-email", json={"token": "no-such-token"})
        assert_problem(response, 400, "invalid-token")

    async def test_verifying_publishes_once(
        self, client: httpx.AsyncClient, users: Users, events: EventRecorder
    ) -> None:
        registered = await users.register()
        await client.post(f"{AUTH}/verify-email/resend", json={"email": registered.email})
        second_token = events.last(EmailVerificationRequested).verification_token

        await client.post(f"{AUTH}/verify-email", json={"token": registered.verification_token})
        response = await client.post(f"{AUTH}/verify-email", json={"token": second_token})

        assert response.status_code == 200  # a second valid link still works, harmlessly
        assert len(events.of_type(EmailVerified)) == 1

    async def test_resend_answers_alike_and_sends_only_to_unverified_accounts(
        self, client: httpx.AsyncClient, users: Users, events: EventRecorder
    ) -> None:
        unverified = await users.register()
        verified = await users.signed_in()

        answers = [
            await client.post(f"{AUTH}/verify-email/resend", json={"email": email})
            for email in (unverified.email.upper(), verified.email, "nobody@example.com")
        ]

        assert {a.status_code for a in answers} == {202}
        assert len({a.text for a in answers}) == 1
        [sent] = events.of_type(EmailVerificationRequested)
        assert sent.user_id == unverified.user_id
        assert sent.verification_token != unverified.verification_token
        response = await client.post(f"{AUTH}/verify-email", json={"token": sent.verification_token})
        assert response.json()["email_verified"] is True


class TestLogin:
    async def test_wrong_password_and_unknown_email_look_the_same(
        self, client: httpx.AsyncClient, users: Users
    ) -> None:
        ada = await users.signed_in()

        wrong_password = await login(client, ada.email, "not the right password 99")
        unknown_email = await login(client, "nobody@example.com", "not the right password 99")

        assert wrong_password.status_code == unknown_email.status_code == 401
        assert without_request_id(wrong_password.json()) == without_request_id(unknown_email.json())
        assert wrong_password.json()["code"] == "invalid-credentials"
        assert wrong_password.headers["www-authenticate"] == unknown_email.headers["www-authenticate"]

    async def test_login_answers_a_token_pair(
        self, client: httpx.AsyncClient, users: Users, clock: ManualClock
    ) -> None:
        ada = await users.signed_in()

        response = await login(client, ada.email)

        body = response.json()
        assert response.headers["cache-control"] == "no-store"
        assert body["token_type"] == "bearer"
        assert body["expires_in"] == 900
        assert body["refresh_expires_in"] == 30 * 86_400
        assert body["refresh_token"] != ada.refresh_token
        assert body["session_id"] != str(ada.session_id)  # every login is a new session

    async def test_jwks_verifies_what_login_issues(self, client: httpx.AsyncClient, users: Users) -> None:
        ada = await users.signed_in()
        jwks = (await client.get("/.well-known/jwks.json")).json()

        header = jwt.get_unverified_header(ada.access_token)
        assert [key["kid"] for key in jwks["keys"]] == [header["kid"]]

    async def test_unverified_users_may_sign_in_by_default(self, users: Users) -> None:
        await users.signed_in(verify=False)


class TestRequireVerifiedEmail:
    @pytest.fixture
    def module_settings(self) -> dict[str, ModuleSettings]:
        return cheap(require_verified_email=True)

    async def test_unverified_login_is_refused_after_the_password_checks_out(
        self, client: httpx.AsyncClient, users: Users
    ) -> None:
        registered = await users.register()

        wrong = await login(client, registered.email, "not the right password 99")
        right = await login(client, registered.email)

        assert_problem(wrong, 401, "invalid-credentials")  # no hint that the account exists
        body = assert_problem(right, 403, "email-not-verified")
        assert "verify-email/resend" in body["detail"]

        await client.post(f"{AUTH}/verify-email", json={"token": registered.verification_token})
        assert (await login(client, registered.email)).status_code == 200


class TestProductionRequiresAVerifiedEmail:
    @pytest.fixture
    def settings(self, database_url: str, tmp_path: Path) -> Settings:
        return Settings(env=Environment.PRODUCTION, data_dir=tmp_path / "data", database_url=database_url)

    @pytest.fixture
    def module_settings(self) -> dict[str, ModuleSettings]:
        # Production generates no secrets: they are given, as an operator would.
        return {
            **cheap(jwt_private_key=SecretStr(generate_signing_key_pem())),
            "notifications": NotificationsSettings(link_secret=SecretStr("a production link secret")),
            "billing": BillingSettings(sandbox_webhook_secret=SecretStr("whsec_a production sandbox secret")),
        }

    async def test_by_default(self, client: httpx.AsyncClient, users: Users) -> None:
        registered = await users.register()

        assert_problem(await login(client, registered.email), 403, "email-not-verified")
        await client.post(f"{AUTH}/verify-email", json={"token": registered.verification_token})
        assert (await login(client, registered.email)).status_code == 200


class TestRateLimits:
    @pytest.fixture
    def module_settings(self) -> dict[str, ModuleSettings]:
        return cheap(
            login_rate_per_account="3/minute",
            login_rate_per_ip="6/minute",
            register_rate_per_ip="4/hour",
            verification_resend_rate_per_account="2/hour",
        )

    async def test_failed_logins_per_account(self, client: httpx.AsyncClient, users: Users) -> None:
        ada = await users.signed_in()  # one login counted

        failures = [await login(client, ada.email, "wrong password 1234") for _ in range(2)]
        limited = await login(client, ada.email)  # even the right password, now

        assert [f.status_code for f in failures] == [401, 401]
        assert_problem(limited, 429, "rate-limited")
        assert 0 < int(limited.headers["retry-after"]) <= 60

    async def test_the_account_limit_applies_to_unknown_addresses_alike(
        self, client: httpx.AsyncClient
    ) -> None:
        answers = [await login(client, "Nobody@example.com", "wrong password 1234") for _ in range(4)]
        assert [a.status_code for a in answers] == [401, 401, 401, 429]

    async def test_logins_per_ip(self, client: httpx.AsyncClient) -> None:
        answers = [await login(client, f"user{i}@example.com", "wrong password 1234") for i in range(7)]
        assert [a.status_code for a in answers] == [401] * 6 + [429]
        assert "retry-after" in answers[-1].headers

    async def test_registrations_per_ip(self, client: httpx.AsyncClient) -> None:
        answers = [await register(client, f"user{i}@example.com") for i in range(5)]
        assert [a.status_code for a in answers] == [202] * 4 + [429]
        assert int(answers[-1].headers["retry-after"]) > 0

    async def test_verification_resends_per_account(self, client: httpx.AsyncClient) -> None:
        answers = [
            await client.post(f"{AUTH}/verify-email/resend", json={"email": "ada@example.com"})
            for _ in range(3)
        ]
        assert [a.status_code for a in answers] == [202, 202, 429]


class TestProfile:
    async def test_update_display_name(self, client: httpx.AsyncClient, users: Users) -> None:
        ada = await users.signed_in()

        response = await client.patch(
            f"{AUTH}/me", json={"display_name": "  Countess  "}, headers=ada.headers
        )

        assert response.status_code == 200
        assert response.json()["display_name"] == "Countess"
        assert (await client.get(f"{AUTH}/me", headers=ada.headers)).json()["display_name"] == "Countess"

    async def test_invalid_display_name(self, client: httpx.AsyncClient, users: Users) -> None:
        ada = await users.signed_in()
        response = await client.patch(f"{AUTH}/me", json={"display_name": ""}, headers=ada.headers)
        assert_problem(response, 422, "validation-error")

    async def test_me_needs_a_token(self, client: httpx.AsyncClient) -> None:
        missing = await client.get(f"{AUTH}/me")
        garbage = await client.get(f"{AUTH}/me", headers={"Authorization": "Bearer not-a-token"})

        assert_problem(missing, 401, "not-authenticated")
        assert_problem(garbage, 401, "invalid-credentials")

    @pytest.mark.parametrize(
        ("method", "path", "body"),
        [
            ("GET", "/me", None),
            ("PATCH", "/me", {"display_name": "Bot"}),
            ("GET", "/sessions", None),
            ("POST", "/logout", None),
            ("POST", "/password", {"current_password": "x", "new_password": STRONG_PASSWORD}),
        ],
    )
    async def test_an_api_key_is_not_a_user(
        self, client: httpx.AsyncClient, users: Users, method: str, path: str, body: Any
    ) -> None:
        owner = await users.signed_in()
        key = await create_api_key(client, owner, await create_org(client, owner))

        response = await client.request(
            method, f"{AUTH}{path}", json=body, headers={"Authorization": f"Bearer {key['secret']}"}
        )

        problem = assert_problem(response, 403, "user-required")
        assert "API key" in problem["detail"]


async def test_openapi_documents_the_account_routes(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    paths = schema["paths"]

    for path in (
        "register",
        "verify-email",
        "verify-email/resend",
        "login",
        "refresh",
        "logout",
        "me",
        "sessions",
        "sessions/{session_id}",
        "password",
        "password/forgot",
        "password/reset",
    ):
        assert f"{AUTH}/{path}" in paths, path
    assert "202" in paths[f"{AUTH}/register"]["post"]["responses"]
    assert paths[f"{AUTH}/me"]["get"]["tags"] == ["auth"]
    assert paths[f"{AUTH}/me"]["get"]["security"]
    register_body = schema["components"]["schemas"]["RegisterRequest"]["properties"]
    assert register_body["email"]["maxLength"] == 320
    assert register_body["display_name"]["maxLength"] == 200
