"""A step that lowers the canary's weight moves traffic to the stable only once the stable's ready pods can serve
its new share (``plan._lowered``), the mirror of a step that raises it, which waits for the canary's pods. Two
ways to get there: steps that go down (``setWeight: 50`` then ``setWeight: 20``), and a canary whose traffic was
being handed back (a cancel, a replacement, an abort) that becomes the target again: its rollout starts again
from the first step with the traffic it still has (``plan._start_rollout``).

Before, the step applied the lower weight at once: with Neutral capacity or replica-ratio routing the stable
(N minus the canary's pods) took the traffic on too few ready pods and the canary scaled down in the same pass.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from rollout_harness import A, B, canary_at_50, reasons, spec
from test_rollout_paused_spec_change import carried
from test_rollout_spec_change_hand_back import NEUTRAL, restart_step, set_ready

DOWN = [{"setWeight": 50}, {"pause": {"duration": "30s"}}, {"setWeight": 20}, {"pause": {}}]


def canary(steps: list[dict[str, Any]], capacity: dict[str, Any], routing: str) -> dict[str, Any]:
    raw: dict[str, Any] = {"strategy": "Canary", "canary": {"steps": steps, "capacity": capacity}}
    if routing == "gateway":
        raw["canary"]["trafficRouting"] = {"type": "GatewayAPI", "gatewayAPI": {"parentRefs": [{"name": "gw"}]}}
    return raw


# (capacity, routing) -> {A, B} replicas with A's 5 pods ready (weights still 50/50), then with 7 ready, and
# the weights then: with exact routing A takes back the 70% its 7 ready pods serve and B keeps 30% on its 3 pods;
# replica-ratio routing follows the ready pods, so B keeps 3 pods (10 ready in all) and the weight stays.
WAITING = [
    # No surge: A's target does not fit beside B's 5, so B gives up pods first (the mirror of a step that raises
    # the weight, where the stable gives up pods for the canary).
    ({"mode": "Neutral", "maxSurgePods": 0}, "gateway", {A: 8, B: 2}, {A: 8, B: 2}, {A: 70, B: 30}),
    ({"mode": "Neutral", "maxSurgePods": 2}, "gateway", {A: 7, B: 5}, {A: 8, B: 3}, {A: 70, B: 30}),
    ({"mode": "Neutral", "maxSurgePods": 3}, "gateway", {A: 8, B: 5}, {A: 8, B: 3}, {A: 70, B: 30}),
    ({"mode": "Surge"}, "replicas", {A: 8, B: 5}, {A: 8, B: 3}, {A: 50, B: 50}),
    ({"mode": "Neutral", "maxSurgePods": 0}, "replicas", {A: 8, B: 2}, {A: 8, B: 2}, {A: 50, B: 50}),
]


@pytest.mark.parametrize(("capacity", "routing", "at_5", "at_7", "weights_at_7"), WAITING)
def test_a_lower_weight_waits_for_the_stable_pods(
    capacity: dict[str, Any], routing: str, at_5: dict[str, int], at_7: dict[str, int], weights_at_7: dict[str, int]
) -> None:
    cluster = canary_at_50(canary(DOWN, capacity, routing), replicas=10)
    cluster.advance(31)
    d = restart_step(cluster)  # the pause ends; step 2 lowers B to 20%, which A (5 ready) cannot take yet
    assert d.weights == {A: 50, B: 50} and d.status.canary_weight == 50 and d.replicas == at_5, d
    assert d.status.current_step_index == 2 and d.status.phase == "Progressing", d.status
    assert f"waiting for 8 ready pods of revision {A} (5 ready)" in d.status.message
    assert d.status.waiting_since is None and d.requeue_after == 10 and reasons(d) == ["StepCompleted"]
    carried(cluster, d)
    set_ready(cluster, A, 7)
    cluster.advance(600)  # no deadline: the canary is not at fault, and the traffic stays where pods serve it
    d = restart_step(cluster)
    assert d.weights == weights_at_7 and d.replicas == at_7 and d.status.canary_weight == weights_at_7[B], d
    assert d.status.rejection(B) is None and d.status.phase == "Progressing" and d.status.current_step_index == 2
    if routing == "gateway":  # exact weights; with replica ratio the ready pods are the split (10 here)
        carried(cluster, d)
    set_ready(cluster, A, 8)
    d = restart_step(cluster)  # A can serve 80%: the step is done, B scales to its 2 pods
    assert d.weights == {A: 80, B: 20} and d.replicas == {A: 8, B: 2} and d.status.current_step_index == 3, d
    assert "StepCompleted" in reasons(d) and d.status.phase == "Paused"


def test_a_lower_weight_is_immediate_when_the_stable_kept_all_its_pods() -> None:
    """Gateway API with Surge capacity: the stable kept its N pods beside the canary's, so nothing waits."""
    cluster = canary_at_50(canary(DOWN, {"mode": "Surge"}, "gateway"), replicas=10)
    assert cluster.deployments[A].ready == 10
    cluster.advance(31)
    d = cluster.step()
    assert d.weights == {A: 80, B: 20} and d.replicas == {A: 10, B: 2} and d.status.current_step_index == 3


# --- a canary whose traffic was being handed back becomes the target again ---------------------------------


