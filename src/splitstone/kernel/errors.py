"""Domain errors: exception types that contracts declare and the HTTP layer turns into problem+json.

Each error has a stable `code` (the last part of the problem `type`) and an HTTP status, so the same
error can be mapped back to its type when a contract call crosses a process boundary.
"""

from __future__ import annotations

from typing import Any, ClassVar

# The members a problem body gives a meaning of its own (RFC 9457, and the kernel's code and request id).
PROBLEM_MEMBERS = frozenset({"type", "title", "status", "detail", "instance", "code", "request_id"})


class DomainError(Exception):
    """Base of every error a contract may raise."""

    code: ClassVar[str] = "domain-error"
    status: ClassVar[int] = 400
    title: ClassVar[str] = "The request cannot be processed"

    def __init__(self, detail: str | None = None, **extra: Any) -> None:
        reserved = PROBLEM_MEMBERS & extra.keys()
        if reserved:
            raise ValueError(f"{type(self).__name__}: {sorted(reserved)} are RFC 9457 members, not extras")
        self.detail = detail or self.title
        self.extra = extra
        super().__init__(self.detail)


class NotFound(DomainError):
    code = "not-found"
    status = 404
    title = "Resource not found"


class Conflict(DomainError):
    code = "conflict"
    status = 409
    title = "Conflict with the current state"


class NotAuthenticated(DomainError):
    code = "not-authenticated"
    status = 401
    title = "Authentication required"


class PermissionDenied(DomainError):
    code = "permission-denied"
    status = 403
    title = "Not allowed"


class InvalidInput(DomainError):
    code = "invalid-input"
    status = 422
    title = "Invalid input"


class RateLimited(DomainError):
    code = "rate-limited"
    status = 429
    title = "Too many requests"

    def __init__(self, retry_after: int, detail: str | None = None) -> None:
        super().__init__(detail or f"Too many requests; retry after {retry_after} seconds.")
        self.retry_after = retry_after


class ServiceUnavailable(DomainError):
    """A service this call needs could not be reached or did not answer in time; a retry may succeed."""

    code = "service-unavailable"
    status = 503
    title = "A service this request needs is unavailable"
