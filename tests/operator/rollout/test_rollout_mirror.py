"""Shadow traffic: canary ``setMirror`` steps in the rollout state machine."""

from __future__ import annotations

from typing import Any

import pytest
from rollout_harness import BAD, A, B, C, Cluster, reasons, spec, stable_cluster

from modeldeploy.rollout.config import MirrorStep, RolloutSpecError, parse_rollout
from modeldeploy.rollout.routing import Mirror

GATEWAY: dict[str, Any] = {"type": "GatewayAPI", "gatewayAPI": {"parentRefs": [{"name": "gw"}]}}
ANALYSIS: dict[str, Any] = {"maxErrorRatio": 0.01, "interval": "30s", "count": 2, "failureLimit": 0, "minRequests": 10}
# Shadow half of the requests and analyse the canary on them, then give it live traffic.
SHADOW: dict[str, Any] = {
    "strategy": "Canary",
    "canary": {
        "steps": [{"setMirror": 50}, {"analysis": {}}, {"setWeight": 25}, {"pause": {}}],
        "trafficRouting": GATEWAY,
    },
    "analysis": ANALYSIS,
    "progressDeadlineSeconds": 120,
}


def shadow(**canary: Any) -> dict[str, Any]:
    return {**SHADOW, "canary": {**SHADOW["canary"], **canary}}


def test_mirror_waits_for_the_canarys_pods_then_copies_requests_until_live_traffic() -> None:
    cluster = stable_cluster(SHADOW, auto_ready=False)
    cluster.make_ready(A)
    cluster.deploy(B)
    d = cluster.step()
    # Pods for half of the traffic beside all of the stable's; nothing is copied before they are ready.
    assert d.replicas == {A: 4, B: 2} and d.weights == {A: 100, B: 0} and d.mirror is None
    assert d.status.phase == "Progressing" and "to mirror 50% of the requests" in d.status.message
    cluster.make_ready(B)
    d = cluster.step()
    assert d.mirror == Mirror(B, 50) and d.status.mirror_weight == 50 and d.weights == {A: 100, B: 0}
    assert d.status.current_step_index == 1 and d.status.phase == "Analyzing" and d.replicas == {A: 4, B: 2}
    assert "StepCompleted" in reasons(d)
    # The analysis measures the canary on the copied requests; the mirror stays through it.
    while d.status.current_step_index == 1:
        cluster.advance(30)
        d = cluster.measure_if_asked(cluster.step())
        if d.status.current_step_index == 1:
            assert d.mirror == Mirror(B, 50) and d.weights == {A: 100, B: 0}
    # setWeight 25: B already has the pods for it, so live traffic starts in the same pass and the mirror ends.
    assert d.status.current_step_index == 3 and d.weights == {A: 75, B: 25}
    assert d.mirror is None and d.status.mirror_weight == 0 and d.replicas == {A: 4, B: 1}
    assert [x.status.canary_weight for x in cluster.decisions if x.mirror is not None] == [0] * sum(
        1 for x in cluster.decisions if x.mirror is not None
    )


def test_a_canary_that_fails_on_mirrored_requests_is_rolled_back_without_live_traffic() -> None:
    cluster = stable_cluster(SHADOW)
    cluster.deploy(B)
    cluster.next_sample = BAD
    d = cluster.run(steps=20)
    assert d.status.phase == "RolledBack" and d.status.rejection(B) is not None
    assert d.status.rejection(B).reason == "AnalysisFailed"  # type: ignore[union-attr]
    # The canary never had a weight: clients only ever got the stable's answers.
    assert all(x.weights.get(B, 0) == 0 for x in cluster.decisions)
    assert any(x.mirror == Mirror(B, 50) for x in cluster.decisions)
    rolling_back = [x for x in cluster.decisions if x.status.phase in ("RollingBack", "RolledBack")]
    assert rolling_back and all(x.mirror is None and x.status.mirror_weight == 0 for x in rolling_back)


def test_promotion_during_the_mirror_ends_it() -> None:
    cluster = stable_cluster(shadow(steps=[{"setMirror": 100}, {"pause": {}}]))
    cluster.deploy(B)
    d = cluster.run()
    assert d.mirror == Mirror(B, 100) and d.status.phase == "Paused" and d.replicas == {A: 4, B: 4}
    cluster.controls = cluster.controls.__class__(promote_token="go")
    d = cluster.run()
    assert d.status.stable_revision == B and d.mirror is None and d.status.mirror_weight == 0
    assert all(x.mirror is None for x in cluster.decisions if x.status.phase in ("Promoting", "Completed"))


