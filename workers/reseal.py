"""Re-sealing stored personal data with the active keys (`gelombang keys reseal`).

After a rotation, rows sealed with an older key id stay readable as long as
that key is configured; re-sealing them lets the old key be retired. Two
passes, one per column pair: the full blobs (`key_id`, `sealed`) move to the
active sealing key, the separately sealed addresses (`address_key_id`,
`sealed_address`) to the active address key; rows an older door stored
without a sealed address get one, taken from the full blob. Rows are taken
in registration-id order (keyset pagination), one transaction per batch,
each row locked only while its batch is re-sealed, so the drain and
verification workers go on writing: they never change these columns, and a
worker that read a row just before reads a consistent (key id, blob) pair
it can still open. Progress is the data itself (a re-sealed row no longer
matches), so a run that stops anywhere is resumed by running it again.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

import asyncpg

from queueing.envelope import address_from_blob, reseal_address, reseal_sealed
from queueing.errors import EnvelopeError, SealingError
from queueing.sealing import Sealer


@dataclass(frozen=True, slots=True)
class _Pass:
    """One column pair's queries: $1 is always the active key id."""

    count: str
    # FOR NO KEY UPDATE: the same lock a worker's status UPDATE takes, no stronger.
    batch: str
    update: str
    left: str


_BLOBS: Final = _Pass(
    count="SELECT count(*) FROM registrations WHERE key_id <> $1",
    batch="""
SELECT registration_id, key_id, sealed
  FROM registrations
 WHERE key_id <> $1 AND ($2::uuid IS NULL OR registration_id > $2)
 ORDER BY registration_id
 LIMIT $3
   FOR NO KEY UPDATE
""",
    update="""
UPDATE registrations AS r
   SET key_id = $1, sealed = u.sealed
  FROM unnest($2::uuid[], $3::bytea[]) AS u (registration_id, sealed)
 WHERE r.registration_id = u.registration_id
""",
    left="""
SELECT key_id, count(*) FROM registrations WHERE key_id <> $1 GROUP BY key_id ORDER BY key_id
""")
# IS DISTINCT FROM: rows without a sealed address (NULL) are taken too, and get one.
_ADDRESSES: Final = _Pass(
    count="SELECT count(*) FROM registrations WHERE address_key_id IS DISTINCT FROM $1",
    batch="""
SELECT registration_id, key_id, sealed, address_key_id, sealed_address
  FROM registrations
 WHERE address_key_id IS DISTINCT FROM $1 AND ($2::uuid IS NULL OR registration_id > $2)
 ORDER BY registration_id
 LIMIT $3
   FOR NO KEY UPDATE
""",
    update="""
UPDATE registrations AS r
   SET address_key_id = $1, sealed_address = u.sealed
  FROM unnest($2::uuid[], $3::bytea[]) AS u (registration_id, sealed)
 WHERE r.registration_id = u.registration_id
""",
    left="""
SELECT coalesce(address_key_id, '(none)'), count(*) FROM registrations
 WHERE address_key_id IS DISTINCT FROM $1 GROUP BY 1 ORDER BY 1
""")
NO_ADDRESS: Final = "(none)"

Progress = Callable[[int, int], None]
# A row's column sealed again with the active key (raises SealingError).
_Reseal = Callable[[asyncpg.Record], bytes]


@dataclass
class ResealReport:
    """What a run did: rows re-sealed, rows it could not open, and what is left."""

    key_id: str
    resealed: int = 0
    batches: int = 0
    unreadable: int = 0
    # Rows still sealed with another key id at the end, by key id (new ones the
    # drain stored meanwhile from an older backlog, or unreadable ones;
    # NO_ADDRESS: rows without a sealed address).
    left: Counter[str] = field(default_factory=Counter)


async def reseal_registrations(pool: asyncpg.Pool, sealer: Sealer, *, batch_size: int,
                               progress: Progress | None = None,
                               report: ResealReport | None = None) -> ResealReport:
    """Re-seal every registration sealed with a key id other than the active one.

    `report` (if given) is filled as batches commit, so a caller still knows
    what was done when the run fails halfway.
    """
    def reseal(row: asyncpg.Record) -> bytes:
        return reseal_sealed(sealer, row["registration_id"].bytes, row["key_id"], row["sealed"])

    return await _run(pool, _BLOBS, sealer.active_key_id, reseal, batch_size, progress, report)


async def reseal_addresses(pool: asyncpg.Pool, addresses: Sealer, sealer: Sealer, *,
                           batch_size: int, progress: Progress | None = None,
                           report: ResealReport | None = None) -> ResealReport:
    """Re-seal every address sealed with another address key id than the active one, and
    seal the address of rows stored without one (opening their full blob with `sealer`)."""
    def reseal(row: asyncpg.Record) -> bytes:
        rid = row["registration_id"].bytes
        if row["sealed_address"] is None:
            try:
                return address_from_blob(sealer, addresses, rid, row["key_id"], row["sealed"])
            except EnvelopeError:
                raise SealingError("sealed payload malformed") from None
        return reseal_address(addresses, rid, row["address_key_id"], row["sealed_address"])

    return await _run(pool, _ADDRESSES, addresses.active_key_id, reseal, batch_size, progress,
                      report)


async def _run(pool: asyncpg.Pool, queries: _Pass, active: str, reseal: _Reseal,
               batch_size: int, progress: Progress | None,
               report: ResealReport | None) -> ResealReport:
    report = report if report is not None else ResealReport(active)
    total: int = await pool.fetchval(queries.count, active)
    done = 0
    cursor = None
    if progress is not None:
        progress(0, total)
    while True:
        async with pool.acquire() as connection, connection.transaction():
            rows = await connection.fetch(queries.batch, active, cursor, batch_size)
            if not rows:
                break
            ids, blobs = [], []
            for row in rows:
                try:
                    blobs.append(reseal(row))
                except SealingError:
                    report.unreadable += 1  # its key is not configured, or it was altered
                    continue
                ids.append(row["registration_id"])
            if ids:
                await connection.execute(queries.update, active, ids, blobs)
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
    report.left.update({row[0]: row[1] for row in await pool.fetch(queries.left, active)})
    return report
