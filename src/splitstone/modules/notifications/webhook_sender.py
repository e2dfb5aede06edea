"""One webhook request: POST the signed body to a vetted address, within a deadline and a size cap.

Every outcome comes back as an `AttemptResult`, never as an exception: a refused target, a connection
error, a timeout and a non-2xx answer are all failed attempts to log. Redirects are not followed (a
3xx is a failure), proxies from the environment are not used, and connections are not kept alive: a
request goes to the IP address the guard vetted, with the endpoint's host name in `Host` and in TLS
SNI, and a pooled connection is keyed by that address alone, so it could otherwise carry a request
for one host over a TLS session that was verified for another host at the same address.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass

import httpx

from splitstone.modules.notifications.webhook_targets import TargetGuard, TargetRefused

EXCERPT_CHARS = 1000


@dataclass(frozen=True)
class AttemptResult:
    """How one request went: the status (if an answer came), latency, the answer's start, the error."""

    status_code: int | None
    latency_ms: int
    response_excerpt: str | None
    error: str | None
    body_bytes: int = 0  # how much of the answer was read: at most the cap

    @property
    def succeeded(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


class WebhookSender:
    """Sends webhook requests through one `httpx.AsyncClient`, created on first use; `aclose()` it."""

    def __init__(
        self,
        *,
        guard: TargetGuard,
        timeout: float,
        max_response_bytes: int,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        self.guard = guard
        self._timeout = timeout
        self._max_response_bytes = max_response_bytes
        self._verify = verify  # certificates are checked against the endpoint's host name (SNI)
        self._client: httpx.AsyncClient | None = None

    async def post(self, url: str, headers: Mapping[str, str], body: bytes) -> AttemptResult:
        """POST `body` to `url` with `headers`; the result of the attempt, whatever happened."""
        started = time.perf_counter()

        def elapsed_ms() -> int:
            return round((time.perf_counter() - started) * 1000)

        try:
            target = await self.guard.target(url)
        except TargetRefused as refused:
            return AttemptResult(None, elapsed_ms(), None, f"Refused target: {refused}.")
        request_headers = {**headers, "accept-encoding": "identity"}  # no decompression bombs
        if target.host_header is not None:
            request_headers["host"] = target.host_header
        client = self._http()
        request = client.build_request(
            "POST",
            target.url,
            content=body,
            headers=request_headers,
            extensions={"sni_hostname": target.sni_hostname} if target.sni_hostname else None,
        )
        status: int | None = None
        received = bytearray()
        error: str | None = None
        try:
            async with asyncio.timeout(self._timeout):
                response = await client.send(request, stream=True)
                status = response.status_code
                try:
                    await self._read_capped(response, received)
                finally:
                    await response.aclose()
        except TimeoutError:
            error = f"No {'complete ' if status else ''}answer within {self._timeout:g} s."
        except httpx.HTTPError as failure:
            error = f"{type(failure).__name__}: {failure}" if str(failure) else type(failure).__name__
        excerpt = received.decode("utf-8", errors="replace")[:EXCERPT_CHARS] if received else None
        return AttemptResult(status, elapsed_ms(), excerpt, error, len(received))

    async def _read_capped(self, response: httpx.Response, into: bytearray) -> None:
        """Read the answer into `into`, stopping at the cap; the rest is never read."""
        async for chunk in response.aiter_raw():
            into.extend(chunk[: self._max_response_bytes - len(into)])
            if len(into) >= self._max_response_bytes:
                return

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(self._timeout),
                follow_redirects=False,
                trust_env=False,
                verify=self._verify,
                limits=httpx.Limits(max_keepalive_connections=0),
            )
        return self._client

    async def aclose(self) -> None:
        """Close the HTTP client, if one was created."""
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()
