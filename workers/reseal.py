"""Re-sealing stored personal data with the active sealing key (`gelombang keys reseal`).

After a rotation, rows sealed with an older key id stay readable as long as
that key is configured; re-sealing them lets the old key be retired. Rows are
taken in registration-id order (keyset pagination), one transaction per
batch, each row locked only while its batch is re-sealed, so the drain and
verification workers go on writing: they never change `sealed`, and a worker
that read a row just before reads a consistent (key id, blob) pair it can
still open. Progress is the data itself (a re-sealed row no longer matches),
so a run that stops anywhere is resumed by running it again.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

import asyncpg

from queueing.envelope import reseal_sealed
from queueing.errors import SealingError
from queueing.sealing import Sealer

_COUNT: Final = "SELECT count(*) FROM registrations WHERE key_id <> $1"
# FOR NO KEY UPDATE: the same lock a worker's status UPDATE takes, no stronger.
_BATCH: Final = """
SELECT registration_id, key_id, sealed
  FROM registrations
 WHERE key_id <> $1 AND ($2::uuid IS NULL OR registration_id > $2)
 ORDER BY registration_id
 LIMIT $3
   FOR NO KEY UPDATE
"""
_UPDATE: Final = """
UPDATE registrations AS r
   SET key_id = $1, sealed = u.sealed
  FROM unnest($2::uuid[], $3::bytea[]) AS u (registration_id, sealed)
 WHERE r.registration_id = u.registration_id
"""
_LEFT: Final = """
SELECT key_id, count(*) FROM registrations WHERE key_id <> $1 GROUP BY key_id ORDER BY key_id
"""

Progress = Callable[[int, int], None]


@dataclass
class ResealReport:
    """What a run did: rows re-sealed, rows it could not open, and what is left."""

    key_id: str
    resealed: int = 0
    batches: int = 0
    unreadable: int = 0
    # Rows still sealed with another key id at the end, by key id (new ones the
    # drain stored meanwhile from an older backlog, or unreadable ones).
    left: Counter[str] = field(default_factory=Counter)


async def reseal_registrations(pool: asyncpg.Pool, sealer: Sealer, *, batch_size: int,
                               progress: Progress | None = None,
                               report: ResealReport | None = None) -> ResealReport:
    """Re-seal every registration sealed with a key id other than the active one.

    `report` (if given) is filled as batches commit, so a caller still knows
    what was done when the run fails halfway.
    """
    active = sealer.active_key_id
    report = report if report is not None else ResealReport(active)
    total: int = await pool.fetchval(_COUNT, active)
    done = 0
    cursor = None
    if progress is not None:
        progress(0, total)
    while True:
        async with pool.acquire() as connection, connection.transaction():
            rows = await connection.fetch(_BATCH, active, cursor, batch_size)
            if not rows:
                break
            ids, blobs = [], []
            for row in rows:
                rid = row["registration_id"]
                try:
                    blobs.append(reseal_sealed(sealer, rid.bytes, row["key_id"], row["sealed"]))
                except SealingError:
                    report.unreadable += 1  # its key is not configured, or it was altered
                    continue
                ids.append(rid)
            if ids:
                await connection.execute(_UPDATE, active, ids, blobs)
        cursor = rows[-1]["registration_id"]
        report.resealed += len(ids)
        report.batches += 1
        done += len(rows)
        if progress is not None:
            # Rows stored meanwhile can push the count past the first total.
            total = max(total, done)
            progress(done, total)
    if progress is not None and done < total:
        progress(total, total)  # rows re-sealed or removed by someone else meanwhile
    report.left.update({row[0]: row[1] for row in await pool.fetch(_LEFT, active)})
    return report
