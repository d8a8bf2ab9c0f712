"""One pass at a time per object, and no pile-up behind a slow one: requests for a pass that come while one is under
way add a single pass after it, and a periodic resync never waits for an object whose pass is stuck (an admission
webhook that times out for one namespace's writes holds that object, not the others)."""

from __future__ import annotations

import asyncio
import copy
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from reconcile_kit import ObjectKey, body

from modeldeploy.config import OperatorConfig
from modeldeploy.controller import Controller
from modeldeploy.kube import KubeClient
from modeldeploy.kube.resources import Resource
from modeldeploy.reconcile import Observed

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
IRIS = ("ml", "iris")


def named(namespace: str, name: str) -> dict[str, Any]:
    md = copy.deepcopy(body())
    md["metadata"].update(namespace=namespace, name=name, uid=f"uid-{namespace}-{name}")
    return md


class Objects:
    """The watch caches: ModelDeployments without children."""

    def __init__(self, *keys: ObjectKey) -> None:
        self.objects = {key: named(*key) for key in keys}

    def model_deployment(self, key: ObjectKey) -> Mapping[str, Any] | None:
        return self.objects.get(key)

    def model_deployments(self) -> Sequence[ObjectKey]:
        return list(self.objects)

    def children(self, key: ObjectKey) -> Observed:
        return Observed()


class Cluster(KubeClient):
    """Every write goes through, except that writes in a namespace in ``stuck`` wait until it is released."""

    def __init__(self) -> None:
        self.stuck: dict[str, asyncio.Event] = {}
        self.waiting: Counter[str] = Counter()
        self.changed = asyncio.Condition()

    async def _pass(self, namespace: str) -> None:
        gate = self.stuck.get(namespace)
        if gate is not None:
            self.waiting[namespace] += 1
            async with self.changed:
                self.changed.notify_all()
            await gate.wait()

    async def until_waiting(self, namespace: str, count: int) -> None:
        """Until ``count`` writes in ``namespace`` wait (at most 5 s)."""
        async with asyncio.timeout(5), self.changed:
            await self.changed.wait_for(lambda: self.waiting[namespace] >= count)

    async def read_object(self, resource: Resource, namespace: str | None, name: str) -> dict[str, Any] | None:
        return None

    async def apply_object(self, manifest: Mapping[str, Any], *, field_manager: str | None = None) -> dict[str, Any]:
        await self._pass(manifest["metadata"]["namespace"])
        return {**manifest, "metadata": {**manifest["metadata"], "resourceVersion": "9"}}

    async def patch_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> dict[str, Any]:
        await self._pass(namespace)
        return {**named(namespace, name), "status": dict(status)}

    async def post_event(
        self, involved: Mapping[str, Any], *, type_: str, reason: str, message: str, now: datetime
    ) -> None:
        return None


class Counted(Controller):
    """Counts the passes per object (each observes the caches once, under the object's lock)."""

    passes: Counter[ObjectKey]

    def _observe(self, key: ObjectKey) -> Any:
        self.passes[key] += 1
        return super()._observe(key)


def controller(cluster: Cluster, *keys: ObjectKey) -> Counted:
    subject = Counted(config=OperatorConfig(), kube=cluster, clock=lambda: NOW, source=Objects(*keys))
    subject.passes = Counter()
    return subject


async def stuck_pass(subject: Counted, cluster: Cluster, key: ObjectKey = IRIS) -> asyncio.Task[None]:
    """Start a pass of ``key`` whose writes wait until ``cluster.stuck[namespace]`` is set; returns once it waits."""
    cluster.stuck[key[0]] = asyncio.Event()
    task = asyncio.create_task(subject.reconcile_quietly(key))
    await cluster.until_waiting(key[0], 1)
    return task


async def test_requests_during_a_pass_add_one_pass_after_it_not_one_each() -> None:
    cluster = Cluster()
    subject = controller(cluster, IRIS)
    try:
        first = await stuck_pass(subject, cluster)
        more = [asyncio.create_task(subject.reconcile_quietly(IRIS)) for _ in range(5)]  # events meanwhile
        await asyncio.sleep(0.05)
        cluster.stuck.pop("ml").set()
        await asyncio.wait_for(asyncio.gather(first, *more), timeout=5)
        assert subject.passes[IRIS] == 2  # the one under way, and one for everything that came meanwhile
        await subject.reconcile_quietly(IRIS)
        assert subject.passes[IRIS] == 3, "once nothing waits, a request starts a pass again"
    finally:
        await subject.close()


async def test_a_waiting_request_that_is_cancelled_leaves_the_next_one_to_wait_instead() -> None:
    cluster = Cluster()
    subject = controller(cluster, IRIS)
    try:
        first = await stuck_pass(subject, cluster)
        waiting = asyncio.create_task(subject.reconcile_quietly(IRIS))
        await asyncio.sleep(0.05)
        waiting.cancel()  # the operator shutting down a task, say
        await asyncio.gather(waiting, return_exceptions=True)
        later = asyncio.create_task(subject.reconcile_quietly(IRIS))
        await asyncio.sleep(0.05)
        cluster.stuck.pop("ml").set()
        await asyncio.wait_for(asyncio.gather(first, later), timeout=5)
        assert subject.passes[IRIS] == 2, "the later request was not dropped for the cancelled one"
    finally:
        await subject.close()


async def test_a_resync_reconciles_the_others_while_one_object_is_stuck() -> None:
    cluster = Cluster()
    others = [("default", f"m{i}") for i in range(20)]
    subject = controller(cluster, IRIS, *others)
    try:
        stuck = await stuck_pass(subject, cluster)
        await asyncio.wait_for(subject.resync(), timeout=5)  # does not wait for ml/iris
        assert all(subject.passes[key] == 1 for key in others), subject.passes
        assert subject.passes[IRIS] == 1, "the stuck object's pass is left to it: no second one queued behind it"
        cluster.stuck.pop("ml").set()
        await asyncio.wait_for(stuck, timeout=5)
    finally:
        await subject.close()


async def test_a_resync_runs_a_bounded_number_of_passes_at_once() -> None:
    cluster = Cluster()
    cluster.stuck["default"] = asyncio.Event()
    keys = [("default", f"m{i}") for i in range(20)]
    subject = controller(cluster, *keys)
    subject.resync_concurrency = 3
    try:
        resync = asyncio.create_task(subject.resync())
        await cluster.until_waiting("default", 3)
        await asyncio.sleep(0.05)
        assert cluster.waiting["default"] == 3 and sum(subject.passes.values()) == 3
        cluster.stuck.pop("default").set()
        await asyncio.wait_for(resync, timeout=5)
        assert all(subject.passes[key] == 1 for key in keys), subject.passes
    finally:
        await subject.close()
