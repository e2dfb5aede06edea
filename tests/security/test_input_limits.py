"""Hostile input over HTTP: every malformed, oversized or ambiguous request is a clear 4xx problem.

The mechanism of the body size limit is tested on a small app in tests/kernel/test_http.py; here the
real app is attacked as a client would, on both backends (PostgreSQL refuses NUL in text, SQLite not).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from splitstone.kernel.events import EventRecorder
from splitstone.kernel.settings import ModuleSettings
from splitstone.modules.auth.api import UserRegistered
from splitstone.modules.auth.settings import AuthSettings
from tests.modules.auth.conftest import STRONG_PASSWORD, Users
from tests.modules.auth.org_helpers import assert_problem, create_org
from tests.support.passwords import CHEAP_ARGON2

pytestmark = pytest.mark.backends("sqlite")  # the checks run before any query; NUL is also on PostgreSQL

AUTH = "/api/v1/auth"
HUGE = "x" * 200_000  # over every field's bound, under the 1 MiB body limit
BOUNDED_FORMATS = {"uuid", "date-time", "date", "time"}
"""Formats whose parser refuses anything long at once; every other string needs a maxLength."""


@pytest.fixture
def module_settings() -> dict[str, ModuleSettings]:
    return {"auth": AuthSettings(**CHEAP_ARGON2)}


@pytest.fixture
def users(client: httpx.AsyncClient, events: EventRecorder) -> Users:
    return Users(client, events)


def fullwidth(text: str) -> str:
    """`text` in fullwidth forms (U+FF01-FF5E), which NFKC folds back to ASCII."""
    return "".join(chr(ord(c) + 0xFEE0) for c in text)


def assert_refused_field(response: httpx.Response, *loc: str | int) -> None:
    body = assert_problem(response, 422, "validation-error")
    assert [e["loc"] for e in body["errors"]] == [["body", *loc]], body


# --- every field is bounded ------------------------------------------------------------------------


def unbounded_fields(spec: dict[str, Any]) -> Iterator[str]:
    """Every string without maxLength, array without maxItems, map without maxProperties and integer
    without maximum that a request may carry (body, query, path, header), named by where it is."""
    schemas = spec.get("components", {}).get("schemas", {})

    def walk(schema: dict[str, Any], where: str, seen: frozenset[str]) -> Iterator[str]:
        if "$ref" in schema:
            name = schema["$ref"].rsplit("/", 1)[1]
            if name not in seen:
                yield from walk(schemas[name], where, seen | {name})
            return
        for key in ("anyOf", "oneOf", "allOf"):
            for option in schema.get(key, ()):
                yield from walk(option, where, seen)
        kind = schema.get("type")
        if kind == "string" and not ({"maxLength", "enum", "const"} & schema.keys()):
            if schema.get("format") not in BOUNDED_FORMATS:
                yield f"{where}: string without maxLength"
        elif kind == "integer" and not ({"maximum", "exclusiveMaximum", "enum"} & schema.keys()):
            yield f"{where}: integer without maximum"
        elif kind == "array":
            if "maxItems" not in schema:
                yield f"{where}: array without maxItems"
            yield from walk(schema.get("items", {}), f"{where}[]", seen)
        for name, field in schema.get("properties", {}).items():
            yield from walk(field, f"{where}.{name}", seen)
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            if "maxProperties" not in schema:
                yield f"{where}: map without maxProperties"
            yield from walk(extra, f"{where}.*", seen)

    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if not isinstance(operation, dict):
                continue
            name = f"{method.upper()} {path}"
            for parameter in operation.get("parameters", ()):
                where = f"{name} {parameter['in']} {parameter['name']}"
                yield from walk(parameter.get("schema", {}), where, frozenset())
            for media in operation.get("requestBody", {}).get("content", {}).values():
                yield from walk(media.get("schema", {}), f"{name} body", frozenset())


@pytest.mark.backends("sqlite")  # the schema is the same on every backend
def test_every_request_field_is_bounded(app: FastAPI) -> None:
    """Covers new routes by itself: an unbounded field is work (hashing, storing, scanning) without limit."""
    assert list(unbounded_fields(app.openapi())) == []


def test_the_walker_finds_unbounded_fields() -> None:
    spec = {
        "paths": {
            "/x": {
                "post": {
                    "parameters": [{"in": "query", "name": "q", "schema": {"type": "string"}}],
                    "requestBody": {"content": {"application/json": {"schema": {"$ref": "#/c/s/X"}}}},
                }
            }
        },
        "components": {
            "schemas": {
                "X": {
                    "properties": {
                        "ok": {"type": "string", "maxLength": 5},
                        "tags": {"type": "array", "items": {"type": "string"}},
                        "n": {"anyOf": [{"type": "integer"}, {"type": "null"}]},
                        "at": {"type": "string", "format": "date-time"},
                    }
                }
            }
        },
    }
    assert list(unbounded_fields(spec)) == [
        "POST /x query q: string without maxLength",
        "POST /x body.tags: array without maxItems",
        "POST /x body.tags[]: string without maxLength",
        "POST /x body.n: integer without maximum",
    ]


# --- huge strings in every kind of field -----------------------------------------------------------


async def test_registration_fields_are_bounded(client: httpx.AsyncClient) -> None:
    for field in ("email", "password", "display_name"):
        body = {"email": "ada@example.com", "password": STRONG_PASSWORD, "display_name": "Ada", field: HUGE}
        assert_refused_field(await client.post(f"{AUTH}/register", json=body), field)


async def test_a_huge_password_is_refused_before_it_is_hashed(
    client: httpx.AsyncClient, users: Users
) -> None:
    """argon2 over a megabyte per attempt would be a cheap denial of service."""
    ada = await users.signed_in()
    login = await client.post(f"{AUTH}/login", json={"email": ada.email, "password": HUGE})
    assert_refused_field(login, "password")
    change = {"current_password": HUGE, "new_password": STRONG_PASSWORD + "!"}
    assert_refused_field(
        await client.post(f"{AUTH}/password", json=change, headers=ada.headers), "current_password"
    )
    reset = {"token": "t", "new_password": HUGE}
    assert_refused_field(await client.post(f"{AUTH}/password/reset", json=reset), "new_password")


async def test_names_titles_and_descriptions_are_bounded(client: httpx.AsyncClient, users: Users) -> None:
    ada = await users.signed_in()
    org = f"/api/v1/orgs/{await create_org(client, ada)}"
    assert_refused_field(
        await client.patch(f"{AUTH}/me", json={"display_name": HUGE}, headers=ada.headers), "display_name"
    )
    assert_refused_field(await client.post("/api/v1/orgs", json={"name": HUGE}, headers=ada.headers), "name")
    for field in ("key", "name", "description"):
        body = {"key": "WEB", "name": "Web", field: HUGE}
        assert_refused_field(await client.post(f"{org}/projects", json=body, headers=ada.headers), field)
    project = await client.post(f"{org}/projects", json={"key": "WEB", "name": "Web"}, headers=ada.headers)
    assert project.status_code == 201, project.text
    for field in ("title", "description"):
        body = {"title": "Ship it", field: HUGE}
        assert_refused_field(
            await client.post(f"{org}/projects/WEB/tasks", json=body, headers=ada.headers), field
        )
    task = await client.post(f"{org}/projects/WEB/tasks", json={"title": "Ship it"}, headers=ada.headers)
    assert task.status_code == 201, task.text
    comment = await client.post(f"{org}/tasks/WEB-1/comments", json={"body": HUGE}, headers=ada.headers)
    assert_refused_field(comment, "body")


# --- bodies that are not plain JSON ----------------------------------------------------------------


DEEP = b"[" * 100_000 + b"]" * 100_000
HOSTILE_BODIES = {
    "deeply nested (100k levels)": b'{"email": "a@example.com", "password": ' + DEEP + b"}",
    "nested past the guard (65 levels)": b'{"email": "a@example.com", "password": '
    + b"[" * 65
    + b"]" * 65
    + b"}",
    "invalid UTF-8": b'{"email": "a\xff@example.com", "password": "x"}',
    "overlong UTF-8 encoding of NUL": b'{"email": "a@example.com", "password": "\xc0\x80"}',
    "duplicate keys": b'{"email": "a@example.com", "email": "b@example.com", "password": "x"}',
    "NaN": b'{"email": "a@example.com", "password": NaN}',
    "Infinity": b'{"email": "a@example.com", "password": -Infinity}',
    "a 5000-digit integer": b'{"email": "a@example.com", "password": ' + b"9" * 5000 + b"}",
}


async def test_ambiguous_or_unparseable_json_is_a_422(client: httpx.AsyncClient) -> None:
    for name, body in HOSTILE_BODIES.items():
        response = await client.post(
            f"{AUTH}/login", content=body, headers={"content-type": "application/json"}
        )
        assert response.status_code == 422, (name, response.text)
        assert_problem(response, 422, "validation-error")


@pytest.mark.backends("sqlite", "postgres")
async def test_text_the_database_cannot_store_is_a_422_not_a_500(
    client: httpx.AsyncClient, users: Users, events: EventRecorder
) -> None:
    """PostgreSQL text cannot hold NUL (asyncpg raised, a 500); no database can hold a lone surrogate."""
    ada = await users.signed_in()
    as_json = {**ada.headers, "content-type": "application/json"}  # json.dumps escapes both as \uXXXX
    for text in ("Ada\u0000Lovelace", "\ud800Ada", "Ada\udfff"):
        profile = await client.patch(
            f"{AUTH}/me", content=json.dumps({"display_name": text}), headers=as_json
        )
        assert_refused_field(profile, "display_name")
        registration = {"email": "grace@example.com", "password": STRONG_PASSWORD, "display_name": text}
        answer = await client.post(f"{AUTH}/register", content=json.dumps(registration), headers=as_json)
        assert_refused_field(answer, "display_name")
    assert "grace@example.com" not in [e.email for e in events.of_type(UserRegistered)]


async def test_nul_in_the_url_is_a_422(client: httpx.AsyncClient, users: Users) -> None:
    ada = await users.signed_in()
    response = await client.get(f"{AUTH}/sessions?cursor=%00", headers=ada.headers)
    body = assert_problem(response, 422, "validation-error")
    assert body["errors"][0]["loc"] == ["url"]


# --- content types ---------------------------------------------------------------------------------


LOGIN_JSON = b'{"email": "ada@example.com", "password": "correct horse battery staple 42"}'


NOT_JSON = {
    "text/plain": LOGIN_JSON,
    "application/x-www-form-urlencoded": b"email=ada%40example.com&password=x",
    "multipart/form-data; boundary=b": b'--b\r\nContent-Disposition: form-data; name="e"\r\n\r\nx\r\n--b--',
    "application/xml": b"<login/>",
}


async def test_a_json_operation_refuses_other_media_types_with_415(client: httpx.AsyncClient) -> None:
    for content_type, body in NOT_JSON.items():
        response = await client.post(f"{AUTH}/login", content=body, headers={"content-type": content_type})
        problem = assert_problem(response, 415, "unsupported-media-type")
        assert "application/json" in problem["detail"]
        assert response.headers["accept-post"] == "application/json"


async def test_a_body_without_content_type_is_not_read_as_json(client: httpx.AsyncClient) -> None:
    """No Content-Type: FastAPI does not guess JSON, so the body is missing for a JSON operation (422).
    Operations that read raw bytes (provider webhooks, which sign the bytes) still get them."""
    response = await client.post(f"{AUTH}/login", content=LOGIN_JSON)
    assert "content-type" not in response.request.headers
    body = assert_problem(response, 422, "validation-error")
    assert body["errors"][0]["loc"] == ["body"]


async def test_json_with_parameters_and_structured_suffixes_is_json(client: httpx.AsyncClient) -> None:
    for content_type in ("application/json; charset=utf-8", "application/merge-patch+json"):
        response = await client.post(
            f"{AUTH}/login", content=LOGIN_JSON, headers={"content-type": content_type}
        )
        assert_problem(response, 401, "invalid-credentials")


async def test_an_operation_that_reads_raw_bodies_still_takes_forms(client: httpx.AsyncClient) -> None:
    """RFC 8058 one-click unsubscribe posts a form; the guard asks the route what it takes."""
    response = await client.post(
        "/api/v1/notifications/unsubscribe?token=forged",
        content=b"List-Unsubscribe=One-Click",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert 400 <= response.status_code < 500, response.text
    assert response.status_code != 415


# --- oversized bodies on the real app --------------------------------------------------------------


async def test_an_oversized_login_is_413_with_or_without_content_length(client: httpx.AsyncClient) -> None:
    too_big = b'{"email": "ada@example.com", "password": "' + b"x" * (1 << 20) + b'"}'

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(too_big), 64 * 1024):
            yield too_big[start : start + 64 * 1024]

    json_headers = {"content-type": "application/json"}
    assert_problem(
        await client.post(f"{AUTH}/login", content=too_big, headers=json_headers), 413, "request-too-large"
    )
    streamed = await client.post(f"{AUTH}/login", content=chunks(), headers=json_headers)
    assert "content-length" not in streamed.request.headers
    assert_problem(streamed, 413, "request-too-large")


# --- look-alike identities -------------------------------------------------------------------------


async def test_look_alike_emails_are_one_account_or_refused(
    client: httpx.AsyncClient, events: EventRecorder
) -> None:
    async def register(email: str) -> httpx.Response:
        body = {"email": email, "password": STRONG_PASSWORD, "display_name": "Ada"}
        return await client.post(f"{AUTH}/register", json=body)

    assert (await register("ada@example.com")).status_code == 202
    # Compatibility forms fold into the same address: the same (silent) answer, no second account.
    for same in (
        fullwidth("ADA") + "@example.com",
        "ada@" + fullwidth("EXAMPLE") + ".com",
        "ADA@Example.Com",
    ):
        assert (await register(same)).status_code == 202
    assert [e.email for e in events.of_type(UserRegistered)] == ["ada@example.com"]
    login = await client.post(
        f"{AUTH}/login", json={"email": fullwidth("ada") + "@example.com", "password": STRONG_PASSWORD}
    )
    assert login.status_code == 200, login.text

    # A Cyrillic a (U+0430) that looks Latin, and a zero-width joiner, are refused, not stored as a twin.
    for twin in ("\u0430da@example.com", "a\u200dda@example.com"):
        answer = await register(twin)
        assert answer.status_code == 422, answer.text
        assert answer.headers["content-type"].startswith("application/problem+json")
    # A look-alike domain is kept in its ASCII form, where it no longer looks like example.com.
    assert (await register("ada@ex\u0430mple.com")).status_code == 202
    assert events.last(UserRegistered).email == "ada@xn--exmple-4nf.com"


async def test_look_alike_project_keys_and_labels(client: httpx.AsyncClient, users: Users) -> None:
    ada = await users.signed_in()
    org = f"/api/v1/orgs/{await create_org(client, ada)}"
    for look_alike in (
        fullwidth("WEB"),
        "W\u0415B",
        "WE\u200dB",
    ):  # fullwidth, Cyrillic E (U+0415), zero-width joiner
        answer = await client.post(
            f"{org}/projects", json={"key": look_alike, "name": "Web"}, headers=ada.headers
        )
        assert_problem(answer, 422, "invalid-project-key")
    assert (
        await client.post(f"{org}/projects", json={"key": "web", "name": "Web"}, headers=ada.headers)
    ).status_code == 201
    task = await client.post(
        f"{org}/projects/WEB/tasks",
        json={"title": "Fix it", "labels": ["\ufb01x", "fix", fullwidth("BUG"), "bug"]},
        headers=ada.headers,
    )
    assert task.status_code == 201, task.text
    assert task.json()["labels"] == ["bug", "fix"]
