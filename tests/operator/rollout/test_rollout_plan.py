"""Scenario tests of the rollout state machine, step by step."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
from rollout_harness import BAD, CANARY, GOOD, THIN, A, B, C, Cluster, reasons, spec

from modeldeploy.rollout.config import RolloutSpec
from modeldeploy.rollout.plan import Controls, Decision


def stable_cluster(raw: dict[str, Any], **kwargs: Any) -> Cluster:
    cluster = Cluster(spec(raw), **kwargs)
    decision = cluster.run()
    assert decision.status.stable_revision == A and decision.status.phase == "Completed"
    return cluster


def test_first_deploy_takes_traffic_at_once() -> None:
    cluster = Cluster(spec({}), auto_ready=False)
    d = cluster.step()
    assert d.replicas == {A: 4} and d.weights == {A: 100} and d.status.stable_revision == A
    assert d.status.phase == "Completed" and d.templates == {A: "tmpl-a"}
    assert [h.number for h in d.status.history] == [1]
    again = cluster.step()
    assert again.status == d.status, "the first step is already a fixed point: nothing changes until pods do"
    cluster.make_ready(A)
    assert cluster.step().status.phase == "Completed"


def test_canary_happy_path_step_by_step() -> None:
    cluster = stable_cluster(CANARY, auto_ready=False)
    cluster.deploy(B)
    d = cluster.step()  # step 0: canary pods first, no traffic yet
    assert reasons(d) == ["RolloutStarted"]
    assert d.replicas == {A: 4, B: 1} and d.weights == {A: 100, B: 0} and d.status.current_step_index == 0
    cluster.make_ready(B)
    d = cluster.step()  # weight 25 applied; pause starts
    assert d.weights == {A: 75, B: 25} and d.replicas == {A: 3, B: 1}
    assert d.status.current_step_index == 1 and d.status.phase == "Paused" and d.requeue_after == 60
    cluster.advance(30)
    assert cluster.step().status.current_step_index == 1
    cluster.advance(30)
    d = cluster.step()  # pause over; analysis starts, first measurement due after one interval
    assert d.status.current_step_index == 2 and d.status.phase == "Analyzing" and d.analysis is None
    cluster.advance(30)
    d = cluster.step()
    # No relative criterion in CANARY: the stable is not measured (test_rollout_measurement.py).
    assert d.analysis is not None and d.analysis.seq == 0 and d.analysis.stable_revision is None
    d = cluster.measure_if_asked(d)
    assert d.status.analysis_runs[-1].measurements[0].outcome == "Pass"
    # The same measurement delivered twice (a retry) is counted once.
    again = cluster.step(cluster.last_measurement)
    assert len(again.status.analysis_runs[-1].measurements) == 1
    cluster.advance(30)
    d = cluster.measure_if_asked(cluster.step())
    assert "AnalysisSuccessful" in reasons(d) and d.status.current_step_index == 3
    assert d.replicas[B] == 2 and d.weights == {A: 75, B: 25}  # step 3 waits for the second canary pod
    cluster.make_ready(B)
    d = cluster.step()  # weight 50, then the steps are done: promotion scales the canary up
    assert d.status.phase == "Promoting" and d.replicas[B] == 4 and d.weights == {A: 50, B: 50}
    cluster.make_ready(B)
    d = cluster.step()
    assert d.status.phase == "Completed" and d.status.stable_revision == B and d.weights == {B: 100}
    assert d.replicas == {A: 0, B: 4} and d.status.previous_revision == A
    steps = [e.message for e in cluster.decisions[-1].events]
    assert any("stable" in m for m in steps)
    cluster.apply(d)
    assert cluster.step().replicas == {B: 4}  # A has no pods left: deleted


def test_failed_analysis_rolls_back_traffic_first_then_scales_down() -> None:
    cluster = stable_cluster(CANARY)
    cluster.deploy(B)
    cluster.next_sample = BAD
    d = cluster.run(steps=20)
    rolling = [x for x in cluster.decisions if x.status.phase == "RollingBack"]
    # The stable scales back up first, and the canary keeps its share while only 3 of A's 4 pods are ready.
    assert rolling[0].weights == {A: 75, B: 25} and rolling[0].replicas == {A: 4, B: 1}
    rolling = rolling[-1]  # the decision that moves the traffic: the canary still has its pod
    assert rolling.weights == {A: 100} and rolling.replicas[B] == 1 and rolling.replicas[A] == 4
    assert d.status.phase == "RolledBack" and d.replicas.get(B, 0) == 0 and d.weights == {A: 100}
    after = cluster.decisions[cluster.decisions.index(rolling) + 1]
    assert after.replicas[B] == 0 and after.status.phase == "RolledBack"
    rejection = d.status.rejection(B)
    assert rejection is not None and rejection.reason == "AnalysisFailed"
    # It stays rejected: more reconciles never roll it out again.
    cluster.advance(3600)
    assert cluster.step().replicas == {A: 4}
    # Until the spec changes to another revision.
    cluster.deploy(C)
    cluster.next_sample = None
    d = cluster.step()
    assert d.status.canary_revision == C and d.status.rejection(B) is None and C in d.replicas


def test_progress_deadline_rolls_back() -> None:
    cluster = stable_cluster(CANARY, auto_ready=False)
    cluster.make_ready(A)
    cluster.deploy(B)
    cluster.step()
    cluster.advance(100)
    assert cluster.step().status.phase == "Progressing"
    cluster.advance(30)
    d = cluster.step()
    assert d.status.phase == "RollingBack" and "ProgressDeadlineExceeded" in reasons(d) and d.weights == {A: 100}


def test_crash_loop_rolls_back() -> None:
    cluster = stable_cluster(CANARY)
    cluster.deploy(B)
    cluster.step()
    cluster.crash.add(B)
    d = cluster.step()
    assert d.status.phase == "RollingBack" and d.status.rejection(B) is not None
    assert d.status.rejected_revisions[0].reason == "CrashLoop"


def test_promote_skips_remaining_steps_once_per_token() -> None:
    cluster = stable_cluster(CANARY)
    cluster.deploy(B)
    cluster.step()
    d = cluster.step()
    assert d.status.phase == "Paused"
    cluster.controls = Controls(promote_token="t1")
    d = cluster.step()
    assert "PromoteRequested" in reasons(d)
    d = cluster.step()
    assert d.status.stable_revision == B and d.status.last_promote_token == "t1"
    # The same token later does nothing.
    cluster.deploy(C)
    d = cluster.step()
    assert d.status.canary_revision == C and d.status.phase == "Progressing"
    assert "PromoteRequested" not in reasons(cluster.step())


def test_abort_rolls_back_and_clearing_it_retries() -> None:
    cluster = stable_cluster(CANARY)
    cluster.deploy(B)
    cluster.step()
    cluster.controls = Controls(abort=True)
    d = cluster.step()
    assert d.status.phase == "RollingBack" and d.weights == {A: 100}
    d = cluster.step()
    assert d.status.phase == "RolledBack" and d.replicas[B] == 0
    cluster.controls = Controls()
    d = cluster.step()
    assert d.status.canary_revision == B and d.status.current_step_index == 0 and d.status.phase == "Progressing"


def test_pause_and_resume_leave_pods_and_keep_the_step() -> None:
    cluster = stable_cluster(CANARY)
    cluster.deploy(B)
    cluster.step()
    d = cluster.step()
    index = d.status.current_step_index
    cluster.controls = Controls(paused=True)
    d = cluster.step()
    assert d.status.phase == "Paused" and d.status.paused_at is not None and d.replicas == {A: 3, B: 1}
    cluster.advance(7200)  # longer than the progress deadline: paused time does not count
    d = cluster.step()
    assert d.status.current_step_index == index and d.weights == {A: 75, B: 25}
    cluster.controls = Controls()
    d = cluster.step()
    assert "Resumed" in reasons(d) and d.status.paused_at is None and d.status.phase != "RollingBack"


def test_rollback_to_history_revision_restores_its_template() -> None:
    cluster = stable_cluster({})
    cluster.deploy(B)
    cluster.run()
    cluster.deploy(C)
    d = cluster.run()
    assert d.status.stable_revision == C
    numbers = {h.revision: h.number for h in d.status.history}
    assert numbers == {A: 1, B: 2, C: 3}
    cluster.controls = Controls(rollback_to=1)
    d = cluster.step()
    assert "RollbackRequested" in reasons(d) and d.templates[A] == "tmpl-a" and d.replicas[A] == 4
    d = cluster.run()
    assert d.status.stable_revision == A and d.weights == {A: 100} and d.templates[A] == "tmpl-a"
    assert d.replicas.get(C, 0) == 0
    # The spec still says C; the rollback holds until the spec changes.
    cluster.advance(600)
    assert cluster.step().status.stable_revision == A
    cluster.controls = Controls(rollback_to=7)
    assert "RollbackTargetNotFound" in reasons(cluster.step())
    cluster.deploy(B)
    d = cluster.run()
    assert d.status.stable_revision == B and d.status.rollback is None


def test_spec_change_mid_rollout_replaces_the_canary() -> None:
    cluster = stable_cluster(CANARY)
    cluster.deploy(B)
    cluster.step()
    cluster.step()
    cluster.deploy(C)
    d = cluster.step()
    # Replica-ratio routing gave B's pod to A's share (A runs 3 of 4): B hands its 25% back as A's 4th pod is
    # ready (test_rollout_spec_change_hand_back.py), then C starts from its first step.
    assert "RolloutReplaced" in reasons(d) and d.status.phase == "RollingBack" and d.status.canary_revision == B
    assert d.replicas == {A: 4, B: 1} and d.weights == {A: 75, B: 25}
    d = cluster.step()
    assert d.replicas == {A: 4, B: 1} and d.weights == {A: 100}
    d = cluster.step()
    assert "RolloutStarted" in reasons(d) and d.status.canary_revision == C
    assert d.replicas[B] == 0 and d.weights == {A: 100, C: 0} and d.status.current_step_index == 0


def test_blue_green_preview_then_manual_promotion() -> None:
    cluster = stable_cluster({"strategy": "BlueGreen"})
    cluster.deploy(B)
    d = cluster.run()
    assert d.status.phase == "Paused" and d.replicas == {A: 4, B: 4} and d.weights == {A: 100, B: 0}
    assert d.preview_revision == B
    cluster.controls = Controls(promote_token="go")
    d = cluster.step()
    assert d.status.stable_revision == B and d.weights == {B: 100} and d.replicas[A] == 0


def test_blue_green_auto_promotion_after_analysis() -> None:
    cluster = stable_cluster(
        {
            "strategy": "BlueGreen",
            "blueGreen": {"autoPromotionEnabled": True, "autoPromotionSeconds": 60},
            "analysis": {"maxErrorRatio": 0.01, "count": 1, "failureLimit": 0, "interval": "10s", "minRequests": 1},
        }
    )
    cluster.deploy(B)
    d = cluster.run()
    assert d.status.stable_revision == B
    assert any(r.gate == "pre-promotion" and r.phase == "Successful" for r in d.status.analysis_runs)
    promoted_at = next(x for x in cluster.decisions if "Promoted" in reasons(x))
    assert promoted_at.status.phase == "Completed"


def test_rolling_update_respects_surge_and_availability() -> None:
    cluster = stable_cluster({"rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}, auto_ready=False)
    cluster.make_ready(A)
    cluster.deploy(B)
    for _ in range(12):
        d = cluster.step()
        total = sum(d.replicas.values())
        assert total <= 5
        ready = sum(o.ready for o in cluster.deployments.values())
        assert ready >= 4
        if d.status.stable_revision == B:
            break
        cluster.make_ready(B)
    assert d.status.stable_revision == B and d.weights == {B: 100}


def test_first_deploy_gate_runs_analysis_before_traffic() -> None:
    cluster = Cluster(
        spec(
            {
                "firstDeployAnalysis": True,
                "analysis": {"maxErrorRatio": 0.01, "count": 1, "failureLimit": 0, "interval": "5s", "minRequests": 1},
            }
        )
    )
    d = cluster.step()
    assert d.weights == {} and d.preview_revision == A and d.status.stable_revision == ""
    d = cluster.run()
    assert d.status.stable_revision == A and d.weights == {A: 100}


def test_first_deploy_gate_failure_rejects() -> None:
    cluster = Cluster(
        spec(
            {
                "firstDeployAnalysis": True,
                "analysis": {
                    "maxErrorRatio": 0.01,
                    "count": 1,
                    "interval": "5s",
                    "minRequests": 1,
                    "failureLimit": 0,
                },
            }
        ),
        next_sample=BAD,
    )
    d = cluster.run()
    assert d.status.phase == "RolledBack" and d.weights == {} and d.status.rejection(A) is not None


def test_inconclusive_analysis_pauses_until_promoted() -> None:
    cluster = stable_cluster(CANARY)
    cluster.deploy(B)
    cluster.next_sample = THIN
    d = cluster.run(steps=30)
    assert d.status.phase == "Paused" and d.status.analysis_runs[-1].phase == "Inconclusive"
    cluster.controls = Controls(promote_token="x")
    cluster.step()
    assert cluster.step().status.stable_revision == B


def test_keep_previous_warm() -> None:
    cluster = stable_cluster({"keepPreviousWarm": {"replicas": 1, "seconds": 300}})
    cluster.deploy(B)
    d = cluster.run()
    promoted = next(x for x in cluster.decisions if "Promoted" in reasons(x))
    assert promoted.replicas[A] == 1
    assert promoted.status.warm_until is not None and promoted.status.previous_revision == A
    # Ends exactly when the warm period does (run() follows requeue_after).
    assert "PreviousScaledDown" in reasons(d) and d.replicas[A] == 0
    assert (cluster.now - promoted.status.warm_until).total_seconds() == 0


HUGE = 1e15  # seconds: past datetime's range from any moment, as parse_rollout never lets through


def _huge_interval(spec: RolloutSpec) -> RolloutSpec:
    assert spec.analysis is not None
    return replace(spec, analysis=replace(spec.analysis, interval_seconds=HUGE))


def _huge_warm_period(spec: RolloutSpec) -> RolloutSpec:
    assert spec.keep_previous_warm is not None
    return replace(spec, keep_previous_warm=replace(spec.keep_previous_warm, seconds=int(HUGE)))


@pytest.mark.parametrize(
    ("raw", "widen", "phase"),
    [
        (CANARY, _huge_interval, "Analyzing"),
        ({"keepPreviousWarm": {"replicas": 1, "seconds": 300}}, _huge_warm_period, "Completed"),
    ],
    ids=["analysis-interval", "warm-period"],
)
def test_a_duration_beyond_datetime_waits_instead_of_crashing(
    raw: dict[str, Any], widen: Callable[[RolloutSpec], RolloutSpec], phase: str
) -> None:
    cluster = stable_cluster(raw)
    cluster.spec = widen(cluster.spec)
    cluster.deploy(B)
    for _ in range(10):  # a minute at a time: run() would follow the requeue past datetime's range itself
        d = cluster.measure_if_asked(cluster.step())
        cluster.advance(60)
    assert d.status.phase == phase
    assert d.requeue_after is not None and d.requeue_after > 1e9


def gpu_events(cluster: Cluster) -> list[str]:
    return [e.message for d in cluster.decisions for e in d.events if e.reason == "InsufficientGPUs"]


def test_gpu_preflight_reports_a_shortage_once_per_rollout() -> None:
    # Surge canary, replica-ratio routing, 4 pods: the largest canary (50%) adds 2 pods, 1 GPU each.
    cluster = stable_cluster(CANARY, gpus_per_pod=1, gpus_free=1, auto_ready=False)
    cluster.make_ready(A)
    assert cluster.decisions[-1].status.gpu_preflight is None, "a first deploy is not a rollout"
    cluster.deploy(B)
    first = cluster.step()
    record = first.status.gpu_preflight
    assert record is not None and (record.revision, record.result) == (B, "Insufficient")
    assert (record.extra_pods, record.gpus_needed, record.gpus_free) == (2, 2, 1)
    assert reasons(first).count("InsufficientGPUs") == 1
    assert "revision bbbbbbbbbb" in gpu_events(cluster)[0] and "only 1 are free" in gpu_events(cluster)[0]
    # Later passes, whatever the cluster shows now, keep the result and post nothing again.
    for free in (0, 5, None):
        cluster.gpus_free = free
        assert cluster.step().status.gpu_preflight == record
    assert len(gpu_events(cluster)) == 1
    # The shortage does not hold the rollout back: it progresses once the canary's pods are ready.
    cluster.make_ready(B)
    assert cluster.step().status.current_step_index == 1


def test_gpu_preflight_sufficient_and_neutral() -> None:
    cluster = stable_cluster(CANARY, gpus_per_pod=2, gpus_free=4)
    cluster.deploy(B)
    record = cluster.step().status.gpu_preflight
    assert record is not None and record.result == "Sufficient" and record.gpus_needed == 4
    neutral = {**CANARY, "canary": {**CANARY["canary"], "capacity": {"mode": "Neutral", "maxSurgePods": 0}}}
    cluster = stable_cluster(neutral, gpus_per_pod=1, gpus_free=0)
    cluster.deploy(B)
    record = cluster.step().status.gpu_preflight
    assert record is not None and record.result == "Sufficient" and record.gpus_needed == 0
    assert gpu_events(cluster) == []


def test_gpu_preflight_unknown_until_the_cluster_is_read() -> None:
    cluster = stable_cluster(CANARY, gpus_per_pod=1, gpus_free=None)
    cluster.deploy(B)
    record = cluster.step().status.gpu_preflight
    assert record is not None and (record.revision, record.result, record.gpus_needed) == (B, "Unknown", 2)
    assert cluster.step().status.gpu_preflight == record, "nothing to write while still unknown"
    cluster.gpus_free = 0
    checked = cluster.step()
    assert checked.status.gpu_preflight is not None and checked.status.gpu_preflight.result == "Insufficient"
    assert reasons(checked).count("InsufficientGPUs") == 1


def test_gpu_preflight_again_for_each_rollout() -> None:
    cluster = stable_cluster(CANARY, gpus_per_pod=1, gpus_free=0)
    cluster.deploy(B)
    cluster.step()
    cluster.deploy(A, version="1")  # Back to the stable: the rollout is cancelled, the record stays.
    cancelled = cluster.step()
    assert "RolloutCancelled" in reasons(cancelled) and cancelled.status.gpu_preflight is not None
    cluster.deploy(B)  # The same revision again is a new rollout: checked (and reported) again.
    again = cluster.step()
    assert reasons(again).count("InsufficientGPUs") == 1 and len(gpu_events(cluster)) == 2
    cluster.deploy(C)  # A replacement mid-rollout too.
    assert reasons(cluster.step()).count("InsufficientGPUs") == 1


def test_no_gpu_preflight_for_cpu_models() -> None:
    cluster = stable_cluster(CANARY, gpus_free=0)
    cluster.deploy(B)
    assert cluster.step().status.gpu_preflight is None and gpu_events(cluster) == []


def test_history_is_trimmed_but_keeps_live_revisions() -> None:
    cluster = Cluster(spec({}, revision_history_limit=1))
    for rev in ("a", "b", "c", "d"):
        cluster.deploy(rev * 10)
        cluster.run()
    numbers = [h.number for h in cluster.status.history]
    assert numbers == [4, 3, 2]  # stable d, previous c, and one more


# --- a lost or damaged status never takes the serving revision down ---------------------------------------


def test_lost_status_mid_rollout_keeps_the_serving_revision() -> None:
    """status.rollout wiped (kubectl, a restore without status) while B is a canary: A keeps serving."""
    from modeldeploy.rollout.state import RolloutStatus

    cluster = stable_cluster(CANARY)
    cluster.deploy(B)
    cluster.step()
    cluster.status = RolloutStatus()
    d = cluster.step()
    assert d.status.stable_revision == A and d.status.canary_revision == B and "StableAdopted" in reasons(d)
    # The canary starts its steps again over A (B's pod is ready, so step 0's weight 25 applies at once).
    assert d.replicas[A] == 3 and d.weights == {A: 75, B: 25} and d.status.current_step_index == 1


def test_lost_status_and_a_new_spec_roll_out_over_the_serving_revision() -> None:
    from modeldeploy.rollout.state import RolloutStatus

    cluster = stable_cluster(CANARY)
    cluster.status = RolloutStatus.from_status({"stableRevision": 5, "phase": "Completed"})
    cluster.deploy(B)
    d = cluster.step()
    assert d.status.stable_revision == A and d.replicas[A] == 4 and d.weights == {A: 100, B: 0}
    assert d.status.phase == "Progressing" and d.status.current_step_index == 0


def test_a_damaged_stable_revision_mid_rollout_keeps_the_serving_revision() -> None:
    from modeldeploy.rollout.state import RolloutStatus

    cluster = stable_cluster(CANARY)
    cluster.deploy(B)
    cluster.step()
    raw = {**cluster.status.to_status(), "stableRevision": 5}
    cluster.status = RolloutStatus.from_status(raw, cluster.status.history_to_status())
    d = cluster.step()
    assert d.status.stable_revision == A and d.replicas[A] == 3 and d.weights == {A: 75, B: 25}


def test_lost_status_while_paused_scales_nothing_down() -> None:
    from modeldeploy.rollout.state import RolloutStatus

    cluster = stable_cluster(CANARY)
    cluster.status = RolloutStatus()
    cluster.controls = Controls(paused=True)
    d = cluster.step()  # the spec still resolves to A
    assert d.replicas.get(A) == 4
    cluster.status = RolloutStatus()
    cluster.deploy(B)
    d = cluster.step()
    assert d.replicas.get(A) == 4 and d.weights.get(A) == 100


GATED_ANALYSIS = {"maxErrorRatio": 0.01, "count": 1, "failureLimit": 0, "interval": "5s", "minRequests": 1}
GATED_ROLLOUTS = {
    "replicas": {},
    "gateway": {
        "strategy": "Canary",
        "canary": {
            "steps": [{"setWeight": 50}],
            "trafficRouting": {"type": "GatewayAPI", "gatewayAPI": {"parentRefs": [{"name": "gw"}]}},
        },
    },
    "bluegreen": {"strategy": "BlueGreen"},
    "rolling": {"strategy": "RollingUpdate"},
}


def gated_cluster(rollout: dict[str, Any]) -> Cluster:
    """A first deploy behind its first-deploy analysis, run until the analysis passed and A took the traffic."""
    cluster = Cluster(spec({**rollout, "firstDeployAnalysis": True, "analysis": GATED_ANALYSIS}))
    d = cluster.step()
    assert d.weights == {} and d.preview_revision == A
    d = cluster.run()
    assert "FirstDeployPassed" in [r for x in cluster.decisions for r in reasons(x)]
    assert d.status.stable_revision == A and d.weights == {A: 100} and d.preview_revision is None
    assert cluster.deployments[A].was_stable, "the stable's Deployment carries the stable marker"
    return cluster


@pytest.mark.parametrize("ready", [4, 1, 0], ids=["all-ready", "some-ready", "none-ready"])
@pytest.mark.parametrize("rollout", sorted(GATED_ROLLOUTS))
def test_lost_status_after_a_passed_first_deploy_gate_keeps_the_traffic(rollout: str, ready: int) -> None:
    """The 3 a.m. case: the first deploy passed its gate and serves 100%; status.rollout is then lost (a backup
    restored without status, GitOps re-creating the object, a status cleared by hand). The revision stays the
    stable with all the traffic: never behind the preview Service again, no new analysis, nothing scaled.
    Also while its pods are not all ready (a node went away at the same time): a status that was not lost would
    have kept it the stable through that too."""
    cluster = gated_cluster(GATED_ROLLOUTS[rollout])
    cluster.deployments[A] = replace(cluster.deployments[A], ready=ready)
    cluster.auto_ready = False
    cluster.lose_status()
    d = cluster.step()
    assert d.status.stable_revision == A and d.status.canary_revision == ""
    assert d.weights == {A: 100} and d.preview_revision is None and d.replicas == {A: 4}
    assert d.analysis is None and not d.status.analysis_runs
    assert d.status.phase == "Completed"
    assert reasons(d) == ["StableAdopted"]
    (adopted,) = d.events
    assert adopted.type == "Warning" and "stable marker" in adopted.message and A in adopted.message
    again = cluster.step()
    assert again.status == d.status and reasons(again) == [], "adopted once: the next pass writes nothing new"
    assert again.weights == {A: 100} and again.preview_revision is None


def test_a_status_restored_from_before_the_gate_passed_keeps_the_traffic() -> None:
    """An old status (a backup taken while the first-deploy analysis ran) restored over a cluster in which the
    revision has passed it since: the marker wins over the stale gate, which is not run again."""
    cluster = Cluster(spec({"firstDeployAnalysis": True, "analysis": GATED_ANALYSIS}))
    cluster.step()
    d = cluster.step()  # pods ready: the analysis starts
    assert d.status.phase == "Analyzing" and d.status.canary_revision == A
    snapshot = cluster.status
    d = cluster.run()
    assert d.status.stable_revision == A and d.weights == {A: 100}
    cluster.status = snapshot
    d = cluster.step()
    assert d.status.stable_revision == A and d.status.canary_revision == "" and d.weights == {A: 100}
    assert d.preview_revision is None and d.analysis is None and reasons(d) == ["StableAdopted"]


def test_lost_status_during_a_first_deploy_gate_stays_behind_the_preview() -> None:
    """The converse: a first deploy whose analysis has not passed yet (no stable marker) is never adopted when
    the status is lost; it stays behind the preview Service until a new analysis passes."""
    cluster = Cluster(spec({"firstDeployAnalysis": True, "analysis": GATED_ANALYSIS}), next_sample=None)
    cluster.step()
    d = cluster.step()  # A's pods are ready; its analysis waits for a measurement
    assert d.status.phase == "Analyzing" and d.weights == {} and d.preview_revision == A
    assert not cluster.deployments[A].was_stable
    cluster.lose_status()
    d = cluster.step()
    assert d.status.stable_revision == "" and d.status.canary_revision == A
    assert d.weights == {} and d.preview_revision == A and d.replicas == {A: 4}
    assert "StableAdopted" not in reasons(d)
    cluster.next_sample = GOOD
    d = cluster.run()
    assert d.status.stable_revision == A and d.weights == {A: 100} and d.preview_revision is None


@pytest.mark.parametrize(
    "rollout",
    [
        {"strategy": "BlueGreen"},
        {
            "strategy": "Canary",
            "canary": {
                "steps": [{"setWeight": 50}, {"pause": {}}],
                "trafficRouting": {"type": "GatewayAPI", "gatewayAPI": {"parentRefs": [{"name": "gw"}]}},
            },
        },
    ],
    ids=["bluegreen", "gateway"],
)
def test_lost_status_after_a_promotion_keeps_the_new_stable_not_the_warm_previous(rollout: dict[str, Any]) -> None:
    """B was promoted by hand and A is kept warm with one pod; the status is lost. B (the stable marker) stays
    the stable with all the traffic. Without the marker A's warm pod was taken for the stable and B rolled out
    again over it: BlueGreen sent all traffic to that one pod and put B behind the preview, Gateway API gave it
    half the traffic and scaled B down."""
    cluster = stable_cluster({**rollout, "keepPreviousWarm": {"replicas": 1, "seconds": 300}})
    cluster.deploy(B)
    d = cluster.run()
    assert d.status.phase == "Paused" and d.status.canary_revision == B
    cluster.controls = Controls(promote_token="go")
    for _ in range(5):
        d = cluster.step()
        if d.status.stable_revision == B and d.replicas.get(A) == 1:
            break
    assert d.status.stable_revision == B and d.replicas == {A: 1, B: 4} and d.weights == {B: 100}
    assert d.status.previous_revision == A and not cluster.deployments[A].was_stable
    cluster.lose_status()
    d = cluster.step()
    assert d.status.stable_revision == B and d.status.canary_revision == ""
    assert d.weights == {B: 100} and d.replicas[B] == 4 and d.preview_revision is None
    # The promote annotation is still set and lastPromoteToken was lost with the status: it finds nothing to do.
    assert reasons(d) == ["PromoteIgnored", "StableAdopted"] and B in d.events[1].message


def test_lost_status_mid_rollout_adopts_the_marked_stable_even_without_ready_pods() -> None:
    """A (the stable) has no ready pod when the status is lost mid-rollout of B: A is still the stable, as the
    lost status said; B, which has not passed its steps, is never made stable by the loss."""
    cluster = stable_cluster(CANARY)
    cluster.deploy(B)
    cluster.step()
    cluster.deployments[A] = replace(cluster.deployments[A], ready=0)
    cluster.auto_ready = False
    cluster.lose_status()
    d = cluster.step()
    assert d.status.stable_revision == A and d.status.canary_revision == B and "StableAdopted" in reasons(d)
    assert d.weights.get(A, 0) > 0 and d.replicas[A] >= 3


def test_a_rolled_back_canary_never_becomes_stable_when_the_spec_moves_on() -> None:
    """B failed its analysis and traffic went back to A; C arrives while A's pods are all unready."""
    from modeldeploy.rollout.plan import RevisionObservation

    cluster = stable_cluster(CANARY)
    cluster.deploy(B)
    cluster.next_sample = BAD
    for _ in range(40):
        d = cluster.measure_if_asked(cluster.step())
        if d.status.phase == "RollingBack" and d.status.canary_weight == 0:  # traffic is back on A
            break
        cluster.advance(30)
    assert d.status.phase == "RollingBack" and d.status.canary_weight == 0
    cluster.deployments[A] = RevisionObservation(desired=4, ready=0)
    cluster.auto_ready = False
    cluster.deploy(C)
    d = cluster.step()
    assert d.status.stable_revision == A and d.status.canary_revision == C
    assert d.weights.get(B, 0) == 0 and d.replicas.get(B, 0) == 0


