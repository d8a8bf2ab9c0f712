"""Judging measurements against ``spec.rollout.analysis`` thresholds. Pure functions.

A measurement is judged by ``assess_measurement``:

- Fail when more golden requests were answered wrongly than ``goldenRequests.maxMismatches``, or a webhook said
  no, whatever the traffic;
- Inconclusive when the canary served fewer than ``minRequests`` requests (or none at all), unless golden requests
  and webhooks are the only criteria (then their answers decide);
- Fail when any configured threshold is broken:
  ``maxErrorRatio`` (canary error ratio), ``maxP99LatencyMs`` (canary p99),
  ``maxErrorRatioIncrease`` (canary error ratio minus the stable's) and
  ``maxP99LatencyRatio`` (canary p99 divided by the stable's). The relative criteria are skipped, and the
  message says so, when there is no stable sample or it has fewer than ``minRequests`` requests; the error
  criteria are skipped when the error count is unknown (``Sample.errors`` None: a query without data);
- Inconclusive when every configured criterion was skipped for lack of data (no latency observations, no
  stable sample, an unknown error count): missing data never passes;
- Pass otherwise.

A run of measurements is judged by ``judge_counts`` after each one, from its counts: it fails as soon as more
than ``failureLimit`` measurements failed, succeeds once ``count`` measurements were conclusive, and gives up as
Inconclusive after ``count`` inconclusive measurements (too little traffic to judge).

Measurements that could not be taken at all (the metric source failed) are judged by ``assess_errors``: the run
fails as soon as more than ``consecutiveErrorLimit`` of them came in a row (argo-rollouts' meaning, like
``failureLimit``: the limit is what is tolerated).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, TypeAlias

from modeldeploy.analysis.golden import GoldenResult
from modeldeploy.analysis.golden import assess as assess_golden
from modeldeploy.analysis.sample import Sample
from modeldeploy.analysis.webhooks import WebhookResult
from modeldeploy.analysis.webhooks import assess as assess_webhooks
from modeldeploy.rollout.config import AnalysisSpec

Outcome: TypeAlias = Literal["Pass", "Fail", "Inconclusive"]
RunPhase: TypeAlias = Literal["Running", "Successful", "Failed", "Inconclusive"]


@dataclass(frozen=True)
class Verdict:
    """The judgement of one measurement; ``failed`` names the broken criteria."""

    outcome: Outcome
    message: str
    failed: tuple[str, ...] = ()


@dataclass(frozen=True)
class RunVerdict:
    phase: RunPhase
    message: str
    passed: int = 0
    failed: int = 0
    inconclusive: int = 0


def _pct(value: float) -> str:
    return f"{value * 100:.2f}%"


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}ms"


def wants_stable(criteria: AnalysisSpec) -> bool:
    """Whether a measurement needs a sample of the stable: only the relative criteria (``maxErrorRatioIncrease``,
    ``maxP99LatencyRatio``) compare with it. Without them the stable is not measured at all, so a stable that
    cannot be measured (no ready pods, unreachable) never holds up the canary's analysis."""
    return criteria.max_error_ratio_increase is not None or criteria.max_p99_latency_ratio is not None


