"""The HTTP request itself: pinned to the vetted address, TLS checked against the host name, capped."""

from __future__ import annotations

import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from splitstone.modules.notifications.webhook_sender import EXCERPT_CHARS, WebhookSender
from splitstone.modules.notifications.webhook_targets import Target, TargetGuard, TargetRefused
from tests.modules.notifications.webhook_support import Receiver, Reply

HEADERS = {"webhook-id": "msg_1", "content-type": "application/json"}


class PinnedGuard(TargetGuard):
    """Vets every host as 127.0.0.1, as the real guard pins a public address (which tests cannot reach)."""

    def __init__(self) -> None:
        super().__init__(allow_private=True)

    async def target(self, raw: str) -> Target:
        url = httpx.URL(raw)
        if url.host == "refused.example":
            raise TargetRefused("refused.example is a loopback address")
        return Target(
            url.copy_with(host="127.0.0.1"),
            host_header=url.netloc.decode(),
            sni_hostname=url.host if url.scheme == "https" else None,
        )


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: str,
    issuer_key: ec.EllipticCurvePrivateKey,
    ca: bool,
) -> x509.Certificate:
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False
        )
    )
    if not ca:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(subject)]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


@pytest.fixture
def tls(tmp_path: Path) -> tuple[ssl.SSLContext, ssl.SSLContext, list[str | None]]:
    """A server context for `hooks.example` (noting each SNI name), and a client context trusting it."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _certificate("Webhook test CA", ca_key, "Webhook test CA", ca_key, ca=True)
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = _certificate("hooks.example", key, "Webhook test CA", ca_key, ca=False)
    cert_file, key_file = tmp_path / "hooks.pem", tmp_path / "hooks.key"
    cert_file.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert_file, key_file)
    names: list[str | None] = []
    server.sni_callback = lambda _socket, name, _context: names.append(name)
    client = ssl.create_default_context(cadata=ca.public_bytes(serialization.Encoding.PEM).decode())
    return server, client, names


def _sender(verify: ssl.SSLContext | bool = True, max_response_bytes: int = 64 * 1024) -> WebhookSender:
    return WebhookSender(guard=PinnedGuard(), timeout=2, max_response_bytes=max_response_bytes, verify=verify)


async def test_connects_to_the_vetted_address_with_the_host_name_in_host() -> None:
    sender = _sender()
    async with Receiver() as receiver:
        result = await sender.post(f"http://hooks.example:{receiver.port}/in?x=1", HEADERS, b"{}")
    await sender.aclose()
    assert result.succeeded
    [request] = receiver.requests
    assert request.headers["host"] == f"hooks.example:{receiver.port}"
    assert request.path == "/in?x=1"
    assert request.headers["webhook-id"] == "msg_1"
    assert request.headers["accept-encoding"] == "identity"
    assert request.body == b"{}"


async def test_tls_is_checked_against_the_host_name_not_the_address(
    tls: tuple[ssl.SSLContext, ssl.SSLContext, list[str | None]],
) -> None:
    server, client, names = tls
    sender = _sender(verify=client)
    async with Receiver(tls=server) as receiver:
        good = await sender.post(f"https://hooks.example:{receiver.port}/in", HEADERS, b"{}")
        wrong = await sender.post(f"https://other.example:{receiver.port}/in", HEADERS, b"{}")
    await sender.aclose()
    assert good.succeeded, good.error
    assert names[0] == "hooks.example"
    assert receiver.requests[0].headers["host"] == f"hooks.example:{receiver.port}"
    assert wrong.status_code is None
    assert wrong.error is not None
    assert "CERTIFICATE_VERIFY_FAILED" in wrong.error or "hostname" in wrong.error.lower()
    assert len(receiver.requests) == 1


async def test_reads_no_more_than_the_cap() -> None:
    sender = _sender(max_response_bytes=4096)
    async with Receiver(default=Reply(200, b"", stream_bytes=50 * 1024 * 1024)) as receiver:
        result = await sender.post(f"http://hooks.example:{receiver.port}/in", HEADERS, b"{}")
    await sender.aclose()
    assert result.succeeded
    assert result.body_bytes == 4096
    assert result.response_excerpt == "x" * EXCERPT_CHARS
    assert receiver.streamed < 50 * 1024 * 1024


async def test_a_refused_target_is_never_contacted() -> None:
    sender = _sender()
    result = await sender.post("http://refused.example/in", HEADERS, b"{}")
    assert result.status_code is None
    assert result.error == "Refused target: refused.example is a loopback address."
    assert not result.succeeded


async def test_the_client_is_created_once_and_closed() -> None:
    sender = _sender()
    await sender.aclose()  # nothing to close yet
    async with Receiver() as receiver:
        await sender.post(f"http://hooks.example:{receiver.port}/a", HEADERS, b"{}")
        await sender.post(f"http://hooks.example:{receiver.port}/b", HEADERS, b"{}")
    await sender.aclose()
    assert [r.path for r in receiver.requests] == ["/a", "/b"]
