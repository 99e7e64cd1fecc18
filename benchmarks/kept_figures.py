"""Each suite's per-registration figures for `gelombang plan`, taken from what it measured.

A suite's `results.json` keeps everything in its own shape; these functions
pick out the few figures a capacity plan needs (named in
`gelombang.capacity_figures.SPECS`), which the suite then keeps in a
`figures.json` beside its results. A `--tiny` run measures nothing, so it
keeps none (`BenchRun.finish`).
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import Any

MICROSECONDS = 1e6


def door(medians: Mapping[str, Mapping[str, float]], connections: Sequence[int],
         contender: str) -> dict[str, float]:
    """The door's CPU per admitted registration at the fewest connections measured.

    The fewest connections, because there the door is CPU-bound with the
    smallest admission groups: the dearest figure per registration of the run.
    """
    figures = medians.get(f"{contender} @ {min(connections)}") if connections else None
    if not figures or not figures.get("accepted_per_second"):
        return {}
    return {"door_cpu_us":
            figures["server_cpu"] / figures["accepted_per_second"] * MICROSECONDS}


def scale(by_processes: Mapping[int, Mapping[str, float]]) -> dict[str, float]:
    """Redis's CPU per admitted registration with the fewest door processes."""
    if not by_processes:
        return {}
    fewest = by_processes[min(by_processes)]
    if "redis_us_per_admitted" not in fewest:
        return {}
    return {"admission_redis_cpu_us": fewest["redis_us_per_admitted"]}


def drain(rounds: Sequence[Mapping[str, Any]], partitions: int) -> dict[str, float]:
    """The drain phase's CPU per registration by process group, and its rate per partition.

    Medians over the rounds; the rate per partition because one process
    stores a partition's batches one after another (docs/drain.md).
    """
    phases = [phase for result in rounds for phase in result["phases"]
              if phase.get("kind") == "drain" and phase["rows"]]
    if not phases:
        return {}

    def per_row(group: str) -> float:
        return float(statistics.median(
            p["cpu_seconds"].get(group, 0.0) / p["rows"] * MICROSECONDS for p in phases))

    return {"drain_worker_cpu_us": per_row("workers"),
            "drain_postgres_cpu_us": per_row("postgres"),
            "drain_redis_cpu_us": per_row("redis"),
            "drain_partition_rows_per_s": statistics.median(
                p["rows"] / p["seconds"] for p in phases) / partitions}


def memory(results: Mapping[str, Any]) -> dict[str, float]:
    """Redis bytes per registration queued and left after the drain; PostgreSQL per row; RSS."""
    door, redis, postgres = results["door"], results["redis"], results["postgres"]
    return {"redis_bytes_queued": door["redis_per_registration"],
            "redis_bytes_after_drain": redis["after_drain_per_registration"],
            "postgres_bytes_per_row": postgres["total_per_row"]
            + results["other_tables_per_registration"],
            "door_rss_mib": door["peak_rss"] / 2**20}


def verification_cpu(results: Mapping[str, Any]) -> dict[str, float]:
    """Each verifier's CPU per check; PostgreSQL and Redis only when both ran.

    With one verifier let go, PostgreSQL's and Redis's figures are that
    role's share alone; the plan's figures are per registration verified
    both ways, so only a run of both keeps them.
    """
    per = results["cpu_us_per_registration"]
    roles = set(results["roles"])
    found = {f"{role}_worker_cpu_us": per[role] for role in ("email", "nik") if role in roles}
    if roles == {"email", "nik"}:
        found |= {"verification_postgres_cpu_us": per["postgres"],
                  "verification_redis_cpu_us": per["redis"]}
    return found
