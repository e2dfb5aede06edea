"""Errors as splitstone answers them: RFC 9457 problem+json with its `code`, `instance` and `request_id`."""

from __future__ import annotations

import json
from typing import Any

from starlette.responses import Response

PROBLEM_CONTENT_TYPE = "application/problem+json"
BEARER_CHALLENGE = 'Bearer realm="splitstone"'


class Problem(Exception):
    """An error answer; `extra` members follow the standard ones, as splitstone's `DomainError` extras do."""

    def __init__(self, status: int, code: str, title: str, detail: str | None = None, **extra: Any) -> None:
        super().__init__(detail or title)
        self.status = status
        self.code = code
        self.title = title
        self.detail = detail or title
        self.extra = extra


def not_authenticated(detail: str, code: str = "not-authenticated", title: str = "") -> Problem:
    return Problem(401, code, title or "Authentication required", detail)


def invalid_credentials(detail: str) -> Problem:
    return Problem(401, "invalid-credentials", "Invalid credentials", detail)


def invalid_input(
    detail: str, code: str = "invalid-input", title: str = "Invalid input", **extra: Any
) -> Problem:
    return Problem(422, code, title, detail, **extra)


def validation_failed(errors: list[dict[str, Any]]) -> Problem:
    """FastAPI's 422 for a request that does not match the declared parameters or body."""
    fields = ", ".join(".".join(str(p) for p in e["loc"]) for e in errors) or "the request"
    return Problem(
        422, "validation-error", "Validation failed", f"Invalid value for: {fields}.", errors=errors
    )


def problem_response(problem: Problem, path: str, request_id: str) -> Response:
    body: dict[str, Any] = {
        "type": f"/problems/{problem.code}",
        "title": problem.title,
        "status": problem.status,
        "code": problem.code,
        "detail": problem.detail,
        "instance": path,
        "request_id": request_id,
    }
    body.update({k: v for k, v in problem.extra.items() if v is not None})
    content = json.dumps(body, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()
    headers = {"WWW-Authenticate": BEARER_CHALLENGE} if problem.status == 401 else None
    return Response(content, problem.status, headers=headers, media_type=PROBLEM_CONTENT_TYPE)
