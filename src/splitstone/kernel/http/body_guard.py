"""Refuses request input the API would misread or the database would choke on, before any route runs.

- A body whose Content-Type an operation does not accept is 415 (an operation with a JSON body accepts
  `application/json` and `application/*+json`; one that reads the raw body accepts anything). A body
  without a Content-Type passes: FastAPI parses no JSON from it, so a JSON operation answers 422.
- A JSON body that is not plain, unambiguous JSON is 422: invalid UTF-8, nesting past the parser's
  recursion limit, duplicate keys (parsers disagree on which one wins), NaN or Infinity (not JSON),
  integers past 4300 digits, lone surrogates and NUL characters (PostgreSQL text cannot hold them).
- A NUL character in the path or the query string is 422 as well.

The body is bounded by `BodySizeLimitMiddleware`, which must wrap this one.
"""

from __future__ import annotations

import json
import re
from typing import Any

from starlette.requests import Request
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from splitstone.kernel.http.problems import problem_response

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_MAX_DEPTH = 64
"""Deeper JSON is refused after parsing; no request model of the API nests anywhere near this."""


class UnreadableJson(ValueError):
    """The body parses, or fails to, in a way that makes its meaning unclear."""

    def __init__(self, message: str, loc: tuple[str | int, ...] = ()) -> None:
        super().__init__(message)
        self.loc = loc


class BodyGuardMiddleware:
    """Pure ASGI: reads a JSON body once to check it, then hands the same bytes to the app."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if "\x00" in scope["path"] or b"%00" in scope.get("query_string", b""):
            await _read_body(receive)  # answering before the body is read would reset the connection
            await _refuse(
                scope, receive, send, 422, "validation-error", "The URL contains a NUL character.", ["url"]
            )
            return
        if scope["method"] not in _BODY_METHODS or not _may_have_body(scope):
            await self.app(scope, receive, send)
            return
        media_type = _media_type(scope)
        if not media_type:  # FastAPI reads no JSON from it: a JSON operation answers 422, a raw one decides
            await self.app(scope, receive, send)
            return
        if not _is_json(media_type):
            accepted = _accepted_media_types(scope)
            if accepted and media_type not in accepted:
                detail = f"This operation takes {', '.join(sorted(accepted))}, not {media_type}."
                await _read_body(receive)
                await _refuse(scope, receive, send, 415, "unsupported-media-type", detail, accept=accepted)
                return
            await self.app(scope, receive, send)
            return
        body, rest = await _read_body(receive)
        if body:
            try:
                check_json(body)
            except UnreadableJson as error:
                await _refuse(scope, receive, send, 422, "validation-error", str(error), ["body", *error.loc])
                return
        await self.app(scope, _replay(body, rest, receive), send)


def check_json(body: bytes) -> None:
    """Raise `UnreadableJson` unless `body` is plain JSON that every parser reads the same way."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as error:
        raise UnreadableJson(f"The body is not valid UTF-8 (byte {error.start}).") from None
    try:
        document = json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_no_constant)
    except RecursionError:
        raise UnreadableJson("The JSON is nested too deeply.") from None
    except json.JSONDecodeError:
        return  # malformed JSON: FastAPI answers it as a validation error, with the position
    except UnreadableJson:
        raise
    except ValueError as error:  # an integer past Python's 4300-digit limit
        raise UnreadableJson(f"The JSON holds a value out of range: {error}") from None
    _check_values(document)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document: dict[str, Any] = {}
    for key, value in pairs:
        if key in document:
            raise UnreadableJson(f"The key {key!r} appears more than once in one object.")
        document[key] = value
    return document


def _no_constant(name: str) -> None:
    raise UnreadableJson(f"{name} is not a JSON number.")


def _check_values(document: Any) -> None:
    """Walks the document without recursion: depth, NUL characters and lone surrogates, with their path."""
    pending: list[tuple[Any, tuple[str | int, ...]]] = [(document, ())]
    while pending:
        value, loc = pending.pop()
        if len(loc) > _MAX_DEPTH:
            raise UnreadableJson(f"The JSON is nested more than {_MAX_DEPTH} levels deep.")
        if isinstance(value, str):
            _check_text(value, loc)
        elif isinstance(value, dict):
            for key, item in value.items():
                _check_text(key, loc)
                pending.append((item, (*loc, key)))
        elif isinstance(value, list):
            pending.extend((item, (*loc, index)) for index, item in enumerate(value))


def _check_text(text: str, loc: tuple[str | int, ...]) -> None:
    if "\x00" in text:
        raise UnreadableJson("Text must not contain NUL characters (\\u0000).", loc)
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise UnreadableJson(
                "Text must not contain unpaired surrogates (\\ud800-\\udfff).", loc
            ) from None


def _may_have_body(scope: Scope) -> bool:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            return bool(value.strip() != b"0")
        if name == b"transfer-encoding":
            return True
    return False


def _media_type(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == b"content-type":
            media_type: str = value.decode("latin-1").split(";", 1)[0].strip().lower()
            return media_type
    return ""


def _is_json(media_type: str) -> bool:
    return media_type == "application/json" or (
        media_type.startswith("application/") and media_type.endswith("+json")
    )


def _accepted_media_types(scope: Scope) -> set[str]:
    """The media types the operation declares for its body in the OpenAPI document; empty when it
    declares none (it reads the raw body, such as a webhook or RFC 8058 unsubscribe)."""
    app = scope.get("app")
    if app is None or not hasattr(app, "openapi"):
        return set()
    table: list[tuple[re.Pattern[str], str, set[str]]] | None = getattr(app.state, "body_media_types", None)
    if table is None:
        table = [
            (compile_path(path)[0], method.upper(), set(operation["requestBody"].get("content", {})))
            for path, item in app.openapi().get("paths", {}).items()
            for method, operation in item.items()
            if isinstance(operation, dict) and "requestBody" in operation
        ]
        app.state.body_media_types = table
    for pattern, method, media_types in table:
        if method == scope["method"] and pattern.match(scope["path"]):
            return media_types
    return set()


async def _read_body(receive: Receive) -> tuple[bytes, list[Message]]:
    """The whole body, and what `receive` gave past it (nothing, unless the client disconnected)."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks), [message]
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks), []


def _replay(body: bytes, rest: list[Message], receive: Receive) -> Receive:
    """The body read, then the client's own `receive` (which tells when it disconnects)."""
    pending: list[Message] = [{"type": "http.request", "body": body, "more_body": False}, *rest]

    async def replayed() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replayed


async def _refuse(
    scope: Scope,
    receive: Receive,
    send: Send,
    status: int,
    code: str,
    detail: str,
    loc: list[str | int] | None = None,
    accept: set[str] | None = None,
) -> None:
    headers = {}
    if accept and scope["method"] == "POST":
        headers["Accept-Post"] = ", ".join(sorted(accept))  # what it takes instead
    response = problem_response(
        status,
        code,
        title="Validation failed" if status == 422 else None,  # as FastAPI's own validation errors
        detail=detail,
        request=Request(scope),
        headers=headers,
        errors=None if loc is None else [{"loc": loc, "msg": detail, "type": "json_invalid"}],
    )
    await response(scope, receive, send)
