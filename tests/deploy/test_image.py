"""The container image, run: its roles against the suite's Redis and PostgreSQL.

The suite builds the image in the background while the other tests run
(tests/image_build.py: 1-2 minutes from scratch, at the lowest priority), and
this test, moved to the end, waits for it. Without a container engine or
mmdebstrap it skips, saying why; `make sysdeps` installs podman, runc and
mmdebstrap. Running the image takes about 10 s.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from gelombang.services import PostgresServer, RedisServer
from tests.image_build import WAIT_SECONDS

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "scripts" / "build-image.sh"
IMAGE_TEST = ROOT / "scripts" / "image-test.sh"


def _run(script: Path, *args: str, cwd: Path = ROOT, timeout: float = 30,
         env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(script), *args], cwd=cwd, env=env, timeout=timeout,
                          capture_output=True, text=True, check=False)


@pytest.mark.slow
@pytest.mark.image
# Its fixture may wait for the session's build (tests/image_build.py).
@pytest.mark.timeout(WAIT_SECONDS + 120)
def test_image_runs_migrate_serve_worker_store_and_its_healthcheck(
        current_image: None, redis_server: RedisServer,
        postgres_server: PostgresServer) -> None:
    env = {**os.environ, "IMAGE_TEST_REDIS_URL": redis_server.url,
           "IMAGE_TEST_POSTGRES_DSN": postgres_server.dsn}
    result = _run(IMAGE_TEST, env=env, timeout=100)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "one registration: 202 from serve, stored by worker store" in result.stdout
    assert "passed" in result.stdout.splitlines()[-1]


def _copy_build_context(destination: Path) -> Path:
    """The files the build hash reads, and the scripts, in a folder of their own."""
    for name in ("Dockerfile", ".dockerignore", "pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, destination / name)
    for folder in ("scripts", "gelombang", "intake", "queueing", "database", "workers",
                   "config", "loadtest", "benchmarks"):
        shutil.copytree(ROOT / folder, destination / folder,
                        ignore=shutil.ignore_patterns("__pycache__", "results"))
    return destination / "scripts" / "build-image.sh"


def test_build_hash_follows_the_build_context_only(tmp_path: Path) -> None:
    # The run test trusts an image whose label equals this hash: it must change
    # with every file the build reads, and only with those.
    build = _copy_build_context(tmp_path)

    def context_hash() -> str:
        result = _run(build, "--context-hash", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    first = context_hash()
    assert len(first) == 64
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_new.py").write_text("")
    (tmp_path / "gelombang" / "__pycache__").mkdir()
    (tmp_path / "gelombang" / "__pycache__" / "cli.cpython-311.pyc").write_bytes(b"\0")
    assert context_hash() == first  # outside the context or left out by .dockerignore
    for changed in ("gelombang/healthcheck.py", "Dockerfile", "database/schema.py"):
        with (tmp_path / changed).open("a") as handle:
            handle.write("\n")
        assert context_hash() != first, changed
        first = context_hash()
