"""The Kubernetes manifests, as the deploy tests read them."""

from __future__ import annotations

import pytest

from tests.deploy.test_kubernetes import Manifest, _documents, _named


@pytest.fixture(scope="module")
def manifests() -> list[Manifest]:
    """Every object of deploy/kubernetes/ (kustomize's own file left out)."""
    return [doc for _, doc in _documents() if doc["kind"] != "Kustomization"]


@pytest.fixture(scope="module")
def config_data(manifests: list[Manifest]) -> dict[str, str]:
    """The ConfigMap's entries."""
    data: dict[str, str] = _named(manifests, "ConfigMap")["gelombang-config"]["data"]
    return data
