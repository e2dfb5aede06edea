"""Which public paths each module serves, read from the modules' own routers.

The table is what the monolith would route: the route templates of every module, in the order the
monolith's app matches them. A proxy in front of a split topology sends a path to the service that runs
the module owning the first template it matches, so a path means the same thing in both deployments.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fastapi.routing
from starlette.convertors import CONVERTOR_TYPES
from starlette.responses import StreamingResponse
from starlette.routing import PARAM_REGEX, BaseRoute, Mount

from splitstone.kernel.container import Container
from splitstone.kernel.module import Module
from splitstone.kernel.ratelimit import RateLimiter
from splitstone.kernel.settings import Environment, ModuleSettings, Settings
from splitstone.kernel.topology import Topology, TopologyError

SERVICES_PREFIX = "/services"
"""`/services/<name>/healthz|readyz|openapi.json`: one service's own probes and schema, through the proxy."""
SERVICE_PATHS = ("healthz", "readyz", "openapi.json")
RESERVED = ("/healthz", "/readyz", "/docs", "/openapi.json", "/internal", SERVICES_PREFIX)
"""Paths the proxy answers itself (or refuses); no module may serve them or anything below them."""
EVENT_STREAM = "text/event-stream"


class RouteConflict(TopologyError):
    """Two modules claim the same public path, or a module claims one the proxy reserves."""


@dataclass(frozen=True)
class Route:
    """One public path template of a module, e.g. `/api/v1/orgs/{org_id}/billing/usage`."""

    module: str
    path: str
    methods: frozenset[str]
    streaming: bool = False
    """Its responses stream (Server-Sent Events): a proxy must pass them on unbuffered."""

    @property
    def regex(self) -> str:
        """An anchored regular expression (PCRE and Python) for the paths the template matches."""
        return template_regex(self.path)


@dataclass(frozen=True)
class ServiceRoute:
    service: str
    route: Route


@dataclass(frozen=True)
class RouteTable:
    """Every module's routes in the monolith's matching order, and the monolith's OpenAPI document."""

    routes: tuple[Route, ...]
    openapi: Mapping[str, Any]

    def templates(self) -> dict[str, list[str]]:
        """Each module's path templates, in matching order."""
        result: dict[str, list[str]] = {}
        for route in self.routes:
            result.setdefault(route.module, []).append(route.path)
        return result

    def for_topology(self, topology: Topology) -> list[ServiceRoute]:
        """Each route with the service that answers it, in matching order."""
        return [ServiceRoute(topology.service_of(r.module).name, r) for r in self.routes]


def template_regex(template: str) -> str:
    """`/orgs/{org_id}/files/{name:path}` -> `^/orgs/[^/]+/files/.*$`: Starlette's own convertors.

    A trailing slash is optional, as in the app (which redirects to the declared form).
    """
    parts: list[str] = []
    position = 0
    for match in PARAM_REGEX.finditer(template):
        parts.append(_escape(template[position : match.start()]))
        convertor = (match.group(2) or ":str")[1:]
        if convertor not in CONVERTOR_TYPES:
            raise RouteConflict(f"route {template!r} uses an unknown path convertor {convertor!r}")
        regex = CONVERTOR_TYPES[convertor].regex
        parts.append(f"(?:{regex})" if "|" in regex else regex)
        position = match.end()
    parts.append(_escape(template[position:]))
    body = "".join(parts)
    if body.endswith("/") or body.endswith(".*"):
        return f"^{body}$"
    return f"^{body}/?$"


def _escape(literal: str) -> str:
    # Only what is special to a regex: `re.escape` also escapes '-', '/'..., noise in an nginx config.
    return re.sub(r"([.^$*+?()\[\]{}|\\])", r"\\\1", literal)


def collect_routes(container: Container) -> RouteTable:
    """The routes of every module of a built container, as its app would match them.

    Builds the routers (and the app, for its OpenAPI document) without starting anything.
    """
    from splitstone.kernel.app import create_app  # the app imports the HTTP stack; routes need it only here

    routes: list[Route] = []
    for module in container.modules:
        if module.router is None:
            continue
        router = module.router(container.implementations[module.name])
        routes.extend(_module_routes(module.name, router.routes))
    table = RouteTable(routes=tuple(_merged(routes)), openapi=create_app(container).openapi())
    check_routes(table)
    return table


