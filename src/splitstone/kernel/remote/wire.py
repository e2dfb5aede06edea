"""What the internal route and the remote client agree on: paths, headers, and the route's own errors.

The route's own errors say the call never reached the contract (a refused credential, an operation the
peer does not know, arguments it cannot read). The client reports them as `ServiceUnavailable`, never
as the 401/404/422 they are on the wire: the end user did nothing wrong, the deployment did.
"""

from __future__ import annotations

from splitstone.kernel.errors import NotAuthenticated, NotFound

PREFIX = "/internal"
SERVICE_TOKEN_HEADER = "X-Service-Token"  # noqa: S105 - a header name, not a secret
SERVICE_NAME_HEADER = "X-Service-Name"
VALIDATION_ERROR = "validation-error"
"""The code `kernel.http.problems` gives a request that failed validation."""


def module_path(module: str) -> str:
    """Where a module's contract is described (`GET`, also the readiness ping)."""
    return f"{PREFIX}/{module}"


def operation_path(module: str, operation: str) -> str:
    """Where one operation of a module's contract is called (`POST`)."""
    return f"{PREFIX}/{module}/{operation}"


class ServiceCredentialRequired(NotAuthenticated):
    code = "service-credential-required"
    title = "A service credential is required"


class InvalidServiceCredential(NotAuthenticated):
    code = "invalid-service-credential"
    title = "Invalid service credential"


class UnknownOperation(NotFound):
    code = "unknown-operation"
    title = "The contract has no such operation"


ROUTE_ERRORS = frozenset(
    {ServiceCredentialRequired.code, InvalidServiceCredential.code, UnknownOperation.code, VALIDATION_ERROR}
)
