"""The controller keeps a measurement taken for the analysis until the state machine records it or its run is
gone, even across reconciles that do not run the rollout (an invalid spec meanwhile)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from modeldeploy.analysis.sample import Sample
from modeldeploy.config import OperatorConfig
from modeldeploy.controller import Controller, ObjectKey
from modeldeploy.kube import KubeClient
from modeldeploy.kube.resources import Resource
from modeldeploy.reconcile import Observed
from modeldeploy.rollout.plan import Measurement

KEY = ("ml", "iris")
RUN = "bbbbbbbbbb-step-0-1"
NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


def model_deployment(run_phase: str, measurements: int) -> dict[str, Any]:
    record = {"takenAt": "2026-01-01T11:59:30Z", "verdict": "Pass", "canary": {"requests": 50}}
    run = {
        "id": RUN,
        "revision": "bbbbbbbbbb",
        "gate": "step-0",
        "startedAt": "2026-01-01T11:59:00Z",
        "phase": run_phase,
        "measurements": [record] * measurements,
    }
    return {
        "apiVersion": "modeldeploy.io/v1alpha1", "kind": "ModelDeployment",
        "metadata": {"name": "iris", "namespace": "ml", "uid": "uid-1", "generation": 2},
        "spec": {
            "model": {"version": "2", "storageUri": "s3://models/iris/2/", "format": "TorchScript"},
            "replicas": 1,
            # Invalid: GatewayAPI routing without its gatewayAPI block, so the rollout does not run.
            "rollout": {"strategy": "Canary", "canary": {"steps": [{"analysis": {}}],
                                                         "trafficRouting": {"type": "GatewayAPI"}}},
        },
        "status": {"rollout": {"phase": "Analyzing", "stableRevision": "aaaaaaaaaa", "canaryRevision": "bbbbbbbbbb",
                               "analysisRuns": [run]}},
    }  # fmt: skip


class Source:
    def __init__(self, md: dict[str, Any]) -> None:
        self.md = md

    def model_deployment(self, key: ObjectKey) -> Mapping[str, Any] | None:
        return self.md if key == KEY else None

    def model_deployments(self) -> Sequence[ObjectKey]:
        return [KEY]

    def children(self, key: ObjectKey) -> Observed:
        return Observed()


class Api(KubeClient):
    """An API server that answers status patches with the patched object, accepts Events, and has no routes."""

    def __init__(self, md: dict[str, Any]) -> None:
        self.md = md
        self.field_manager = "modeldeploy"
        self.component = "modeldeploy"
        self.writes: list[str] = []

    async def patch_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> dict[str, Any]:
        self.writes.append(f"status {namespace}/{name}")
        return {**self.md, "status": dict(status)}

    async def post_event(
        self, involved: Mapping[str, Any], *, type_: str, reason: str, message: str, now: datetime
    ) -> None:
        self.writes.append(f"event {reason}")

    async def read_object(self, resource: Resource, namespace: str | None, name: str) -> dict[str, Any] | None:
        return None

    async def close(self) -> None:
        return None


async def reconcile_with_measurement(md: dict[str, Any]) -> tuple[bool, list[str]]:
    """Reconcile once with a measurement of ``RUN`` (seq 0) waiting; whether the controller still holds it."""
    kube = Api(md)
    controller = Controller(config=OperatorConfig(), kube=kube, clock=lambda: NOW, source=Source(md))
    controller._measurements[KEY] = Measurement(RUN, 0, NOW, Sample(requests=50, errors=0, pods=1))
    try:
        plan = await controller.reconcile(KEY)
        assert plan is not None and plan.analysis is None
        assert plan.status is not None and plan.status["phase"] == "Failed"  # InvalidSpec
        return KEY in controller._measurements, kube.writes
    finally:
        await controller.close()


async def test_a_measurement_survives_a_reconcile_that_did_not_run_the_rollout() -> None:
    kept, writes = await reconcile_with_measurement(model_deployment("Running", 0))
    assert kept, "the run still waits for this measurement; dropping it would only take it again"
    assert writes == ["status ml/iris", "event InvalidSpec"]


async def test_a_measurement_whose_run_is_over_or_recorded_is_dropped() -> None:
    assert not (await reconcile_with_measurement(model_deployment("Failed", 0)))[0]
    assert not (await reconcile_with_measurement(model_deployment("Running", 1)))[0]
