"""A ModelDeployment deleted while the operator was not watching stays in kopf's caches (kopf lists again after a
pause or a lost watch, and keeps what the list no longer has). Reconciling it writes its children, then 404s on its
status; the controller must then forget it rather than retry every few seconds for ever."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import pytest
from reconcile_kit import OneObject

from modeldeploy.config import OperatorConfig
from modeldeploy.controller import Controller
from modeldeploy.kube import ApiError, KubeClient
from modeldeploy.kube.resources import Resource

KEY = ("ml", "iris")
NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
IRIS: dict[str, Any] = {
    "apiVersion": "modeldeploy.io/v1alpha1", "kind": "ModelDeployment",
    "metadata": {"name": "iris", "namespace": "ml", "uid": "uid-old", "generation": 1, "resourceVersion": "5"},
    "spec": {"model": {"version": "1", "storageUri": "s3://models/iris/1/model.pt", "format": "TorchScript"}},
}  # fmt: skip


class Cluster(KubeClient):
    """The API server: ``current`` is the ModelDeployment as it is there now (None: deleted)."""

    def __init__(self, current: dict[str, Any] | None) -> None:
        self.current = current
        self.writes: list[str] = []

    async def apply_object(self, manifest: Mapping[str, Any], *, field_manager: str | None = None) -> dict[str, Any]:
        self.writes.append(f"apply {manifest['kind']}")
        return {**manifest, "metadata": {**manifest["metadata"], "resourceVersion": "9"}}

    async def patch_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> dict[str, Any]:
        self.writes.append("status")
        if self.current is None:
            raise ApiError(404, "NotFound", f'modeldeployments.modeldeploy.io "{name}" not found')
        return {**self.current, "status": dict(status)}

    async def read_object(self, resource: Resource, namespace: str | None, name: str) -> dict[str, Any] | None:
        return self.current if resource.plural == "modeldeployments" else None

    async def post_event(
        self, involved: Mapping[str, Any], *, type_: str, reason: str, message: str, now: datetime
    ) -> None:
        self.writes.append(f"event {reason}")


async def test_a_deleted_object_still_cached_is_forgotten_after_its_first_404() -> None:
    cluster = Cluster(current=None)
    controller = Controller(config=OperatorConfig(), kube=cluster, clock=lambda: NOW, source=OneObject(IRIS))
    try:
        assert await controller.reconcile(KEY) is None
        first = list(cluster.writes)
        assert first[-1] == "status" and any(w.startswith("apply") for w in first)
        assert not controller._timers, "no retry"
        assert controller.metrics.registry.get_sample_value(
            "modeldeploy_reconcile_errors_total", {"reason": "NotFound"}) is None  # fmt: skip
        # The resync finds it in the cache again: nothing is written.
        assert await controller.reconcile(KEY) is None
        assert cluster.writes == first
    finally:
        await controller.close()


async def test_a_new_object_of_the_same_name_is_reconciled() -> None:
    cluster = Cluster(current=None)
    cache = OneObject(IRIS)
    controller = Controller(config=OperatorConfig(), kube=cluster, clock=lambda: NOW, source=cache)
    try:
        assert await controller.reconcile(KEY) is None
        recreated = copy.deepcopy(IRIS)
        recreated["metadata"]["uid"] = "uid-new"
        cluster.current, cache.md = recreated, recreated
        cluster.writes.clear()
        plan = await controller.reconcile(KEY)
        assert plan is not None and "status" in cluster.writes
    finally:
        await controller.close()


@pytest.mark.parametrize("reason", ["a child's namespace-scoped 404 while the object exists", "read fails"])
async def test_a_404_for_an_object_that_still_exists_is_retried(reason: str) -> None:
    cluster = Cluster(current=copy.deepcopy(IRIS))

    async def missing_status(namespace: str, name: str, status: Mapping[str, Any]) -> dict[str, Any]:
        raise ApiError(404, "NotFound", "the server could not find the requested resource")

    cluster.patch_status = missing_status  # type: ignore[method-assign]
    if reason == "read fails":

        async def unreadable(resource: Resource, namespace: str | None, name: str) -> dict[str, Any] | None:
            raise ApiError(503, "ServiceUnavailable", "etcd leader changed")

        cluster.read_object = unreadable  # type: ignore[method-assign]
    controller = Controller(config=OperatorConfig(), kube=cluster, clock=lambda: NOW, source=OneObject(IRIS))
    try:
        with pytest.raises(ApiError):
            await controller.reconcile(KEY)
        assert KEY in controller._timers, "retried as before"
        assert KEY not in controller._gone
    finally:
        await controller.close()
