"""Before a surge sends anything: which config, and whether all it needs answers.

A surge that only finds out at its end that PostgreSQL is elsewhere has
spent its whole load for nothing (a new user's first run did exactly that:
the dev stack's config was not named, so the loss check looked for
PostgreSQL on the default port after the load). So the surge command finds
the dev stack's config by itself when nothing else is named, and asks the
door, the admin API and PostgreSQL before the first arrival; what is
missing stops it with one line naming what and where, and how to fix it.
"""

from __future__ import annotations

import asyncio
import json
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

from config.settings import CONFIG_ENV

# Where `gelombang dev up` (make up) writes its config, relative to where it ran.
DEV_CONFIG: Final = Path(".dev") / "gelombang.toml"
REPO_ROOT: Final = Path(__file__).resolve().parents[1]
TIMEOUT: Final = 5.0


class SurgeCannotStart(Exception):
    """Something the surge needs does not answer; the message is the line to print."""


def discover_config(target: str | None) -> Path | None:
    """Name the dev stack's config in GELOMBANG_CONFIG when nothing else is named.

    Only for a local door: a remote target with the dev stack's token and DSN
    would be asked with the wrong secrets. The variable is set in this
    process because `Settings.load` reads it there, and nothing else does.
    """
    if os.environ.get(CONFIG_ENV) or (target is not None and not is_loopback(target)):
        return None
    for base in (Path.cwd(), REPO_ROOT):
        candidate = base / DEV_CONFIG
        if candidate.is_file():
            os.environ[CONFIG_ENV] = str(candidate)
            return candidate
    return None


def is_loopback(url: str) -> bool:
    """Whether the URL names this machine."""
    return urlsplit(url).hostname in ("127.0.0.1", "localhost", "::1")


def check_door(target: str) -> None:
    """The public port answers its liveness probe."""
    try:
        with urllib.request.urlopen(f"{target}/healthz", timeout=TIMEOUT) as reply:
            if reply.status == 200:
                return
            problem = f"status {reply.status}"
    except urllib.error.HTTPError as exc:
        problem = f"status {exc.code}"
    except (OSError, ValueError) as exc:
        problem = reason(exc)
    raise SurgeCannotStart(f"the door does not answer at {target} ({problem}): start the dev "
                           "stack (make up) or pass --target")


def check_admin(admin: str, token: str) -> None:
    """The admin API answers with this token (the funnel, which the report samples)."""
    request = urllib.request.Request(f"{admin}/admin/v1/funnel",
                                     headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as reply:
            json.load(reply)
            return
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            raise SurgeCannotStart(f"the admin API at {admin} refused the token (status "
                                   f"{exc.code}): pass --admin-token") from None
        problem = f"status {exc.code}"
    except (OSError, ValueError) as exc:
        problem = reason(exc)
    raise SurgeCannotStart(f"the admin API does not answer at {admin} ({problem}): start the "
                           "dev stack (make up) or pass --admin-url")


def check_postgres(dsn: str) -> None:
    """PostgreSQL answers and holds the registrations table (for the loss check)."""
    try:
        asyncio.run(_ask_postgres(dsn))
    except SurgeCannotStart:
        raise
    except Exception as exc:
        # Any failure to connect or to read: asyncpg raises its own types as
        # well as OSError and TimeoutError.
        where = postgres_address(dsn)
        raise SurgeCannotStart(
            f"PostgreSQL does not answer at {where} ({reason(exc)}): start the dev stack "
            "(make up), set GELOMBANG_CONFIG, or pass --dsn") from None


async def _ask_postgres(dsn: str) -> None:
    import asyncpg

    connection = await asyncpg.connect(dsn, timeout=TIMEOUT)
    try:
        found = await connection.fetchval("SELECT to_regclass('registrations') IS NOT NULL")
    finally:
        await connection.close()
    if not found:
        raise SurgeCannotStart(f"PostgreSQL at {postgres_address(dsn)} has no registrations "
                               "table: run gelombang migrate, or pass the right --dsn")


def postgres_address(dsn: str) -> str:
    """host:port/database of a DSN, without its user or password."""
    parts = urlsplit(dsn)
    return f"{parts.hostname or 'localhost'}:{parts.port or 5432}{parts.path}"


def reason(exc: BaseException) -> str:
    """A short cause: 'connection refused', 'timed out', or the error's first line."""
    cause = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    if isinstance(cause, ConnectionRefusedError):
        return "connection refused"
    if isinstance(cause, TimeoutError | asyncio.TimeoutError):
        return "timed out"
    if isinstance(cause, OSError) and cause.strerror:
        return cause.strerror.lower()
    text = str(cause).strip().splitlines()
    return text[0][:120] if text else type(cause).__name__
