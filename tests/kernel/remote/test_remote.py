"""Contracts across processes: the generated client calls the internal route as if the call were local.

Tests that take `peer` run twice: in-process through `httpx.ASGITransport` and over real HTTP to a
uvicorn server on a loopback port.
"""

from __future__ import annotations

import inspect
import time
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from uuid import UUID

import httpx
import pytest
import structlog
from fastapi import FastAPI
from uuid6 import uuid7

from splitstone.kernel import tracing
from splitstone.kernel.container import _check_implements
from splitstone.kernel.errors import DomainError, NotFound, RateLimited, ServiceUnavailable
from splitstone.kernel.http.problems import PROBLEM_CONTENT_TYPE, install_problem_handlers
from splitstone.kernel.module import Module
from splitstone.kernel.remote import (
    SERVICE_NAME_HEADER,
    SERVICE_TOKEN_HEADER,
    RemoteContracts,
    client_class,
)
from tests.kernel.remote.conftest import CALLER, TOKEN, Peer, Shop, serve, shop_app
from tests.kernel.remote.toy import Colour, Echo, Item, ItemNotFound, OutOfStock, ShopApi

# --- calls that succeed ----------------------------------------------------------------------------


async def test_every_argument_and_result_type_travels(client: Any, peer: Peer) -> None:
    item = Item(
        id=uuid7(),
        name="Lamp",
        colour=Colour.GREEN,
        tags=frozenset({"a", "b"}),
        made_at=datetime(2024, 5, 1, 12, 30, 15, 123456, tzinfo=UTC),
    )
    ids = [uuid7(), uuid7()]
    when = datetime(2025, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=2)))

    echoed = await client.echo(ids, when, Colour.RED, frozenset({"x", "y"}), item=item)

    assert echoed == Echo(
        ids=ids, when=when, colour=Colour.RED, tags=frozenset({"x", "y"}), item=item, note=None
    )
    assert isinstance(echoed.ids[0], UUID)
    assert echoed.when.utcoffset() == timedelta(hours=2)
    assert isinstance(echoed.colour, Colour)
    assert await client.echo(ids, when, "green", ["z"], item, note="hi") == Echo(
        ids=ids, when=when, colour=Colour.GREEN, tags=frozenset({"z"}), item=item, note="hi"
    )


async def test_a_model_argument_travels_whole_with_the_defaults_it_made(client: Any) -> None:
    """A model's defaults are values once it is built: the provider must not make its own (a new id)."""
    item = Item(name="Lamp", colour=Colour.RED, made_at=datetime(2024, 5, 1, tzinfo=UTC))

    echoed = await client.echo([], item.made_at, Colour.RED, frozenset(), item)

    assert echoed.item == item
    assert echoed.item.id == item.id


async def test_reads_writes_and_none(client: Any, shop: Shop) -> None:
    lamp = shop.add("Lamp", 3)

    assert await client.get_item(lamp.id) == lamp
    assert await client.reserve(lamp.id, quantity=2) == 1
    assert await client.stock() == {lamp.id: 1}
    assert await client.restock(lamp.id, 5, idempotency_key="k1") == 6
    assert await client.restock(lamp.id, 5, idempotency_key="k1") == 6  # the key made it count once
    assert await client.forget(lamp.id) is None
    assert await client.stock() == {}


# --- errors ----------------------------------------------------------------------------------------


async def test_contract_errors_come_back_as_the_same_type(client: Any, shop: Shop) -> None:
    lamp = shop.add("Lamp", 1)

    with pytest.raises(OutOfStock) as raised:
        await client.reserve(lamp.id, 5)
    assert type(raised.value) is OutOfStock
    assert raised.value.detail == f"Only 1 left of {lamp.id}."
    assert raised.value.extra == {"item_id": str(lamp.id), "available": 1}
    assert shop.stocked[lamp.id] == 1

    missing = uuid7()
    with pytest.raises(ItemNotFound, match=f"No item {missing}"):
        await client.get_item(missing)


async def test_kernel_and_undeclared_errors_keep_code_status_and_title(client: Any) -> None:
    with pytest.raises(RateLimited) as limited:
        await client.fail("rate-limited")
    assert type(limited.value) is RateLimited
    assert limited.value.retry_after == 7

    with pytest.raises(DomainError) as quota:
        await client.fail("quota")
    assert (quota.value.code, quota.value.status, quota.value.title) == (
        "quota-exhausted",
        402,
        "The quota is exhausted",
    )
    assert quota.value.detail == "Five of five used."
    assert quota.value.extra == {"limit": 5, "upgrade_plans": ["pro"]}

    with pytest.raises(NotFound) as shelf:  # an undeclared code keeps the kernel type of its status
        await client.fail("shelf")
    assert shelf.value.code == "shelf-not-found"
    assert type(shelf.value) is not NotFound


