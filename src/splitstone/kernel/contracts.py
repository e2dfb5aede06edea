"""What the kernel reads off a contract Protocol: its methods as typed, serializable operations.

A contract is a `typing.Protocol` of `async def` methods over pydantic models and primitives (rule 2).
`describe(contract)` turns each method into an `Operation`: a pydantic model of its arguments, a
`TypeAdapter` of its result, and whether a retry is safe. The remote client, the internal router and the
contract snapshot (`splitstone arch contracts`) are all generated from these, so no module writes RPC
code.

A method is safe to retry when the contract marks it `@idempotent` (a read, or a write that converges)
or when it takes an `idempotency_key`, which makes a repeated call return the first call's result.
"""

from __future__ import annotations

import inspect
import sys
import typing
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, TypeAdapter, create_model

from splitstone.kernel import errors as kernel_errors
from splitstone.kernel.errors import DomainError

F = TypeVar("F", bound=Callable[..., Any])
C = TypeVar("C", bound=type)

IDEMPOTENCY_KEY_PARAMETER = "idempotency_key"


class ContractError(TypeError):
    """A contract that cannot cross a process boundary (not async, an unserializable type, ...)."""


def idempotent(method: F) -> F:
    """Mark a contract method as safe to call twice: a remote client may retry it after a failure."""
    method.__contract_idempotent__ = True  # type: ignore[attr-defined]
    return method


def contract(*, version: int) -> Callable[[C], C]:
    """Declare a contract's version; bump it for a change that old callers cannot follow."""
    if version < 1:
        raise ValueError("a contract version is a positive integer")

    def mark(protocol: C) -> C:
        protocol.__contract_version__ = version  # type: ignore[attr-defined]
        return protocol

    return mark


def contract_version(protocol: type) -> int:
    return int(getattr(protocol, "__contract_version__", 1))


@dataclass(frozen=True)
class Operation:
    """One contract method, as something that can travel."""

    name: str
    arguments: type[BaseModel]
    """Fields named after the parameters, with their types and defaults."""
    result: TypeAdapter[Any]
    returns_none: bool
    idempotent: bool
    doc: str

    def bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> BaseModel:
        """The arguments of a call, validated, as the arguments model."""
        names = list(self.arguments.model_fields)
        if len(args) > len(names):
            raise TypeError(f"{self.name}() takes {len(names)} arguments but {len(args)} were given")
        given = dict(zip(names, args, strict=False))
        for key, value in kwargs.items():
            if key not in self.arguments.model_fields:
                raise TypeError(f"{self.name}() got an unexpected keyword argument {key!r}")
            if key in given:
                raise TypeError(f"{self.name}() got multiple values for argument {key!r}")
            given[key] = value
        return self.arguments.model_validate(given)

    def call_kwargs(self, arguments: BaseModel) -> dict[str, Any]:
        """The keyword arguments to call the implementation with (field values, not dumps)."""
        return {name: getattr(arguments, name) for name in self.arguments.model_fields}


@dataclass(frozen=True)
class ContractDescription:
    protocol: type
    name: str
    version: int
    operations: dict[str, Operation]
    errors: dict[str, type[DomainError]]
    """Every `DomainError` the contract's module declares or imports, and the kernel's, by code."""


@cache
def describe(protocol: type) -> ContractDescription:
    """The operations and errors of a contract Protocol; raises `ContractError` if one cannot travel."""
    module = sys.modules[protocol.__module__]
    namespace = vars(module)
    operations: dict[str, Operation] = {}
    for name, member in vars(protocol).items():
        if name.startswith("_") or not callable(member):
            continue
        if not inspect.iscoroutinefunction(member):
            raise ContractError(f"{protocol.__qualname__}.{name} must be `async def` to cross a process")
        operations[name] = _operation(protocol, name, member, namespace)
    return ContractDescription(
        protocol=protocol,
        name=protocol.__qualname__,
        version=contract_version(protocol),
        operations=operations,
        errors=_errors(namespace),
    )


def _operation(protocol: type, name: str, method: Any, namespace: dict[str, Any]) -> Operation:
    where = f"{protocol.__qualname__}.{name}"
    try:
        hints = typing.get_type_hints(method, globalns=namespace, include_extras=True)
    except Exception as error:
        raise ContractError(f"{where}: cannot resolve its annotations ({error})") from error
    fields: dict[str, Any] = {}
    for parameter in list(inspect.signature(method).parameters.values())[1:]:  # skip self
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            raise ContractError(f"{where}: *args and **kwargs cannot be described; name each argument")
        if parameter.name not in hints:
            raise ContractError(f"{where}: argument {parameter.name!r} has no type annotation")
        default = ... if parameter.default is inspect.Parameter.empty else parameter.default
        fields[parameter.name] = (hints[parameter.name], default)
    if "return" not in hints:
        raise ContractError(f"{where}: no return annotation")
    returned = hints["return"]
    try:
        arguments = create_model(
            f"{protocol.__name__}_{name}_arguments",
            __config__=ConfigDict(extra="forbid", arbitrary_types_allowed=False),
            **fields,
        )
        result: TypeAdapter[Any] = TypeAdapter(returned)
        arguments.model_json_schema()
        result.json_schema()
    except Exception as error:
        raise ContractError(f"{where}: its types are not serializable ({error})") from error
    return Operation(
        name=name,
        arguments=arguments,
        result=result,
        returns_none=returned is type(None) or returned is None,
        idempotent=bool(getattr(method, "__contract_idempotent__", False))
        or IDEMPOTENCY_KEY_PARAMETER in fields,
        doc=inspect.getdoc(method) or "",
    )


def _errors(namespace: dict[str, Any]) -> dict[str, type[DomainError]]:
    found: dict[str, type[DomainError]] = {}
    for source in (vars(kernel_errors), namespace):
        for value in source.values():
            if isinstance(value, type) and issubclass(value, DomainError):
                found[value.code] = value
    return found
