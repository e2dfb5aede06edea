"""A fake Stripe API on 127.0.0.1: the few endpoints the Stripe adapter calls, spoken as Stripe does.

It runs under uvicorn inside the test's event loop, so requests cross a real socket from the official
SDK. Requests are form-encoded with bracket keys (`metadata[invoice_id]=...`), answered with Stripe's
JSON objects and error bodies, checked for `Authorization: Bearer <key>`, and deduplicated by
`Idempotency-Key` (the same key replays the first answer; with other parameters it is an
`idempotency_error`). Every request is recorded in `requests`.

Test tokens (attached as new `pm_...` ids, or passed to a charge directly, as in Stripe's test mode):
`pm_card_visa`, `pm_card_mastercard`; `pm_card_chargeDeclined` (declined when attached or charged);
`pm_card_chargeCustomerFail` (attaches, then charges are declined); `pm_card_insufficient_funds`
(charges declined, decline code `insufficient_funds`); `pm_usBankAccount` (not a card; charges answer
`processing`). A charge of `FAIL_AMOUNT` answers 500, and `fail(...)` makes the next requests fail.
"""

from __future__ import annotations

import contextlib
import functools
import json
import re
import secrets
import string
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.support.servers import serve_in_loop

API_KEY = "sk_test_fake_4eC39HqLyjWDarjtT1zdp7dc"
FAIL_AMOUNT = 999999  # a charge of this amount answers 500 (and asks the SDK not to retry)

CARDS = {
    "pm_card_visa": ("visa", "4242"),
    "pm_card_mastercard": ("mastercard", "4444"),
    "pm_card_chargeDeclined": ("visa", "0002"),
    "pm_card_chargeCustomerFail": ("visa", "0341"),
    "pm_card_insufficient_funds": ("visa", "9995"),
}
BANK_ACCOUNTS = {"pm_usBankAccount": "6789"}
DECLINED_ON_ATTACH = {"pm_card_chargeDeclined"}
DECLINES = {  # token: (code, decline_code, message)
    "pm_card_chargeDeclined": ("card_declined", "generic_decline", "Your card was declined."),
    "pm_card_chargeCustomerFail": ("card_declined", "generic_decline", "Your card was declined."),
    "pm_card_insufficient_funds": (
        "card_declined",
        "insufficient_funds",
        "Your card has insufficient funds.",
    ),
}

Answer = tuple[int, dict[str, Any]]


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]  # names in lower case
    form: dict[str, Any]  # bracket keys unfolded into nested dicts

    @property
    def idempotency_key(self) -> str | None:
        return self.headers.get("idempotency-key")


