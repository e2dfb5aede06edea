"""Clients generated from contracts: the same async methods, answered by the service that owns the module.

A call validates its arguments as a local call would, posts them to the owner's internal route with the
service token and the trace context, and returns the validated result. A problem the owner answers is
raised again as the contract's exception type (by its `code`), with its detail and extra members, so
the caller's own HTTP response is the one the owner would have given. When the owner cannot be reached
or does not answer in time, the call raises `ServiceUnavailable`; only idempotent operations are
retried, all within one time budget.
"""

from __future__ import annotations

import asyncio
import functools
import random
from collections.abc import Mapping
from typing import Any

import httpx
import structlog
from pydantic import ValidationError

from splitstone.kernel import tracing
from splitstone.kernel.contracts import Operation, describe
from splitstone.kernel.errors import (
    PROBLEM_MEMBERS,
    Conflict,
    DomainError,
    InvalidInput,
    NotAuthenticated,
    NotFound,
    PermissionDenied,
    RateLimited,
    ServiceUnavailable,
)
from splitstone.kernel.http.problems import PROBLEM_CONTENT_TYPE
from splitstone.kernel.remote.wire import (
    ROUTE_ERRORS,
    SERVICE_NAME_HEADER,
    SERVICE_TOKEN_HEADER,
    module_path,
    operation_path,
)

log = structlog.get_logger("splitstone.remote")

_BACKOFF_BASE_SECONDS = 0.05
_BACKOFF_MAX_SECONDS = 1.0


