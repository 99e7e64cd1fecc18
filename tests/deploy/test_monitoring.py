"""deploy/monitoring/: every metric the rules and dashboard use is one the door or a worker
exports."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from config.settings import WORKER_ROLES, WorkerRole
from gelombang.processes import free_port
from queueing import breaker_reports
from tests.intake.door_helpers import DoorUnderTest
from workers.metrics import WorkerMetrics, serve_metrics

MONITORING = Path(__file__).resolve().parents[2] / "deploy" / "monitoring"
# Series Prometheus makes itself, not the door.
PROMETHEUS_SERIES = {"up"}
# The metric names all start so; PromQL functions and keywords never do.
_METRIC = re.compile(r"\b(gelombang_[a-z0-9_]+|up)\b(?!\s*\()")
_OUTCOMES = re.compile(r'outcome=~?"([a-z_|]+)"')
_JOB = re.compile(r'job="([a-z-]+)"')
_ROLES = re.compile(r'role=~?"([a-z_|]+)"')
# The stall alerts this issue asked for, each with its runbook section.
STALL_ALERTS = ("GelombangDrainStalled", "GelombangVerificationNoProgress")


def _rule_expressions() -> Iterator[tuple[str, str]]:
    rules = yaml.safe_load((MONITORING / "alerts.yml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            yield rule["alert"], rule["expr"]


def _dashboard_expressions() -> Iterator[tuple[str, str]]:
    dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            yield panel["title"], target["expr"]


def _expressions() -> list[tuple[str, str]]:
    return [*_rule_expressions(), *_dashboard_expressions()]


@pytest.fixture
async def scraped(door_under_test: DoorUnderTest) -> dict[str, set[str]]:
    """Sample names of a real scrape, with the outcome label values seen."""
    # A request first: a labelled histogram has no samples until it observes one.
    assert (await door_under_test.public.get("/healthz")).status == 200
    # And a NIK worker's breaker report: the gauge has a sample per reporting worker.
    await breaker_reports.report(door_under_test.door.redis, "nik", "worker-1", "closed")
    response = await door_under_test.admin.get("/metrics")
    assert response.status == 200
    texts = [await response.text(), *[await _worker_scrape(role) for role in WORKER_ROLES]]
    names: set[str] = set()
    outcomes: set[str] = set()
    roles: set[str] = set()
    for text in texts:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                names.add(sample.name)
                if "outcome" in sample.labels:
                    outcomes.add(sample.labels["outcome"])
                if "role" in sample.labels:
                    roles.add(sample.labels["role"])
    return {"names": names, "outcomes": outcomes, "roles": roles}


async def _worker_scrape(role: WorkerRole) -> str:
    """What a fresh worker process of the role answers on its own /metrics."""
    metrics = WorkerMetrics(role)
    port = free_port()
    async with await serve_metrics(metrics, "127.0.0.1", range(port, port + 1)) as server:
        assert server.url is not None
        async with aiohttp.ClientSession() as session, session.get(server.url) as response:
            assert response.status == 200
            return await response.text()


def test_rules_file_is_alerting_rules_with_the_asked_for_alerts() -> None:
    rules = yaml.safe_load((MONITORING / "alerts.yml").read_text())
    alerts = {rule["alert"]: rule for group in rules["groups"] for rule in group["rules"]}
    assert {"GelombangDoorDown", "GelombangAdmissionShedding", "GelombangBacklogGrowing",
            "GelombangVerificationStalled", "GelombangVerificationBacklogOld",
            "GelombangWorkerDeadLettersIncreasing", "GelombangNikWorkerBreakerOpen"} <= set(alerts)
    for name, rule in alerts.items():
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, name
        assert re.fullmatch(r"\d+[smh]", rule["for"]), name
        assert rule["annotations"]["summary"], name


def test_scrape_config_loads_the_rules_and_names_the_job() -> None:
    config = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    assert config["rule_files"] == ["alerts.yml"]
    jobs = {job["job_name"] for job in config["scrape_configs"]}
    assert {"gelombang-door", "gelombang-workers"} <= jobs
    for where, expr in _expressions():
        assert set(_JOB.findall(expr)) <= jobs, where


async def test_every_expression_uses_only_exported_metrics(scraped: dict[str, set[str]]) -> None:
    exported = scraped["names"] | PROMETHEUS_SERIES
    checked = 0
    for where, expr in _expressions():
        used = set(_METRIC.findall(expr))
        assert used, f"{where}: no metric found in {expr!r}"
        assert used <= exported, f"{where}: not exported: {sorted(used - exported)}"
        checked += 1
    assert checked >= 10


async def test_outcome_labels_are_ones_the_door_records(scraped: dict[str, set[str]]) -> None:
    for where, expr in _expressions():
        for alternatives in _OUTCOMES.findall(expr):
            assert set(alternatives.split("|")) <= scraped["outcomes"], where


def test_the_dashboard_is_grafana_json() -> None:
    dashboard: dict[str, Any] = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    assert dashboard["uid"] and dashboard["title"]
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}"
        assert {"x", "y", "w", "h"} <= set(panel["gridPos"])


async def test_role_labels_are_ones_the_workers_export(scraped: dict[str, set[str]]) -> None:
    for where, expr in _expressions():
        for alternatives in _ROLES.findall(expr):
            assert set(alternatives.split("|")) <= scraped["roles"], where


def _alerts() -> dict[str, dict[str, Any]]:
    rules = yaml.safe_load((MONITORING / "alerts.yml").read_text())
    return {rule["alert"]: rule for group in rules["groups"] for rule in group["rules"]}


def test_stalled_drain_and_verification_page_with_a_runbook_section() -> None:
    alerts = _alerts()
    for name in STALL_ALERTS:
        rule = alerts[name]
        assert rule["labels"]["severity"] == "page", name
        assert rule["annotations"]["runbook_url"] == f"docs/runbook.md#{name.lower()}"
    drain = alerts["GelombangDrainStalled"]["expr"]
    # The door's backlog (from Redis), so the alert holds with no store worker scraped;
    # progress is stored rows only.
    assert "gelombang_backlog_entries" in drain and "unless" in drain
    assert 'outcome=~"accepted|duplicate|ineligible"' in drain
    verification = alerts["GelombangVerificationNoProgress"]["expr"]
    # Held past the workers' last scrape, so a role whose every process died still fires.
    assert "last_over_time(gelombang_worker_backlog" in verification
    # Sent emails and answered NIKs are progress; retries, skips and failures are not.
    assert 'outcome="sent"' in verification
    assert 'outcome=~"verified|mismatch|not_found"' in verification
    assert "retried" not in verification and "failed" not in verification


def test_the_dashboard_shows_the_funnel_in_order_the_backlog_age_and_decisions() -> None:
    dashboard: dict[str, Any] = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    by_title = {panel["title"]: panel for panel in dashboard["panels"]}
    funnel = next(p for t, p in by_title.items() if t.startswith("Funnel: stored"))
    order = [target["legendFormat"] for target in funnel["targets"]]
    assert order == ["stored", "email sent", "email verified", "NIK verified"]
    assert "gelombang_email_verified_total" in funnel["targets"][2]["expr"]
    rates = by_title["Funnel rates per stage (per second)"]
    assert [t["legendFormat"] for t in rates["targets"]] == order
    assert all("rate(" in t["expr"] for t in rates["targets"])
    age = next(p for t, p in by_title.items() if t.startswith("Verification backlog age"))
    assert "gelombang_worker_oldest_pending_seconds" in age["targets"][0]["expr"]
    decisions = next(p for t, p in by_title.items() if t.startswith("Admission decisions over"))
    assert "by (outcome)" in decisions["targets"][0]["expr"]
