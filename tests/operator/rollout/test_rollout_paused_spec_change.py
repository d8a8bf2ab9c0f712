"""A spec change while spec.paused holds a rollout: the new revision waits for resume, the replaced canary hands
its traffic back to the stable as the stable's pods become ready (as a rollback does) and is then removed, and
every revision that takes traffic is desired at the pods its share needs, before and after the change.

The first two tests replay the property test's reproducers (``test_rollout_properties.SPECS``) step by step.
"""

from __future__ import annotations

from typing import Any

from rollout_harness import A, B, C, Cluster, canary_at_50, reasons, spec
from test_rollout_properties import SPECS

from modeldeploy.rollout.plan import Controls, Decision
from modeldeploy.rollout.replicas import pods_for_weight

PAUSED, RESUMED = Controls(paused=True), Controls()


def carried(cluster: Cluster, d: Decision) -> None:
    """Every revision with traffic is desired at ``ceil(N * share / 100)`` pods at least (exact routing), or with
    Neutral capacity at what ``N + maxSurgePods`` leaves beside the other revisions' pods, as the property test
    checks."""
    n, capacity = cluster.replicas, cluster.spec.capacity
    for revision, share in d.weights.items():
        need = pods_for_weight(n, share)
        if capacity.mode == "Neutral":
            others = sum(c for r, c in d.replicas.items() if r != revision)
            need = min(need, n + capacity.max_surge_pods - others)
        assert d.replicas.get(revision, 0) >= need, (revision, share, d)


def test_a_spec_change_while_a_neutral_promotion_is_paused_gives_the_stable_its_pods_back() -> None:
    """Reproducer: ``gateway-neutral-0`` with
    ``[('time',1),('deploy',B),('promote','p1'),('pause',True),('deploy',C)]``.

    Neutral capacity without surge: promoting B took one of A's pods for B's first pod (A keeps the traffic until
    B's pods are ready), and spec.paused held that. The spec then moves on to C: B served nothing (weight 0), so it
    is replaced at once; A, which has all the traffic again, must get its 4 pods back."""
    cluster = Cluster(spec(SPECS["gateway-neutral-0"]), auto_ready=False)
    cluster.step()
    cluster.deploy(B)
    cluster.step()
    cluster.controls = Controls(promote_token="p1")
    d = cluster.step()
    assert d.status.phase == "Promoting" and d.replicas == {A: 3, B: 1} and d.weights == {A: 100, B: 0}
    cluster.controls = Controls(promote_token="p1", paused=True)
    d = cluster.step()
    assert d.status.phase == "Paused" and d.replicas == {A: 3, B: 1}, "the paused promotion keeps its budget"
    cluster.deploy(C)
    d = cluster.step()
    assert d.status.canary_revision == C and d.status.phase == "Paused" and "RolloutReplaced" in reasons(d)
    assert d.weights == {A: 100, C: 0} and d.replicas == {A: 4, B: 0, C: 0}, d
    carried(cluster, d)
    d = cluster.step()  # held: nothing moves while paused
    assert d.weights == {A: 100, C: 0} and d.replicas == {A: 4, C: 0} and not d.events
    cluster.make_ready(A)
    cluster.controls = Controls(promote_token="p1")
    d = cluster.step()  # resume: C goes on from its first step (no budget for a canary pod beside A's 4)
    assert "Resumed" in reasons(d) and "WeightLimited" in reasons(d) and d.status.canary_revision == C
    assert d.weights == {A: 100, C: 0} and d.replicas == {A: 4, C: 0}, d
    carried(cluster, d)


def test_a_spec_change_while_paused_scales_a_canary_that_became_the_stable_to_full_size() -> None:
    """Reproducer: ``gateway-surge`` with
    ``[('time',1),('deploy',C),('ready',C),('pause',True),('deploy',B)]``.

    A never got a ready pod; C serves (1 pod, 20%). The spec moves on to B while paused: C, what users reach,
    becomes the stable (``RolloutReplaced``) with all the traffic, so it must be scaled to the 4 pods that
    traffic needs, not left on the 1 pod it had as a canary."""
    cluster = Cluster(spec(SPECS["gateway-surge"]), auto_ready=False)
    cluster.step()
    cluster.deploy(C)
    cluster.step()
    cluster.make_ready(C)
    d = cluster.step()
    assert d.weights == {A: 80, C: 20} and d.replicas == {A: 4, C: 1}
    cluster.controls = PAUSED
    assert cluster.step().replicas == {A: 4, C: 1}
    cluster.deploy(B)
    d = cluster.step()
    assert d.status.stable_revision == C and d.status.canary_revision == B and d.status.phase == "Paused"
    assert d.weights == {C: 100, B: 0} and d.replicas == {C: 4, B: 0, A: 0}, d
    carried(cluster, d)
    cluster.controls = RESUMED
    cluster.make_ready(C)
    d = cluster.step()
    assert "Resumed" in reasons(d) and d.replicas == {C: 4, B: 1} and d.weights == {C: 100, B: 0}


GATEWAY_NEUTRAL_1: dict[str, Any] = {
    "strategy": "Canary",
    "canary": {
        "steps": [{"setWeight": 50}, {"pause": {}}],
        "capacity": {"mode": "Neutral", "maxSurgePods": 1},
        "trafficRouting": {"type": "GatewayAPI", "gatewayAPI": {"parentRefs": [{"name": "gw"}]}},
    },
    "progressDeadlineSeconds": 120,
}


