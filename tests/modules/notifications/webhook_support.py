"""What webhook tests share: a real receiver on 127.0.0.1, settings, and set-up through the API.

`Receiver` is an HTTP/1.1 server whose requests are parsed with h11 (the state machine under httpx),
so what the tests see is what crossed a socket. Each answer is taken from its script in order, then
the default: a status, a body, a delay before answering, and optionally a huge body streamed until
the client stops reading. A test module imports the fixtures it uses (`*_fixture`, named without the
suffix) from here.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import h11
import httpx
import pytest
from standardwebhooks.webhooks import Webhook

from splitstone.kernel.messaging.worker import Worker
from splitstone.modules.notifications.settings import NotificationsSettings
from tests.modules.auth.conftest import SignedIn, Users
from tests.modules.auth.org_helpers import create_org

HOST = "127.0.0.1"


@dataclass(frozen=True)
class Reply:
    status: int = 200
    body: bytes = b"ok"
    delay: float = 0.0  # seconds to wait before answering
    stream_bytes: int = 0  # announce and stream this many more bytes of body after `body`


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def signed_by(self, secret: str) -> bool:
        """Whether one of the signatures is the one `standardwebhooks` computes with `secret`.

        Unlike `Webhook.verify`, this ignores how old the timestamp is, for requests sent after a test
        moved the clock.
        """
        sent_at = datetime.fromtimestamp(int(self.headers["webhook-timestamp"]), UTC)
        expected = Webhook(secret).sign(self.headers["webhook-id"], sent_at, self.body.decode())
        return expected in self.headers["webhook-signature"].split(" ")


@dataclass
class Receiver:
    """Start with `async with`; `url` is where it listens; `requests` what it received."""

    default: Reply = field(default_factory=Reply)
    tls: ssl.SSLContext | None = None  # serve https with this context
    requests: list[Received] = field(default_factory=list)
    streamed: int = 0  # bytes of huge bodies actually written to a socket
    _script: list[Reply] = field(default_factory=list)
    _server: asyncio.Server | None = None
    _port: int | None = None
    _handlers: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{HOST}:{self.port}/hooks"

    @property
    def port(self) -> int:
        assert self._port is not None, "start the receiver first"
        return self._port

    def reply(self, *replies: Reply) -> None:
        """Answer the next requests with these, in order (then with `default`)."""
        self._script.extend(replies)

    async def __aenter__(self) -> Receiver:
        self._server = await asyncio.start_server(self._serve, HOST, 0, ssl=self.tls)
        self._port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        connection = h11.Connection(h11.SERVER)
        try:
            request: h11.Request | None = None
            body = bytearray()
            while True:
                event = connection.next_event()
                if event is h11.NEED_DATA:
                    connection.receive_data(await reader.read(65536))
                elif isinstance(event, h11.Request):
                    request, body = event, bytearray()
                elif isinstance(event, h11.Data):
                    body.extend(event.data)
                elif isinstance(event, h11.EndOfMessage) and request is not None:
                    self.requests.append(
                        Received(
                            method=request.method.decode(),
                            path=request.target.decode(),
                            headers={k.decode().lower(): v.decode() for k, v in request.headers},
                            body=bytes(body),
                        )
                    )
                    await self._answer(
                        connection, writer, self._script.pop(0) if self._script else self.default
                    )
                    return  # one request per connection, as the sender never keeps one alive
                else:
                    return
        except (ConnectionError, h11.ProtocolError):
            pass
        finally:
            self._handlers.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _answer(self, connection: h11.Connection, writer: asyncio.StreamWriter, reply: Reply) -> None:
        await asyncio.sleep(reply.delay)
        length = len(reply.body) + reply.stream_bytes
        headers = [("content-type", "text/plain; charset=utf-8"), ("content-length", str(length))]
        writer.write(connection.send(h11.Response(status_code=reply.status, headers=headers)))
        writer.write(connection.send(h11.Data(data=reply.body)))
        chunk = b"x" * 65536
        left = reply.stream_bytes
        while left > 0:
            piece = chunk[:left]
            writer.write(connection.send(h11.Data(data=piece)))
            await writer.drain()
            self.streamed += len(piece)
            left -= len(piece)
        writer.write(connection.send(h11.EndOfMessage()))
        await writer.drain()


@pytest.fixture(name="receiver")
async def receiver_fixture() -> AsyncIterator[Receiver]:
    async with Receiver() as running:
        yield running


@pytest.fixture(name="notifications_settings")
def webhook_settings_fixture(mail_dir: Path, request: pytest.FixtureRequest) -> NotificationsSettings:
    """As in conftest, with short timeouts; override more with `indirect=True` parametrization."""
    values: dict[str, Any] = {
        "email_backend": "file",
        "mail_dir": mail_dir,
        "webhook_allow_private_targets": True,
        "webhook_timeout_seconds": 2,
    }
    return NotificationsSettings(**{**values, **getattr(request, "param", {})})


async def organization(client: httpx.AsyncClient, users: Users, worker: Worker) -> tuple[SignedIn, str]:
    """A signed-in owner and their new organization, its sign-up events already handled."""
    owner = await users.signed_in()
    org_id = await create_org(client, owner)
    await worker.settle()
    return owner, org_id


async def create_endpoint(
    client: httpx.AsyncClient, owner: SignedIn, org_id: str, url: str, **body: Any
) -> dict[str, Any]:
    """A new endpoint through the API, with its secret."""
    response = await client.post(
        f"/api/v1/orgs/{org_id}/webhooks", json={"url": url, **body}, headers=owner.headers
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


async def signed_in_again(users: Users, who: SignedIn) -> SignedIn:
    """`who` with a fresh access token, once a test has moved the clock past the old one's expiry."""
    tokens = await users.login(who.email, who.password)
    return dataclasses.replace(
        who, access_token=tokens["access_token"], refresh_token=tokens["refresh_token"]
    )
