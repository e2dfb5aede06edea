"""Topologies: which service runs which modules, where each listens, and where each module's tables live.

A topology is a TOML file (see `topologies/`). The default is one service that runs every module: the
monolith. Nothing in a module changes between topologies; the composition root reads the topology and
gives each module local implementations of the contracts whose modules run in the same service, and
remote clients for the others.

```toml
version = 1
public_url = "http://127.0.0.1:8000"   # what clients see: the reverse proxy
events = "nats"                         # how events travel between services (default: nats when split)

[services.identity]
modules = ["auth"]
url = "http://127.0.0.1:8101"           # where the service listens, and where other services call it

[services.identity.database_urls]
auth = "${SPLITSTONE_AUTH_DATABASE_URL:-postgresql+asyncpg://root@127.0.0.1/splitstone}"
```

String values may use `${VAR}` and `${VAR:-default}`, read from the environment when the file is loaded.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from splitstone.kernel.module import Module

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

DEFAULT_SERVICE = "app"
_SERVICE_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,30}$")
_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class TopologyError(ValueError):
    """A topology that cannot be run, with a message that says what to change."""


class ServiceSpec(BaseModel):
    """One service: the modules it runs and the address it listens on."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = ""
    modules: tuple[str, ...] = Field(min_length=1)
    url: str = Field(description="http://host:port where the service listens and is called by others.")
    worker: Literal["inline", "separate"] = Field(
        default="separate",
        description="Run the worker inside the API process, or as its own process (`splitstone up`).",
    )
    database_urls: dict[str, str] = Field(default_factory=dict)
    env: dict[str, str] = Field(
        default_factory=dict, description="Extra environment for this service's processes."
    )

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        return _bare_http_url(value)

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        port = urlsplit(self.url).port
        assert port is not None  # checked by the validator
        return port


