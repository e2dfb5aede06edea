"""Module declarations and the dependency graph between them.

A module declares its public contract (a Protocol in its `api`), the contracts it depends on, a factory
that builds its implementation from a `ModuleContext`, and optionally an HTTP router, tables and
migrations, event subscriptions, settings and CLI commands. The registry orders modules by their
dependencies and refuses a cycle or a missing provider with a message that names them.
"""

from __future__ import annotations

import graphlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

from sqlalchemy import MetaData

from splitstone.kernel.clock import Clock
from splitstone.kernel.db import ModuleDatabase, UnitOfWorkFactory
from splitstone.kernel.events import Event
from splitstone.kernel.messaging.jobs import Every
from splitstone.kernel.settings import ModuleSettings, Settings

if TYPE_CHECKING:
    import httpx
    import typer
    from fastapi import APIRouter

    from splitstone.kernel.ratelimit import RateLimiter
    from splitstone.kernel.secrets import SecretStore

T = TypeVar("T")


class ModuleGraphError(Exception):
    """The declared modules cannot be assembled (cycle, missing dependency, duplicate)."""


@dataclass(frozen=True)
class ModuleContext:
    """Everything the composition root gives a module's factory; nothing else is global."""

    name: str
    settings: Settings
    module_settings: ModuleSettings | None
    db: ModuleDatabase
    uow: UnitOfWorkFactory
    clock: Clock
    secrets: SecretStore
    rate_limiter: RateLimiter
    dependencies: Mapping[type, object]

    def dependency(self, contract: type[T]) -> T:
        """The implementation of a declared dependency's contract (local, or later a remote proxy)."""
        try:
            return cast(T, self.dependencies[contract])
        except KeyError:
            raise ModuleGraphError(
                f"module '{self.name}' asked for {contract.__qualname__}, "
                "which it does not declare in depends_on"
            ) from None


@dataclass(frozen=True)
class RemoteContext:
    """What a module's `remote` hook receives when its contract is served by another service."""

    name: str
    settings: Settings
    module_settings: ModuleSettings | None
    clock: Clock
    client: Any
    """The client generated from the contract: every method is a call to the owning service."""
    base_url: str
    """The owning service's address (`http://host:port`)."""
    http: httpx.AsyncClient
    """The process's pooled HTTP client, for anything else the hook fetches from that service."""


EventHandlerFactory = Callable[[Any], Callable[[Any], Awaitable[None]]]
"""Given the module's implementation, the handler for one event type (runs in the inbox transaction)."""
JobHandlerFactory = Callable[[Any], Callable[[Any], Awaitable[None]]]
"""Given the module's implementation, the handler for one job kind (receives a `Job`)."""
ImplementationProvider = Callable[[], AbstractAsyncContextManager[Any]]
"""Gives a module's CLI its implementation, built by the composition root, for the length of a command."""


@dataclass(frozen=True)
class Module:
    """The declaration of one business module."""

    name: str
    contract: type
    factory: Callable[[ModuleContext], object]
    depends_on: Sequence[type] = ()
    router: Callable[[Any], APIRouter] | None = None
    metadata: MetaData | None = None
    migrations: Path | None = None
    publishes: Sequence[type[Event]] = ()
    subscriptions: Mapping[type[Event], EventHandlerFactory] = field(default_factory=dict)
    jobs: Mapping[str, JobHandlerFactory] = field(default_factory=dict)
    external_jobs: Mapping[str, JobHandlerFactory] = field(default_factory=dict)
    """Job kinds whose handlers act outside the database: run concurrently, outside any transaction."""
    recurring: Sequence[Every] = ()
    """Job kinds (declared in `jobs` or `external_jobs`) that run once per interval."""
    settings: type[ModuleSettings] | None = None
    remote: Callable[[RemoteContext], object] | None = None
    """How other services use this module when it runs elsewhere: given the generated client, the
    implementation of the contract they get (default: the generated client itself)."""
    cli: Callable[[ImplementationProvider], typer.Typer] | None = None
    description: str = ""

    def __post_init__(self) -> None:
        if not self.name.isidentifier() or not self.name.islower():
            raise ModuleGraphError(f"module name {self.name!r} must be a lowercase Python identifier")
        if self.metadata is not None and self.metadata.schema != self.name:
            raise ModuleGraphError(
                f"module '{self.name}' declares tables in schema {self.metadata.schema!r}; "
                f"a module's tables live in the schema named after it"
            )
        both = self.jobs.keys() & self.external_jobs.keys()
        if both:
            raise ModuleGraphError(
                f"module '{self.name}' declares job kinds both transactional and external: {sorted(both)}"
            )
        for every in self.recurring:
            if every.kind not in self.jobs and every.kind not in self.external_jobs:
                raise ModuleGraphError(
                    f"module '{self.name}' runs {every.kind!r} every {every.interval}, "
                    "but declares no handler for it in jobs or external_jobs"
                )
        for kind in [*self.jobs, *self.external_jobs]:
            if not kind.startswith(f"{self.name}."):
                raise ModuleGraphError(
                    f"module '{self.name}' handles job kind {kind!r}; "
                    f"its job kinds are named '{self.name}.<what>'"
                )
        for event_type in self.publishes:
            if not event_type.name.startswith(f"{self.name}."):
                raise ModuleGraphError(
                    f"module '{self.name}' publishes {event_type.__qualname__} named {event_type.name!r}; "
                    f"its events are named '{self.name}.<EventName>'"
                )


def order_modules(modules: Sequence[Module]) -> list[Module]:
    """Modules sorted so that every module comes after the modules whose contracts it uses."""
    by_name: dict[str, Module] = {}
    provider: dict[type, Module] = {}
    for module in modules:
        if module.name in by_name:
            raise ModuleGraphError(f"two modules are named '{module.name}'")
        if module.contract in provider:
            raise ModuleGraphError(
                f"modules '{provider[module.contract].name}' and '{module.name}' both provide "
                f"{module.contract.__qualname__}"
            )
        by_name[module.name] = module
        provider[module.contract] = module

    graph: dict[str, set[str]] = {}
    for module in modules:
        needs: set[str] = set()
        for contract in module.depends_on:
            if contract not in provider:
                known = ", ".join(sorted(c.__qualname__ for c in provider)) or "none"
                raise ModuleGraphError(
                    f"module '{module.name}' depends on {contract.__qualname__}, which no module provides "
                    f"(provided contracts: {known})"
                )
            needs.add(provider[contract].name)
        graph[module.name] = needs

    sorter = graphlib.TopologicalSorter(graph)
    try:
        order = list(sorter.static_order())
    except graphlib.CycleError as error:
        cycle = " -> ".join(error.args[1])
        raise ModuleGraphError(f"modules depend on each other in a cycle: {cycle}") from None
    return [by_name[name] for name in order]


def dependency_edges(modules: Sequence[Module]) -> list[tuple[str, str, str]]:
    """(consumer, provider, contract name) for every declared dependency."""
    provider = {m.contract: m for m in modules}
    return [
        (m.name, provider[c].name, c.__qualname__) for m in modules for c in m.depends_on if c in provider
    ]
