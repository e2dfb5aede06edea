"""The application's composition root: which modules this product is made of, and how to build it.

The kernel never imports a module; this file is where the two meet.
"""

from __future__ import annotations

from fastapi import FastAPI

from splitstone.kernel.app import create_app as create_kernel_app
from splitstone.kernel.container import Container
from splitstone.kernel.logging import configure_logging
from splitstone.kernel.module import Module
from splitstone.kernel.settings import Settings
from splitstone.kernel.topology import Topology
from splitstone.modules.auth.module import module as auth
from splitstone.modules.billing.module import module as billing
from splitstone.modules.notifications.module import module as notifications
from splitstone.modules.projects.module import module as projects

MODULES: tuple[Module, ...] = (
    auth,
    billing,
    notifications,
    projects,
    # new-module inserts above this line: modules
)


def topology_of(settings: Settings) -> Topology | None:
    """The topology named by the settings (`SPLITSTONE_TOPOLOGY`), or None for the monolith."""
    return Topology.load(settings.topology) if settings.topology is not None else None


def build_container(settings: Settings | None = None, **options: object) -> Container:
    """This process's modules: every one, or those of `SPLITSTONE_SERVICE` in `SPLITSTONE_TOPOLOGY`."""
    settings = settings or Settings()
    options.setdefault("topology", topology_of(settings))
    options.setdefault("service", settings.service)
    return Container.build(settings, MODULES, **options)  # type: ignore[arg-type]


def create_app(settings: Settings | None = None) -> FastAPI:
    """The whole backend as one ASGI app (uvicorn: `splitstone.bootstrap:create_app --factory`).

    It runs the worker inside unless `SPLITSTONE_RUN_WORKER=false` (`splitstone serve --no-worker`).
    """
    settings = settings or Settings()
    configure_logging(level=settings.log_level, json=settings.json_logs())
    return create_kernel_app(build_container(settings), run_worker=settings.run_worker)
