"""A spec change (not paused) while a canary with traffic rolls out: when the stable's ready pods cannot take the
canary's share at once (Neutral capacity took the canary's pods out of the stable's budget, replica-ratio routing
gave them to the stable's share), the replaced canary hands its traffic back as the stable's pods become ready,
as a rollback does (``_hand_back``), bounded by ``progressDeadlineSeconds``; then the new revision's rollout
starts from its first step. A stable that has the pods (Surge) takes the traffic at once, and a canary that
serves nothing (no ready pods, crash-looping) is dropped at once.

The same holds when the spec goes back to the stable (a cancelled rollout: ``RolloutCancelled`` once the canary is
removed) and when it moves to a revision rejected earlier (``_hold_rejected``: the stable serves, the rejected
revision is not rolled out).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from rollout_harness import A, B, C, Cluster, canary_at_50, reasons
from test_rollout_paused_spec_change import carried

from modeldeploy.rollout.plan import Decision, next_rollout
from modeldeploy.rollout.state import Rejection, RolloutStatus


def gateway(capacity: dict[str, Any]) -> dict[str, Any]:
    return {
        "strategy": "Canary",
        "canary": {
            "steps": [{"setWeight": 50}, {"pause": {}}],
            "capacity": capacity,
            "trafficRouting": {"type": "GatewayAPI", "gatewayAPI": {"parentRefs": [{"name": "gw"}]}},
        },
        "progressDeadlineSeconds": 120,
    }


NEUTRAL = gateway({"mode": "Neutral", "maxSurgePods": 2})
SURGE = gateway({"mode": "Surge"})


def set_ready(cluster: Cluster, revision: str, ready: int) -> None:
    cluster.deployments[revision] = dataclasses.replace(cluster.deployments[revision], ready=ready)


def neutral_replaced() -> tuple[Cluster, Decision]:
    """Neutral (maxSurgePods 2): A runs 2 pods beside B's 2. The spec moves on to C."""
    cluster = canary_at_50(NEUTRAL)
    assert cluster.deployments[A].desired == 2 and cluster.deployments[B].desired == 2
    cluster.deploy(C)
    return cluster, cluster.step()


def test_a_neutral_replacement_hands_the_canary_traffic_back_as_the_stable_pods_become_ready() -> None:
    cluster, d = neutral_replaced()
    # B keeps its pods and its traffic; A scales back to 4 within N + maxSurgePods = 6.
    assert d.status.phase == "RollingBack" and d.status.canary_revision == B and d.status.rejection(B) is None
    assert d.weights == {A: 50, B: 50} and d.replicas == {A: 4, B: 2} and C not in d.replicas, d
    assert "RolloutReplaced" in reasons(d) and f"{C} rolls out next" in d.status.message
    assert d.status.waiting_since == cluster.now and d.requeue_after == 10
    carried(cluster, d)
    d = cluster.step()  # no new pod ready: nothing moves, and the event is not repeated
    assert d.weights == {A: 50, B: 50} and not d.events
    set_ready(cluster, A, 3)
    d = cluster.step()  # 3 of 4: A takes the 75% its ready pods serve
    assert d.weights == {A: 75, B: 25} and d.status.canary_weight == 25 and d.replicas == {A: 4, B: 2}
    set_ready(cluster, A, 4)
    d = cluster.step()  # all of A's pods: all the traffic moves; B keeps its pods one more pass
    assert d.weights == {A: 100} and d.replicas == {A: 4, B: 2} and d.status.canary_weight == 0
    d = cluster.step()  # C's rollout starts from its first step; B goes
    assert d.status.canary_revision == C and d.status.phase == "Progressing" and d.status.current_step_index == 0
    assert "RolloutStarted" in reasons(d) and d.weights == {A: 100, C: 0} and d.replicas[B] == 0
    carried(cluster, d)


def test_a_surge_replacement_is_immediate_when_the_stable_kept_all_its_pods() -> None:
    cluster = canary_at_50(SURGE)
    assert cluster.deployments[A].desired == 4 and cluster.deployments[A].ready == 4
    cluster.deploy(C)
    d = cluster.step()
    assert "RolloutReplaced" in reasons(d) and "RolloutStarted" in reasons(d) and d.status.canary_revision == C
    assert d.status.phase == "Progressing" and d.weights == {A: 100, C: 0} and d.replicas == {A: 4, B: 0, C: 2}


def test_a_canary_without_ready_pods_or_crash_looping_is_dropped_at_once() -> None:
    for broken in ("unready", "crash"):
        cluster = canary_at_50(NEUTRAL)
        if broken == "unready":
            set_ready(cluster, B, 0)
        else:
            cluster.crash.add(B)
        cluster.deploy(C)
        d = cluster.step()
        assert d.status.canary_revision == C and d.status.phase == "Progressing", (broken, d)
        assert d.weights == {A: 100, C: 0} and d.replicas[B] == 0, (broken, d)


