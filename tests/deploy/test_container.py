"""The Dockerfile and compose.yaml, checked by parsing them (no Docker engine here)."""

from __future__ import annotations

import base64
import binascii
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from config.settings import ConfigError, Settings
from gelombang.cli import SUBCOMMAND_MODULES, build_parser

ROOT = Path(__file__).resolve().parents[2]
# Every role the image runs, as `gelombang` command words.
ROLES = {("serve",), ("worker", "store"), ("worker", "email"), ("worker", "nik"), ("migrate",),
         ("mail-sink",), ("nik-sim",)}


def dockerfile_stages(text: str) -> list[list[tuple[str, str]]]:
    """The Dockerfile's instructions (keyword, arguments), one list per stage."""
    instructions: list[tuple[str, str]] = []
    current = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue  # Docker drops comment lines, also inside a continued instruction
        current += " " + stripped.removesuffix("\\").strip()
        if not stripped.endswith("\\"):
            keyword, _, arguments = current.strip().partition(" ")
            instructions.append((keyword.upper(), arguments.strip()))
            current = ""
    stages: list[list[tuple[str, str]]] = []
    for instruction in instructions:
        if instruction[0] == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(instruction)
    return stages


@pytest.fixture(scope="module")
def stages() -> list[list[tuple[str, str]]]:
    return dockerfile_stages((ROOT / "Dockerfile").read_text())


def _args(stage: list[tuple[str, str]], keyword: str) -> list[str]:
    return [arguments for kw, arguments in stage if kw == keyword]


def test_dockerfile_builds_in_one_stage_and_runs_in_another(
        stages: list[list[tuple[str, str]]]) -> None:
    assert len(stages) >= 2
    builder, runtime = stages[0], stages[-1]
    assert re.search(r"\bAS builder$", builder[0][1], re.IGNORECASE)
    assert "pip wheel" in " ".join(_args(builder, "RUN"))
    # The runtime installs the builder's wheels, from the builder, offline.
    install = " ".join(_args(runtime, "RUN"))
    assert "from=builder" in install and "--no-index" in install


def test_dockerfile_runtime_has_no_build_tools(stages: list[list[tuple[str, str]]]) -> None:
    runtime = " ".join(_args(stages[-1], "RUN"))
    assert "apt-get install" not in runtime
    for tool in ("build-essential", "gcc", "make ", "python3-dev"):
        assert tool not in runtime
    assert "python:3.11" in stages[-1][0][1] or "PYTHON_IMAGE" in stages[-1][0][1]
    base = re.search(r"ARG PYTHON_IMAGE=(\S+)", (ROOT / "Dockerfile").read_text())
    assert base is not None and base.group(1).startswith("python:3.11-slim")


def image_environment(stage: list[tuple[str, str]]) -> dict[str, str]:
    """The runtime stage's ENV variables (KEY=value form)."""
    return dict(pair.split("=", 1) for arguments in _args(stage, "ENV")
                for pair in arguments.split())


def test_the_image_runs_in_production_mode(stages: list[list[tuple[str, str]]]) -> None:
    # A container refuses plain HTTP/SMTP links and dev-only secrets unless told otherwise.
    assert image_environment(stages[-1])["GELOMBANG_SECURITY__PRODUCTION"] == "true"


def test_dockerfile_runs_as_a_numeric_non_root_user(stages: list[list[tuple[str, str]]]) -> None:
    users = _args(stages[-1], "USER")
    assert users, "the runtime stage sets no USER: it would run as root"
    user = users[-1].split(":")[0]
    assert user.isdigit() and int(user) != 0  # numeric: Kubernetes' runAsNonRoot checks it
    # Nothing after the last USER runs as root again.
    last_user = max(i for i, (kw, _) in enumerate(stages[-1]) if kw == "USER")
    assert all(kw != "RUN" for kw, _ in stages[-1][last_user:])


def test_dockerfile_has_one_entrypoint_and_a_role_aware_healthcheck(
        stages: list[list[tuple[str, str]]]) -> None:
    runtime = stages[-1]
    assert _args(runtime, "ENTRYPOINT") == ['["gelombang"]']
    assert _args(runtime, "CMD") == ['["serve"]']
    (healthcheck,) = _args(runtime, "HEALTHCHECK")
    assert healthcheck.endswith('CMD ["gelombang", "healthcheck"]')
    assert "healthcheck" in SUBCOMMAND_MODULES


def test_builder_copies_every_package_the_wheel_needs(stages: list[list[tuple[str, str]]]) -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    needed = {name.split(".")[0] for name in pyproject["tool"]["setuptools"]["packages"]}
    needed |= {"pyproject.toml", "README.md"}  # README.md is the project's readme
    # The wheel's license files: setuptools refuses to build without them.
    needed |= set(pyproject["project"]["license-files"])
    copied = {source.rstrip("/") for arguments in _args(stages[0], "COPY")
              for source in arguments.split()[:-1]}
    assert needed <= copied
    # .dockerignore is an allowlist: each copied path must be let in, and no
    # local state (keys in .dev, the virtualenv) may be.
    allowed = {line.removeprefix("!").rstrip("/") for line in
               (ROOT / ".dockerignore").read_text().splitlines() if line.startswith("!")}
    assert needed <= allowed
    assert not {".venv", ".dev", ".git", "tests"} & allowed


