"""A local Redis Cluster on loopback (masters, optionally replicas), for tests and drills.

Each node is a `RedisServer` started with cluster options, its data (AOF and
`nodes.conf`) in its own folder. The masters are joined by
`redis-cli --cluster create`; a replica is added to a named master with
`redis-cli --cluster add-node --cluster-slave`. Nodes run with
`cluster-require-full-coverage no`, so a master that is down takes only its
own slots down.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from gelombang.processes import ServiceError, free_port
from gelombang.services import HOST, AppendFsync, ClusterNodeOptions, RedisServer

__all__ = ["LocalRedisCluster", "start_redis_cluster"]

CLUSTER_SLOTS = 16384


def _redis_cli(*args: str, timeout: float = 60.0) -> str:
    result = subprocess.run(
        [shutil.which("redis-cli") or "redis-cli", *args],
        stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout, check=False,
    )
    output = result.stdout.decode(errors="replace")
    if result.returncode != 0 or output.startswith("ERR") or "[ERR]" in output:
        raise ServiceError(f"redis-cli {args[0]} failed: {output[-500:]} "
                           f"{result.stderr.decode(errors='replace')[-500:]}")
    return output


def node_query(port: int, *command: str) -> str:
    """One command to one node (redis-cli), its reply as text."""
    return _redis_cli("-h", HOST, "-p", str(port), *command)


def _cluster_info(port: int) -> dict[str, str]:
    try:
        text = node_query(port, "CLUSTER", "INFO")
    except ServiceError:
        return {}
    return dict(line.split(":", 1) for line in text.split() if ":" in line)


@dataclass
class LocalRedisCluster:
    """The nodes of one local cluster; masters first, in slot order."""

    masters: list[RedisServer]
    replicas: dict[int, list[RedisServer]] = field(default_factory=dict)  # master port ->

    @property
    def nodes(self) -> list[RedisServer]:
        """Every node, masters first."""
        return [*self.masters, *(r for group in self.replicas.values() for r in group)]

    @property
    def url(self) -> str:
        """A seed node's URL; a cluster client discovers the others from it."""
        return self.masters[0].url

    @property
    def seeds(self) -> list[str]:
        """Every master as host:port, for clients that must start while one is down."""
        return [f"{HOST}:{server.port}" for server in self.masters]

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Until every live node says the cluster is ok with all slots served."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            infos = [_cluster_info(node.port) for node in self.nodes if node.running]
            if infos and all(info.get("cluster_state") == "ok"
                             and info.get("cluster_slots_ok") == str(CLUSTER_SLOTS)
                             for info in infos):
                return
            time.sleep(0.1)
        raise ServiceError(f"redis cluster not ok after {timeout:.0f}s")

    def node_id(self, server: RedisServer) -> str:
        """The node's cluster id."""
        return node_query(server.port, "CLUSTER", "MYID").strip()

    def slots(self, server: RedisServer) -> list[range]:
        """The slot ranges a master serves, as it says itself."""
        for line in node_query(server.port, "CLUSTER", "NODES").splitlines():
            fields = line.split()
            if "myself" in fields[2]:
                ranges = [part.split("-") for part in fields[8:] if not part.startswith("[")]
                return [range(int(r[0]), int(r[-1]) + 1) for r in ranges]
        raise ServiceError(f"node on port {server.port} does not list itself")

    def add_replica(self, master: RedisServer, replica: RedisServer,
                    timeout: float = 30.0) -> None:
        """Join a started, empty node as a replica of master; wait until it has synced."""
        _redis_cli("--cluster", "add-node", f"{HOST}:{replica.port}", f"{HOST}:{master.port}",
                   "--cluster-slave", "--cluster-master-id", self.node_id(master))
        self.replicas.setdefault(master.port, []).append(replica)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            info = node_query(replica.port, "INFO", "replication")
            known = all(self.node_id(replica) in node_query(node.port, "CLUSTER", "NODES")
                        for node in self.masters)
            if "master_link_status:up" in info and known:
                return
            time.sleep(0.1)
        raise ServiceError(f"replica on port {replica.port} did not sync in {timeout:.0f}s")

    def stop(self) -> None:
        """Stop every node (SIGTERM: each fsyncs its AOF)."""
        for node in self.nodes:
            node.stop()


def _start_node(data_dir: Path, appendfsync: AppendFsync, node_timeout_ms: int,
                log_dir: Path) -> RedisServer:
    for attempt in range(3):
        port, bus_port = free_port(), free_port()
        server = RedisServer(
            data_dir / str(port), port, appendfsync, log_file=log_dir / f"redis-{port}.log",
            cluster=ClusterNodeOptions(bus_port, node_timeout_ms))
        try:
            return server.start()
        except ServiceError:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def start_redis_cluster(
    data_dir: Path,
    *,
    masters: int = 3,
    replicas_of: Sequence[int] = (),
    appendfsync: AppendFsync = "always",
    node_timeout_ms: int = 2000,
    log_dir: Path | None = None,
) -> LocalRedisCluster:
    """Start `masters` nodes sharing the slots, plus one replica for each master index
    in `replicas_of`; return once every node says the cluster is ok."""
    logs = log_dir or data_dir / "logs"
    cluster = LocalRedisCluster([])
    try:
        for _ in range(masters):
            cluster.masters.append(_start_node(data_dir, appendfsync, node_timeout_ms, logs))
        _redis_cli("--cluster", "create", *cluster.seeds, "--cluster-replicas", "0",
                   "--cluster-yes")
        cluster.wait_ok()
        for index in replicas_of:
            replica = _start_node(data_dir, appendfsync, node_timeout_ms, logs)
            cluster.add_replica(cluster.masters[index], replica)
        cluster.wait_ok()
    except BaseException:
        cluster.stop()
        raise
    return cluster
