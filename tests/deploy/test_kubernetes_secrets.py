"""deploy/kubernetes/secret.yaml: each role's pods hold only the keys that role uses."""

from __future__ import annotations

from typing import Any

import pytest

from config.settings import Settings
from tests.deploy.test_kubernetes import (
    Manifest,
    _named,
    _real_secrets,
    _settings_with,
)

KEYS = "GELOMBANG_KEYS__"
SEALING = {f"{KEYS}SEALING_KEYS", f"{KEYS}ACTIVE_SEALING_KEY_ID"}
HASH = {f"{KEYS}HASH_KEY"}
TOKEN = {f"{KEYS}TOKEN_KEYS", f"{KEYS}ACTIVE_TOKEN_KEY_ID"}
ADDRESS = {f"{KEYS}ADDRESS_KEYS", f"{KEYS}ACTIVE_ADDRESS_KEY_ID"}
# The keys each main container may hold, and no more (docs/security.md, "Keys per role").
ROLE_KEYS = {
    "gelombang-door": SEALING | HASH | TOKEN | ADDRESS,
    "gelombang-worker-email": TOKEN | ADDRESS,
    "gelombang-worker-nik": SEALING | HASH,
    "gelombang-worker-store": set(),
}


def _env_of(manifests: list[Manifest], container: dict[str, Any]) -> dict[str, str]:
    """What a container's envFrom gives it: the ConfigMap's and the Secrets' entries."""
    configs, secrets = _named(manifests, "ConfigMap"), _named(manifests, "Secret")
    env: dict[str, str] = {}
    for source in container["envFrom"]:
        if "configMapRef" in source:
            env.update(configs[source["configMapRef"]["name"]]["data"])
        else:
            env.update(secrets[source["secretRef"]["name"]]["stringData"])
    return env


def _containers(workload: Manifest) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    pod = workload["spec"]["template"]["spec"]
    return pod["containers"][0], pod.get("initContainers", [])


def test_each_role_holds_only_its_keys_and_init_containers_none(
        manifests: list[Manifest]) -> None:
    deployments = _named(manifests, "Deployment")
    assert set(deployments) == set(ROLE_KEYS)
    for name, allowed in ROLE_KEYS.items():
        main, inits = _containers(deployments[name])
        held = {key for key in _env_of(manifests, main) if key.startswith(KEYS)}
        assert held == allowed, name
        for init in inits:  # migrate --wait-for-version: the database only
            assert not any(key.startswith(KEYS) for key in _env_of(manifests, init)), name
    (job,) = _named(manifests, "Job").values()
    main, _ = _containers(job)
    assert not any(key.startswith(KEYS) for key in _env_of(manifests, main))


def test_a_key_two_roles_use_has_the_same_placeholder_in_both_secrets(
        manifests: list[Manifest]) -> None:
    seen: dict[str, str] = {}
    for secret in _named(manifests, "Secret").values():
        for key, value in secret["stringData"].items():
            assert seen.setdefault(key, value) == value, key


@pytest.mark.parametrize(("deployment", "check"), [
    ("gelombang-door", "require_door"),
    ("gelombang-worker-email", "require_address"),
    ("gelombang-worker-nik", "require"),
])
def test_each_role_starts_with_its_filled_in_secrets(
        manifests: list[Manifest], deployment: str, check: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    main, _ = _containers(_named(manifests, "Deployment")[deployment])
    env = _env_of(manifests, main)
    filled = _real_secrets({key: value for key, value in env.items() if "REPLACE" in value})
    settings: Settings = _settings_with(monkeypatch, env, filled)
    getattr(settings.keys, check)()
    if deployment == "gelombang-worker-email":
        assert not settings.keys.has_sealing_keys() and not settings.keys.hash_key
