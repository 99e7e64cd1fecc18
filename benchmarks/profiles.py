"""py-spy samples of a process under load, and where their CPU time goes."""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

# "function (path/to/file.py:123)": py-spy's frame in its raw (folded) format.
_FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^():]+)(?::\d+)?\)$")


def start(pid: int, seconds: int, output: Path) -> subprocess.Popen[bytes] | None:
    """Sample a process with py-spy for `seconds` (CPU-active samples only)."""
    spy = Path(sys.executable).with_name("py-spy")
    if not spy.exists():
        print("py-spy not installed; skipping the profile", file=sys.stderr)
        return None
    return subprocess.Popen([str(spy), "record", "--pid", str(pid), "--duration", str(seconds),
                             "--format", "raw", "--output", str(output), "--nonblocking"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def where(file: str) -> str:
    """The package or module a frame's file belongs to: `asyncpg`, `workers`, `uuid`."""
    if file.startswith("<frozen "):
        return file[len("<frozen "):-1].split(".")[0]
    first = file.split("/", 1)[0]
    return first.removesuffix(".py")


def self_time(raw: Path) -> tuple[Counter[str], Counter[str], int]:
    """Samples by package and by function of the innermost frame, and the total."""
    packages: Counter[str] = Counter()
    functions: Counter[str] = Counter()
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        leaf = _FRAME.match(stack.rsplit(";", 1)[-1].strip())
        if leaf is None:
            continue
        samples = int(count)
        total += samples
        packages[where(leaf["file"])] += samples
        functions[f"{leaf['function']} ({leaf['file']})"] += samples
    return packages, functions, total


def summary(raw: Path, top: int = 15) -> dict[str, list[tuple[str, float]]]:
    """The largest shares of self time, by package and by function."""
    packages, functions, total = self_time(raw)
    if not total:
        return {"packages": [], "functions": []}
    return {
        "packages": [(name, n / total) for name, n in packages.most_common(top)],
        "functions": [(name, n / total) for name, n in functions.most_common(top)],
    }
