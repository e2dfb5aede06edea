"""Routing cost: a module's routes are skipped in one step for a path none of them matches.

FastAPI (0.16x) keeps an included router as a node of a tree and matches a request by asking each node
for each of its routes in turn, at about 1.3 us a route, and again on the way down to the one that
matched. A request to a module included late tried its way through every other module's routes first:
some 200 us per request to `/api/v1/orgs/{org}/tasks/...`, more than the task's database reads. An
`IndexedRouter` holds one regular expression of all its routes' paths and answers "not here" at once.
"""

from __future__ import annotations

import re
from typing import Any

import fastapi.routing
from fastapi import APIRouter
from starlette.routing import Match, Route, compile_path
from starlette.types import Scope

_GROUP_NAME = re.compile(r"\(\?P<[^>]+>")


class IndexedRouter(APIRouter):
    """An `APIRouter` that says at once when a path is none of its routes'; FastAPI then skips it.

    Anything else (which route, a method that is not allowed, a Mount) is FastAPI's own matching.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._paths: re.Pattern[str] | None = None
        self._indexed_routes: list[Any] | None = None

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] == "http" and not scope.get("root_path"):
            paths = self._index()
            if paths is not None and paths.match(scope["path"]) is None:
                return Match.NONE, {}
        return super().matches(scope)

    def _index(self) -> re.Pattern[str] | None:
        """One pattern for every route's path; None (no shortcut) if a route is not a plain path."""
        if self._indexed_routes != self.routes:  # routes added since: index again
            self._paths = _paths_of(self.routes)
            self._indexed_routes = list(self.routes)
        return self._paths


def indexed(router: APIRouter) -> IndexedRouter:
    """`router` itself if it is an `IndexedRouter`, else included in one (no prefix, tags or dependencies:
    nothing else changes)."""
    if isinstance(router, IndexedRouter):
        return router
    wrapper = IndexedRouter()
    wrapper.include_router(router)
    return wrapper


def _paths_of(routes: list[Any]) -> re.Pattern[str] | None:
    iterate = getattr(fastapi.routing, "iter_route_contexts", None)
    if iterate is None:  # an older FastAPI copies included routes, and has no node to skip
        return None
    patterns = []
    for context in iterate(routes):
        if not isinstance(context.original_route, Route) or not context.path:
            return None
        regex, _, _ = compile_path(context.path)
        patterns.append(_GROUP_NAME.sub("(?:", regex.pattern))
    return re.compile("|".join(f"(?:{pattern})" for pattern in patterns))
