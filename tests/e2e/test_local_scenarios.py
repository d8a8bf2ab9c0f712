"""Progressive delivery end to end on this machine: the real operator, real modelserve processes, and a Service
proxy (replica-ratio routing) or an HTTPRoute proxy (Gateway API routing).

Each test prints its measured numbers (run with ``-s`` or ``make e2e-local`` to see them).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from modeldeploy.sim.scenarios import (
    LoadReport,
    LocalHarness,
    ScenarioResult,
    StepShare,
    canary_promotes,
    failing_canary_rolls_back,
    gateway_canary_promotes,
    gateway_canary_rolls_back,
    gateway_header_routing,
    golden_gate,
    operator_restart_mid_canary,
    shadow_canary_rolls_back,
    slow_canary_rolls_back,
    unloadable_canary_rolls_back,
)

pytestmark = [pytest.mark.e2e_local, pytest.mark.timeout(150)]


def finish(harness: LocalHarness, result: ScenarioResult) -> ScenarioResult:
    result.print()
    assert harness.operator_problems() == []
    assert result.seconds < 100, "each scenario is bounded well under two minutes"
    return result


def test_canary_promotes_without_failed_requests(harness: LocalHarness, models: dict[str, Path]) -> None:
    result = finish(harness, canary_promotes(harness, models))
    assert result.final_phase == "Completed" and result.final_version == "2"
    assert result.load.failures() == [], result.load.summary()
    served = result.load.by_revision()
    assert served.get(result.stable_revision, 0) > 0 and served.get(result.canary_revision, 0) > 0, served
    # During the 50% step both revisions answered: the replica ratio split the traffic.
    window = result.load.window(result.canary_revision)
    assert window is not None
    split = [r for r in result.load.responses if window[0] <= r.started <= window[1]]
    assert any(r.revision == result.stable_revision for r in split)
    assert [run["phase"] for run in result.analysis_runs] == ["Successful"]
    assert harness.deployments() == [f"iris-{result.canary_revision}"]


def test_failing_canary_is_rolled_back(harness: LocalHarness, models: dict[str, Path]) -> None:
    result = finish(harness, failing_canary_rolls_back(harness, models))
    assert result.final_phase == "RolledBack"
    assert harness.status()["stableRevision"] == result.stable_revision
    (run,) = result.analysis_runs
    assert run["phase"] == "Failed" and "maxErrorRatio" in run["measurements"][-1]["message"]
    failures = result.load.failures()
    assert failures, "the failing model answered errors on poisoned inputs while it had traffic"
    assert all(r.revision == result.canary_revision for r in failures), "only the canary failed"
    assert result.notes["failed_after_rollback"] == 0 and result.notes["requests_after_rollback"] > 0
    # Blast radius: at most the canary's share (50%) of the poisoned requests (30%) during its window.
    share = result.notes["failed_in_window"] / result.notes["requests_in_window"]
    print(f"    failed share of all requests in the canary window: {share:.1%} (bound 0.5 x 30% = 15% + 5%)")
    assert share <= 0.5 * 0.3 + 0.05


def test_slow_canary_is_rolled_back_on_latency(harness: LocalHarness, models: dict[str, Path]) -> None:
    result = finish(harness, slow_canary_rolls_back(harness, models))
    assert result.final_phase == "RolledBack"
    (run,) = result.analysis_runs
    assert run["phase"] == "Failed" and "maxP99LatencyRatio" in run["measurements"][-1]["message"]
    assert result.load.failures() == [], "a slow model answers; it is rolled back for its latency only"
    assert result.notes["requests_after_rollback"] > 0


def test_a_canary_that_cannot_load_is_rolled_back_in_the_servers_words(
    harness: LocalHarness, models: dict[str, Path]
) -> None:
    result = finish(harness, unloadable_canary_rolls_back(harness, models))
    assert result.final_phase == "RolledBack"
    assert harness.status()["stableRevision"] == result.stable_revision
    rejection = result.notes["rejection"]
    print(f"    rejection: {rejection.get('reason')}: {rejection.get('message')}")
    assert rejection.get("reason") == "CrashLoop", rejection
    # The real server's load error, through its termination message and the pod's status.
    assert " exited with code 10: Cannot load model iris: " in rejection["message"], rejection
    assert result.analysis_runs == [], "a canary without ready pods is never analysed"
    assert result.load.failures() == [], "pods that never became ready took no request"
    assert result.load.by_revision().get(result.canary_revision, 0) == 0
    assert result.notes["requests_after_rollback"] > 0


def test_operator_restart_mid_canary_completes(harness: LocalHarness, models: dict[str, Path]) -> None:
    result = finish(harness, operator_restart_mid_canary(harness, models))
    assert result.notes["phase_when_stopped"] == "Paused"
    assert result.final_phase == "Completed" and result.final_version == "2"
    assert result.load.failures() == [], result.load.summary()
    assert [run["phase"] for run in result.analysis_runs] == ["Successful"]
    assert len(harness.runners) == 3


# --- Gateway API routing through the HTTPRoute proxy ---------------------------------------------------------


def assert_share_matches_weight(step: StepShare, concurrency: int) -> None:
    """The canary's share of a weight window is the route's weight, within what smooth weighted round robin allows.

    The RouteProxy picks backends by smooth weighted round robin: over any run of consecutive picks a backend's
    count is within 2 of ``picks * weight``. The window is cut from the client's side (start times), so up to
    ``concurrency`` requests at each end may have been picked just outside it: the bound is
    ``(2 + 2 * concurrency) / requests``, about 1% at 1,000 requests; one point of slack on top covers nothing
    but float rounding of the bound. (With seeded random picks, as Envoy does, the same check would need the
    binomial 4-sigma band, 4 * sqrt(w (1 - w) / n): 5% at w = 0.2 and n = 1,000.)
    """
    assert step.requests >= 300, f"too few requests in the weight-{step.weight} window to judge: {step}"
    assert step.route_weights == [step.weight], f"the HTTPRoute did not hold weight {step.weight}: {step}"
    bound = (2 + 2 * concurrency) / step.requests + 0.01
    print(f"    weight {step.weight}%: canary share {step.share:.2%} of {step.requests} requests "
          f"(bound +/- {bound:.2%})")  # fmt: skip
    assert abs(step.share - step.weight / 100) <= bound, step


def test_gateway_canary_follows_each_weight_and_promotes(harness: LocalHarness, models: dict[str, Path]) -> None:
    result = finish(harness, gateway_canary_promotes(harness, models))
    assert result.final_phase == "Completed" and result.final_version == "2"
    assert result.load.failures() == [], result.load.summary()
    for step in result.notes["steps"]:
        assert_share_matches_weight(step, concurrency=4)
    assert [run["phase"] for run in result.analysis_runs] == ["Successful"]
    # After promotion the route sends everything to the new stable and the old revision is gone.
    assert result.notes["requests_after_promotion"] > 0 and result.notes["stable_after_promotion"] == 0
    assert harness.deployments() == [f"iris-{result.canary_revision}"]
    route = harness.get("gateway.networking.k8s.io/v1/httproutes", "iris")
    assert route is not None
    assert route["spec"]["rules"] == [{"backendRefs": [
        {"name": f"iris-{result.canary_revision}", "port": 80, "weight": 100}]}]  # fmt: skip


def test_gateway_header_routes_tagged_requests_to_the_canary(harness: LocalHarness, models: dict[str, Path]) -> None:
    result = finish(harness, gateway_header_routing(harness, models))
    tagged: LoadReport = result.notes["header_load"].report
    assert result.final_phase == "Completed" and result.final_version == "2"
    assert result.load.failures() == [] and tagged.failures() == [], (result.load.summary(), tagged.summary())
    assert result.notes["header_requests_while_routed"] >= 100
    assert result.notes["header_requests_to_stable"] == 0, "a request with the header reached the stable"
    (step,) = result.notes["steps"]
    assert_share_matches_weight(step, concurrency=3)


def test_gateway_failing_canary_is_rolled_back(harness: LocalHarness, models: dict[str, Path]) -> None:
    result = finish(harness, gateway_canary_rolls_back(harness, models))
    assert result.final_phase == "RolledBack"
    assert harness.status()["stableRevision"] == result.stable_revision
    (run,) = result.analysis_runs
    assert run["phase"] == "Failed" and "maxErrorRatio" in run["measurements"][-1]["message"]
    # Traffic first: from the first status that said RollingBack, the route gave the canary nothing...
    assert result.notes["route_canary_weight_once_rolling_back"] == [0]
    assert result.notes["requests_after_rollback"] > 0
    assert result.notes["canary_after_rollback"] == 0 and result.notes["failed_after_rollback"] == 0
    # ... and no request was routed to the canary once its pods were gone: every failure is the canary model's
    # own 500 (a request sent to a backend without endpoints would be a 503 with no revision).
    failures = result.load.failures()
    assert failures and all(r.revision == result.canary_revision and r.status == 500 for r in failures)
    # Blast radius: the canary's 20% of the poisoned 30% while it had traffic, plus sampling slack.
    share = result.notes["failed_in_window"] / result.notes["requests_in_window"]
    print(f"    failed share of all requests in the canary window: {share:.1%} (bound 0.2 x 30% = 6% + 4%)")
    assert share <= 0.2 * 0.3 + 0.04


def test_a_shadowed_failing_canary_is_rolled_back_before_any_client_gets_its_answers(
    harness: LocalHarness, models: dict[str, Path]
) -> None:
    result = finish(harness, shadow_canary_rolls_back(harness, models))
    assert result.final_phase == "RolledBack"
    assert harness.status()["stableRevision"] == result.stable_revision
    (run,) = result.analysis_runs
    assert run["phase"] == "Failed" and "maxErrorRatio" in run["measurements"][-1]["message"]
    # The analysis saw the canary fail on copies of real requests (30% of them poisoned) ...
    assert result.notes["mirror_seconds"] > 0 and result.notes["copies_to_canary"] >= 20
    assert result.notes["copies_failed"] > 0
    # ... while no client request was ever answered by it, none failed, and the copy ended with the rollback.
    assert result.notes["route_canary_weights"] == [0] and result.notes["client_requests_to_canary"] == 0
    assert result.load.failures() == [], result.load.summary()
    assert result.notes["mirror_after_rollback"] in ([0], [])


def test_golden_requests_promote_right_answers_and_stop_wrong_ones_before_any_client(
    harness: LocalHarness, models: dict[str, Path]
) -> None:
    result = finish(harness, golden_gate(harness, models))
    notes = result.notes
    cases = notes["golden_cases"]
    # v1 -> v2: every case answered right by the one pod the gate gave v2; then live traffic and promotion.
    assert notes["v2_golden"] == [{"checks": cases, "mismatches": 0, "pods": 1}]
    assert notes["client_requests_to_v2"] > 0
    # v2 -> v5-swapped: wrong answers on the first measurement, rolled back with no client ever reaching it ...
    (v5,) = notes["v5_golden"]
    assert v5["checks"] == cases and 0 < v5["mismatches"] <= cases and v5["detail"]
    assert "expected" in v5["detail"][0]
    assert result.final_phase == "RolledBack" and result.final_version == "2"
    assert harness.status()["stableRevision"] == result.stable_revision
    assert notes["v5_rejection"].get("reason") == "AnalysisFailed"
    assert notes["client_requests_to_v5"] == 0
    # ... although it never fails: every request of the run was answered.
    assert result.load.failures() == [], result.load.summary()
