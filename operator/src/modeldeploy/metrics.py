"""The operator's own Prometheus metrics (each operator instance has its own registry)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


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
        self.managed = Gauge(
            "modeldeploy_model_deployments", "ModelDeployments known to the operator by phase.", ["phase"],
            registry=r,
        )
