"""Building messages and sending them: to files, and over SMTP to a real in-process server (aiosmtpd)."""

from __future__ import annotations

import asyncio
import email
import ipaddress
import socket
import ssl
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email import policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
import structlog
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydantic import SecretStr

from splitstone.modules.notifications.mailer import (
    FileMailer,
    OutgoingEmail,
    PermanentFailure,
    SmtpMailer,
    TemporaryFailure,
    build_mailer,
    build_message,
)
from splitstone.modules.notifications.settings import NotificationsSettings

HOST = "127.0.0.1"
USERNAME = "mailer"
PASSWORD = "s3cret-passw0rd"
UNSUBSCRIBE = "<https://app.example/unsubscribe?token=abc>"


def _outgoing(**changes: Any) -> OutgoingEmail:
    values: dict[str, Any] = {
        "message_id": "<0192d4e0-7c1a-7000-8000-000000000001@splitstone.test>",
        "sender": "Splitstone <no-reply@splitstone.test>",
        "to": "juergen@example.com",
        "to_name": "Jürgen Müller",
        "subject": "Grüße aus Köln: Ihr Passwort wurde geändert ✓",
        "text": "Hallo Jürgen,\n\nIhr Passwort wurde geändert.\n",
        "html": "<p>Hallo Jürgen,</p><p>Ihr Passwort wurde geändert.</p>\n",
        "headers": {"List-Unsubscribe": UNSUBSCRIBE, "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"},
    }
    return OutgoingEmail(**{**values, **changes})


