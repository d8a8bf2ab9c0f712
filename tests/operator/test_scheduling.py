"""Where a ModelDeployment's pods could run and how many GPUs are free there (pure)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modeldeploy.scheduling import (
    ClusterSnapshot,
    GpuQuery,
    NodeInfo,
    PodUse,
    Taint,
    free_gpus,
    node_fits,
    parse_count,
    parse_node,
    parse_pod,
    pod_requests,
    snapshot_of,
    tolerates,
)
from modeldeploy.sim.cluster import node_manifest

GPU = "nvidia.com/gpu"
GPU_TOLERATION = {"key": GPU, "operator": "Exists", "effect": "NoSchedule"}


def pod(
    node: str | None, gpus: int, *, namespace: str = "ml", labels: dict[str, str] | None = None, phase: str = "Running"
) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"name": "server", "resources": {"limits": {GPU: gpus}}}]}
    if node:
        spec["nodeName"] = node
    return {
        "metadata": {"name": "p", "namespace": namespace, "labels": labels or {}},
        "spec": spec,
        "status": {"phase": phase},
    }


def query(**changes: Any) -> GpuQuery:
    values: dict[str, Any] = {
        "namespace": "ml",
        "name": "resnet",
        "resource_name": GPU,
        "gpus_per_pod": 1,
        "tolerations": (GPU_TOLERATION,),
        "keep_revisions": frozenset({"stable"}),
    }
    values.update(changes)
    return GpuQuery(**values)


@pytest.mark.parametrize(
    ("value", "count"),
    # A number is a quantity like its string form (2.5 == "2500m"): whole pods only, rounded down.
    [
        ("8", 8),
        (8, 8),
        ("8000m", 8),
        ("1500m", 1),
        ("1k", 1000),
        ("2Ki", 2048),
        (" 4 ", 4),
        ("-2", 0),
        ("eight", 0),
        ("8x", 0),
        (True, 0),
        (None, 0),
        (2.5, 2),
        ("2.5", 2),
        ("1e1", 10),
        ("", 0),
    ],
)
def test_parse_count(value: object, count: int) -> None:
    assert parse_count(value) == count


def test_parse_node() -> None:
    taints = [{"key": GPU, "effect": "NoSchedule"}, {"key": "x", "value": "y", "effect": "NoExecute"}]
    node = node_manifest("gpu-1", gpus=4, labels={"pool": "a"}, taints=taints)
    info = parse_node(node)
    assert info is not None and info.name == "gpu-1" and info.allocatable == {GPU: 4} and info.schedulable
    assert info.labels["pool"] == "a" and info.taints == (Taint(GPU, "", "NoSchedule"), Taint("x", "y", "NoExecute"))
    assert parse_node(node_manifest("cpu-1")) is None, "no extended resource: not a GPU node"
    assert parse_node(node_manifest("cpu-1"), extended_only=False) is not None
    cordoned = parse_node(node_manifest("gpu-2", gpus=1, unschedulable=True))
    not_ready = parse_node(node_manifest("gpu-3", gpus=1, ready=False))
    assert cordoned is not None and not cordoned.schedulable
    assert not_ready is not None and not not_ready.schedulable
    assert parse_node({"metadata": {}, "status": {"allocatable": {GPU: "1"}}}) is None, "a node without a name"
    assert parse_node({"metadata": {"name": "x"}, "status": {"allocatable": "junk"}}) is None


def test_pod_requests() -> None:
    spec = {
        "containers": [
            {"resources": {"limits": {GPU: "2", "cpu": "4"}}},
            {"resources": {"requests": {GPU: 1}, "limits": {GPU: 3}}},  # requests win over limits
            {},
        ],
        "initContainers": [{"resources": {"limits": {GPU: 5, "example.com/fpga": 1}}}],
        "overhead": {"example.com/fpga": "1"},
    }
    assert pod_requests(spec) == {GPU: 5, "example.com/fpga": 2}
    assert pod_requests({"containers": [{"resources": {"requests": {"cpu": "1"}}}]}) == {}


def test_parse_pod() -> None:
    record = parse_pod(
        pod("n1", 2, labels={"modeldeploy.io/model-deployment": "resnet", "modeldeploy.io/revision": "abc"})
    )
    assert record == PodUse("ml", "n1", {GPU: 2}, "resnet", "abc")
    assert parse_pod(pod(None, 2)) is None, "a pending pod holds nothing"
    assert parse_pod(pod("n1", 2, phase="Succeeded")) is None
    assert parse_pod(pod("n1", 2, phase="Failed")) is None
    assert parse_pod(pod("n1", 0)) is None


@pytest.mark.parametrize(
    ("toleration", "taint", "tolerated"),
    [
        ({"key": "a", "operator": "Exists"}, Taint("a", "x", "NoSchedule"), True),
        ({"key": "a", "value": "x"}, Taint("a", "x", "NoSchedule"), True),  # operator defaults to Equal
        ({"key": "a", "value": "y"}, Taint("a", "x", "NoSchedule"), False),
        ({"key": "a", "operator": "Exists", "effect": "NoExecute"}, Taint("a", "", "NoSchedule"), False),
        ({"operator": "Exists"}, Taint("anything", "v", "NoExecute"), True),  # empty key + Exists: everything
        ({"operator": "Equal"}, Taint("a", "", "NoSchedule"), False),
        ({"key": "b", "operator": "Exists"}, Taint("a", "", "NoSchedule"), False),
    ],
)
def test_tolerates(toleration: dict[str, Any], taint: Taint, tolerated: bool) -> None:
    assert tolerates(toleration, taint) is tolerated


def test_node_fits() -> None:
    node = NodeInfo(
        "gpu-1",
        {"pool": "a", "zone": "z1", "gpus": "8"},
        (Taint(GPU, "", "NoSchedule"), Taint("soft", "", "PreferNoSchedule")),
        {GPU: 8},
    )
    tolerations = [GPU_TOLERATION]
    assert node_fits(node, node_selector={"pool": "a"}, tolerations=tolerations)
    assert not node_fits(node, node_selector={"pool": "b"}, tolerations=tolerations)
    assert not node_fits(node, node_selector={}, tolerations=()), "the GPU taint is not tolerated"

    def affinity(*terms: dict[str, Any]) -> dict[str, Any]:
        return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": list(terms)}}}

    def expr(key: str, op: str, *values: str) -> dict[str, Any]:
        return {"matchExpressions": [{"key": key, "operator": op, "values": list(values)}]}

    fits = {
        "in": affinity(expr("zone", "In", "z1", "z2")),
        "or": affinity(expr("zone", "In", "z9"), expr("pool", "Exists")),
        "notin": affinity(expr("zone", "NotIn", "z2")),
        "gt": affinity(expr("gpus", "Gt", "4")),
        "absent": affinity(expr("spot", "DoesNotExist")),
        "name": affinity({"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["gpu-1"]}]}),
        "preferred-only": {
            "nodeAffinity": {
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {"weight": 1, "preference": expr("zone", "In", "z9")}
                ]
            }
        },
        "pod-anti-affinity-ignored": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": []}},
    }
    misses = {
        "in": affinity(expr("zone", "In", "z2")),
        "lt": affinity(expr("gpus", "Lt", "4")),
        "gt-not-a-number": affinity(expr("zone", "Gt", "4")),
        "exists": affinity(expr("spot", "Exists")),
        "empty-term": affinity({}),
        "no-terms": affinity(),
        "name": affinity({"matchFields": [{"key": "metadata.name", "operator": "NotIn", "values": ["gpu-1"]}]}),
        "unknown-operator": affinity(expr("zone", "Like", "z1")),
    }
    for name, value in fits.items():
        assert node_fits(node, node_selector={}, tolerations=tolerations, affinity=value), name
    for name, value in misses.items():
        assert not node_fits(node, node_selector={}, tolerations=tolerations, affinity=value), name


def snapshot(nodes: list[dict[str, Any]], pods: list[dict[str, Any]]) -> ClusterSnapshot:
    return snapshot_of(nodes, pods)


OWN = {"modeldeploy.io/model-deployment": "resnet"}


@pytest.mark.parametrize(
    ("nodes", "pods", "changes", "expected"),
    [
        # Free = allocatable - requested by pods bound there.
        ([node_manifest("a", gpus=4)], [pod("a", 3)], {}, (1, 1, 1)),
        # The stable's pods hold their GPUs; the canary's count as free; another MD's with the same name
        # in another namespace holds its GPUs.
        (
            [node_manifest("a", gpus=4)],
            [
                pod("a", 1, labels={**OWN, "modeldeploy.io/revision": "stable"}),
                pod("a", 1, labels={**OWN, "modeldeploy.io/revision": "canary"}),
                pod("a", 1, labels=OWN, namespace="other"),
            ],
            {},
            (1, 2, 2),
        ),
        # Whole pods per node: 3 + 1 free GPUs hold one 2-GPU pod.
        (
            [node_manifest("a", gpus=4), node_manifest("b", gpus=2)],
            [pod("a", 1), pod("b", 1)],
            {"gpus_per_pod": 2},
            (2, 4, 2),
        ),
        # Node selector, taints, readiness, cordon and other resources decide which nodes count.
        (
            [node_manifest("a", gpus=4, labels={"pool": "l4"}), node_manifest("b", gpus=4)],
            [],
            {"node_selector": {"pool": "l4"}},
            (1, 4, 4),
        ),
        (
            [node_manifest("a", gpus=4, taints=[{"key": "team", "value": "x", "effect": "NoSchedule"}])],
            [],
            {},
            (0, 0, 0),
        ),
        (
            [node_manifest("a", gpus=4, taints=[{"key": "team", "value": "x", "effect": "NoSchedule"}])],
            [],
            {"tolerations": (GPU_TOLERATION, {"key": "team", "value": "x"})},
            (1, 4, 4),
        ),
        ([node_manifest("a", gpus=4, ready=False), node_manifest("b", gpus=2, unschedulable=True)], [], {}, (0, 0, 0)),
        ([node_manifest("a", gpus=4, resource_name="amd.com/gpu")], [], {}, (1, 0, 0)),
        ([node_manifest("a", gpus=4, resource_name="amd.com/gpu")], [], {"resource_name": "amd.com/gpu"}, (1, 4, 4)),
        # Over-committed (allocatable shrank under running pods): 0, not negative.
        ([node_manifest("a", gpus=1), node_manifest("b", gpus=2)], [pod("a", 2)], {}, (2, 2, 2)),
        # Pods on nodes that are not GPU nodes, pending and finished pods change nothing.
        (
            [node_manifest("a", gpus=2)],
            [pod("cpu-node", 2), pod(None, 2), pod("a", 2, phase="Succeeded")],
            {},
            (1, 2, 2),
        ),
    ],
)
def test_free_gpus(
    nodes: list[dict[str, Any]], pods: list[dict[str, Any]], changes: dict[str, Any], expected: tuple[int, int, int]
) -> None:
    found = free_gpus(snapshot(nodes, pods), query(**changes))
    assert (found.nodes, found.free, found.usable) == expected


@settings(max_examples=50, deadline=None)
@given(
    allocatable=st.lists(st.integers(0, 8), min_size=1, max_size=5),
    placed=st.lists(
        st.tuples(st.integers(0, 4), st.integers(1, 4), st.sampled_from(["other", "stable", "canary"])), max_size=10
    ),
    per_pod=st.integers(1, 4),
)
def test_free_gpus_properties(allocatable: list[int], placed: list[tuple[int, int, str]], per_pod: int) -> None:
    nodes = [node_manifest(f"n{i}", gpus=g) for i, g in enumerate(allocatable)]
    pods = []
    for index, gpus, owner in placed:
        labels = {} if owner == "other" else {**OWN, "modeldeploy.io/revision": owner}
        pods.append(pod(f"n{index % len(allocatable)}", gpus, labels=labels))
    q = query(gpus_per_pod=per_pod)
    found = free_gpus(snapshot(nodes, pods), q)
    assert 0 <= found.usable <= found.free <= sum(allocatable)
    assert found.usable % per_pod == 0
    # The canary's own pods never reduce what the pre-flight sees as free.
    without_canary = [p for p, (_, _, owner) in zip(pods, placed, strict=True) if owner != "canary"]
    assert free_gpus(snapshot(nodes, without_canary), q) == found
    # One more unrelated pod never frees GPUs.
    busier = free_gpus(snapshot(nodes, [*pods, pod("n0", 1)]), q)
    assert busier.free <= found.free and busier.usable <= found.usable
