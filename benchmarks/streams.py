"""The drain benchmark's Redis side: the streams filled as the door fills them, and gauges."""

from __future__ import annotations

import time
from typing import Any

import redis

from benchmarks import workload
from queueing.envelope import STREAM_FIELD
from queueing.keys import STORE_GROUP, partitions
from workers.drain.handoff import KINDS


def used_memory(client: redis.Redis) -> int:
    """Redis's used_memory, in bytes."""
    return int(client.info("memory")["used_memory"])


def enqueue(client: redis.Redis, payloads: list[bytes], count: int) -> float:
    """XADD every envelope to its partition's stream as the door does; the seconds it took."""
    streams = [partition.stream for partition in partitions(count)]
    started = time.perf_counter()
    entries = list(workload.by_partition(payloads, count))
    for start in range(0, len(entries), 2000):
        with client.pipeline(transaction=False) as pipe:
            for partition, payload in entries[start:start + 2000]:
                pipe.xadd(streams[partition], {STREAM_FIELD: payload})
            pipe.execute()
    return time.perf_counter() - started


def backlog(client: redis.Redis, count: int) -> tuple[int, int]:
    """Entries left in the intake streams, and entries pending with the store group."""
    length = pending = 0
    for partition in partitions(count):
        length += client.xlen(partition.stream)
        try:
            pending += int(client.xpending(partition.stream, STORE_GROUP)["pending"])
        except redis.ResponseError:
            pass  # no group yet: the worker has not started
    return length, pending


def command_stats(client: redis.Redis, total: int) -> list[dict[str, Any]]:
    """Redis commands by time spent executing them (AOF writes and fsyncs not included)."""
    found: list[dict[str, Any]] = []
    for name, stats in client.info("commandstats").items():
        found.append({"command": name.removeprefix("cmdstat_"), "calls": int(stats["calls"]),
                      "usec": int(stats["usec"]),
                      "usec_per_registration": int(stats["usec"]) / total})
    return sorted(found, key=lambda stats: -stats["usec"])[:10]


def aof_state(client: redis.Redis) -> tuple[int, int]:
    """The append-only file's current size, and how often it was rewritten."""
    info = client.info("persistence")
    return int(info.get("aof_current_size", 0)), int(info.get("aof_rewrites", 0))


def rewrite_aof(client: redis.Redis, timeout: float = 300.0) -> None:
    """Rewrite the append-only file now and wait for it: a phase then starts from a
    compact file, and no rewrite its own writes would not have caused lands in it."""
    deadline = time.monotonic() + timeout

    def rewriting() -> bool:
        info = client.info("persistence")
        return bool(int(info["aof_rewrite_in_progress"]) or int(info["aof_rewrite_scheduled"]))

    def wait() -> None:
        while rewriting():
            if time.monotonic() > deadline:
                raise RuntimeError(f"the AOF rewrite took over {timeout} s")
            time.sleep(0.1)

    wait()  # one Redis started by itself (the file had grown) goes first
    client.bgrewriteaof()
    wait()


def jobs_memory(client: redis.Redis, count: int) -> int:
    """Bytes the verification job streams take (MEMORY USAGE over every entry)."""
    return sum(int(client.memory_usage(partition.verification(kind), samples=0) or 0)
               for partition in partitions(count) for kind in KINDS)


def markers_memory(client: redis.Redis) -> int:
    """Bytes the drain's hand-off markers take (MEMORY USAGE of each)."""
    return sum(int(client.memory_usage(key, samples=0) or 0)
               for key in client.scan_iter(match="gelombang:*:handoff:*", count=1000))


def jobs(client: redis.Redis, count: int) -> dict[str, int]:
    """Verification jobs handed off, by kind (counted only)."""
    found = dict.fromkeys(KINDS, 0)
    for partition in partitions(count):
        for kind in KINDS:
            found[kind] += client.xlen(partition.verification(kind))
    return found