def test_editing_the_steps_mid_rollout_restarts_them() -> None:
    """The revision (model, runtime) stays; the steps change under a canary at step 3: no analysis is skipped."""
    four = {**CANARY, "canary": {"steps": [{"setWeight": 25}, {"analysis": {}}, {"setWeight": 50}, {"analysis": {}}]}}
    cluster = stable_cluster(four)
    cluster.deploy(B)
    for _ in range(40):
        d = cluster.measure_if_asked(cluster.step())
        if d.status.current_step_index == 3:
            break
        cluster.advance(30)
    assert d.status.current_step_index == 3
    cluster.spec = spec({**CANARY, "canary": {"steps": [{"setWeight": 50}, {"analysis": {}}]}})
    cluster.next_sample = BAD
    d = cluster.run(steps=40)
    assert d.status.stable_revision == A and d.status.rejection(B) is not None
    assert d.status.rejected_revisions[-1].reason == "AnalysisFailed"


# --- a metric source that keeps failing (consecutiveErrorLimit) -------------------------------------------


def next_request(cluster: Cluster) -> Decision:
    """Step, following the timers, until the state machine asks for a measurement."""
    d = cluster.step()
    for _ in range(20):
        if d.analysis is not None:
            return d
        cluster.advance(max(d.requeue_after or 30, 1))
        d = cluster.step()
    raise AssertionError("no measurement was asked for")


