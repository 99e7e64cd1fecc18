"""A TCP site that holds at most `max_connections` open connections.

aiohttp accepts every connection it is offered and keeps a handler (and a
task) for each; past the cap a new connection is closed at once, before any
of that is made, so memory stays bounded whoever connects.
"""

from __future__ import annotations

import asyncio
import socket
import struct

from aiohttp import web


class _Refused(asyncio.Protocol):
    """Closes the connection as soon as it is made: no handler, no task, no buffer."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # RST rather than FIN: the client learns at once, and no TIME_WAIT is held here.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.close()


class _Capped:
    """The protocol factory of a site: the server's handler while under the cap
    (the door's, intake/door_server.py)."""

    def __init__(self, server: web.Server, max_connections: int) -> None:
        self._server = server
        self._max = max_connections
        self.refused = 0

    def __call__(self) -> asyncio.BaseProtocol:
        # aiohttp's own registry of open connections (O(1) to count); it drops a
        # connection once its handler task has finished.
        if len(self._server._connections) >= self._max:
            self.refused += 1
            return _Refused()
        return self._server()


class CappedSite(web.TCPSite):
    """web.TCPSite whose listener refuses connections beyond `max_connections`."""

    def __init__(self, runner: web.BaseRunner, host: str, port: int, *,
                 max_connections: int, **kwargs: object) -> None:
        super().__init__(runner, host, port, **kwargs)  # type: ignore[arg-type]
        self._max_connections = max_connections

    async def start(self) -> None:
        """Listen, as web.TCPSite does, through the capped protocol factory."""
        await web.BaseSite.start(self)  # registers the site with its runner
        server = self._runner.server
        assert server is not None
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            _Capped(server, self._max_connections), self._host, self._port,
            backlog=self._backlog, reuse_address=self._reuse_address,
            reuse_port=self._reuse_port,
        )
        sockets = self._server.sockets
        self._bound_port = sockets[0].getsockname()[1] if sockets else self._port
