"""Tier 2: a ModelDeployment whose status is lost (restored without it, cleared by hand, re-created by GitOps
without it) keeps serving: the real operator (KopfRunner) against the emulated API server, with a stand-in
Prometheus for the first-deploy analysis."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from kopf.testing import KopfRunner

from modeldeploy.labels import REVISION_LABEL, STABLE_ANNOTATION

from .conftest import DEPLOYMENTS, MD, SERVICES, StandInPrometheus, ThreadedCluster
from .test_operator import children, events, md, quiet_period, ready, settle, status

pytestmark = pytest.mark.component


def wipe_status(emulated: ThreadedCluster) -> None:
    """What a restore without status or ``kubectl patch --subresource=status`` leaves: no status at all."""
    emulated.call(
        emulated.cluster.emulator.patch_object,
        MD,
        "ml",
        "iris",
        {"status": None},
        subresource="status",
        manager="kubectl",
    )


def child_writes(emulated: ThreadedCluster, since: int) -> list[str]:
    """The operator's writes to Deployments and Services (what routes and runs the traffic) since ``since``."""
    return [
        f"{w.verb} {w.resource} {w.name}" for w in emulated.writes(since) if w.resource in ("deployments", "services")
    ]


def test_lost_status_after_a_passed_first_deploy_gate_keeps_the_traffic(
    emulated: ThreadedCluster, operator_factory: Callable[[], KopfRunner], prometheus: StandInPrometheus
) -> None:
    analysis = prometheus.analysis(count=1)
    with operator_factory() as runner:
        emulated.create(MD, md(rollout={"firstDeployAnalysis": True, "analysis": analysis}))
        emulated.wait_for(lambda: ready(emulated), timeout=30, message="iris passed its first-deploy gate")
        settle(emulated)  # the Events follow the status patch
        assert ("Normal", "FirstDeployPassed") in events(emulated)
        revision = status(emulated)["stableRevision"]
        (deployment,) = children(emulated, DEPLOYMENTS)
        assert deployment["metadata"]["annotations"][STABLE_ANNOTATION] == "true"
        assert STABLE_ANNOTATION not in deployment["spec"]["template"]["metadata"]["annotations"]
        (service,) = children(emulated, SERVICES)
        assert service["metadata"]["name"] == "iris" and service["spec"]["selector"][REVISION_LABEL] == revision

        before = len(emulated.requests())
        wipe_status(emulated)
        emulated.wait_for(lambda: ready(emulated), timeout=30, message="status rebuilt")
        settle(emulated)
        # The serving revision was never touched: no write to its Deployment or to any Service (the main Service
        # kept selecting it; no preview Service came back).
        assert child_writes(emulated, before) == []
        assert ("Warning", "StableAdopted") in events(emulated)
        assert status(emulated)["stableRevision"] == revision
        assert status(emulated)["rollout"]["phase"] == "Completed"
        assert not status(emulated)["rollout"].get("analysisRuns"), "no new analysis"
        (service,) = children(emulated, SERVICES)
        assert service["spec"]["selector"][REVISION_LABEL] == revision
        assert quiet_period(emulated, 1.5) == []
    assert runner.exit_code == 0, runner.output
    assert "Traceback" not in runner.output, runner.output


def test_lost_status_mid_canary_keeps_the_serving_revision(
    emulated: ThreadedCluster, operator_factory: Callable[[], KopfRunner]
) -> None:
    """The non-gated case: status lost while a canary holds at a pause; the stable keeps serving, the canary's
    steps start again over it, and nothing is scaled down."""
    canary = {"strategy": "Canary", "canary": {"steps": [{"setWeight": 50}, {"pause": {}}]}}
    with operator_factory():
        emulated.create(MD, md(rollout=canary))
        emulated.wait_for(lambda: ready(emulated), message="iris Ready")
        stable = status(emulated)["stableRevision"]
        model = {"version": "2", "storageUri": "s3://models/iris/2/model.pt", "format": "TorchScript"}
        emulated.patch(MD, "ml", "iris", {"spec": {"model": model}})
        emulated.wait_for(
            lambda: (status(emulated).get("rollout") or {}).get("currentStepIndex") == 1,
            message="canary holding at its indefinite pause",
        )
        settle(emulated)
        replicas = {d["metadata"]["name"]: d["spec"]["replicas"] for d in children(emulated, DEPLOYMENTS)}
        before = len(emulated.requests())
        wipe_status(emulated)
        emulated.wait_for(lambda: ("Warning", "StableAdopted") in events(emulated), message="StableAdopted")
        emulated.wait_for(
            lambda: (status(emulated).get("rollout") or {}).get("currentStepIndex") == 1,
            message="canary back at its pause",
        )
        settle(emulated)
        assert status(emulated)["stableRevision"] == stable
        assert {d["metadata"]["name"]: d["spec"]["replicas"] for d in children(emulated, DEPLOYMENTS)} == replicas
        assert child_writes(emulated, before) == []
