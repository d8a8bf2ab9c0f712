from __future__ import annotations

import dataclasses
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modeldeploy.analysis.criteria import RunVerdict, assess_errors, assess_measurement, judge_counts
from modeldeploy.analysis.golden import GoldenResult
from modeldeploy.analysis.sample import Sample
from modeldeploy.analysis.webhooks import WebhookResult
from modeldeploy.rollout.config import AnalysisSpec, GoldenCase, GoldenOutput, GoldenSpec, GoldenTensor, WebhookSpec

ALL = AnalysisSpec(
    min_requests=50,
    max_error_ratio=0.01,
    max_p99_latency_ms=500,
    max_error_ratio_increase=0.005,
    max_p99_latency_ratio=1.5,
)
STABLE = Sample(requests=1000, errors=2, p99_seconds=0.2)


@pytest.mark.parametrize(
    ("canary", "stable", "outcome", "failed", "text"),
    [
        (
            Sample(requests=10, errors=0, p99_seconds=0.1),
            STABLE,
            "Inconclusive",
            (),
            "fewer than minRequests 50",
        ),
        (Sample(requests=0), STABLE, "Inconclusive", (), "served 0 requests"),
        (
            Sample(requests=1000, errors=3, p99_seconds=0.25),
            STABLE,
            "Pass",
            (),
            "errorRatio 0.30% <= maxErrorRatio 1.00%",
        ),
        (
            Sample(requests=1000, errors=20, p99_seconds=0.25),
            STABLE,
            "Fail",
            ("maxErrorRatio", "maxErrorRatioIncrease"),
            "2.00%",
        ),
        (
            Sample(requests=1000, errors=0, p99_seconds=0.6),
            STABLE,
            "Fail",
            ("maxP99LatencyMs", "maxP99LatencyRatio"),
            "600.0ms",
        ),
        (
            Sample(requests=1000, errors=8, p99_seconds=0.35),
            STABLE,
            "Fail",
            ("maxErrorRatioIncrease", "maxP99LatencyRatio"),
            "1.75",
        ),
        # No stable sample: relative criteria are skipped, and the message says so.
        (Sample(requests=1000, errors=8, p99_seconds=0.35), None, "Pass", (), "relative criteria skipped"),
        (
            Sample(requests=1000, errors=8, p99_seconds=0.35),
            Sample(requests=5),
            "Pass",
            (),
            "stable has 5 requests",
        ),
        (Sample(requests=1000, errors=0, p99_seconds=None), STABLE, "Pass", (), "p99 unknown"),
    ],
)
def test_assess_measurement(
    canary: Sample, stable: Sample | None, outcome: str, failed: tuple[str, ...], text: str
) -> None:
    verdict = assess_measurement(ALL, canary, stable)
    assert verdict.outcome == outcome
    assert verdict.failed == failed
    assert text in verdict.message


@pytest.mark.parametrize(
    ("criteria", "canary", "stable"),
    [
        # Only a latency limit, and the source has no latency data (no histogram, an empty Prometheus answer).
        (AnalysisSpec(min_requests=10, max_p99_latency_ms=100), Sample(requests=1000, errors=900), STABLE),
        # Only relative criteria, and no stable sample (or too small a one) to compare with.
        (AnalysisSpec(min_requests=10, max_error_ratio_increase=0.01), Sample(requests=1000, errors=900), None),
        (
            AnalysisSpec(min_requests=10, max_p99_latency_ratio=1.5, max_error_ratio_increase=0.01),
            Sample(requests=1000, errors=900, p99_seconds=9.0),
            Sample(requests=5),
        ),
        (
            AnalysisSpec(min_requests=10, max_p99_latency_ratio=1.5),
            Sample(requests=1000, p99_seconds=9.0),
            Sample(requests=1000, p99_seconds=None),
        ),
    ],
)
def test_a_measurement_that_judged_no_criterion_never_passes(
    criteria: AnalysisSpec, canary: Sample, stable: Sample | None
) -> None:
    """Missing data must not promote: when every configured criterion was skipped, nothing was judged."""
    verdict = assess_measurement(criteria, canary, stable)
    assert verdict.outcome == "Inconclusive"
    assert "no criterion could be judged" in verdict.message


