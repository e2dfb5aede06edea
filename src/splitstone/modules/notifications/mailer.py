"""Building email messages and handing them to a mail server, or to files for development.

`build_message` turns an `OutgoingEmail` into a standard MIME message (text and HTML alternatives).
A `Mailer` sends one: `FileMailer` writes `.eml` files (`make run` users open them in a mail client),
`SmtpMailer` talks to an SMTP server. A send fails with `PermanentFailure` when the server refuses
the recipient or message for good (a 5xx), and with `TemporaryFailure` when a retry may succeed.
"""

from __future__ import annotations

import asyncio
import os
import re
import ssl
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import Literal, Protocol
from uuid import uuid4

import aiosmtplib
import structlog
from pydantic import SecretStr

from splitstone.modules.notifications.settings import NotificationsSettings

log = structlog.get_logger("splitstone.notifications")

# CRLF line ends and 7-bit bodies (quoted-printable or base64): any server takes them unchanged.
MESSAGE_POLICY = policy.SMTP.clone(cte_type="7bit")


class PermanentFailure(Exception):
    """The server refused the message or recipient for good (5xx): no retry."""


class TemporaryFailure(Exception):
    """The message was not sent, but a later attempt may succeed (4xx, connection trouble, timeout)."""


@dataclass(frozen=True)
class OutgoingEmail:
    message_id: str
    sender: str
    to: str
    to_name: str | None
    subject: str
    text: str
    html: str
    headers: dict[str, str] = field(default_factory=dict)


def build_message(email: OutgoingEmail) -> EmailMessage:
    """A multipart/alternative message (text/plain, then text/html) dated now.

    Raises `ValueError` for an invalid address or a header value holding a line break.
    """
    message = EmailMessage(policy=MESSAGE_POLICY)
    message["From"] = email.sender
    message["To"] = Address(display_name=email.to_name or "", addr_spec=email.to)
    message["Subject"] = email.subject
    message["Date"] = format_datetime(datetime.now(UTC))
    message["Message-ID"] = email.message_id
    for name, value in email.headers.items():
        message[name] = value
    message.set_content(email.text, subtype="plain", charset="utf-8")
    message.add_alternative(email.html, subtype="html", charset="utf-8")
    return message


class Mailer(Protocol):
    async def send(self, message: EmailMessage) -> str:
        """Send `message`; return a short description of where it went, for the log.

        Raises `PermanentFailure` or `TemporaryFailure`.
        """
        ...


class FileMailer:
    """Writes each message as an `.eml` file in `directory`, for development and tests."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    async def send(self, message: EmailMessage) -> str:
        """Write `message` to a new file; return its path."""
        try:
            path = await asyncio.to_thread(self._write, message)
        except OSError as error:
            raise TemporaryFailure(f"Cannot write the message to {self.directory}: {error}") from error
        log.info("email written", path=str(path), to=str(message["To"]), subject=str(message["Subject"]))
        return str(path)

    def _write(self, message: EmailMessage) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        message_id = str(message["Message-ID"] or uuid4().hex).strip("<> ")
        safe_id = re.sub(r"[^A-Za-z0-9@._-]", "_", message_id)[:100]
        path = self.directory / f"{datetime.now(UTC):%Y%m%dT%H%M%S%fZ}-{safe_id}.eml"
        # Write beside the target, then rename: a reader never sees half a message.
        fd, temporary = tempfile.mkstemp(dir=self.directory, prefix=".", suffix=".eml.tmp")
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(message.as_bytes())
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        return path


class SmtpMailer:
    """Sends each message over a new connection to an SMTP server.

    `security` is "starttls" (upgrade a plain connection, usually port 587), "tls" (TLS from the
    first byte, usually port 465) or "none". `tls_context`, when given, replaces the default
    certificate checks (and `validate_certs`).
    """

    def __init__(
        self,
        *,
        host: str,
        port: int,
        security: Literal["starttls", "tls", "none"],
        username: str | None,
        password: SecretStr | None,
        timeout: float,
        validate_certs: bool,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.security = security
        self.username = username
        self._password = password
        self.timeout = timeout
        self.validate_certs = validate_certs
        self.tls_context = tls_context

    async def send(self, message: EmailMessage) -> str:
        """Send `message`; return the server's reply to it."""
        server = f"{self.host}:{self.port}"
        client = aiosmtplib.SMTP(
            hostname=self.host,
            port=self.port,
            username=self.username,
            password=self._password.get_secret_value() if self._password else None,
            timeout=self.timeout,
            use_tls=self.security == "tls",
            start_tls=self.security == "starttls",
            validate_certs=self.validate_certs,
            tls_context=self.tls_context,
        )
        try:
            async with client:  # connects, upgrades to TLS and logs in as configured
                _, reply = await client.send_message(message)
        except aiosmtplib.SMTPRecipientsRefused as refused:
            details = "; ".join(f"{r.recipient}: {r.code} {r.message}" for r in refused.recipients)
            if all(_permanent(r.code) for r in refused.recipients):
                raise PermanentFailure(f"{server} refused the recipient: {details}") from refused
            raise TemporaryFailure(f"{server} refused the recipient for now: {details}") from refused
        except (
            aiosmtplib.SMTPSenderRefused,
            aiosmtplib.SMTPRecipientRefused,
            aiosmtplib.SMTPDataError,
        ) as refused:
            # Only a refusal of this message is final; a 5xx while connecting or logging in is the
            # configuration's fault, which a retry after a fix may cure.
            failure = PermanentFailure if _permanent(refused.code) else TemporaryFailure
            raise failure(f"{server} refused the message: {refused.code} {refused.message}") from refused
        except aiosmtplib.SMTPResponseException as error:
            raise TemporaryFailure(f"{server} answered {error.code} {error.message}") from error
        except (aiosmtplib.SMTPException, OSError) as error:
            raise TemporaryFailure(f"{server}: {type(error).__name__}: {error}") from error
        return f"{server} accepted: {reply}"


def _permanent(code: int) -> bool:
    return 500 <= code < 600


def build_mailer(settings: NotificationsSettings, data_dir: Path) -> Mailer:
    """The mailer the settings choose: files under `mail_dir` (default `data_dir/mail`), or SMTP."""
    if settings.email_backend == "file":
        return FileMailer(settings.mail_dir or data_dir / "mail")
    return SmtpMailer(
        host=settings.smtp_host,
        port=settings.smtp_port,
        security=settings.smtp_security,
        username=settings.smtp_username,
        password=settings.smtp_password,
        timeout=settings.smtp_timeout_seconds,
        validate_certs=settings.smtp_validate_certs,
    )