def test_spec_paused_keeps_the_mirror_and_its_pods() -> None:
    cluster = stable_cluster(shadow(steps=[{"setMirror": 25}, {"pause": {}}]))
    cluster.deploy(B)
    d = cluster.run()
    assert d.mirror == Mirror(B, 25) and d.replicas == {A: 4, B: 1}
    cluster.controls = cluster.controls.__class__(paused=True)
    d = cluster.step()
    assert d.status.phase == "Paused" and d.mirror == Mirror(B, 25) and d.replicas == {A: 4, B: 1}


def test_a_later_mirror_step_changes_the_share_and_zero_ends_it() -> None:
    steps = [{"setMirror": 25}, {"pause": {"duration": "1m"}}, {"setMirror": 75}, {"pause": {"duration": "1m"}},
             {"setMirror": 0}, {"pause": {}}]  # fmt: skip
    cluster = stable_cluster(shadow(steps=steps), auto_ready=False)
    cluster.make_ready(A)
    cluster.deploy(B)
    cluster.step()
    cluster.make_ready(B)
    d = cluster.step()
    assert d.mirror == Mirror(B, 25) and d.replicas[B] == 1
    cluster.advance(60)
    d = cluster.step()
    # Waiting for the pods of the larger share: the smaller one goes on meanwhile.
    assert d.status.current_step_index == 2 and d.mirror == Mirror(B, 25) and d.replicas[B] == 3
    cluster.make_ready(B)
    d = cluster.step()
    assert d.mirror == Mirror(B, 75) and d.status.current_step_index == 3
    cluster.advance(60)
    d = cluster.step()
    assert d.mirror is None and d.status.mirror_weight == 0 and d.status.current_step_index == 5
    assert d.replicas[B] == 0, "no mirror and no weight: the canary needs no pods"


def test_neutral_capacity_limits_the_mirror_to_the_surge_pods() -> None:
    raw = shadow(steps=[{"setMirror": 60}, {"pause": {}}], capacity={"mode": "Neutral", "maxSurgePods": 1})
    cluster = stable_cluster(raw)
    cluster.deploy(B)
    d = cluster.run()
    assert d.replicas == {A: 4, B: 1} and d.mirror == Mirror(B, 25)
    limited = [e for x in cluster.decisions for e in x.events if e.reason == "MirrorLimited"]
    assert len(limited) == 1 and "mirroring 25% instead of 60%" in limited[0].message


def test_neutral_capacity_with_more_pods_than_one_surge_pod_can_serve_mirrors_nothing() -> None:
    raw = shadow(steps=[{"setMirror": 10}, {"pause": {}}], capacity={"mode": "Neutral", "maxSurgePods": 1})
    cluster = Cluster(spec(raw), replicas=200)
    cluster.run()
    cluster.deploy(B)
    d = cluster.run()
    assert d.mirror is None and d.status.mirror_weight == 0 and d.status.current_step_index == 1
    assert any(e.reason == "MirrorLimited" and "mirroring 0%" in e.message for x in cluster.decisions
               for e in x.events)  # fmt: skip


def test_steps_edited_under_a_mirror_start_again_without_it() -> None:
    cluster = stable_cluster(shadow(steps=[{"setMirror": 50}, {"pause": {}}]))
    cluster.deploy(B)
    assert cluster.run().mirror == Mirror(B, 50)
    cluster.spec = spec(shadow(steps=[{"pause": {}}]))
    d = cluster.step()
    assert "StepsChanged" in reasons(d) and d.mirror is None and d.status.mirror_weight == 0


def test_a_mirror_step_reached_with_live_traffic_is_skipped() -> None:
    # The steps were edited under a canary that already has a weight: copying requests it also answers for real
    # would send them twice.
    cluster = stable_cluster(shadow(steps=[{"setWeight": 50}, {"pause": {}}]))
    cluster.deploy(B)
    assert cluster.run().weights == {A: 50, B: 50}
    edited = [{"setMirror": 20}, {"pause": {}}]
    cluster.spec = parse_rollout(shadow(steps=edited))
    d = cluster.run()
    assert "MirrorSkipped" in [r for x in cluster.decisions[-3:] for r in reasons(x)]
    assert d.mirror is None and d.weights == {A: 50, B: 50} and d.status.current_step_index == 1


def test_a_new_revision_during_the_mirror_replaces_the_canary_and_its_mirror() -> None:
    cluster = stable_cluster(shadow(steps=[{"setMirror": 50}, {"pause": {}}]))
    cluster.deploy(B)
    assert cluster.run().mirror == Mirror(B, 50)
    cluster.deploy(C, "3")
    d = cluster.run()
    assert d.status.canary_revision == C and d.mirror == Mirror(C, 50) and B not in d.replicas