class RemoteContracts:
    """The remote side of every contract this process uses: one pooled HTTP client, shared by all."""

    def __init__(
        self,
        *,
        service_token: str,
        caller: str,
        connect_timeout: float = 1.0,
        timeout: float = 10.0,
        retries: int = 2,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not service_token:
            raise ValueError("remote contract calls need a service token")
        self.caller = caller
        self.timeout = timeout
        """The longest one call may take, retries included."""
        self.retries = retries
        self.http = httpx.AsyncClient(
            transport=transport,
            timeout=httpx.Timeout(timeout, connect=connect_timeout),
            limits=httpx.Limits(max_connections=100, max_keepalive_connections=20, keepalive_expiry=30),
            headers={SERVICE_TOKEN_HEADER: service_token, SERVICE_NAME_HEADER: caller},
            trust_env=False,  # peers of one deployment talk directly, never through an environment's proxy
        )

    def client(self, protocol: type, module: str, base_url: str) -> Any:
        """An implementation of `protocol` whose every method calls `module` at `base_url`."""
        return client_class(protocol)(self, module, base_url)

    async def ping(self, module: str, base_url: str) -> None:
        """Check that `base_url` serves `module` and takes our token; raise `ServiceUnavailable` if not."""
        url = base_url.rstrip("/") + module_path(module)
        try:
            response = await self.http.get(url, headers=tracing.outgoing_headers())
        except httpx.TransportError as error:
            log.warning("remote ping failed", module=module, url=url, error=_describe(error))
            raise ServiceUnavailable(f"The {module} service cannot be reached.") from error
        if response.status_code != 200:
            log.warning("remote ping refused", module=module, url=url, status=response.status_code)
            raise ServiceUnavailable(f"The {module} service does not serve its contract here.")

    async def call(
        self,
        protocol: type,
        module: str,
        base_url: str,
        name: str,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        """Call operation `name` of contract `protocol`, served by `module` at `base_url`."""
        description = describe(protocol)
        operation = description.operations[name]
        try:
            arguments = operation.bind(args, kwargs or {})
        except ValidationError as error:
            raise TypeError(f"{operation.name}() got invalid arguments: {error}") from error
        url = base_url.rstrip("/") + operation_path(module, operation.name)
        # Only the arguments the caller passed: a default it left alone is the provider's to apply, so a
        # caller that knows a newer optional argument still talks to a provider that does not. A value
        # passed travels whole (not `exclude_unset`, which would also drop the defaults of a model inside
        # it, and the provider would make new ones: another id, another timestamp).
        body = arguments.model_dump_json(include=arguments.model_fields_set).encode()
        attempts = 1 + self.retries if operation.idempotent else 1
        attempt = 0
        cause: Exception | None = None
        try:
            async with asyncio.timeout(self.timeout):
                while True:
                    attempt += 1
                    try:
                        response = await self.http.post(url, content=body, headers=_headers())
                    except httpx.TransportError as error:
                        cause, failure = error, _describe(error)
                    else:
                        if not _transient(response):
                            return self._answer(module, operation, description.errors, response)
                        failure = f"HTTP {response.status_code}"
                    retry = attempt < attempts
                    log.warning(
                        "remote call failed",
                        module=module,
                        operation=operation.name,
                        attempt=attempt,
                        error=failure,
                        retry=retry,
                    )
                    if not retry:
                        break
                    await asyncio.sleep(_backoff(attempt))
        except TimeoutError as error:
            cause = error
            log.warning(
                "remote call failed",
                module=module,
                operation=operation.name,
                attempt=attempt,
                error=f"no answer within {self.timeout} s",
                retry=False,
            )
        tried = f" ({attempt} attempts)" if attempt > 1 else ""
        raise ServiceUnavailable(f"The {module} service did not answer {operation.name}{tried}.") from cause

    def _answer(
        self,
        module: str,
        operation: Operation,
        errors: Mapping[str, type[DomainError]],
        response: httpx.Response,
    ) -> Any:
        """The result of a call the owner answered, or the error it answered with, raised."""
        if response.is_success:
            try:
                return operation.result.validate_json(response.content)
            except ValidationError as error:
                log.error("remote result not as contracted", module=module, operation=operation.name)
                raise ServiceUnavailable(
                    f"The {module} service answered {operation.name} unexpectedly."
                ) from error
        problem = _problem(response)
        if problem is None or problem["code"] in ROUTE_ERRORS:
            log.error(
                "remote call refused",
                module=module,
                operation=operation.name,
                status=response.status_code,
                problem=problem,
            )
            raise ServiceUnavailable(f"The {module} service refused {operation.name}.")
        raised = rebuild_error(errors, problem, response.headers)
        raised.add_note(f"raised by the {module} service, answering {operation.name}")
        raise raised

    async def aclose(self) -> None:
        await self.http.aclose()


class RemoteClient:
    """Base of the generated clients: which module they call, and where."""

    def __init__(self, remote: RemoteContracts, module: str, base_url: str) -> None:
        self.remote = remote
        self.module = module
        self.base_url = base_url

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.module} at {self.base_url}>"


@functools.cache
def client_class(protocol: type) -> type[RemoteClient]:
    """The client class of a contract: one `async def` per operation, named and documented like it."""
    description = describe(protocol)
    methods = {name: _method(protocol, name) for name in description.operations}
    return type(f"Remote{protocol.__name__}", (RemoteClient,), {"__doc__": protocol.__doc__, **methods})


def _method(protocol: type, name: str) -> Any:
    @functools.wraps(getattr(protocol, name))
    async def method(self: RemoteClient, *args: Any, **kwargs: Any) -> Any:
        return await self.remote.call(protocol, self.module, self.base_url, name, args, kwargs)

    return method


def rebuild_error(
    known: Mapping[str, type[DomainError]], problem: Mapping[str, Any], headers: Mapping[str, str]
) -> DomainError:
    """The exception a problem body stands for: the contract's type for its code, or a stand-in.

    A stand-in (for a code the contract does not declare) subclasses the kernel error of its status
    and has the same code, status and title, so it is answered exactly as the owner answered it.
    """
    code, status = str(problem["code"]), int(problem["status"])
    error_type = known.get(code)
    if error_type is None or error_type.status != status:
        error_type = _stand_in(code, status, str(problem.get("title") or code))
    extra = {key: value for key, value in problem.items() if key not in PROBLEM_MEMBERS}
    # Built without the type's own __init__: whatever it takes, what travelled is the detail and extras.
    error = error_type.__new__(error_type)
    DomainError.__init__(error, problem.get("detail"), **extra)
    if isinstance(error, RateLimited):
        error.retry_after = _retry_after(headers)
    return error


_KERNEL_BY_STATUS: dict[int, type[DomainError]] = {
    401: NotAuthenticated,
    403: PermissionDenied,
    404: NotFound,
    409: Conflict,
    422: InvalidInput,
    429: RateLimited,
    503: ServiceUnavailable,
}


@functools.cache
def _stand_in(code: str, status: int, title: str) -> type[DomainError]:
    base = _KERNEL_BY_STATUS.get(status, DomainError)
    name = "".join(part.capitalize() for part in code.replace("_", "-").split("-") if part) or "RemoteError"
    return type(name, (base,), {"code": code, "status": status, "title": title, "__module__": __name__})


def _problem(response: httpx.Response) -> dict[str, Any] | None:
    """The problem details of an error response, or None when it is not one (a proxy's error page)."""
    if not response.headers.get("content-type", "").startswith(PROBLEM_CONTENT_TYPE):
        return None
    try:
        body = response.json()
    except ValueError:
        return None
    if isinstance(body, dict) and isinstance(body.get("code"), str) and isinstance(body.get("status"), int):
        return body
    return None


def _transient(response: httpx.Response) -> bool:
    """A failure on the way to the owner (a proxy's 502, 503 or 504): worth a retry.

    A problem the owner answered is its final word, even a 503: it made its own retries already, and
    retrying a chain of services at every hop multiplies the load on the one that is down.
    """
    return response.status_code >= 500 and _problem(response) is None


def _headers() -> dict[str, str]:
    return {"content-type": "application/json", **tracing.outgoing_headers()}


def _backoff(attempt: int) -> float:
    # Full jitter: callers that failed together do not retry together.
    ceiling = min(_BACKOFF_MAX_SECONDS, _BACKOFF_BASE_SECONDS * 2 ** (attempt - 1))
    return random.uniform(0, ceiling)  # noqa: S311 - spreading retries, not a secret


def _retry_after(headers: Mapping[str, str]) -> int:
    try:
        return max(0, int(headers.get("retry-after", "1")))
    except ValueError:
        return 1


def _describe(error: Exception) -> str:
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