def _judged(spec: AnalysisSpec, outcomes: list[str]) -> RunVerdict:
    """Measurements recorded one at a time, as the state machine does: judged from the counts after each, and no
    more recorded once the run ended."""
    passed = failed = inconclusive = 0
    verdict = judge_counts(spec, 0, 0, 0)
    for outcome in outcomes:
        passed, failed, inconclusive = (
            passed + (outcome == "Pass"),
            failed + (outcome == "Fail"),
            inconclusive + (outcome == "Inconclusive"),
        )
        verdict = judge_counts(spec, passed, failed, inconclusive)
        if verdict.phase != "Running":
            break
    return verdict


@pytest.mark.parametrize(
    ("count", "limit", "outcomes", "phase"),
    [
        (3, 1, ["Pass", "Pass", "Pass"], "Successful"),
        (3, 1, ["Pass", "Fail", "Pass"], "Successful"),
        (3, 1, ["Fail", "Fail"], "Failed"),
        (3, 0, ["Pass", "Fail"], "Failed"),
        (3, 1, ["Pass", "Inconclusive", "Pass"], "Running"),
        (2, 0, ["Inconclusive", "Inconclusive"], "Inconclusive"),
        (2, 0, [], "Running"),
    ],
)
def test_a_run_is_judged_from_its_counts(count: int, limit: int, outcomes: list[str], phase: str) -> None:
    spec = AnalysisSpec(count=count, failure_limit=limit, max_error_ratio=0.1)
    assert _judged(spec, outcomes).phase == phase


@given(
    count=st.integers(1, 12),
    limit=st.integers(0, 5),
    outcomes=st.lists(st.sampled_from(["Pass", "Fail", "Inconclusive"]), max_size=40),
)
def test_counts_taken_one_at_a_time_judge_as_the_definition_says(count: int, limit: int, outcomes: list[str]) -> None:
    """The state machine keeps counts, not every measurement. Judged from them after each one, a run ends at the
    first measurement after which more than failureLimit failed (Failed), count were conclusive (Successful) or count
    were inconclusive (Inconclusive), in that order, with the counts of that moment; otherwise it is Running."""
    spec = AnalysisSpec(count=count, failure_limit=limit, max_error_ratio=0.1)
    expected: tuple[str, int, int, int] = ("Running", *(outcomes.count(o) for o in ("Pass", "Fail", "Inconclusive")))
    for k in range(1, len(outcomes) + 1):
        seen = Counter(outcomes[:k])
        phase = (
            "Failed" if seen["Fail"] > limit
            else "Successful" if seen["Pass"] + seen["Fail"] >= count
            else "Inconclusive" if seen["Inconclusive"] >= count
            else ""
        )  # fmt: skip
        if phase:
            expected = (phase, seen["Pass"], seen["Fail"], seen["Inconclusive"])
            break
    verdict = _judged(spec, outcomes)
    assert (verdict.phase, verdict.passed, verdict.failed, verdict.inconclusive) == expected


def test_sample_validation_and_round_trip() -> None:
    with pytest.raises(ValueError, match="must not exceed"):
        Sample(requests=1, errors=2)
    with pytest.raises(ValueError, match="non-negative"):
        Sample(requests=-1)
    sample = Sample(requests=10, errors=1, p99_seconds=0.25, pods=2)
    assert Sample.from_dict(sample.to_dict()) == sample
    assert sample.error_ratio == 0.1 and Sample().error_ratio is None


@pytest.mark.parametrize(
    ("limit", "errors", "failed"),
    [(4, 0, False), (4, 4, False), (4, 5, True), (0, 1, True), (0, 0, False), (1, 2, True)],
)
def test_assess_errors(limit: int, errors: int, failed: bool) -> None:
    """Like failureLimit, consecutiveErrorLimit is what is tolerated: the run fails on one error more."""
    verdict = assess_errors(AnalysisSpec(consecutive_error_limit=limit, max_error_ratio=0.1), errors, "refused")
    assert (verdict is not None) is failed
    if verdict is not None:
        assert verdict.phase == "Failed" and f"consecutiveErrorLimit {limit}" in verdict.message
        assert verdict.message.endswith("last error: refused")


# --- an unknown error count (a query without data) ---------------------------------------------------------

UNKNOWN = Sample(requests=1000, errors=None, p99_seconds=0.2)