def test_a_canary_that_crashes_during_the_hand_back_is_dropped_at_once() -> None:
    cluster, d = neutral_replaced()
    assert d.weights == {A: 50, B: 50}
    cluster.crash.add(B)
    d = cluster.step()  # B serves nothing any more: all the traffic moves now, without a StableNotReady warning
    assert d.weights == {A: 100} and "StableNotReady" not in reasons(d)
    d = cluster.step()
    assert d.status.canary_revision == C and d.replicas[B] == 0


def test_the_hand_back_is_bounded_by_the_progress_deadline() -> None:
    cluster, d = neutral_replaced()
    assert d.weights == {A: 50, B: 50}
    cluster.advance(120)
    assert cluster.step().weights == {A: 50, B: 50}, "not before the deadline"
    cluster.advance(1)
    d = cluster.step()  # A's pods never became ready: the traffic moves anyway, and the event says so
    assert d.weights == {A: 100} and "StableNotReady" in reasons(d) and d.status.waiting_since is None
    d = cluster.step()
    assert d.status.canary_revision == C and d.status.phase == "Progressing" and d.replicas[B] == 0
    assert d.status.waiting_since == cluster.now, "C's progress deadline counts from its own start"


def test_a_restart_mid_hand_back_resumes_exactly() -> None:
    """A fresh operator reads the stored status (JSON) and decides exactly what the running one does, pass after
    pass, through the hand-back and the start of C."""
    cluster, _ = neutral_replaced()
    set_ready(cluster, A, 3)
    cluster.advance(30)
    for ready in (3, 4, 4, 4):
        set_ready(cluster, A, ready)
        stored = json.loads(json.dumps(cluster.status.to_status()))
        history = json.loads(json.dumps(cluster.status.history_to_status()))
        fresh = next_rollout(
            cluster.spec,
            RolloutStatus.from_status(stored, history),
            cluster.observed(),
            cluster.now,
            cluster.controls,
        )
        assert fresh == cluster.step()
        cluster.advance(5)
    assert cluster.status.canary_revision == C and cluster.decisions[-1].weights == {A: 100, C: 0}
    assert [x.weights for x in cluster.decisions[-4:-1]] == [{A: 75, B: 25}, {A: 100}, {A: 100, C: 0}]


def test_a_rollback_whose_spec_changes_goes_on_handing_back() -> None:
    """A rejected canary rolling back when the spec moves on is removed the same way: the hand-back goes on (its
    deadline still counted from the rollback's start), then the new revision rolls out."""
    cluster = canary_at_50(NEUTRAL)
    cluster.controls = dataclasses.replace(cluster.controls, abort=True)
    d = cluster.step()
    assert d.status.phase == "RollingBack" and d.weights == {A: 50, B: 50} and d.replicas == {A: 4, B: 2}
    started = d.status.waiting_since
    cluster.controls = dataclasses.replace(cluster.controls, abort=False)
    cluster.deploy(C)
    cluster.advance(5)
    d = cluster.step()
    assert d.status.phase == "RollingBack" and d.status.canary_revision == B and d.weights == {A: 50, B: 50}
    assert d.status.waiting_since == started and C not in d.replicas
    cluster.make_ready(A)
    assert cluster.step().weights == {A: 100}
    d = cluster.step()
    assert d.status.canary_revision == C and d.weights == {A: 100, C: 0} and d.replicas[B] == 0


def restart_step(cluster: Cluster) -> Decision:
    """A fresh operator's decision from the stored status (JSON) must be the running one's."""
    stored = json.loads(json.dumps(cluster.status.to_status()))
    history = json.loads(json.dumps(cluster.status.history_to_status()))
    fresh = next_rollout(
        cluster.spec, RolloutStatus.from_status(stored, history), cluster.observed(), cluster.now, cluster.controls
    )
    d = cluster.step()
    assert fresh == d
    return d


def hand_back_across_restarts(cluster: Cluster) -> None:
    """Five passes of a Neutral hand-back of B's 50% as A's pods become ready (3, 3, 4, 4, 4), each checked
    against a fresh operator's decision from the stored status (``restart_step``)."""
    cluster.advance(30)
    for ready in (3, 3, 4, 4, 4):
        set_ready(cluster, A, ready)
        restart_step(cluster)
        cluster.advance(5)
    assert [x.weights for x in cluster.decisions[-5:]] == [{A: 75, B: 25}] * 2 + [{A: 100}] * 3


# --- the spec goes back to the stable (a cancelled rollout) ------------------------------------------------


def neutral_cancelled() -> tuple[Cluster, Decision]:
    """Neutral (maxSurgePods 2): A runs 2 pods beside B's 2, B serves 50%. The spec goes back to A."""
    cluster = canary_at_50(NEUTRAL)
    cluster.deploy(A, version="1")
    return cluster, cluster.step()