async def collect_routes_of(modules: Sequence[Module]) -> RouteTable:
    """The routes of these modules, from a monolith built in a throwaway directory.

    Building a container opens no database and no connection; the modules' factories may write generated
    secrets and folders under the data directory, which is temporary here. Module settings are their
    defaults (the environment is not read), so a route must not depend on a setting.
    """
    with tempfile.TemporaryDirectory(prefix="splitstone-routes-") as directory:
        settings = Settings.model_construct(env=Environment.TEST, data_dir=Path(directory))
        module_settings: dict[str, ModuleSettings] = {
            m.name: m.settings.model_construct() for m in modules if m.settings is not None
        }
        container = Container.build(
            settings,
            modules,
            module_settings=module_settings,
            rate_limiter=RateLimiter("memory://", enabled=False),
        )
        try:
            return collect_routes(container)
        finally:
            await container.aclose()


def check_routes(table: RouteTable) -> None:
    """Refuse a table a path-based proxy cannot route as the monolith does."""
    for route in table.routes:
        for reserved in RESERVED:
            if route.path == reserved or route.path.startswith(reserved + "/"):
                raise RouteConflict(
                    f"module '{route.module}' serves {route.path}, but the proxy answers {reserved} itself"
                )
    for i, first in enumerate(table.routes):
        for second in table.routes[i + 1 :]:
            if first.module != second.module and _overlap(first.path, second.path):
                raise RouteConflict(
                    f"modules '{first.module}' ({first.path}) and '{second.module}' ({second.path}) both "
                    "match some paths: once they run in different services, a proxy cannot tell whose a "
                    "request is; give one of them a distinct path"
                )


def _module_routes(module: str, routes: Sequence[BaseRoute]) -> Iterator[Route]:
    for path, methods, route in _flattened(routes):
        if isinstance(route, Mount):
            path = path.rstrip("/") + "/{path:path}"
        yield Route(
            module=module,
            path=path,
            methods=frozenset(methods or {"GET"}),
            streaming=_streams(route),
        )


def _flattened(routes: Sequence[BaseRoute]) -> Iterator[tuple[str, Iterable[str] | None, BaseRoute]]:
    """(full path, methods, route) of every route, included routers flattened with their prefixes."""
    # FastAPI >= 0.16x keeps included routers as nodes; `iter_route_contexts` resolves them. Before it,
    # `include_router` copied the routes, prefixes applied.
    iterate = getattr(fastapi.routing, "iter_route_contexts", None)
    if iterate is None:
        for route in routes:
            yield getattr(route, "path", ""), getattr(route, "methods", None), route
        return
    for context in iterate(routes):
        yield context.path or "", context.methods, context.original_route


def _streams(route: BaseRoute) -> bool:
    response_class = getattr(route, "response_class", None)
    response_class = getattr(response_class, "value", response_class)  # FastAPI's DefaultPlaceholder
    if isinstance(response_class, type) and issubclass(response_class, StreamingResponse):
        return True
    if getattr(response_class, "__name__", "") == "EventSourceResponse":  # sse-starlette's
        return True
    responses: Mapping[Any, Any] = getattr(route, "responses", None) or {}
    return any(EVENT_STREAM in (r.get("content") or {}) for r in responses.values() if isinstance(r, dict))


def _merged(routes: Iterable[Route]) -> Iterator[Route]:
    """One entry per (module, template), at its first position, with the methods of all."""
    seen: dict[tuple[str, str], Route] = {}
    order: list[tuple[str, str]] = []
    for route in routes:
        key = (route.module, route.path)
        if key in seen:
            before = seen[key]
            seen[key] = Route(
                route.module, route.path, before.methods | route.methods, before.streaming or route.streaming
            )
        else:
            seen[key] = route
            order.append(key)
    for key in order:
        yield seen[key]


def _overlap(first: str, second: str) -> bool:
    """Whether some path matches both templates (segment by segment; `:path` overlaps its prefix)."""
    a, b = first.strip("/").split("/"), second.strip("/").split("/")
    for i in range(max(len(a), len(b))):
        if i >= len(a) or i >= len(b):
            return False
        x, y = a[i], b[i]
        if ":path}" in x or ":path}" in y:
            return _segment_overlap(x, y)
        if not _segment_overlap(x, y):
            return False
    return True


def _segment_overlap(x: str, y: str) -> bool:
    x_param, y_param = bool(PARAM_REGEX.search(x)), bool(PARAM_REGEX.search(y))
    if not x_param and not y_param:
        return x == y
    if x_param and y_param:
        return True  # conservative: two parameterised segments may match the same text
    literal, template = (y, x) if x_param else (x, y)
    return re.fullmatch(template_regex("/" + template)[1:-1].removesuffix("/?"), "/" + literal) is not None