@pytest.mark.parametrize(
    ("criteria", "canary", "stable", "outcome", "text"),
    [
        # Only the error ratio is configured and it is unknown: nothing was judged.
        (AnalysisSpec(min_requests=10, max_error_ratio=0.01), UNKNOWN, STABLE, "Inconclusive", "maxErrorRatio skipped"),
        (
            AnalysisSpec(min_requests=10, max_error_ratio_increase=0.01),
            UNKNOWN,
            STABLE,
            "Inconclusive",
            "maxErrorRatioIncrease skipped",
        ),
        # The stable's errors unknown: the relative error criterion cannot be judged either.
        (
            AnalysisSpec(min_requests=10, max_error_ratio_increase=0.01),
            STABLE,
            Sample(requests=1000, errors=None),
            "Inconclusive",
            "maxErrorRatioIncrease skipped",
        ),
        # The other criteria are still judged: skipped is not passed, but latency can pass or fail on its own.
        (
            AnalysisSpec(min_requests=10, max_error_ratio=0.01, max_p99_latency_ms=500),
            UNKNOWN,
            STABLE,
            "Pass",
            "maxErrorRatio skipped",
        ),
        (
            AnalysisSpec(min_requests=10, max_error_ratio=0.01, max_p99_latency_ms=100),
            UNKNOWN,
            STABLE,
            "Fail",
            "maxErrorRatio skipped",
        ),
    ],
)
def test_an_unknown_error_count_skips_the_error_criteria(
    criteria: AnalysisSpec, canary: Sample, stable: Sample, outcome: str, text: str
) -> None:
    verdict = assess_measurement(criteria, canary, stable)
    assert verdict.outcome == outcome and text in verdict.message, verdict.message
    assert "maxErrorRatio" not in verdict.failed and "maxErrorRatioIncrease" not in verdict.failed


def test_an_unknown_error_count_round_trips() -> None:
    assert UNKNOWN.error_ratio is None
    raw = UNKNOWN.to_dict()
    assert "errors" not in raw and "errorRatio" not in raw
    assert Sample.from_dict(raw) == UNKNOWN
    with pytest.raises(ValueError, match="non-negative"):
        Sample(requests=10, errors=float("nan"))


# --- golden requests -------------------------------------------------------------------------------------------

GOLDEN_SPEC = GoldenSpec(
    cases=(GoldenCase("c", (GoldenTensor("input", "FP32", (1,), (1.0,)),), (GoldenOutput("y", argmax=(0,)),)),),
    max_mismatches=1,
)
GOLDEN_ONLY = AnalysisSpec(min_requests=50, golden=GOLDEN_SPEC)
GOLDEN_AND_TRAFFIC = dataclasses.replace(ALL, golden=GOLDEN_SPEC)
RIGHT = GoldenResult(checks=4, mismatches=1, pods=2, detail=("case 'c' on pod p: HTTP 500",))
WRONG = GoldenResult(checks=4, mismatches=2, pods=2, detail=("case 'c' on pod p: argmax [1], expected [0]",))
NONE = Sample(requests=0)
BUSY = Sample(requests=1000, errors=3, p99_seconds=0.25)
FAILING = Sample(requests=1000, errors=20, p99_seconds=0.25)


@pytest.mark.parametrize(
    ("criteria", "canary", "golden", "outcome", "failed", "texts"),
    [
        # Golden requests alone need no traffic: a gate before any client reaches the revision.
        (GOLDEN_ONLY, NONE, RIGHT, "Pass", (), ["golden requests: 1 of 4 answers wrong on 2 pods <= maxMismatches 1"]),
        (GOLDEN_ONLY, NONE, WRONG, "Fail", ("goldenRequests",), ["2 of 4 answers wrong", "argmax [1], expected [0]"]),
        (GOLDEN_ONLY, BUSY, RIGHT, "Pass", (), ["Passed over 1000 requests", "golden requests"]),
        (GOLDEN_ONLY, NONE, None, "Inconclusive", (), ["golden requests not sent"]),
        # With traffic thresholds too: wrong answers fail whatever the traffic, right ones need the traffic judged.
        (GOLDEN_AND_TRAFFIC, NONE, WRONG, "Fail", ("goldenRequests",), ["fewer than minRequests 50"]),
        (GOLDEN_AND_TRAFFIC, NONE, RIGHT, "Inconclusive", (), ["fewer than minRequests 50", "golden requests: 1"]),
        (GOLDEN_AND_TRAFFIC, BUSY, RIGHT, "Pass", (), ["golden requests", "errorRatio 0.30% <= maxErrorRatio"]),
        (GOLDEN_AND_TRAFFIC, BUSY, WRONG, "Fail", ("goldenRequests",), ["errorRatio 0.30%"]),
        (GOLDEN_AND_TRAFFIC, FAILING, WRONG, "Fail", ("goldenRequests", "maxErrorRatio", "maxErrorRatioIncrease"), []),
        (GOLDEN_AND_TRAFFIC, FAILING, RIGHT, "Fail", ("maxErrorRatio", "maxErrorRatioIncrease"), []),
        # A result without goldenRequests configured is ignored (the spec changed since the request).
        (ALL, BUSY, WRONG, "Pass", (), ["errorRatio 0.30%"]),
    ],
)
def test_golden_requests_are_a_criterion(
    criteria: AnalysisSpec,
    canary: Sample,
    golden: GoldenResult | None,
    outcome: str,
    failed: tuple[str, ...],
    texts: list[str],
) -> None:
    verdict = assess_measurement(criteria, canary, STABLE, golden)
    assert (verdict.outcome, verdict.failed) == (outcome, failed), verdict.message
    for text in texts:
        assert text in verdict.message, verdict.message
    if criteria.golden is None:
        assert "golden" not in verdict.message


