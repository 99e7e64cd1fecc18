"""Real Redis and PostgreSQL through gelombang.services, and `gelombang dev` end to end."""

from __future__ import annotations

import base64
import os
import pwd
import signal
import socket
import stat
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from config.settings import CONFIG_ENV, Settings
from gelombang.devapps import AppProcess
from gelombang.devstate import DEV_SEALING_KEY_ID, DevState, ensure_config, render_toml
from gelombang.processes import ServiceError, free_port, process_alive, read_pid_file
from gelombang.services import PostgresServer, start_postgres, start_redis


def _redis(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=0.5)


def test_redis_keeps_acknowledged_writes_across_a_kill(tmp_path: Path) -> None:
    server = start_redis(tmp_path / "redis", appendfsync="always")
    try:
        client = _redis(server.url)
        client.set("acknowledged", "1")
        client.close()

        server.kill()
        assert not server.running
        server.start()

        client = _redis(server.url)
        assert client.get("acknowledged") == b"1"
        client.close()
    finally:
        server.stop()
    assert not process_alive(server.pid)


def test_a_paused_redis_answers_nothing_until_resumed(tmp_path: Path) -> None:
    server = start_redis(tmp_path / "redis")
    client = _redis(server.url)
    try:
        server.pause()
        with pytest.raises(redis.TimeoutError):
            client.ping()
        server.resume()
        client.close()
        client = _redis(server.url)
        assert client.ping()
    finally:
        client.close()
        server.stop()


def test_a_failed_start_names_the_log(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ServiceError, match=r"redis\.log"):
            start_redis(tmp_path / "redis", port, log_file=tmp_path / "redis.log", timeout=5)


