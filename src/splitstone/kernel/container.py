"""The composition root: the one place that builds infrastructure and wires modules together (rule 5)."""

from __future__ import annotations

import secrets as tokens
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import structlog

from splitstone.kernel.clock import Clock, SystemClock
from splitstone.kernel.db import ModuleDatabase, ScheduledJob, UnitOfWorkFactory
from splitstone.kernel.events import Event, EventCatalog, EventRecorder
from splitstone.kernel.messaging.outbox import CommitListener, OutboxSink
from splitstone.kernel.module import (
    Module,
    ModuleContext,
    ModuleGraphError,
    RemoteContext,
    order_modules,
)
from splitstone.kernel.ratelimit import RateLimiter
from splitstone.kernel.secrets import SecretStore
from splitstone.kernel.settings import Environment, ModuleSettings, Settings
from splitstone.kernel.topology import ServiceSpec, Topology, TopologyError, crossings

if TYPE_CHECKING:
    import httpx

    from splitstone.kernel.messaging.worker import Worker
    from splitstone.kernel.remote import RemoteContracts

log = structlog.get_logger("splitstone.events")


@dataclass
class Container:
    """Every module of this process, built in dependency order, with its database and implementation.

    `modules` are the modules this process runs: all of them in the monolith, one service's in a split
    topology. A dependency whose module runs in another service is a remote client of its contract.
    """

    settings: Settings
    modules: list[Module]
    clock: Clock
    rate_limiter: RateLimiter
    catalog: EventCatalog
    recorder: EventRecorder | None = None
    databases: dict[str, ModuleDatabase] = field(default_factory=dict)
    sinks: dict[str, OutboxSink] = field(default_factory=dict)
    units_of_work: dict[str, UnitOfWorkFactory] = field(default_factory=dict)
    implementations: dict[str, object] = field(default_factory=dict)
    contracts: dict[type, object] = field(default_factory=dict)
    topology: Topology | None = None
    service: ServiceSpec | None = None
    service_token: str | None = None
    """The credential of internal contract routes; set when the topology has more than one service."""
    remote: RemoteContracts | None = None
    remote_modules: dict[str, ServiceSpec] = field(default_factory=dict)
    """The modules this process calls in other services, and the service that runs each."""
    remote_implementations: list[object] = field(default_factory=list)

    @classmethod
    def build(
        cls,
        settings: Settings,
        modules: Sequence[Module],
        *,
        clock: Clock | None = None,
        recorder: EventRecorder | None = None,
        rate_limiter: RateLimiter | None = None,
        module_settings: Mapping[str, ModuleSettings] | None = None,
        overrides: Mapping[type, object] | None = None,
        topology: Topology | None = None,
        service: str | None = None,
        remote_transport: httpx.AsyncBaseTransport | None = None,
    ) -> Container:
        """Build the modules of `service` in `topology` (default: one service with every module).

        `overrides` replaces a contract's implementation (a fake, in tests). `recorder` sees every event
        committed in this process (tests read tokens from it). `remote_transport` carries remote contract
        calls (tests route them into an app in the same process).
        """
        everything = order_modules(modules)
        topology = topology or Topology.monolith(
            [m.name for m in everything], f"http://{_url_host(settings.host)}:{settings.port}"
        )
        topology.check_modules(m.name for m in everything)
        spec = _this_service(topology, service)
        ordered = [m for m in everything if m.name in spec.modules]
        _check_event_transport(settings, topology, spec, everything)
        container = cls(
            settings=settings,
            modules=ordered,
            topology=topology,
            service=spec,
            clock=clock or SystemClock(),
            rate_limiter=rate_limiter
            or RateLimiter(settings.rate_limit_storage_url, enabled=settings.rate_limits_enabled),
            catalog=EventCatalog(e for m in ordered for e in [*m.publishes, *m.subscriptions]),
            recorder=recorder,
        )
        secrets = SecretStore(settings.data_dir / "secrets", production=settings.is_production)
        given_settings = dict(module_settings or {})
        overrides = dict(overrides or {})
        if topology.is_split:
            container.service_token = secrets.get(
                "service-token",
                explicit=settings.service_token.get_secret_value() if settings.service_token else None,
                env_var="SPLITSTONE_SERVICE_TOKEN",
                generate=lambda: tokens.token_urlsafe(32),
            )
        by_contract = {m.contract: m for m in everything}
        for module in ordered:
            for contract in module.depends_on:
                provider = by_contract[contract]
                if contract in container.contracts or provider.name in spec.modules:
                    continue
                container.contracts[contract] = (
                    overrides[contract]
                    if contract in overrides
                    else container._remote_contract(
                        provider, topology.service_of(provider.name), given_settings, remote_transport
                    )
                )
            db = ModuleDatabase.connect(
                module.name,
                spec.database_urls.get(module.name) or settings.database_url_for(module.name),
                pool_size=settings.database_pool_size,
                echo=settings.database_echo,
            )
            sink = OutboxSink(db, container.clock, default_job_attempts=settings.job_max_attempts)
            if recorder is not None:
                sink.add_commit_listener(_recording_into(recorder))
            if settings.env is Environment.DEVELOPMENT:
                sink.add_commit_listener(_log_committed)
            uow = UnitOfWorkFactory(db, sink)
            container.databases[module.name] = db
            container.sinks[module.name] = sink
            container.units_of_work[module.name] = uow
            if module.contract in overrides:
                implementation = overrides[module.contract]
            else:
                own_settings = _settings_of(module, given_settings)
                context = ModuleContext(
                    name=module.name,
                    settings=settings,
                    module_settings=own_settings,
                    db=db,
                    uow=uow,
                    clock=container.clock,
                    secrets=secrets,
                    rate_limiter=container.rate_limiter,
                    dependencies={c: container.contracts[c] for c in module.depends_on},
                )
                implementation = module.factory(context)
            _check_implements(module, implementation)
            container.implementations[module.name] = implementation
            container.contracts[module.contract] = implementation
        return container

    def _remote_contract(
        self,
        provider: Module,
        service: ServiceSpec,
        given_settings: Mapping[str, ModuleSettings],
        transport: httpx.AsyncBaseTransport | None,
    ) -> object:
        """The implementation of `provider`'s contract for a module here: a client of `service`."""
        from splitstone.kernel.remote import RemoteContracts  # only a split service needs httpx clients

        assert self.service is not None
        assert self.service_token is not None
        if self.remote is None:
            self.remote = RemoteContracts(
                service_token=self.service_token,
                caller=self.service.name,
                connect_timeout=self.settings.remote_connect_timeout_seconds,
                timeout=self.settings.remote_timeout_seconds,
                retries=self.settings.remote_retries,
                transport=transport,
            )
        self.remote_modules[provider.name] = service
        client = self.remote.client(provider.contract, provider.name, service.url)
        if provider.remote is None:
            implementation = client
        else:
            own_settings = _settings_of(provider, given_settings)
            implementation = provider.remote(
                RemoteContext(
                    name=provider.name,
                    settings=self.settings,
                    module_settings=own_settings,
                    clock=self.clock,
                    client=client,
                    base_url=service.url,
                    http=self.remote.http,
                )
            )
            self.remote_implementations.append(implementation)
        _check_implements(provider, implementation)
        return implementation

    def module(self, name: str) -> Module:
        for module in self.modules:
            if module.name == name:
                return module
        raise KeyError(f"no module named '{name}' (modules: {', '.join(m.name for m in self.modules)})")

    def worker(self) -> Worker:
        """The background side of this process: relays, inbox processors and job runners."""
        from splitstone.kernel.messaging.worker import Worker  # keeps the worker out of API-only imports

        return Worker.for_container(self)

    async def aclose(self) -> None:
        """Close what the modules opened (an implementation may define `async aclose()`), then the remote
        client and the databases. Everything is closed even when one close fails; the first error is
        raised after."""
        implementations = [self.implementations.get(m.name) for m in reversed(self.modules)]
        closes = [getattr(i, "aclose", None) for i in [*implementations, *self.remote_implementations]]
        if self.remote is not None:
            closes.append(self.remote.aclose)
        closes.extend(db.dispose for db in self.databases.values())
        first: BaseException | None = None
        for close in closes:
            if close is None:
                continue
            try:
                await close()
            except Exception as error:
                log.exception("closing failed", what=getattr(close, "__qualname__", repr(close)))
                first = first or error
        if first is not None:
            raise first


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host  # an IPv6 address, such as "::", needs brackets


