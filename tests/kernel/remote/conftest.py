"""A toy shop served on the internal route, in-process (ASGI) and over real HTTP (uvicorn, loopback).

`Gate` sits in front of the served app: it counts the requests that reach the server, keeps the
headers of the last one per path, and can answer the next few with a bare 503 like a proxy whose
upstream is down.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import httpx
import pytest
from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send
from uuid6 import uuid7

from splitstone.kernel.errors import DomainError, NotFound, RateLimited, ServiceUnavailable
from splitstone.kernel.http.middleware import RequestContextMiddleware
from splitstone.kernel.http.problems import install_problem_handlers
from splitstone.kernel.remote import RemoteContracts, internal_router
from tests.kernel.remote.toy import Colour, Echo, Item, ItemNotFound, OutOfStock, ShopApi
from tests.support.servers import RunningApp, serve_in_thread

TOKEN = "s3rvice-t0ken-for-tests"
CALLER = "storefront"


class QuotaExhausted(DomainError):
    """An error the shop raises that its contract does not declare (a code the client cannot know)."""

    code = "quota-exhausted"
    status = 402
    title = "The quota is exhausted"


class ShelfNotFound(NotFound):
    code = "shelf-not-found"
    title = "Shelf not found"


class Shop:
    """The implementation of `ShopApi`; `delay` slows every call down."""

    def __init__(self) -> None:
        self.delay = 0.0
        self.items: dict[UUID, Item] = {}
        self.stocked: dict[UUID, int] = {}
        self.restocks: dict[str, int] = {}

    def add(self, name: str, quantity: int) -> Item:
        item = Item(
            id=uuid7(), name=name, colour=Colour.RED, tags=frozenset({"new"}), made_at=datetime.now(UTC)
        )
        self.items[item.id] = item
        self.stocked[item.id] = quantity
        return item

    async def _pause(self) -> None:
        if self.delay:
            await asyncio.sleep(self.delay)

    async def echo(
        self,
        ids: list[UUID],
        when: datetime,
        colour: Colour,
        tags: frozenset[str],
        item: Item,
        note: str | None = None,
    ) -> Echo:
        await self._pause()
        # The implementation receives the declared types, not their JSON forms.
        assert all(isinstance(i, UUID) for i in ids)
        assert isinstance(when, datetime)
        assert isinstance(colour, Colour)
        assert isinstance(tags, frozenset)
        assert isinstance(item, Item)
        return Echo(ids=ids, when=when, colour=colour, tags=tags, item=item, note=note)

    async def get_item(self, item_id: UUID) -> Item:
        await self._pause()
        try:
            return self.items[item_id]
        except KeyError:
            raise ItemNotFound(f"No item {item_id}.") from None

    async def stock(self) -> dict[UUID, int]:
        await self._pause()
        return dict(self.stocked)

    async def reserve(self, item_id: UUID, quantity: int) -> int:
        await self._pause()
        available = self.stocked.get(item_id, 0)
        if quantity > available:
            raise OutOfStock(
                f"Only {available} left of {item_id}.", item_id=str(item_id), available=available
            )
        self.stocked[item_id] = available - quantity
        return self.stocked[item_id]

    async def restock(self, item_id: UUID, quantity: int, idempotency_key: str) -> int:
        await self._pause()
        if idempotency_key not in self.restocks:
            self.stocked[item_id] = self.stocked.get(item_id, 0) + quantity
            self.restocks[idempotency_key] = self.stocked[item_id]
        return self.restocks[idempotency_key]

    async def forget(self, item_id: UUID) -> None:
        await self._pause()
        self.items.pop(item_id, None)
        self.stocked.pop(item_id, None)

    async def fail(self, how: str) -> None:
        await self._pause()
        errors: dict[str, Exception] = {
            "rate-limited": RateLimited(retry_after=7),
            "quota": QuotaExhausted("Five of five used.", limit=5, upgrade_plans=["pro"]),
            "shelf": ShelfNotFound(),
            "unavailable": ServiceUnavailable("The warehouse is down."),
            "bug": RuntimeError("a bug"),
        }
        raise errors[how]


class Gate:
    """ASGI middleware: counts requests per path, keeps the last one's headers, can refuse the next few
    (`refuse_next`) with a bare `refuse_with` status."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.hits: Counter[str] = Counter()
        self.headers: dict[str, dict[str, str]] = {}
        self.refuse_next = 0
        self.refuse_with = 503

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.hits[scope["path"]] += 1
            self.headers[scope["path"]] = {k.decode(): v.decode() for k, v in scope["headers"]}
            if self.refuse_next:
                self.refuse_next -= 1
                await send({"type": "http.response.start", "status": self.refuse_with, "headers": []})
                await send({"type": "http.response.body", "body": b"upstream unavailable"})
                return
        await self.app(scope, receive, send)


def shop_app(shop: object, *, module: str = "shop") -> FastAPI:
    """An application serving `shop` on the internal route, with the kernel's problem handlers."""
    app = FastAPI()
    install_problem_handlers(app)
    app.include_router(internal_router(module, ShopApi, shop, service_token=TOKEN))
    app.add_middleware(RequestContextMiddleware)
    return app


@dataclass
class Peer:
    """A served shop, and how to reach it."""

    kind: str
    base_url: str
    shop: Shop
    gate: Gate
    transport: httpx.AsyncBaseTransport | None

    def contracts(self, **options: Any) -> RemoteContracts:
        settings: dict[str, Any] = {
            "service_token": TOKEN,
            "caller": CALLER,
            "connect_timeout": 1.0,
            "timeout": 5.0,
            "retries": 2,
        }
        return RemoteContracts(**{**settings, **options}, transport=self.transport)

    def raw(self) -> httpx.AsyncClient:
        """A plain client to the peer, without the service token."""
        return httpx.AsyncClient(base_url=self.base_url, transport=self.transport, timeout=5)


def serve(app: ASGIApp) -> AbstractContextManager[RunningApp]:
    """`app` on a free loopback port, run by uvicorn in a thread, for the length of the block."""
    return serve_in_thread(app, name="remote-peer", start_timeout=10, stop_timeout=10, graceful_seconds=1)


@pytest.fixture
def shop() -> Shop:
    return Shop()


@pytest.fixture
def asgi_peer(shop: Shop) -> Peer:
    gate = Gate(shop_app(shop))
    transport = httpx.ASGITransport(app=gate, raise_app_exceptions=False)
    return Peer("asgi", "http://shop.internal", shop, gate, transport)


@pytest.fixture
def served_peer(shop: Shop) -> Iterator[Peer]:
    gate = Gate(shop_app(shop))
    with serve(gate) as served:
        yield Peer("uvicorn", served.base_url, shop, gate, None)


@pytest.fixture(params=["asgi", "uvicorn"])
def peer(request: pytest.FixtureRequest) -> Peer:
    """The shop in-process and over real HTTP: every test that takes it runs on both."""
    fixture = "asgi_peer" if request.param == "asgi" else "served_peer"
    return request.getfixturevalue(fixture)  # type: ignore[no-any-return]


@pytest.fixture
async def remote(peer: Peer) -> AsyncIterator[RemoteContracts]:
    contracts = peer.contracts()
    yield contracts
    await contracts.aclose()


@pytest.fixture
def client(remote: RemoteContracts, peer: Peer) -> Any:
    return remote.client(ShopApi, "shop", peer.base_url)