def _psql(server: PostgresServer, sql: str) -> str:
    result = subprocess.run(
        [
            str(server.binaries.psql),
            "-X",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            server.dsn,
            "-c",
            sql,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.strip()


def test_postgres_keeps_committed_rows_across_a_kill(tmp_path: Path) -> None:
    server = start_postgres(tmp_path / "postgres", fsync=False)
    try:
        assert _psql(server, "SELECT current_user || '@' || current_database()") == (
            "gelombang@gelombang"
        )
        _psql(server, "CREATE TABLE t (n int); INSERT INTO t VALUES (7)")

        server.kill()
        assert not server.running
        server.start()
        assert _psql(server, "SELECT n FROM t") == "7"

        server.stop(mode="fast")
        assert not process_alive(server.pid)
        server.start()
        assert _psql(server, "SELECT count(*) FROM t") == "1"
    finally:
        server.stop()
        server.remove_data()
    assert not (tmp_path / "postgres").exists()
    if os.geteuid() == 0:
        # Root runs the cluster as the postgres user; the folder is its own.
        assert not server.cluster_dir.exists()


def test_the_generated_config_loads_with_valid_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = DevState(tmp_path / ".dev")
    state.create()
    config = ensure_config(state, "redis://127.0.0.1:1/0", "postgresql://gelombang@127.0.0.1:2/g")
    for private in (config, state.token_file):
        assert stat.S_IMODE(private.stat().st_mode) == 0o600

    monkeypatch.setenv(CONFIG_ENV, str(config))
    settings = Settings.load()
    settings.keys.require()
    assert settings.keys.active_sealing_key_id == DEV_SEALING_KEY_ID
    assert len(settings.keys.sealing_key_bytes()[DEV_SEALING_KEY_ID]) == 32
    assert len(settings.keys.hash_key_bytes()) == 32
    assert [len(key) for key in settings.keys.token_key_bytes().values()] == [32]
    assert settings.keys.active_token_key_id in settings.keys.token_keys
    assert settings.admin.token == state.token_file.read_text().strip()
    assert settings.redis.url == "redis://127.0.0.1:1/0"
    assert settings.redis.timeout_seconds == 0.8
    assert settings.public.host == settings.admin.host == "127.0.0.1"

    # Secrets are made once; addresses follow the ports of the latest start.
    ensure_config(state, "redis://127.0.0.1:3/0", "postgresql://gelombang@127.0.0.1:2/g")
    again = Settings.load()
    assert again.keys == settings.keys
    assert again.admin.token == settings.admin.token
    assert again.redis.url == "redis://127.0.0.1:3/0"


def test_an_older_dev_config_is_brought_up_to_date(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Before token key ids: one token_key; an admin token the token rules now refuse.
    state = DevState(tmp_path / ".dev")
    state.create()
    old_token_key = base64.b64encode(os.urandom(32)).decode()
    sealing = base64.b64encode(os.urandom(32)).decode()
    hashing = base64.b64encode(os.urandom(32)).decode()
    state.config_file.write_text(render_toml({"keys": {
        "active_sealing_key_id": DEV_SEALING_KEY_ID, "sealing_keys": {DEV_SEALING_KEY_ID: sealing},
        "hash_key": hashing, "token_key": old_token_key}}))
    state.token_file.write_text("too-short\n")
    monkeypatch.setenv(CONFIG_ENV, str(ensure_config(state, "redis://127.0.0.1:1/0",
                                                     "postgresql://gelombang@127.0.0.1:2/g")))
    settings = Settings.load()
    # The same keys, so data sealed and links sent before stay readable and valid.
    assert settings.keys.sealing_keys == {DEV_SEALING_KEY_ID: sealing}
    assert settings.keys.hash_key == hashing
    assert settings.keys.token_keys == {settings.keys.active_token_key_id: old_token_key}
    # Keys a later version needs are generated, each its own.
    settings.keys.require_door()
    assert len(settings.keys.address_key_bytes()[settings.keys.active_address_key_id]) == 32
    assert len(settings.admin.token) >= 32
    assert settings.admin.token == state.token_file.read_text().strip()


def test_overrides_set_single_keys_and_keep_the_rest_of_each_section(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = DevState(tmp_path / ".dev")
    state.create()
    config = ensure_config(state, "redis://127.0.0.1:1/0", "postgresql://gelombang@127.0.0.1:2/g",
                           {"public": {"port": 18080}, "nik": {"base_url": "http://127.0.0.1:9"}})
    monkeypatch.setenv(CONFIG_ENV, str(config))
    settings = Settings.load()
    assert (settings.public.port, settings.public.host) == (18080, "127.0.0.1")
    assert settings.nik.base_url == "http://127.0.0.1:9"
    assert settings.nik.username == "gelombang"  # the section's other keys: defaults


def test_the_rendered_toml_reads_back_as_written() -> None:
    sections = {"one": {"text": 'a "quoted" line', "number": 2.5, "flag": True, "count": 3,
                        "seeds": ["127.0.0.1:7001", "127.0.0.1:7002"], "empty": [],
                        "table": {"k": "v"}}}
    assert tomllib.loads(render_toml(sections)) == sections


def test_a_missing_app_module_is_skipped() -> None:
    assert not AppProcess("later", ("later",), "intake.no_such_command").available()
    assert AppProcess("cli", ("dev",), "gelombang.devstack").available()


def _dev(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gelombang", "dev", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    folder = tmp_path_factory.mktemp("devstack") / ".dev"
    yield folder
    _dev("clean", "--state-dir", folder)


def _pids(state_dir: Path) -> dict[str, int | None]:
    return {
        name: read_pid_file(state_dir / "run" / f"{name}.pid") for name in ("redis", "postgres")
    }


def test_dev_up_status_down(state_dir: Path) -> None:
    ports = ["--redis-port", str(free_port()), "--postgres-port", str(free_port())]
    up = _dev("up", "--state-dir", state_dir, *ports, "--no-apps")
    assert up.returncode == 0, up.stdout + up.stderr
    pids = _pids(state_dir)
    assert all(pid is not None and process_alive(pid) for pid in pids.values()), pids
    if os.geteuid() == 0:
        # PostgreSQL refuses root: the cluster is the postgres user's, wherever it lives.
        cluster = (state_dir / "postgres").resolve()
        assert cluster.stat().st_uid == pwd.getpwnam("postgres").pw_uid

    status = _dev("status", "--state-dir", state_dir)
    lines = {line.split()[0]: line for line in status.stdout.splitlines()}
    assert f"running  pid {pids['redis']}" in lines["redis"]
    assert f"running  pid {pids['postgres']}" in lines["postgres"]

    again = _dev("up", "--state-dir", state_dir, *ports, "--no-apps")
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("already running") == 2
    assert _pids(state_dir) == pids

    down = _dev("down", "--state-dir", state_dir)
    assert down.returncode == 0, down.stderr
    assert not any(process_alive(pid) for pid in pids.values() if pid)
    assert not list((state_dir / "run").glob("*.pid"))
    assert "stopped" in _dev("status", "--state-dir", state_dir).stdout
    assert _dev("down", "--state-dir", state_dir).returncode == 0


def test_dev_run_stops_everything_on_sigint(state_dir: Path) -> None:
    ports = ["--redis-port", str(free_port()), "--postgres-port", str(free_port())]
    command = [sys.executable, "-m", "gelombang", "dev", "run", "--state-dir", str(state_dir)]
    command += [*ports, "--no-apps"]
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as run:
        assert run.stdout is not None
        seen = []
        for line in run.stdout:
            seen.append(line)
            if "all started" in line:
                break
        pids = _pids(state_dir)
        assert all(pid is not None and process_alive(pid) for pid in pids.values()), seen
        run.send_signal(signal.SIGINT)
        rest, _ = run.communicate(timeout=60)
    assert run.returncode == 0, "".join(seen) + rest
    assert rest.index("stopping postgres") < rest.index("stopping redis")
    assert not any(process_alive(pid) for pid in pids.values() if pid)
