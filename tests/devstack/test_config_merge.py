"""How config/settings.py layers default.toml, the GELOMBANG_CONFIG file, env and init kwargs."""

from __future__ import annotations

from pathlib import Path

import pytest

from config.settings import CONFIG_ENV, Settings


def test_a_partial_table_in_the_config_file_keeps_the_other_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    extra = tmp_path / "extra.toml"
    extra.write_text('[redis]\nurl = "redis://127.0.0.1:1/0"\n')
    monkeypatch.setenv(CONFIG_ENV, str(extra))

    settings = Settings.load()

    assert settings.redis.url == "redis://127.0.0.1:1/0"
    assert settings.redis.timeout_seconds == 0.8


def test_init_overrides_merge_key_by_key_into_the_file_tables() -> None:
    settings = Settings.load(redis={"url": "redis://127.0.0.1:1/0"}, admin={"port": 0})

    assert settings.redis.url == "redis://127.0.0.1:1/0"
    assert settings.redis.timeout_seconds == 0.8
    assert settings.admin.port == 0
    assert settings.admin.host == "127.0.0.1"


def test_one_environment_variable_overrides_one_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GELOMBANG_REDIS__URL", "redis://127.0.0.1:2/0")

    settings = Settings.load()

    assert settings.redis.url == "redis://127.0.0.1:2/0"
    assert settings.redis.timeout_seconds == 0.8


@pytest.mark.parametrize(("host", "url"), [
    ("0.0.0.0", "http://127.0.0.1:8181"), ("::", "http://127.0.0.1:8181"),
    ("10.0.0.5", "http://10.0.0.5:8181"),
])
def test_the_admin_port_is_reached_on_loopback_when_it_listens_everywhere(
        host: str, url: str) -> None:
    assert Settings.load(admin={"host": host, "port": 8181}).admin.local_url == url
