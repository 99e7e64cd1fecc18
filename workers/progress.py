"""A progress bar for long admin commands, on stderr so stdout stays the result."""

from __future__ import annotations

import sys
import time
from typing import TextIO

_WIDTH = 30


class ProgressBar:
    """One redrawn line on a terminal; a plain line every 10 % otherwise (logs, pipes)."""

    def __init__(self, label: str, unit: str = "", stream: TextIO | None = None,
                 tty: bool | None = None) -> None:
        self.stream = stream or sys.stderr
        self.label = label
        self.unit = f" {unit}" if unit else ""
        self.tty = self.stream.isatty() if tty is None else tty
        self.started = time.monotonic()
        self.last_tenth = -1

    def __call__(self, done: int, total: int) -> None:
        """Show `done` of `total` (a total of 0 counts as finished)."""
        share = min(done / total, 1.0) if total else 1.0
        elapsed = time.monotonic() - self.started
        if self.tty:
            filled = int(share * _WIDTH)
            self.stream.write(f"\r{self.label} [{'#' * filled}{'.' * (_WIDTH - filled)}]"
                              f" {done:,}/{total:,}{self.unit} {share:6.1%} {elapsed:6.1f} s")
            if done >= total:
                self.stream.write("\n")
        elif int(share * 10) > self.last_tenth:
            self.last_tenth = int(share * 10)
            self.stream.write(f"{self.label}: {done:,}/{total:,}{self.unit} ({share:.0%})"
                              f" after {elapsed:.1f} s\n")
        self.stream.flush()