async def test_a_callers_response_is_the_one_the_owner_would_give(asgi_peer: Peer, shop: Shop) -> None:
    """A route of another service that calls the contract answers what the owner's route answered."""
    remote = asgi_peer.contracts()
    shop_client = remote.client(ShopApi, "shop", asgi_peer.base_url)
    storefront = FastAPI()
    install_problem_handlers(storefront)

    @storefront.post("/internal/shop/{operation}")  # the owner's path, so `instance` is the same too
    async def relay(operation: str, how: str | None = None, item_id: UUID | None = None) -> Any:
        if operation == "fail":
            return await shop_client.fail(how)
        return await shop_client.reserve(item_id, 10)

    lamp = shop.add("Lamp", 1)
    through = httpx.AsyncClient(transport=httpx.ASGITransport(app=storefront), base_url="http://front")
    async with remote.http, through, asgi_peer.raw() as direct:
        for how in ("quota", "rate-limited", "shelf"):
            owner = await direct.post(
                "/internal/shop/fail", json={"how": how}, headers={SERVICE_TOKEN_HEADER: TOKEN}
            )
            relayed = await through.post("/internal/shop/fail", params={"how": how})
            assert relayed.status_code == owner.status_code
            assert relayed.headers["content-type"] == PROBLEM_CONTENT_TYPE
            assert relayed.headers.get("retry-after") == owner.headers.get("retry-after")
            assert _without_request_id(relayed.json()) == _without_request_id(owner.json())

        owner = await direct.post(
            "/internal/shop/reserve",
            json={"item_id": str(lamp.id), "quantity": 10},
            headers={SERVICE_TOKEN_HEADER: TOKEN},
        )
        relayed = await through.post("/internal/shop/reserve", params={"item_id": str(lamp.id)})
        assert (relayed.status_code, relayed.json()["code"]) == (409, "out-of-stock")
        assert _without_request_id(relayed.json()) == _without_request_id(owner.json())


def _without_request_id(problem: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in problem.items() if k != "request_id"}


async def test_an_unhandled_error_of_the_owner_is_a_500_not_retried(client: Any, peer: Peer) -> None:
    with pytest.raises(DomainError) as raised:
        await client.fail("bug")
    assert (raised.value.status, raised.value.code) == (500, "internal-error")
    assert peer.gate.hits["/internal/shop/fail"] == 1


# --- the route's guard and its answers to a bad call -----------------------------------------------


async def test_the_route_refuses_a_missing_or_wrong_token(peer: Peer) -> None:
    async with peer.raw() as raw:
        missing = await raw.post("/internal/shop/stock", json={})
        wrong = await raw.post("/internal/shop/stock", json={}, headers={SERVICE_TOKEN_HEADER: TOKEN + "x"})
        described = await raw.get("/internal/shop")
        unknown_operation = await raw.post("/internal/shop/nope", json={})

    for response, code in [
        (missing, "service-credential-required"),
        (wrong, "invalid-service-credential"),
        (described, "service-credential-required"),
        (unknown_operation, "service-credential-required"),  # nothing is told before the token is checked
    ]:
        assert response.status_code == 401, response.text
        assert response.headers["content-type"] == PROBLEM_CONTENT_TYPE
        assert response.json()["code"] == code
        assert TOKEN not in response.text
    assert peer.gate.hits["/internal/shop/stock"] == 2


async def test_a_client_with_the_wrong_token_raises_service_unavailable(peer: Peer, shop: Shop) -> None:
    lamp = shop.add("Lamp", 3)
    contracts = peer.contracts(service_token="not-the-token")
    try:
        with pytest.raises(ServiceUnavailable):
            await contracts.client(ShopApi, "shop", peer.base_url).reserve(lamp.id, 1)
        with pytest.raises(ServiceUnavailable):
            await contracts.ping("shop", peer.base_url)
    finally:
        await contracts.aclose()
    assert shop.stocked[lamp.id] == 3
    assert peer.gate.hits["/internal/shop/reserve"] == 1  # a refusal is an answer: not retried