def canary_at_50_paused() -> Cluster:
    """Gateway API, Neutral with maxSurgePods 1, N = 4: B serves 50% with 2 pods, A 50% with 2; spec.paused."""
    cluster = canary_at_50(GATEWAY_NEUTRAL_1)
    assert cluster.decisions[-1].replicas == {A: 2, B: 2}
    cluster.controls = PAUSED
    d = cluster.step()
    assert d.status.paused_at is not None and d.replicas == {A: 2, B: 2}
    return cluster


def test_a_spec_change_while_paused_hands_the_canary_traffic_back_as_the_stable_pods_become_ready() -> None:
    cluster = canary_at_50_paused()
    cluster.deploy(C)
    d = cluster.step()
    # B keeps its pods and its traffic; A scales up within N + maxSurgePods = 5 while B holds 2.
    assert d.status.phase == "RollingBack" and d.status.canary_revision == B and d.status.rejection(B) is None
    assert d.weights == {A: 50, B: 50} and d.replicas == {A: 3, B: 2}, d
    assert "RolloutReplaced" in reasons(d) and f"{C} waits for spec.paused to clear" in d.status.message
    assert d.status.waiting_since == cluster.now and C not in d.replicas
    carried(cluster, d)
    d = cluster.step()  # A's third pod is not ready yet: nothing moves, and the event is not repeated
    assert d.weights == {A: 50, B: 50} and d.replicas == {A: 3, B: 2} and not d.events
    cluster.make_ready(A)
    d = cluster.step()  # A serves the 75% its 3 ready pods can; B gives back the pod its 25% no longer needs
    assert d.weights == {A: 75, B: 25} and d.replicas == {A: 4, B: 1} and d.status.phase == "RollingBack"
    cluster.make_ready(A)
    d = cluster.step()  # A has its 4 ready pods: the traffic moves, B still has its pod
    assert d.weights == {A: 100} and d.replicas == {A: 4, B: 1} and d.status.canary_weight == 0
    d = cluster.step()  # C's rollout starts, paused; B goes
    assert d.status.canary_revision == C and d.status.phase == "Paused" and "Paused" in reasons(d)
    assert d.weights == {A: 100, C: 0} and d.replicas == {A: 4, B: 0, C: 0}, d
    carried(cluster, d)
    cluster.make_ready(A)
    cluster.controls = RESUMED
    d = cluster.step()
    assert "Resumed" in reasons(d) and d.status.current_step_index == 0 and d.replicas == {A: 3, C: 2}


def test_the_paused_hand_back_is_bounded_by_the_progress_deadline() -> None:
    cluster = canary_at_50_paused()
    cluster.deploy(C)
    assert cluster.step().weights == {A: 50, B: 50}
    cluster.advance(121)
    d = cluster.step()  # A's third pod never became ready: the traffic moves anyway, and the event says so
    assert d.weights == {A: 100} and "StableNotReady" in reasons(d)
    d = cluster.step()
    assert d.status.canary_revision == C and d.status.phase == "Paused" and d.replicas == {A: 4, B: 0, C: 0}


def test_resuming_during_the_paused_hand_back_goes_on_handing_back_as_an_unpaused_change_does() -> None:
    """An unpaused spec change hands the canary's traffic back too (test_rollout_spec_change_hand_back.py):
    resuming goes on with the hand-back, then C starts, unpaused, from its first step."""
    cluster = canary_at_50_paused()
    cluster.deploy(C)
    assert cluster.step().status.phase == "RollingBack"
    cluster.controls = RESUMED
    d = cluster.step()
    assert d.status.canary_revision == B and d.status.phase == "RollingBack" and C not in d.replicas
    assert d.weights == {A: 50, B: 50} and d.replicas == {A: 3, B: 2} and not d.events
    carried(cluster, d)
    cluster.make_ready(A)
    assert cluster.step().weights == {A: 75, B: 25}  # 3 of A's 4 pods ready
    cluster.make_ready(A)
    assert cluster.step().weights == {A: 100}
    d = cluster.step()
    assert d.status.canary_revision == C and d.status.phase == "Progressing" and d.replicas[C] == 2
    assert B not in d.weights and d.weights[A] == 100 and d.replicas[B] == 0
    carried(cluster, d)


def test_n_growing_while_paused_scales_both_revisions_to_their_shares() -> None:
    """The autoscaler's choice grows while spec.paused holds a canary at 50%: neither revision is left with the
    pods of the smaller N (Gateway API, Surge: the stable keeps N, the canary gets ceil(N * 50%))."""
    raw = {**GATEWAY_NEUTRAL_1, "canary": {**GATEWAY_NEUTRAL_1["canary"], "capacity": {"mode": "Surge"}}}
    cluster = Cluster(spec(raw), auto_ready=True)
    cluster.run()
    cluster.deploy(B)
    d = cluster.run()
    assert d.weights == {A: 50, B: 50} and d.replicas == {A: 4, B: 2}
    cluster.controls = PAUSED
    assert cluster.step().replicas == {A: 4, B: 2}
    cluster.replicas = 8
    d = cluster.step()
    assert d.replicas == {A: 8, B: 4} and d.weights == {A: 50, B: 50} and d.status.phase == "Paused"
    cluster.replicas = 2  # and shrinking: a paused rollout scales nothing down
    assert cluster.step().replicas == {A: 8, B: 4}
