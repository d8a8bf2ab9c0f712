"""Shared by the operator's unit tests: a ModelDeployment to start from, a plan's writes carried out on a plain
dict of children, those children seen as ``Observed`` (enough of a cluster to follow one child across reconcile
passes), the strict check of a rendered object against the Kubernetes OpenAPI schema, and a monotonic clock the test
moves on."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import kubernetes_validate
import pytest

from modeldeploy.reconcile import Observed, Plan

ObjectKey = tuple[str, str]

K8S_VERSION = kubernetes_validate.latest_version()
Objects = dict[tuple[str, str], dict[str, Any]]
"""(kind, name) -> object."""


def body(**spec: Any) -> dict[str, Any]:
    """ModelDeployment ``ml/iris`` as read from the API server: one TorchScript model and pod, plus ``spec``."""
    full: dict[str, Any] = {
        "model": {"version": "1", "storageUri": "s3://models/iris/1/model.pt", "format": "TorchScript"},
        "replicas": 1,
    }
    full.update(spec)
    return {
        "apiVersion": "modeldeploy.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "iris", "namespace": "ml", "uid": "uid-1", "generation": 1},
        "spec": full,
    }


def apply_plan(plan: Plan, objects: Objects) -> None:
    """The plan's applies (each object given a uid) and deletes."""
    for manifest in plan.apply:
        obj = copy.deepcopy(manifest)
        obj["metadata"]["uid"] = f"uid-{manifest['kind']}-{manifest['metadata']['name']}"
        objects[(manifest["kind"], manifest["metadata"]["name"])] = obj
    for ref in plan.delete:
        del objects[(ref.kind, ref.name)]


def observed(objects: Iterable[Mapping[str, Any]]) -> Observed:
    """Children, of any kinds, as the operator's watch caches would hand them to a reconcile."""
    items = list(objects)

    def of(kind: str) -> list[Mapping[str, Any]]:
        return [o for o in items if o["kind"] == kind]

    return Observed(
        deployments=of("Deployment"),
        services=of("Service"),
        autoscalers=of("HorizontalPodAutoscaler"),
        revisions=of("ControllerRevision"),
        network_policies=of("NetworkPolicy"),
        disruption_budgets=of("PodDisruptionBudget"),
    )


def assert_valid_k8s(obj: Mapping[str, Any]) -> None:
    """``obj`` is valid against the newest Kubernetes OpenAPI schema kubernetes-validate ships, strictly."""
    try:
        result = kubernetes_validate.validate(dict(obj), K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as error:
        pytest.fail(f"{obj['kind']} {obj['metadata']['name']} invalid at {list(error.absolute_path)}: {error.message}")
    assert result == ".".join(K8S_VERSION.split(".")[:2])


class Seconds:
    """A monotonic clock the test moves on."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class OneObject:
    """The controller's object source (its watch caches) holding one ModelDeployment and no children."""

    def __init__(self, md: dict[str, Any], key: ObjectKey = ("ml", "iris")) -> None:
        self.md = md
        self.key = key

    def model_deployment(self, key: ObjectKey) -> Mapping[str, Any] | None:
        return self.md if key == self.key else None

    def model_deployments(self) -> Sequence[ObjectKey]:
        return [self.key]

    def children(self, key: ObjectKey) -> Observed:
        return Observed()


# Every part of a pod's affinity, valid for the CRD and for the API server.
FULL_AFFINITY = {
    "nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [
                {
                    "matchExpressions": [
                        {"key": "nvidia.com/gpu.product", "operator": "In", "values": ["NVIDIA-H100-80GB-HBM3"]},
                        {"key": "nvidia.com/gpu.memory", "operator": "Gt", "values": ["40000"]},
                        {"key": "example.com/spot", "operator": "DoesNotExist"},
                    ]
                },
                {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["gpu-node-1.example"]}]},
            ]
        },
        "preferredDuringSchedulingIgnoredDuringExecution": [
            {
                "weight": 100,
                "preference": {"matchExpressions": [{"key": "zone", "operator": "NotIn", "values": ["a"]}]},
            },
            {"weight": 1, "preference": {}},
        ],
    },
    "podAffinity": {
        "preferredDuringSchedulingIgnoredDuringExecution": [
            {
                "weight": 50,
                "podAffinityTerm": {
                    "topologyKey": "topology.kubernetes.io/zone",
                    "labelSelector": {"matchLabels": {"app": "feature-store"}},
                    "namespaceSelector": {},
                },
            }
        ]
    },
    "podAntiAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": [
            {
                "topologyKey": "kubernetes.io/hostname",
                "labelSelector": {"matchLabels": {"modeldeploy.io/model-deployment": "iris"}},
                "namespaces": ["default", "ml-serving"],
                "matchLabelKeys": ["pod-template-hash"],
                "mismatchLabelKeys": ["tenant"],
            }
        ]
    },
}
