"""How every process writes its log lines: text for people, or one JSON object per line.

`logging.format = "text"` (the default) keeps the plain lines people read in
a terminal; `"json"` gives log collectors one object per line with fixed
fields: `time` (UTC, ISO 8601), `level`, `process` (door-0, worker-drain,
serve, ...), `pid`, `logger`, `event` (the message) and `ids` when a call
passes some (`log.info("...", extra={"ids": {"partition": 3}})`).

Neither format carries personal data: the messages never quote it (each call
site logs types, counts and ids), and an exception is logged as its type and
frames, never its message, which could quote a request's values.
"""

from __future__ import annotations

import datetime
import logging
import traceback
from collections.abc import Mapping
from typing import Final

import orjson

from config.settings import Settings

TEXT_FORMAT: Final = "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"
# An id's value as it may appear: short scalars only, never a nested structure.
_SCALARS: Final = (str, int, float, bool)


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def __init__(self, process: str) -> None:
        super().__init__()
        self._process = process

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON (no newline inside: orjson escapes them)."""
        entry: dict[str, object] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC)
            .isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "process": self._process,
            "pid": record.process,
            "logger": record.name,
            "event": record.getMessage(),
        }
        ids = getattr(record, "ids", None)
        if isinstance(ids, Mapping):
            entry["ids"] = {str(key): value if isinstance(value, _SCALARS) else str(value)
                            for key, value in ids.items()}
        if record.exc_info and record.exc_info[0] is not None:
            # The type and where, never the message (it could quote submitted data).
            entry["error"] = record.exc_info[0].__name__
            entry["stack"] = [f"{frame.filename}:{frame.lineno} in {frame.name}"
                              for frame in traceback.extract_tb(record.exc_info[2])]
        return orjson.dumps(entry, default=str).decode()


def configure_logging(settings: Settings, process: str) -> None:
    """Send the process's log records to stderr, in the configured format."""
    handler = logging.StreamHandler()
    if settings.logging.format == "json":
        handler.setFormatter(JsonFormatter(process))
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=settings.logging.level, handlers=[handler])
