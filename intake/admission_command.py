"""`gelombang admission show|set`: the admin API's admission settings from a shell.

It goes through the admin port, not straight to Redis, so a change made here
is validated and audited exactly like one made over HTTP.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

import aiohttp
import orjson

from config.settings import AdmissionPolicy, Flag, Settings

PATH = "/admin/v1/admission"


def register(subparsers: Any) -> None:
    """Add the `admission` subcommand."""
    parser = subparsers.add_parser("admission", help="show or change live admission settings")
    parser.add_argument("--url", help="admin base URL (default: from admin.host and admin.port)")
    actions = parser.add_subparsers(dest="action", required=True)
    actions.add_parser("show", help="print the settings in force")
    change = actions.add_parser("set", help="change some settings for every door process")
    # One flag per field of the policy: `--rate` where a Flag names it, else `--burst` style.
    for name, field in AdmissionPolicy.model_fields.items():
        flag = next((m.name for m in field.metadata if isinstance(m, Flag)),
                    "--" + name.replace("_", "-"))
        if field.annotation is bool:
            change.add_argument(flag, dest=name, choices=["true", "false"],
                                help=field.description)
        else:
            change.add_argument(flag, dest=name, type=field.annotation, help=field.description)
    parser.set_defaults(handler=run)


def _changes(args: argparse.Namespace) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    for name, field in AdmissionPolicy.model_fields.items():
        value = getattr(args, name)
        if value is not None:
            changes[name] = value == "true" if field.annotation is bool else value
    return changes


async def _call(url: str, token: str, changes: dict[str, Any] | None) -> tuple[int, bytes]:
    headers = {"Authorization": f"Bearer {token}"}
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        if changes is None:
            request = session.get(url + PATH, headers=headers)
        else:
            request = session.put(url + PATH, data=orjson.dumps(changes),
                                  headers={**headers, "Content-Type": "application/json"})
        async with request as response:
            return response.status, await response.read()


def run(args: argparse.Namespace) -> int:
    """Handler of `gelombang admission`."""
    settings = Settings.load()
    url = (args.url or settings.admin.local_url).rstrip("/")
    changes = _changes(args) if args.action == "set" else None
    if changes == {}:
        print("gelombang admission set: give at least one setting to change", file=sys.stderr)
        return 2
    try:
        status, body = asyncio.run(_call(url, settings.admin.token, changes))
    except (aiohttp.ClientError, TimeoutError) as exc:
        print(f"gelombang admission: admin port unreachable at {url}: {exc}", file=sys.stderr)
        return 1
    text = orjson.dumps(orjson.loads(body), option=orjson.OPT_INDENT_2).decode()
    print(text, file=sys.stdout if status == 200 else sys.stderr)
    return 0 if status == 200 else 1
