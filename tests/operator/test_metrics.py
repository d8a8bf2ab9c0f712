"""Tests for modeldeploy.metrics: the operator's own rollout metrics."""

from __future__ import annotations

from modeldeploy.metrics import OperatorMetrics


def value(metrics: OperatorMetrics, metric: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(metric, labels)


def test_rollout_phase_weight_and_transitions_are_exported() -> None:
    metrics = OperatorMetrics()
    status = {"canaryWeight": 25, "rollout": {"phase": "Analyzing"}}
    metrics.record_rollout("ml", "iris", status, ["AnalysisPass", "AnalysisFail", "AnalysisFailed", "RollingBack"])
    assert value(metrics, "modeldeploy_rollout_phase", namespace="ml", name="iris", phase="Analyzing") == 1
    assert value(metrics, "modeldeploy_rollout_phase", namespace="ml", name="iris", phase="Completed") == 0
    assert value(metrics, "modeldeploy_canary_weight", namespace="ml", name="iris") == 25
    for verdict in ("measurement-pass", "measurement-fail", "run-failed"):
        assert value(metrics, "modeldeploy_analysis_results_total", namespace="ml", name="iris", verdict=verdict) == 1
    assert value(metrics, "modeldeploy_rollbacks_total", namespace="ml", name="iris", reason="automatic") == 1


def test_no_status_change_keeps_the_last_values_and_forget_removes_them() -> None:
    metrics = OperatorMetrics()
    metrics.record_rollout("ml", "iris", {"canaryWeight": 0, "rollout": {"phase": "Completed"}}, [])
    metrics.record_rollout("ml", "iris", None, [])
    assert value(metrics, "modeldeploy_rollout_phase", namespace="ml", name="iris", phase="Completed") == 1
    metrics.forget("ml", "iris")
    assert value(metrics, "modeldeploy_rollout_phase", namespace="ml", name="iris", phase="Completed") is None