def with_analysis(**changes: Any) -> dict[str, Any]:
    return {**CANARY, "analysis": {**CANARY["analysis"], **changes}}


def test_measurement_errors_past_the_consecutive_error_limit_roll_back() -> None:
    cluster = stable_cluster(CANARY)  # consecutiveErrorLimit defaults to 4: the fifth error in a row fails
    cluster.deploy(B)
    d = next_request(cluster)
    for attempt in range(5):
        assert d.analysis is not None and (d.analysis.seq, d.analysis.attempt) == (0, attempt)
        d = cluster.fail_if_asked(d, f"Prometheus query at http://prom:9090/api/v1/query failed: refused #{attempt}")
        assert "MeasurementFailed" in reasons(d)
        run = d.status.analysis_runs[-1]
        assert run.measurements == () and run.last_error.endswith(f"refused #{attempt}")
        if attempt < 4:
            assert d.status.phase == "Analyzing" and run.phase == "Running" and run.consecutive_errors == attempt + 1
            assert d.analysis is None and d.requeue_after == 30, "the next attempt waits min(interval, 30s)"
            cluster.advance(30)
            d = cluster.step()
    assert run.phase == "Failed" and run.consecutive_errors == 5 and "consecutiveErrorLimit 4" in run.message
    assert d.status.phase == "RollingBack" and "RollingBack" in reasons(d)
    rejection = d.status.rejection(B)
    assert rejection is not None and rejection.reason == "MeasurementErrors"
    assert "refused #4" in rejection.message, "the message names the last error"
    warning = next(e for e in d.events if e.reason == "MeasurementErrors")
    assert warning.type == "Warning" and "refused #4" in warning.message
    d = cluster.run()
    assert d.status.phase == "RolledBack" and d.weights == {A: 100} and d.replicas.get(B, 0) == 0


