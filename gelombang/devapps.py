"""The application processes of the dev stack, declared in start order."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass

from config.settings import Settings


@dataclass(frozen=True)
class AppProcess:
    """One `python -m gelombang ...` process of the dev stack."""

    name: str
    # Arguments after `python -m gelombang`.
    args: tuple[str, ...]
    # The subcommand's module; while it does not exist yet the process is skipped.
    module: str
    # Runs to completion before the next process starts (e.g. migrate), instead of serving.
    once: bool = False
    # Where it listens, from its settings; it is ready once the first URL accepts TCP.
    urls: Callable[[Settings], tuple[str, ...]] | None = None
    # SIGTERM, then this long to drain before the process group is SIGKILLed.
    stop_timeout: float = 20.0
    # How much nicer than the supervisor it runs (config `[nice]`, gelombang/priority.py).
    nice: Callable[[Settings], int] = lambda settings: 0

    def available(self) -> bool:
        """Whether the subcommand's module exists (without importing it)."""
        try:
            return importlib.util.find_spec(self.module) is not None
        except ModuleNotFoundError:
            return False


def _door_urls(settings: Settings) -> tuple[str, ...]:
    return (
        f"http://127.0.0.1:{settings.public.port}",
        f"http://{settings.admin.host}:{settings.admin.port}",
    )


def _mail_sink_urls(settings: Settings) -> tuple[str, ...]:
    return (f"smtp://{settings.email.smtp_host}:{settings.email.smtp_port}",)


def _nik_sim_urls(settings: Settings) -> tuple[str, ...]:
    return (f"http://{settings.nik_sim.host}:{settings.nik_sim.port}",)


APP_PROCESSES: tuple[AppProcess, ...] = (
    AppProcess("migrate", ("migrate",), "workers.migrate_command", once=True),
    AppProcess("mail-sink", ("mail-sink",), "workers.sandbox.mail_sink", urls=_mail_sink_urls,
               nice=lambda settings: settings.nice.sandboxes),
    AppProcess("nik-sim", ("nik-sim",), "workers.sandbox.nik_sim", urls=_nik_sim_urls,
               nice=lambda settings: settings.nice.sandboxes),
    AppProcess("worker-store", ("worker", "store"), "workers.worker_command",
               nice=lambda settings: settings.nice.drain),
    AppProcess("worker-email", ("worker", "email"), "workers.verification.roles",
               nice=lambda settings: settings.nice.email),
    AppProcess("worker-nik", ("worker", "nik"), "workers.verification.roles",
               nice=lambda settings: settings.nice.nik),
    AppProcess("door", ("serve",), "intake.serve_command", urls=_door_urls,
               nice=lambda settings: settings.nice.door),
)
