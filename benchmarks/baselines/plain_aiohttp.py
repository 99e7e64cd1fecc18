"""The framework ceiling: aiohttp on uvloop reading the body and answering 202.

Labelled baseline: it validates nothing and stores nothing. It exists so the
door's throughput can be read as a share of what aiohttp itself can do here.
"""

from __future__ import annotations

import sys

import uvloop
from aiohttp import web

BODY = b'{"registration_id":"01890000-0000-7000-8000-000000000000","status":"queued"}'


async def accept(request: web.Request) -> web.Response:
    """Read the body, answer 202."""
    await request.read()
    return web.Response(status=202, body=BODY,
                        headers={"Content-Type": "application/json; charset=utf-8"})


def main() -> None:
    """Serve on the port given as the first argument."""
    app = web.Application()
    app.router.add_post("/v1/registrations", accept)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None,
                print=None, loop=uvloop.new_event_loop())


if __name__ == "__main__":
    main()
