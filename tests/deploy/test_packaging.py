"""The wheel (and so the container image) holds everything the code reads.

setuptools takes only the packages and data files pyproject.toml names; a
module folder or a data file left out works in the checkout and breaks in
the image (a page, the OpenAPI document, a migration missing).
"""

from __future__ import annotations

import fnmatch
import tomllib
from pathlib import Path

from tests.support import REPO_ROOT

SOURCE_ROOTS = ("gelombang", "intake", "queueing", "workers", "config", "loadtest", "benchmarks")
# Run outputs, git-ignored: not part of any package.
NOT_SOURCE = ("results",)


def _setuptools() -> dict[str, object]:
    with (REPO_ROOT / "pyproject.toml").open("rb") as handle:
        table: dict[str, object] = tomllib.load(handle)["tool"]["setuptools"]
    return table


def _source_files() -> list[Path]:
    return [path.relative_to(REPO_ROOT) for root in SOURCE_ROOTS
            for path in (REPO_ROOT / root).rglob("*")
            if path.is_file() and "__pycache__" not in path.parts
            and not any(part in NOT_SOURCE for part in path.parts)]


def test_every_module_folder_is_a_listed_package() -> None:
    listed = set(_setuptools()["packages"])  # type: ignore[call-overload]
    folders = {".".join(path.parent.parts) for path in _source_files() if path.suffix == ".py"}
    assert folders - listed == set()


def test_every_data_file_is_in_the_package_data() -> None:
    package_data: dict[str, list[str]] = _setuptools()["package-data"]  # type: ignore[assignment]
    missing = []
    for path in _source_files():
        if path.suffix == ".py":
            continue
        # The nearest listed package above the file, and the file's path inside it.
        for depth in range(len(path.parts) - 1, 0, -1):
            package = ".".join(path.parts[:depth])
            if package in package_data:
                inside = "/".join(path.parts[depth:])
                if any(fnmatch.fnmatch(inside, glob) for glob in package_data[package]):
                    break
        else:
            missing.append(str(path))
    assert missing == []