def test_the_mirror_survives_an_operator_restart() -> None:
    cluster = stable_cluster(shadow(steps=[{"setMirror": 50}, {"pause": {}}]))
    cluster.deploy(B)
    before = cluster.run()
    # Cluster.step stores the status as JSON and reads it back each pass; a fresh pass from it decides the same.
    again = cluster.step()
    assert again.mirror == before.mirror == Mirror(B, 50) and again.replicas == before.replicas
    assert again.status.to_status()["mirrorWeight"] == 50


@pytest.mark.parametrize(
    ("canary", "field", "message"),
    [
        ({"steps": [{"setMirror": 10}]}, "steps[0].setMirror", "needs trafficRouting type GatewayAPI"),
        (
            {"steps": [{"setMirror": 10}], "trafficRouting": GATEWAY, "capacity": {"mode": "Neutral",
                                                                                   "maxSurgePods": 0}},
            "steps[0].setMirror",
            "capacity Neutral with maxSurgePods 0 has none",
        ),
        (
            {"steps": [{"setWeight": 0}, {"setWeight": 10}, {"setMirror": 10}], "trafficRouting": GATEWAY},
            "steps[2].setMirror",
            "must come before the first step that gives the canary traffic (steps[1])",
        ),
        ({"steps": [{"setMirror": 101}], "trafficRouting": GATEWAY}, "steps[0].setMirror", "between 0 and 100"),
        ({"steps": [{"setMirror": 5, "pause": {}}], "trafficRouting": GATEWAY}, "steps[0]", "exactly one of"),
    ],
)  # fmt: skip
def test_mirror_steps_the_spec_check_refuses(canary: dict[str, Any], field: str, message: str) -> None:
    with pytest.raises(RolloutSpecError) as error:
        parse_rollout({"strategy": "Canary", "canary": canary})
    assert error.value.field_path == f"spec.rollout.canary.{field}" and message in error.value.message


def test_mirror_steps_the_spec_check_accepts() -> None:
    shadowed = parse_rollout({"strategy": "Canary", "canary": {
        "steps": [{"setWeight": 0}, {"setMirror": 10}, {"pause": {}}, {"setWeight": 20}, {"setMirror": 0}],
        "trafficRouting": GATEWAY,
    }})  # fmt: skip
    assert shadowed.steps[1] == MirrorStep(10) and shadowed.steps[4] == MirrorStep(0)
    # setMirror 0 copies nothing: it needs no gateway and may come after live traffic.
    plain = parse_rollout({"strategy": "Canary", "canary": {"steps": [{"setWeight": 20}, {"setMirror": 0}]}})
    assert plain.steps[1] == MirrorStep(0)


def test_the_mirror_follows_the_desired_pod_count() -> None:
    # Surge: the canary's pods grow with N (an autoscaler scaling the ModelDeployment) and the share stays.
    cluster = stable_cluster(shadow(steps=[{"setMirror": 50}, {"pause": {}}]))
    cluster.deploy(B)
    assert cluster.run().replicas == {A: 4, B: 2}
    cluster.replicas = 8
    d = cluster.run()
    assert d.replicas == {A: 8, B: 4} and d.mirror == Mirror(B, 50)
    # Neutral: the canary stays within maxSurgePods, so the share shrinks to what its pod serves.
    raw = shadow(steps=[{"setMirror": 25}, {"pause": {}}], capacity={"mode": "Neutral", "maxSurgePods": 1})
    cluster = stable_cluster(raw)
    cluster.deploy(B)
    assert cluster.run().mirror == Mirror(B, 25)
    cluster.replicas = 8
    d = cluster.run()
    assert d.replicas == {A: 8, B: 1} and d.mirror == Mirror(B, 12) and d.status.mirror_weight == 25


def test_set_mirror_zero_only_ends_a_mirror_and_warns_of_nothing() -> None:
    # Allowed anywhere, also with replica-ratio routing and after live traffic: it copies nothing.
    raw = {"strategy": "Canary", "canary": {"steps": [{"setWeight": 25}, {"setMirror": 0}, {"pause": {}}]}}
    cluster = stable_cluster(raw)
    cluster.deploy(B)
    d = cluster.run()
    assert d.status.current_step_index == 2 and d.mirror is None
    assert not [r for x in cluster.decisions for r in reasons(x) if r.startswith("Mirror")]
