"""The secret settings and production mode: what a configuration must hold to start.

Every refusal is a ConfigError naming the key (the process exits 3 with it), and
never quoting the secret.
"""

from __future__ import annotations

import base64
import os
import secrets
from collections.abc import Iterator
from typing import Any

import pytest

from config.settings import CONFIG_ENV, ConfigError, Settings


def key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No GELOMBANG_* variable or config file of this machine reaches these settings."""
    for name in list(os.environ):
        if name.startswith("GELOMBANG_") or name == CONFIG_ENV:
            monkeypatch.delenv(name)
    yield


def keys(**changes: Any) -> dict[str, Any]:
    return {"active_sealing_key_id": "s1", "sealing_keys": {"s1": key()},
            "hash_key": key(), "active_token_key_id": "t1", "token_keys": {"t1": key()},
            "active_address_key_id": "a1", "address_keys": {"a1": key()}, **changes}


def production(**sections: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A production configuration that starts; `sections` change single keys."""
    config: dict[str, dict[str, Any]] = {
        "security": {"production": True},
        "public": {"base_url": "https://daftar.example"},
        "nik": {"base_url": "https://nik-api.example"},
        "email": {"smtp_tls": "starttls"},
        "admin": {"token": secrets.token_urlsafe(32)},
        "keys": keys(),
    }
    for name, values in sections.items():
        config[name] = {**config[name], **values}
    return config


def refusal(**sections: Any) -> str:
    with pytest.raises(ConfigError) as refused:
        Settings.load(**sections)
    return str(refused.value)


# Item 7: the admin token.

PUBLISHED_PLACEHOLDER = "REPLACE-with-a-long-random-token"


@pytest.mark.parametrize("token", [
    PUBLISHED_PLACEHOLDER,                       # deploy/kubernetes/secret.yaml, as published
    "changeme-changeme-changeme-changeme",
    "your-token-goes-here-0123456789abcdef",
    "https://example.org/a-long-token-value-here",
    "short-but-random-Zx81kQ",                  # under 32 characters
    "ab" * 20,                                   # long, but two characters
    "0" * 40,
    "a token with spaces in the middle of it 123",
])
def test_the_admin_token_must_look_random(token: str) -> None:
    message = refusal(admin={"token": token})
    assert message.startswith("admin.token: ")
    assert token not in message  # the refusal never quotes the secret


@pytest.mark.parametrize("token", [
    secrets.token_urlsafe(32), secrets.token_urlsafe(24), secrets.token_hex(16),
    secrets.token_hex(32), base64.b64encode(os.urandom(32)).decode(),
])
def test_a_generated_admin_token_is_accepted(token: str) -> None:
    assert Settings.load(admin={"token": token}).admin.token == token


def test_an_unset_admin_token_is_allowed_outside_production_only() -> None:
    assert Settings.load().admin.token == ""  # the admin API then refuses every call
    assert "admin.token: required in production" in refusal(
        **production(admin={"token": ""}))


@pytest.mark.parametrize("raw", [bytes(32), b"\x01\x02" * 16, b"REPLACE-with-32-random-bytes-now"])
def test_a_key_that_is_not_random_bytes_is_refused(raw: bytes) -> None:
    message = refusal(keys=keys(hash_key=base64.b64encode(raw).decode()))
    assert "keys.hash_key" in message and "random" in message


# Item 12: production mode.

def test_a_production_configuration_with_tls_starts() -> None:
    settings = Settings.load(**production())
    assert settings.security.production
    assert Settings.load().security.production is False  # dev and tests: plain links allowed


@pytest.mark.parametrize(("section", "change", "named"), [
    ("public", {"base_url": "http://daftar.example"}, "public.base_url"),
    ("nik", {"base_url": "http://nik-api.example"}, "nik.base_url"),
    ("email", {"smtp_tls": "none"}, "email.smtp_tls"),
])
def test_production_refuses_a_link_without_tls(
        section: str, change: dict[str, Any], named: str) -> None:
    message = refusal(**production(**{section: change}))
    assert message.startswith(f"{named}: must be")


