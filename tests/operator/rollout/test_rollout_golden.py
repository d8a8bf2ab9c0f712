"""Golden requests in the rollout state machine: a gate before any client reaches the new revision."""

from __future__ import annotations

from typing import Any

import pytest
from rollout_harness import BAD, GOOD, A, B, Cluster, gated_canary, reasons, spec, stable_cluster

from modeldeploy.analysis.golden import GoldenResult
from modeldeploy.analysis.sample import Sample
from modeldeploy.rollout.config import RolloutSpecError, parse_rollout

CASE = {
    "name": "setosa",
    "inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4], "data": [5.1, 3.5, 1.4, 0.2]}],
    "outputs": [{"name": "output", "argmax": [0]}],
}
# One measurement, no failure tolerated (with the default failureLimit 1, a run of one measurement cannot fail).
GOLDEN_ONLY: dict[str, Any] = {"goldenRequests": {"cases": [CASE]}, "interval": "10s", "count": 1, "failureLimit": 0}
# Golden requests first, before any client: then live traffic judged on errors too.
GATED = gated_canary(GOLDEN_ONLY)
RIGHT = GoldenResult(checks=1, mismatches=0, pods=1)
WRONG = GoldenResult(checks=1, mismatches=1, pods=1, detail=("case 'setosa' on pod p: argmax [1], expected [0]",))
NO_TRAFFIC = Sample(requests=0, pods=1)


def test_the_gate_gives_the_canary_one_pod_and_passes_it_on_right_answers_without_traffic() -> None:
    cluster = stable_cluster(GATED, auto_ready=False)
    cluster.make_ready(A)
    cluster.deploy(B)
    cluster.next_sample, cluster.next_golden = NO_TRAFFIC, RIGHT
    d = cluster.step()
    # One pod beside the stable's four, no traffic; nothing is asked before it is ready.
    assert d.replicas == {A: 4, B: 1} and d.weights == {A: 100, B: 0} and d.analysis is None
    assert d.status.phase == "Progressing" and "a canary pod for the analysis checks" in d.status.message
    cluster.make_ready(B)
    d = cluster.step()
    assert d.status.phase == "Analyzing" and d.replicas == {A: 4, B: 1} and d.weights == {A: 100, B: 0}
    cluster.advance(10)  # the first measurement is taken one interval after the run starts
    d = cluster.step()
    assert d.analysis is not None and d.analysis.revision == B and d.replicas == {A: 4, B: 1}
    d = cluster.measure_if_asked(d)
    run = d.status.analysis_runs[-1]
    assert run.phase == "Successful" and run.measurements[-1].golden == RIGHT
    assert "golden requests: 0 of 1 answers wrong" in run.measurements[-1].message
    # Then live traffic, in the same pass: the gate's pod is the one pod that 25% of N = 4 needs.
    assert d.weights == {A: 75, B: 25} and d.status.current_step_index == 2 and d.replicas == {A: 3, B: 1}


def test_wrong_answers_roll_the_canary_back_before_any_client_reaches_it() -> None:
    cluster = stable_cluster(GATED)
    cluster.deploy(B)
    cluster.next_sample, cluster.next_golden = NO_TRAFFIC, WRONG
    d = cluster.run(steps=20)
    assert d.status.phase == "RolledBack"
    rejection = d.status.rejection(B)
    assert rejection is not None and rejection.reason == "AnalysisFailed"
    assert "Failed goldenRequests" in d.status.analysis_runs[-1].measurements[-1].message
    # The rejection says what was wrong, not only how many measurements failed.
    assert "golden requests: 1 of 1 answers wrong on 1 pod > maxMismatches 0" in rejection.message
    assert "argmax [1], expected [0]" in rejection.message
    assert all(x.weights.get(B, 0) == 0 for x in cluster.decisions)
    assert "AnalysisFail" in [r for x in cluster.decisions for r in reasons(x)]


def test_with_traffic_thresholds_too_wrong_answers_fail_at_once_but_right_ones_wait_for_traffic() -> None:
    both = {**GATED, "analysis": {**GOLDEN_ONLY, "maxErrorRatio": 0.01, "minRequests": 10, "count": 2}}
    cluster = stable_cluster(both)
    cluster.deploy(B)
    cluster.next_sample, cluster.next_golden = NO_TRAFFIC, RIGHT
    d = cluster.run(steps=20)
    # Right answers but no traffic to judge maxErrorRatio on: inconclusive, so the rollout waits for a person.
    assert d.status.phase == "Paused" and d.status.analysis_runs[-1].phase == "Inconclusive"
    assert all(x.weights.get(B, 0) == 0 for x in cluster.decisions)
    cluster = stable_cluster(both)
    cluster.deploy(B)
    cluster.next_sample, cluster.next_golden = NO_TRAFFIC, WRONG
    assert cluster.run(steps=20).status.phase == "RolledBack"


