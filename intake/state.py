"""Application keys: runtime state lives on the aiohttp app, not in globals."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from intake.door import Door

DOOR: web.AppKey[Door] = web.AppKey("door")
