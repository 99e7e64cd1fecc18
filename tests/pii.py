"""Scanners for personal data at rest and in logs: whole Redis, every PostgreSQL table,
log files. They return where and how many, never the values, so a failing test prints
no personal data."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, cast

import asyncpg

from loadtest.registrants import PROVINCES, Registrant
from queueing.redis_client import RedisClient
from tests.support import leaked_kinds, stream_range


class UnscannedType(Exception):
    """A Redis key of a type the dump does not read: it would go unscanned."""


async def redis_full_dump(redis: RedisClient) -> bytes:
    """Every key with every value of every type, stream entries and group names included.

    Values are read as commands return them, not through DUMP, whose RDB encoding may
    compress a string (LZF) and hide it from a byte search.
    """
    chunks: list[bytes] = []
    async for key in redis.scan_iter(count=1000):
        chunks.append(key)
        raw_kind: Any = await redis.type(key)
        kind = raw_kind.decode()
        # redis-py's annotations are loose (sync or async, str or bytes): read as Any.
        value: Any
        if kind == "none":
            # Gone between SCAN and TYPE: expired (an admission call's outcome
            # record lives 30 s) or deleted; nothing is left to scan.
            continue
        if kind == "string":
            chunks.append(cast(bytes, await redis.get(key)) or b"")
        elif kind == "hash":
            value = await redis.hgetall(key)
            chunks += [part for pair in value.items() for part in pair]
        elif kind == "list":
            value = await redis.lrange(key, 0, -1)
            chunks += value
        elif kind == "set":
            value = await redis.smembers(key)
            chunks += value
        elif kind == "zset":
            value = await redis.zrange(key, 0, -1, withscores=True)
            chunks += [member for member, _ in value]
        elif kind == "stream":
            for entry_id, fields in await stream_range(redis, key):
                chunks += [entry_id, *fields.keys(), *fields.values()]
            value = await redis.xinfo_groups(key)
            chunks += [str(group).encode() for group in value]
        else:
            raise UnscannedType(kind)
    return b"\n".join(chunks)


def files_text(paths: Iterable[Path]) -> bytes:
    """The bytes of every file given (a Redis append-only file, logs)."""
    return b"\n".join(path.read_bytes() for path in paths if path.is_file())


async def postgres_dump(connection: asyncpg.Connection) -> tuple[bytes, int]:
    """Every row of every table in every schema the app can use, as text (bytea as hex);
    and how many tables that was."""
    tables = await connection.fetch(
        "SELECT quote_ident(table_schema) || '.' || quote_ident(table_name)"
        "  FROM information_schema.tables"
        " WHERE table_type = 'BASE TABLE'"
        "   AND table_schema NOT IN ('pg_catalog', 'information_schema')")
    chunks = []
    for (table,) in tables:
        rows = await connection.fetch(f"SELECT t::text FROM {table} t")
        chunks += [row[0].encode() for row in rows]
    return b"\n".join(chunks), len(tables)


def hit_kinds(haystack: bytes, people: Sequence[Registrant]) -> dict[str, int]:
    """Submitted values found in the clear, as text or as hex (how PostgreSQL prints bytea),
    counted by kind."""
    return {**leaked_kinds(haystack, people), **leaked_kinds(haystack, people, as_hex=True)}


def hits(haystack: bytes, people: Sequence[Registrant]) -> int:
    """How many submitted values were found, as text or as hex."""
    return sum(hit_kinds(haystack, people).values())


# Shapes of personal data, for logs where the submitted values are not known: a
# NIK (16 digits, a real province code first), a phone number in any accepted form,
# an address the test registrants are given. Bounded by non-alphanumerics, so hex
# and ids do not match by accident.
_NIK = re.compile(rb"(?<![0-9A-Za-z])(\d{2})\d{14}(?![0-9A-Za-z])")
_PHONE = re.compile(rb"(?<![0-9A-Za-z+])(?:\+62|62|0)8\d{8,11}(?![0-9A-Za-z])")
_EMAIL = re.compile(rb"applicant\.[0-9a-z]+\.\d+@")
_PROVINCE_CODES = {b"%02d" % code for code in PROVINCES}


def shaped_hits(text: bytes) -> dict[str, int]:
    """Counts of things shaped like a NIK, phone or registrant email, by kind."""
    return {
        "nik": sum(1 for m in _NIK.finditer(text) if m[1] in _PROVINCE_CODES),
        "phone": len(_PHONE.findall(text)),
        "email": len(_EMAIL.findall(text)),
    }
