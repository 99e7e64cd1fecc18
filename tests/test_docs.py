"""The README and docs/: links that lead somewhere, figures tied to results pages, one contract."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Final
from urllib.parse import unquote

import pytest

from tests.markdown import anchors

ROOT: Final = Path(__file__).resolve().parents[1]
# This file names what it looks for.
THIS_FILE: Final = Path(__file__).resolve()
PAGES: Final = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])
# Results pages are what `gelombang bench` wrote, finish time included; the prose elsewhere
# links them rather than naming a run by its hour.
PROSE: Final = [page for page in PAGES if "performance" not in page.relative_to(ROOT).parts]
# [text](target) and ![alt](target); a target has no spaces.
_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
_INLINE_CODE = re.compile(r"`[^`]*`")
# An hour and minute standing alone ("the 15:57 run"), not inside a port, a date-time or a ratio.
_CLOCK = re.compile(r"(?<![\w:./+-])(?:[01]?\d|2[0-3]):[0-5]\d(?![\w:])")


def _prose_lines(text: str) -> list[str]:
    """The lines outside fenced and indented code blocks, without inline code."""
    lines: list[str] = []
    fenced = False
    for line in text.splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
        elif not fenced and not line.startswith("    "):
            lines.append(_INLINE_CODE.sub("", line))
    return lines


def _page_id(page: Path) -> str:
    return str(page.relative_to(ROOT))


@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_every_relative_link_leads_to_a_file_and_heading(page: Path) -> None:
    broken: list[str] = []
    for line in _prose_lines(page.read_text(encoding="utf-8")):
        for target in _LINK.findall(line):
            if re.match(r"[a-z]+:", target):
                continue  # http(s), mailto: not this repository's to check
            path, _, fragment = unquote(target).partition("#")
            linked = (page.parent / path).resolve() if path else page
            if not linked.exists():
                broken.append(f"{target}: no such file")
            elif fragment and linked.suffix == ".md" and fragment not in anchors(
                    linked.read_text(encoding="utf-8")):
                broken.append(f"{target}: no such heading")
    assert broken == []


@pytest.mark.parametrize("page", PROSE, ids=_page_id)
def test_figures_name_their_results_page_not_a_clock_time(page: Path) -> None:
    clocks = [line.strip() for line in _prose_lines(page.read_text(encoding="utf-8"))
              if _CLOCK.search(line)]
    assert clocks == []


def test_the_clock_check_finds_a_run_named_by_its_hour() -> None:
    assert _prose_lines("measured in the full run of 13:41 UTC") != []
    assert _CLOCK.search("measured in the full run of 13:41 UTC")
    assert _CLOCK.search("the 15:57 run")
    for not_a_time in ("127.0.0.1:5440", "2024-06-10T06:13:20+00:00", "redis://h:6379/0"):
        assert not _CLOCK.search(not_a_time), not_a_time
    assert _prose_lines("    {\"at\": \"06:13\"}\nsee `[door 01:36]`") == ["see "]


def test_no_file_cites_an_api_md_other_than_docs_api_md() -> None:
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True,
                             check=True).stdout.decode().split("\0")
    citing = []
    for name in filter(None, tracked):
        path = ROOT / name
        if path.suffix in {".png", ".ico"} or not path.is_file() or path == THIS_FILE:
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        # The contract is docs/api.md; an upper-case API.md names a file that is not here.
        if "API.md" in text:
            citing.append(name)
    assert citing == []
    assert (ROOT / "docs" / "api.md").is_file()


def test_the_readme_opens_with_the_two_commands_and_the_code_map() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    first_screen = "\n".join(readme.splitlines()[:40])
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    for command in ("make run", "make test"):
        assert command in first_screen, command
        assert re.search(rf"^{command.split()[1]}:", makefile, re.MULTILINE), command
    assert "## Code map" in first_screen


def test_every_file_and_function_of_the_code_map_exists() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    code_map = readme.split("## Code map", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in code_map.splitlines() if line.startswith("| ")][1:]
    assert len(rows) >= 8
    for row in rows:
        where = row.strip("|").split("|")[-1]
        paths = re.findall(r"`([\w/]+\.\w+)`(?: \(`(\w+)`\))?", where)
        assert paths, row
        for path, function in paths:
            assert (ROOT / path).is_file(), path
            if function:
                text = (ROOT / path).read_text(encoding="utf-8")
                assert re.search(rf"^(async )?def {function}\(", text, re.MULTILINE), function
