"""Tests for modeldeploy.metrics: the operator's own rollout metrics."""

from __future__ import annotations

from modeldeploy.metrics import ANALYSIS_VERDICTS, ROLLOUT_PHASES, OperatorMetrics


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


def test_the_mirror_share_is_exported() -> None:
    metrics = OperatorMetrics()
    metrics.record_rollout("ml", "iris", {"canaryWeight": 0, "mirrorWeight": 50, "rollout": {"phase": "Analyzing"}}, [])
    assert value(metrics, "modeldeploy_canary_mirror_weight", namespace="ml", name="iris") == 50
    assert value(metrics, "modeldeploy_canary_weight", namespace="ml", name="iris") == 0
    metrics.record_rollout("ml", "iris", {"canaryWeight": 10, "rollout": {"phase": "Progressing"}}, [])
    assert value(metrics, "modeldeploy_canary_mirror_weight", namespace="ml", name="iris") == 0
    metrics.forget("ml", "iris")
    assert value(metrics, "modeldeploy_canary_mirror_weight", namespace="ml", name="iris") is None


def test_no_status_change_keeps_the_last_values_and_forget_removes_them() -> None:
    metrics = OperatorMetrics()
    metrics.record_rollout("ml", "iris", {"canaryWeight": 0, "rollout": {"phase": "Completed"}}, [])
    metrics.record_rollout("ml", "iris", None, [])
    assert value(metrics, "modeldeploy_rollout_phase", namespace="ml", name="iris", phase="Completed") == 1
    metrics.forget("ml", "iris")
    assert value(metrics, "modeldeploy_rollout_phase", namespace="ml", name="iris", phase="Completed") is None


def test_every_phase_is_exported_for_each_object_and_forget_drops_the_weight() -> None:
    metrics = OperatorMetrics()
    metrics.record_rollout("ml", "a", {"canaryWeight": 10, "rollout": {"phase": "Progressing"}}, [])
    metrics.record_rollout("ml", "b", {"rollout": {"phase": "Paused"}}, [])
    phases = {
        s.labels["phase"]: s.value
        for m in metrics.registry.collect()
        for s in m.samples
        if s.name == "modeldeploy_rollout_phase" and s.labels["name"] == "a"
    }
    assert phases == {p: (1.0 if p == "Progressing" else 0.0) for p in ROLLOUT_PHASES}
    assert value(metrics, "modeldeploy_canary_weight", namespace="ml", name="b") == 0
    metrics.forget("ml", "a")
    assert value(metrics, "modeldeploy_canary_weight", namespace="ml", name="a") is None
    assert value(metrics, "modeldeploy_rollout_phase", namespace="ml", name="b", phase="Paused") == 1


def test_counters_exist_at_zero_from_the_first_sight_so_the_first_rollback_can_alert() -> None:
    """increase() needs a sample before the first increment: a series born at 1 never shows an increase."""
    metrics = OperatorMetrics()
    metrics.record_rollout("ml", "iris", {"rollout": {"phase": "Completed"}}, [])
    assert value(metrics, "modeldeploy_rollbacks_total", namespace="ml", name="iris", reason="automatic") == 0
    assert value(metrics, "modeldeploy_rollbacks_total", namespace="ml", name="iris", reason="manual") == 0
    for verdict in ANALYSIS_VERDICTS.values():
        assert value(metrics, "modeldeploy_analysis_results_total", namespace="ml", name="iris", verdict=verdict) == 0
    metrics.record_rollout("ml", "iris", None, ["RollingBack"])
    assert value(metrics, "modeldeploy_rollbacks_total", namespace="ml", name="iris", reason="automatic") == 1
    metrics.forget("ml", "iris")
    assert value(metrics, "modeldeploy_rollbacks_total", namespace="ml", name="iris", reason="automatic") is None
    verdicts = [value(metrics, "modeldeploy_analysis_results_total", namespace="ml", name="iris", verdict=verdict)
                for verdict in ANALYSIS_VERDICTS.values()]  # fmt: skip
    assert verdicts == [None] * len(ANALYSIS_VERDICTS)
    metrics.record_rollout("ml", "iris", None, [])  # seen again (re-created): back at zero
    assert value(metrics, "modeldeploy_rollbacks_total", namespace="ml", name="iris", reason="automatic") == 0


def test_degraded_follows_the_condition() -> None:
    metrics = OperatorMetrics()
    degraded = {"conditions": [{"type": "Degraded", "status": "True", "reason": "WriteRejected"}]}
    metrics.record_rollout("ml", "iris", degraded, [])  # no status.rollout yet (a first deploy that was refused)
    assert value(metrics, "modeldeploy_degraded", namespace="ml", name="iris") == 1
    assert value(metrics, "modeldeploy_rollout_phase", namespace="ml", name="iris", phase="Idle") is None
    metrics.record_rollout("ml", "iris", None, [])
    assert value(metrics, "modeldeploy_degraded", namespace="ml", name="iris") == 1
    healthy = {"rollout": {"phase": "Completed"}, "conditions": [{"type": "Degraded", "status": "False"}]}
    metrics.record_rollout("ml", "iris", healthy, [])
    assert value(metrics, "modeldeploy_degraded", namespace="ml", name="iris") == 0
    metrics.forget("ml", "iris")
    assert value(metrics, "modeldeploy_degraded", namespace="ml", name="iris") is None
