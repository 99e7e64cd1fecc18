"""The mail sink's folder, read as applicants read their inbox.

`gelombang mail-sink` writes each message as one `.eml` file. A Locust
process indexes new files at most every `refresh_seconds` (headers only: the
registration id header and the link line), so finding an applicant's link is
a dictionary lookup however many messages the wave produced.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

_ID_HEADER: Final = b"X-Gelombang-Registration: "
_LINK_MARK: Final = b"/v1/verify-email?token="
# Mail older than a Locust process by more than this is another run's.
OLDER_MAIL_NS: Final = 60 * 1_000_000_000


class Mailbox:
    """registration id → the path and query of its verification link."""

    def __init__(self, folder: Path, refresh_seconds: float = 2.0,
                 since_ns: int | None = None) -> None:
        self.folder = folder
        self.refresh_seconds = refresh_seconds
        self._links: dict[str, str] = {}
        self._seen: set[str] = set()
        self._next_refresh = 0.0
        # Mail written before this surge is not read: the sink's names begin with the
        # time they were written (ns), and a dev stack's folder keeps every earlier
        # run's mail (150,000 messages after a few crushes: reading them all at once
        # stalled a Locust process for seconds).
        self._since_ns = (time.time_ns() - OLDER_MAIL_NS) if since_ns is None else since_ns

    def link_for(self, registration_id: str) -> str | None:
        """The link's path and query (`/v1/verify-email?token=…`), once its mail arrived."""
        link = self._links.get(registration_id)
        if link is None and time.monotonic() >= self._next_refresh:
            self.refresh()
            link = self._links.get(registration_id)
        return link

    def refresh(self) -> None:
        """Index the messages that arrived since the last look."""
        self._next_refresh = time.monotonic() + self.refresh_seconds
        try:
            names = [entry.name for entry in os.scandir(self.folder)
                     if entry.name.endswith(".eml") and entry.name not in self._seen
                     and _written_ns(entry.name) >= self._since_ns]
        except FileNotFoundError:
            return
        for name in names:
            self._seen.add(name)
            registration_id, link = _read_message(self.folder / name)
            if registration_id and link:
                self._links[registration_id] = link


def _written_ns(name: str) -> int:
    """When the sink wrote a message, from its name (`<time_ns>-<hex>.eml`); a name of
    another shape counts as new."""
    stamp, _, _ = name.partition("-")
    return int(stamp) if stamp.isdigit() else 2**63


def _read_message(path: Path) -> tuple[str | None, str | None]:
    """A message's registration id header and the path and query of its link."""
    try:
        data = path.read_bytes()
    except OSError:
        return None, None
    registration_id = link = None
    for line in data.splitlines():
        if line.startswith(_ID_HEADER):
            registration_id = line[len(_ID_HEADER):].strip().decode("ascii", "replace")
        elif link is None and _LINK_MARK in line:
            parts = urlsplit(line.strip().decode("ascii", "replace"))
            link = f"{parts.path}?{parts.query}"
        if registration_id and link:
            break
    return registration_id, link


def registration_ids_of_mail(folder: Path) -> list[str]:
    """The registration id of every message in the folder, once per message."""
    try:
        paths = [Path(entry.path) for entry in os.scandir(folder) if entry.name.endswith(".eml")]
    except FileNotFoundError:
        return []
    return [rid for rid, _ in map(_read_message, paths) if rid is not None]
