"""Suite-wide fixtures: real Redis and PostgreSQL, started once per test run on free ports.

Each run keeps its servers' files in .dev/test-<pid>/ and removes them at the end; folders
left by runs that died (and any server still running from them) are cleared at the next run.

Tests marked `both_redis` run twice: on one Redis server (`[single]`) and on a local
3-master Redis Cluster (`[cluster]`, started at the first such test); `test_settings`,
`redis_client` and `door_under_test` follow the parameter. Other tests use the one server.
"""

from __future__ import annotations

import base64
import os
import random
import secrets
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from config.settings import Settings
from database.schema import migrate
from gelombang.processes import (
    free_port,
    kill_group,
    port_is_free,
    process_alive,
    process_cmdline,
    read_pid_file,
    write_pid_file,
)
from gelombang.redis_cluster import LocalRedisCluster, start_redis_cluster
from gelombang.services import (
    PostgresServer,
    RedisServer,
    postgres_dsn,
    remove_postgres_data,
    start_postgres,
    start_redis,
)
from loadtest.registrants import RegistrantFactory
from queueing.redis_client import RedisClient, connect
from tests.intake.door_helpers import DoorUnderTest, running_door

# The session-wide scan of every log line for personal data (tests/pii_guard.py).
pytest_plugins = ["tests.pii_guard", "tests.image_build"]

