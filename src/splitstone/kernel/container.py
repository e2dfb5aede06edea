"""The composition root: the one place that builds infrastructure and wires modules together (rule 5)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from splitstone.kernel.clock import Clock, SystemClock
from splitstone.kernel.db import ModuleDatabase, UnitOfWorkFactory
from splitstone.kernel.events import InProcessEventBus
from splitstone.kernel.module import Module, ModuleContext, ModuleGraphError, order_modules
from splitstone.kernel.ratelimit import RateLimiter
from splitstone.kernel.secrets import SecretStore
from splitstone.kernel.settings import Environment, ModuleSettings, Settings


@dataclass
class Container:
    """Every module of this process, built in dependency order, with its database and implementation."""

    settings: Settings
    modules: list[Module]
    clock: Clock
    event_bus: InProcessEventBus
    rate_limiter: RateLimiter
    databases: dict[str, ModuleDatabase] = field(default_factory=dict)
    implementations: dict[str, object] = field(default_factory=dict)
    contracts: dict[type, object] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        settings: Settings,
        modules: Sequence[Module],
        *,
        clock: Clock | None = None,
        event_bus: InProcessEventBus | None = None,
        rate_limiter: RateLimiter | None = None,
        module_settings: Mapping[str, ModuleSettings] | None = None,
        overrides: Mapping[type, object] | None = None,
    ) -> Container:
        """Build every module. `overrides` replaces a contract's implementation (a fake, in tests)."""
        ordered = order_modules(modules)
        container = cls(
            settings=settings,
            modules=ordered,
            clock=clock or SystemClock(),
            event_bus=event_bus or InProcessEventBus(log_payloads=settings.env is Environment.DEVELOPMENT),
            rate_limiter=rate_limiter
            or RateLimiter(settings.rate_limit_storage_url, enabled=settings.rate_limits_enabled),
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
            container.databases[module.name] = db
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
                    uow=UnitOfWorkFactory(db, container.event_bus),
                    clock=container.clock,
                    secrets=secrets,
                    rate_limiter=container.rate_limiter,
                    dependencies={c: container.contracts[c] for c in module.depends_on},
                )
                implementation = module.factory(context)
            # By method names: isinstance() raises TypeError on a Protocol that is not runtime-checkable.
            _check_implements(module, implementation)
            container.implementations[module.name] = implementation
            container.contracts[module.contract] = implementation
        for module in ordered:
            for event_type, handler_factory in module.subscriptions.items():
                container.event_bus.subscribe(
                    event_type, handler_factory(container.implementations[module.name])
                )
        return container

    def module(self, name: str) -> Module:
        for module in self.modules:
            if module.name == name:
                return module
        raise KeyError(f"no module named '{name}' (modules: {', '.join(m.name for m in self.modules)})")

    async def aclose(self) -> None:
        for db in self.databases.values():
            await db.dispose()


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
