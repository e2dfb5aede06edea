"""A TCP proxy between the deployment and PostgreSQL that a test can make refuse connections.

`outage(seconds)` does what a PostgreSQL restart does to its clients, without touching the shared
server: the listening socket closes (new connections get ECONNREFUSED), every open connection is cut,
and after `seconds` the proxy listens again on the same port.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from dataclasses import dataclass, field

CHUNK = 65536


@dataclass
class PostgresGate:
    upstream_host: str
    upstream_port: int
    port: int = 0
    connections_cut: int = 0
    _server: asyncio.Server | None = None
    _pipes: set[asyncio.Task[None]] = field(default_factory=set)
    _transports: set[asyncio.BaseTransport] = field(default_factory=set)

    async def open(self) -> None:
        """Listen (again) on `port` (a free one the first time)."""
        self._server = await asyncio.start_server(
            self._accept, "127.0.0.1", self.port, reuse_address=True, family=socket.AF_INET
        )
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        """Stop listening and cut every open connection."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        pipes = list(self._pipes)
        for transport in list(self._transports):  # a reset, as when the server's process dies
            transport.abort()
        await asyncio.gather(*pipes, return_exceptions=True)
        self.connections_cut += len(pipes)
        if server is not None:
            await server.wait_closed()

    async def outage(self, seconds: float) -> None:
        await self.close()
        await asyncio.sleep(seconds)
        await self.open()

    async def _accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._pipes.add(task)
        upstream_writer: asyncio.StreamWriter | None = None
        self._transports.add(client_writer.transport)
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(
                self.upstream_host, self.upstream_port
            )
            self._transports.add(upstream_writer.transport)
            await asyncio.gather(_pump(client_reader, upstream_writer), _pump(upstream_reader, client_writer))
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self._pipes.discard(task)
            for writer in (client_writer, upstream_writer):
                if writer is not None:
                    self._transports.discard(writer.transport)
                    writer.close()
                    with contextlib.suppress(Exception):
                        await writer.wait_closed()


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(CHUNK):
        writer.write(data)
        await writer.drain()
    with contextlib.suppress(OSError):
        writer.write_eof()