def test_a_consecutive_error_limit_of_zero_fails_on_the_first_error() -> None:
    cluster = stable_cluster(with_analysis(consecutiveErrorLimit=0))
    cluster.deploy(B)
    d = cluster.fail_if_asked(next_request(cluster))
    rejection = d.status.rejection(B)
    assert d.status.phase == "RollingBack" and rejection is not None and rejection.reason == "MeasurementErrors"


def test_a_measurement_taken_resets_the_error_count() -> None:
    cluster = stable_cluster(with_analysis(consecutiveErrorLimit=2, count=3))
    cluster.deploy(B)
    d = cluster.fail_if_asked(next_request(cluster))
    again = cluster.step(cluster.last_measurement)
    assert again.status.analysis_runs[-1].consecutive_errors == 1, "the same error delivered twice counts once"
    assert "MeasurementFailed" not in reasons(again)
    cluster.advance(29)
    assert cluster.step().analysis is None
    cluster.advance(1)
    d = cluster.fail_if_asked(cluster.step())
    assert d.status.phase == "Analyzing" and d.status.analysis_runs[-1].consecutive_errors == 2
    cluster.advance(30)
    d = cluster.measure_if_asked(cluster.step())
    run = d.status.analysis_runs[-1]
    assert (run.consecutive_errors, run.last_error, run.last_error_at) == (0, "", None)
    assert [m.outcome for m in run.measurements] == ["Pass"]
    for _ in range(2):  # two errors in a row are tolerated again
        cluster.advance(30)
        d = cluster.fail_if_asked(cluster.step())
        assert d.status.phase == "Analyzing"
    cluster.advance(30)
    d = cluster.fail_if_asked(cluster.step())
    assert d.status.phase == "RollingBack" and d.status.rejected_revisions[-1].reason == "MeasurementErrors"


