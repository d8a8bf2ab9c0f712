"""The order in which the controller carries a plan out: children applied, then the status, then the deletes,
then Events. A delete cannot be undone, so it waits for the status that records the decision behind it (the old
stable's Deployment goes only once the promotion is recorded); a pass whose status write fails deletes nothing."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import pytest
from reconcile_kit import OneObject

from modeldeploy.config import OperatorConfig
from modeldeploy.controller import Controller
from modeldeploy.kube import ApiError, KubeClient
from modeldeploy.kube.resources import Resource
from modeldeploy.reconcile import ChildRef, Event, Observed, Plan

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
IRIS: dict[str, Any] = {
    "apiVersion": "modeldeploy.io/v1alpha1", "kind": "ModelDeployment",
    "metadata": {"name": "iris", "namespace": "ml", "uid": "uid-iris", "generation": 2, "resourceVersion": "5"},
    "spec": {"model": {"version": "2", "storageUri": "s3://models/iris/2/model.pt", "format": "TorchScript"}},
    "status": {"stableRevision": "old"},
}  # fmt: skip
NEW = {
    "apiVersion": "apps/v1", "kind": "Deployment",
    "metadata": {"name": "iris-new", "namespace": "ml"}, "spec": {"replicas": 4},
}  # fmt: skip
PROMOTION = Plan(
    apply=[NEW],
    status={"stableRevision": "new"},
    delete=[ChildRef("apps/v1", "Deployment", "ml", "iris-old", "uid-old")],
    events=[Event("Normal", "Promoted", "Revision new is now stable; revision old retires")],
)


class Cluster(KubeClient):
    """Records the writes; the status write fails with ``status_error`` when set."""

    def __init__(self, status_error: ApiError | None = None) -> None:
        self.status_error = status_error
        self.writes: list[str] = []

    async def read_object(self, resource: Resource, namespace: str | None, name: str) -> dict[str, Any] | None:
        return None

    async def apply_object(self, manifest: Mapping[str, Any], *, field_manager: str | None = None) -> dict[str, Any]:
        self.writes.append(f"apply {manifest['kind']} {manifest['metadata']['name']}")
        return {**manifest, "metadata": {**manifest["metadata"], "resourceVersion": "9"}}

    async def patch_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> dict[str, Any]:
        self.writes.append(f"status {dict(status)}")
        if self.status_error is not None:
            raise self.status_error
        return {**IRIS, "status": dict(status)}

    async def delete_object(
        self, resource: Resource, namespace: str | None, name: str, *, uid: str | None = None
    ) -> bool:
        self.writes.append(f"delete {resource.kind} {name}")
        return True

    async def post_event(
        self, involved: Mapping[str, Any], *, type_: str, reason: str, message: str, now: datetime
    ) -> None:
        self.writes.append(f"event {reason}")


async def execute(cluster: Cluster, plan: Plan) -> None:
    controller = Controller(config=OperatorConfig(), kube=cluster, clock=lambda: NOW, source=OneObject(IRIS))
    try:
        await controller._execute(IRIS, Observed(), plan)
    finally:
        await controller.close()


async def test_the_status_is_written_before_the_deletes_and_the_events_after_them() -> None:
    cluster = Cluster()
    await execute(cluster, PROMOTION)
    assert cluster.writes == [
        "apply Deployment iris-new",
        "status {'stableRevision': 'new'}",
        "delete Deployment iris-old",
        "event Promoted",
    ]


@pytest.mark.parametrize(
    "error",
    [
        ApiError(500, "InternalError", "etcdserver: leader changed"),
        ApiError(429, "TooManyRequests", "the server has received too many requests"),
        ApiError(422, "Invalid", "status: refused by the cluster's status policy"),
    ],
    ids=["busy", "overloaded", "refused"],
)
async def test_a_failed_status_write_deletes_nothing(error: ApiError) -> None:
    cluster = Cluster(status_error=error)
    with pytest.raises(ApiError):
        await execute(cluster, PROMOTION)
    assert [w for w in cluster.writes if w.startswith("delete")] == [], cluster.writes
    assert "event Promoted" not in cluster.writes