REPO_ROOT = Path(__file__).resolve().parents[1]
RUN_DIR_PREFIX = "test-"
# A valid admin token (>= 32 random-looking characters: config/secrets.py); fixed, so
# test ids that quote it stay the same from run to run.
TEST_ADMIN_TOKEN = "19OxKKOm2AhbjwAOIHurLLGJPYo-2vm23E_t0djhthY"
TEST_TOKEN_KEY_ID = "t1"
TEST_ADDRESS_KEY_ID = "a1"
# What each server's command line contains, to recognise it behind a pid file
# (run/redis.pid, run/redis-cluster-<port>.pid, run/postgres.pid).
_MARKERS = {"redis": "redis-server", "postgres": "postgres"}
REDIS_KINDS = ("single", "cluster")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run tests marked both_redis on each Redis kind (session-scoped: one cluster)."""
    if "redis_kind" in metafunc.fixturenames and metafunc.definition.get_closest_marker(
            "both_redis"):
        metafunc.parametrize("redis_kind", REDIS_KINDS, indirect=True, scope="session")


def _remove_run_dir(folder: Path) -> None:
    for pid_file in (folder / "run").glob("*.pid"):
        marker = _MARKERS.get(pid_file.stem.split("-")[0])
        pid = read_pid_file(pid_file)
        if marker is not None and pid is not None and marker in " ".join(process_cmdline(pid)):
            kill_group(pid)
    remove_postgres_data(folder / "postgres")
    shutil.rmtree(folder, ignore_errors=True)


def _remove_stale_run_dirs(state_dir: Path) -> None:
    """Clear what runs killed before their teardown left behind (other live runs stay)."""
    for folder in state_dir.glob(f"{RUN_DIR_PREFIX}*"):
        owner = folder.name.removeprefix(RUN_DIR_PREFIX)
        if owner.isdigit() and not process_alive(int(owner)):
            _remove_run_dir(folder)


def _port_outside_ephemeral_range() -> int:
    """A free port that no `bind(0)` will be handed meanwhile, for a server started later."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return free_port()
    candidates = list(range(min(20_000, low // 2), low))
    for port in random.sample(candidates, k=min(200, len(candidates))):
        if port_is_free(port):
            return port
    return free_port()


def _random_key() -> str:
    return base64.b64encode(secrets.token_bytes(32)).decode()


@pytest.fixture(scope="session")
def run_dir() -> Iterator[Path]:
    """This run's folder for server data and logs, removed at the end."""
    state_dir = REPO_ROOT / ".dev"
    _remove_stale_run_dirs(state_dir)
    folder = state_dir / f"{RUN_DIR_PREFIX}{os.getpid()}"
    (folder / "run").mkdir(parents=True, exist_ok=True)
    yield folder
    _remove_run_dir(folder)


@pytest.fixture(scope="session")
def redis_server(run_dir: Path) -> Iterator[RedisServer]:
    """The run's Redis (AOF, appendfsync always). Do not stop or pause it: start your own."""
    server = start_redis(run_dir / "redis", 0, "always", log_file=run_dir / "logs" / "redis.log")
    write_pid_file(run_dir / "run" / "redis.pid", server.pid)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_cluster(run_dir: Path) -> Iterator[LocalRedisCluster]:
    """The run's 3-master Redis Cluster (no replicas), started at the first test that asks."""
    cluster = start_redis_cluster(run_dir / "redis-cluster", log_dir=run_dir / "logs")
    for node in cluster.nodes:
        write_pid_file(run_dir / "run" / f"redis-cluster-{node.port}.pid", node.pid)
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def redis_kind(request: pytest.FixtureRequest) -> str:
    """"single" or "cluster": which Redis test_settings and redis_client use."""
    return str(getattr(request, "param", "single"))


@pytest.fixture(scope="session")
def postgres_port() -> int:
    """The port the run's PostgreSQL listens on once some test asks for postgres_server."""
    return _port_outside_ephemeral_range()


@pytest.fixture(scope="session")
def postgres_server(run_dir: Path, postgres_port: int) -> Iterator[PostgresServer]:
    """The run's PostgreSQL, started at the first test that asks for it.

    fsync is off: it survives killed processes (tests kill processes), not an OS crash.
    """
    server = start_postgres(
        run_dir / "postgres", postgres_port, log_file=run_dir / "logs" / "postgres.log", fsync=False
    )
    write_pid_file(run_dir / "run" / "postgres.pid", server.pid)
    yield server
    server.stop()
    server.remove_data()


# Every table the workers write, emptied before each test that uses `pg`.
STORE_TABLES = (
    "registrations", "nik_blacklist", "verification_handoffs", "funnel_counts", "dead_letters",
    "audit_log", "nik_checks", "email_deliveries", "drain_fences",
)


@pytest.fixture(scope="session")
async def migrated_dsn(postgres_server: PostgresServer) -> str:
    """The run's PostgreSQL with the schema applied once (by `gelombang migrate`'s code)."""
    await migrate(postgres_server.dsn)
    return postgres_server.dsn


@pytest.fixture
def own_postgres(tmp_path: Path) -> Iterator[PostgresServer]:
    """A PostgreSQL of this test's own, to stop and start."""
    server = start_postgres(tmp_path / "pg", fsync=False, log_file=tmp_path / "pg.log")
    try:
        yield server
    finally:
        server.stop()
        server.remove_data()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis of this test's own, to pause (SIGSTOP), kill and start."""
    server = start_redis(tmp_path / "redis", log_file=tmp_path / "redis.log")
    try:
        yield server
    finally:
        if server.running:
            server.resume()  # a stopped process would not see the SIGTERM
        server.stop()


@pytest.fixture
async def pg(migrated_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection to the migrated database, its tables emptied before the test."""
    connection = await asyncpg.connect(migrated_dsn)
    try:
        await connection.execute(f"TRUNCATE {', '.join(STORE_TABLES)}")
        yield connection
    finally:
        await connection.close()


@pytest.fixture
async def redis_client(test_settings: Settings) -> AsyncIterator[RedisClient]:
    """A client of the run's Redis (or cluster), emptied (FLUSHALL) before the test."""
    client = connect(test_settings.redis)
    await client.flushall()
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture(scope="session")
def test_settings(redis_kind: str, postgres_port: int,
                  request: pytest.FixtureRequest) -> Settings:
    """Settings for the run's servers, random keys, ports 0 on loopback.

    Its postgres.dsn points at the run's PostgreSQL, which runs only once a test (or a
    fixture it uses) asks for postgres_server. Its Redis is the cluster for `[cluster]`.
    """
    redis: dict[str, object]
    if redis_kind == "cluster":
        cluster: LocalRedisCluster = request.getfixturevalue("redis_cluster")
        redis = {"url": cluster.url, "cluster": True, "cluster_seeds": cluster.seeds}
    else:
        server: RedisServer = request.getfixturevalue("redis_server")
        redis = {"url": server.url}
    # Init arguments win over files and environment and merge key by key into their tables.
    return Settings.load(
        public={"host": "127.0.0.1", "port": 0},
        admin={"host": "127.0.0.1", "port": 0, "token": TEST_ADMIN_TOKEN},
        redis=redis,
        postgres={"dsn": postgres_dsn(postgres_port)},
        keys={
            "active_sealing_key_id": "test1",
            "sealing_keys": {"test1": _random_key()},
            "hash_key": _random_key(),
            "active_token_key_id": TEST_TOKEN_KEY_ID,
            "token_keys": {TEST_TOKEN_KEY_ID: _random_key()},
            "active_address_key_id": TEST_ADDRESS_KEY_ID,
            "address_keys": {TEST_ADDRESS_KEY_ID: _random_key()},
        },
        # Worker processes a test starts listen for scrapes only where it asks.
        worker_metrics={"enabled": False},
        # Refusals as the contract had them before tickets: the waiting room's own
        # tests turn it on (tests/intake/test_waiting_room.py).
        waiting_room={"enabled": False},
    )


@pytest.fixture
async def door_under_test(test_settings: Settings, redis_client: object) -> AsyncIterator[
    DoorUnderTest
]:
    """An in-process door wired to the test Redis (flushed by redis_client)."""
    async with running_door(test_settings) as door:
        yield door


@pytest.fixture
def registrants() -> RegistrantFactory:
    """Valid made-up registrants."""
    return RegistrantFactory()