async def test_wrong_arguments_raise_type_error_before_any_request(client: Any, peer: Peer) -> None:
    with pytest.raises(TypeError, match="takes 2 arguments but 3 were given"):
        await client.reserve(uuid7(), 1, 2)
    with pytest.raises(TypeError, match="unexpected keyword argument 'amount'"):
        await client.reserve(uuid7(), amount=1)
    with pytest.raises(TypeError, match="invalid arguments"):
        await client.reserve("not-a-uuid", 1)
    with pytest.raises(TypeError, match="invalid arguments"):
        await client.get_item()
    assert sum(peer.gate.hits.values()) == 0


async def test_the_route_answers_422_to_arguments_it_cannot_read(peer: Peer) -> None:
    headers = {SERVICE_TOKEN_HEADER: TOKEN}
    async with peer.raw() as raw:
        bad_values = await raw.post(
            "/internal/shop/reserve", json={"item_id": "x", "quantity": 1, "extra": 1}, headers=headers
        )
        missing = await raw.post("/internal/shop/reserve", json={"quantity": 1}, headers=headers)
        not_json = await raw.post("/internal/shop/reserve", content=b"{nope", headers=headers)

    assert bad_values.status_code == 422
    body = bad_values.json()
    assert body["code"] == "validation-error"
    assert {tuple(e["loc"]) for e in body["errors"]} == {("body", "item_id"), ("body", "extra")}
    assert missing.status_code == 422
    assert [tuple(e["loc"]) for e in missing.json()["errors"]] == [("body", "item_id")]
    assert not_json.status_code == 422
    assert not_json.json()["errors"][0]["type"] == "json_invalid"


async def test_an_unknown_operation_is_a_404_problem(peer: Peer) -> None:
    async with peer.raw() as raw:
        response = await raw.post("/internal/shop/steal", json={}, headers={SERVICE_TOKEN_HEADER: TOKEN})
    assert response.status_code == 404
    assert response.headers["content-type"] == PROBLEM_CONTENT_TYPE
    assert response.json()["code"] == "unknown-operation"


async def test_the_route_describes_the_contract_and_stays_out_of_openapi(peer: Peer) -> None:
    async with peer.raw() as raw:
        response = await raw.get("/internal/shop", headers={SERVICE_TOKEN_HEADER: TOKEN})
    assert response.status_code == 200
    described = response.json()
    assert {k: described[k] for k in ("module", "contract", "version")} == {
        "module": "shop",
        "contract": "ShopApi",
        "version": 3,
    }
    operations = {o["name"]: o["idempotent"] for o in described["operations"]}
    assert operations == {
        "echo": True,
        "get_item": True,
        "stock": True,
        "reserve": False,
        "restock": True,
        "forget": True,
        "fail": True,
    }
    assert not [path for path in shop_app(Shop()).openapi()["paths"] if path.startswith("/internal")]


async def test_ping(remote: RemoteContracts, peer: Peer) -> None:
    await remote.ping("shop", peer.base_url)
    with pytest.raises(ServiceUnavailable):
        await remote.ping("warehouse", peer.base_url)  # not served there


# --- failures on the way ---------------------------------------------------------------------------


async def test_an_idempotent_call_is_retried_after_a_503(client: Any, peer: Peer, shop: Shop) -> None:
    lamp = shop.add("Lamp", 3)
    peer.gate.refuse_next = 2

    with structlog.testing.capture_logs() as logs:
        assert await client.get_item(lamp.id) == lamp
    assert peer.gate.hits["/internal/shop/get_item"] == 3
    failures = [e for e in logs if e["event"] == "remote call failed"]
    assert [(e["module"], e["operation"], e["attempt"], e["error"], e["retry"]) for e in failures] == [
        ("shop", "get_item", 1, "HTTP 503", True),
        ("shop", "get_item", 2, "HTTP 503", True),
    ]

    peer.gate.refuse_next = 1
    assert await client.restock(lamp.id, 1, idempotency_key="k") == 4  # a key makes a write retryable
    assert peer.gate.hits["/internal/shop/restock"] == 2


@pytest.mark.parametrize("status", [500, 502, 504])
async def test_any_bare_5xx_is_a_failure_on_the_way(client: Any, peer: Peer, shop: Shop, status: int) -> None:
    lamp = shop.add("Lamp", 3)
    peer.gate.refuse_next, peer.gate.refuse_with = 1, status

    assert await client.get_item(lamp.id) == lamp
    assert peer.gate.hits["/internal/shop/get_item"] == 2


