"""The operator's own Prometheus metrics (each operator instance has its own registry)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

ROLLOUT_PHASES = (
    "Idle", "Progressing", "Paused", "Analyzing", "Promoting", "RollingBack", "RolledBack", "Completed",
)
ANALYSIS_VERDICTS = {
    "AnalysisPass": "measurement-pass",
    "AnalysisFail": "measurement-fail",
    "AnalysisInconclusive": "inconclusive",
    "AnalysisSuccessful": "run-successful",
    "AnalysisFailed": "run-failed",
    "MeasurementFailed": "measurement-error",
}
"""Event reasons of analysis verdicts, and the verdict label each one counts under."""

PHASE_HELP = "1 for the current rollout phase of each ModelDeployment, 0 for the others."
WEIGHT_HELP = "Percent of traffic the canary revision gets."
MIRROR_HELP = "Percent of the requests copied to the canary revision (setMirror; its answers are discarded)."


class RolloutCollector(Collector):
    """``modeldeploy_rollout_phase``, ``modeldeploy_canary_weight`` and ``modeldeploy_canary_mirror_weight``, made at
    scrape time from one small record per ModelDeployment.

    Labelled gauges would keep a child object (value, lock, label tuple) per series: nine series per
    ModelDeployment, about 1 KB each, held for as long as the object exists.
    """

    def __init__(self) -> None:
        self.rollouts: dict[tuple[str, str], tuple[str, float, float]] = {}
        """(namespace, name) -> (rollout phase, canary weight, mirror weight)."""

    def describe(self) -> Iterator[Metric]:
        yield GaugeMetricFamily("modeldeploy_rollout_phase", PHASE_HELP, labels=["namespace", "name", "phase"])
        yield GaugeMetricFamily("modeldeploy_canary_weight", WEIGHT_HELP, labels=["namespace", "name"])
        yield GaugeMetricFamily("modeldeploy_canary_mirror_weight", MIRROR_HELP, labels=["namespace", "name"])

    def collect(self) -> Iterator[Metric]:
        phases = GaugeMetricFamily("modeldeploy_rollout_phase", PHASE_HELP, labels=["namespace", "name", "phase"])
        weights = GaugeMetricFamily("modeldeploy_canary_weight", WEIGHT_HELP, labels=["namespace", "name"])
        mirrors = GaugeMetricFamily("modeldeploy_canary_mirror_weight", MIRROR_HELP, labels=["namespace", "name"])
        # list(): scrapes run in the metrics server's thread while the operator keeps updating the records.
        for (namespace, name), (phase, weight, mirror) in list(self.rollouts.items()):
            for known in ROLLOUT_PHASES:
                phases.add_metric([namespace, name, known], 1.0 if known == phase else 0.0)
            weights.add_metric([namespace, name], weight)
            mirrors.add_metric([namespace, name], mirror)
        yield phases
        yield weights
        yield mirrors


@dataclass
class OperatorMetrics:
    """Counters and histograms the operator exports on its metrics port."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.reconciles = Counter(
            "modeldeploy_reconcile_total", "Reconciles of ModelDeployments by result.", ["result"], registry=r
        )
        self.errors = Counter(
            "modeldeploy_reconcile_errors_total", "Failed reconciles by error reason.", ["reason"], registry=r
        )
        self.duration = Histogram(
            "modeldeploy_reconcile_duration_seconds",
            "Time to reconcile one ModelDeployment, API calls included.",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.api_writes = Counter(
            "modeldeploy_api_writes_total", "Write requests sent to the API server.", ["verb", "kind"], registry=r
        )
        self.api_reads = Counter(
            "modeldeploy_api_reads_total", "Read requests sent to the API server.", ["kind"], registry=r
        )
        self.rollouts = RolloutCollector()
        r.register(self.rollouts)
        self.analysis_results = Counter(
            "modeldeploy_analysis_results_total",
            "Analysis verdicts recorded (measurements and runs), by verdict.",
            ["namespace", "name", "verdict"],
            registry=r,
        )
        self.rollbacks = Counter(
            "modeldeploy_rollbacks_total", "Rollbacks started, by reason.", ["namespace", "name", "reason"],
            registry=r,
        )

    def record_rollout(self, namespace: str, name: str, status: Mapping[str, Any] | None, reasons: list[str]) -> None:
        """Export a reconcile's rollout status and the transitions it announced (by Event reason)."""
        rollout = (status or {}).get("rollout") or {}
        phase = str(rollout.get("phase") or "")
        if phase:
            weight = float((status or {}).get("canaryWeight") or 0)
            mirror = float((status or {}).get("mirrorWeight") or 0)
            self.rollouts.rollouts[(namespace, name)] = (phase, weight, mirror)
        for reason in reasons:
            if reason in ANALYSIS_VERDICTS:
                self.analysis_results.labels(namespace, name, ANALYSIS_VERDICTS[reason]).inc()
            if reason == "RollingBack":
                self.rollbacks.labels(namespace, name, "automatic").inc()
            elif reason in ("RollbackRequested", "RolledBackToRevision"):
                self.rollbacks.labels(namespace, name, "manual").inc()

    def forget(self, namespace: str, name: str) -> None:
        """Drop the per-object series of a deleted ModelDeployment."""
        self.rollouts.rollouts.pop((namespace, name), None)
