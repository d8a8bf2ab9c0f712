"""The GPU pre-flight of a rollout, with the real operator against an emulated cluster that has GPU nodes: it reads
Nodes and Pods on demand, reports a shortage once (Warning ``InsufficientGPUs``) and shows the result in
``status.rollout.gpuPreflight``."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from kopf.testing import KopfRunner

from modeldeploy.sim.cluster import add_node, node_manifest
from modeldeploy.sim.emulator import RequestRecord

from .conftest import EVENTS, MD, PODS, ThreadedCluster

pytestmark = pytest.mark.component

GPU = "nvidia.com/gpu"
RESNET: dict[str, Any] = {
    "apiVersion": "modeldeploy.io/v1alpha1",
    "kind": "ModelDeployment",
    "metadata": {"name": "resnet", "namespace": "ml"},
    "spec": {
        "model": {"version": "1", "storageUri": "s3://models/resnet/1/model.pt", "format": "TorchScript"},
        "runtime": {"gpu": {"count": 1}, "nodeSelector": {"pool": "l4"}},
        "replicas": 2,
        "rollout": {
            "strategy": "Canary",
            "canary": {"steps": [{"setWeight": 50}, {"pause": {}}]},
            "progressDeadlineSeconds": 600,
        },
    },
}
V2 = {"spec": {"model": {"version": "2", "storageUri": "s3://models/resnet/2/model.pt"}}}


def add_nodes(emulated: ThreadedCluster, *nodes: dict[str, Any]) -> None:
    for node in nodes:
        emulated.call(add_node, emulated.cluster.emulator, node)


def rollout(emulated: ThreadedCluster) -> dict[str, Any]:
    return dict(((emulated.get(MD, "ml", "resnet") or {}).get("status") or {}).get("rollout") or {})


def preflight(emulated: ThreadedCluster) -> dict[str, Any]:
    return dict(rollout(emulated).get("gpuPreflight") or {})


def progressing(emulated: ThreadedCluster) -> str:
    conditions = ((emulated.get(MD, "ml", "resnet") or {}).get("status") or {}).get("conditions") or []
    return next((str(c.get("message")) for c in conditions if c.get("type") == "Progressing"), "")


def gpu_warnings(emulated: ThreadedCluster) -> list[dict[str, Any]]:
    return [e for e in emulated.list(EVENTS, "ml") if e["reason"] == "InsufficientGPUs"]


def stable_pods_running(emulated: ThreadedCluster) -> bool:
    pods = emulated.list(PODS, "ml", "modeldeploy.io/model-deployment=resnet")
    stable = rollout(emulated).get("stableRevision")
    revisions = [p["metadata"]["labels"].get("modeldeploy.io/revision") for p in pods if p["spec"].get("nodeName")]
    return bool(stable) and revisions.count(stable) == 2


def cluster_reads(emulated: ThreadedCluster) -> list[str]:
    """The operator's own list calls across all namespaces for the GPU pre-flight (kopf's watches are not among
    them, nor the audits of its caches, which list only the pods it manages)."""
    records: Sequence[RequestRecord] = emulated.call(lambda: list(emulated.cluster.requests))
    return [
        r.resource
        for r in records
        if r.verb == "list"
        and r.namespace is None
        and r.resource in ("nodes", "pods")
        and r.user_agent.startswith("modeldeploy")
        and not r.label_selector.startswith("app.kubernetes.io/managed-by")
    ]


def test_a_canary_that_needs_more_gpus_than_free_is_reported_once(
    emulated: ThreadedCluster, operator_factory: Callable[[], KopfRunner]
) -> None:
    # Two L4 GPUs, both taken by the stable's 2 pods; the canary at 50% adds 1 pod (replica-ratio routing keeps
    # the stable's 2 until the canary is ready). A bigger node in another pool does not count (node selector).
    add_nodes(
        emulated,
        node_manifest("l4-a", gpus=2, labels={"pool": "l4"}, taints=[{"key": GPU, "effect": "NoSchedule"}]),
        node_manifest("a100-a", gpus=8, labels={"pool": "a100"}),
    )
    with operator_factory() as runner:
        emulated.create(MD, copy.deepcopy(RESNET))
        emulated.wait_for(lambda: stable_pods_running(emulated), message="stable pods on l4-a")
        assert cluster_reads(emulated) == [], "no cluster read without a rollout"
        emulated.patch(MD, "ml", "resnet", V2)
        emulated.wait_for(lambda: preflight(emulated).get("result") == "Insufficient", message="pre-flight result")
        record = preflight(emulated)
        assert record["revision"] == rollout(emulated)["canaryRevision"]
        assert (record["gpusPerPod"], record["extraPods"], record["gpusNeeded"], record["gpusFree"]) == (1, 1, 1, 0)
        time.sleep(2.5)  # Several resyncs (1 s) and pod events: the warning is not repeated.
        [warning] = gpu_warnings(emulated)
        assert warning["type"] == "Warning" and "needs 1 GPUs" in warning["message"]
        assert "only 0 are free" in warning["message"]
        assert preflight(emulated) == record
        reads = cluster_reads(emulated)
        assert reads.count("nodes") == 1 and reads.count("pods") == 1, reads
        # The rollout is not held back: the canary's pod waits for a GPU.
        canary_pods = emulated.list(PODS, "ml", f"modeldeploy.io/revision={record['revision']}")
        assert canary_pods and not any(p["spec"].get("nodeName") for p in canary_pods)
        assert rollout(emulated)["phase"] == "Progressing"
        # The conditions say why, in the scheduler's words.
        why = "1 pod cannot be scheduled: 0/2 nodes are available: Insufficient nvidia.com/gpu."
        emulated.wait_for(lambda: progressing(emulated).endswith(why), message="why the canary waits")
    assert "Traceback" not in runner.output, runner.output


def test_a_canary_that_fits_is_not_reported(
    emulated: ThreadedCluster, operator_factory: Callable[[], KopfRunner]
) -> None:
    add_nodes(
        emulated,
        node_manifest("l4-a", gpus=2, labels={"pool": "l4"}),
        node_manifest("l4-b", gpus=2, labels={"pool": "l4"}),
    )
    with operator_factory() as runner:
        emulated.create(MD, copy.deepcopy(RESNET))
        emulated.wait_for(lambda: stable_pods_running(emulated), message="stable pods bound")
        emulated.patch(MD, "ml", "resnet", V2)
        emulated.wait_for(lambda: preflight(emulated).get("result") == "Sufficient", message="pre-flight result")
        assert (preflight(emulated)["gpusNeeded"], preflight(emulated)["gpusFree"]) == (1, 2)
        emulated.wait_for(lambda: rollout(emulated).get("phase") == "Paused", message="canary at 50%, paused")
        assert gpu_warnings(emulated) == []
    assert "Traceback" not in runner.output, runner.output


def test_a_forbidden_read_leaves_the_check_unknown_and_the_rollout_goes_on(
    emulated: ThreadedCluster, operator_factory: Callable[[], KopfRunner]
) -> None:
    """Without RBAC to list Nodes the pre-flight is skipped with a logged warning; nothing is blocked."""
    add_nodes(emulated, node_manifest("l4-a", gpus=4, labels={"pool": "l4"}))
    emulated.call(emulated.cluster.emulator.forbid, "v1/nodes", "list")
    with operator_factory() as runner:
        emulated.create(MD, copy.deepcopy(RESNET))
        emulated.wait_for(lambda: stable_pods_running(emulated), message="stable pods bound")
        emulated.patch(MD, "ml", "resnet", V2)
        emulated.wait_for(lambda: preflight(emulated).get("result") == "Unknown", message="Unknown result")
        emulated.wait_for(lambda: rollout(emulated).get("phase") == "Paused", message="the rollout goes on")
        assert gpu_warnings(emulated) == []
        assert "could not be read" in preflight(emulated)["message"]
    assert "GPU pre-flight skipped" in runner.output and "Forbidden" in runner.output, runner.output
    assert "Traceback" not in runner.output, runner.output
