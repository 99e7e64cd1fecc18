"""`gelombang keys reseal`: re-seal stored personal data with the active sealing and address keys.

Part of a key rotation (docs/security.md): once every process has the new
key and the doors seal with it, this moves what PostgreSQL holds onto it, so
the old key can be retired. The same run seals the address of rows an older
door stored without one, so the email worker can go without the sealing keys.
The run is audited (who ran it, from which machine, and the outcome) on the
admin audit stream.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

import asyncpg

from config.settings import Settings
from queueing.audit import audited_run, command_identity
from queueing.redis_client import connect
from queueing.sealing import Sealer
from workers.progress import ProgressBar
from workers.reseal import ResealReport, reseal_addresses, reseal_registrations

DEFAULT_BATCH = 500


def register(subparsers: Any) -> None:
    """Add the `keys` subcommand."""
    parser = subparsers.add_parser("keys", help="sealing and address key rotation")
    actions = parser.add_subparsers(dest="action", required=True)
    reseal = actions.add_parser(
        "reseal", help="re-seal stored data sealed with a key id other than the active one")
    reseal.add_argument("--batch-size", type=int, default=DEFAULT_BATCH,
                        help=f"rows per transaction (default {DEFAULT_BATCH})")
    reseal.set_defaults(handler=run_reseal)


def run_reseal(args: argparse.Namespace) -> int:
    """Handler: re-seal, then print the final count; exit 1 if some rows could not be opened
    or the run failed (it is resumed by running it again)."""
    if args.batch_size < 1:
        print("gelombang keys reseal: --batch-size must be at least 1", file=sys.stderr)
        return 2
    settings = Settings.load()
    settings.keys.require_door()  # the sealing and the address keys
    report = ResealReport(settings.keys.active_sealing_key_id)
    addresses = ResealReport(settings.keys.active_address_key_id)
    try:
        asyncio.run(_reseal(settings, args.batch_size, report, addresses))
    except Exception as exc:
        # The type only: a message could quote data. The failure is audited.
        print(f"gelombang keys reseal: failed ({type(exc).__name__}) after re-sealing "
              f"{report.resealed:,} registrations; run it again to resume", file=sys.stderr)
        return 1
    print(_summary(report, "registrations"))
    print(_summary(addresses, "addresses"))
    return 1 if report.unreadable or addresses.unreadable else 0


def _summary(report: ResealReport, what: str) -> str:
    left = ", ".join(f"{key_id}: {count:,}" for key_id, count in sorted(report.left.items()))
    return (f"resealed {report.resealed:,} {what} with key id {report.key_id!r}"
            f" in {report.batches:,} batches; unreadable: {report.unreadable:,};"
            f" left under other key ids: {sum(report.left.values()):,}"
            + (f" ({left})" if left else ""))


def _outcome(report: ResealReport, addresses: ResealReport | None = None) -> dict[str, Any]:
    outcome: dict[str, Any] = {
        "key_id": report.key_id, "resealed": report.resealed, "batches": report.batches,
        "unreadable": report.unreadable, "left": dict(report.left)}
    if addresses is not None:
        outcome["addresses"] = _outcome(addresses)
    return outcome


async def _reseal(settings: Settings, batch_size: int, report: ResealReport,
                  addresses: ResealReport) -> None:
    sealer = Sealer(settings.keys.sealing_key_bytes(), settings.keys.active_sealing_key_id)
    address_sealer = Sealer(settings.keys.address_key_bytes(),
                            settings.keys.active_address_key_id)
    who, where = command_identity()
    redis = connect(settings.redis, socket_timeout=settings.redis.timeout_seconds)
    try:
        # Audited before any row changes (no audit trail, no run), and its outcome
        # whatever it is: PostgreSQL away, an interruption, a failure halfway.
        async with audited_run(redis, actor=who, source=where, action="keys.reseal",
                               details={"key_id": sealer.active_key_id,
                                        "address_key_id": address_sealer.active_key_id,
                                        "batch_size": batch_size}) as run:
            run.describe = lambda: _outcome(report, addresses)
            pool = await asyncpg.create_pool(settings.postgres.dsn, min_size=1, max_size=1)
            try:
                await reseal_registrations(pool, sealer, batch_size=batch_size,
                                           progress=ProgressBar("resealing", "rows"),
                                           report=report)
                await reseal_addresses(pool, address_sealer, sealer, batch_size=batch_size,
                                       progress=ProgressBar("resealing addresses", "rows"),
                                       report=addresses)
            finally:
                await pool.close()
    finally:
        await redis.aclose()
