"""The internal route that serves a module's contract to other services of the same deployment.

`POST /internal/<module>/<operation>` takes the operation's arguments as a JSON object and answers its
result as JSON. A `DomainError` the implementation raises is answered by the application's problem
handlers like any other, so the client can map its `code` back to the same exception type. Only
callers that present the deployment's service token get in; the routes are not in the public OpenAPI.
"""

# No `from __future__ import annotations`: FastAPI must read the routes' annotations, which name locals.

import hmac
import re
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Depends, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from splitstone.kernel.contracts import describe
from splitstone.kernel.remote.wire import (
    SERVICE_NAME_HEADER,
    SERVICE_TOKEN_HEADER,
    InvalidServiceCredential,
    ServiceCredentialRequired,
    UnknownOperation,
    module_path,
)

_SERVICE_NAME = re.compile(r"^[A-Za-z0-9._\-]{1,64}$")


def internal_router(module: str, protocol: type, implementation: object, *, service_token: str) -> APIRouter:
    """The routes that serve `implementation` of contract `protocol`, owned by `module`."""
    if not service_token:
        raise ValueError("the internal route of a contract needs a service token")
    description = describe(protocol)
    missing = [name for name in description.operations if not callable(getattr(implementation, name, None))]
    if missing:
        raise TypeError(f"the implementation of {description.name} lacks {', '.join(missing)}")
    expected = service_token.encode()

    async def caller(request: Request) -> str | None:
        """The calling service's name, once its token is checked (in constant time)."""
        given = request.headers.get(SERVICE_TOKEN_HEADER)
        if not given:
            raise ServiceCredentialRequired(f"Send the deployment's service token in {SERVICE_TOKEN_HEADER}.")
        if not hmac.compare_digest(given.encode(), expected):
            raise InvalidServiceCredential(f"The {SERVICE_TOKEN_HEADER} header is not this deployment's.")
        name = request.headers.get(SERVICE_NAME_HEADER, "")
        return name if _SERVICE_NAME.match(name) else None

    Caller = Annotated[str | None, Depends(caller)]
    router = APIRouter(prefix=module_path(module), include_in_schema=False)

    @router.get("")
    async def describe_contract(_: Caller) -> dict[str, Any]:
        return {
            "module": module,
            "contract": description.name,
            "version": description.version,
            "operations": [
                {"name": operation.name, "idempotent": operation.idempotent}
                for operation in description.operations.values()
            ],
        }

    @router.post("/{operation}")
    async def call(operation: str, request: Request, service: Caller) -> Response:
        described = description.operations.get(operation)
        if described is None:
            raise UnknownOperation(f"{description.name} has no operation {operation!r}.")
        try:
            arguments = described.arguments.model_validate_json(await request.body())
        except ValidationError as error:
            # Rendered like any request body that failed validation (422, every failing field).
            errors = [{**e, "loc": ("body", *e["loc"])} for e in error.errors(include_url=False)]
            raise RequestValidationError(errors) from None
        with structlog.contextvars.bound_contextvars(caller=service):
            value = await getattr(implementation, operation)(**described.call_kwargs(arguments))
        return Response(described.result.dump_json(value), media_type="application/json")

    return router
