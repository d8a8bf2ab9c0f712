"""spec.paused during a promotion holds the promotion; resume (also after an operator restart) finishes it.

A promotion (the steps done, a promote token, a manual rollback to a history revision) is not something the
step index can recompute: on resume the rollout must go on promoting, not walk the steps again.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from rollout_harness import CANARY, A, B, C, Cluster, reasons, spec

from modeldeploy.rollout.plan import Controls, Decision, RevisionObservation
from modeldeploy.rollout.state import RolloutStatus

BLUE_GREEN: dict[str, Any] = {"strategy": "BlueGreen", "progressDeadlineSeconds": 120}
ROLLING: dict[str, Any] = {"rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}, "progressDeadlineSeconds": 120}
PAUSED, RESUMED = Controls(paused=True), Controls()
# Whatever walks the steps again; none of it may happen after a promotion resumes.
STEP_REASONS = {"StepCompleted", "StepsCompleted", "AnalysisStarted", "PreviewReady", "StepsChanged"}


def rollout_of_b(raw: dict[str, Any]) -> Cluster:
    """A stable on 4 ready pods, and B rolling out over it with half of its pods (at least 1) ready. Pods become
    ready only with ``make_ready``."""
    cluster = Cluster(spec(raw), auto_ready=False)
    cluster.step()
    cluster.make_ready(A)
    assert cluster.step().status.stable_revision == A
    cluster.deploy(B)
    cluster.step()
    desired = cluster.deployments[B].desired
    cluster.deployments[B] = RevisionObservation(desired=desired, ready=max(1, desired // 2))
    d = cluster.step()
    assert d.status.canary_revision == B and d.status.phase in ("Paused", "Progressing"), d.status
    return cluster


def promote(cluster: Cluster, token: str = "go") -> Decision:
    """A full promotion (``kubectl modeldeploy promote``): B scales to 4 pods, 1 or 2 of them ready."""
    cluster.controls = Controls(promote_token=token)
    d = cluster.step()
    assert "PromoteRequested" in reasons(d) and d.status.phase == "Promoting" and d.replicas[B] == 4, d
    return d


def pause_during_promotion(cluster: Cluster, seconds: float = 60) -> Decision:
    """spec.paused while promoting, held for ``seconds`` (the progress deadline is 120s)."""
    before = dict(cluster.deployments)
    cluster.controls = Controls(paused=True, promote_token=cluster.controls.promote_token)
    d = cluster.step()
    assert d.status.phase == "Paused" and d.status.paused_at is not None and "Paused" in reasons(d)
    assert d.replicas == {r: o.desired for r, o in before.items()}, "pods are left as they are"
    cluster.advance(seconds)
    held = cluster.step()
    assert held.status.phase == "Paused" and held.analysis is None and not held.events, held.events
    assert held.replicas == d.replicas and held.weights == d.weights
    return held


def resume(cluster: Cluster) -> Decision:
    cluster.controls = Controls(promote_token=cluster.controls.promote_token)
    d = cluster.step()
    assert d.status.phase == "Promoting" and d.status.paused_at is None, (d.status.phase, d.status.message)
    assert reasons(d) == ["Resumed"], reasons(d)
    return d


def finish(cluster: Cluster) -> Decision:
    cluster.make_ready(B)
    d = cluster.step()
    assert d.status.phase == "Completed" and d.status.stable_revision == B and d.weights == {B: 100}, d.status
    assert "Promoted" in reasons(d)
    return d


def no_steps_walked(cluster: Cluster, since: int) -> None:
    walked = [r for d in cluster.decisions[since:] for r in reasons(d) if r in STEP_REASONS]
    assert walked == [], f"the steps ran again after the promotion was requested: {walked}"


@pytest.mark.parametrize("raw", [CANARY, BLUE_GREEN, ROLLING], ids=["Canary", "BlueGreen", "RollingUpdate"])
def test_spec_paused_during_a_full_promotion_holds_it_and_resume_finishes_it(raw: dict[str, Any]) -> None:
    cluster = rollout_of_b(raw)
    promoting = promote(cluster)
    index = promoting.status.current_step_index
    start = len(cluster.decisions)
    pause_during_promotion(cluster)
    d = resume(cluster)
    assert d.status.current_step_index == index and d.replicas[B] == 4
    finish(cluster)
    no_steps_walked(cluster, start)


@pytest.mark.parametrize("raw", [CANARY, BLUE_GREEN, ROLLING], ids=["Canary", "BlueGreen", "RollingUpdate"])
def test_time_paused_during_a_promotion_does_not_count_against_the_progress_deadline(raw: dict[str, Any]) -> None:
    cluster = rollout_of_b(raw)
    promote(cluster)
    cluster.advance(100)  # 100 of the 120s spent waiting for B's pods before the pause
    pause_during_promotion(cluster, seconds=7200)
    resume(cluster)
    cluster.advance(119)  # the deadline clock restarted on resume
    d = cluster.step()
    assert d.status.phase == "Promoting" and d.status.rejection(B) is None, d.status
    finish(cluster)


def test_spec_paused_after_the_last_step_holds_the_promotion() -> None:
    cluster = rollout_of_b(CANARY)
    d = cluster.step()
    for _ in range(20):  # through the pause, the analysis and the last setWeight
        if d.status.phase == "Promoting":
            break
        cluster.advance(max(d.requeue_after or 30, 1))
        d = cluster.measure_if_asked(cluster.step())
        if d.status.phase != "Promoting":
            cluster.make_ready(B)
    assert d.status.phase == "Promoting" and "StepsCompleted" in reasons(d) and d.replicas[B] == 4
    runs = len(d.status.analysis_runs)
    start = len(cluster.decisions)
    pause_during_promotion(cluster)
    resume(cluster)
    d = finish(cluster)
    no_steps_walked(cluster, start)
    assert len(d.status.analysis_runs) == runs


def test_the_blue_green_preview_stays_while_a_promotion_is_paused() -> None:
    cluster = rollout_of_b(BLUE_GREEN)
    assert promote(cluster).preview_revision == B
    held = pause_during_promotion(cluster)
    assert held.preview_revision == B and held.weights == {A: 100, B: 0}
    assert resume(cluster).preview_revision == B
    finish(cluster)


def test_a_promotion_requested_while_paused_waits_for_resume() -> None:
    cluster = rollout_of_b(CANARY)
    cluster.controls = PAUSED
    assert cluster.step().status.phase == "Paused"
    cluster.controls = Controls(paused=True, promote_token="go")
    d = cluster.step()
    assert "PromoteRequested" in reasons(d) and d.status.phase == "Paused" and d.status.last_promote_token == "go"
    assert d.replicas == {A: 3, B: 1} and d.weights == {A: 75, B: 25}, "held: nothing scales while paused"
    start = len(cluster.decisions)
    cluster.advance(600)
    assert cluster.step().status.phase == "Paused"
    d = resume(cluster)
    assert d.replicas[B] == 4
    finish(cluster)
    no_steps_walked(cluster, start)


def test_a_manual_rollback_paused_before_it_finishes_goes_on_after_resume() -> None:
    """``rollbackTo`` runs a history revision as a promotion (steps skipped): a pause must not bring them back."""
    cluster = Cluster(spec(CANARY))
    cluster.run()
    cluster.deploy(B)
    assert cluster.run().status.stable_revision == B
    cluster.auto_ready = False
    cluster.controls = Controls(rollback_to=1)
    d = cluster.step()
    assert "RollbackRequested" in reasons(d) and d.status.phase == "Promoting" and d.replicas[A] == 4
    start = len(cluster.decisions)
    cluster.controls = Controls(rollback_to=1, paused=True)
    assert cluster.step().status.phase == "Paused"
    cluster.advance(7200)
    cluster.step()
    cluster.controls = Controls(rollback_to=1)
    d = cluster.step()
    assert reasons(d) == ["Resumed"] and d.status.phase == "Promoting"
    cluster.make_ready(A)
    d = cluster.step()
    assert d.status.stable_revision == A and d.weights == {A: 100} and "RolledBackToRevision" in reasons(d)
    no_steps_walked(cluster, start)


def test_steps_edited_while_a_promotion_is_paused_do_not_restart_it() -> None:
    cluster = rollout_of_b(CANARY)
    promote(cluster)
    start = len(cluster.decisions)
    pause_during_promotion(cluster)
    raw = {**CANARY, "canary": {"steps": [{"setWeight": 10}, {"pause": {}}]}}
    cluster.spec = spec(raw)
    assert cluster.step().status.phase == "Paused"
    resume(cluster)
    finish(cluster)
    no_steps_walked(cluster, start)


def test_a_new_revision_while_a_promotion_is_paused_starts_from_the_first_step() -> None:
    """The held promotion belonged to B: C is a new rollout (and it stays paused). B had traffic (25%: 1 ready pod
    beside the stable's 3): it goes back to the stable as the stable's pods become ready, and B is removed in the
    pass that starts C."""
    cluster = rollout_of_b(CANARY)
    promote(cluster)
    pause_during_promotion(cluster)
    cluster.deploy(C)
    d = cluster.step()
    assert "RolloutReplaced" in reasons(d) and d.status.canary_revision == B and d.status.phase == "RollingBack"
    assert d.weights == {A: 75, B: 25} and d.replicas == {A: 4, B: 4}, d
    cluster.make_ready(A)
    d = cluster.step()
    assert d.status.canary_revision == B and d.weights == {A: 100} and d.replicas == {A: 4, B: 4}, d
    d = cluster.step()
    assert d.status.canary_revision == C and d.status.phase == "Paused", d.status
    assert d.weights == {A: 100, C: 0} and d.replicas == {A: 4, B: 0, C: 0}, d
    assert d.status.current_step_index == 0
    cluster.controls = Controls(promote_token="go")
    d = cluster.step()
    assert d.status.phase == "Progressing" and d.status.current_step_index == 0, d.status


def test_a_paused_promotion_says_so_in_status_and_events() -> None:
    cluster = rollout_of_b(CANARY)
    promote(cluster)
    cluster.controls = Controls(paused=True, promote_token="go")
    d = cluster.step()
    assert d.status.message == (
        f"Promotion of revision {B} paused by spec.paused; pods are left as they are, the promotion goes on after "
        "resume"
    )
    assert d.events[0].message == f"Rollout of revision {B} paused during its promotion"
    assert d.status.to_status()["pausedPhase"] == "Promoting"
    cluster.controls = Controls(promote_token="go")
    d = cluster.step()
    assert d.events[0].message == f"Rollout of revision {B} resumed; the promotion goes on"
    assert "pausedPhase" not in d.status.to_status()
    assert d.status.message.startswith(f"Promoting revision {B}"), d.status.message


@pytest.mark.parametrize("raw", [CANARY, BLUE_GREEN], ids=["Canary", "BlueGreen"])
def test_a_paused_promotion_survives_an_operator_restart(raw: dict[str, Any]) -> None:
    """A fresh state machine built from the stored status alone (and what the cluster shows) resumes exactly."""
    cluster = rollout_of_b(raw)
    promote(cluster)
    pause_during_promotion(cluster, seconds=7200)
    stored = json.loads(json.dumps(cluster.status.to_status()))
    history = json.loads(json.dumps(cluster.status.history_to_status()))
    restarted = Cluster(
        spec(raw),
        target=cluster.target,
        status=RolloutStatus.from_status(stored, history),
        now=cluster.now,
        auto_ready=False,
        deployments=dict(cluster.deployments),
        controls=Controls(paused=True, promote_token="go"),
    )
    held = restarted.step()
    assert held.status.phase == "Paused" and not held.events and held.status == cluster.status
    restarted.advance(3600)
    resume(restarted)
    finish(restarted)
    no_steps_walked(restarted, 0)
