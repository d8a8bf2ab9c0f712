"""Hypothesis: random event sequences on the pure state machine keep the rollout invariants."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from rollout_harness import BAD, GOOD, THIN, Cluster, reasons, spec

from modeldeploy.analysis.golden import GoldenResult
from modeldeploy.rollout.plan import Controls, Decision, Observed, RevisionObservation, next_rollout
from modeldeploy.rollout.replicas import pods_for_weight, weight_for_pods
from modeldeploy.rollout.state import RolloutStatus

ANALYSIS = {"maxErrorRatio": 0.01, "interval": "10s", "count": 2, "failureLimit": 0, "minRequests": 10}
STEPS = [
    {"setWeight": 20},
    {"analysis": {}},
    {"pause": {"duration": "30s"}},
    {"setWeight": 60},
    {"pause": {}},
]
SPECS: dict[str, dict[str, Any]] = {
    "gateway-surge": {
        "strategy": "Canary",
        "canary": {
            "steps": STEPS,
            "trafficRouting": {"type": "GatewayAPI", "gatewayAPI": {"parentRefs": [{"name": "gw"}]}},
        },
        "analysis": ANALYSIS,
    },
    "gateway-neutral-0": {
        "strategy": "Canary",
        "canary": {
            "steps": STEPS,
            "capacity": {"mode": "Neutral", "maxSurgePods": 0},
            "trafficRouting": {"type": "GatewayAPI", "gatewayAPI": {"parentRefs": [{"name": "gw"}]}},
        },
        "analysis": ANALYSIS,
    },
    "gateway-neutral-1": {
        "strategy": "Canary",
        "canary": {
            "steps": STEPS,
            "capacity": {"mode": "Neutral", "maxSurgePods": 1},
            "trafficRouting": {"type": "GatewayAPI", "gatewayAPI": {"parentRefs": [{"name": "gw"}]}},
        },
        "analysis": ANALYSIS,
    },
    "replicas": {
        "strategy": "Canary",
        "canary": {"steps": STEPS},
        "analysis": ANALYSIS,
        "progressDeadlineSeconds": 60,
    },
    "replicas-neutral-1": {
        "strategy": "Canary",
        "canary": {"steps": STEPS, "capacity": {"mode": "Neutral", "maxSurgePods": 1}},
        "analysis": ANALYSIS,
    },
    "bluegreen": {
        "strategy": "BlueGreen",
        "blueGreen": {"autoPromotionEnabled": True, "autoPromotionSeconds": 20},
        "analysis": ANALYSIS,
    },
    "rolling": {"strategy": "RollingUpdate"},
    "gated-first-deploy": {
        "strategy": "Canary",
        "canary": {"steps": STEPS},
        "analysis": ANALYSIS,
        "firstDeployAnalysis": True,
    },
}
# Steps that lower the weight: the stable must have the ready pods before it gets the traffic back.
DOWN_STEPS = [
    {"setWeight": 60},
    {"pause": {"duration": "30s"}},
    {"setWeight": 20},
    {"analysis": {}},
    {"pause": {}},
]
SPECS.update(
    {
        f"{name}-down": {**SPECS[name], "canary": {**SPECS[name]["canary"], "steps": DOWN_STEPS}}
        for name in ("gateway-neutral-1", "replicas", "replicas-neutral-1")
    }
)
# Shadow traffic first (half, then all of the requests copied), then live traffic.
SHADOW_STEPS = [
    {"setMirror": 50},
    {"analysis": {}},
    {"setMirror": 100},
    {"pause": {"duration": "30s"}},
    {"setWeight": 20},
    {"pause": {}},
]
SPECS.update(
    {
        f"{name}-shadow": {**SPECS[name], "canary": {**SPECS[name]["canary"], "steps": SHADOW_STEPS}}
        for name in ("gateway-surge", "gateway-neutral-1")
    }
)
# Golden requests first (the canary gets one pod for them, no traffic), then live traffic and another analysis.
GOLDEN_STEPS = [
    {"analysis": {}},
    {"setWeight": 20},
    {"pause": {"duration": "30s"}},
    {"analysis": {}},
    {"pause": {}},
]
GOLDEN_CASE = {
    "name": "c",
    "inputs": [{"name": "input", "shape": [1, 2], "data": [1.0, 2.0]}],
    "outputs": [{"name": "output", "argmax": [1]}],
}
SPECS.update(
    {
        f"{name}-golden": {
            **SPECS[name],
            "canary": {**SPECS[name]["canary"], "steps": GOLDEN_STEPS},
            "analysis": {**ANALYSIS, "goldenRequests": {"cases": [GOLDEN_CASE]}},
        }
        for name in ("gateway-surge", "gateway-neutral-1", "replicas")
    }
)
# The canary's answers to the golden requests with each sample ("bad" answers wrongly too).
GOLDEN_ANSWERS = {
    "good": GoldenResult(checks=1, mismatches=0, pods=1),
    "bad": GoldenResult(checks=1, mismatches=1, pods=1, detail=("case 'c' on pod p: argmax [0], expected [1]",)),
    "thin": GoldenResult(checks=1, mismatches=0, pods=1),
}
REVISIONS = ["aaaaaaaaaa", "bbbbbbbbbb", "cccccccccc", "dddddddddd"]
STEP_DONE = re.compile(r"^Step (\d+) done")

events = st.one_of(
    st.tuples(st.just("time"), st.sampled_from([1, 5, 10, 30, 90])),
    st.tuples(st.just("ready"), st.sampled_from(REVISIONS)),
    st.tuples(st.just("sample"), st.sampled_from(["good", "bad", "thin", "error"])),
    st.tuples(st.just("deploy"), st.sampled_from(REVISIONS)),
    st.tuples(st.just("promote"), st.sampled_from(["p1", "p2"])),
    st.tuples(st.just("abort"), st.booleans()),
    st.tuples(st.just("pause"), st.booleans()),
    st.tuples(st.just("rollback"), st.integers(0, 3)),
    st.tuples(st.just("crash"), st.sampled_from(REVISIONS)),
    st.tuples(st.just("restart"), st.just(0)),
    st.tuples(st.just("step"), st.just(0)),
    st.tuples(st.just("lose"), st.just(0)),
)


def check_lost_status(cluster: Cluster, stable_before: str, decision: Decision) -> None:
    """After status.rollout was lost: the stable it named stays the stable (its Deployment's marker says so),
    with all the traffic when the spec resolves to it; a revision the spec resolves to that was not the stable
    (a first deploy behind its gate, a canary) is never adopted."""
    status = decision.status
    adopted = [e.message for e in decision.events if e.reason == "StableAdopted"]
    if stable_before:
        assert status.stable_revision == stable_before, (stable_before, decision)
        if stable_before == cluster.target.revision:
            assert decision.weights == {stable_before: 100} and decision.preview_revision is None, decision
    else:
        assert not any(cluster.target.revision in message for message in adopted), decision


def _losers_with_serving_canary(
    status: RolloutStatus, before: Observed, weights_before: dict[str, int], stable: str
) -> tuple[list[str], dict[str, RevisionObservation]] | None:
    """The revisions that had traffic beside the stable and what was observed of them and of the stable; None when
    the canary serves nothing (no ready pod, crash-looping, or no traffic), which both checks below exempt."""
    losers = [r for r, w in weights_before.items() if r != stable and w > 0]
    obs = {r: before.revisions.get(r, RevisionObservation()) for r in [stable, *losers]}
    serving = [r for r in losers if obs[r].ready > 0 and not obs[r].crash_looping]
    if not (status.canary_revision in serving and status.canary_weight > 0):
        return None
    return losers, obs


def check_hand_back(
    cluster: Cluster, status: RolloutStatus, before: Observed, weights_before: dict[str, int], decision: Decision
) -> None:
    """Traffic moves back to the stable from a canary (a rollback, or a canary replaced by a spec change, paused or
    not) only as fast as the stable's ready pods can take it: all of it once they cover ``N`` (or what the Neutral
    budget lets the stable have beside the canary's pods), part of it before (``replicas.rollback_canary_weight``).
    So the stable never jumps to 100% on fewer ready pods, except when the canary serves nothing (no ready pods,
    crash-looping) or when ``progressDeadlineSeconds`` ran out (``StableNotReady``); also when the spec resolves to
    the stable again (a cancelled rollout) or to a revision rejected earlier. Checked when the ``status`` the step
    starts from knows the canary's traffic (``canaryWeight``): a lost status does not.
    """
    stable = decision.status.stable_revision
    if not stable or decision.weights.get(stable, 0) != 100 or weights_before.get(stable, 100) == 100:
        return
    if "StableNotReady" in reasons(decision):
        return
    found = _losers_with_serving_canary(status, before, weights_before, stable)
    if found is None:
        return
    losers, obs = found
    n, spec_ = cluster.replicas, cluster.spec
    need = n
    if spec_.strategy == "Canary" and spec_.capacity.mode == "Neutral":
        # The canary keeps only the pods for the share the stable's ready pods cannot serve (N minus them with
        # replica-ratio routing, the pods for that weight with exact weights) where the stable's N needs the rest
        # of the budget; only when that leaves the stable no pod to start may the traffic move to fewer than N.
        ready = obs[stable].ready
        share = n - ready
        if spec_.routing.type == "GatewayAPI":
            share = pods_for_weight(n, min(status.canary_weight, 100 - weight_for_pods(n, ready)))
        kept = min(sum(obs[r].desired for r in losers), max(share, spec_.capacity.max_surge_pods))
        need = min(n, max(obs[stable].desired, n + spec_.capacity.max_surge_pods - kept))
    assert obs[stable].ready >= need, (stable, obs, weights_before, decision)


def check_stable_gains(
    cluster: Cluster, status: RolloutStatus, before: Observed, weights_before: dict[str, int], decision: Decision
) -> None:
    """Gateway API (exact weights): the stable's share grows to less than 100%, short of a promotion, only to what
    its ready pods serve, whatever moves the traffic: a step that lowers the weight, a rollout that starts again
    below the canary's traffic, a hand-back (with Neutral capacity: what the budget lets it have beside the
    canary's pods). Exempt as in ``check_hand_back``, which checks a move to 100%: a canary that serves nothing,
    and ``StableNotReady``."""
    spec_ = cluster.spec
    if spec_.strategy != "Canary" or spec_.routing.type != "GatewayAPI":
        return
    stable = decision.status.stable_revision
    if not stable or stable != status.stable_revision or "StableNotReady" in reasons(decision):
        return
    old, new = weights_before.get(stable, 100), decision.weights.get(stable, 0)
    if new <= old or new == 100:  # all of it: check_hand_back
        return
    found = _losers_with_serving_canary(status, before, weights_before, stable)
    if found is None:
        return
    _, obs = found
    need = pods_for_weight(cluster.replicas, new)
    assert obs[stable].ready >= need, (stable, old, new, obs, weights_before, decision)


def check(
    cluster: Cluster,
    before_index: int,
    before_canary: str,
    decision: Decision,
    mode: str,
    surge: int,
    history_lost: bool = False,
) -> None:
    status = decision.status
    n = cluster.replicas
    # Weights always sum to 100 (or nothing takes traffic yet: first-deploy gate or failed first deploy).
    assert sum(decision.weights.values()) == 100 or (not decision.weights and not status.stable_revision)
    assert all(0 <= w <= 100 for w in decision.weights.values())
    # Every revision is built from exactly its own recorded template (none known once the status, and the
    # history in it, was lost: the operator reads the revisions' ControllerRevisions, which stay).
    for revision, template in decision.templates.items():
        assert template == f"tmpl-{revision[0]}" or (history_lost and not template), (revision, template)
    # Every revision given traffic is desired at a count that can carry its share: the stable, a canary, a
    # canary handing its traffic back; across pause, resume, promotion and spec changes. With replica-ratio
    # routing the pods are the weights (at least one pod per revision that takes any); Neutral capacity gives
    # the stable only what the budget leaves once the other revisions' pods are counted.
    for revision, share in decision.weights.items():
        if share == 0:
            continue
        have = decision.replicas.get(revision, 0)
        others = sum(c for r, c in decision.replicas.items() if r != revision)
        if cluster.spec.strategy == "Canary" and cluster.spec.routing.type == "Replicas":
            assert have >= 1, (revision, share, decision)
        elif mode == "Neutral":
            assert have >= min(pods_for_weight(n, share), n + surge - others), (revision, share, decision)
            # The budget may leave a revision short of pods for its share, never with none (but a swap of the
            # one pod that a budget of one holds).
            assert have >= 1 or n + surge <= 1, (revision, share, decision)
        elif cluster.spec.strategy != "RollingUpdate":
            assert have >= pods_for_weight(n, share), (revision, share, decision)
    stable = status.stable_revision or (next(iter(decision.weights)) if len(decision.weights) == 1 else "")
    if mode == "Neutral" and stable and stable in decision.replicas:
        others = sum(c for r, c in decision.replicas.items() if r != stable)
        assert decision.replicas[stable] + others <= n + surge or status.phase in ("RollingBack", "Paused")
    # A mirror copies requests only to the canary, only while it has a Service and no live traffic, with the share
    # the status records, and only to pods that can take that share (Neutral: what maxSurgePods allows).
    mirror = decision.mirror
    if mirror is not None:
        assert cluster.spec.routing.type == "GatewayAPI" and mirror.revision == status.canary_revision
        assert decision.weights.get(mirror.revision) == 0 and 0 < mirror.percent <= status.mirror_weight <= 100
        assert mode == "Neutral" or mirror.percent == status.mirror_weight
        need = pods_for_weight(n, mirror.percent)
        have = decision.replicas.get(mirror.revision, 0)
        assert have >= (min(need, surge) if mode == "Neutral" else need) or status.phase == "Paused", decision
    assert status.mirror_weight == 0 or status.canary_weight == 0 or status.phase == "RollingBack", status
    # No step is skipped or repeated.
    done = [int(m.group(1)) for e in decision.events if (m := STEP_DONE.match(e.message))]
    if done:
        start = before_index if status.canary_revision == before_canary else 0
        restarted = any(e.reason in ("RolloutStarted", "RolloutReplaced") for e in decision.events)
        assert done == list(range(0 if restarted else start, (0 if restarted else start) + len(done)))
        assert status.current_step_index in (done[-1] + 1, 0)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# Found by this test: a spec change while spec.paused holds a rollout left the stable short of pods (or with none)
# while it had all the traffic (test_rollout_paused_spec_change.py replays them step by step).
@example(
    name="gateway-neutral-0",
    script=[("time", 1), ("deploy", "bbbbbbbbbb"), ("promote", "p1"), ("pause", True), ("deploy", "cccccccccc")],
)
@example(
    name="gateway-surge",
    script=[("time", 1), ("deploy", "cccccccccc"), ("ready", "cccccccccc"), ("pause", True), ("deploy", "bbbbbbbbbb")],
)
# Found for this test's hand-back check: an unpaused spec change dropped a canary with traffic at once, and the
# stable (3 of 4 pods, replica-ratio routing) took all of it (test_rollout_spec_change_hand_back.py).
@example(
    name="replicas",
    script=[("time", 1), ("ready", "aaaaaaaaaa"), ("deploy", "bbbbbbbbbb"), ("ready", "bbbbbbbbbb"), ("step", 0),
            ("deploy", "cccccccccc")],
)  # fmt: skip
# The same when the spec goes back to the stable while the canary has traffic (a cancelled rollout): the stable
# (3 of 4 pods) took all of it at once (test_rollout_spec_change_hand_back.py).
@example(
    name="replicas",
    script=[("time", 1), ("ready", "aaaaaaaaaa"), ("deploy", "bbbbbbbbbb"), ("ready", "bbbbbbbbbb"), ("step", 0),
            ("deploy", "aaaaaaaaaa")],
)  # fmt: skip
# Found by check_stable_gains: a step that lowers the weight (60 -> 20) gave the stable (2 of 4 pods ready) 80% of
# the traffic at once (test_rollout_weight_down.py).
@example(
    name="gateway-neutral-1-down",
    script=[("time", 1), ("ready", "aaaaaaaaaa"), ("deploy", "bbbbbbbbbb"), ("ready", "bbbbbbbbbb"), ("time", 30)],
)
# Found by check_hand_back once it asked for N: a rollback with Neutral capacity moved all the traffic to the stable
# once it had the pods the budget allowed beside all of the canary's (2 or 3 of 4), rather than taking the canary's
# spare pods for the stable (test_rollout_plan.py, tests/component/test_rollback_capacity.py).
@example(
    name="replicas-neutral-1-down",
    script=[("time", 1), ("ready", "aaaaaaaaaa"), ("deploy", "bbbbbbbbbb"), ("ready", "bbbbbbbbbb"),
            ("abort", True), ("ready", "aaaaaaaaaa"), ("ready", "aaaaaaaaaa"), ("ready", "aaaaaaaaaa")],
)  # fmt: skip
@example(
    name="gateway-neutral-1-down",
    script=[("time", 1), ("ready", "aaaaaaaaaa"), ("deploy", "bbbbbbbbbb"), ("ready", "bbbbbbbbbb"),
            ("abort", True), ("ready", "aaaaaaaaaa"), ("ready", "aaaaaaaaaa"), ("ready", "aaaaaaaaaa")],
)  # fmt: skip
@given(name=st.sampled_from(sorted(SPECS)), script=st.lists(events, max_size=40))
def test_random_event_sequences_keep_invariants(name: str, script: list[tuple[str, Any]]) -> None:
    raw = SPECS[name]
    rollout = spec(raw)
    mode = rollout.capacity.mode if rollout.strategy == "Canary" else "Surge"
    surge = rollout.capacity.max_surge_pods
    cluster = Cluster(rollout, auto_ready=False, next_sample=GOOD)
    promote, abort, paused, rollback = "", False, False, 0
    pending = None
    erroring = False  # the metric source fails: requests are answered with Measurement.failed
    golden = GOLDEN_ANSWERS["good"] if rollout.analysis and rollout.analysis.golden else None
    history_lost = False
    for kind, value in script:
        stable_before = cluster.status.stable_revision
        if kind == "time":
            cluster.advance(value)
        elif kind == "ready" and value in cluster.deployments:
            cluster.make_ready(value)
        elif kind == "sample":
            erroring = value == "error"
            cluster.next_sample = {"good": GOOD, "bad": BAD, "thin": THIN, "error": GOOD}[value]
            if golden is not None:
                golden = GOLDEN_ANSWERS.get(value, golden)
        elif kind == "deploy":
            cluster.deploy(value)
        elif kind == "promote":
            promote = value
        elif kind == "abort":
            abort = value
        elif kind == "pause":
            paused = value
        elif kind == "rollback":
            rollback = value
        elif kind == "crash":
            cluster.crash.symmetric_difference_update({value})
        elif kind == "lose":
            cluster.lose_status()
            history_lost = True
        elif kind == "restart":
            # Same inputs, same decision: nothing lives outside the status.
            one = next_rollout(cluster.spec, cluster.status, cluster.observed(), cluster.now, cluster.controls)
            two = next_rollout(cluster.spec, cluster.status, cluster.observed(), cluster.now, cluster.controls)
            assert one == two
        cluster.controls = Controls(promote_token=promote, abort=abort, rollback_to=rollback, paused=paused)
        before_index, before_canary = cluster.status.current_step_index, cluster.status.canary_revision
        measurement = None
        if pending is not None and cluster.next_sample is not None:
            from modeldeploy.rollout.plan import Measurement

            measurement = (
                Measurement.failed(pending, cluster.now, "metric source down")
                if erroring
                else Measurement(pending.run_id, pending.seq, cluster.now, cluster.next_sample, GOOD,
                                 attempt=pending.attempt, golden=golden)
            )  # fmt: skip
        before, status_before = cluster.observed(), cluster.status
        weights_before = cluster.decisions[-1].weights if cluster.decisions else {}
        decision = cluster.step(measurement)
        pending = decision.analysis
        check(cluster, before_index, before_canary, decision, mode, surge, history_lost)
        check_hand_back(cluster, status_before, before, weights_before, decision)
        check_stable_gains(cluster, status_before, before, weights_before, decision)
        if kind == "lose":
            check_lost_status(cluster, stable_before, decision)
        for rev, obs in list(cluster.deployments.items()):
            cluster.deployments[rev] = dataclasses.replace(obs, ready=min(obs.ready, obs.desired))
