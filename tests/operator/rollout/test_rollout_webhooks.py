"""Analysis webhooks in the rollout state machine: a check of the user's own, before and during live traffic."""

from __future__ import annotations

from typing import Any

from rollout_harness import A, B, Cluster, gated_canary, reasons, spec, stable_cluster

from modeldeploy.analysis.sample import Sample
from modeldeploy.analysis.webhooks import WebhookResult

HOOKS_ONLY: dict[str, Any] = {
    "webhooks": [{"name": "evals", "url": "http://evals.ml.svc/check"}],
    "interval": "10s",
    "count": 1,
    "failureLimit": 0,
}
GATED = gated_canary(HOOKS_ONLY)
YES = WebhookResult(checks=1, failures=0)
NO = WebhookResult(checks=1, failures=1, detail=("webhook 'evals' answered HTTP 412: accuracy 0.71 < 0.9",))
NO_TRAFFIC = Sample(requests=0, pods=1)


def test_the_gate_gives_the_canary_one_pod_and_a_yes_passes_it_on_without_traffic() -> None:
    cluster = stable_cluster(GATED, auto_ready=False)
    cluster.make_ready(A)
    cluster.deploy(B)
    cluster.next_sample, cluster.next_webhooks = NO_TRAFFIC, YES
    d = cluster.step()
    # One pod beside the stable's four, no traffic; nothing is asked before it is ready.
    assert d.replicas == {A: 4, B: 1} and d.weights == {A: 100, B: 0} and d.analysis is None
    assert d.status.phase == "Progressing" and "a canary pod for the analysis checks" in d.status.message
    cluster.make_ready(B)
    d = cluster.step()
    assert d.status.phase == "Analyzing"
    cluster.advance(10)
    d = cluster.measure_if_asked(cluster.step())
    run = d.status.analysis_runs[-1]
    assert run.phase == "Successful" and run.measurements[-1].webhooks == YES
    assert "webhooks: 1 of 1 passed" in run.measurements[-1].message
    assert d.weights == {A: 75, B: 25} and d.replicas == {A: 3, B: 1}


def test_a_no_rolls_the_canary_back_before_any_client_reaches_it_and_says_why() -> None:
    cluster = stable_cluster(GATED)
    cluster.deploy(B)
    cluster.next_sample, cluster.next_webhooks = NO_TRAFFIC, NO
    d = cluster.run(steps=20)
    assert d.status.phase == "RolledBack"
    rejection = d.status.rejection(B)
    assert rejection is not None and rejection.reason == "AnalysisFailed"
    assert "Failed webhooks" in d.status.analysis_runs[-1].measurements[-1].message
    assert "webhook 'evals' answered HTTP 412: accuracy 0.71 < 0.9" in rejection.message
    assert all(x.weights.get(B, 0) == 0 for x in cluster.decisions)
    assert "AnalysisFail" in [r for x in cluster.decisions for r in reasons(x)]


def test_webhooks_that_cannot_be_asked_roll_back_only_past_the_error_limit() -> None:
    """Unreachable webhooks are measurement errors: tolerated up to consecutiveErrorLimit, then MeasurementErrors."""
    raw = {**GATED, "analysis": {**HOOKS_ONLY, "consecutiveErrorLimit": 2}}
    cluster = stable_cluster(raw)
    cluster.deploy(B)
    d = cluster.step()
    errors = 0
    for _ in range(30):
        if d.analysis is not None:
            d = cluster.fail_if_asked(d, "webhook 'evals' could not be asked: TimeoutError")
            errors += 1
        else:
            cluster.advance(10)
            d = cluster.step()
        if d.status.phase in ("RolledBack", "RollingBack"):
            break
    assert errors == 3
    rejection = d.status.rejection(B)
    assert rejection is not None and rejection.reason == "MeasurementErrors"
    assert "webhook 'evals' could not be asked: TimeoutError" in rejection.message


def test_blue_green_previews_and_first_deploys_are_gated_by_webhooks_alone() -> None:
    raw = {"strategy": "BlueGreen", "blueGreen": {"autoPromotionEnabled": True}, "analysis": HOOKS_ONLY}
    for answer, stable in ((YES, B), (NO, A)):
        cluster = stable_cluster(raw)
        cluster.deploy(B)
        cluster.next_sample, cluster.next_webhooks = NO_TRAFFIC, answer
        d = cluster.run(steps=20)
        assert d.status.stable_revision == stable and d.status.analysis_runs[-1].gate == "pre-promotion"
    first = {"firstDeployAnalysis": True, "analysis": HOOKS_ONLY}
    cluster = Cluster(spec(first), next_sample=NO_TRAFFIC, next_webhooks=YES)
    d = cluster.run()
    assert d.status.stable_revision == A and d.weights == {A: 100}
    cluster = Cluster(spec(first), next_sample=NO_TRAFFIC, next_webhooks=NO)
    d = cluster.run()
    assert not d.status.stable_revision and d.weights == {} and d.status.rejection(A) is not None
