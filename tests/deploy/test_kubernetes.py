"""deploy/kubernetes/: schema-valid (bundled schemas of kubernetes-validate, offline), coherent."""

from __future__ import annotations

import base64
import ipaddress
import os
import re
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from pydantic import BaseModel

from config.settings import ConfigError, Settings, WorkerRole
from database.schema import required_version
from gelombang.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "deploy" / "kubernetes"
# The oldest Kubernetes these manifests promise to work on (policy/v1,
# autoscaling/v2 and Job ttlSecondsAfterFinished are all GA there).
KUBERNETES_VERSION = "1.30.0"

Manifest = dict[str, Any]


def _documents() -> Iterator[tuple[str, Manifest]]:
    for path in sorted(MANIFESTS.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if document is not None:
                yield path.name, document


def _named(manifests: list[Manifest], kind: str) -> dict[str, Manifest]:
    return {m["metadata"]["name"]: m for m in manifests if m["kind"] == kind}


@pytest.mark.parametrize(("file", "document"), [
    pytest.param(file, doc, id=f"{doc['kind']}/{doc['metadata']['name']}")
    for file, doc in _documents() if doc["kind"] != "Kustomization"  # kustomize's, not an object
])
def test_manifest_is_valid_against_the_kubernetes_schema(file: str, document: Manifest) -> None:
    try:
        # strict: a misspelt or misplaced field is an error, not silently dropped.
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        pytest.fail(f"{file}: {document['kind']} {document['metadata']['name']}: "
                    f"{exc.message} at {list(exc.path)}")


def test_the_validator_refuses_a_broken_manifest(manifests: list[Manifest]) -> None:
    # The positive control: were the validator lenient, the test above would prove nothing.
    door = _named(manifests, "Deployment")["gelombang-door"]
    broken = yaml.safe_load(yaml.safe_dump(door))
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["pth"] = "/"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_kustomization_applies_every_file() -> None:
    kustomization = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())
    files = {p.name for p in MANIFESTS.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files


def _pod(workload: Manifest) -> Manifest:
    pod: Manifest = workload["spec"]["template"]["spec"]
    return pod


def _container(workload: Manifest) -> Manifest:
    (container,) = _pod(workload)["containers"]
    result: Manifest = container
    return result


def _workloads(manifests: list[Manifest]) -> list[Manifest]:
    return [m for m in manifests if m["kind"] in ("Deployment", "Job")]


def _every_container(workload: Manifest) -> list[Manifest]:
    containers: list[Manifest] = [*_pod(workload)["containers"],
                                  *_pod(workload).get("initContainers", [])]
    return containers


def test_every_role_runs_with_valid_arguments(manifests: list[Manifest]) -> None:
    parser = build_parser()
    roles = set()
    for workload in _workloads(manifests):
        for container in _every_container(workload):
            parser.parse_args(container["args"])  # SystemExit on an unknown role or option
        args = _container(workload)["args"]
        roles.add(tuple(args[:2]) if args[0] == "worker" else (args[0],))
    assert roles == {("serve",), ("worker", "store"), ("worker", "email"), ("worker", "nik"),
                     ("migrate",)}
    (job,) = _named(manifests, "Job").values()
    assert _container(job)["args"] == ["migrate"]


def _dockerfile_user() -> int:
    users = re.findall(r"^USER (\d+)", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    return int(users[-1])


def test_every_pod_runs_as_the_image_user_with_bounded_resources(
        manifests: list[Manifest]) -> None:
    for workload in _workloads(manifests):
        name = workload["metadata"]["name"]
        security = _pod(workload)["securityContext"]
        assert security["runAsNonRoot"] is True, name
        assert security["runAsUser"] == _dockerfile_user(), name
        for container in _every_container(workload):
            where = f"{name}/{container['name']}"
            assert container["securityContext"]["allowPrivilegeEscalation"] is False, where
            assert container["securityContext"]["readOnlyRootFilesystem"] is True, where
            resources = container["resources"]
            assert {"cpu", "memory"} <= set(resources["requests"]), where
            assert "memory" in resources["limits"], where
            refs = [next(iter(source.values()))["name"] for source in container["envFrom"]]
            assert refs[:2] == ["gelombang-config", "gelombang-secrets"], where
    assert set(_named(manifests, "ConfigMap")) == {"gelombang-config"}


def _settings_with(monkeypatch: pytest.MonkeyPatch, *sources: dict[str, str]) -> Settings:
    for name in list(os.environ):
        if name.startswith("GELOMBANG_"):
            monkeypatch.delenv(name)
    for source in sources:
        for key, value in source.items():
            monkeypatch.setenv(key, value)
    return Settings.load()


@pytest.fixture(scope="module")
def secret_data(manifests: list[Manifest]) -> dict[str, str]:
    data: dict[str, str] = {}
    for secret in _named(manifests, "Secret").values():
        data.update(secret["stringData"])
    return data


def _real_secrets(placeholders: dict[str, str]) -> dict[str, str]:
    """What an operator would put in place of each placeholder (made-up values)."""
    sealing, hashing, signing, address = (base64.b64encode(os.urandom(32)).decode()
                                          for _ in range(4))
    values = {
        "GELOMBANG_ADMIN__TOKEN": secrets.token_urlsafe(48),
        "GELOMBANG_KEYS__ACTIVE_SEALING_KEY_ID": "k2026",
        "GELOMBANG_KEYS__SEALING_KEYS": f'{{"k2026": "{sealing}"}}',
        "GELOMBANG_KEYS__HASH_KEY": hashing,
        "GELOMBANG_KEYS__ACTIVE_TOKEN_KEY_ID": "t2026",
        "GELOMBANG_KEYS__TOKEN_KEYS": f'{{"t2026": "{signing}"}}',
        "GELOMBANG_KEYS__ACTIVE_ADDRESS_KEY_ID": "a2026",
        "GELOMBANG_KEYS__ADDRESS_KEYS": f'{{"a2026": "{address}"}}',
    }
    return {name: values.get(name, value.replace("REPLACE-", "made-up-"))
            for name, value in placeholders.items()}


def test_every_config_and_secret_key_names_a_setting(
        config_data: dict[str, str], secret_data: dict[str, str]) -> None:
    # An unknown name would be ignored silently; this catches the typo.
    for name in [*config_data, *secret_data]:
        match = re.fullmatch(r"GELOMBANG_([A-Z_]+?)__([A-Z_]+?)(?:__[A-Z0-9_]+)?", name)
        assert match, name
        section, key = match.group(1).lower(), match.group(2).lower()
        assert section in Settings.model_fields, name
        model = Settings.model_fields[section].annotation
        assert isinstance(model, type) and issubclass(model, BaseModel)
        assert key in model.model_fields, name


def test_the_secret_holds_placeholders_that_refuse_to_start(
        secret_data: dict[str, str], config_data: dict[str, str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    assert all("REPLACE" in value for value in secret_data.values())
    with pytest.raises(ConfigError, match="keys"):
        _settings_with(monkeypatch, config_data, secret_data)


def test_config_and_filled_in_secret_are_a_complete_configuration(
        secret_data: dict[str, str], config_data: dict[str, str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _settings_with(monkeypatch, config_data, _real_secrets(secret_data))
    settings.keys.require_door()
    assert settings.admin.host == "0.0.0.0"  # Prometheus scrapes it from another pod
    # Behind the Ingress the door's peer is the controller: its X-Forwarded-For is believed.
    assert ipaddress.ip_address("10.1.2.3") in settings.client_limit.trusted_networks()[0]


def _port(container: Manifest, name_or_number: str | int) -> int:
    if isinstance(name_or_number, int):
        return name_or_number
    (number,) = [p["containerPort"] for p in container["ports"] if p["name"] == name_or_number]
    return int(number)


def test_door_probes_grace_and_ports_match_the_configuration(
        manifests: list[Manifest], config_data: dict[str, str],
        secret_data: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _settings_with(monkeypatch, config_data, _real_secrets(secret_data))
    door = _named(manifests, "Deployment")["gelombang-door"]
    container = _container(door)
    readiness = container["readinessProbe"]["httpGet"]
    assert readiness["path"] == "/readyz"
    assert _port(container, readiness["port"]) == settings.public.port
    liveness = container["livenessProbe"]["httpGet"]
    assert liveness["path"] == "/healthz"
    assert _port(container, liveness["port"]) == settings.public.port
    assert _port(container, "admin") == settings.admin.port
    # The door leaves by itself before the kubelet's SIGKILL.
    needed = settings.door.drain_grace_seconds + settings.door.shutdown_deadline_seconds
    assert _pod(door)["terminationGracePeriodSeconds"] > needed
    probe = container["readinessProbe"]
    # One slow Redis answer (a 503 after redis.timeout_seconds, before the probe's own
    # timeout) takes no pod out of the endpoints: it takes two misses in a row.
    assert probe["failureThreshold"] > 1
    assert probe["timeoutSeconds"] > settings.redis.timeout_seconds
    # While draining, readiness must fail within the grace (the last probe may
    # take its whole timeout), so traffic stops before the listener closes.
    needed_to_fail = probe["periodSeconds"] * probe["failureThreshold"] + probe["timeoutSeconds"]
    assert needed_to_fail < settings.door.drain_grace_seconds


def test_workers_have_liveness_and_time_to_finish(manifests: list[Manifest]) -> None:
    workers = [m for name, m in _named(manifests, "Deployment").items() if "worker" in name]
    assert len(workers) == 3
    for worker in workers:
        container = _container(worker)
        assert container["livenessProbe"]["exec"]["command"] == ["gelombang", "healthcheck"]
        assert _pod(worker)["terminationGracePeriodSeconds"] >= 60


def test_each_worker_declares_its_roles_first_metrics_port_and_listens_for_other_pods(
        manifests: list[Manifest], config_data: dict[str, str],
        secret_data: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _settings_with(monkeypatch, config_data, _real_secrets(secret_data))
    roles: dict[str, WorkerRole] = {"store": "drain", "email": "email", "nik": "nik"}
    deployments = _named(manifests, "Deployment")
    for command, role in roles.items():
        worker = deployments[f"gelombang-worker-{command}"]
        container = _container(worker)
        assert container["args"] == ["worker", command]
        # One process per pod: it takes the first port of its role's range.
        assert container["ports"] == [
            {"name": "metrics", "containerPort": settings.worker_metrics.ports(role)[0]}]
        # prometheus.yml keeps pods by this label and that port name.
        component = worker["spec"]["template"]["metadata"]["labels"][
            "app.kubernetes.io/component"]
        assert re.fullmatch(r"worker-(store|email|nik)", component)
    assert settings.worker_metrics.enabled and settings.worker_metrics.host == "0.0.0.0"


def _selects(selector: Manifest, labels: dict[str, str]) -> bool:
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    return all(labels.get(e["key"]) in e["values"] for e in selector.get("matchExpressions", [])
               if e["operator"] == "In")


def test_services_hpa_and_budgets_point_at_the_pods(manifests: list[Manifest]) -> None:
    deployments = _named(manifests, "Deployment")
    pod_labels = {name: d["spec"]["template"]["metadata"]["labels"]
                  for name, d in deployments.items()}
    door_labels = pod_labels["gelombang-door"]
    for service in _named(manifests, "Service").values():
        assert _selects({"matchLabels": service["spec"]["selector"]}, door_labels)
        names = {p["name"] for p in _container(deployments["gelombang-door"])["ports"]}
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= names
    (hpa,) = _named(manifests, "HorizontalPodAutoscaler").values()
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1", "kind": "Deployment", "name": "gelombang-door"}
    assert hpa["spec"]["minReplicas"] >= 2
    covered = set()
    for budget in _named(manifests, "PodDisruptionBudget").values():
        covered |= {name for name, labels in pod_labels.items()
                    if _selects(budget["spec"]["selector"], labels)}
    assert covered == set(deployments)
    # A budget that selects nothing but the door: with minAvailable 1 and two
    # replicas, a node drain always leaves one door answering.
    assert _named(manifests, "PodDisruptionBudget")["gelombang-door"]["spec"]["minAvailable"] == 1


def test_every_deployment_waits_for_the_schema_in_an_init_container(
        manifests: list[Manifest]) -> None:
    deployments = _named(manifests, "Deployment")
    assert len(deployments) == 4
    for name, deployment in deployments.items():
        (init,) = _pod(deployment)["initContainers"]
        args = build_parser().parse_args(init["args"])
        # Waits, never applies: two pods must not both migrate, and only the Job does.
        assert args.command == "migrate" and args.wait_for_version, name
        assert 60 <= args.timeout <= 900, name
        assert init["image"] == _container(deployment)["image"], name  # the same release's version
    assert required_version() >= 1


def test_the_migrate_job_can_be_applied_again(manifests: list[Manifest]) -> None:
    (job,) = _named(manifests, "Job").values()
    # A new release is a new Job (a finished Job's template cannot change), and the
    # same release applied again after the TTL runs again, idempotently.
    tag = _container(job)["image"].rsplit(":", 1)[1]
    assert job["metadata"]["name"] == "gelombang-migrate-" + re.sub(r"[^a-z0-9]", "-", tag)
    assert "generateName" not in job["metadata"]  # kubectl apply needs a name
    assert 0 < job["spec"]["ttlSecondsAfterFinished"] <= 86400
    images = {c["image"] for m in _workloads(manifests) for c in _every_container(m)}
    assert images == {_container(job)["image"]}
    # Exit 3 (a refusal no retry mends) fails the Job at once.
    (rule,) = job["spec"]["podFailurePolicy"]["rules"]
    assert rule["action"] == "FailJob" and rule["onExitCodes"]["values"] == [3]
    assert _pod(job)["restartPolicy"] == "Never"


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kustomize_renders_every_object_into_the_namespace() -> None:
    rendered = subprocess.run(["kubectl", "kustomize", str(MANIFESTS)], check=True,
                              capture_output=True, text=True, timeout=60).stdout
    objects = [doc for doc in yaml.safe_load_all(rendered) if doc]
    expected = [doc for _, doc in _documents() if doc["kind"] != "Kustomization"]
    assert sorted((o["kind"], o["metadata"]["name"]) for o in objects) == sorted(
        (o["kind"], o["metadata"]["name"]) for o in expected)
    assert {o["metadata"]["namespace"] for o in objects} == {"gelombang"}
