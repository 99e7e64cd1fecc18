"""`python -m benchmarks memory --tiny`: Redis, door and PostgreSQL figures reach the results."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.benchmarks import tiny


def run_suite(folder: Path) -> dict[str, Any]:
    return tiny.results_of("memory", folder, timeout=100)


@pytest.mark.slow
def test_the_memory_suite_sizes_redis_the_door_and_postgresql(tmp_path: Path) -> None:
    folder = tmp_path / "memory"
    results = run_suite(folder)
    summary = results["summary"]
    assert (results["suite"], results["size"]) == ("memory", "tiny")
    assert summary["failures"] == []
    # 2,000 XADDed and 300 through the door, every one admitted and stored once.
    assert summary["door"]["statuses"] == {"202": 300}
    assert summary["stored"]["rows"] == summary["stored"]["funnel_stored"] == 2_300
    redis = summary["redis"]
    # A queued entry costs more than its envelope, but not several times more.
    assert summary["envelope_bytes"] < redis["queued_per_registration"] < 3 * 229
    assert summary["envelope_bytes"] < redis["stream_usage_per_registration"] < 3 * 229
    door = summary["door"]
    # Through the door an Idempotency-Key record comes on top of the stream entry.
    assert door["idempotency_per_registration"] > 0
    assert door["redis_per_registration"] == pytest.approx(
        door["stream_per_registration"] + door["idempotency_per_registration"])
    assert 10 * 2**20 < door["idle_rss"] <= door["peak_rss"]
    assert door["loaded_rss"] <= door["peak_rss"]
    postgres = summary["postgres"]
    # A row fills ~280 bytes of heap pages (docs/storage.md); the file can be larger by the
    # empty pages concurrent inserters added; the total adds three indexes.
    assert 250 < postgres["heap_occupied_per_row"] < 400
    assert postgres["heap_occupied_per_row"] <= postgres["heap_per_row"]
    assert postgres["heap_per_row"] < postgres["total_per_row"] < 1_200
    entry, keyed = results["targets"]
    assert entry["value"] == door["stream_per_registration"]
    assert keyed["value"] == door["redis_per_registration"] > entry["value"]
    for target in (entry, keyed):
        assert (target["goal"], target["better"]) == (400.0, "lower")
        assert target["met"] is (target["value"] <= 400.0)
    assert results["plots"] == ["memory.png"]
    assert (folder / "memory.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = (folder / "results.md").read_text()
    assert "| measure | value | unit |" in text
    assert "Redis bytes per queued registration" in text
    assert "![memory](memory.png)" in text
