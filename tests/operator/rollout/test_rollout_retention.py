"""A long analysis run keeps counts of every measurement and only the latest records in status."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from rollout_harness import BAD, GOOD, T0, THIN, B, Cluster, reasons, stable_cluster

from modeldeploy.analysis.golden import MAX_DETAIL_TEXT, GoldenResult
from modeldeploy.analysis.sample import Sample
from modeldeploy.rollout.plan import Decision
from modeldeploy.rollout.state import (
    MAX_ANALYSIS_RUNS,
    MAX_MESSAGE,
    MEASUREMENTS_KEPT,
    AnalysisRun,
    MeasurementRecord,
    RolloutStatus,
)

COUNT = 60
LONG: dict[str, Any] = {
    "strategy": "Canary",
    "canary": {"steps": [{"setWeight": 25}, {"analysis": {}}]},
    "analysis": {"maxErrorRatio": 0.01, "interval": "30s", "count": COUNT, "failureLimit": 3, "minRequests": 10},
    "progressDeadlineSeconds": 120,
}
FAILING_AT = {4, 9}
"""Measurement numbers (from 1) that fail; the rest pass."""


def _measure_until(cluster: Cluster, taken: int) -> Decision:
    """Step, answering analysis requests (a failing sample for the numbers in ``FAILING_AT``), until the run
    holds ``taken`` measurements or has ended."""
    decision = cluster.step()
    for _ in range(10 * COUNT):
        request = decision.analysis
        runs = decision.status.analysis_runs
        if (request is not None and request.seq == taken) or (runs and runs[-1].phase != "Running"):
            return decision
        if request is not None:
            cluster.next_sample = BAD if request.seq + 1 in FAILING_AT else GOOD
            decision = cluster.measure_if_asked(decision)
        cluster.advance(max(decision.requeue_after or 30, 1))
        decision = cluster.step()
    raise AssertionError(f"the run never reached {taken} measurements")


def _run(decision: Decision) -> AnalysisRun:
    return decision.status.analysis_runs[-1]


def test_a_long_run_keeps_its_counts_and_the_latest_measurements() -> None:
    cluster = stable_cluster(LONG)
    cluster.deploy(B)
    decision = _measure_until(cluster, 30)
    run = _run(decision)
    assert (run.passed, run.failed, run.inconclusive, run.taken) == (28, 2, 0, 30)
    # The latest ten, and the latest failed one (number 9) before them.
    assert [m.number for m in run.measurements] == [9, *range(21, 31)]
    assert run.measurements[0].outcome == "Fail" and len(run.measurements) == MEASUREMENTS_KEPT + 1
    # The next measurement asked for is the 31st: an operator reading this status back resumes there.
    assert decision.analysis is not None and decision.analysis.seq == 30
    stored = json.loads(json.dumps(decision.status.to_status()))
    resumed = RolloutStatus.from_status(stored).analysis_runs[-1]
    assert resumed == run and resumed.taken == 30

    cluster.next_sample = GOOD
    decision = cluster.measure_if_asked(decision)
    assert any(e.message.startswith(f"Analysis {run.id} measurement 31:") for e in decision.events)
    assert [m.number for m in _run(decision).measurements] == [9, *range(22, 32)]

    decision = _measure_until(cluster, COUNT)  # the run ends with its 60th measurement
    run = next(r for r in decision.status.analysis_runs if r.id == run.id)
    assert run.phase == "Successful" and (run.passed, run.failed) == (COUNT - 2, 2)
    assert run.message == f"{COUNT - 2} of {COUNT} measurements passed (failureLimit 3)"
    assert [m.number for m in run.measurements] == [9, *range(COUNT - 9, COUNT + 1)]


def test_a_run_that_fails_names_its_last_failed_measurement() -> None:
    cluster = stable_cluster({**LONG, "analysis": {**LONG["analysis"], "failureLimit": 1}})
    cluster.deploy(B)
    decision = _measure_until(cluster, 8)  # 4 failed; 9 will
    cluster.next_sample = BAD
    decision = cluster.measure_if_asked(decision)
    run = _run(decision)
    assert run.phase == "Failed" and (run.passed, run.failed, run.taken) == (7, 2, 9)
    rejection = decision.status.rejected_revisions[-1]
    assert rejection.reason == "AnalysisFailed" and "Failed maxErrorRatio" in rejection.message
    assert "RollingBack" in reasons(decision) and decision.status.phase == "RollingBack"


def test_a_run_written_by_an_older_operator_goes_on_from_all_its_records() -> None:
    """Older operators kept every measurement and no counts: the counts come from the records, the records are
    numbered by position and cut to the latest, and the run goes on at the next number."""
    cluster = stable_cluster(LONG)
    cluster.deploy(B)
    decision = _measure_until(cluster, 0)
    stored = json.loads(json.dumps(decision.status.to_status()))
    raw_run = stored["analysisRuns"][-1]
    started = decision.status.analysis_runs[-1].started_at
    records = [
        {
            "takenAt": (started + timedelta(seconds=30 * i)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "verdict": "Fail" if i == 2 else "Inconclusive" if i == 3 else "Pass",
            "message": f"measurement {i}",
            "canary": {"requests": 100, "pods": 1},
        }
        for i in range(1, 26)
    ]
    for key in ("passed", "failed", "inconclusive"):
        del raw_run[key]
    raw_run["measurements"] = records
    cluster.status = RolloutStatus.from_status(stored)
    run = cluster.status.analysis_runs[-1]
    assert (run.passed, run.failed, run.inconclusive) == (23, 1, 1)
    assert [m.number for m in run.measurements] == [2, *range(16, 26)]
    assert [m.message for m in run.measurements] == [f"measurement {n}" for n in (2, *range(16, 26))]
    cluster.now = started + timedelta(seconds=30 * 26)
    decision = cluster.step()
    assert decision.analysis is not None and decision.analysis.seq == 25
    cluster.next_sample = THIN
    decision = cluster.measure_if_asked(decision)
    run = _run(decision)
    assert run.measurements[-1].number == 26 and run.measurements[-1].outcome == "Inconclusive"
    assert (run.passed, run.failed, run.inconclusive, run.taken) == (23, 1, 2, 26)


def test_the_worst_status_the_operator_can_write_stays_far_below_the_object_limit() -> None:
    """Before measurements were cut, ten runs of ``count: 100`` could hold 1,990 records; now the worst case,
    every message at its longest, is about 480 KB: under 1 MiB (etcd's default request limit is 1.5 MiB)."""
    run = AnalysisRun(id="b" * 200, revision="b" * 64, gate="pre-promotion", started_at=T0, message="r" * MAX_MESSAGE)
    golden = GoldenResult(96, 96, 3, tuple("x" * MAX_DETAIL_TEXT for _ in range(3)))
    most = Sample(1e12, 1e12, 1e3, 999)
    huge = MeasurementRecord(run.started_at, "Inconclusive", "m" * 2 * MAX_MESSAGE, most)
    failed = MeasurementRecord(run.started_at, "Fail", "f" * 2 * MAX_MESSAGE, most, None, golden)
    for n in range(199):
        run = run.record(failed if n == 0 else huge)
    assert len(run.measurements) == MEASUREMENTS_KEPT + 1 and run.taken == 199
    status = RolloutStatus(analysis_runs=(run,) * MAX_ANALYSIS_RUNS)
    size = len(json.dumps(status.to_status()).encode())
    assert size < 1024 * 1024, size


def test_absurd_counts_and_numbers_read_back_as_unknown() -> None:
    """A hand-edited status cannot make the next number overflow what the API server stores (int64)."""
    record = {"number": 2**62, "takenAt": "2026-01-01T12:00:30Z", "verdict": "Pass", "canary": {"requests": 10}}
    raw = {"analysisRuns": [{"id": "b-step-1-1", "revision": "b", "gate": "step-1", "startedAt": "2026-01-01T12:00:00Z",
                             "passed": -3, "failed": 2**40, "measurements": [record]}]}  # fmt: skip
    (run,) = RolloutStatus.from_status(raw).analysis_runs
    assert (run.passed, run.failed, run.inconclusive) == (1, 0, 0)
    assert [m.number for m in run.measurements] == [1] and run.taken == 1