class Topology(BaseModel):
    """Services and their modules; `load` a file, or `monolith` for the default."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: Literal[1] = 1
    public_url: str = "http://127.0.0.1:8000"
    events: Literal["inprocess", "nats"] | None = Field(
        default=None, description="Event transport; default: in-process for one service, NATS when split."
    )
    services: dict[str, ServiceSpec] = Field(min_length=1)
    source: str | None = Field(default=None, exclude=True)

    @field_validator("public_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        return _bare_http_url(value)  # where the proxy listens: a path or https could not be honoured

    @model_validator(mode="before")
    @classmethod
    def _name_services(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("services"), dict):
            services = {}
            for name, spec in data["services"].items():
                services[name] = {**spec, "name": name} if isinstance(spec, dict) else spec
            data = {**data, "services": services}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> Topology:
        owner: dict[str, str] = {}
        addresses: dict[tuple[str, int], str] = {}
        for name, service in self.services.items():
            if not _SERVICE_NAME.match(name):
                raise ValueError(
                    f"service name {name!r}: lowercase letters, digits, '-' or '_', starting with a letter"
                )
            for module in service.modules:
                if module in owner:
                    raise ValueError(f"module '{module}' is in two services: '{owner[module]}' and '{name}'")
                owner[module] = name
            stray = set(service.database_urls) - set(service.modules)
            if stray:
                raise ValueError(
                    f"service '{name}' sets database URLs for modules it does not run: {sorted(stray)}"
                )
            address = (service.host, service.port)
            if address in addresses:
                raise ValueError(f"services '{addresses[address]}' and '{name}' both listen on {service.url}")
            addresses[address] = name
        if self.events == "inprocess" and len(self.services) > 1:
            raise ValueError(
                "events = 'inprocess' cannot carry events between services; "
                "use events = 'nats' (NATS JetStream) when the topology has more than one service"
            )
        return self

    @classmethod
    def monolith(cls, modules: Iterable[str], url: str = "http://127.0.0.1:8000") -> Topology:
        """One service running every module: the default."""
        return cls(
            public_url=url,
            services={DEFAULT_SERVICE: ServiceSpec(name=DEFAULT_SERVICE, modules=tuple(modules), url=url)},
        )

    @classmethod
    def load(cls, path: Path, environ: Mapping[str, str] | None = None) -> Topology:
        """Read a topology file; `${VAR}` and `${VAR:-default}` come from `environ` (default: os.environ)."""
        try:
            raw = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise TopologyError(f"no topology file at {path}") from None
        except tomllib.TOMLDecodeError as error:
            raise TopologyError(f"{path} is not valid TOML: {error}") from None
        expanded = _expand(raw, os.environ if environ is None else environ, path)
        try:
            return cls.model_validate({**expanded, "source": str(path)})
        except ValidationError as error:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'topology'}: {e['msg']}" for e in error.errors()
            )
            raise TopologyError(f"{path}: {problems}") from None

    @property
    def is_split(self) -> bool:
        return len(self.services) > 1

    @property
    def event_transport(self) -> Literal["inprocess", "nats"]:
        if self.events is not None:
            return self.events
        return "nats" if self.is_split else "inprocess"

    def modules(self) -> list[str]:
        return [m for s in self.services.values() for m in s.modules]

    def service(self, name: str) -> ServiceSpec:
        try:
            return self.services[name]
        except KeyError:
            raise TopologyError(
                f"no service named '{name}' in the topology (services: {', '.join(self.services)})"
            ) from None

    def service_of(self, module: str) -> ServiceSpec:
        for service in self.services.values():
            if module in service.modules:
                return service
        raise TopologyError(f"no service of the topology runs module '{module}'")

    def check_modules(self, known: Iterable[str]) -> None:
        """Every module of the product runs in exactly one service, and the topology names no other."""
        known = list(known)
        placed = self.modules()
        unknown = sorted(set(placed) - set(known))
        if unknown:
            raise TopologyError(
                f"the topology runs modules that do not exist: {', '.join(unknown)} "
                f"(modules: {', '.join(known)})"
            )
        missing = [m for m in known if m not in placed]
        if missing:
            raise TopologyError(f"the topology runs no service for modules: {', '.join(missing)}")


def _bare_http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme != "http" or not parts.hostname or parts.port is None:
        raise ValueError(f"must be http://host:port, not {value!r}")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"must be a bare http://host:port, not {value!r}")
    return value.rstrip("/")


def _expand(value: Any, environ: Mapping[str, str], path: Path) -> Any:
    if isinstance(value, str):

        def substitute(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in environ and environ[name] != "":
                return environ[name]
            if default is not None:
                return default
            raise TopologyError(f"{path}: ${{{name}}} is not set (write ${{{name}:-default}} for a default)")

        return _VARIABLE.sub(substitute, value)
    if isinstance(value, dict):
        return {k: _expand(v, environ, path) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, environ, path) for v in value]
    return value


# --- what crosses between services ------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    consumer: str
    consumer_service: str
    provider: str
    provider_service: str
    contract: str


@dataclass(frozen=True)
class EventFlow:
    name: str
    publisher: str
    publisher_service: str
    subscriber: str
    subscriber_service: str


@dataclass(frozen=True)
class Crossings:
    calls: list[Call]
    events: list[EventFlow]


def crossings(topology: Topology, modules: Sequence[Module]) -> Crossings:
    """The contract calls (from `depends_on`) and events (publishers to subscribers) between services."""
    provider = {m.contract: m for m in modules}
    publisher = {event: m for m in modules for event in m.publishes}
    calls: list[Call] = []
    events: list[EventFlow] = []
    for module in modules:
        here = topology.service_of(module.name).name
        for contract in module.depends_on:
            owner = provider[contract]
            there = topology.service_of(owner.name).name
            if there != here:
                calls.append(Call(module.name, here, owner.name, there, contract.__qualname__))
        for event in module.subscriptions:
            source = publisher.get(event)
            if source is None:
                continue
            there = topology.service_of(source.name).name
            if there != here:
                events.append(EventFlow(event.name, source.name, there, module.name, here))
    return Crossings(calls, events)
