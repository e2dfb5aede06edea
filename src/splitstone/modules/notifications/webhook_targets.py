"""Where a webhook may be sent: URL rules, and the guard that keeps requests out of our own network.

An organization chooses its endpoint URLs, so without a guard it could make this server call its
internal services (SSRF). The guard resolves the host itself, refuses it if *any* of its addresses is
not a public unicast address (loopback, private, link-local, multicast, reserved, unspecified, CGNAT,
or an IPv6 form that embeds such an IPv4 address), and hands back a target that connects to the
address it vetted, so a second DNS answer cannot point the request elsewhere (DNS rebinding).
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpx

from splitstone.modules.notifications.webhook_errors import InvalidWebhookUrl

MAX_URL_LENGTH = 2000

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Awaitable[list[str]]]
"""Resolves (host, port) to IP address strings, like `getaddrinfo`; raises `OSError` on failure."""

_HOSTNAME = re.compile(r"^(?!-)[A-Za-z0-9_-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9_-]{1,63}(?<!-))*\.?$")
_SHARED_ADDRESS_SPACE = ipaddress.IPv4Network("100.64.0.0/10")  # carrier-grade NAT
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


class TargetRefused(Exception):
    """The host is, or resolves to, an address that webhooks may not reach, or does not resolve."""


class HostUnresolvable(TargetRefused):
    """The host name does not resolve (now): no address to vet, so none to send to."""


@dataclass(frozen=True)
class Target:
    """How to reach a vetted URL: request `url`; send `host_header` and `sni_hostname` if set."""

    url: httpx.URL
    host_header: str | None = None
    sni_hostname: str | None = None


async def system_resolve(host: str, port: int) -> list[str]:
    """The addresses of `host`, from the operating system's resolver."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def parse_url(raw: str) -> httpx.URL:
    """The URL, if it may be an endpoint's: http(s), a host, no credentials, at most 2000 characters."""
    if len(raw) > MAX_URL_LENGTH:
        raise InvalidWebhookUrl(f"A webhook URL has at most {MAX_URL_LENGTH} characters.")
    try:
        url = httpx.URL(raw)
    except httpx.InvalidURL as bad:
        raise InvalidWebhookUrl(f"Not a valid URL: {bad}.") from None
    if url.scheme not in ("https", "http"):
        raise InvalidWebhookUrl("A webhook URL starts with https:// (or http://).")
    if not url.host:
        raise InvalidWebhookUrl("A webhook URL needs a host.")
    if url.userinfo:
        raise InvalidWebhookUrl("A webhook URL may not hold credentials (user:password@).")
    if _literal(url.host) is None and not _HOSTNAME.match(url.raw_host.decode("ascii", "replace")):
        raise InvalidWebhookUrl(f"{url.host!r} is not a valid host name.")
    return url


def refusal(address: IPAddress) -> str | None:
    """Why webhooks may not reach `address`, or None if it is a public unicast address."""
    if isinstance(address, ipaddress.IPv6Address):
        for embedded in _embedded_ipv4(address):
            reason = refusal(embedded)
            if reason is not None:
                return f"{reason} ({embedded} inside {address})"
        if address.ipv4_mapped is not None or address in _NAT64:
            return None  # a translation of the IPv4 address just checked
    checks = (
        (address.is_unspecified, "an unspecified address"),
        (address.is_loopback, "a loopback address"),
        (address.is_link_local, "a link-local address"),
        (address.is_multicast, "a multicast address"),
        (isinstance(address, ipaddress.IPv4Address) and address in _SHARED_ADDRESS_SPACE, "a CGNAT address"),
        (address.is_private, "a private address"),
        (address.is_reserved, "a reserved address"),
        (not address.is_global, "not a public address"),
    )
    return next((reason for refused, reason in checks if refused), None)


class TargetGuard:
    """Checks endpoint URLs when they are saved, and vets each request's destination when it is sent.

    With `allow_private` (tests, local development) nothing is resolved or refused.
    """

    def __init__(
        self, *, allow_private: bool, resolve: Resolver = system_resolve, resolve_timeout: float = 5.0
    ) -> None:
        self.allow_private = allow_private
        self._resolve = resolve
        self._resolve_timeout = resolve_timeout

    async def check_url(self, raw: str) -> str:
        """The URL if it may be saved as an endpoint's; `InvalidWebhookUrl` with the reason if not.

        A host that does not resolve (yet) is accepted: its DNS may still be being set up, and every
        delivery vets the destination again. A host that resolves to a refused address is not.
        """
        url = parse_url(raw)
        if self.allow_private:
            return raw
        try:
            await self._addresses(url)
        except HostUnresolvable:
            pass
        except TargetRefused as refused:
            raise InvalidWebhookUrl(
                f"Webhooks cannot be sent there: {refused}. Use a public address."
            ) from None
        return raw

    async def target(self, raw: str) -> Target:
        """Where to send a request for `raw`: its first vetted address. `TargetRefused` if none may be."""
        try:
            url = parse_url(raw)
        except InvalidWebhookUrl as invalid:
            raise TargetRefused(invalid.detail) from None
        if self.allow_private:
            return Target(url)
        addresses = await self._addresses(url)
        if _literal(url.host) is not None:
            return Target(url)
        host = url.raw_host.decode("ascii")
        return Target(
            url.copy_with(host=str(addresses[0])),
            host_header=url.netloc.decode("ascii"),
            sni_hostname=host if url.scheme == "https" else None,
        )

    async def _addresses(self, url: httpx.URL) -> list[IPAddress]:
        literal = _literal(url.host)
        if literal is not None:
            addresses = [literal]
        else:
            port = url.port or (443 if url.scheme == "https" else 80)
            try:
                async with asyncio.timeout(self._resolve_timeout):
                    found = await self._resolve(url.raw_host.decode("ascii"), port)
            except (OSError, TimeoutError) as failure:
                raise HostUnresolvable(f"{url.host} does not resolve") from failure
            addresses = [a for a in (_literal(f) for f in found) if a is not None]
            if not addresses:
                raise HostUnresolvable(f"{url.host} does not resolve to any address")
        for address in addresses:
            reason = refusal(address)
            if reason is not None:
                shown = "" if literal is not None else f" (it resolves to {address})"
                raise TargetRefused(f"{url.host} is {reason}{shown}")
        return addresses


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _embedded_ipv4(address: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """IPv4 addresses an IPv6 address leads to: mapped, 6to4, Teredo (server and client), NAT64."""
    found = [a for a in (address.ipv4_mapped, address.sixtofour) if a is not None]
    if address.teredo is not None:
        found.extend(address.teredo)
    if address in _NAT64:
        found.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return found
