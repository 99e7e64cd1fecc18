"""The door's aiohttp server and runner: its connections get the door's own handlers.

aiohttp's Server makes a plain RequestHandler for each connection. The door's
makes a ContractRequestHandler (its own HTTP errors in the contract's shape,
intake/http_errors.py) and, on the public port, the RegistrationLane
(intake/registration_lane.py), whose registrations skip aiohttp's request
objects; its registrations that go aiohttp's way skip the application's
routing (intake/hot_path.py).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from intake.door import Door
from intake.hot_path import serve_registrations_first
from intake.http_errors import ContractRequestHandler
from intake.registration_lane import RegistrationLane


class DoorServer(web.Server):
    """aiohttp's Server, whose connection handlers are the door's."""

    def __init__(self, handler: Any, *, door: Door | None = None, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        # The door whose registrations the public port's lane decides; None elsewhere.
        self.door = door

    def __call__(self) -> web.RequestHandler:
        """A new connection's handler, made with the server's handler arguments."""
        if self.door is None:
            return ContractRequestHandler(self, loop=self._loop, **self._kwargs)
        return RegistrationLane(self, self.door, loop=self._loop, **self._kwargs)


class DoorRunner(web.AppRunner):
    """aiohttp's AppRunner whose server is a DoorServer (the public port's when `door` is set)."""

    def __init__(self, app: web.Application, *, door: Door | None = None,
                 **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._door = door

    async def _make_server(self) -> web.Server:
        made = await super()._make_server()
        server = DoorServer(made.request_handler, request_factory=made.request_factory,
                            handler_cancellation=made.handler_cancellation, loop=made._loop,
                            door=self._door, **made._kwargs)
        if self._door is not None:
            serve_registrations_first(server, self._door)
        return server