def test_a_new_analysis_run_starts_without_errors() -> None:
    cluster = stable_cluster(with_analysis(consecutiveErrorLimit=2))
    cluster.deploy(B)
    d = cluster.fail_if_asked(next_request(cluster))
    cluster.advance(30)
    d = cluster.fail_if_asked(cluster.step())
    assert d.status.analysis_runs[-1].consecutive_errors == 2
    cluster.deploy(C)  # the rollout starts again for C: a new run, no errors carried over
    d = next_request(cluster)
    assert d.analysis is not None and d.analysis.attempt == 0 and d.analysis.revision == C
    for _ in range(2):
        d = cluster.fail_if_asked(d)
        assert d.status.phase == "Analyzing" and d.status.canary_revision == C
        cluster.advance(30)
        d = cluster.step()
    assert d.status.analysis_runs[-1].consecutive_errors == 2


def test_the_error_count_lives_in_status_and_an_older_status_counts_zero() -> None:
    from modeldeploy.rollout.state import RolloutStatus

    cluster = stable_cluster(with_analysis(consecutiveErrorLimit=1))
    cluster.deploy(B)
    d = cluster.fail_if_asked(next_request(cluster))
    raw = d.status.to_status()
    stored = raw["analysisRuns"][-1]
    assert stored["consecutiveErrors"] == 1 and "refused" in stored["lastError"] and stored["lastErrorAt"]
    # A restart reads the count back: one more error fails the run.
    cluster.status = RolloutStatus.from_status(raw, d.status.history_to_status())
    cluster.advance(30)
    assert cluster.fail_if_asked(cluster.step()).status.phase == "RollingBack"
    # A status written by an operator without the field: no errors so far.
    for key in ("consecutiveErrors", "lastError", "lastErrorAt"):
        del stored[key]
    old = RolloutStatus.from_status(raw, d.status.history_to_status())
    assert old.analysis_runs[-1].consecutive_errors == 0 and old.analysis_runs[-1].last_error == ""