def assess_measurement(
    criteria: AnalysisSpec,
    canary: Sample,
    stable: Sample | None,
    golden: GoldenResult | None = None,
    hooks: WebhookResult | None = None,
) -> Verdict:
    """Judge one measurement of the canary (and the stable, for the relative criteria; ``golden``: the answers
    to the golden requests, with ``goldenRequests``; ``hooks``: the answers of the ``webhooks``)."""
    failures: list[str] = []
    notes: list[str] = []
    judged = 0
    if criteria.golden is not None:
        if golden is None:
            notes.append("golden requests not sent, goldenRequests skipped")
        else:
            judged += 1
            ok, note = assess_golden(criteria.golden, golden)
            notes.append(note)
            if not ok:
                failures.append("goldenRequests")
    if criteria.webhooks:
        if hooks is None:
            notes.append("webhooks not asked, webhooks skipped")
        else:
            judged += 1
            ok, note = assess_webhooks(hooks)
            notes.append(note)
            if not ok:
                failures.append("webhooks")
    if canary.requests <= 0 or canary.requests < criteria.min_requests:
        thin = f"Canary served {canary.requests:g} requests, fewer than minRequests {max(criteria.min_requests, 1)}"
        # A wrong answer (or a webhook's no) is wrong whatever the traffic; right answers alone pass only an
        # analysis that has no traffic threshold to judge (missing traffic data never passes).
        if failures:
            said = [*notes, thin] if criteria.has_traffic_threshold else notes
            return Verdict("Fail", f"Failed {', '.join(failures)}: {'; '.join(said)}", tuple(failures))
        if judged and not criteria.has_traffic_threshold:
            return Verdict("Pass", f"Passed: {'; '.join(notes)}")
        return Verdict("Inconclusive", "; ".join([thin, *notes]))
    ratio = canary.error_ratio
    if criteria.max_error_ratio is not None:
        if ratio is None:
            notes.append("errorRatio unknown (no data), maxErrorRatio skipped")
        else:
            judged += 1
            ok = ratio <= criteria.max_error_ratio
            notes.append(
                f"errorRatio {_pct(ratio)} {'<=' if ok else '>'} maxErrorRatio {_pct(criteria.max_error_ratio)}"
            )
            if not ok:
                failures.append("maxErrorRatio")
    if criteria.max_p99_latency_ms is not None:
        limit = criteria.max_p99_latency_ms / 1000
        if canary.p99_seconds is None:
            notes.append("p99 unknown (no latency observations), maxP99LatencyMs skipped")
        else:
            judged += 1
            ok = canary.p99_seconds <= limit
            notes.append(f"p99 {_ms(canary.p99_seconds)} {'<=' if ok else '>'} maxP99LatencyMs {_ms(limit)}")
            if not ok:
                failures.append("maxP99LatencyMs")
    wants_relative = wants_stable(criteria)
    stable_ok = stable is not None and stable.requests > 0 and stable.requests >= criteria.min_requests
    if wants_relative and not stable_ok:
        served = f"{stable.requests:g} requests" if stable is not None else "no sample"
        notes.append(f"stable has {served}, relative criteria skipped")
    elif stable is not None and stable_ok:
        stable_ratio = stable.error_ratio
        if criteria.max_error_ratio_increase is not None:
            if ratio is None or stable_ratio is None:
                notes.append("errorRatio increase unknown (no error data), maxErrorRatioIncrease skipped")
            else:
                judged += 1
                increase = ratio - stable_ratio
                ok = increase <= criteria.max_error_ratio_increase + 1e-12
                notes.append(
                    f"errorRatio increase {_pct(increase)} (canary {_pct(ratio)} - stable {_pct(stable_ratio)}) "
                    f"{'<=' if ok else '>'} maxErrorRatioIncrease {_pct(criteria.max_error_ratio_increase)}"
                )
                if not ok:
                    failures.append("maxErrorRatioIncrease")
        if criteria.max_p99_latency_ratio is not None:
            if canary.p99_seconds is None or stable.p99_seconds is None or stable.p99_seconds <= 0:
                notes.append("p99 ratio unknown (missing latency observations), maxP99LatencyRatio skipped")
            else:
                judged += 1
                lat_ratio = canary.p99_seconds / stable.p99_seconds
                ok = lat_ratio <= criteria.max_p99_latency_ratio + 1e-12
                notes.append(
                    f"p99 ratio {lat_ratio:.2f} (canary {_ms(canary.p99_seconds)} / stable "
                    f"{_ms(stable.p99_seconds)}) {'<=' if ok else '>'} maxP99LatencyRatio "
                    f"{criteria.max_p99_latency_ratio:g}"
                )
                if not ok:
                    failures.append("maxP99LatencyRatio")
    summary = "; ".join(notes)
    if judged == 0 and criteria.has_threshold:
        # Missing data is not a pass: a run must never succeed on measurements that judged nothing.
        return Verdict("Inconclusive", f"no criterion could be judged: {summary}")
    if failures:
        return Verdict("Fail", f"Failed {', '.join(failures)}: {summary}", tuple(failures))
    return Verdict("Pass", f"Passed over {canary.requests:g} requests: {summary}")


def judge_counts(criteria: AnalysisSpec, passed: int, failed: int, inconclusive: int) -> RunVerdict:
    """The verdict on a run that was Running before its latest measurement and now has these counts (the state
    machine keeps counts rather than every measurement: status keeps only the latest ones). Called after every
    measurement, the first threshold reached decides."""
    counts = {"passed": passed, "failed": failed, "inconclusive": inconclusive}
    if failed > criteria.failure_limit:
        return RunVerdict(
            "Failed", f"{failed} failed measurements, more than failureLimit {criteria.failure_limit}", **counts
        )
    if passed + failed >= criteria.count:
        return RunVerdict(
            "Successful",
            f"{passed} of {passed + failed} measurements passed (failureLimit {criteria.failure_limit})",
            **counts,
        )
    if inconclusive >= criteria.count:
        return RunVerdict("Inconclusive", f"{inconclusive} measurements had too few requests to judge", **counts)
    return RunVerdict(
        "Running",
        f"{passed + failed} of {criteria.count} measurements taken ({failed} failed, {inconclusive} inconclusive)",
        **counts,
    )


def assess_errors(criteria: AnalysisSpec, consecutive_errors: int, last_error: str) -> RunVerdict | None:
    """The verdict on a run whose last ``consecutive_errors`` measurements could not be taken: Failed once there
    are more than ``consecutiveErrorLimit``; None while they are tolerated (the run goes on)."""
    limit = criteria.consecutive_error_limit
    if consecutive_errors <= limit:
        return None
    return RunVerdict(
        "Failed",
        f"{consecutive_errors} consecutive measurement errors, more than consecutiveErrorLimit {limit}; "
        f"last error: {last_error or 'unknown'}",
    )
