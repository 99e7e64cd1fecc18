"""`gelombang waves list|schedule|cancel`: the waiting room's waves from a shell.

Like `gelombang admission`, it goes through the admin port, not straight to
Redis, so a change made here is checked and audited exactly like one made
over HTTP (docs/waiting-room.md, docs/runbook.md "Opening a wave").
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any, Final
from urllib.parse import quote

import aiohttp
import orjson

from config.settings import Settings

PATH: Final = "/admin/v1/waves"
TIME_HELP: Final = "Unix seconds or RFC 3339 (2026-12-07T10:00:00+07:00)"


def register(subparsers: Any) -> None:
    """Add the `waves` subcommand."""
    parser = subparsers.add_parser("waves", help="list, schedule or cancel waiting-room waves")
    parser.add_argument("--url", help="admin base URL (default: from admin.host and admin.port)")
    actions = parser.add_subparsers(dest="action", required=True)
    actions.add_parser("list", help="the scheduled waves and the line in force")
    schedule = actions.add_parser(
        "schedule", help="schedule a wave, or reschedule one whose pre-queue has not started")
    schedule.add_argument("wave", help="the wave's name: a-z, 0-9 and -, up to 32")
    schedule.add_argument("--prequeue-from", required=True, help=f"pre-queue start: {TIME_HELP}")
    schedule.add_argument("--opens-at", required=True, help=f"the draw and opening: {TIME_HELP}")
    schedule.add_argument("--closes-at", required=True, help=f"no joins from: {TIME_HELP}")
    cancel = actions.add_parser("cancel", help="cancel a wave that has not opened")
    cancel.add_argument("wave")
    parser.set_defaults(handler=run)


def time_value(text: str) -> int | str:
    """Unix seconds as a number, anything else as given (the admin API checks it)."""
    stripped = text.strip()
    return int(stripped) if stripped.isascii() and stripped.isdigit() else stripped


def request_of(args: argparse.Namespace) -> tuple[str, str, dict[str, Any] | None]:
    """The admin API call an invocation makes: method, path, JSON body."""
    if args.action == "list":
        return "GET", PATH, None
    path = f"{PATH}/{quote(args.wave, safe='')}"
    if args.action == "cancel":
        return "DELETE", path, None
    return "PUT", path, {"prequeue_from": time_value(args.prequeue_from),
                         "opens_at": time_value(args.opens_at),
                         "closes_at": time_value(args.closes_at)}


async def call(url: str, token: str, method: str, path: str,
               body: dict[str, Any] | None) -> tuple[int, bytes]:
    """One admin API call: its status and body."""
    headers = {"Authorization": f"Bearer {token}"}
    data = None
    if body is not None:
        headers["Content-Type"] = "application/json"
        data = orjson.dumps(body)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session, \
            session.request(method, url + path, data=data, headers=headers) as response:
        return response.status, await response.read()


def run(args: argparse.Namespace) -> int:
    """Handler of `gelombang waves`."""
    settings = Settings.load()
    url = (args.url or settings.admin.local_url).rstrip("/")
    method, path, body = request_of(args)
    try:
        status, answer = asyncio.run(call(url, settings.admin.token, method, path, body))
    except (aiohttp.ClientError, TimeoutError) as exc:
        print(f"gelombang waves: admin port unreachable at {url}: {exc}", file=sys.stderr)
        return 1
    try:
        text = orjson.dumps(orjson.loads(answer), option=orjson.OPT_INDENT_2).decode()
    except orjson.JSONDecodeError:
        text = f"HTTP {status}"
    print(text, file=sys.stdout if status == 200 else sys.stderr)
    return 0 if status == 200 else 1
