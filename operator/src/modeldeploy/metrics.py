"""The operator's own Prometheus metrics (each operator instance has its own registry)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from modeldeploy.conditions import DEGRADED, find

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

ROLLBACK_REASONS = ("automatic", "manual")
PHASE_HELP = "1 for the current rollout phase of each ModelDeployment, 0 for the others."
DEGRADED_HELP = "1 while the ModelDeployment's Degraded condition is True (kubectl modeldeploy status says why)."
WEIGHT_HELP = "Percent of traffic the canary revision gets."
MIRROR_HELP = "Percent of the requests copied to the canary revision (setMirror; its answers are discarded)."
ACTIVE_HELP = (
    "1 while this operator process reconciles (standalone, or the active peer); 0 while it stands by for a peer "
    "with a higher priority (it then exports no per-object gauges)."
)


class RolloutCollector(Collector):
    """``modeldeploy_rollout_phase``, ``modeldeploy_canary_weight``, ``modeldeploy_canary_mirror_weight`` and
    ``modeldeploy_degraded``, made at scrape time from one small record per ModelDeployment.

    Labelled gauges would keep a child object (value, lock, label tuple) per series: eleven series per
    ModelDeployment, about 1 KB each, held for as long as the object exists.
    """

    def __init__(self) -> None:
        self.active = True
        """False while the process stands by (kopf peering): its records are then stale, and not exported."""
        self.rollouts: dict[tuple[str, str], tuple[str, float, float]] = {}
        """(namespace, name) -> (rollout phase, canary weight, mirror weight)."""
        self.degraded: dict[tuple[str, str], bool] = {}
        """(namespace, name) -> whether its Degraded condition is True."""

    def _families(self) -> tuple[GaugeMetricFamily, ...]:
        return (
            GaugeMetricFamily("modeldeploy_rollout_phase", PHASE_HELP, labels=["namespace", "name", "phase"]),
            GaugeMetricFamily("modeldeploy_canary_weight", WEIGHT_HELP, labels=["namespace", "name"]),
            GaugeMetricFamily("modeldeploy_canary_mirror_weight", MIRROR_HELP, labels=["namespace", "name"]),
            GaugeMetricFamily("modeldeploy_degraded", DEGRADED_HELP, labels=["namespace", "name"]),
        )

    def describe(self) -> Iterator[Metric]:
        yield GaugeMetricFamily("modeldeploy_active", ACTIVE_HELP)
        yield from self._families()

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily("modeldeploy_active", ACTIVE_HELP, value=1.0 if self.active else 0.0)
        phases, weights, mirrors, degraded = self._families()
        # list(): scrapes run in the metrics server's thread while the operator keeps updating the records.
        rollouts = list(self.rollouts.items()) if self.active else []
        for (namespace, name), (phase, weight, mirror) in rollouts:
            for known in ROLLOUT_PHASES:
                phases.add_metric([namespace, name, known], 1.0 if known == phase else 0.0)
            weights.add_metric([namespace, name], weight)
            mirrors.add_metric([namespace, name], mirror)
        for (namespace, name), is_degraded in list(self.degraded.items()) if self.active else []:
            degraded.add_metric([namespace, name], 1.0 if is_degraded else 0.0)
        yield phases
        yield weights
        yield mirrors
        yield degraded


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
        self._seen: set[tuple[str, str]] = set()

    def record_rollout(self, namespace: str, name: str, status: Mapping[str, Any] | None, reasons: list[str]) -> None:
        """Export a reconcile's status (None: unchanged) and the transitions it announced (by Event reason)."""
        self._known(namespace, name)
        rollout = (status or {}).get("rollout") or {}
        phase = str(rollout.get("phase") or "")
        if phase:
            weight = float((status or {}).get("canaryWeight") or 0)
            mirror = float((status or {}).get("mirrorWeight") or 0)
            self.rollouts.rollouts[(namespace, name)] = (phase, weight, mirror)
        if status is not None:
            self.record_degraded(namespace, name, status)
        for reason in reasons:
            if reason in ANALYSIS_VERDICTS:
                self.analysis_results.labels(namespace, name, ANALYSIS_VERDICTS[reason]).inc()
            if reason == "RollingBack":
                self.rollbacks.labels(namespace, name, ROLLBACK_REASONS[0]).inc()
            elif reason in ("RollbackRequested", "RolledBackToRevision"):
                self.rollbacks.labels(namespace, name, ROLLBACK_REASONS[1]).inc()

    def record_degraded(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        """``modeldeploy_degraded`` from the status's Degraded condition."""
        degraded = find(status.get("conditions") or [], DEGRADED)
        self.rollouts.degraded[(namespace, name)] = degraded is not None and degraded.get("status") == "True"

    def _known(self, namespace: str, name: str) -> None:
        """Create the object's counter series at 0 when it is first seen: ``increase()`` and ``rate()`` need a
        sample before the first increment, or an alert on an object's first rollback never fires."""
        if (namespace, name) in self._seen:
            return
        self._seen.add((namespace, name))
        for reason in ROLLBACK_REASONS:
            self.rollbacks.labels(namespace, name, reason)
        for verdict in ANALYSIS_VERDICTS.values():
            self.analysis_results.labels(namespace, name, verdict)

    def set_active(self, active: bool) -> None:
        """Whether this process reconciles. Each change drops the per-object records, which only the active
        process keeps current: an object deleted while this one stood by would otherwise be exported again once it
        resumes. The reconciles that follow a resume (kopf lists every object again) record them anew."""
        if self.rollouts.active == active:
            return
        self.rollouts.active = active
        self.rollouts.rollouts.clear()
        self.rollouts.degraded.clear()

    def forget(self, namespace: str, name: str) -> None:
        """Drop the per-object series of a deleted ModelDeployment."""
        self.rollouts.rollouts.pop((namespace, name), None)
        self.rollouts.degraded.pop((namespace, name), None)
        if (namespace, name) in self._seen:
            self._seen.discard((namespace, name))
            for reason in ROLLBACK_REASONS:
                self.rollbacks.remove(namespace, name, reason)
            for verdict in ANALYSIS_VERDICTS.values():
                self.analysis_results.remove(namespace, name, verdict)
