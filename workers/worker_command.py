"""`gelombang worker store|status`: run the drain, or show how it is doing."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import importlib.util
import signal
import sys
from typing import Any

import orjson
import uvloop

from config import log_format
from config.settings import Settings
from queueing.redis_memory import wait_until_checked
from workers.drain.status import drain_status, render_status
from workers.drain.worker import DrainWorker
from workers.metrics import WorkerMetrics, serve_metrics
from workers.runtime.connections import connect_worker_redis, create_pool

# Other worker roles, each a module with `register_role(roles)` adding its parser.
ROLE_MODULES = ("workers.verification.roles",)


def register(subparsers: Any) -> None:
    """Add the `worker` subcommand and its roles."""
    parser = subparsers.add_parser("worker", help="run a worker, or show the workers' state")
    roles = parser.add_subparsers(dest="role", required=True)
    store = roles.add_parser("store", help="drain the intake streams into PostgreSQL")
    store.add_argument("--concurrency", type=int, default=None,
                       help="batches in flight (default: drain.concurrency, 0 = partitions)")
    store.set_defaults(handler=run_store)
    status = roles.add_parser("status", help="consumers, lag, pending and dead letters")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(handler=run_status)
    for module_name in ROLE_MODULES:
        if importlib.util.find_spec(module_name) is not None:
            importlib.import_module(module_name).register_role(roles)


def configure_logging(settings: Settings, role: str = "drain") -> None:
    """Lines on stderr in the configured format; nothing a worker logs carries personal
    data."""
    log_format.configure_logging(settings, f"worker-{role}")


def run_store(args: argparse.Namespace) -> int:
    """Drain until SIGTERM or SIGINT; the batch in hand is stored and acknowledged first."""
    overrides: dict[str, Any] = {}
    if args.concurrency is not None:
        overrides["drain"] = {"concurrency": args.concurrency}
    settings = Settings.load(**overrides)
    configure_logging(settings)
    uvloop.run(_store(settings))
    return 0


async def _store(settings: Settings) -> None:
    redis = connect_worker_redis(settings)
    # Before anything is read: an evicting Redis could drop what the drain has not stored.
    await wait_until_checked(redis, "drain worker")
    slots = settings.drain.concurrency or settings.queue.partitions
    pool = await create_pool(settings, slots + 1, "drain")
    metrics = WorkerMetrics("drain")
    worker = DrainWorker(settings, redis, pool, metrics=metrics)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        # The handler only sets the event; each loop finishes its batch and exits.
        loop.add_signal_handler(signum, worker.stopping.set)
    try:
        async with await serve_metrics(metrics, settings.worker_metrics.host,
                                       settings.worker_metrics.ports("drain")):
            await worker.run()
    finally:
        await pool.close()
        await redis.aclose()


def run_status(args: argparse.Namespace) -> int:
    """Print the drain's state per partition and the live workers."""
    settings = Settings.load()
    status = asyncio.run(drain_status(settings))
    if args.json:
        sys.stdout.write(orjson.dumps(status, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        sys.stdout.write(render_status(status))
    return 0
