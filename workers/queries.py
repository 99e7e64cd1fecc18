"""Named SQL queries, kept in .sql files beside the code that runs them."""

from __future__ import annotations

import re
from importlib import resources

_NAME = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


def load(file_name: str) -> dict[str, str]:
    """The queries of `workers/sql/<file_name>`, by the name each starts with."""
    text = resources.files("workers.sql").joinpath(file_name).read_text()
    parts = _NAME.split(text)
    # parts: [preamble, name1, body1, name2, body2, ...]
    queries = {name: body.strip() for name, body in zip(parts[1::2], parts[2::2], strict=True)}
    if not queries:
        raise ValueError(f"no named queries in {file_name}")
    return queries
