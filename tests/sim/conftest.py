"""Fixtures for tests against the emulated cluster (:mod:`modeldeploy.sim`).

- ``cluster``: a running :class:`modeldeploy.sim.cluster.Cluster` (API server on a loopback port, simulated
  Deployment/Pod controller, kubeconfig at ``cluster.kubeconfig_path``, base URL ``cluster.url``, request
  log at ``cluster.requests``). Namespaces ``default`` and ``kube-system`` exist. The CRDs installed are
  those of the ``cluster_crds`` fixture: by default the project's ModelDeployment CRD; override
  ``cluster_crds`` in a test module or conftest to install others. Pods become Ready after
  ``cluster_ready_delay`` seconds (override that fixture to change it).
- ``kube``: a lightkube ``AsyncClient`` configured from the cluster's kubeconfig.
- ``eventually``: ``await eventually(check, timeout=5)`` polls ``check()`` until it returns something truthy.
- ``widget_crd``: a small CRD of the tests' own (``sim.example.com/v1`` Widget, status and scale subresources).
"""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import lightkube
import pytest

from modeldeploy.sim import polling
from modeldeploy.sim.cluster import Cluster, run_cluster

REPO = Path(__file__).resolve().parents[2]
MODELDEPLOY_CRD = REPO / "crds" / "modeldeploy.io_modeldeployments.yaml"

# A small CRD of the tests' own: namespaced, status and scale subresources, a loose schema.
WIDGET_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.sim.example.com"},
    "spec": {
        "group": "sim.example.com",
        "scope": "Namespaced",
        "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "shortNames": ["wg"]},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "subresources": {
                    "status": {},
                    "scale": {
                        "specReplicasPath": ".spec.replicas",
                        "statusReplicasPath": ".status.replicas",
                        "labelSelectorPath": ".status.selector",
                    },
                },
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "properties": {
                                    "replicas": {"type": "integer", "minimum": 0},
                                    "size": {"type": "string"},
                                },
                                "x-kubernetes-preserve-unknown-fields": True,
                            },
                            "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                        },
                    }
                },
            }
        ],
    },
}
WIDGETS = "sim.example.com/v1/widgets"


@pytest.fixture
def cluster_crds() -> list[Any]:
    """CRDs the ``cluster`` fixture installs (override to change)."""
    return [MODELDEPLOY_CRD] if MODELDEPLOY_CRD.exists() else []


@pytest.fixture
def cluster_ready_delay() -> float:
    return 0.1


@pytest.fixture
async def cluster(cluster_crds: list[Any], cluster_ready_delay: float) -> AsyncIterator[Cluster]:
    """A running emulated cluster; see the module docstring."""
    async with run_cluster(crds=cluster_crds, ready_delay=cluster_ready_delay, tick=0.02) as running:
        yield running


@pytest.fixture
async def kube(cluster: Cluster) -> AsyncIterator[lightkube.AsyncClient]:
    config = lightkube.KubeConfig.from_file(cluster.kubeconfig_path)
    client = lightkube.AsyncClient(config=config, field_manager="sim-tests")
    try:
        yield client
    finally:
        await client.close()


Eventually = Callable[..., Awaitable[Any]]


async def _eventually(check: Callable[[], Any], *, timeout: float = 5.0, interval: float = 0.02) -> Any:  # noqa: ASYNC109
    return await polling.eventually(
        check, timeout, interval, lambda: AssertionError(f"condition not met within {timeout}s: {check}")
    )


@pytest.fixture
def eventually() -> Eventually:
    """Wait until ``check()`` returns something truthy (and return it); fail after ``timeout`` seconds."""
    return _eventually


@pytest.fixture
def widget_crd() -> dict[str, Any]:
    return copy.deepcopy(WIDGET_CRD)
