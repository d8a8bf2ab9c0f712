"""spec.paused during a first deploy behind its gate (``firstDeployAnalysis``).

The revision has pods and runs behind the preview Service only until its analysis passes. A pause must hold that
gate as it holds a rollout: no measurement is taken, the revision does not start serving, the progress deadline
stops, and a promote given while paused takes effect on resume, never at once.
"""

from __future__ import annotations

from typing import Any

from rollout_harness import BAD, GOOD, A, B, Cluster, reasons, spec

from modeldeploy.rollout.plan import Controls, Decision

ANALYSIS: dict[str, Any] = {"maxErrorRatio": 0.01, "count": 3, "failureLimit": 0, "interval": "30s", "minRequests": 1}
GATED: dict[str, Any] = {"firstDeployAnalysis": True, "analysis": ANALYSIS, "progressDeadlineSeconds": 120}


def analyzing(measurements: int = 1) -> Cluster:
    """A's first deploy: its pods are ready and its analysis has taken ``measurements`` good measurements."""
    cluster = Cluster(spec(GATED))
    cluster.step()
    d = cluster.step()
    assert d.status.phase == "Analyzing" and d.preview_revision == A
    for _ in range(measurements):
        cluster.advance(30)
        d = cluster.step()
        assert d.analysis is not None
        d = cluster.measure_if_asked(d)
    assert cluster.status.analysis_runs[-1].taken == measurements
    assert d.status.phase == "Analyzing" and d.status.stable_revision == "" and d.weights == {}
    return cluster


def pause(cluster: Cluster, promote_token: str = "") -> Decision:
    cluster.controls = Controls(paused=True, promote_token=promote_token)
    d = cluster.step()
    assert d.status.phase == "Paused" and d.status.paused_at is not None, (d.status.phase, d.status.message)
    return d


def held(cluster: Cluster, d: Decision) -> None:
    """Nothing moves while paused: no measurement asked for, no traffic, A's pods stay behind the preview."""
    assert d.analysis is None and d.weights == {} and d.preview_revision == A and d.replicas == {A: 4}
    assert d.status.stable_revision == "" and d.status.canary_revision == A
    assert "spec.paused" in d.status.message


def test_a_pause_holds_the_first_deploy_gate_and_resume_goes_on_with_its_analysis() -> None:
    cluster = analyzing()
    run = cluster.status.analysis_runs[-1]
    d = pause(cluster)
    assert reasons(d) == ["Paused"] and d.events[0].message.startswith(f"First deploy of revision {A} paused")
    held(cluster, d)
    for _ in range(10):  # an hour: far past the progress deadline and every measurement's due time
        cluster.advance(360)
        d = cluster.step()
        held(cluster, d)
        assert not d.events
    assert cluster.status.analysis_runs[-1] == run, "the run takes no measurement while paused"
    cluster.controls = Controls()
    d = cluster.step()
    assert reasons(d)[0] == "Resumed" and d.status.paused_at is None
    assert d.status.phase == "Analyzing" and d.analysis is not None, "the measurement that was due is asked for"
    assert cluster.status.analysis_runs[-1].id == run.id, "the same run goes on"
    d = cluster.run()
    assert d.status.stable_revision == A and d.weights == {A: 100} and d.preview_revision is None
    passed = [r for x in cluster.decisions for r in reasons(x) if r == "FirstDeployPassed"]
    assert passed == ["FirstDeployPassed"]
    assert cluster.status.analysis_runs[-1].taken == 3


def test_a_bad_revision_is_still_rejected_after_resume() -> None:
    """The pause hides nothing: after resume the analysis goes on and a bad revision never takes traffic."""
    cluster = analyzing()
    pause(cluster)
    cluster.advance(600)
    cluster.controls = Controls()
    cluster.next_sample = BAD
    d = cluster.run()
    assert d.status.phase == "RolledBack" and d.status.stable_revision == ""
    assert d.status.rejection(A) is not None and d.replicas == {A: 0}
    assert all(not x.weights for x in cluster.decisions), "A never took traffic"


def test_a_promote_given_while_paused_takes_effect_on_resume() -> None:
    cluster = analyzing()
    pause(cluster)
    cluster.controls = Controls(paused=True, promote_token="go")
    d = cluster.step()
    assert "PromoteRequested" in reasons(d)
    assert "when spec.paused is cleared" in d.events[0].message
    assert d.status.paused_phase == "Promoting"
    held(cluster, d)
    cluster.advance(300)
    d = cluster.step()
    held(cluster, d)
    assert not d.events and d.status.paused_phase == "Promoting"
    cluster.controls = Controls(promote_token="go")
    d = cluster.step()
    assert reasons(d) == ["Resumed"] and "promotion goes on" in d.events[0].message
    assert d.status.stable_revision == A and d.weights == {A: 100} and d.preview_revision is None
    assert d.status.paused_at is None and d.status.paused_phase is None
    assert cluster.status.analysis_runs[-1].taken == 1, "the promotion skipped the rest of the analysis"