def _parse(raw: bytes) -> EmailMessage:
    parsed = email.message_from_bytes(raw, policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def _assert_is_the_outgoing_email(received: EmailMessage, sent: OutgoingEmail) -> None:
    assert received["From"] == sent.sender
    [to] = received["To"].addresses
    assert (to.display_name, to.addr_spec) == (sent.to_name, sent.to)
    assert received["Subject"] == sent.subject
    assert received["Message-ID"] == sent.message_id
    assert received["List-Unsubscribe"] == UNSUBSCRIBE
    assert received["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert abs(received["Date"].datetime - datetime.now(UTC)) < timedelta(minutes=1)
    assert received.get_content_type() == "multipart/alternative"
    plain, html = received.iter_parts()
    assert plain.get_content_type() == "text/plain"
    assert html.get_content_type() == "text/html"
    # The wire's line ends are CRLF; the parser keeps them in decoded bodies.
    assert plain.get_content().replace("\r\n", "\n") == sent.text
    assert html.get_content().replace("\r\n", "\n") == sent.html


# Building messages


def test_message_has_the_headers_and_both_alternatives_in_order() -> None:
    sent = _outgoing()

    message = build_message(sent)

    raw = message.as_bytes()
    assert raw.isascii()  # non-ASCII names, subject and bodies are encoded for any server
    _assert_is_the_outgoing_email(_parse(raw), sent)


def test_message_without_a_name_addresses_the_bare_address() -> None:
    message = build_message(_outgoing(to_name=None, headers={}))

    assert str(message["To"]) == "juergen@example.com"
    assert "List-Unsubscribe" not in message


@pytest.mark.parametrize(
    "changes",
    [
        {"to": "victim@example.com\r\nBcc: everyone@example.com"},
        {"subject": "Hello\r\nBcc: everyone@example.com"},
        {"headers": {"List-Unsubscribe": "<https://x.example>\r\nBcc: everyone@example.com"}},
    ],
)
def test_header_injection_is_refused(changes: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"."):
        build_message(_outgoing(**changes))


# The file backend


def _files(directory: Path) -> list[Path]:
    return sorted(directory.iterdir())


def _read(path: Path) -> bytes:
    return path.read_bytes()


async def test_file_mailer_writes_one_parseable_eml_atomically(tmp_path: Path) -> None:
    directory = tmp_path / "not" / "yet" / "there"
    sent = _outgoing()

    with structlog.testing.capture_logs() as logs:
        described = await FileMailer(directory).send(build_message(sent))

    path = Path(described)
    assert path.parent == directory
    assert path.suffix == ".eml"
    assert "0192d4e0-7c1a-7000-8000-000000000001@splitstone.test" in path.name
    assert _files(directory) == [path]  # no temporary file left behind
    _assert_is_the_outgoing_email(_parse(_read(path)), sent)
    # Only this mailer's lines: capture_logs is process-wide, and an earlier test's threads may still log.
    assert [line for line in logs if line["event"] == "email written"] == [
        {
            "event": "email written",
            "log_level": "info",
            "path": described,
            "to": "Jürgen Müller <juergen@example.com>",
            "subject": sent.subject,
        }
    ]


async def test_file_mailer_keeps_every_message_and_sanitises_the_name(tmp_path: Path) -> None:
    mailer = FileMailer(tmp_path)

    first = await mailer.send(build_message(_outgoing(message_id="<../../etc/passwd@x>")))
    second = await mailer.send(build_message(_outgoing(message_id="<../../etc/passwd@x>")))

    assert first != second
    assert _files(tmp_path) == sorted(Path(p) for p in (first, second))
    assert all("/" not in Path(p).name.removesuffix(".eml") for p in (first, second))


async def test_file_mailer_reports_an_unwritable_directory_as_temporary(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")

    with pytest.raises(TemporaryFailure):
        await FileMailer(blocker / "mail").send(build_message(_outgoing()))


# An SMTP server to talk to


@dataclass
class Recorder:
    """An aiosmtpd handler that keeps what it accepts and answers as told."""

    refuse_recipients: dict[str, str]
    data_reply: str | None = None

    def __post_init__(self) -> None:
        self.received: list[Envelope] = []

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if address in self.refuse_recipients:
            return self.refuse_recipients[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.data_reply:
            return self.data_reply
        self.received.append(envelope)
        return "250 2.0.0 queued as 42"


def _authenticate(
    server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
) -> AuthResult:
    valid = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
        USERNAME.encode(),
        PASSWORD.encode(),
    )
    return AuthResult(success=valid, handled=False)  # not handled: the server answers 535 itself


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


@contextmanager
def _smtp_server(handler: Recorder, **options: Any) -> Iterator[int]:
    """Runs aiosmtpd in its own thread and loop; yields its port."""
    controller = Controller(handler, hostname=HOST, port=_free_port(), server_hostname="localhost", **options)
    controller.start()
    try:
        yield controller.port
    finally:
        controller.stop()


@dataclass(frozen=True)
class Certificate:
    cert_pem: str
    cert_path: Path
    key_path: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert_path, self.key_path)
        return context

    def client_context(self) -> ssl.SSLContext:
        """Trusts this certificate only, and checks the host name as usual."""
        return ssl.create_default_context(cadata=self.cert_pem)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    """A self-signed certificate for 127.0.0.1 and localhost, made for this test run."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(HOST))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    directory = tmp_path_factory.mktemp("tls")
    cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    (directory / "cert.pem").write_text(cert_pem)
    (directory / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return Certificate(cert_pem, directory / "cert.pem", directory / "key.pem")


def _mailer(port: int, **changes: Any) -> SmtpMailer:
    options: dict[str, Any] = {
        "host": HOST,
        "port": port,
        "security": "none",
        "username": None,
        "password": None,
        "timeout": 5,
        "validate_certs": True,
    }
    return SmtpMailer(**{**options, **changes})


def _received(handler: Recorder) -> EmailMessage:
    [envelope] = handler.received
    assert isinstance(envelope.content, bytes)
    return _parse(envelope.content)


# Sending over SMTP


async def test_smtp_sends_over_a_plain_connection() -> None:
    handler = Recorder(refuse_recipients={})
    sent = _outgoing()

    with _smtp_server(handler) as port:
        described = await _mailer(port).send(build_message(sent))

    assert "queued as 42" in described
    [envelope] = handler.received
    assert envelope.mail_from == "no-reply@splitstone.test"
    assert envelope.rcpt_tos == ["juergen@example.com"]
    _assert_is_the_outgoing_email(_received(handler), sent)


async def test_smtp_starttls_with_login(certificate: Certificate) -> None:
    handler = Recorder(refuse_recipients={})
    sent = _outgoing()
    server_options = {
        "tls_context": certificate.server_context(),
        "require_starttls": True,
        "authenticator": _authenticate,
        "auth_require_tls": True,
        "auth_required": True,
    }

    with _smtp_server(handler, **server_options) as port:
        mailer = _mailer(
            port,
            security="starttls",
            username=USERNAME,
            password=SecretStr(PASSWORD),
            tls_context=certificate.client_context(),
        )
        await mailer.send(build_message(sent))

    _assert_is_the_outgoing_email(_received(handler), sent)


async def test_smtp_starttls_without_certificate_checks(certificate: Certificate) -> None:
    handler = Recorder(refuse_recipients={})

    with _smtp_server(handler, tls_context=certificate.server_context(), require_starttls=True) as port:
        await _mailer(port, security="starttls", validate_certs=False).send(build_message(_outgoing()))

    assert len(handler.received) == 1


async def test_smtp_refuses_an_untrusted_certificate_for_now(certificate: Certificate) -> None:
    handler = Recorder(refuse_recipients={})

    server = _smtp_server(handler, tls_context=certificate.server_context(), require_starttls=True)
    with server as port, pytest.raises(TemporaryFailure, match="CERTIFICATE_VERIFY_FAILED"):
        await _mailer(port, security="starttls").send(build_message(_outgoing()))

    assert handler.received == []


async def test_smtp_wrong_password_fails_for_now_and_never_shows_it(certificate: Certificate) -> None:
    handler = Recorder(refuse_recipients={})
    server_options = {
        "tls_context": certificate.server_context(),
        "require_starttls": True,
        "authenticator": _authenticate,
        "auth_require_tls": True,
    }

    with _smtp_server(handler, **server_options) as port:
        mailer = _mailer(
            port,
            security="starttls",
            username=USERNAME,
            password=SecretStr("wrong-" + PASSWORD),
            tls_context=certificate.client_context(),
        )
        with pytest.raises(TemporaryFailure, match="535") as raised:
            await mailer.send(build_message(_outgoing()))

    assert PASSWORD not in str(raised.value)
    assert PASSWORD not in repr(mailer)
    assert handler.received == []


async def test_smtp_implicit_tls(certificate: Certificate) -> None:
    handler = Recorder(refuse_recipients={})
    sent = _outgoing()

    with _smtp_server(handler, ssl_context=certificate.server_context()) as port:
        await _mailer(port, security="tls", tls_context=certificate.client_context()).send(
            build_message(sent)
        )

    _assert_is_the_outgoing_email(_received(handler), sent)


@pytest.mark.parametrize(
    ("refuse_recipients", "data_reply", "failure", "reply"),
    [
        ({"juergen@example.com": "550 5.1.1 no such user"}, None, PermanentFailure, "550 5.1.1 no such user"),
        ({"juergen@example.com": "451 4.7.1 greylisted"}, None, TemporaryFailure, "451 4.7.1 greylisted"),
        ({}, "554 5.7.1 rejected as spam", PermanentFailure, "554 5.7.1 rejected as spam"),
        ({}, "451 4.3.0 mailbox busy", TemporaryFailure, "451 4.3.0 mailbox busy"),
    ],
    ids=["550-recipient", "451-recipient", "554-data", "451-data"],
)
async def test_smtp_refusals_are_permanent_for_5xx_and_temporary_for_4xx(
    refuse_recipients: dict[str, str], data_reply: str | None, failure: type[Exception], reply: str
) -> None:
    handler = Recorder(refuse_recipients=refuse_recipients, data_reply=data_reply)

    with _smtp_server(handler) as port, pytest.raises(failure) as raised:
        await _mailer(port).send(build_message(_outgoing()))

    assert reply in str(raised.value)  # the server's code and text, for the delivery's log
    assert handler.received == []


async def test_smtp_connection_refused_is_temporary() -> None:
    port = _free_port()  # nothing listens on it

    with pytest.raises(TemporaryFailure, match=f"{HOST}:{port}"):
        await _mailer(port).send(build_message(_outgoing()))


async def test_smtp_server_that_never_answers_times_out_as_temporary() -> None:
    async def stay_silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # until the client gives up and closes
        writer.close()

    server = await asyncio.start_server(stay_silent, HOST, 0)
    port = server.sockets[0].getsockname()[1]
    try:
        started = time.monotonic()
        with pytest.raises(TemporaryFailure, match="imeout"):
            await _mailer(port, timeout=0.5).send(build_message(_outgoing()))
        assert time.monotonic() - started < 2
    finally:
        server.close()
        await server.wait_closed()


# Choosing the mailer


def test_build_mailer_file_backend_defaults_to_the_data_dir(tmp_path: Path) -> None:
    mailer = build_mailer(NotificationsSettings(email_backend="file", mail_dir=None), tmp_path)

    assert isinstance(mailer, FileMailer)
    assert mailer.directory == tmp_path / "mail"


def test_build_mailer_file_backend_honours_mail_dir(tmp_path: Path) -> None:
    settings = NotificationsSettings(email_backend="file", mail_dir=tmp_path / "outbox")

    mailer = build_mailer(settings, tmp_path / "data")

    assert isinstance(mailer, FileMailer)
    assert mailer.directory == tmp_path / "outbox"


def test_build_mailer_smtp_backend_uses_the_settings(tmp_path: Path) -> None:
    settings = NotificationsSettings(
        email_backend="smtp",
        smtp_host="mail.example",
        smtp_port=465,
        smtp_security="tls",
        smtp_username="app",
        smtp_password=SecretStr("pw"),
        smtp_timeout_seconds=7,
        smtp_validate_certs=False,
    )

    mailer = build_mailer(settings, tmp_path)

    assert isinstance(mailer, SmtpMailer)
    assert (mailer.host, mailer.port, mailer.security, mailer.username) == ("mail.example", 465, "tls", "app")
    assert (mailer.timeout, mailer.validate_certs) == (7, False)
