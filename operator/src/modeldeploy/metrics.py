"""The operator's own Prometheus metrics (each operator instance has its own registry)."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

ROLLOUT_PHASES = (
    "Idle", "Progressing", "Paused", "Analyzing", "Promoting", "RollingBack", "RolledBack", "Completed",
)
ANALYSIS_VERDICTS = {
    "AnalysisPass": "measurement-pass",
    "AnalysisFail": "measurement-fail",
    "AnalysisInconclusive": "inconclusive",
    "AnalysisSuccessful": "run-successful",
    "AnalysisFailed": "run-failed",
}
"""Event reasons of analysis verdicts, and the verdict label each one counts under."""


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
        self.rollout_phase = Gauge(
            "modeldeploy_rollout_phase",
            "1 for the current rollout phase of each ModelDeployment, 0 for the others.",
            ["namespace", "name", "phase"],
            registry=r,
        )
        self.canary_weight = Gauge(
            "modeldeploy_canary_weight", "Percent of traffic the canary revision gets.", ["namespace", "name"],
            registry=r,
        )
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
            for known in ROLLOUT_PHASES:
                self.rollout_phase.labels(namespace, name, known).set(1 if known == phase else 0)
            self.canary_weight.labels(namespace, name).set(float((status or {}).get("canaryWeight") or 0))
        for reason in reasons:
            if reason in ANALYSIS_VERDICTS:
                self.analysis_results.labels(namespace, name, ANALYSIS_VERDICTS[reason]).inc()
            if reason == "RollingBack":
                self.rollbacks.labels(namespace, name, "automatic").inc()
            elif reason in ("RollbackRequested", "RolledBackToRevision"):
                self.rollbacks.labels(namespace, name, "manual").inc()

    def forget(self, namespace: str, name: str) -> None:
        """Drop the per-object series of a deleted ModelDeployment."""
        for phase in ROLLOUT_PHASES:
            with contextlib.suppress(KeyError):
                self.rollout_phase.remove(namespace, name, phase)
        with contextlib.suppress(KeyError):
            self.canary_weight.remove(namespace, name)
