"""``keep_measurement``: when a measurement taken for the analysis is kept for the next reconcile."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from rollout_harness import B, stable_cluster

from modeldeploy.analysis.sample import Sample
from modeldeploy.rollout.plan import AnalysisRequest, Measurement, keep_measurement

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
RUN = "bbbbbbbbbb-step-2-1"
TAKEN = Measurement(RUN, 1, T0, Sample(requests=100, errors=0, p99_seconds=0.01, pods=1))
RECORD = {"takenAt": "2026-01-01T11:59:30Z", "verdict": "Pass", "message": "ok", "canary": {"requests": 100}}


def status(*, phase: str = "Running", measurements: int = 1, canary: str = "bbbbbbbbbb",
           run_id: str = RUN) -> dict[str, Any]:  # fmt: skip
    run = {"id": run_id, "revision": "bbbbbbbbbb", "gate": "step-2", "startedAt": "2026-01-01T11:59:00Z",
           "phase": phase, "measurements": [RECORD] * measurements}  # fmt: skip
    return {
        "phase": "Failed",  # e.g. InvalidSpec: the rollout did not run in this reconcile
        "rollout": {"phase": "Analyzing", "stableRevision": "aaaaaaaaaa", "canaryRevision": canary,
                    "currentStepIndex": 2, "analysisRuns": [run]},
    }  # fmt: skip


@pytest.mark.parametrize(
    ("requested", "after", "kept"),
    [
        # Nothing requested, and the run still waits for exactly this measurement: keep it.
        (None, status(), True),
        # Recorded: the run now holds measurement number 1 (seq 1 is its second).
        (None, status(measurements=2), False),
        # The run ended (failed, succeeded, inconclusive) or is no longer in status.
        (None, status(phase="Failed"), False),
        (None, status(phase="Successful"), False),
        (None, status(run_id="bbbbbbbbbb-step-2-2"), False),
        (None, None, False),
        (None, {"rollout": "damaged"}, False),
        # The rollout moved on: another canary, or none (rolled back, promoted).
        (None, status(canary="cccccccccc"), False),
        (None, status(canary=""), False),
        # A request for this very measurement keeps it (it arrived while the reconcile ran).
        (AnalysisRequest(RUN, 1, "bbbbbbbbbb", "aaaaaaaaaa"), status(), True),
        # A request for another measurement, or of another run, makes it useless.
        (AnalysisRequest(RUN, 2, "bbbbbbbbbb", "aaaaaaaaaa"), status(measurements=2), False),
        (AnalysisRequest("bbbbbbbbbb-step-2-2", 0, "bbbbbbbbbb", "aaaaaaaaaa"), status(), False),
    ],
)
def test_keep_measurement(requested: AnalysisRequest | None, after: dict[str, Any] | None, kept: bool) -> None:
    assert keep_measurement(TAKEN, requested, after) is kept


FAILED = Measurement.failed(AnalysisRequest(RUN, 1, "bbbbbbbbbb", "aaaaaaaaaa", attempt=2), T0, "connection refused")


def with_errors(errors: int, **kwargs: Any) -> dict[str, Any]:
    out = status(**kwargs)
    out["rollout"]["analysisRuns"][0]["consecutiveErrors"] = errors
    return out


@pytest.mark.parametrize(
    ("requested", "after", "kept"),
    [
        # The run waits for attempt 2 of measurement 1 (two errors so far): keep it.
        (None, with_errors(2), True),
        # Recorded: the run counts a third error now, or the measurement was taken since.
        (None, with_errors(3), False),
        (None, with_errors(0, measurements=2), False),
        # Asked for again: only the very same attempt keeps it.
        (AnalysisRequest(RUN, 1, "bbbbbbbbbb", "aaaaaaaaaa", attempt=2), with_errors(2), True),
        (AnalysisRequest(RUN, 1, "bbbbbbbbbb", "aaaaaaaaaa", attempt=3), with_errors(3), False),
    ],
)
def test_keep_a_failed_measurement(requested: AnalysisRequest | None, after: dict[str, Any], kept: bool) -> None:
    assert FAILED.error == "connection refused" and FAILED.attempt == 2
    assert keep_measurement(FAILED, requested, after) is kept


# --- which revisions a measurement request names --------------------------------------------------------------


@pytest.mark.parametrize(
    ("criteria", "stable"),
    [
        ({"maxErrorRatio": 0.01}, None),
        ({"maxP99LatencyMs": 200}, None),
        ({"maxErrorRatio": 0.01, "maxErrorRatioIncrease": 0.01}, "aaaaaaaaaa"),
        ({"maxP99LatencyRatio": 1.5}, "aaaaaaaaaa"),
    ],
)
def test_the_stable_is_measured_only_for_the_relative_criteria(criteria: dict[str, Any], stable: str | None) -> None:
    """A stable whose pods are all unready (3 a.m., the hotfix B shipped to replace it) or scaled to zero (weight
    100) cannot be scraped: asking for it without a criterion that compares with it failed every measurement of B
    and rolled the hotfix back to the broken stable."""
    raw = {"strategy": "Canary", "canary": {"steps": [{"setWeight": 50}, {"analysis": {}}]},
           "analysis": {"interval": "30s", "count": 2, "minRequests": 10, **criteria}}  # fmt: skip
    cluster = stable_cluster(raw)
    cluster.deploy(B)
    decision = cluster.step()
    for _ in range(5):
        if decision.analysis is not None:
            break
        cluster.advance(30)
        decision = cluster.step()
    assert decision.analysis is not None and decision.analysis.revision == B
    assert decision.analysis.stable_revision == stable