def test_a_neutral_cancel_hands_the_canary_traffic_back_as_the_stable_pods_become_ready() -> None:
    cluster, d = neutral_cancelled()
    assert d.status.phase == "RollingBack" and d.status.canary_revision == B and d.status.rejection(B) is None
    assert d.status.stable_revision == A and f"revision {A} again" in d.status.message
    assert d.weights == {A: 50, B: 50} and d.replicas == {A: 4, B: 2}, d
    assert d.status.waiting_since == cluster.now and d.requeue_after == 10 and "RolloutCancelled" not in reasons(d)
    carried(cluster, d)
    d = cluster.step()  # no new pod ready: nothing moves
    assert d.weights == {A: 50, B: 50} and not d.events
    set_ready(cluster, A, 3)
    d = cluster.step()
    assert d.weights == {A: 75, B: 25} and d.status.canary_weight == 25 and d.replicas == {A: 4, B: 2}
    carried(cluster, d)
    set_ready(cluster, A, 4)
    d = cluster.step()  # all the traffic moves; B keeps its pods one more pass
    assert d.weights == {A: 100} and d.replicas == {A: 4, B: 2} and d.status.canary_weight == 0
    d = cluster.step()  # steady on A; B goes
    assert d.status.phase == "Completed" and d.status.canary_revision == "" and d.status.stable_revision == A
    assert d.weights == {A: 100} and d.replicas == {A: 4, B: 0} and d.status.waiting_since is None
    d = cluster.step()
    assert d.replicas == {A: 4} and not d.events
    assert [r for x in cluster.decisions for r in reasons(x)].count("RolloutCancelled") == 1
    assert all(x.status.rejection(B) is None for x in cluster.decisions)


def test_a_neutral_cancel_is_bounded_by_the_progress_deadline() -> None:
    cluster, d = neutral_cancelled()
    cluster.advance(121)
    d = cluster.step()
    assert d.weights == {A: 100} and "StableNotReady" in reasons(d) and d.status.waiting_since is None
    d = cluster.step()
    assert d.status.canary_revision == "" and d.replicas[B] == 0 and reasons(d) == ["RolloutCancelled"]


def test_a_surge_cancel_is_immediate() -> None:
    cluster = canary_at_50(SURGE)
    cluster.deploy(A, version="1")
    d = cluster.step()
    assert reasons(d) == ["RolloutCancelled"] and d.status.canary_revision == "" and d.status.phase == "Completed"
    assert d.weights == {A: 100} and d.replicas == {A: 4, B: 0}


def test_a_cancel_of_a_canary_serving_nothing_is_immediate() -> None:
    cluster = canary_at_50(NEUTRAL)
    cluster.crash.add(B)
    cluster.deploy(A, version="1")
    d = cluster.step()
    assert "RolloutCancelled" in reasons(d) and d.status.canary_revision == "" and d.weights == {A: 100}


def test_a_restart_mid_cancel_resumes_exactly() -> None:
    cluster, _ = neutral_cancelled()
    hand_back_across_restarts(cluster)
    assert cluster.status.canary_revision == "" and cluster.status.phase == "Completed"
    assert [r for x in cluster.decisions for r in reasons(x)].count("RolloutCancelled") == 1


# --- the spec moves to a revision rejected earlier ---------------------------------------------------------


def rejected_c(raw: dict[str, Any]) -> tuple[Cluster, Decision]:
    """B serves 50% when the spec moves to C, which the status names as rejected (a status restored from a
    backup or written by an older operator: the operator itself drops a rejection once the spec resolves
    elsewhere)."""
    cluster = canary_at_50(raw)
    rejection = Rejection(C, "AnalysisFailed", "error ratio too high", cluster.now)
    cluster.status = dataclasses.replace(cluster.status, rejected_revisions=(rejection,))
    cluster.deploy(C)
    return cluster, cluster.step()


def test_a_neutral_move_to_a_rejected_revision_hands_the_canary_traffic_back() -> None:
    cluster, d = rejected_c(NEUTRAL)
    assert d.status.phase == "RollingBack" and d.status.canary_revision == B and d.status.rejection(C) is not None
    assert d.weights == {A: 50, B: 50} and d.replicas == {A: 4, B: 2} and C not in d.replicas, d
    assert d.status.waiting_since == cluster.now and f"revision {C} is rejected" in d.status.message
    carried(cluster, d)
    set_ready(cluster, A, 3)
    d = cluster.step()
    assert d.weights == {A: 75, B: 25} and d.replicas == {A: 4, B: 2}
    set_ready(cluster, A, 4)
    d = cluster.step()
    assert d.weights == {A: 100} and d.replicas == {A: 4, B: 2}
    d = cluster.step()  # as _hold_rejected leaves it: A serves, C is held rejected, B goes
    assert d.status.phase == "RolledBack" and d.status.canary_revision == "" and d.status.rejection(C) is not None
    assert d.weights == {A: 100} and d.replicas == {A: 4, B: 0} and "RolledBack" in reasons(d)
    assert cluster.step().replicas == {A: 4}


def test_a_surge_move_to_a_rejected_revision_is_immediate() -> None:
    _, d = rejected_c(SURGE)
    assert d.status.phase == "RolledBack" and d.status.canary_revision == "" and d.status.rejection(C) is not None
    assert d.weights == {A: 100} and d.replicas == {A: 4, B: 0} and "RolledBack" in reasons(d)


def test_a_restart_mid_hand_back_to_a_rejected_revision_resumes_exactly() -> None:
    cluster, _ = rejected_c(NEUTRAL)
    hand_back_across_restarts(cluster)
    assert cluster.status.phase == "RolledBack" and cluster.status.rejection(C) is not None
