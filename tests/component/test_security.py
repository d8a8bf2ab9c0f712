"""Access control and supply-chain safety, with the real operator against the emulated API server:
the artifact policy, the per-ModelDeployment NetworkPolicy, least privilege (every API call the operator makes is
granted by charts/modeldeploy/rbac/rules.yaml, and nothing more is granted), and Secret values never leaking."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from kopf.testing import KopfRunner

from modeldeploy.conditions import find
from modeldeploy.labels import MANAGED_BY_LABEL
from modeldeploy.sim.cluster import add_node, node_manifest
from modeldeploy.sim.emulator import RequestRecord

from .conftest import DEPLOYMENTS, EVENTS, HPAS, MD, Permission, ThreadedCluster, chart_grants, permission

pytestmark = pytest.mark.component

NETWORK_POLICIES = "networking.k8s.io/v1/networkpolicies"
DISRUPTION_BUDGETS = "policy/v1/poddisruptionbudgets"
SECRETS = "v1/secrets"
SHA = "b" * 64

IRIS: dict[str, Any] = {
    "apiVersion": "modeldeploy.io/v1alpha1",
    "kind": "ModelDeployment",
    "metadata": {"name": "iris", "namespace": "ml"},
    "spec": {
        "model": {"version": "1", "storageUri": "s3://models/iris/1/model.pt", "format": "TorchScript", "sha256": SHA},
        "replicas": 1,
    },
}

# Calls the operator is allowed to make that a short standalone run against the emulated cluster does not
# exercise. Every entry says why it is needed; nothing else may be granted without being seen.
NOT_EXERCISED: dict[Permission, str] = {
    # GatewayAPI traffic routing (spec.rollout.canary.trafficRouting.type: GatewayAPI) needs the Gateway API
    # CRDs, which the emulated cluster does not install. controller._existing_route reads the HTTPRoute (get),
    # the operator creates its own with server-side apply (patch) and edits a user's one with a replace that
    # carries the resourceVersion it read (update).
    ("gateway.networking.k8s.io", "httproutes", "get"): "GatewayAPI routing: read the HTTPRoute",
    ("gateway.networking.k8s.io", "httproutes", "patch"): "GatewayAPI routing: apply the owned HTTPRoute",
    ("gateway.networking.k8s.io", "httproutes", "update"): "GatewayAPI routing: edit a user's HTTPRoute",
    # kopf lists and watches namespaces when it serves a list of namespaces (the chart's watchNamespaces,
    # --namespace); the test runs with --all-namespaces.
    ("", "namespaces", "list"): "kopf: namespaced mode",
    ("", "namespaces", "watch"): "kopf: namespaced mode",
    # The conflict check reads a child before creating it only when the watch cache has not seen it yet;
    # whether that happens for each kind in a short run depends on timing.
    ("apps", "deployments", "get"): "read-before-create conflict check",
    ("", "services", "get"): "read-before-create conflict check",
    ("autoscaling", "horizontalpodautoscalers", "get"): "read-before-create conflict check",
    ("apps", "controllerrevisions", "get"): "read-before-create conflict check",
    ("networking.k8s.io", "networkpolicies", "get"): "read-before-create conflict check",
    ("policy", "poddisruptionbudgets", "get"): "read-before-create conflict check",
    # Deleting a ControllerRevision happens when history grows past revisionHistoryLimit (10 by default);
    # deleting a Service when a blue-green preview Service is no longer wanted. Neither happens in this run.
    # Whether a ModelDeployment the watch cache still holds is gone from the API server: after a 404 on one of its
    # writes, and for each object when a standby takes over (tests/component/test_peering.py, under the chart's RBAC
    # like every tier-2 test).
    ("modeldeploy.io", "modeldeployments", "get"): "gone-object check",
    ("apps", "controllerrevisions", "delete"): "history pruning",
    ("", "services", "delete"): "preview Service removal",
}


def granted_cluster_wide() -> set[Permission]:
    """What rules.yaml grants across all namespaces even when the operator serves a list of namespaces."""
    return chart_grants("cluster", "gpuPreflight")


def granted() -> set[Permission]:
    """What rules.yaml grants in the operator's namespaces and cluster-wide (not kopf's peering section, which
    a standalone run never uses: peering is checked by tests/chart)."""
    return chart_grants("namespaced", "cluster", "gpuPreflight")


def requests(emulated: ThreadedCluster) -> Sequence[RequestRecord]:
    records: Sequence[RequestRecord] = emulated.call(lambda: list(emulated.cluster.requests))
    return records


def md(**spec: Any) -> dict[str, Any]:
    body = copy.deepcopy(IRIS)
    body["spec"].update(spec)
    return body


def status(emulated: ThreadedCluster) -> dict[str, Any]:
    return dict((emulated.get(MD, "ml", "iris") or {}).get("status") or {})


def ready(emulated: ThreadedCluster, version: str | None = None) -> bool:
    st = status(emulated)
    generation = (emulated.get(MD, "ml", "iris") or {}).get("metadata", {}).get("generation")
    return bool(
        st.get("phase") == "Ready"
        and st.get("observedGeneration") == generation
        and (version is None or st.get("modelVersion") == version)
    )


def ready_reason(emulated: ThreadedCluster) -> str:
    found = find(status(emulated).get("conditions") or [], "Ready")
    return str((found or {}).get("reason", ""))


def owned(emulated: ThreadedCluster, resource: str) -> list[dict[str, Any]]:
    return emulated.list(resource, "ml", "modeldeploy.io/model-deployment=iris")


def test_artifact_policy_blocks_new_and_updated_models(
    emulated: ThreadedCluster, operator_factory: Callable[[], KopfRunner], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODELDEPLOY_POLICY_REQUIRE_SHA256", "true")
    monkeypatch.setenv("MODELDEPLOY_POLICY_ALLOWED_SCHEMES", "s3")
    monkeypatch.setenv("MODELDEPLOY_POLICY_ALLOWED_HOSTS", "models")
    with operator_factory() as runner:
        # A new object from a bucket outside the policy: nothing at all is deployed.
        emulated.create(
            MD,
            md(model={"version": "1", "storageUri": "s3://untrusted/iris.pt", "format": "TorchScript", "sha256": SHA}),
        )
        emulated.wait_for(lambda: ready_reason(emulated) == "InvalidSpec", message="InvalidSpec")
        ready_message = str((find(status(emulated)["conditions"], "Ready") or {}).get("message"))
        assert "spec.model.storageUri" in ready_message and "untrusted" in ready_message
        assert owned(emulated, DEPLOYMENTS) == [] and owned(emulated, "v1/services") == []
        # Fixed: it deploys.
        emulated.patch(MD, "ml", "iris", {"spec": {"model": {"storageUri": "s3://models/iris/1/model.pt"}}})
        emulated.wait_for(lambda: ready(emulated), message="Ready once compliant")
        before = {d["metadata"]["name"]: d["metadata"]["resourceVersion"] for d in owned(emulated, DEPLOYMENTS)}
        # An update without a digest: refused, the last good revision keeps serving untouched.
        emulated.patch(
            MD,
            "ml",
            "iris",
            {"spec": {"model": {"version": "2", "sha256": None, "storageUri": "s3://models/iris/2/model.pt"}}},
        )
        emulated.wait_for(lambda: ready_reason(emulated) == "InvalidSpec", message="InvalidSpec on update")
        ready_message = str((find(status(emulated)["conditions"], "Ready") or {}).get("message"))
        assert "spec.model.sha256" in ready_message and "keeps serving" in ready_message
        assert ("Warning", "InvalidSpec") in [(e["type"], e["reason"]) for e in emulated.list(EVENTS, "ml")]
        time.sleep(1.0)
        after = {d["metadata"]["name"]: d["metadata"]["resourceVersion"] for d in owned(emulated, DEPLOYMENTS)}
        assert after == before
    assert "Traceback" not in runner.output, runner.output


def test_least_privilege(emulated: ThreadedCluster, operator_factory: Callable[[], KopfRunner]) -> None:
    """Record every API call over a representative run and compare with rules.yaml, both ways."""
    emulated.call(add_node, emulated.cluster.emulator, node_manifest("gpu-a", gpus=8))
    with operator_factory() as runner:
        # Create, with the NetworkPolicy switched on by the ModelDeployment.
        emulated.create(MD, md(networkPolicy={"enabled": True}))
        emulated.wait_for(lambda: ready(emulated), message="Ready")
        assert owned(emulated, NETWORK_POLICIES), "NetworkPolicy created"
        assert owned(emulated, DISRUPTION_BUDGETS), "PodDisruptionBudget created (on by default)"
        # Update (a new revision rolls out, the old one is removed).
        model = {"version": "2", "storageUri": "s3://models/iris/2/model.pt", "format": "TorchScript"}
        emulated.patch(MD, "ml", "iris", {"spec": {"model": model}})
        emulated.wait_for(lambda: ready(emulated, version="2"), message="version 2 Ready")
        emulated.wait_for(lambda: len(owned(emulated, DEPLOYMENTS)) == 1, message="old revision removed")
        # A GPU model's rollout: the pre-flight lists Nodes and Pods cluster-wide.
        emulated.patch(MD, "ml", "iris", {"spec": {"runtime": {"gpu": {"count": 1}}}})
        emulated.wait_for(
            lambda: status(emulated).get("rollout", {}).get("gpuPreflight", {}).get("result") == "Sufficient",
            message="GPU pre-flight done",
        )
        emulated.wait_for(lambda: ready(emulated), message="GPU revision Ready")
        # Autoscaling on, then off.
        emulated.patch(
            MD,
            "ml",
            "iris",
            {
                "spec": {
                    "replicas": None,
                    "autoscaling": {"minReplicas": 1, "maxReplicas": 3, "targetCPUUtilizationPercentage": 60},
                }
            },
        )
        emulated.wait_for(lambda: owned(emulated, HPAS), message="HPA created")
        emulated.patch(MD, "ml", "iris", {"spec": {"autoscaling": None, "replicas": 2}})
        emulated.wait_for(lambda: owned(emulated, HPAS) == [], message="HPA removed")
        # NetworkPolicy off again: the operator deletes its own.
        emulated.patch(MD, "ml", "iris", {"spec": {"networkPolicy": {"enabled": False}}})
        emulated.wait_for(lambda: owned(emulated, NETWORK_POLICIES) == [], message="NetworkPolicy removed")
        # The PodDisruptionBudget off: the operator deletes its own.
        emulated.patch(MD, "ml", "iris", {"spec": {"disruptionBudget": {"enabled": False}}})
        emulated.wait_for(lambda: owned(emulated, DISRUPTION_BUDGETS) == [], message="PodDisruptionBudget removed")
        # Invalid update.
        emulated.patch(MD, "ml", "iris", {"spec": {"model": {"storageUri": "s3://Bad/x.pt"}}})
        emulated.wait_for(lambda: ready_reason(emulated) == "InvalidSpec", message="InvalidSpec")
        # Delete.
        emulated.delete(MD, "ml", "iris")
        emulated.wait_for(lambda: owned(emulated, DEPLOYMENTS) == [], message="children removed")
        time.sleep(0.5)
    assert "Traceback" not in runner.output, runner.output

    seen: set[Permission] = set()
    for record in requests(emulated):
        seen.add(permission(record))
    grants = granted()
    assert sorted(seen - grants) == [], "calls rules.yaml does not grant (the operator would be forbidden)"
    unexplained = grants - seen - set(NOT_EXERCISED)
    assert sorted(unexplained) == [], f"granted, never used (remove or justify in NOT_EXERCISED); seen {sorted(seen)}"
    assert set(NOT_EXERCISED) <= grants, "NOT_EXERCISED lists a permission rules.yaml does not grant"
    assert not any(r.resource == "secrets" for r in requests(emulated)), "the operator never touches Secrets"
    # The operator's own cluster-wide reads (the GPU pre-flight) must be granted outside the namespaced rules too:
    # with watchNamespaces the chart grants those only per namespace. (The audit of its own children, by their
    # managed-by label, lists cluster-wide only when it serves all namespaces, and per namespace otherwise.)
    across = {
        (r.group, r.resource, r.verb)
        for r in requests(emulated)
        if r.namespace is None and r.user_agent.startswith("modeldeploy/") and MANAGED_BY_LABEL not in r.label_selector
    }
    assert ("", "nodes", "list") in across and ("", "pods", "list") in across, across
    assert sorted(across - granted_cluster_wide()) == [], "cluster-wide calls not in the cluster section"


def test_secret_values_never_leak(emulated: ThreadedCluster, operator_factory: Callable[[], KopfRunner]) -> None:
    storage_value = "AKIA-STORAGE-SECRET-VALUE-8d1f"
    token_value = "token-SECRET-VALUE-51c2e9"
    for name, key, value in (
        ("iris-storage", "AWS_SECRET_ACCESS_KEY", storage_value),
        ("iris-tokens", "caller-a", token_value),
    ):
        emulated.create(
            SECRETS,
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": name, "namespace": "ml"},
                "stringData": {key: value},
            },
        )
    spec_model = {**IRIS["spec"]["model"], "storageSecretRef": {"name": "iris-storage"}}
    runtime = {
        "auth": {"secretRef": {"name": "iris-tokens"}},
        "env": [
            {"name": "API_KEY", "valueFrom": {"secretKeyRef": {"name": "iris-storage", "key": "AWS_SECRET_ACCESS_KEY"}}}
        ],
    }
    with operator_factory() as runner:
        emulated.create(MD, md(model=spec_model, runtime=runtime))
        emulated.wait_for(lambda: ready(emulated), message="Ready")
        # A failing update, so Warning events and InvalidSpec status are produced too.
        emulated.patch(MD, "ml", "iris", {"spec": {"model": {"storageUri": "s3://Bad/x.pt"}}})
        emulated.wait_for(lambda: ready_reason(emulated) == "InvalidSpec", message="InvalidSpec")
        (deployment,) = owned(emulated, DEPLOYMENTS)
    pod = deployment["spec"]["template"]["spec"]
    assert {"name": "auth-tokens", "secret": {"secretName": "iris-tokens", "defaultMode": 0o440}} in pod["volumes"]
    texts = {
        "operator logs": runner.output,
        "events": repr(emulated.list(EVENTS, "ml")),
        "status": repr(status(emulated)),
        "children": repr([*owned(emulated, DEPLOYMENTS), *owned(emulated, "v1/services")]),
    }
    for where, text in texts.items():
        for value in (storage_value, token_value):
            assert value not in text, f"a Secret value appears in the {where}"
    assert not [r for r in requests(emulated) if r.resource == "secrets"], "the operator never reads Secrets"
