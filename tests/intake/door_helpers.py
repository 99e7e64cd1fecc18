"""An in-process door with clients for both ports, for tests."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from config.settings import Settings
from intake.app import build_admin_app, build_public_app
from intake.door import Door, open_door
from intake.door_server import DoorRunner


@dataclass
class DoorUnderTest:
    """An in-process door with clients for both ports."""

    door: Door
    public: TestClient  # type: ignore[type-arg]
    admin: TestClient  # type: ignore[type-arg]


def with_admission(settings: Settings, **changes: object) -> Settings:
    """A copy of the settings with some admission figures changed."""
    return settings.model_copy(update={"admission": settings.admission.model_copy(update=changes)})


@contextlib.asynccontextmanager
async def running_door(settings: Settings) -> AsyncIterator[DoorUnderTest]:
    """An in-process door with the given settings."""
    async with open_door(settings) as door:
        public = TestClient(await _server(build_public_app(door), hot_path=door))
        admin = TestClient(await _server(build_admin_app(door)))
        await public.start_server()
        await admin.start_server()
        try:
            yield DoorUnderTest(door, public, admin)
        finally:
            await public.close()
            await admin.close()


class DoorTestServer(TestServer):
    """aiohttp's TestServer running the door's runner: its connections get the door's
    handlers, the public port's registration lane among them (intake/door_server.py)."""

    def __init__(self, app: web.Application, door: Door | None) -> None:
        super().__init__(app)
        self._door = door

    async def _make_runner(self, **kwargs: Any) -> web.BaseRunner:
        return DoorRunner(self.app, door=self._door, **kwargs)


async def _server(app: web.Application, hot_path: Door | None = None) -> TestServer:
    # No access log, as the real door (intake/process.py): a request line
    # quotes whatever path a client sent, a mistyped NIK included.
    server = DoorTestServer(app, hot_path)
    await server.start_server(access_log=None)
    return server
