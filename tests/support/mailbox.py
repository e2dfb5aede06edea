"""A real SMTP server for tests (aiosmtpd, on a free loopback port) and what it received, parsed."""

from __future__ import annotations

import asyncio
import re
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any, cast

from aiosmtpd.controller import Controller


@dataclass(frozen=True)
class Received:
    sender: str
    recipients: list[str]
    message: EmailMessage

    @property
    def subject(self) -> str:
        return str(self.message["Subject"])

    @property
    def text(self) -> str:
        part = self.message.get_body(preferencelist=("plain",))
        assert part is not None, "the message has no text/plain part"
        return cast(str, part.get_content())

    @property
    def html(self) -> str:
        part = self.message.get_body(preferencelist=("html",))
        assert part is not None, "the message has no text/html part"
        return cast(str, part.get_content())

    def link(self, starting_with: str) -> str:
        """The first URL in the text part that starts with `starting_with`."""
        for url in re.findall(r"https?://[^\s<>\"']+", self.text):
            if url.startswith(starting_with):
                return str(url)
        raise AssertionError(f"no link starting with {starting_with!r} in:\n{self.text}")


class Mailbox:
    """Every message the server accepted, in order; `wait_for` polls for one that matches."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._messages: list[Received] = []
        self.port = 0
        self.refused: set[str] = set()  # recipients answered "550 no such user"

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        if address in self.refused:
            return "550 5.1.1 No such user here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = cast(EmailMessage, message_from_bytes(envelope.content, policy=policy.default))
        with self._lock:
            self._messages.append(Received(envelope.mail_from, list(envelope.rcpt_tos), message))
        return "250 OK"

    def messages(self, to: str | None = None, *, containing: str | None = None) -> list[Received]:
        """Messages to `to` (every one if None) whose text part contains `containing` (if given)."""
        with self._lock:
            chosen = [m for m in self._messages if to is None or to in m.recipients]
        return [m for m in chosen if containing is None or containing in m.text]

    async def wait_for(
        self, to: str, *, containing: str | None = None, count: int = 1, within: float = 15.0
    ) -> list[Received]:
        """The first `count` messages to `to` (containing `containing`), once they have arrived.

        Fails after `within` seconds.
        """
        deadline = time.monotonic() + within
        while True:
            received = self.messages(to, containing=containing)
            if len(received) >= count:
                return received[:count]
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(received)} of {count} messages to {to} within {within} s")
            await asyncio.sleep(0.05)


@contextmanager
def smtp_server(port: int | None = None) -> Iterator[Mailbox]:
    """An SMTP server on 127.0.0.1 (no TLS, no auth) collecting into a `Mailbox`."""
    mailbox = Mailbox()
    mailbox.port = port or free_port()  # aiosmtpd's readiness probe needs the real port up front
    controller = Controller(mailbox, hostname="127.0.0.1", port=mailbox.port)
    controller.start()
    try:
        yield mailbox
    finally:
        controller.stop()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
