"""Progressive delivery end to end on this machine: the real operator, real modelserve processes, a Service proxy.

Each test prints its measured numbers (run with ``-s`` or ``make e2e-local`` to see them).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from modeldeploy.sim.scenarios import (
    LocalHarness,
    ScenarioResult,
    canary_promotes,
    failing_canary_rolls_back,
    operator_restart_mid_canary,
    slow_canary_rolls_back,
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


def test_operator_restart_mid_canary_completes(harness: LocalHarness, models: dict[str, Path]) -> None:
    result = finish(harness, operator_restart_mid_canary(harness, models))
    assert result.notes["phase_when_stopped"] == "Paused"
    assert result.final_phase == "Completed" and result.final_version == "2"
    assert result.load.failures() == [], result.load.summary()
    assert [run["phase"] for run in result.analysis_runs] == ["Successful"]
    assert len(harness.runners) == 3
