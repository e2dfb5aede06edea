"""The composition root: the one place that builds infrastructure and wires modules together (rule 5)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import structlog

from splitstone.kernel.clock import Clock, SystemClock
from splitstone.kernel.db import ModuleDatabase, ScheduledJob, UnitOfWorkFactory
from splitstone.kernel.events import Event, EventCatalog, EventRecorder
from splitstone.kernel.messaging.outbox import CommitListener, OutboxSink
from splitstone.kernel.module import Module, ModuleContext, ModuleGraphError, order_modules
from splitstone.kernel.ratelimit import RateLimiter
from splitstone.kernel.secrets import SecretStore
from splitstone.kernel.settings import Environment, ModuleSettings, Settings

if TYPE_CHECKING:
    from splitstone.kernel.messaging.worker import Worker

log = structlog.get_logger("splitstone.events")


@dataclass
class Container:
    """Every module of this process, built in dependency order, with its database and implementation."""

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
    ) -> Container:
        """Build every module. `overrides` replaces a contract's implementation (a fake, in tests).

        `recorder` sees every event committed in this process (tests read tokens from it).
        """
        ordered = order_modules(modules)
        container = cls(
            settings=settings,
            modules=ordered,
            clock=clock or SystemClock(),
            rate_limiter=rate_limiter
            or RateLimiter(settings.rate_limit_storage_url, enabled=settings.rate_limits_enabled),
            catalog=EventCatalog(e for m in ordered for e in [*m.publishes, *m.subscriptions]),
            recorder=recorder,
        )
        secrets = SecretStore(settings.data_dir / "secrets", production=settings.is_production)
        given_settings = dict(module_settings or {})
        overrides = dict(overrides or {})
        for module in ordered:
            db = ModuleDatabase.connect(
                module.name,
                settings.database_url_for(module.name),
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
                own_settings = given_settings.get(module.name)
                if own_settings is None and module.settings is not None:
                    own_settings = module.settings()
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
        """Close what the modules opened (an implementation may define `async aclose()`), then databases."""
        for module in reversed(self.modules):
            close = getattr(self.implementations.get(module.name), "aclose", None)
            if close is not None:
                await close()
        for db in self.databases.values():
            await db.dispose()


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
