"""Two organizations with a signed-in owner each, made through the public API as a client would."""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass, field
from typing import Any

from requests import Session

from splitstone.kernel.events import EventRecorder
from splitstone.modules.auth.api import UserRegistered

PASSWORD = "correct horse battery staple 42"
_numbers = itertools.count(1)
ORG_OF_TOKEN: dict[str, str] = {}
"""Which organization each access token handed out here belongs to (for the cross-tenant check)."""


@dataclass
class Tenant:
    """An organization and its owner; `token()` signs in again once a fuzzed call ended the session."""

    http: Session
    email: str
    org_id: str
    _token: str | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def token(self) -> str:
        with self._lock:
            if self._token is None:
                self._token = login(self.http, self.email)
                ORG_OF_TOKEN[self._token] = self.org_id
            return self._token

    def forget_token(self) -> None:
        with self._lock:
            self._token = None

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token()}"}


def login(http: Session, email: str) -> str:
    response = http.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD})
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def sign_up(http: Session, events: EventRecorder, name: str) -> Tenant:
    """Register, verify the address (token from the event, as the email would carry it), sign in,
    create an organization."""
    email = f"{name}{next(_numbers)}@example.com"
    _post(http, "/api/v1/auth/register", 202, {"email": email, "password": PASSWORD, "display_name": name})
    token = events.last(UserRegistered).verification_token
    _post(http, "/api/v1/auth/verify-email", 200, {"token": token})
    owner = Tenant(http=http, email=email, org_id="")
    org = _post(http, "/api/v1/orgs", 201, {"name": name.title()}, headers=owner.headers)
    owner.org_id = str(org["id"])
    owner.forget_token()  # signed in before the org existed
    return owner


def seed(tenant: Tenant) -> dict[str, str]:
    """A project with a task and a comment; their references, as path parameters."""
    base = f"/api/v1/orgs/{tenant.org_id}"
    _post(tenant.http, f"{base}/projects", 201, {"key": "WEB", "name": "Website"}, headers=tenant.headers)
    task = _post(tenant.http, f"{base}/projects/WEB/tasks", 201, {"title": "Fix it"}, headers=tenant.headers)
    comment = _post(
        tenant.http, f"{base}/tasks/{task['key']}/comments", 201, {"body": "Seen."}, headers=tenant.headers
    )
    return {"project_ref": "WEB", "task_ref": str(task["key"]), "comment_id": str(comment["id"])}


def _post(
    http: Session, path: str, expected: int, body: dict[str, Any], headers: dict[str, str] | None = None
) -> dict[str, Any]:
    response = http.post(path, json=body, headers=headers)
    assert response.status_code == expected, f"{path}: {response.status_code} {response.text}"
    return dict(response.json()) if response.content else {}