def test_a_promote_given_before_the_pause_is_held_too() -> None:
    """The promote and the pause arrive in the same pass (one kubectl apply): the pause wins until resume."""
    cluster = analyzing()
    d = pause(cluster, promote_token="go")
    assert sorted(reasons(d)) == ["Paused", "PromoteRequested"]
    assert "during its promotion" in next(e.message for e in d.events if e.reason == "Paused")
    held(cluster, d)
    assert "promotion goes on after resume" in d.status.message


def test_the_paused_time_does_not_count_against_the_progress_deadline() -> None:
    """A first deploy waiting for its pods when paused: after an hour's pause it has its whole deadline again."""
    cluster = Cluster(spec(GATED), auto_ready=False)
    d = cluster.step()
    assert d.status.phase == "Progressing" and d.replicas == {A: 4}
    cluster.advance(100)
    d = pause(cluster)
    cluster.advance(3600)
    d = cluster.step()
    assert d.status.phase == "Paused" and d.status.rejection(A) is None
    cluster.controls = Controls()
    d = cluster.step()
    assert reasons(d) == ["Resumed"] and d.status.phase == "Progressing" and d.status.rejection(A) is None
    cluster.advance(110)
    d = cluster.step()
    assert d.status.rejection(A) is None, "110s after resume: within the 120s deadline"
    cluster.advance(20)
    d = cluster.step()
    assert d.status.rejection(A) is not None and d.status.rejection(A).reason == "ProgressDeadlineExceeded"


def test_crash_looping_pods_and_an_abort_still_reject_while_paused() -> None:
    cluster = analyzing()
    pause(cluster)
    cluster.crash.add(A)
    cluster.deployments[A] = cluster.deployments[A].__class__(desired=4, ready=0)
    d = cluster.step()
    assert d.status.phase == "RolledBack" and d.status.rejection(A) is not None
    assert d.status.rejection(A).reason == "CrashLoop"

    cluster = analyzing()
    pause(cluster)
    cluster.controls = Controls(paused=True, abort=True)
    d = cluster.step()
    assert d.status.phase == "RolledBack" and d.status.rejection(A).reason == "Aborted" and d.replicas == {A: 0}


def test_a_promote_given_before_a_paused_first_deploy_starts_is_ignored() -> None:
    """spec.paused from the start: the first deploy waits to start, so a promote has nothing to promote yet (it
    must not carry over to whatever revision the spec names when the pause is cleared)."""
    cluster = Cluster(spec(GATED))
    cluster.controls = Controls(paused=True)
    d = cluster.step()
    assert d.status.phase == "Paused" and d.replicas == {} and d.status.canary_revision == ""
    cluster.controls = Controls(paused=True, promote_token="go")
    d = cluster.step()
    assert reasons(d) == ["PromoteIgnored"]
    cluster.target = cluster.target.__class__(B, "2", "tmpl-b")
    cluster.controls = Controls(promote_token="go")
    d = cluster.step()
    assert d.status.canary_revision == B and d.status.stable_revision == "" and d.preview_revision == B
    d = cluster.step()
    assert d.status.phase == "Analyzing", "B's gate runs: the ignored promote did not skip it"


def test_a_spec_change_while_a_gate_is_paused_starts_the_new_revision_unpaused_after_resume() -> None:
    """A's gate paused, with a promote held; the spec moves to B and the pause is cleared: B's first deploy
    starts from the beginning, with its own gate; neither A's pause nor its held promotion carries over."""
    cluster = analyzing()
    pause(cluster, promote_token="go")
    cluster.target = cluster.target.__class__(B, "2", "tmpl-b")
    d = cluster.step()
    assert d.status.phase == "Paused" and d.weights == {}
    cluster.controls = Controls(promote_token="go")
    d = cluster.step()
    assert d.status.canary_revision == B and d.status.paused_at is None and d.status.paused_phase is None
    assert d.status.stable_revision == "" and d.weights == {}
    d = cluster.step()
    assert d.status.phase == "Analyzing" and reasons(d) == ["AnalysisStarted"]
    assert cluster.status.analysis_runs[-1].revision == B
    cluster.next_sample = GOOD
    d = cluster.run()
    assert d.status.stable_revision == B and d.weights == {B: 100}