def test_the_spec_back_on_a_cancelled_canary_restarts_its_rollout_with_the_traffic_it_has() -> None:
    """N = 4, Neutral (maxSurgePods 2): B served 50% on 2 pods; the spec went back to A (cancel: B hands its
    traffic back as A's pods become ready). A has 3 of 4 ready (B keeps 25%) when the spec goes back to B."""
    cluster = canary_at_50(NEUTRAL)
    cluster.deploy(A, version="1")
    d = cluster.step()
    assert d.status.phase == "RollingBack" and d.weights == {A: 50, B: 50}
    set_ready(cluster, A, 3)
    cluster.advance(100)
    d = cluster.step()
    assert d.weights == {A: 75, B: 25} and d.status.canary_weight == 25 and d.status.waiting_since is not None
    cluster.deploy(B)
    cluster.advance(10)
    d = restart_step(cluster)
    # B's rollout starts again from its first step (setWeight 50, above its 25%: B has the pods, so it applies),
    # and stops at the pause.
    assert d.status.phase == "Paused" and d.status.canary_revision == B and d.status.rejection(B) is None, d.status
    assert "RolloutStarted" in reasons(d) and "Step 0 done" in " ".join(e.message for e in d.events)
    assert d.weights == {A: 50, B: 50} and d.status.current_step_index == 1
    carried(cluster, d)
    cluster.advance(300)  # long past the hand-back's deadline: nothing is rejected, nothing moves
    d = restart_step(cluster)
    assert d.status.phase == "Paused" and d.status.rejection(B) is None and d.weights == {A: 50, B: 50}


def test_the_spec_back_on_a_cancelled_canary_below_its_traffic_waits_for_the_stable() -> None:
    """The first step is lower than what the canary still has: it waits for the stable's pods like any lowering
    step, and the hand-back's clock (``waitingSince``) does not get the canary rejected meanwhile."""
    neutral = {"mode": "Neutral", "maxSurgePods": 2}
    cluster = canary_at_50(canary(DOWN, neutral, "gateway"), replicas=10)
    cluster.spec = spec(canary([{"setWeight": 10}, {"pause": {}}], neutral, "gateway"))
    cluster.deploy(A, version="1")  # cancel: A (5 ready, 7 within the budget) cannot take B's 50% at once
    d = cluster.step()
    assert d.status.phase == "RollingBack" and d.weights == {A: 50, B: 50}
    cluster.advance(60)
    cluster.deploy(B)
    d = restart_step(cluster)
    assert d.status.phase == "Progressing" and "RolloutStarted" in reasons(d) and d.status.waiting_since is None
    assert d.weights == {A: 50, B: 50} and d.status.current_step_index == 0 and d.replicas == {A: 7, B: 5}, d
    assert f"waiting for 9 ready pods of revision {A}" in d.status.message
    cluster.advance(200)  # past progressDeadlineSeconds, counted from the hand-back's start
    set_ready(cluster, A, 7)
    d = restart_step(cluster)  # A takes the 70% its 7 ready pods serve; B keeps 30% on 3 pods
    assert d.weights == {A: 70, B: 30} and d.replicas == {A: 9, B: 3} and d.status.rejection(B) is None, d
    set_ready(cluster, A, 9)
    d = restart_step(cluster)
    assert d.weights == {A: 90, B: 10} and d.status.phase == "Paused" and d.replicas == {A: 9, B: 1}, d


def test_clearing_abort_during_the_rollback_restarts_the_rollout() -> None:
    """abort rolls B back (rejected as Aborted); clearing it while B still has traffic forgets the rejection: the
    rollout starts again from the first step, Progressing rather than RollingBack."""
    cluster = canary_at_50(NEUTRAL)
    cluster.controls = dataclasses.replace(cluster.controls, abort=True)
    d = cluster.step()
    assert d.status.phase == "RollingBack" and d.weights == {A: 50, B: 50} and d.status.rejection(B) is not None
    cluster.controls = dataclasses.replace(cluster.controls, abort=False)
    cluster.advance(5)
    d = restart_step(cluster)
    assert d.status.rejection(B) is None and "RolloutStarted" in reasons(d)
    assert d.status.phase == "Paused" and d.weights == {A: 50, B: 50} and d.status.current_step_index == 1


def test_the_restarted_rollout_gets_its_own_progress_deadline() -> None:
    """The restarted rollout's first step raises the weight, and the canary's pods take a while: its progress
    deadline counts from the restart, not from the hand-back's ``waitingSince`` (which would reject the canary
    as ``ProgressDeadlineExceeded`` 120 s after the cancel)."""
    cluster = canary_at_50(NEUTRAL)
    cluster.deploy(A, version="1")
    d = cluster.step()
    assert d.status.phase == "RollingBack" and d.status.waiting_since == cluster.now
    cluster.spec = spec({**NEUTRAL, "canary": {**NEUTRAL["canary"], "steps": [{"setWeight": 75}, {"pause": {}}]}})
    cluster.advance(100)
    cluster.deploy(B)
    d = restart_step(cluster)
    assert d.status.phase == "Progressing" and "RolloutStarted" in reasons(d) and d.weights == {A: 50, B: 50}
    assert d.status.waiting_since == cluster.now and d.replicas[B] == 3, d
    cluster.advance(60)  # 160 s after the cancel, 60 s into the restarted rollout
    d = restart_step(cluster)
    assert d.status.rejection(B) is None and d.status.phase == "Progressing", d.status
    cluster.make_ready(B)
    d = restart_step(cluster)
    assert d.weights == {A: 25, B: 75} and d.status.phase == "Paused", d
