"""The SSRF guard: which addresses webhooks may reach, URL rules, and vetting at save and send time.

No test here resolves a name through DNS except `localhost` (answered from /etc/hosts); the others use
literal addresses or a fake resolver.
"""

from __future__ import annotations

import ipaddress

import httpx
import pytest

from splitstone.modules.notifications.webhook_errors import InvalidWebhookUrl
from splitstone.modules.notifications.webhook_targets import (
    HostUnresolvable,
    TargetGuard,
    TargetRefused,
    parse_url,
    refusal,
)

REFUSED = [
    "127.0.0.1",
    "127.8.9.10",
    "10.0.0.1",
    "10.255.255.254",
    "172.16.0.1",
    "192.168.1.1",
    "169.254.169.254",  # cloud metadata
    "100.64.0.1",  # CGNAT
    "0.0.0.0",  # noqa: S104 (an address to refuse)
    "224.0.0.1",
    "239.255.255.250",
    "240.0.0.1",
    "255.255.255.255",
    "::1",
    "::",
    "fe80::1",
    "fc00::1",
    "fd12:3456::1",
    "ff02::1",
    "::ffff:127.0.0.1",  # IPv4-mapped
    "::ffff:10.0.0.1",
    "::ffff:169.254.169.254",
    "2002:7f00:1::1",  # 6to4 of 127.0.0.1
    "2002:a00:1::1",  # 6to4 of 10.0.0.1
    "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo (its server and client addresses)
    "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
    "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
]

ALLOWED = [
    "8.8.8.8",
    "1.1.1.1",
    "93.184.216.34",
    "2606:4700:4700::1111",
    "::ffff:8.8.8.8",
    "64:ff9b::808:808",
]


@pytest.mark.parametrize("address", REFUSED)
def test_refuses_non_public_addresses(address: str) -> None:
    assert refusal(ipaddress.ip_address(address)) is not None


@pytest.mark.parametrize("address", ALLOWED)
def test_allows_public_unicast_addresses(address: str) -> None:
    assert refusal(ipaddress.ip_address(address)) is None


def test_refusal_names_the_reason() -> None:
    assert refusal(ipaddress.ip_address("127.0.0.1")) == "a loopback address"
    assert refusal(ipaddress.ip_address("100.64.1.1")) == "a CGNAT address"
    mapped = refusal(ipaddress.ip_address("::ffff:10.0.0.1"))
    assert mapped is not None
    assert "10.0.0.1" in mapped


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://hooks.example.com/x", "https://"),
        ("file:///etc/passwd", "https://"),
        ("hooks.example.com/x", "https://"),
        ("https:///x", "needs a host"),
        ("https://user:secret@hooks.example.com/x", "credentials"),
        ("https://token@hooks.example.com/x", "credentials"),
        ("https://hooks example.com/x", "not a valid host"),
        ("https://hooks.example.com/" + "a" * 2000, "2000"),
    ],
)
def test_url_rules(url: str, message: str) -> None:
    with pytest.raises(InvalidWebhookUrl, match=message):
        parse_url(url)


def test_valid_urls_parse() -> None:
    assert parse_url("https://hooks.example.com:8443/in?x=1").port == 8443
    assert parse_url("http://[2606:4700:4700::1111]/in").host == "2606:4700:4700::1111"
    assert parse_url("https://bücher.example/in").raw_host == b"xn--bcher-kva.example"


def _resolver(answers: dict[str, list[str]]):  # type: ignore[no-untyped-def]
    async def resolve(host: str, port: int) -> list[str]:
        if host not in answers:
            raise OSError(f"no such host: {host}")
        return answers[host]

    return resolve


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hook",
        "https://10.1.2.3/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://localhost:8000/hook",  # resolves (through /etc/hosts) to loopback
    ],
)
async def test_check_url_refuses_private_targets(url: str) -> None:
    guard = TargetGuard(allow_private=False)
    with pytest.raises(InvalidWebhookUrl, match="Webhooks cannot be sent there"):
        await guard.check_url(url)


async def test_check_url_refuses_a_name_with_any_private_address() -> None:
    guard = TargetGuard(
        allow_private=False, resolve=_resolver({"mixed.example": ["93.184.216.34", "10.0.0.7"]})
    )
    with pytest.raises(InvalidWebhookUrl, match=r"10\.0\.0\.7"):
        await guard.check_url("https://mixed.example/hook")


async def test_check_url_accepts_public_and_unresolvable_names() -> None:
    guard = TargetGuard(allow_private=False, resolve=_resolver({"public.example": ["93.184.216.34"]}))
    assert await guard.check_url("https://public.example/hook") == "https://public.example/hook"
    # Not resolvable (yet): accepted, since every delivery vets the destination again.
    assert await guard.check_url("https://not-yet.example/hook") == "https://not-yet.example/hook"


async def test_allow_private_resolves_nothing() -> None:
    async def no_dns(host: str, port: int) -> list[str]:
        raise AssertionError("resolved")

    guard = TargetGuard(allow_private=True, resolve=no_dns)
    assert await guard.check_url("http://127.0.0.1:9/x") == "http://127.0.0.1:9/x"
    target = await guard.target("https://anything.example/x")
    assert target.url == httpx.URL("https://anything.example/x")
    assert target.host_header is None


async def test_target_pins_the_vetted_address() -> None:
    guard = TargetGuard(allow_private=False, resolve=_resolver({"hooks.example": ["93.184.216.34"]}))
    target = await guard.target("https://hooks.example:8443/in?x=1")
    assert target.url == httpx.URL("https://93.184.216.34:8443/in?x=1")
    assert target.host_header == "hooks.example:8443"
    assert target.sni_hostname == "hooks.example"

    target = await guard.target("http://hooks.example/in")
    assert target.url == httpx.URL("http://93.184.216.34/in")
    assert target.host_header == "hooks.example"
    assert target.sni_hostname is None


async def test_target_pins_ipv6_addresses() -> None:
    guard = TargetGuard(allow_private=False, resolve=_resolver({"v6.example": ["2606:4700:4700::1111"]}))
    target = await guard.target("https://v6.example/in")
    assert target.url.host == "2606:4700:4700::1111"
    assert str(target.url) == "https://[2606:4700:4700::1111]/in"


async def test_target_refuses_at_send_time() -> None:
    guard = TargetGuard(allow_private=False, resolve=_resolver({"rebound.example": ["127.0.0.1"]}))
    with pytest.raises(TargetRefused, match="loopback"):
        await guard.target("https://rebound.example/in")
    with pytest.raises(TargetRefused, match="link-local"):
        await guard.target("http://169.254.169.254/")
    with pytest.raises(HostUnresolvable):
        await guard.target("https://gone.example/in")