@dataclass
class FakeStripe:
    """Start with `async with`; `url` is the API base to give the adapter."""

    api_key: str = API_KEY
    requests: list[Recorded] = field(default_factory=list)
    customers: dict[str, dict[str, Any]] = field(default_factory=dict)
    payment_methods: dict[str, dict[str, Any]] = field(default_factory=dict)
    payment_intents: dict[str, dict[str, Any]] = field(default_factory=dict)
    _failures: list[int] = field(default_factory=list)
    _kept: dict[str, tuple[dict[str, Any], int, bytes]] = field(default_factory=dict)
    _running: contextlib.AsyncExitStack = field(default_factory=contextlib.AsyncExitStack)
    _url: str | None = None

    @property
    def url(self) -> str:
        assert self._url is not None, "start the fake first"
        return self._url

    def fail(self, *statuses: int) -> None:
        """Answer the next requests with these statuses (an `api_error`), before anything else runs."""
        self._failures.extend(statuses)

    def paths(self) -> list[str]:
        return [f"{r.method} {r.path}" for r in self.requests]

    async def __aenter__(self) -> FakeStripe:
        app = Starlette(routes=[Route("/{path:path}", self._handle, methods=["GET", "POST", "DELETE"])])
        server = await self._running.enter_async_context(serve_in_loop(app, start_timeout=5))
        self._url = server.base_url
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._running.aclose()

    # -- the API ------------------------------------------------------------------------------------------

    async def _handle(self, request: Request) -> Response:
        form = unfold(parse_qsl((await request.body()).decode(), keep_blank_values=True))
        recorded = Recorded(
            request.method, request.url.path, {k.lower(): v for k, v in request.headers.items()}, form
        )
        self.requests.append(recorded)
        if recorded.headers.get("authorization") != f"Bearer {self.api_key}":
            return _json(401, _error("invalid_request_error", "Invalid API Key provided."))
        if self._failures:
            return _json(self._failures.pop(0), _error("api_error", "An unknown error occurred."))
        key = recorded.idempotency_key
        if key is not None and key in self._kept:
            first_form, status, body = self._kept[key]
            if first_form != form:
                message = (
                    "Keys for idempotent requests can only be used with the same parameters they were "
                    "first used with."
                )
                return _json(400, _error("idempotency_error", message))
            return Response(
                body, status, media_type="application/json", headers={"Idempotent-Replayed": "true"}
            )
        status, answer = self._route(request.method, request.url.path)(form)
        body = json.dumps(answer).encode()
        headers = {"Request-Id": "req_" + _random(14)}
        if status >= 500:
            headers["Stripe-Should-Retry"] = "false"  # as Stripe does when a retry would fail the same way
        elif key is not None:
            self._kept[key] = (form, status, body)
        return Response(body, status, media_type="application/json", headers=headers)

    def _route(self, method: str, path: str) -> Callable[[dict[str, Any]], Answer]:
        routes: list[tuple[str, str, Callable[..., Answer]]] = [
            ("POST", r"/v1/customers", self._create_customer),
            ("POST", r"/v1/customers/(?P<customer_id>[^/]+)", self._update_customer),
            ("POST", r"/v1/payment_methods/(?P<token>[^/]+)/attach", self._attach),
            ("POST", r"/v1/payment_intents", self._create_payment_intent),
        ]
        for verb, pattern, handler in routes:
            matched = re.fullmatch(pattern, path)
            if verb == method and matched:
                return functools.partial(handler, **matched.groupdict())
        return lambda form: (
            404,
            _error("invalid_request_error", f"Unrecognized request URL ({method}: {path})."),
        )

    def _create_customer(self, form: dict[str, Any]) -> Answer:
        customer = {
            "id": "cus_" + _random(14),
            "object": "customer",
            "name": form.get("name"),
            "email": form.get("email"),
            "metadata": form.get("metadata", {}),
            "invoice_settings": {"default_payment_method": None},
            "created": int(time.time()),
            "livemode": False,
        }
        self.customers[customer["id"]] = customer
        return 200, customer

    def _update_customer(self, form: dict[str, Any], customer_id: str) -> Answer:
        customer = self.customers.get(customer_id)
        if customer is None:
            return _missing("customer", customer_id, "id")
        default = form.get("invoice_settings", {}).get("default_payment_method")
        if default is not None:
            method = self.payment_methods.get(default)
            if method is None or method["customer"] != customer_id:
                return _missing("payment_method", default, "invoice_settings[default_payment_method]")
            customer["invoice_settings"] = {"default_payment_method": default}
        return 200, customer

    def _attach(self, form: dict[str, Any], token: str) -> Answer:
        customer_id = form.get("customer")
        if customer_id not in self.customers:
            return _missing("customer", str(customer_id), "customer")
        if token in DECLINED_ON_ATTACH:
            code, decline_code, message = DECLINES[token]
            return 402, _error("card_error", message, code=code, decline_code=decline_code)
        method = self._new_method(token, customer_id)
        if method is None:
            return _missing("payment_method", token, "payment_method")
        self.payment_methods[method["id"]] = method
        return 200, method

    def _create_payment_intent(self, form: dict[str, Any]) -> Answer:
        amount = int(form["amount"])
        if amount == FAIL_AMOUNT:
            return 500, _error("api_error", "An unknown error occurred.")
        customer_id, method_id = form.get("customer"), form.get("payment_method", "")
        if customer_id not in self.customers:
            return _missing("customer", str(customer_id), "customer")
        method = self.payment_methods.get(method_id) or self._new_method(method_id, customer_id)
        if method is None or method["customer"] != customer_id:
            return _missing("payment_method", method_id, "payment_method")
        token = method["fake_token"]
        intent: dict[str, Any] = {
            "id": "pi_" + _random(24),
            "object": "payment_intent",
            "amount": amount,
            "currency": form["currency"],
            "customer": customer_id,
            "payment_method": method["id"],
            "description": form.get("description"),
            "metadata": form.get("metadata", {}),
            "status": "processing" if token in BANK_ACCOUNTS else "succeeded",
            "last_payment_error": None,
            "created": int(time.time()),
            "livemode": False,
        }
        self.payment_intents[intent["id"]] = intent
        if token not in DECLINES:
            return 200, intent
        code, decline_code, message = DECLINES[token]
        error = {"type": "card_error", "code": code, "decline_code": decline_code, "message": message}
        intent.update(status="requires_payment_method", last_payment_error=error)
        return 402, {"error": {**error, "payment_intent": intent, "payment_method": method}}

    def _new_method(self, token: str, customer_id: str) -> dict[str, Any] | None:
        method: dict[str, Any] = {
            "id": "pm_" + _random(24),
            "object": "payment_method",
            "customer": customer_id,
            "fake_token": token,
            "created": int(time.time()),
            "livemode": False,
        }
        if token in CARDS:
            brand, last4 = CARDS[token]
            card = {"brand": brand, "last4": last4, "exp_month": 12, "exp_year": 2034}
            return {**method, "type": "card", "card": card}
        if token in BANK_ACCOUNTS:
            bank = {"bank_name": "STRIPE TEST BANK", "last4": BANK_ACCOUNTS[token]}
            return {**method, "type": "us_bank_account", "us_bank_account": bank}
        return None


def unfold(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """Form pairs with bracket keys (`a[b][c]=v`) as nested dicts (`{"a": {"b": {"c": "v"}}}`)."""
    unfolded: dict[str, Any] = {}
    for key, value in pairs:
        head, _, rest = key.partition("[")
        path = [head, *re.findall(r"([^\[\]]*)\]", "[" + rest)] if rest else [head]
        target = unfolded
        for part in path[:-1]:
            target = target.setdefault(part, {})
        target[path[-1]] = value
    return unfolded


def _json(status: int, body: dict[str, Any]) -> Response:
    return Response(json.dumps(body), status, media_type="application/json")


def _error(kind: str, message: str, **more: Any) -> dict[str, Any]:
    return {"error": {"type": kind, "message": message, **more}}


def _missing(kind: str, object_id: str, param: str) -> Answer:
    name = {"customer": "customer", "payment_method": "PaymentMethod"}[kind]
    return 400, _error(
        "invalid_request_error", f"No such {name}: '{object_id}'", code="resource_missing", param=param
    )


def _random(length: int) -> str:
    return "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(length))
