"""modeldeploy.config: operator-wide settings, from defaults or an environment mapping."""

from __future__ import annotations

import pytest

from modeldeploy.config import DEFAULT_RUNTIME_IMAGE, OperatorConfig


def test_defaults() -> None:
    config = OperatorConfig()
    assert config.default_runtime_image == DEFAULT_RUNTIME_IMAGE == "ghcr.io/modeldeploy/modelserve:0.1.0"
    assert (config.cluster_domain, config.field_manager) == ("cluster.local", "modeldeploy")


def test_from_env_reads_only_the_given_mapping() -> None:
    config = OperatorConfig.from_env(
        {
            "MODELDEPLOY_RUNTIME_IMAGE": "r/img:2",
            "MODELDEPLOY_CLUSTER_DOMAIN": "corp.internal",
            "MODELDEPLOY_WRITE_FAILURE_SECONDS": "300",
            "UNRELATED": "x",
        }
    )
    assert config == OperatorConfig(
        default_runtime_image="r/img:2", cluster_domain="corp.internal", write_failure_seconds=300
    )
    assert OperatorConfig.from_env({}) == OperatorConfig()
    assert OperatorConfig.from_env({"MODELDEPLOY_CLUSTER_DOMAIN": ""}).cluster_domain == "cluster.local"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"MODELDEPLOY_WRITE_FAILURE_SECONDS": "2m"}, "MODELDEPLOY_WRITE_FAILURE_SECONDS"),
        ({"MODELDEPLOY_WRITE_FAILURE_SECONDS": "-5"}, "write_failure_seconds"),
        ({"MODELDEPLOY_CLUSTER_DOMAIN": "Bad Domain"}, "cluster_domain"),
        ({"MODELDEPLOY_RUNTIME_IMAGE": "has space"}, "default_runtime_image"),
        ({"MODELDEPLOY_MODEL_MOUNT_PATH": "relative"}, "model_mount_path"),
        ({"MODELDEPLOY_GPU_PREFLIGHT": "maybe"}, "MODELDEPLOY_GPU_PREFLIGHT"),
        ({"MODELDEPLOY_MODEL_DISRUPTION_BUDGET": "1x"}, "MODELDEPLOY_MODEL_DISRUPTION_BUDGET"),
    ],
)
def test_invalid_values_are_rejected_by_name(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        OperatorConfig.from_env(env)


def test_gpu_preflight_switch() -> None:
    assert OperatorConfig().gpu_preflight is True
    assert OperatorConfig.from_env({"MODELDEPLOY_GPU_PREFLIGHT": "false"}).gpu_preflight is False
    assert OperatorConfig.from_env({"MODELDEPLOY_GPU_PREFLIGHT": "true"}).gpu_preflight is True


def test_model_disruption_budget_switch() -> None:
    assert OperatorConfig().model_disruption_budget is True
    assert OperatorConfig.from_env({"MODELDEPLOY_MODEL_DISRUPTION_BUDGET": "false"}).model_disruption_budget is False
    assert OperatorConfig.from_env({"MODELDEPLOY_MODEL_DISRUPTION_BUDGET": "true"}).model_disruption_budget is True


def test_config_is_frozen() -> None:
    config = OperatorConfig()
    with pytest.raises(AttributeError):
        config.cluster_domain = "x"  # type: ignore[misc]