# --- spec.paused stops the clock of timed waits -----------------------------------------------------------


def test_spec_paused_stops_the_clock_of_a_timed_pause_step() -> None:
    cluster = stable_cluster(CANARY)
    cluster.deploy(B)
    cluster.step()
    d = cluster.step()  # weight 25; the 1m pause step starts
    assert d.status.current_step_index == 1 and d.status.phase == "Paused" and d.requeue_after == 60
    cluster.advance(20)
    cluster.controls = Controls(paused=True)
    d = cluster.step()
    assert d.status.phase == "Paused" and "40s" in d.status.message, d.status.message
    cluster.advance(3600)  # a long manual pause
    assert cluster.step().status.current_step_index == 1
    cluster.controls = Controls()
    d = cluster.step()
    assert "Resumed" in reasons(d) and d.status.current_step_index == 1 and d.status.phase == "Paused"
    assert d.requeue_after == 40, "the pause step goes on with what was left of it"
    assert "40s" in next(e.message for e in d.events if e.reason == "Resumed")
    cluster.advance(25)
    cluster.controls = Controls(paused=True)  # paused a second time: the clock stops again
    cluster.step()
    cluster.advance(600)
    cluster.controls = Controls()
    d = cluster.step()
    assert d.status.current_step_index == 1 and d.requeue_after == 15
    cluster.advance(14)
    assert cluster.step().status.current_step_index == 1
    cluster.advance(1)
    d = cluster.step()
    assert d.status.current_step_index == 2 and "StepCompleted" in reasons(d)