async def test_a_call_that_is_not_idempotent_is_not_retried(client: Any, peer: Peer, shop: Shop) -> None:
    lamp = shop.add("Lamp", 3)
    peer.gate.refuse_next = 1

    with pytest.raises(ServiceUnavailable, match="shop service did not answer reserve"):
        await client.reserve(lamp.id, 1)
    assert peer.gate.hits["/internal/shop/reserve"] == 1
    assert await client.reserve(lamp.id, 1) == 2


async def test_retries_stop_at_the_limit(client: Any, peer: Peer, shop: Shop) -> None:
    peer.gate.refuse_next = 10

    with pytest.raises(ServiceUnavailable, match=r"\(3 attempts\)"):
        await client.get_item(uuid7())
    assert peer.gate.hits["/internal/shop/get_item"] == 3  # one call and two retries


async def test_the_owners_own_503_is_raised_as_it_said_not_retried(client: Any, peer: Peer) -> None:
    with pytest.raises(ServiceUnavailable, match="The warehouse is down"):
        await client.fail("unavailable")
    assert peer.gate.hits["/internal/shop/fail"] == 1


async def test_a_stopped_server_is_unavailable_quickly(shop: Shop) -> None:
    lamp = shop.add("Lamp", 3)
    contracts = RemoteContracts(service_token=TOKEN, caller=CALLER, connect_timeout=1, timeout=10, retries=2)
    try:
        with serve(shop_app(shop)) as served:
            client = contracts.client(ShopApi, "shop", served.base_url)
            assert await client.get_item(lamp.id) == lamp  # a pooled connection to it now exists
            served.stop()

            for call in (lambda: client.get_item(lamp.id), lambda: client.reserve(lamp.id, 1)):
                started = time.monotonic()
                with pytest.raises(ServiceUnavailable, match="shop service did not answer"):
                    await call()
                assert time.monotonic() - started < 2
            with pytest.raises(ServiceUnavailable):
                await contracts.ping("shop", served.base_url)
    finally:
        await contracts.aclose()
    assert shop.stocked[lamp.id] == 3


async def test_a_slow_server_is_unavailable_after_the_timeout(served_peer: Peer, shop: Shop) -> None:
    lamp = shop.add("Lamp", 3)
    contracts = served_peer.contracts(timeout=0.5, retries=5)
    client = contracts.client(ShopApi, "shop", served_peer.base_url)
    shop.delay = 2
    try:
        for path, call in (
            ("get_item", lambda: client.get_item(lamp.id)),
            ("reserve", lambda: client.reserve(lamp.id, 1)),
        ):
            started = time.monotonic()
            with pytest.raises(ServiceUnavailable):
                await call()
            assert 0.4 < time.monotonic() - started < 1.5  # the budget holds, retries included
            assert served_peer.gate.hits[f"/internal/shop/{path}"] == 1
    finally:
        await contracts.aclose()


# --- what travels with a call ----------------------------------------------------------------------


async def test_the_trace_and_the_callers_name_travel(client: Any, peer: Peer, shop: Shop) -> None:
    lamp = shop.add("Lamp", 3)
    with tracing.activated(tracing.new_trace()) as context:
        await client.get_item(lamp.id)

    received = peer.gate.headers["/internal/shop/get_item"]
    continued = tracing.from_headers(received)
    assert continued.trace_id == context.trace_id
    assert continued.request_id == context.request_id
    assert received["traceparent"] != context.traceparent  # a new span of the same trace
    assert received[SERVICE_NAME_HEADER.lower()] == CALLER
    assert received["content-type"] == "application/json"

    await client.get_item(lamp.id)  # no context: nothing made up
    assert "traceparent" not in peer.gate.headers["/internal/shop/get_item"]


# --- the generated class ---------------------------------------------------------------------------


async def test_the_generated_class_implements_the_contract(remote: RemoteContracts) -> None:
    client = remote.client(ShopApi, "shop", "http://shop.internal")
    module = Module(name="shop", contract=ShopApi, factory=lambda context: None)

    _check_implements(module, client)
    assert type(client) is client_class(ShopApi)  # one class per contract
    assert type(client).__name__ == "RemoteShopApi"
    for name in ("echo", "get_item", "reserve", "forget"):
        method = getattr(client, name)
        assert inspect.iscoroutinefunction(method)
        assert inspect.signature(getattr(type(client), name)) == inspect.signature(getattr(ShopApi, name))
        assert method.__doc__ == getattr(ShopApi, name).__doc__
    assert "shop" in repr(client)


async def test_a_remote_contracts_needs_a_token() -> None:
    with pytest.raises(ValueError, match="service token"):
        RemoteContracts(service_token="", caller=CALLER)
