"""Nodes in the emulated cluster: GPU scheduling of pods, field selectors on pods and nodes, chunked lists."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from modeldeploy.sim.cluster import Cluster, add_node, node_manifest, run_cluster

DEPLOYMENTS = "apps/v1/deployments"
PODS = "v1/pods"
GPU = "nvidia.com/gpu"


def gpu_deployment(name: str, replicas: int, gpus: int, **pod_spec: Any) -> dict[str, Any]:
    container = {"name": "main", "image": "model:1", "resources": {"limits": {GPU: gpus}}}
    return {
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [container], **pod_spec}},
        },
    }


def pods(cluster: Cluster, app: str) -> list[dict[str, Any]]:
    return cluster.emulator.list_objects(PODS, "default", label_selector=f"app={app}")


def bound(cluster: Cluster, app: str) -> list[str]:
    return sorted(str(p["spec"].get("nodeName") or "") for p in pods(cluster, app))


@pytest.fixture
async def gpu_cluster() -> AsyncIterator[Cluster]:
    nodes = [
        node_manifest("gpu-a", gpus=2, labels={"pool": "l4"}),
        node_manifest("gpu-b", gpus=1, labels={"pool": "a100"}, taints=[{"key": "team", "effect": "NoSchedule"}]),
        node_manifest("cpu-a"),
    ]
    async with run_cluster(nodes=nodes, ready_delay=0.05, tick=0.02) as running:
        yield running


async def test_pods_are_bound_where_gpus_are_free_and_wait_otherwise(gpu_cluster: Cluster, eventually: Any) -> None:
    cluster = gpu_cluster
    cluster.emulator.create_object(DEPLOYMENTS, gpu_deployment("web", 3, 1), namespace="default")
    # gpu-a holds two; gpu-b's taint is not tolerated; the third pod waits, Unschedulable.
    await eventually(lambda: bound(cluster, "web") == ["", "gpu-a", "gpu-a"])
    pending = next(p for p in pods(cluster, "web") if not p["spec"].get("nodeName"))
    await eventually(
        lambda: (
            (cluster.emulator.get_object(PODS, "default", pending["metadata"]["name"]) or {})
            .get("status", {})
            .get("conditions")
        )
    )
    status = (cluster.emulator.get_object(PODS, "default", pending["metadata"]["name"]) or {})["status"]
    assert status["phase"] == "Pending"
    [scheduled] = status["conditions"]
    assert (scheduled["type"], scheduled["status"], scheduled["reason"]) == ("PodScheduled", "False", "Unschedulable")
    assert GPU in scheduled["message"]
    await eventually(
        lambda: (
            (cluster.emulator.get_object(DEPLOYMENTS, "default", "web") or {}).get("status", {}).get("readyReplicas")
            == 2
        )
    )
    # A new node with room: the waiting pod is bound there and starts.
    add_node(cluster.emulator, node_manifest("gpu-c", gpus=4))
    await eventually(lambda: bound(cluster, "web") == ["gpu-a", "gpu-a", "gpu-c"])
    await eventually(
        lambda: (
            (cluster.emulator.get_object(DEPLOYMENTS, "default", "web") or {}).get("status", {}).get("readyReplicas")
            == 3
        )
    )


async def test_node_selector_and_tolerations_choose_the_node(gpu_cluster: Cluster, eventually: Any) -> None:
    cluster = gpu_cluster
    body = gpu_deployment(
        "pinned", 1, 1, nodeSelector={"pool": "a100"}, tolerations=[{"key": "team", "operator": "Exists"}]
    )
    cluster.emulator.create_object(DEPLOYMENTS, body, namespace="default")
    await eventually(lambda: bound(cluster, "pinned") == ["gpu-b"])
    # CPU pods go anywhere that is untainted (first by name).
    cpu = gpu_deployment("cpu", 1, 0)
    cpu["spec"]["template"]["spec"]["containers"][0]["resources"] = {}
    cluster.emulator.create_object(DEPLOYMENTS, cpu, namespace="default")
    await eventually(lambda: bound(cluster, "cpu") == ["cpu-a"])


async def test_without_nodes_every_pod_runs_on_the_implicit_node(cluster: Cluster, eventually: Any) -> None:
    cluster.emulator.create_object(DEPLOYMENTS, gpu_deployment("web", 2, 8), namespace="default")
    await eventually(lambda: bound(cluster, "web") == ["sim-node", "sim-node"])


async def test_field_selectors_and_chunked_lists(gpu_cluster: Cluster, eventually: Any) -> None:
    cluster = gpu_cluster
    cluster.emulator.create_object(DEPLOYMENTS, gpu_deployment("web", 3, 1), namespace="default")
    await eventually(lambda: bound(cluster, "web") == ["", "gpu-a", "gpu-a"])
    async with aiohttp.ClientSession(cluster.url) as http:

        async def get(path: str, **params: str) -> tuple[int, dict[str, Any]]:
            async with http.get(path, params=params) as response:
                return response.status, await response.json()

        code, body = await get("/api/v1/pods", fieldSelector="spec.nodeName=gpu-a")
        assert code == 200 and len(body["items"]) == 2
        code, body = await get("/api/v1/pods", fieldSelector="spec.nodeName=,status.phase!=Succeeded")
        assert code == 200 and len(body["items"]) == 1
        code, body = await get("/api/v1/nodes", fieldSelector="spec.unschedulable!=true")
        assert code == 200 and len(body["items"]) == 3
        code, body = await get("/api/v1/nodes", fieldSelector="spec.nodeName=x")
        assert code == 400 and "field label not supported" in body["message"]
        # Chunks of two, following the continue token, return every node exactly once.
        names: list[str] = []
        params = {"limit": "2"}
        for _ in range(5):
            code, body = await get("/api/v1/nodes", **params)
            assert code == 200 and len(body["items"]) <= 2
            names.extend(item["metadata"]["name"] for item in body["items"])
            token = body["metadata"].get("continue")
            if not token:
                break
            params = {"limit": "2", "continue": token}
        assert names == ["cpu-a", "gpu-a", "gpu-b"]
        code, body = await get("/api/v1/nodes", limit="2", **{"continue": "not-a-token"})
        assert code == 400 and "continue" in body["message"]