def _settings_of(module: Module, given: Mapping[str, ModuleSettings]) -> ModuleSettings | None:
    """The module's settings given by the caller (tests), else read by its own settings class."""
    if module.name in given:
        return given[module.name]
    return module.settings() if module.settings is not None else None


def _this_service(topology: Topology, service: str | None) -> ServiceSpec:
    if service is not None:
        return topology.service(service)
    if len(topology.services) == 1:
        return next(iter(topology.services.values()))
    raise TopologyError(
        f"the topology has several services ({', '.join(topology.services)}): "
        "say which one this process is (SPLITSTONE_SERVICE, or --service)"
    )


def _check_event_transport(
    settings: Settings, topology: Topology, spec: ServiceSpec, modules: Sequence[Module]
) -> None:
    """Refuse the in-process transport when an event this service publishes or handles crosses services."""
    if settings.event_transport != "inprocess" or not topology.is_split:
        return
    crossing = sorted(
        f"{flow.name} ({flow.publisher} in '{flow.publisher_service}' → "
        f"{flow.subscriber} in '{flow.subscriber_service}')"
        for flow in crossings(topology, modules).events
        if spec.name in (flow.publisher_service, flow.subscriber_service)
    )
    if crossing:
        raise TopologyError(
            "the in-process event transport cannot carry events between services, and service "
            f"'{spec.name}' has events crossing: {'; '.join(crossing)}. "
            "Set SPLITSTONE_EVENT_TRANSPORT=nats (NATS JetStream), as `splitstone up` does"
        )


def _recording_into(recorder: EventRecorder) -> CommitListener:
    def record(events: Sequence[Event], _jobs: Sequence[ScheduledJob]) -> None:
        recorder.committed(events)

    return record


def _log_committed(events: Sequence[Event], _jobs: Sequence[ScheduledJob]) -> None:
    # Development only, and names only: payloads can hold tokens (the notifications module emails them).
    for event in events:
        log.info(
            "event committed",
            event_name=event.name,
            event_id=str(event.id),
            aggregate_id=str(event.aggregate_id),
        )


def _check_implements(module: Module, implementation: object) -> None:
    """Protocols need not be runtime-checkable; check the contract's methods by name instead."""
    missing = [
        name
        for name, member in vars(module.contract).items()
        if callable(member) and not name.startswith("_") and not hasattr(implementation, name)
    ]
    if missing:
        raise ModuleGraphError(
            f"the implementation of module '{module.name}' lacks contract methods: {', '.join(missing)}"
        )