# --- webhooks --------------------------------------------------------------------------------------------------

HOOKS_SPEC = (WebhookSpec("evals", "http://evals/check"), WebhookSpec("load", "http://load/run"))
HOOKS_ONLY = AnalysisSpec(min_requests=50, webhooks=HOOKS_SPEC)
HOOKS_AND_TRAFFIC = dataclasses.replace(ALL, webhooks=HOOKS_SPEC)
HOOKS_AND_GOLDEN = AnalysisSpec(min_requests=50, golden=GOLDEN_SPEC, webhooks=HOOKS_SPEC)
YES = WebhookResult(checks=2, failures=0)
NO = WebhookResult(checks=2, failures=1, detail=("webhook 'evals' answered HTTP 412: accuracy 0.71",))


@pytest.mark.parametrize(
    ("criteria", "canary", "golden", "hooks", "outcome", "failed", "texts"),
    [
        # Webhooks alone need no traffic, as golden requests.
        (HOOKS_ONLY, NONE, None, YES, "Pass", (), ["webhooks: 2 of 2 passed"]),
        (HOOKS_ONLY, NONE, None, NO, "Fail", ("webhooks",), ["webhooks: 1 of 2 failed (first: webhook 'evals'"]),
        (HOOKS_ONLY, BUSY, None, YES, "Pass", (), ["Passed over 1000 requests", "webhooks: 2 of 2 passed"]),
        (HOOKS_ONLY, NONE, None, None, "Inconclusive", (), ["webhooks not asked"]),
        # With traffic thresholds too: a no fails whatever the traffic, a yes needs the traffic judged.
        (HOOKS_AND_TRAFFIC, NONE, None, NO, "Fail", ("webhooks",), ["fewer than minRequests 50"]),
        (HOOKS_AND_TRAFFIC, NONE, None, YES, "Inconclusive", (), ["fewer than minRequests 50", "webhooks: 2 of 2"]),
        (HOOKS_AND_TRAFFIC, BUSY, None, YES, "Pass", (), ["webhooks: 2 of 2", "errorRatio 0.30% <= maxErrorRatio"]),
        (HOOKS_AND_TRAFFIC, FAILING, None, YES, "Fail", ("maxErrorRatio", "maxErrorRatioIncrease"), []),
        (HOOKS_AND_TRAFFIC, FAILING, None, NO, "Fail", ("webhooks", "maxErrorRatio", "maxErrorRatioIncrease"), []),
        # With golden requests: either one's no fails, both must say yes.
        (HOOKS_AND_GOLDEN, NONE, RIGHT, YES, "Pass", (), ["golden requests", "webhooks: 2 of 2 passed"]),
        (HOOKS_AND_GOLDEN, NONE, WRONG, YES, "Fail", ("goldenRequests",), []),
        (HOOKS_AND_GOLDEN, NONE, RIGHT, NO, "Fail", ("webhooks",), []),
        (HOOKS_AND_GOLDEN, NONE, WRONG, NO, "Fail", ("goldenRequests", "webhooks"), []),
        # A result without webhooks configured is ignored (the spec changed since the request).
        (ALL, BUSY, None, NO, "Pass", (), ["errorRatio 0.30%"]),
    ],
)
def test_webhooks_are_a_criterion(
    criteria: AnalysisSpec,
    canary: Sample,
    golden: GoldenResult | None,
    hooks: WebhookResult | None,
    outcome: str,
    failed: tuple[str, ...],
    texts: list[str],
) -> None:
    verdict = assess_measurement(criteria, canary, STABLE, golden, hooks)
    assert (verdict.outcome, verdict.failed) == (outcome, failed), verdict.message
    for text in texts:
        assert text in verdict.message, verdict.message
    if not criteria.webhooks:
        assert "webhook" not in verdict.message