def test_production_refuses_the_public_dev_only_secrets() -> None:
    dev_key = base64.b64encode(b"DEV-ONLY-hash-key-NOT-A-SECRET-!!").decode()
    message = refusal(**production(admin={"token": "dev-only-admin-token-not-a-secret"},
                                   keys=keys(hash_key=dev_key)))
    assert "admin.token: a public dev-only value" in message
    assert "keys.hash_key: a public dev-only value" in message
    Settings.load(admin={"token": "dev-only-admin-token-not-a-secret"},
                  keys=keys(hash_key=dev_key))  # while developing, they serve


# Item 13: token keys with ids, every key distinct.

@pytest.mark.parametrize(("where", "other"), [
    ("hash_key", "token_keys.t1"), ("sealing_keys.s1", "hash_key"),
    ("sealing_keys.s1", "token_keys.t1"), ("sealing_keys.s1", "sealing_keys.s2"),
    ("token_keys.t1", "token_keys.t2"),
    # Item 16: the address keys are keys of their own too.
    ("address_keys.a1", "sealing_keys.s1"), ("address_keys.a1", "hash_key"),
    ("address_keys.a1", "token_keys.t1"), ("address_keys.a1", "address_keys.a2"),
])
def test_one_key_in_two_settings_is_refused(where: str, other: str) -> None:
    shared = key()
    config = keys()
    for name in (where, other):
        table, _, key_id = name.partition(".")
        if key_id:
            config[table] = {**config[table], key_id: shared}
        else:
            config[table] = shared
    message = refusal(keys=config)
    assert "the same key" in message and shared not in message
    assert f"keys.{where}" in message or f"keys.{other}" in message


def test_the_active_token_key_id_must_name_a_listed_key() -> None:
    assert "active_token_key_id" in refusal(keys=keys(active_token_key_id="t9"))
    assert "active_token_key_id" in refusal(keys=keys(token_keys={}))


def test_the_single_token_key_of_old_configurations_names_its_replacement() -> None:
    message = refusal(keys={**keys(), "token_key": key()})
    assert "token_key: replaced by token_keys" in message


def test_token_keys_load_with_ids() -> None:
    settings = Settings.load(keys=keys(token_keys={"t1": key(), "t2": key()},
                                       active_token_key_id="t2"))
    assert set(settings.keys.token_key_bytes()) == {"t1", "t2"}
    with pytest.raises(ConfigError, match=r"keys\.token_keys: required"):
        Settings.load().keys.token_key_bytes()


# Item 16: address keys, rules as for the sealing keys; the email role needs only them.

def test_the_active_address_key_id_must_name_a_listed_key() -> None:
    assert "active_address_key_id" in refusal(keys=keys(active_address_key_id="a9"))
    assert "active_address_key_id" in refusal(keys=keys(address_keys={}))


def test_address_keys_are_aes256_and_look_random() -> None:
    short = base64.b64encode(os.urandom(16)).decode()
    assert "address_keys" in refusal(keys=keys(address_keys={"a1": short}))
    zeros = base64.b64encode(bytes(32)).decode()
    assert "does not look random" in refusal(keys=keys(address_keys={"a1": zeros}))


def test_the_email_role_needs_the_address_keys_and_not_the_sealing_keys() -> None:
    email_only = Settings.load(keys={"active_address_key_id": "a1", "address_keys": {"a1": key()},
                                     "active_token_key_id": "t1", "token_keys": {"t1": key()}})
    email_only.keys.require_address()  # what `gelombang worker email` checks
    assert not email_only.keys.has_sealing_keys()
    with pytest.raises(ConfigError, match=r"keys\.hash_key"):
        email_only.keys.require()  # the NIK worker's and the door's keys
    with pytest.raises(ConfigError, match=r"keys\.address_keys: required"):
        Settings.load(keys=keys(active_address_key_id="", address_keys={})).keys.require_door()


def test_a_dev_only_address_key_is_refused_in_production() -> None:
    dev_key = base64.b64encode(b"DEV-ONLY-address-key-NOT-SECRET!").decode()
    message = refusal(**production(keys=keys(address_keys={"a1": dev_key})))
    assert "keys.address_keys.a1: a public dev-only value" in message
