"""What every benchmark needs: CPU pinning, a Redis, config files, result folders."""

from __future__ import annotations

import datetime
import json
import os
import secrets
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks import cpu
from config.settings import Settings
from gelombang.devstate import render_toml

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS = REPO_ROOT / "benchmarks" / "results"


def cores() -> int:
    """Cores this process may run on."""
    return len(os.sched_getaffinity(0))


def pinned(command: list[str], cores: int | Sequence[int] | None) -> list[str]:
    """The command run under taskset on the given core(s), when the machine has taskset."""
    if isinstance(cores, int):
        cores = (cores,)
    if not cores or shutil.which("taskset") is None:
        return command
    return ["taskset", "-c", ",".join(map(str, cores)), *command]


def pin_family(pid: int, cores: int | Sequence[int] | None) -> None:
    """Move a running process, its threads and its live children to the given core(s)."""
    if isinstance(cores, int):
        cores = (cores,)
    if not cores or shutil.which("taskset") is None:
        return
    # PostgreSQL's background processes already run when it answers: pin them too.
    for member in cpu.family(cpu.processes(), pid):
        subprocess.run(["taskset", "-a", "-p", "-c", ",".join(map(str, cores)), str(member)],
                       check=False, capture_output=True)


def door_config(path: Path, redis_url: str, port: int, admin_port: int,
                **admission: Any) -> Path:
    """A door config file for benchmarks: fresh keys, the given Redis and ports."""
    base = Settings.load().model_dump(mode="json")
    base["keys"].update(fresh_keys())
    base["redis"]["url"] = redis_url
    base["public"].update(host="127.0.0.1", port=port)
    base["admin"].update(port=admin_port, token=secrets.token_urlsafe(32))
    base["admission"].update(admission)
    base["logging"]["level"] = "WARNING"
    path.write_text(render_toml(base))
    return path


def fresh_keys() -> dict[str, Any]:
    """Every key a benchmark's processes need, random (id "bench"), in config form."""
    return {"active_sealing_key_id": "bench", "sealing_keys": {"bench": _random_key()},
            "active_address_key_id": "bench", "address_keys": {"bench": _random_key()},
            "active_token_key_id": "bench", "token_keys": {"bench": _random_key()},
            "hash_key": _random_key()}


def _random_key() -> str:
    import base64

    return base64.b64encode(os.urandom(32)).decode()


def wait_http(url: str, timeout: float = 20.0) -> None:
    """Wait until a URL answers at all."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout} s")


def result_folder(suite: str) -> Path:
    """A new folder for one run's results."""
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    folder = RESULTS / f"{suite}-{stamp}"
    folder.mkdir(parents=True)
    return folder


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": model, "cores": cores(), "os": os.uname().sysname,
            "kernel": os.uname().release}


def write_json(path: Path, data: Any) -> None:
    """Pretty JSON."""
    path.write_text(json.dumps(data, indent=2) + "\n")
