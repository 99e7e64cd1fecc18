"""Blacklist import: a source's list of NIKs, stored only as keyed hashes.

Kartu Prakerja excluded directors and commissioners of state companies
(listed by the Ministry of State-Owned Enterprises) and soldiers, police and
civil servants (listed through Taspen and Asabri). Each list is a source; a
new file for a source replaces the old list in one transaction, so the drain
sees either the whole old list or the whole new one. The NIKs themselves are
never stored: only their HMAC under the same key as the registrations'
hashes, which is what the drain compares.
"""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import asyncpg

from queueing.sealing import KeyedHasher

BATCH_ROWS: Final = 50_000
# Bad lines are counted, and the first ones named by number (never by content).
REPORTED_BAD_LINES: Final = 20
_NIK_LENGTH: Final = 16


@dataclass(slots=True)
class ImportReport:
    """What an import did."""

    source: str
    imported: int = 0  # distinct NIKs now listed for the source
    replaced: int = 0  # rows the source had before
    bad_lines: list[int] = field(default_factory=list)
    bad_count: int = 0

    def note_bad(self, line: int) -> None:
        """Count a rejected line, keeping the first few line numbers."""
        self.bad_count += 1
        if len(self.bad_lines) < REPORTED_BAD_LINES:
            self.bad_lines.append(line)


Progress = Callable[[int, int], None]  # (bytes read, total bytes)


def read_niks(handle: io.TextIOBase, report: ImportReport) -> Iterator[str]:
    """The NIKs of a CSV file: one column, or a header with a `nik` column.

    Lines that hold no well-formed NIK (16 ASCII digits) are counted in the
    report by line number; blank lines are skipped.
    """
    reader = csv.reader(handle)
    column = 0
    for row in reader:
        line = reader.line_num
        cells = [cell.strip() for cell in row]
        if not any(cells):
            continue
        if line == 1 and not _is_nik(cells[0]):
            names = [cell.lower() for cell in cells]
            if "nik" in names:
                column = names.index("nik")
                continue
        value = cells[column] if column < len(cells) else ""
        if _is_nik(value):
            yield value
        else:
            report.note_bad(line)


def _is_nik(value: str) -> bool:
    return len(value) == _NIK_LENGTH and value.isascii() and value.isdigit()


def hashed_batches(path: Path, hasher: KeyedHasher, report: ImportReport,
                   progress: Progress | None = None) -> Iterator[list[tuple[bytes]]]:
    """The file's NIK hashes in batches, reading as it goes (millions of lines)."""
    total = path.stat().st_size
    with path.open("rb") as raw, io.TextIOWrapper(raw, encoding="utf-8", errors="replace",
                                                 newline="") as handle:
        batch: list[tuple[bytes]] = []
        for nik in read_niks(handle, report):
            batch.append((hasher.digest(nik),))
            if len(batch) >= BATCH_ROWS:
                yield batch
                batch = []
                if progress:
                    progress(raw.tell(), total)
        if batch:
            yield batch
    if progress:
        progress(total, total)


async def import_source(
    connection: asyncpg.Connection,
    path: Path,
    source: str,
    hasher: KeyedHasher,
    progress: Progress | None = None,
) -> ImportReport:
    """Replace `source`'s list with the NIKs in `path`, atomically."""
    report = ImportReport(source)
    batches = hashed_batches(path, hasher, report, progress)
    async with connection.transaction():
        await connection.execute(
            "CREATE TEMP TABLE blacklist_import (nik_hash bytea NOT NULL) ON COMMIT DROP"
        )
        # Reading and hashing run in a thread: the file is large, the loop is not blocked.
        while (batch := await asyncio.to_thread(next, batches, None)) is not None:
            await connection.copy_records_to_table("blacklist_import", records=batch)
        report.replaced = int(await connection.fetchval(
            "WITH gone AS (DELETE FROM nik_blacklist WHERE source = $1 RETURNING 1)"
            " SELECT count(*) FROM gone", source))
        report.imported = int(await connection.fetchval(
            "WITH added AS (INSERT INTO nik_blacklist (nik_hash, source, reason)"
            " SELECT DISTINCT nik_hash, $1, 'imported' FROM blacklist_import"
            " ON CONFLICT DO NOTHING RETURNING 1) SELECT count(*) FROM added", source))
    return report
