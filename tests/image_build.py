"""The container image, built beside the suite: started once collection is done,
waited for by the test that runs the image.

Building from scratch (the Debian base by mmdebstrap, then the Dockerfile)
takes 1-2 minutes, mostly downloads; in the background, at the lowest CPU and
I/O priority, it costs the suite's wall time next to nothing. The tests that
need the image are moved to the end of the run, so they rarely wait.

Only when a collected test is marked `image`, an engine and mmdebstrap are
present (`make sysdeps` installs them) and the image is not already built from
these sources. `GELOMBANG_IMAGE_BUILD=0` turns the build off (the image tests
then run only against an image already current, and skip otherwise).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pytest

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "scripts" / "build-image.sh"
LOG = ROOT / ".dev" / "image" / "suite-build.log"
MARKER = "image"
# Far above a build from scratch here (100 s), for a slow mirror.
WAIT_SECONDS = 900.0


@dataclass
class BackgroundBuild:
    """The build the session started, and where it writes."""

    process: subprocess.Popen[bytes]
    log: IO[bytes]
    started: float

    def wait(self, timeout: float) -> int:
        """The build's exit status, once it ends (TimeoutExpired past `timeout`)."""
        try:
            return self.process.wait(timeout)
        finally:
            if self.process.returncode is not None:
                self.log.close()

    def stop(self) -> None:
        """Stop an unfinished build (the session ended first), with everything it started."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.log.close()


build_key = pytest.StashKey[BackgroundBuild | None]()


def image_status() -> subprocess.CompletedProcess[str]:
    """`build-image.sh --status`: 0 when the image is built from these sources."""
    return subprocess.run(["bash", str(BUILD), "--status"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, check=False)


def can_build() -> subprocess.CompletedProcess[str]:
    """`build-image.sh --can-build`: 0 when an engine and the base's tools are here."""
    return subprocess.run(["bash", str(BUILD), "--can-build"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, check=False)


def pytest_configure(config: pytest.Config) -> None:
    config.stash[build_key] = None


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # After any reordering (pytest-randomly): the image's tests go last.
    waiting = [item for item in items if item.get_closest_marker(MARKER)]
    if waiting:
        items[:] = [item for item in items if not item.get_closest_marker(MARKER)] + waiting


def pytest_collection_finish(session: pytest.Session) -> None:
    if os.environ.get("GELOMBANG_IMAGE_BUILD", "1") == "0":
        return
    if not any(item.get_closest_marker(MARKER) for item in session.items):
        return
    if can_build().returncode != 0 or image_status().returncode == 0:
        return
    LOG.parent.mkdir(parents=True, exist_ok=True)
    log = LOG.open("wb")
    # nice 19 and the idle I/O class: the suite's own processes come first.
    process = subprocess.Popen(["nice", "-n", "19", "ionice", "-c", "3", "bash", str(BUILD)],
                               cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL, start_new_session=True)
    session.config.stash[build_key] = BackgroundBuild(process, log, time.monotonic())


def pytest_unconfigure(config: pytest.Config) -> None:
    build = config.stash.get(build_key, None)
    if build is not None:
        build.stop()


@pytest.fixture(scope="session")
def current_image(pytestconfig: pytest.Config) -> None:
    """The image built from these sources: waits for the session's build if one runs;
    skips when this machine cannot build one (no engine, `GELOMBANG_IMAGE_BUILD=0`)."""
    build = pytestconfig.stash.get(build_key, None)
    if build is not None:
        status = build.wait(WAIT_SECONDS)
        tail = LOG.read_text(errors="replace")[-3000:]
        assert status == 0, f"the image build failed ({LOG}):\n{tail}"
    current = image_status()
    if current.returncode != 0:
        why = (current.stdout + current.stderr).strip() or "no current image"
        if build is not None:
            pytest.fail(f"built, and still not current: {why}")
        pytest.skip(why)
