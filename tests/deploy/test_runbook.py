"""Every alert links its section of docs/runbook.md, and the runbook names real panels."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import yaml

from tests.markdown import anchors, sections

ROOT: Final = Path(__file__).resolve().parents[2]
MONITORING: Final = ROOT / "deploy" / "monitoring"
RUNBOOK: Final = ROOT / "docs" / "runbook.md"
# A panel is named as `panel *<its title>*`; a title may wrap across lines.
_PANEL = re.compile(r"[Pp]anel\s+\*([^*]+)\*")


def _alerts() -> dict[str, dict[str, Any]]:
    rules = yaml.safe_load((MONITORING / "alerts.yml").read_text())
    return {rule["alert"]: rule for group in rules["groups"] for rule in group["rules"]}


def _alert_sections() -> dict[str, str]:
    alerts_part = sections(RUNBOOK.read_text(), 2)["Alerts"]
    return sections(alerts_part, 3)


def _panels_named(text: str) -> set[str]:
    return {" ".join(title.split()) for title in _PANEL.findall(text)}


def test_every_alert_has_a_runbook_url_that_leads_to_its_section() -> None:
    runbook_anchors = anchors(RUNBOOK.read_text())
    alerts = _alerts()
    assert len(alerts) >= 14
    for name, rule in alerts.items():
        url = urlsplit(rule["annotations"].get("runbook_url", ""))
        # Relative to the repository root, so any base URL can be put before it.
        assert (url.scheme, url.netloc) == ("", ""), name
        assert (ROOT / url.path).resolve() == RUNBOOK, name
        assert url.fragment in runbook_anchors, f"{name}: no section #{url.fragment}"
        assert url.fragment == name.lower(), f"{name}: links another alert's section"


def test_every_alert_section_is_an_alert_and_says_what_to_do() -> None:
    found = _alert_sections()
    assert set(found) == set(_alerts())
    for name, body in found.items():
        assert len(body.split()) >= 40, f"{name}: a section this short says too little"
        assert _panels_named(body), f"{name}: names no dashboard panel to look at"


def test_every_panel_the_runbook_names_is_on_the_dashboard() -> None:
    dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    titles = {panel["title"] for panel in dashboard["panels"]}
    named = _panels_named(RUNBOOK.read_text())
    assert len(named) >= 10
    assert named - titles == set()


def test_the_runbook_covers_before_during_and_after_a_wave() -> None:
    parts = sections(RUNBOOK.read_text(), 2)
    assert {"Before the wave", "During the wave", "After the wave", "Alerts"} <= set(parts)
    # The limits an operator turns, each with the command that turns it.
    commands = re.findall(r"`(gelombang admission set [^`]+)`", parts["During the wave"])
    for lever in ("--rate", "--burst", "--backlog-high-water", "--open"):
        assert any(lever in command.split() for command in commands), lever