def test_no_gate_pod_without_golden_requests_or_once_the_canary_has_pods() -> None:
    plain = {**GATED, "analysis": {"maxErrorRatio": 0.01, "interval": "10s", "count": 1, "failureLimit": 0}}
    cluster = stable_cluster(plain)
    cluster.deploy(B)
    d = cluster.step()
    assert d.replicas.get(B, 0) == 0 and d.status.phase == "Analyzing"
    # An analysis step after a weight measures the canary's own pods: no extra one.
    later = {**GATED, "canary": {"steps": [{"setWeight": 50}, {"analysis": {}}, {"pause": {}}]}}
    cluster = stable_cluster(later)
    cluster.deploy(B)
    cluster.next_sample, cluster.next_golden = GOOD, RIGHT
    d = cluster.run(steps=20)
    assert d.status.current_step_index == 2 and d.replicas == {A: 2, B: 2}


def test_a_gate_pod_that_never_gets_ready_misses_the_progress_deadline() -> None:
    cluster = stable_cluster(GATED, auto_ready=False)
    cluster.make_ready(A)
    cluster.deploy(B)
    d = cluster.step()
    assert d.replicas == {A: 4, B: 1}
    for _ in range(10):
        cluster.advance(30)
        d = cluster.step()
    assert d.status.phase == "RolledBack"
    rejection = d.status.rejection(B)
    assert rejection is not None and rejection.reason == "ProgressDeadlineExceeded"


def test_blue_green_previews_are_gated_by_golden_requests_alone() -> None:
    raw = {"strategy": "BlueGreen", "blueGreen": {"autoPromotionEnabled": True}, "analysis": GOLDEN_ONLY}
    cluster = stable_cluster(raw)
    cluster.deploy(B)
    cluster.next_sample, cluster.next_golden = NO_TRAFFIC, RIGHT
    d = cluster.run(steps=20)
    assert d.status.stable_revision == B and d.status.analysis_runs[-1].gate == "pre-promotion"
    cluster = stable_cluster(raw)
    cluster.deploy(B)
    cluster.next_sample, cluster.next_golden = NO_TRAFFIC, WRONG
    d = cluster.run(steps=20)
    assert d.status.phase == "RolledBack" and d.status.stable_revision == A


def test_a_bad_canary_that_answers_right_is_still_failed_by_its_errors() -> None:
    later = {**GATED, "canary": {"steps": [{"setWeight": 50}, {"analysis": {}}]}}
    later["analysis"] = {**GOLDEN_ONLY, "maxErrorRatio": 0.01, "minRequests": 10}
    cluster = stable_cluster(later)
    cluster.deploy(B)
    cluster.next_sample, cluster.next_golden = BAD, RIGHT
    d = cluster.run(steps=20)
    assert d.status.phase == "RolledBack"
    assert "maxErrorRatio" in d.status.analysis_runs[-1].measurements[-1].message


@pytest.mark.parametrize(
    ("steps", "refused"),
    [
        ([{"analysis": {}}, {"setWeight": 50}], "spec.rollout.canary.steps[0].analysis"),
        ([{"setWeight": 50}, {"setWeight": 0}, {"analysis": {}}], "spec.rollout.canary.steps[2].analysis"),
        ([{"setWeight": 50}, {"analysis": {}}], None),
    ],
)
def test_neutral_capacity_without_surge_has_no_room_for_a_gate_pod(steps: list[Any], refused: str | None) -> None:
    raw = {
        **GATED,
        "canary": {"steps": steps, "capacity": {"mode": "Neutral", "maxSurgePods": 0}},
    }
    if refused is None:
        assert parse_rollout(raw).analysis is not None
        return
    with pytest.raises(RolloutSpecError, match="maxSurgePods 0 has no room") as info:
        parse_rollout(raw)
    assert info.value.field_path == refused
    # One surge pod is room enough.
    raw["canary"]["capacity"]["maxSurgePods"] = 1
    parse_rollout(raw)


def test_a_first_deploy_is_gated_by_golden_requests_without_traffic() -> None:
    """firstDeployAnalysis: the first revision runs behind the preview Service only (no client traffic) until its
    golden requests are answered right; wrong answers reject it, and nothing serves."""
    raw = {"firstDeployAnalysis": True, "analysis": GOLDEN_ONLY}
    cluster = Cluster(spec(raw), next_sample=NO_TRAFFIC, next_golden=RIGHT)
    d = cluster.step()
    assert d.weights == {} and d.preview_revision == A
    d = cluster.run()
    assert d.status.stable_revision == A and d.weights == {A: 100}
    assert d.status.analysis_runs[-1].gate == "first-deploy" and d.status.analysis_runs[-1].measurements[-1].golden
    cluster = Cluster(spec(raw), next_sample=NO_TRAFFIC, next_golden=WRONG)
    d = cluster.run()
    assert d.status.phase == "RolledBack" and d.weights == {} and d.status.stable_revision == ""
    rejection = d.status.rejection(A)
    assert rejection is not None and "argmax [1], expected [0]" in rejection.message
