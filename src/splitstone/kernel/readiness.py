"""Readiness of one process: its modules' databases (answering and migrated), NATS when events travel
through it, and the services whose contracts it calls.

A module that is migrated once stays migrated for the life of the process, so that check runs until it
first passes; the broker and the called services are asked each time, under a short timeout, so a
probe never hangs on them.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from splitstone.kernel import migrations
from splitstone.kernel.container import Container

PROBE_TIMEOUT_SECONDS = 2.0


@dataclass
class Readiness:
    container: Container
    _migrated: set[str] = field(default_factory=set)

    async def check(self, worker: Any = None) -> tuple[bool, dict[str, Any]]:
        """(ready, report): the report names each check with "ok" or why it fails."""
        container = self.container
        states = await asyncio.gather(*map(self._module, container.modules))
        report: dict[str, Any] = {
            "modules": {m.name: state for m, state in zip(container.modules, states, strict=True)}
        }
        checks = list(states)
        if container.settings.event_transport == "nats":
            report["events"] = await self._nats(worker)
            checks.append(report["events"])
        if container.remote_modules:
            report["services"] = await self._services()
            checks.extend(report["services"].values())
        if container.topology is not None and container.topology.is_split and container.service:
            report["service"] = container.service.name
        return all(state == "ok" for state in checks), report

    async def _module(self, module: Any) -> str:
        db = self.container.databases[module.name]
        try:
            await asyncio.wait_for(db.ping(), PROBE_TIMEOUT_SECONDS)
            if module.name not in self._migrated:
                behind = [
                    s for s in await migrations.status_module(db, module.migrations) if not s.up_to_date
                ]
                if behind:
                    return "; ".join(
                        f"{s.history} history not migrated (at {s.current}, head {s.head})" for s in behind
                    )
                self._migrated.add(module.name)
            return "ok"
        except Exception as error:  # any failure means "not ready", with the reason shown
            return f"database unavailable: {type(error).__name__}"

    async def _nats(self, worker: Any) -> str:
        transport = getattr(worker, "transport", None)
        if transport is not None and hasattr(transport, "ready"):
            return "ok" if transport.ready else "NATS JetStream not connected"
        import nats  # only a process whose events travel through NATS asks

        try:
            client = await nats.connect(
                self.container.settings.nats_url,
                connect_timeout=PROBE_TIMEOUT_SECONDS,
                allow_reconnect=False,
                max_reconnect_attempts=0,
            )
        except Exception as error:
            return f"NATS unavailable: {type(error).__name__}"
        try:
            await asyncio.wait_for(client.jetstream().account_info(), PROBE_TIMEOUT_SECONDS)
        except Exception as error:
            return f"NATS JetStream unavailable: {type(error).__name__}"
        finally:
            await client.close()
        return "ok"

    async def _services(self) -> dict[str, str]:
        remote = self.container.remote
        assert remote is not None
        by_service: dict[str, list[str]] = {}
        for module, service in self.container.remote_modules.items():
            by_service.setdefault(service.name, []).append(module)

        async def ping(service: str, modules: list[str]) -> tuple[str, str]:
            spec = self.container.remote_modules[modules[0]]
            try:
                for module in modules:
                    await asyncio.wait_for(remote.ping(module, spec.url), PROBE_TIMEOUT_SECONDS)
            except Exception as error:
                return service, f"unavailable at {spec.url}: {type(error).__name__}"
            return service, "ok"

        return dict(await asyncio.gather(*(ping(s, m) for s, m in sorted(by_service.items()))))
