"""Reading the project's Markdown as GitHub renders it: headings, their anchors, sections."""

from __future__ import annotations

import re
from collections import Counter

_HEADING = re.compile(r"^(#{1,6}) +(.+?) *#*$")
_FENCE = re.compile(r"^ {0,3}(```|~~~)")


def headings(text: str) -> list[tuple[int, str]]:
    """(level, title) of every heading outside code blocks, in order."""
    found: list[tuple[int, str]] = []
    in_code = False
    for line in text.splitlines():
        if _FENCE.match(line):
            in_code = not in_code
        elif not in_code and (match := _HEADING.match(line)):
            found.append((len(match[1]), match[2]))
    return found


def slug(title: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Every heading anchor of a page; a repeated title gets -1, -2, ... as on GitHub."""
    seen: Counter[str] = Counter()
    found: set[str] = set()
    for _, title in headings(text):
        base = slug(title)
        found.add(base if not seen[base] else f"{base}-{seen[base]}")
        seen[base] += 1
    return found


def sections(text: str, level: int) -> dict[str, str]:
    """The body of every heading of a level, up to the next heading of that level or above."""
    found: dict[str, str] = {}
    title: str | None = None
    body: list[str] = []
    for line in [*text.splitlines(), "#" * level + " end"]:
        match = _HEADING.match(line)
        if match and len(match[1]) <= level:
            if title is not None:
                found[title] = "\n".join(body)
            title = match[2] if len(match[1]) == level else None
            body = []
        elif title is not None:
            body.append(line)
    return found