def test_the_stopped_pause_clock_survives_a_restart() -> None:
    """Everything is derived from status: a fresh operator resumes with the same time left."""
    from modeldeploy.rollout.plan import next_rollout
    from modeldeploy.rollout.state import RolloutStatus

    cluster = stable_cluster(CANARY)
    cluster.deploy(B)
    cluster.step()
    cluster.step()
    cluster.advance(50)
    cluster.controls = Controls(paused=True)
    cluster.step()
    cluster.advance(900)
    stored = json.loads(json.dumps(cluster.status.to_status()))
    restarted = RolloutStatus.from_status(stored, cluster.status.history_to_status())
    d = next_rollout(cluster.spec, restarted, cluster.observed(), cluster.now, Controls())
    assert d.status.current_step_index == 1 and d.requeue_after == 10


def test_spec_paused_stops_the_blue_green_auto_promotion_clock() -> None:
    cluster = stable_cluster({"strategy": "BlueGreen", "blueGreen": {"autoPromotionEnabled": True,
                                                                       "autoPromotionSeconds": 60}})  # fmt: skip
    cluster.deploy(B)
    cluster.step()
    d = cluster.step()
    assert d.status.phase == "Paused" and d.requeue_after == 60 and "auto-promotion in 60s" in d.status.message
    cluster.advance(30)
    cluster.controls = Controls(paused=True)
    cluster.step()
    cluster.advance(3600)
    cluster.controls = Controls()
    d = cluster.step()
    assert d.status.stable_revision == A and d.requeue_after == 30, "auto-promotion goes on with 30s left"
    cluster.advance(30)
    assert cluster.step().status.stable_revision == B


# --- a rollback hands the traffic back only as fast as the stable's pods can take it -----------------------


def canary_serving(raw: dict[str, Any]) -> tuple[Cluster, Decision]:
    """The stable A on ready pods, and the canary B at its first step with its pods ready; from then on pods become
    ready only with ``make_ready``."""
    cluster = stable_cluster(raw, auto_ready=False)
    cluster.make_ready(A)
    cluster.deploy(B)
    cluster.step()
    cluster.make_ready(B)
    return cluster, cluster.step()


def canary_at_25(raw: dict[str, Any] = CANARY) -> Cluster:
    """Replica-ratio routing, 4 pods: the canary B serves 25% with 1 pod, the stable A 75% with 3."""
    cluster, d = canary_serving(raw)
    assert d.weights == {A: 75, B: 25} and d.replicas == {A: 3, B: 1} and d.status.canary_weight == 25
    return cluster


def test_a_rollback_keeps_the_canary_serving_until_the_stable_can_take_its_traffic() -> None:
    cluster = canary_at_25()
    cluster.controls = Controls(abort=True)
    d = cluster.step()
    assert d.status.phase == "RollingBack" and "RollingBack" in reasons(d)
    assert d.replicas == {A: 4, B: 1}, "the stable scales back up; the canary keeps its pod"
    assert d.weights == {A: 75, B: 25}, "with 3/4 stable pods ready, the canary still serves its share"
    assert "3/4" in d.status.message and d.requeue_after == 10
    d = cluster.step()  # A's fourth pod is still starting: nothing moves
    assert d.weights == {A: 75, B: 25} and d.replicas == {A: 4, B: 1} and d.status.phase == "RollingBack"
    cluster.make_ready(A)
    d = cluster.step()  # A can serve everything: traffic first ...
    assert d.status.phase == "RollingBack" and d.weights == {A: 100} and d.replicas == {A: 4, B: 1}
    assert d.status.canary_weight == 0
    d = cluster.step()  # ... then the canary goes
    assert d.status.phase == "RolledBack" and d.replicas == {A: 4, B: 0} and d.weights == {A: 100}


def test_a_rollback_does_not_wait_for_a_canary_that_serves_nothing() -> None:
    """A crash-looping canary (or one without ready pods) gives no capacity worth waiting for."""
    cluster = canary_at_25()
    cluster.crash.add(B)
    d = cluster.step()
    assert d.status.phase == "RollingBack" and d.status.rejected_revisions[-1].reason == "CrashLoop"
    assert d.weights == {A: 100} and d.replicas == {A: 4, B: 1}
    assert cluster.step().replicas == {A: 4, B: 0}


def test_a_rollback_waits_for_the_stable_at_most_the_progress_deadline() -> None:
    cluster = canary_at_25()  # progressDeadlineSeconds 120
    cluster.controls = Controls(abort=True)
    assert cluster.step().weights == {A: 75, B: 25}
    cluster.advance(120)
    d = cluster.step()
    assert d.weights == {A: 75, B: 25} and "StableNotReady" not in reasons(d)
    cluster.advance(1)
    d = cluster.step()  # A's pod never became ready: the rollback finishes anyway, and says so
    assert d.weights == {A: 100} and d.replicas == {A: 4, B: 1}
    warning = next(e for e in d.events if e.reason == "StableNotReady")
    assert warning.type == "Warning" and "3/4" in warning.message
    assert cluster.step().status.phase == "RolledBack"


