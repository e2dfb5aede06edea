"""An HTTP client as a careful API client would be: a deadline per request, retries with the same
`Idempotency-Key` on network errors and 5xx, and a tally of what came back."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx

RETRYABLE = frozenset({409, 500, 502, 503, 504})
"""409 only as `idempotency-key-in-use` (the first try still runs); see `_retryable`."""


@dataclass
class Tally:
    """Every attempt's outcome ("2xx", "404", "5xx:503", "timeout", "connection"), retries, slowest."""

    outcomes: Counter[str] = field(default_factory=Counter)
    by_operation: dict[str, Counter[str]] = field(default_factory=dict)
    requests: int = 0
    retries: int = 0
    slowest_seconds: float = 0.0
    over_deadline: list[str] = field(default_factory=list)

    def record(self, operation: str, outcome: str, seconds: float, deadline: float) -> None:
        self.requests += 1
        self.outcomes[outcome] += 1
        self.by_operation.setdefault(operation, Counter())[outcome] += 1
        self.slowest_seconds = max(self.slowest_seconds, seconds)
        if seconds > deadline + 1.0:  # the deadline is enforced here: this would be a bug of ours
            self.over_deadline.append(f"{operation} took {seconds:.1f} s")


@dataclass
class Answer:
    """The last attempt's response (None: every attempt failed on the network or timed out)."""

    response: httpx.Response | None
    attempts: int
    idempotency_key: str | None

    @property
    def ok(self) -> bool:
        return self.response is not None and self.response.is_success

    @property
    def status(self) -> int | None:
        return None if self.response is None else self.response.status_code

    def json(self) -> Any:
        assert self.response is not None
        return self.response.json()


class Client:
    def __init__(self, base_url: str, *, deadline: float = 10.0, attempts: int = 6) -> None:
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=50)
        self.http = httpx.AsyncClient(base_url=base_url, timeout=deadline, limits=limits)
        self.deadline = deadline
        self.attempts = attempts
        self.tally = Tally()

    async def aclose(self) -> None:
        await self.http.aclose()

    async def call(
        self,
        operation: str,
        method: str,
        url: str,
        *,
        json: Any = None,
        headers: dict[str, str] | None = None,
        params: dict[str, Any] | None = None,
        idempotent: bool = False,
        key: str | None = None,
        retry: bool | None = None,
    ) -> Answer:
        """The request, retried on network errors and 5xx when that is safe: reads, writes with an
        idempotency key, and writes the caller says are idempotent in effect (`retry=True`).

        `idempotent`: the write carries `Idempotency-Key` (`key`, or a new one).
        """
        sent = dict(headers or {})
        if idempotent:
            key = key or str(uuid.uuid4())
            sent["Idempotency-Key"] = key
        safe = method == "GET" or idempotent if retry is None else retry
        response: httpx.Response | None = None
        tries = self.attempts if safe else 1
        for attempt in range(1, tries + 1):
            began = time.monotonic()
            outcome, response = await self._once(method, url, json, sent, params)
            self.tally.record(operation, outcome, time.monotonic() - began, self.deadline)
            if attempt == tries or not _retryable(outcome, response):
                return Answer(response, attempt, key)
            self.tally.retries += 1
            await asyncio.sleep(_backoff(attempt, response))
        return Answer(response, tries, key)

    async def _once(
        self,
        method: str,
        url: str,
        json: Any,
        headers: dict[str, str],
        params: dict[str, Any] | None,
    ) -> tuple[str, httpx.Response | None]:
        try:
            response = await asyncio.wait_for(
                self.http.request(method, url, json=json, headers=headers, params=params), self.deadline
            )
        except (TimeoutError, httpx.TimeoutException):
            return "timeout", None
        except httpx.TransportError:
            return "connection", None
        status = response.status_code
        if status < 300:
            return "2xx", response
        if status >= 500:
            return f"5xx:{status}", response
        return str(status), response


def _retryable(outcome: str, response: httpx.Response | None) -> bool:
    if response is None:
        return True
    if response.status_code == 409:
        return response.headers.get("content-type", "").startswith("application/problem") and (
            response.json().get("code") == "idempotency-key-in-use"
        )
    return response.status_code in RETRYABLE


def _backoff(attempt: int, response: httpx.Response | None) -> float:
    retry_after = response.headers.get("retry-after") if response is not None else None
    if retry_after is not None and retry_after.isdigit():
        return min(float(retry_after), 5.0)
    return float(min(0.25 * 2 ** (attempt - 1), 4.0))
