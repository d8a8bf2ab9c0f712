"""The cluster's GPUs for the rollout pre-flight: Nodes and Pods read on demand, shared for a short time.

No watch: the operator must stay small with many ModelDeployments, and a cluster-wide watch of Nodes and of all
Pods would hold every one of them in memory. Instead ``GpuCapacity.free_gpus`` reads the cluster only when a
pre-flight is due (``reconcile.gpu_query``: a GPU model whose rollout starts), keeps a ``ClusterSnapshot`` of
small records (GPU nodes, and the pods bound to them that request extended resources) for ``ttl`` seconds, and
answers every ModelDeployment from it. Concurrent callers share one read. Pods are read a page at a time and
only their records are kept.

A read that fails (RBAC forbids listing Nodes or Pods cluster-wide, the API server is unavailable) is logged
once per ``ttl`` and remembered for ``ttl`` too: callers get None, the pre-flight reports ``Unknown`` and the
rollout goes on. Nothing here ever raises into a reconcile.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from modeldeploy.kube import ApiError, ApiUnreachableError, KubeClient
from modeldeploy.kube.resources import NODES, PODS
from modeldeploy.scheduling import (
    ClusterSnapshot,
    GpuFree,
    GpuQuery,
    NodeInfo,
    PodUse,
    free_gpus,
    parse_node,
    parse_pod,
)

logger = logging.getLogger("modeldeploy")

DEFAULT_TTL_SECONDS = 30.0
RUNNING_PODS = "status.phase!=Succeeded,status.phase!=Failed"
"""Field selector of the pods that may hold resources (the scheduler's own filter)."""


@dataclass
class GpuCapacity:
    """Free GPUs per query, from a cluster snapshot shared by all ModelDeployments for ``ttl`` seconds."""

    kube: KubeClient
    ttl: float = DEFAULT_TTL_SECONDS
    clock: Callable[[], float] = time.monotonic
    page_size: int = 500
    reads: int = 0
    """How many snapshots were read from the API server (for tests and metrics)."""
    _snapshot: ClusterSnapshot | None = None
    _failed: bool = False
    _taken_at: float = float("-inf")
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def free_gpus(self, query: GpuQuery) -> GpuFree | None:
        """Free GPUs for ``query``'s pods; None when the cluster could not be read."""
        snapshot = await self.snapshot()
        return None if snapshot is None else free_gpus(snapshot, query)

    async def snapshot(self) -> ClusterSnapshot | None:
        """The current snapshot, read again once it is older than ``ttl``; None while reads fail."""
        if self._fresh():
            return self._snapshot
        async with self._lock:
            if self._fresh():  # Another caller read it while this one waited.
                return self._snapshot
            try:
                self._snapshot, self._failed = await self._read(), False
            except ApiUnreachableError as error:
                self._fail(str(error))
            except ApiError as error:
                self._fail(f"the API server answered {error}")
            except Exception as error:  # A malformed object must never stop a reconcile.
                logger.exception("GPU pre-flight: reading the cluster failed")
                self._fail(f"{type(error).__name__}: {error}")
            self._taken_at = self.clock()
            return self._snapshot

    def _fail(self, why: str) -> None:
        self._snapshot, self._failed = None, True
        logger.warning(
            "GPU pre-flight skipped for %.0fs: could not list Nodes and Pods cluster-wide (%s); the operator needs "
            "list on nodes and pods (charts/modeldeploy/rbac/rules.yaml, cluster section)",
            self.ttl,
            why,
        )

    def invalidate(self) -> None:
        """Forget the snapshot (the next call reads the cluster again)."""
        self._snapshot, self._failed, self._taken_at = None, False, float("-inf")

    def _fresh(self) -> bool:
        return (self._snapshot is not None or self._failed) and self.clock() - self._taken_at < self.ttl

    async def _read(self) -> ClusterSnapshot:
        self.reads += 1
        nodes: list[NodeInfo] = []
        async for page in self.kube.list_pages(NODES, limit=self.page_size):
            nodes.extend(n for n in (parse_node(obj) for obj in page) if n is not None)
        names = {n.name for n in nodes}
        pods: list[PodUse] = []
        if names:
            async for page in self.kube.list_pages(PODS, None, field_selector=RUNNING_PODS, limit=self.page_size):
                pods.extend(p for p in (parse_pod(obj) for obj in page) if p is not None and p.node in names)
        return ClusterSnapshot(tuple(nodes), tuple(pods))
