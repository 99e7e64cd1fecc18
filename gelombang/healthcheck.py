"""`gelombang healthcheck [ROLE...]`: exit 0 when this container's role is healthy.

One image runs every role, so its `HEALTHCHECK` cannot name one: without
arguments the role is read from the command line of PID 1 (the container's
main process, `gelombang ROLE ...`). Docker and Kubernetes run the check
inside the container with the container's environment, so the settings it
loads are the ones the role runs with.

What each role's check means:

- `serve`: `GET /healthz` on the public port answers 200 (the process serves).
- `worker store`: a drain heartbeat written from this host (consumer names
  start with the hostname, which is the container's) is fresh.
- `worker email`, `worker nik`: these write no heartbeat; Redis, the queue
  they consume, answers PING.
- `mail-sink`: the SMTP port greets with 220; `nik-sim`: `GET /admin/stats`
  answers 200.
- `migrate` and any other one-shot command: healthy while it runs.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from config.settings import ConfigError, Settings

PID1_CMDLINE = Path("/proc/1/cmdline")
HEALTHY, UNHEALTHY = 0, 1
# A heartbeat older than this many heartbeat intervals means the drain is stuck
# or cut off from Redis (the same rule as `gelombang worker status`).
STALE_HEARTBEATS = 3


class Unhealthy(Exception):
    """The role's check failed; the message says why."""


def register(subparsers: Any) -> None:
    """Add the `healthcheck` subcommand."""
    parser = subparsers.add_parser(
        "healthcheck", help="exit 0 when this container's role is healthy (for HEALTHCHECK)")
    parser.add_argument("role", nargs="*",
                        help="e.g. serve, worker store (default: read from PID 1's command line)")
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds for each probe")
    parser.set_defaults(handler=run)


def role_from_cmdline(argv: Sequence[str]) -> tuple[str, ...]:
    """The role words of a `gelombang ...` command line (`worker` takes two)."""
    for index, arg in enumerate(argv):
        # `/usr/local/bin/gelombang serve`, or `python -m gelombang serve`; an
        # init (tini, docker-init) in front of it is skipped the same way.
        if os.path.basename(arg) == "gelombang":
            words: list[str] = []
            for word in argv[index + 1:]:
                if word.startswith("-"):
                    break
                words.append(word)
                if words[0] != "worker" or len(words) == 2:
                    break
            return tuple(words)
    return ()


def pid1_role() -> tuple[str, ...]:
    """The role PID 1 runs, or () when PID 1 is not `gelombang`."""
    try:
        raw = PID1_CMDLINE.read_bytes()
    except OSError:
        return ()
    return role_from_cmdline([part.decode(errors="replace") for part in raw.split(b"\0") if part])


def check(role: Sequence[str], settings: Settings, timeout: float) -> str:
    """Run the role's check; return what was found healthy, raise Unhealthy otherwise."""
    match tuple(role):
        case ("serve",):
            return _http_ok(f"http://127.0.0.1:{settings.public.port}/healthz", timeout)
        case ("worker", "store"):
            return _fresh_heartbeat(settings, socket.gethostname(), timeout, "drain")
        case ("worker", "email" | "nik"):
            # The verifiers beat on the worker runtime too, each role in its own set.
            return _fresh_heartbeat(settings, socket.gethostname(), timeout, role[1])
        case ("mail-sink",):
            return _smtp_greets(settings.email.smtp_port, timeout)
        case ("nik-sim",):
            return _http_ok(f"http://127.0.0.1:{settings.nik_sim.port}/admin/stats", timeout)
        case ():
            raise Unhealthy("PID 1 is not a gelombang command; name the role")
        case _:
            return f"{' '.join(role)}: one-shot command, healthy while it runs"


def _http_ok(url: str, timeout: float) -> str:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            status = int(response.status)
    except urllib.error.HTTPError as exc:
        raise Unhealthy(f"{url}: HTTP {exc.code}") from None
    except (OSError, TimeoutError) as exc:
        raise Unhealthy(f"{url}: {type(exc).__name__}") from None
    if status != 200:
        raise Unhealthy(f"{url}: HTTP {status}")
    return f"{url}: 200"


def _redis(settings: Settings, timeout: float) -> Any:
    # Imported here: the door's check should not pay for the Redis client. A
    # synchronous client: this process makes one or two calls and exits.
    from redis import Redis
    from redis.cluster import ClusterNode, RedisCluster

    options: dict[str, Any] = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
    if not settings.redis.cluster:
        return Redis.from_url(settings.redis.url, **options)
    seeds = [address.strip().rpartition(":") for address in settings.redis.cluster_seeds]
    nodes = [ClusterNode(host, int(port))  # type: ignore[no-untyped-call]
             for host, _, port in seeds]
    return RedisCluster.from_url(settings.redis.url, startup_nodes=nodes,
                                 require_full_coverage=False, **options)


def _fresh_heartbeat(settings: Settings, hostname: str, timeout: float, role: str) -> str:
    from redis.exceptions import RedisClusterException, RedisError

    from queueing.keys import role_heartbeats

    client = None
    try:
        client = _redis(settings, timeout)
        beats: list[tuple[bytes, float]] = client.zrange(role_heartbeats(role), 0, -1,
                                                         withscores=True)
    except (RedisError, RedisClusterException, OSError) as exc:
        raise Unhealthy(f"Redis: {type(exc).__name__}") from None
    finally:
        if client is not None:
            client.close()
    prefix = f"{hostname}-".encode()
    mine = [score for name, score in beats if name.startswith(prefix)]
    if not mine:
        raise Unhealthy(f"no {role} heartbeat from {hostname}")
    age = time.time() - max(mine)
    if age > settings.drain.heartbeat_seconds * STALE_HEARTBEATS:
        raise Unhealthy(f"{role} heartbeat from {hostname} is {age:.0f} s old")
    return f"{role} heartbeat {age:.1f} s old"


def _smtp_greets(port: int, timeout: float) -> str:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            greeting = sock.recv(64)
    except OSError as exc:
        raise Unhealthy(f"SMTP port {port}: {type(exc).__name__}") from None
    if not greeting.startswith(b"220"):
        raise Unhealthy(f"SMTP port {port}: no 220 greeting")
    return f"SMTP port {port} greets"


def run(args: argparse.Namespace) -> int:
    """Exit 0 (healthy) or 1 (unhealthy), the codes Docker's HEALTHCHECK reads."""
    role = tuple(args.role) or pid1_role()
    try:
        found = check(role, Settings.load(), args.timeout)
    except (Unhealthy, ConfigError) as exc:
        print(f"unhealthy: {exc}", file=sys.stderr)
        return UNHEALTHY
    print(f"healthy: {found}")
    return HEALTHY
