"""deploy/kubernetes/: who may reach which port (NetworkPolicy), the ingress, the admin bind."""

from __future__ import annotations

import secrets

from config.settings import AdminSettings, Settings
from tests.deploy.test_kubernetes import Manifest, _container, _named, _selects


def _policy_ports(policy: Manifest, allowed_from: Manifest) -> set[str]:
    """The ports `policy` opens to a peer matching `allowed_from` (namespace, pod labels)."""
    ports: set[str] = set()
    for rule in policy["spec"]["ingress"]:
        for peer in rule["from"]:
            if _selects(peer.get("namespaceSelector", {}), allowed_from["namespace"]) and \
                    _selects(peer.get("podSelector", {}), allowed_from["pod"]):
                ports |= {p["port"] for p in rule["ports"]}
    return ports


PROMETHEUS = {"namespace": {"kubernetes.io/metadata.name": "monitoring"},
              "pod": {"app.kubernetes.io/name": "prometheus"}}
INGRESS_CONTROLLER = {"namespace": {"kubernetes.io/metadata.name": "ingress-nginx"},
                      "pod": {"app.kubernetes.io/name": "ingress-nginx"}}
SOME_OTHER_POD = {"namespace": {"kubernetes.io/metadata.name": "gelombang"},
                  "pod": {"app.kubernetes.io/name": "debug"}}


def test_network_policies_keep_the_admin_and_metrics_ports_for_prometheus(
        manifests: list[Manifest]) -> None:
    deployments = _named(manifests, "Deployment")
    policies = _named(manifests, "NetworkPolicy")
    for name, deployment in deployments.items():
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        (policy,) = [p for p in policies.values() if _selects(p["spec"]["podSelector"], labels)]
        assert policy["spec"]["policyTypes"] == ["Ingress"], name
        port_names = {p["name"] for p in _container(deployment)["ports"]}
        scraped = "admin" if name == "gelombang-door" else "metrics"
        assert _policy_ports(policy, PROMETHEUS) == {scraped}, name
        assert _policy_ports(policy, SOME_OTHER_POD) == set(), name
        # Every port a policy names is a port of the pod (a typo would open nothing).
        assert {p["port"] for r in policy["spec"]["ingress"] for p in r["ports"]} <= port_names
    door = policies["gelombang-door"]
    assert _policy_ports(door, INGRESS_CONTROLLER) == {"public"}


def test_the_ingress_serves_the_public_base_url_over_tls_and_nothing_else(
        manifests: list[Manifest], config_data: dict[str, str]) -> None:
    (ingress,) = _named(manifests, "Ingress").values()
    host = config_data["GELOMBANG_PUBLIC__BASE_URL"].removeprefix("https://").rstrip("/")
    (tls,) = ingress["spec"]["tls"]
    assert tls["hosts"] == [host] and tls["secretName"]
    (rule,) = ingress["spec"]["rules"]
    assert rule["host"] == host
    backends = [path["backend"]["service"] for path in rule["http"]["paths"]]
    assert backends == [{"name": "gelombang-door", "port": {"name": "public"}}]
    public = _named(manifests, "Service")["gelombang-door"]
    assert {p["name"] for p in public["spec"]["ports"]} == {"public"}
    annotations = ingress["metadata"]["annotations"]  # HTTP/1.1: the door's registration lane
    assert annotations["nginx.ingress.kubernetes.io/proxy-http-version"] == "1.1"


def test_the_admin_port_binds_loopback_unless_configured(config_data: dict[str, str]) -> None:
    assert AdminSettings(port=8081, token=secrets.token_urlsafe(48)).host == "127.0.0.1"
    assert Settings.load(admin={"port": 0}).admin.host == "127.0.0.1"
    # The manifests configure it wider, and a NetworkPolicy guards it (test above).
    assert config_data["GELOMBANG_ADMIN__HOST"] == "0.0.0.0"
