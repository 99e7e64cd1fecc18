"""`gelombang migrate`: bring the PostgreSQL schema up to date."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from config.settings import Settings
from database.schema import migrate


def register(subparsers: Any) -> None:
    """Add the `migrate` subcommand."""
    parser = subparsers.add_parser("migrate", help="apply pending schema migrations")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Apply what is pending and say what was applied."""
    settings = Settings.load()
    applied = asyncio.run(migrate(settings.postgres.dsn))
    if not applied:
        print("schema up to date")
    for migration in applied:
        print(f"applied {migration.version:04d}_{migration.name}")
    return 0
