"""A field the API server drops (its feature gate off, ``drift.GATED_FIELDS``): the controller reports it once, does
not apply the child again on every pass to put it back, and tries once more after ``DROPPED_RECHECK_SECONDS`` in
case the cluster has been upgraded meanwhile."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from reconcile_kit import OneObject, Seconds, body

from modeldeploy.config import OperatorConfig
from modeldeploy.controller import DROPPED_RECHECK_SECONDS, Controller
from modeldeploy.drift import stamp
from modeldeploy.kube import KubeClient
from modeldeploy.kube.resources import Resource
from modeldeploy.reconcile import Observed, Plan

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
IRIS = body()
HPA = stamp({
    "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
    "metadata": {
        "name": "iris", "namespace": "ml",
        "ownerReferences": [{"apiVersion": "modeldeploy.io/v1alpha1", "kind": "ModelDeployment", "name": "iris",
                             "uid": IRIS["metadata"]["uid"], "controller": True}],
    },
    "spec": {"maxReplicas": 4, "behavior": {"scaleDown": {"tolerance": "0.05"}, "scaleUp": {"tolerance": "0"}}},
})  # fmt: skip


class Cluster(KubeClient):
    """Stores what is applied, dropping the tolerances while ``gate_on`` is false."""

    def __init__(self) -> None:
        self.gate_on = False
        self.stored: dict[str, Any] | None = None
        self.writes: list[str] = []

    async def read_object(self, resource: Resource, namespace: str | None, name: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.stored)

    async def apply_object(self, manifest: Mapping[str, Any], *, field_manager: str | None = None) -> dict[str, Any]:
        self.writes.append(f"apply {manifest['kind']}")
        stored = copy.deepcopy(dict(manifest))
        stored["metadata"]["resourceVersion"] = str(len(self.writes))
        for rules in stored["spec"]["behavior"].values():
            if self.gate_on:
                rules["tolerance"] = {"0.05": "50m"}.get(rules["tolerance"], rules["tolerance"])
            else:
                rules.pop("tolerance")
        self.stored = stored
        return copy.deepcopy(stored)

    async def post_event(
        self, involved: Mapping[str, Any], *, type_: str, reason: str, message: str, now: datetime
    ) -> None:
        self.writes.append(f"event {reason}: {message}")


async def test_a_dropped_field_is_reported_once_and_checked_again_an_hour_later() -> None:
    cluster, clock = Cluster(), Seconds()
    controller = Controller(
        config=OperatorConfig(), kube=cluster, clock=lambda: NOW, source=OneObject(IRIS), monotonic=clock
    )

    async def one_pass() -> list[str]:
        before = len(cluster.writes)
        # The HPA is not in the watch cache here, so the controller reads it; the pass sees what ``_observe`` gives.
        observed = Observed(dropped=controller._known_dropped("ml"))
        await controller._execute(IRIS, observed, Plan(apply=[copy.deepcopy(HPA)]))
        return cluster.writes[before:]

    try:
        first = await one_pass()
        assert first[0] == "apply HorizontalPodAutoscaler"
        (event,) = first[1:]
        assert event.startswith("event FieldDropped: The API server dropped spec.behavior.scaleUp.tolerance, "
                                "spec.behavior.scaleDown.tolerance from HorizontalPodAutoscaler ml/iris")  # fmt: skip
        assert "HPAConfigurableTolerance (on by default from Kubernetes 1.35)" in event
        known = controller._known_dropped("ml")
        assert set(known) == {("HorizontalPodAutoscaler", "iris")}
        assert controller._known_dropped("other") == {}, "per namespace"

        clock.now += DROPPED_RECHECK_SECONDS - 1
        assert await one_pass() == [], "known to be dropped: nothing to apply"

        clock.now += 2
        assert await one_pass() == ["apply HorizontalPodAutoscaler"], "checked again, and no second event"
        assert await one_pass() == []

        # The cluster is upgraded: the next check keeps the fields, and the record of them is gone.
        cluster.gate_on = True
        clock.now += DROPPED_RECHECK_SECONDS
        assert await one_pass() == ["apply HorizontalPodAutoscaler"]
        assert cluster.stored is not None
        assert cluster.stored["spec"]["behavior"]["scaleDown"]["tolerance"] == "50m"
        assert controller._known_dropped("ml") == {}
        assert await one_pass() == [], "stored in canonical form: the same quantity"

        # Forgotten with the ModelDeployment.
        cluster.gate_on = False
        cluster.stored = None
        await one_pass()
        assert controller._known_dropped("ml")
        controller._drop(("ml", "iris"))
        assert controller._known_dropped("ml") == {}
    finally:
        await controller.close()
