"""An in-process door with clients for both ports, for tests."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from config.settings import Settings
from intake.app import build_admin_app, build_public_app
from intake.door import Door, open_door
from intake.hot_path import serve_registrations_first


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


async def _server(app: web.Application, hot_path: Door | None = None) -> TestServer:
    # No access log, as the real door (intake/process.py): a request line
    # quotes whatever path a client sent, a mistyped NIK included.
    server = TestServer(app)
    await server.start_server(access_log=None)
    if hot_path is not None:  # as the real door's public port serves registrations
        assert server.runner is not None and server.runner.server is not None
        serve_registrations_first(server.runner.server, hot_path)
    return server