def test_a_rollback_hands_exact_weights_back_as_the_stable_pods_become_ready() -> None:
    """Gateway API, Neutral capacity: the stable serves 50% with 2 pods, within N + maxSurgePods = 5."""
    raw = {
        **CANARY,
        "canary": {
            "steps": [{"setWeight": 50}, {"pause": {}}],
            "capacity": {"mode": "Neutral", "maxSurgePods": 1},
            "trafficRouting": {"type": "GatewayAPI", "gatewayAPI": {"parentRefs": [{"name": "gw"}]}},
        },
    }
    cluster, d = canary_serving(raw)
    assert d.weights == {A: 50, B: 50} and d.replicas == {A: 2, B: 2}
    cluster.controls = Controls(abort=True)
    d = cluster.step()  # the budget lets the stable grow to 3 while the canary keeps its 2 pods
    assert d.replicas == {A: 3, B: 2} and d.weights == {A: 50, B: 50}
    cluster.make_ready(A)
    d = cluster.step()  # the stable serves 75%; the canary gives back the pod its 25% no longer needs, for A's 4th
    assert d.weights == {A: 75, B: 25} and d.replicas == {A: 4, B: 1} and d.status.phase == "RollingBack"
    cluster.make_ready(A)
    d = cluster.step()  # 4 ready stable pods: all the traffic, never on fewer than 4 ready pods in all
    assert d.weights == {A: 100} and d.replicas == {A: 4, B: 1}
    d = cluster.step()
    assert d.status.phase == "RolledBack" and d.replicas == {A: 4, B: 0}


def neutral_at_50(routing: dict[str, Any], surge: int) -> Cluster:
    raw = {
        **CANARY,
        "canary": {
            "steps": [{"setWeight": 50}, {"pause": {}}],
            "capacity": {"mode": "Neutral", "maxSurgePods": surge},
            "trafficRouting": routing,
        },
    }
    cluster, d = canary_serving(raw)
    assert d.replicas == {A: 2, B: 2} and d.status.canary_weight == 50
    return cluster


def test_a_neutral_rollback_with_replica_ratio_routing_keeps_n_ready_pods_throughout() -> None:
    cluster = neutral_at_50({"type": "Replicas"}, surge=1)
    cluster.controls = Controls(abort=True)
    d = cluster.step()
    assert d.replicas == {A: 3, B: 2} and d.status.canary_weight == 50
    cluster.make_ready(A)
    d = cluster.step()  # 3 stable + 2 canary ready: the canary needs only 1 of its pods for 4 in all
    assert d.replicas == {A: 4, B: 1} and d.status.canary_weight > 0 and d.status.phase == "RollingBack"
    d = cluster.step()  # nothing new is ready: nothing moves
    assert d.replicas == {A: 4, B: 1} and d.status.canary_weight > 0
    cluster.make_ready(A)
    d = cluster.step()
    assert d.weights == {A: 100} and d.replicas == {A: 4, B: 1}
    assert cluster.step().replicas == {A: 4, B: 0}


def test_a_neutral_rollback_without_surge_moves_the_traffic_once_the_budget_is_spent() -> None:
    """maxSurgePods 0: no stable pod can start beside the canary's 2, so the stable's 2 ready pods take it all at
    once and the canary goes next (documented in docs/rollouts.md)."""
    cluster = neutral_at_50({"type": "GatewayAPI", "gatewayAPI": {"parentRefs": [{"name": "gw"}]}}, surge=0)
    cluster.controls = Controls(abort=True)
    d = cluster.step()
    assert d.weights == {A: 100} and d.replicas == {A: 2, B: 2}
    assert cluster.step().replicas == {A: 4, B: 0}


def test_a_rolled_back_rolling_update_keeps_the_new_pods_until_the_old_ones_are_back() -> None:
    cluster = stable_cluster({"rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}, auto_ready=False)
    cluster.make_ready(A)
    cluster.deploy(B)
    for _ in range(4):  # two of the four pods replaced
        cluster.step()
        if cluster.deployments.get(B) is not None and cluster.deployments[B].ready >= 2:
            break
        cluster.make_ready(B)
    d = cluster.step()
    assert d.replicas[A] == 2 and cluster.deployments[B].ready >= 2
    cluster.controls = Controls(abort=True)
    d = cluster.step()
    assert d.status.phase == "RollingBack" and d.replicas[A] == 4 and d.replicas[B] >= 2
    assert set(d.weights) == {A, B} and min(d.weights.values()) > 0, "the Service keeps selecting both revisions"
    cluster.make_ready(A)
    d = cluster.step()
    assert d.weights == {A: 100} and d.replicas[B] >= 2
    assert cluster.step().replicas == {A: 4, B: 0}


def test_measurement_errors_fail_a_first_deploy_gate_and_a_blue_green_pre_promotion() -> None:
    analysis = {"maxErrorRatio": 0.01, "count": 1, "failureLimit": 0, "interval": "5s", "minRequests": 1,
                "consecutiveErrorLimit": 1}
    cluster = Cluster(spec({"firstDeployAnalysis": True, "analysis": analysis}))
    d = cluster.step()
    for _ in range(10):
        if d.status.phase == "RolledBack":
            break
        d = cluster.fail_if_asked(d)
        cluster.advance(max(d.requeue_after or 5, 1))
        d = cluster.step()
    assert d.status.phase == "RolledBack" and d.weights == {}
    assert d.status.rejected_revisions[-1].reason == "MeasurementErrors"

    cluster = stable_cluster({"strategy": "BlueGreen", "analysis": analysis})
    cluster.deploy(B)
    d = cluster.step()
    for _ in range(10):
        d = cluster.fail_if_asked(d)
        if d.status.phase == "RollingBack":
            break
        cluster.advance(max(d.requeue_after or 5, 1))
        d = cluster.step()
    assert d.status.phase == "RollingBack" and d.status.rejected_revisions[-1].reason == "MeasurementErrors"
    assert d.weights == {A: 100}
