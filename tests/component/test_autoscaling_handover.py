"""Tier 2: the count of a Deployment that its HorizontalPodAutoscaler takes over is handed over, never dropped.

Server-side apply removes a field its field manager stops applying when no other manager owns it, and a Deployment
without ``spec.replicas`` runs 1 pod. The operator sets the count while a rollout splits the traffic and leaves it
to the HPA once one revision serves alone: without a handover, turning autoscaling on, or promoting a canary of an
autoscaled model, would leave the model on one pod until the HPA scaled it back up. The real operator (KopfRunner)
against the emulated API server, whose server-side apply tracks field managers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from kopf.testing import KopfRunner

from modeldeploy.labels import REVISION_LABEL

from .conftest import DEPLOYMENTS, HPAS, MD, ThreadedCluster
from .test_operator import children, md, ready, settle, status

pytestmark = pytest.mark.component

AUTOSCALING = {"minReplicas": 3, "maxReplicas": 10, "targetCPUUtilizationPercentage": 60}


def counts(emulated: ThreadedCluster) -> dict[str, Any]:
    """spec.replicas per revision (None where the field is gone)."""
    return {d["metadata"]["labels"][REVISION_LABEL]: d["spec"].get("replicas") for d in children(emulated, DEPLOYMENTS)}


def hpa_scales(emulated: ThreadedCluster, revision: str, replicas: int) -> None:
    """What the HPA does: write the count through the scale subresource, as its own field manager."""
    (deployment,) = [d for d in children(emulated, DEPLOYMENTS) if d["metadata"]["labels"][REVISION_LABEL] == revision]
    emulated.call(
        emulated.cluster.emulator.patch_object, DEPLOYMENTS, "ml", deployment["metadata"]["name"],
        {"spec": {"replicas": replicas}}, subresource="scale", manager="horizontal-pod-autoscaler",
    )  # fmt: skip


def test_the_count_is_handed_to_the_autoscaler_not_dropped(
    emulated: ThreadedCluster, operator_factory: Callable[[], KopfRunner]
) -> None:
    canary = {"strategy": "Canary", "canary": {"steps": [{"setWeight": 50}, {"pause": {}}]}}
    with operator_factory() as runner:
        emulated.create(MD, md(rollout=canary))
        emulated.wait_for(lambda: ready(emulated), message="iris Ready")
        first = status(emulated)["stableRevision"]
        assert counts(emulated) == {first: 2}

        # Autoscaling on: the count goes to the HPA's minimum and stays there once the operator stops applying it.
        emulated.patch(MD, "ml", "iris", {"spec": {"replicas": None, "autoscaling": AUTOSCALING}})
        emulated.wait_for(lambda: children(emulated, HPAS), message="HPA created")
        settle(emulated)
        assert counts(emulated) == {first: 3}
        deployment = children(emulated, DEPLOYMENTS)[0]
        managers = {e["manager"] for e in deployment["metadata"]["managedFields"] if "f:replicas" in
                    (e.get("fieldsV1") or {}).get("f:spec", {})}  # fmt: skip
        assert managers == {"modeldeploy-handover"}, managers

        # The HPA scales up; a canary rollout splits the HPA's 6 pods; the promotion gives the new revision all 6,
        # and they stay when the HPA takes the new revision over.
        hpa_scales(emulated, first, 6)
        settle(emulated)
        assert counts(emulated) == {first: 6}
        model = {"version": "2", "storageUri": "s3://models/iris/2/model.pt", "format": "TorchScript"}
        emulated.patch(MD, "ml", "iris", {"spec": {"model": model}})
        emulated.wait_for(
            lambda: (status(emulated).get("rollout") or {}).get("currentStepIndex") == 1, message="canary at pause"
        )
        settle(emulated)
        second = status(emulated)["rollout"]["canaryRevision"]
        assert sum(counts(emulated).values()) >= 6 and counts(emulated)[second] == 3
        # While the rollout sets the stable's count, the HPA is pinned to it: it writes no other count for the
        # operator to write back (pods started and deleted at every HPA sync).
        (hpa,) = children(emulated, HPAS)
        assert hpa["spec"]["minReplicas"] == hpa["spec"]["maxReplicas"] == counts(emulated)[first] == 3
        emulated.patch(MD, "ml", "iris", {"metadata": {"annotations": {"modeldeploy.io/promote": "go"}}})
        emulated.wait_for(lambda: ready(emulated, version="2"), message="version 2 promoted")
        emulated.wait_for(lambda: set(counts(emulated)) == {second}, message="the old revision removed")
        settle(emulated)
        assert counts(emulated) == {second: 6}
        (hpa,) = children(emulated, HPAS)
        assert hpa["spec"]["scaleTargetRef"]["name"] == children(emulated, DEPLOYMENTS)[0]["metadata"]["name"]
        assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 10)  # the spec's bounds again
        hpa_scales(emulated, second, 4)  # the HPA's count is left alone from now on
        settle(emulated)
        assert counts(emulated) == {second: 4}
    assert runner.exit_code == 0, runner.output
    assert "Traceback" not in runner.output, runner.output
