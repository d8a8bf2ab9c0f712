"""The GPU snapshot for rollout pre-flights: read on demand through modeldeploy.kube, shared for a TTL, and
never an error for the caller (against the emulated API server)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx2 as httpx
import pytest

from modeldeploy.capacity import GpuCapacity
from modeldeploy.kube import ApiError, ApiUnreachableError, KubeClient
from modeldeploy.scheduling import GpuQuery
from modeldeploy.sim.cluster import Cluster, node_manifest, run_cluster

GPU = "nvidia.com/gpu"
QUERY = GpuQuery(
    namespace="ml",
    name="resnet",
    resource_name=GPU,
    gpus_per_pod=1,
    tolerations=({"key": GPU, "operator": "Exists", "effect": "NoSchedule"},),
)


def gpu_pod(name: str, node: str, gpus: int, namespace: str = "default") -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"nodeName": node, "containers": [{"name": "c", "resources": {"limits": {GPU: gpus}}}]},
    }


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    nodes = [node_manifest(f"gpu-{i}", gpus=2, taints=[{"key": GPU, "effect": "NoSchedule"}]) for i in range(3)]
    async with run_cluster(nodes=[*nodes, node_manifest("cpu-0")], tick=0.05) as running:
        for pod, phase in (
            (gpu_pod("a", "gpu-0", 2), "Running"),
            (gpu_pod("b", "gpu-1", 1, namespace="kube-system"), "Running"),
            (gpu_pod("done", "gpu-2", 2), "Succeeded"),
        ):
            created = running.emulator.create_object("v1/pods", pod)
            running.emulator.update_object("v1/pods", {**created, "status": {"phase": phase}}, subresource="status")
        yield running


@pytest.fixture
async def kube(cluster: Cluster) -> AsyncIterator[KubeClient]:
    client = KubeClient.connect(cluster.kubeconfig_path, field_manager="test")
    yield client
    await client.close()


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_reads_nodes_and_pods_page_by_page(cluster: Cluster, kube: KubeClient) -> None:
    capacity = GpuCapacity(kube, page_size=1)
    found = await capacity.free_gpus(QUERY)
    assert found is not None and (found.nodes, found.free, found.usable) == (3, 3, 3)
    lists = [(r.resource, r.namespace) for r in cluster.requests if r.verb == "list"]
    # One request per page: 4 nodes, then the 2 running pods (the finished one is filtered by the server).
    assert lists.count(("nodes", None)) == 4 and lists.count(("pods", None)) == 2


async def test_one_read_per_ttl_shared_by_every_query(kube: KubeClient) -> None:
    clock = Clock()
    capacity = GpuCapacity(kube, ttl=30, clock=clock)
    other = GpuQuery(namespace="other", name="bert", resource_name=GPU, gpus_per_pod=2, tolerations=QUERY.tolerations)
    results = await asyncio.gather(*(capacity.free_gpus(q) for q in [QUERY, other] * 5))
    assert capacity.reads == 1, "concurrent callers share one read"
    assert {r.usable for r in results if r is not None} == {3, 2}
    clock.now += 29
    await capacity.free_gpus(QUERY)
    assert capacity.reads == 1
    clock.now += 2
    await capacity.free_gpus(QUERY)
    assert capacity.reads == 2
    capacity.invalidate()
    await capacity.free_gpus(QUERY)
    assert capacity.reads == 3


class Forbidden:
    """A client whose cluster-wide lists are forbidden (no RBAC for nodes)."""

    def __init__(self) -> None:
        self.calls = 0

    async def list_pages(self, *args: Any, **kwargs: Any) -> AsyncIterator[list[dict[str, Any]]]:
        self.calls += 1
        raise ApiError(403, "Forbidden", 'nodes is forbidden: cannot list resource "nodes" at the cluster scope')
        yield []  # pragma: no cover - makes this an async generator


async def test_a_forbidden_read_is_skipped_with_one_warning_per_ttl(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    client = Forbidden()
    capacity = GpuCapacity(client, ttl=30, clock=clock)  # type: ignore[arg-type]
    with caplog.at_level(logging.WARNING, logger="modeldeploy"):
        assert await capacity.free_gpus(QUERY) is None
        assert await capacity.free_gpus(QUERY) is None
    assert client.calls == 1, "the failure is remembered for the TTL"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "403" in warnings[0] and "list on nodes and pods" in warnings[0]
    clock.now += 31
    assert await capacity.free_gpus(QUERY) is None and client.calls == 2


class NoAnswer(Forbidden):
    """A client whose lists get no answer (the API server restarting)."""

    async def list_pages(self, *args: Any, **kwargs: Any) -> AsyncIterator[list[dict[str, Any]]]:
        self.calls += 1
        raise ApiUnreachableError("GET", "/api/v1/nodes", httpx.ConnectError("[Errno 111] Connection refused"))
        yield []  # pragma: no cover - makes this an async generator


async def test_no_answer_is_skipped_with_a_warning_that_says_so(caplog: pytest.LogCaptureFixture) -> None:
    capacity = GpuCapacity(NoAnswer(), ttl=30, clock=Clock())  # type: ignore[arg-type]
    with caplog.at_level(logging.WARNING, logger="modeldeploy"):
        assert await capacity.free_gpus(QUERY) is None
    [warning] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "the API server did not answer GET /api/v1/nodes (ConnectError: [Errno 111] Connection refused)" in warning
    assert "Traceback" not in caplog.text


async def test_an_unreachable_api_server_is_skipped(cluster: Cluster) -> None:
    client = KubeClient.connect(cluster.kubeconfig_path, field_manager="test", timeout=2)
    await client.close()  # Every request now fails in the HTTP layer.
    capacity = GpuCapacity(client)
    assert await capacity.free_gpus(QUERY) is None
