"""Promotion in the same pass as the last step: the weights that pass set earlier must not survive it."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from rollout_harness import CANARY, A, B, Cluster, reasons, spec

from modeldeploy.rollout.plan import Controls


def canary(routing: str) -> dict[str, Any]:
    traffic: dict[str, Any] = {"type": routing}
    if routing == "GatewayAPI":
        traffic["gatewayAPI"] = {"parentRefs": [{"name": "gw"}]}
    return {
        "strategy": "Canary",
        "canary": {"steps": [{"setWeight": 50}, {"pause": {"duration": "1m"}}], "trafficRouting": traffic},
    }


@pytest.mark.parametrize("routing", ["GatewayAPI", "Replicas"])
def test_the_pass_that_ends_the_last_pause_and_promotes_sends_all_traffic_to_the_new_stable(routing: str) -> None:
    # One replica: the canary's single pod for weight 50 is already the full size, so nothing waits between
    # the end of the pause and the promotion; both happen in one call of next_rollout.
    cluster = Cluster(spec(canary(routing)), replicas=1)
    assert cluster.run().status.stable_revision == A
    cluster.deploy(B)
    decision = cluster.step()
    while decision.status.phase != "Paused":
        decision = cluster.step()
    assert decision.weights == {A: 50, B: 50}
    cluster.advance(60)
    decision = cluster.step()
    assert {"StepCompleted", "StepsCompleted", "Promoted"} <= set(reasons(decision)), reasons(decision)
    assert decision.status.phase == "Completed" and decision.status.stable_revision == B
    # The pause step had set {A: 50, B: 50} earlier in this pass; promotion replaces the split, it does not
    # add B: 100 on top of it (which would leave A with 50 of 150).
    assert decision.weights == {B: 100}
    assert sum(decision.weights.values()) == 100


@pytest.mark.parametrize("text", ["²", "\u0661", "9" * 19, "9" * 40, "-1", "1.0", "0x10", ""])
def test_a_rollback_annotation_that_is_not_a_revision_number_is_ignored(text: str) -> None:
    """``modeldeploy.io/rollback-to`` is a user's text: Unicode digits ("²" passes ``str.isdigit`` but not ``int``)
    and numbers beyond int64 (a status write the API server refuses) must not crash the reconcile or get stored."""
    from modeldeploy.rollout.config import parse_rollout
    from modeldeploy.rollout.plan import Controls

    rollout = parse_rollout({"strategy": "Canary", "rollbackTo": 3})
    controls = Controls.from_spec(rollout, {"modeldeploy.io/rollback-to": text})
    assert controls.rollback_to == 3
    assert Controls.from_spec(rollout, {"modeldeploy.io/rollback-to": " 12 "}).rollback_to == 12
    assert Controls.from_spec(rollout, {"modeldeploy.io/rollback-to": str(2**63 - 1)}).rollback_to == 2**63 - 1


def b_over_stable_a(raw: dict[str, Any]) -> Cluster:
    """A stable on its 4 ready pods and the spec moved to B; pods become ready only when a test says so."""
    cluster = Cluster(spec(raw), auto_ready=False)
    cluster.step()
    cluster.make_ready(A)
    assert cluster.step().status.stable_revision == A
    cluster.deploy(B)
    return cluster


def test_a_promotion_gets_the_whole_progress_deadline_for_its_pods() -> None:
    """A promote given while a step waits for the canary's pods: the promotion scales the canary to all N pods,
    and its deadline counts from the promote, not from the interrupted step's wait (it would roll the canary
    back 20s into its promotion)."""
    cluster = b_over_stable_a(CANARY)
    d = cluster.step()
    assert d.status.canary_revision == B and d.status.phase == "Progressing" and d.replicas[B] == 1
    cluster.advance(100)  # the step has waited 100s of its 120s for B's pod
    cluster.controls = Controls(promote_token="go")
    d = cluster.step()
    assert d.status.phase == "Promoting" and d.replicas[B] == 4
    cluster.advance(110)
    d = cluster.step()
    assert d.status.phase == "Promoting" and d.status.rejection(B) is None, "110s into the promotion: in time"
    cluster.advance(20)
    d = cluster.step()
    assert d.status.phase == "RollingBack" and d.status.rejection(B) is not None
    assert d.status.rejection(B).reason == "ProgressDeadlineExceeded"


def test_a_neutral_promotion_without_surge_moves_pod_by_pod_and_never_leaves_a_share_without_pods() -> None:
    """Capacity Neutral, maxSurgePods 0 (every GPU in use), a promote at weight 0: the canary's pods can only come
    out of the stable's. The stable gives up one pod for the canary's first, then the canary takes each next
    pod's share as its pods become ready; the stable keeps a pod for as long as it has a share (it was scaled to
    none at once, with all the traffic). Each pod that becomes ready is progress: the deadline (120s) restarts,
    so four GPU pods that take 100s each to load are not rolled back."""
    raw = {
        "strategy": "Canary",
        "canary": {
            "steps": [{"pause": {}}],
            "capacity": {"mode": "Neutral", "maxSurgePods": 0},
            "trafficRouting": {"type": "GatewayAPI", "gatewayAPI": {"parentRefs": [{"name": "gw"}]}},
        },
        "progressDeadlineSeconds": 120,
    }
    cluster = b_over_stable_a(raw)
    d = cluster.step()
    assert d.status.phase == "Paused" and d.weights == {A: 100, B: 0}
    cluster.controls = Controls(promote_token="go")
    seen = []
    for _ in range(12):
        d = cluster.step()
        seen.append((d.replicas.get(A, 0), d.replicas.get(B, 0), d.weights.get(B, 0)))
        assert d.status.rejection(B) is None, d.status.message
        assert sum(d.replicas.values()) <= 4, "within the budget"
        for revision, share in d.weights.items():
            ready = cluster.deployments[revision].ready if revision in cluster.deployments else 0
            if share:
                assert ready >= 1, f"{revision} has {share}% and no ready pod: {seen}"
        if d.status.stable_revision == B:
            break
        cluster.advance(100)
        cluster.deployments[B] = replace(cluster.deployments[B], ready=min(4, cluster.deployments[B].ready + 1))
        cluster.deployments[A] = replace(cluster.deployments[A], ready=cluster.deployments[A].desired)
    assert d.status.stable_revision == B and d.weights == {B: 100}, seen
    assert seen == [(3, 1, 0), (2, 2, 50), (1, 3, 75), (0, 4, 100), (0, 4, 100)], seen
