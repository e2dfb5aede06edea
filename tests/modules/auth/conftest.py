"""Helpers for auth tests: sign a user up and in through the HTTP API, as a client would."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import httpx
import pytest

from splitstone.kernel.events import EventRecorder
from splitstone.modules.auth.api import UserRegistered

STRONG_PASSWORD = "correct horse battery staple 42"
_counter = itertools.count(1)


@dataclass
class SignedIn:
    user_id: UUID
    email: str
    password: str
    access_token: str
    refresh_token: str
    session_id: UUID

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}


class Users:
    """Creates users through the public API: register, verify (token from the event), log in."""

    def __init__(self, client: httpx.AsyncClient, events: EventRecorder) -> None:
        self.client = client
        self.events = events

    async def register(
        self, email: str | None = None, password: str = STRONG_PASSWORD, **extra: Any
    ) -> UserRegistered:
        email = email or f"user{next(_counter)}@example.com"
        body = {
            "email": email,
            "password": password,
            "display_name": extra.pop("display_name", email.split("@")[0]),
        }
        response = await self.client.post("/api/v1/auth/register", json=body)
        assert response.status_code == 202, response.text
        event = self.events.last(UserRegistered)
        assert event.email == email.lower()
        return event

    async def login(self, email: str, password: str = STRONG_PASSWORD) -> dict[str, Any]:
        response = await self.client.post("/api/v1/auth/login", json={"email": email, "password": password})
        assert response.status_code == 200, response.text
        return dict(response.json())

    async def signed_in(
        self, email: str | None = None, password: str = STRONG_PASSWORD, verify: bool = True
    ) -> SignedIn:
        registered = await self.register(email, password)
        if verify:
            response = await self.client.post(
                "/api/v1/auth/verify-email", json={"token": registered.verification_token}
            )
            assert response.status_code == 200, response.text
        tokens = await self.login(registered.email, password)
        return SignedIn(
            user_id=registered.user_id,
            email=registered.email,
            password=password,
            access_token=tokens["access_token"],
            refresh_token=tokens["refresh_token"],
            session_id=UUID(tokens["session_id"]),
        )


@pytest.fixture
def users(client: httpx.AsyncClient, events: EventRecorder) -> Users:
    return Users(client, events)
