"""Tier 2: the HorizontalPodAutoscaler scales the ModelDeployment, and keeps scaling it while a rollout runs.

The HPA's target is the ModelDeployment's scale subresource: it writes ``spec.replicas`` (N), and the operator
splits N between the revisions. So a traffic peak in the middle of a canary is met by both revisions growing,
where an HPA on the stable's Deployment would either fight the counts the rollout sets or be pinned to them. The
real operator (KopfRunner) against the emulated API server; the test writes the Scale the way the HPA does."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from kopf.testing import KopfRunner

from modeldeploy.labels import REVISION_LABEL
from modeldeploy.sim.emulator import ApiError

from .conftest import DEPLOYMENTS, EVENTS, HPAS, MD, ThreadedCluster
from .test_operator import children, events, md, ready, settle, status

pytestmark = pytest.mark.component

AUTOSCALING = {"minReplicas": 3, "maxReplicas": 10, "targetCPUUtilizationPercentage": 60}
MD_TARGET = {"apiVersion": "modeldeploy.io/v1alpha1", "kind": "ModelDeployment", "name": "iris"}


def counts(emulated: ThreadedCluster) -> dict[str, Any]:
    """spec.replicas per revision."""
    return {d["metadata"]["labels"][REVISION_LABEL]: d["spec"].get("replicas") for d in children(emulated, DEPLOYMENTS)}


def read_scale(emulated: ThreadedCluster) -> dict[str, Any]:
    scale: dict[str, Any] = emulated.call(emulated.cluster.emulator.get_scale, MD, "ml", "iris")
    return scale


def hpa_scales(emulated: ThreadedCluster, replicas: int) -> None:
    """What the HPA does: read the Scale of its target, then write the count through it, as its own manager."""
    scale = read_scale(emulated)
    emulated.call(
        emulated.cluster.emulator.patch_object, MD, "ml", "iris",
        {"metadata": {"resourceVersion": scale["metadata"]["resourceVersion"]}, "spec": {"replicas": replicas}},
        subresource="scale", manager="horizontal-pod-autoscaler",
    )  # fmt: skip


def test_the_autoscaler_scales_the_model_through_a_rollout(
    emulated: ThreadedCluster, operator_factory: Callable[[], KopfRunner]
) -> None:
    canary = {"strategy": "Canary", "canary": {"steps": [{"setWeight": 50}, {"pause": {}}]}}
    with operator_factory() as runner:
        emulated.create(MD, md(rollout=canary))
        emulated.wait_for(lambda: ready(emulated), message="iris Ready")
        first = status(emulated)["stableRevision"]
        assert counts(emulated) == {first: 2}

        # Autoscaling on, replicas out of the manifest: before the operator writes one, the HPA has no Scale to
        # read (as on a real API server); the operator writes the count running now, within the bounds (3).
        emulated.patch(MD, "ml", "iris", {"spec": {"replicas": None, "autoscaling": AUTOSCALING}})
        (hpa,) = emulated.wait_for(lambda: children(emulated, HPAS), message="HPA created")
        assert hpa["spec"]["scaleTargetRef"] == MD_TARGET
        settle(emulated)
        scale = read_scale(emulated)
        assert scale["spec"]["replicas"] == 3 and counts(emulated) == {first: 3}
        assert scale["status"]["selector"] == f"modeldeploy.io/model-deployment=iris,{REVISION_LABEL}={first}"
        assert events(emulated).count(("Normal", "ReplicasInitialized")) == 1

        # The HPA scales up; a canary rollout starts from its 6 pods.
        hpa_scales(emulated, 6)
        emulated.wait_for(lambda: counts(emulated) == {first: 6}, message="the stable at the HPA's 6")
        model = {"version": "2", "storageUri": "s3://models/iris/2/model.pt", "format": "TorchScript"}
        emulated.patch(MD, "ml", "iris", {"spec": {"model": model}})
        emulated.wait_for(
            lambda: (status(emulated).get("rollout") or {}).get("currentStepIndex") == 1, message="canary at pause"
        )
        settle(emulated)
        second = status(emulated)["rollout"]["canaryRevision"]
        assert counts(emulated) == {first: 3, second: 3}, "50% of the HPA's 6, by pods"
        both = ",".join(sorted((first, second)))
        assert read_scale(emulated)["status"]["selector"] == (
            f"modeldeploy.io/model-deployment=iris,{REVISION_LABEL} in ({both})"
        ), "the HPA measures the pods of both revisions: both take traffic"

        # A traffic peak mid-rollout: the HPA scales the model to 10 and both revisions grow, at the same step.
        hpa_scales(emulated, 10)
        emulated.wait_for(lambda: counts(emulated) == {first: 5, second: 5}, message="both revisions at 5")
        settle(emulated)
        assert counts(emulated) == {first: 5, second: 5}
        assert status(emulated)["desiredReplicas"] == 10 and status(emulated)["rollout"]["currentStepIndex"] == 1
        (hpa,) = children(emulated, HPAS)
        assert hpa["spec"]["scaleTargetRef"] == MD_TARGET
        assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 10), "the spec's bounds throughout"

        # The promotion gives the new revision all 10; the HPA goes on scaling the model.
        emulated.patch(MD, "ml", "iris", {"metadata": {"annotations": {"modeldeploy.io/promote": "go"}}})
        emulated.wait_for(lambda: ready(emulated, version="2"), message="version 2 promoted")
        emulated.wait_for(lambda: set(counts(emulated)) == {second}, message="the old revision removed")
        settle(emulated)
        assert counts(emulated) == {second: 10}
        hpa_scales(emulated, 4)
        emulated.wait_for(lambda: counts(emulated) == {second: 4}, message="scaled in to 4")
        settle(emulated)
        assert counts(emulated) == {second: 4}
        assert events(emulated).count(("Normal", "ReplicasInitialized")) == 1, "the operator wrote the count once"
    assert runner.exit_code == 0, runner.output
    assert "Traceback" not in runner.output, runner.output


def test_a_scale_is_unreadable_until_it_has_a_count(emulated: ThreadedCluster) -> None:
    """Control for the test above: with autoscaling and no spec.replicas, and no operator to write one, the HPA
    finds no Scale to read (the API server answers 500), so without the operator's first write it never acts."""
    body = md(autoscaling=AUTOSCALING)
    del body["spec"]["replicas"]
    emulated.create(MD, body)
    with pytest.raises(ApiError) as caught:
        read_scale(emulated)
    assert caught.value.code == 500


