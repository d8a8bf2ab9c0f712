"""Scenario tests of the rollout state machine, step by step."""

from __future__ import annotations

from typing import Any

from rollout_harness import BAD, THIN, Cluster, reasons, spec

from modeldeploy.rollout.plan import Controls

A, B, C = "aaaaaaaaaa", "bbbbbbbbbb", "cccccccccc"
CANARY: dict[str, Any] = {
    "strategy": "Canary",
    "canary": {"steps": [{"setWeight": 25}, {"pause": {"duration": "1m"}}, {"analysis": {}}, {"setWeight": 50}]},
    "analysis": {"maxErrorRatio": 0.01, "interval": "30s", "count": 2, "failureLimit": 0, "minRequests": 10},
    "progressDeadlineSeconds": 120,
}


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
    assert d.analysis is not None and d.analysis.seq == 0 and d.analysis.stable_revision == A
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
    rolling = next(x for x in cluster.decisions if x.status.phase == "RollingBack")
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
    assert "RolloutReplaced" in reasons(d) and d.status.canary_revision == C
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
            "analysis": {"maxErrorRatio": 0.01, "count": 1, "interval": "10s", "minRequests": 1},
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
                "analysis": {"maxErrorRatio": 0.01, "count": 1, "interval": "5s", "minRequests": 1},
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


def test_a_rolled_back_canary_never_becomes_stable_when_the_spec_moves_on() -> None:
    """B failed its analysis and traffic went back to A; C arrives while A's pods are all unready."""
    from modeldeploy.rollout.plan import RevisionObservation

    cluster = stable_cluster(CANARY)
    cluster.deploy(B)
    cluster.next_sample = BAD
    for _ in range(40):
        d = cluster.measure_if_asked(cluster.step())
        if d.status.phase == "RollingBack":
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