# --- compose.yaml -------------------------------------------------------------

_VARIABLE = re.compile(r"\$\{(\w+)(?::-([^}]*))?\}")


def interpolate(value: str) -> str:
    """Compose's `${VAR:-default}` with no variable set: the default."""
    return _VARIABLE.sub(lambda m: m.group(2) or "", value)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())
    return loaded


def _gelombang_services(compose: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for name, service in compose["services"].items():
        if service.get("image", "").startswith("gelombang"):
            yield name, service


def _role(command: list[str]) -> tuple[str, ...]:
    return tuple(command[:2]) if command[0] == "worker" else (command[0],)


def test_compose_runs_every_role_with_valid_arguments(compose: dict[str, Any]) -> None:
    roles = set()
    parser = build_parser()
    for _, service in _gelombang_services(compose):
        command = service["command"]
        roles.add(_role(command))
        parser.parse_args(command)  # exits (SystemExit) on an unknown role or option
    assert roles == ROLES
    assert {"redis", "postgres"} <= set(compose["services"])


def test_compose_redis_fsyncs_every_write(compose: dict[str, Any]) -> None:
    command = " ".join(compose["services"]["redis"]["command"])
    assert "--appendonly yes" in command
    assert "--appendfsync always" in command


def test_compose_starts_each_service_after_what_it_needs(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, service in services.items():
        for needed, condition in service.get("depends_on", {}).items():
            assert needed in services, f"{name} depends on unknown {needed}"
            if condition == {"condition": "service_healthy"} and not services[needed].get(
                    "image", "").startswith("gelombang"):
                # Gelombang services have the image's HEALTHCHECK; others need their own.
                assert "test" in services[needed].get("healthcheck", {}), needed
    assert services["migrate"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    for name in ("door", "worker-store", "worker-email", "worker-nik"):
        depends_on = services[name]["depends_on"]
        assert depends_on["redis"] == {"condition": "service_healthy"}, name
        assert depends_on["migrate"] == {"condition": "service_completed_successfully"}, name
    assert services["worker-email"]["depends_on"]["mail-sink"] == {
        "condition": "service_healthy"}
    assert services["worker-nik"]["depends_on"]["nik-sim"] == {"condition": "service_healthy"}


def _grace_seconds(text: str) -> float:
    match = re.fullmatch(r"(\d+)s", text)
    assert match, text
    return float(match.group(1))


def test_compose_lets_the_door_finish_before_killing_it(compose: dict[str, Any]) -> None:
    door = compose["services"]["door"]
    env = {k: interpolate(str(v)) for k, v in door["environment"].items()}
    needed = (float(env["GELOMBANG_DOOR__DRAIN_GRACE_SECONDS"])
              + float(env["GELOMBANG_DOOR__SHUTDOWN_DEADLINE_SECONDS"]))
    assert _grace_seconds(door["stop_grace_period"]) > needed


@pytest.fixture
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No GELOMBANG_* variable of this machine leaks into a service's settings."""
    import os

    for name in list(os.environ):
        if name.startswith("GELOMBANG_"):
            monkeypatch.delenv(name)
    return monkeypatch


def test_compose_environment_is_a_complete_valid_configuration(
        compose: dict[str, Any], stages: list[list[tuple[str, str]]],
        clean_environment: pytest.MonkeyPatch) -> None:
    for name, service in _gelombang_services(compose):
        with pytest.MonkeyPatch.context() as env:
            # The image's own environment first (production mode), then the service's.
            for key, value in [*image_environment(stages[-1]).items(),
                               *service["environment"].items()]:
                env.setenv(key, interpolate(str(value)))
            settings = Settings.load()
        settings.keys.require()
        assert settings.admin.token, name
        assert settings.redis.url == "redis://redis:6379/0"
        assert "@postgres:5432/" in settings.postgres.dsn
        assert settings.nik.base_url == "http://nik-sim:8090"
        assert settings.email.smtp_host == "mail-sink"


def _secret_values(compose: dict[str, Any]) -> Iterator[tuple[str, str]]:
    for _, service in compose["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if any(word in key for word in ("TOKEN", "KEY", "PASSWORD", "DSN")) and (
                    not key.endswith("_KEY_ID")):
                yield key, interpolate(str(value))


def test_compose_secrets_are_refused_in_production(
        compose: dict[str, Any], clean_environment: pytest.MonkeyPatch) -> None:
    (_, service), *_ = _gelombang_services(compose)
    for key, value in service["environment"].items():
        clean_environment.setenv(key, interpolate(str(value)))
    clean_environment.setenv("GELOMBANG_SECURITY__PRODUCTION", "true")
    with pytest.raises(ConfigError) as refused:
        Settings.load()
    for key in ("admin.token", "keys.sealing_keys.dev1", "keys.hash_key",
                "keys.token_keys.dev1", "keys.address_keys.dev1", "public.base_url",
                "nik.base_url", "email.smtp_tls"):
        assert key in str(refused.value)


def test_compose_secrets_are_labelled_dev_only(compose: dict[str, Any]) -> None:
    seen = 0
    for key, value in _secret_values(compose):
        seen += 1
        try:
            decoded = base64.b64decode(value, validate=True)
        except binascii.Error:
            decoded = b""
        assert "dev-only" in value or decoded.startswith(b"DEV-ONLY"), key
    assert seen >= 5
