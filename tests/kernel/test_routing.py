"""Routing as the app serves it: module routers skipped at once for paths not theirs, and the GC set-up."""

from __future__ import annotations

import gc

import httpx
from fastapi import APIRouter, FastAPI
from starlette.routing import Match

from splitstone.kernel.app import create_app
from splitstone.kernel.container import Container
from splitstone.kernel.http.routing import IndexedRouter, indexed


def _module(name: str) -> APIRouter:
    inner = IndexedRouter(prefix=f"/api/{name}")

    @inner.get("/items/{item_id}")
    async def get_item(item_id: str) -> dict[str, str]:
        return {"module": name, "item": item_id}

    @inner.post("/items")
    async def add_item() -> dict[str, str]:
        return {"module": name}

    outer = APIRouter()
    outer.include_router(inner)
    return outer


def _scope(path: str, method: str = "GET") -> dict[str, object]:
    return {"type": "http", "path": path, "root_path": "", "method": method, "headers": []}


def test_an_indexed_router_refuses_a_path_none_of_its_routes_match() -> None:
    router = indexed(_module("a"))
    app = FastAPI()
    app.include_router(router)  # as the kernel includes it
    assert router.matches(_scope("/api/b/items/1")) == (Match.NONE, {})
    assert router.matches(_scope("/api/a/items/1/more")) == (Match.NONE, {})


async def test_requests_reach_the_right_module_and_methods_and_misses_answer_as_before() -> None:
    app = FastAPI()
    for name in ("a", "b"):
        app.include_router(indexed(_module(name)))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
        assert (await http.get("/api/b/items/7")).json() == {"module": "b", "item": "7"}
        assert (await http.post("/api/a/items")).json() == {"module": "a"}
        assert (await http.delete("/api/b/items/7")).status_code == 405
        assert (await http.get("/api/c/items/7")).status_code == 404


async def test_the_app_freezes_its_startup_heap_while_it_serves(notes_container: Container) -> None:
    app = create_app(notes_container)
    thresholds = gc.get_threshold()
    async with app.router.lifespan_context(app):
        assert gc.get_freeze_count() > 10_000
        assert gc.get_threshold()[0] == 10_000
    assert gc.get_freeze_count() == 0
    assert gc.get_threshold() == thresholds