TOLERANCE = "spec.behavior.scaleDown.tolerance"
TOLERANT = {**AUTOSCALING, "behavior": {"scaleDown": {"tolerance": 0.05, "stabilizationWindowSeconds": 600}}}


def hpa_writes(emulated: ThreadedCluster, since: int) -> list[Any]:
    return [r for r in emulated.writes(since) if r.resource == "horizontalpodautoscalers"]


@pytest.mark.parametrize("gate_on", [True, False], ids=["gate-on", "gate-off"])
def test_an_hpa_tolerance_is_applied_once_whether_or_not_the_api_server_keeps_it(
    emulated: ThreadedCluster, operator_factory: Callable[[], KopfRunner], gate_on: bool
) -> None:
    """``behavior.scaleDown.tolerance`` reaches the HPA as a quantity. An API server with the HPAConfigurableTolerance
    gate off (before Kubernetes 1.35, by default) drops it on write: the operator says so once, in a Warning event,
    and does not apply the HPA again on every pass to put the field back (its resync runs every second here)."""
    if not gate_on:
        emulated.call(emulated.cluster.emulator.disable_fields, HPAS, TOLERANCE)
    with operator_factory() as runner:
        emulated.create(MD, md(autoscaling=TOLERANT))
        (hpa,) = emulated.wait_for(lambda: children(emulated, HPAS), message="HPA created")
        emulated.wait_for(lambda: ready(emulated), message="iris Ready")
        settle(emulated)
        (hpa,) = children(emulated, HPAS)
        rules = hpa["spec"]["behavior"]["scaleDown"]
        assert rules["stabilizationWindowSeconds"] == 600
        dropped = events(emulated).count(("Warning", "FieldDropped"))
        if gate_on:
            assert rules["tolerance"] == "0.05" and dropped == 0
        else:
            assert "tolerance" not in rules and dropped == 1
            (event,) = [e for e in emulated.list(EVENTS, "ml") if e["reason"] == "FieldDropped"]
            assert TOLERANCE in event["message"] and "HPAConfigurableTolerance" in event["message"]

        before = len(emulated.requests())
        time.sleep(3)  # Three resyncs: each pass compares the HPA with what it would apply.
        assert hpa_writes(emulated, before) == [], "the HPA is applied once, not on every pass"

        # A change of the behavior is applied; without the gate, the same field dropped again is no news.
        behavior = {"scaleDown": {"tolerance": 0.1, "stabilizationWindowSeconds": 300}}
        emulated.patch(MD, "ml", "iris", {"spec": {"autoscaling": {"behavior": behavior}}})
        emulated.wait_for(
            lambda: children(emulated, HPAS)[0]["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 300,
            message="the new behavior applied",
        )
        settle(emulated)
        rules = children(emulated, HPAS)[0]["spec"]["behavior"]["scaleDown"]
        assert rules.get("tolerance") == ("0.1" if gate_on else None)
        assert events(emulated).count(("Warning", "FieldDropped")) == (0 if gate_on else 1), (
            "the same fields dropped again: no news, no second event"
        )
    assert runner.exit_code == 0, runner.output
    assert "Traceback" not in runner.output, runner.output
