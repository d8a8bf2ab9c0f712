"""The operator-wide artifact policy: configuration from the environment, ``check_policy``, and the reconcile
pass refusing a violating ModelDeployment (nothing new deployed, the last good revision kept)."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest

from modeldeploy.conditions import find
from modeldeploy.config import ENV_VARS, OperatorConfig
from modeldeploy.policy import check_policy, host_allowed
from modeldeploy.reconcile import Observed, plan_reconcile
from modeldeploy.spec import parse_model_deployment

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
SHA = "a" * 64


def body(uri: str = "s3://models/iris/1/model.pt", **model: Any) -> dict[str, Any]:
    return {
        "apiVersion": "modeldeploy.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "iris", "namespace": "ml", "uid": "uid-1", "generation": 1},
        "spec": {"model": {"version": "1", "storageUri": uri, "format": "TorchScript", **model}, "replicas": 1},
    }


def test_env_vars_are_read() -> None:
    config = OperatorConfig.from_env(
        {
            "MODELDEPLOY_POLICY_REQUIRE_SHA256": "True",
            "MODELDEPLOY_POLICY_ALLOWED_SCHEMES": "s3, https ,",
            "MODELDEPLOY_POLICY_ALLOWED_HOSTS": "models,*.Example.com",
            "MODELDEPLOY_MODEL_NETWORK_POLICY": "true",
            "MODELDEPLOY_MODEL_NETWORK_POLICY_INGRESS_FROM": '[{"namespaceSelector": {"matchLabels": {"a": "b"}}}]',
            "MODELDEPLOY_OPERATOR_NAMESPACE": "modeldeploy-system",
            "MODELDEPLOY_MONITORING_NAMESPACE": "monitoring",
        }
    )
    assert config.require_sha256 is True
    assert config.allowed_schemes == ("s3", "https")
    assert config.allowed_hosts == ("models", "*.example.com")
    assert config.model_network_policy is True
    assert config.model_network_policy_ingress_from == ({"namespaceSelector": {"matchLabels": {"a": "b"}}},)
    assert config.operator_namespace == "modeldeploy-system"
    assert config.monitoring_namespace == "monitoring"
    assert set(ENV_VARS) == {f.name for f in OperatorConfig.__dataclass_fields__.values()}


def test_chart_defaults_mean_no_policy() -> None:
    # What the chart renders with its default values.
    config = OperatorConfig.from_env(
        {
            "MODELDEPLOY_POLICY_REQUIRE_SHA256": "false",
            "MODELDEPLOY_POLICY_ALLOWED_SCHEMES": "",
            "MODELDEPLOY_POLICY_ALLOWED_HOSTS": "",
            "MODELDEPLOY_MODEL_NETWORK_POLICY": "false",
            "MODELDEPLOY_MODEL_NETWORK_POLICY_INGRESS_FROM": "[]",
        }
    )
    assert config == OperatorConfig()


@pytest.mark.parametrize(
    ("var", "value", "match"),
    [
        ("MODELDEPLOY_POLICY_REQUIRE_SHA256", "maybe", "MODELDEPLOY_POLICY_REQUIRE_SHA256 must be true or false"),
        ("MODELDEPLOY_POLICY_ALLOWED_SCHEMES", "s3,ftp", "allowed_schemes must be among"),
        ("MODELDEPLOY_POLICY_ALLOWED_HOSTS", "bad host/x", "allowed_hosts entries"),
        ("MODELDEPLOY_MODEL_NETWORK_POLICY", "yes please", "MODELDEPLOY_MODEL_NETWORK_POLICY must be true"),
        ("MODELDEPLOY_MODEL_NETWORK_POLICY_INGRESS_FROM", "{not json", "must be a JSON list"),
        ("MODELDEPLOY_MODEL_NETWORK_POLICY_INGRESS_FROM", '{"a": 1}', "must be a JSON list"),
        ("MODELDEPLOY_MODEL_NETWORK_POLICY_INGRESS_FROM", "[{}]", "must be a NetworkPolicyPeer"),
        ("MODELDEPLOY_MODEL_NETWORK_POLICY_INGRESS_FROM", '[{"cidr": "x"}]', "must be a NetworkPolicyPeer"),
        ("MODELDEPLOY_OPERATOR_NAMESPACE", "Not_A_Namespace", "operator_namespace must be a namespace"),
    ],
)
def test_bad_env_values_name_the_problem(var: str, value: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        OperatorConfig.from_env({var: value})


@pytest.mark.parametrize(
    ("host", "patterns", "allowed"),
    [
        ("models", (), True),
        ("models", ("models",), True),
        ("models-dev", ("models",), False),
        ("a.example.com", ("*.example.com",), True),
        ("a.b.example.com", ("*.example.com",), True),
        ("example.com", ("*.example.com",), False),
        ("evil-example.com", ("*.example.com",), False),
        ("A.Example.COM.", ("*.example.com",), True),
        ("team-a-models", ("team-?-models",), True),
    ],
)
def test_host_patterns(host: str, patterns: tuple[str, ...], allowed: bool) -> None:
    assert host_allowed(host, patterns) is allowed


@pytest.mark.parametrize(
    ("uri", "model", "config", "field"),
    [
        # No policy: everything the API accepts.
        ("http://insecure.example.com/m.pt", {}, OperatorConfig(), None),
        # Schemes.
        ("s3://models/m.pt", {}, OperatorConfig(allowed_schemes=("s3",)), None),
        ("https://example.com/m.pt", {}, OperatorConfig(allowed_schemes=("s3",)), "spec.model.storageUri"),
        ("pvc://claim/m", {}, OperatorConfig(allowed_schemes=("s3", "https")), "spec.model.storageUri"),
        ("file:///models/m", {}, OperatorConfig(allowed_schemes=("file",)), None),
        # Hosts and buckets.
        ("s3://models/m.pt", {}, OperatorConfig(allowed_hosts=("models",)), None),
        ("s3://other/m.pt", {}, OperatorConfig(allowed_hosts=("models",)), "spec.model.storageUri"),
        ("gs://team-a-models/m.pt", {}, OperatorConfig(allowed_hosts=("team-*",)), None),
        ("https://cdn.example.com/m.pt", {}, OperatorConfig(allowed_hosts=("*.example.com",)), None),
        (
            "https://cdn.example.com.evil.io/m.pt",
            {},
            OperatorConfig(allowed_hosts=("*.example.com",)),
            "spec.model.storageUri",
        ),
        ("https://user@evil.io/m.pt", {}, OperatorConfig(allowed_hosts=("*.example.com",)), "spec.model.storageUri"),
        # pvc:// and file:// have no host: a host list does not apply to them.
        ("pvc://claim/m", {}, OperatorConfig(allowed_hosts=("models",)), None),
        # Digests.
        ("s3://models/m.pt", {}, OperatorConfig(require_sha256=True), "spec.model.sha256"),
        ("s3://models/m.pt", {"sha256": SHA}, OperatorConfig(require_sha256=True), None),
        ("pvc://claim/m", {}, OperatorConfig(require_sha256=True), None),
        # The scheme is reported before the digest.
        ("http://h/m.pt", {}, OperatorConfig(require_sha256=True, allowed_schemes=("s3",)), "spec.model.storageUri"),
    ],
)
def test_check_policy(uri: str, model: dict[str, Any], config: OperatorConfig, field: str | None) -> None:
    violation = check_policy(parse_model_deployment(body(uri, **model)), config)
    if field is None:
        assert violation is None
    else:
        assert violation is not None and violation.field == field
        assert "artifact policy" in str(violation)


def _ready(plan_status: dict[str, Any] | None) -> dict[str, Any]:
    assert plan_status is not None
    found = find(plan_status["conditions"], "Ready")
    assert found is not None
    return dict(found)


def test_violation_deploys_nothing_and_says_why() -> None:
    plan = plan_reconcile(body("https://example.com/m.pt"), Observed(), OperatorConfig(allowed_schemes=("s3",)), NOW)
    assert plan.apply == [] and plan.delete == []
    ready = _ready(plan.status)
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")
    assert "spec.model.storageUri" in ready["message"] and "https://" in ready["message"]
    assert [(e.type, e.reason) for e in plan.events] == [("Warning", "InvalidSpec")]


def test_violating_update_keeps_the_last_good_children() -> None:
    config = OperatorConfig(require_sha256=True)
    good = body(sha256=SHA)
    first = plan_reconcile(good, Observed(), config, NOW)
    assert first.apply, "a compliant spec is deployed"
    # The cluster now holds what the first plan wrote, and the object its status.
    deployed = [copy.deepcopy(m) for m in first.apply]
    for manifest in deployed:
        manifest["metadata"]["uid"] = f"uid-{manifest['metadata']['name']}"
    updated = copy.deepcopy(good)
    updated["status"] = copy.deepcopy(first.status)
    updated["spec"]["model"] = {"version": "2", "storageUri": "s3://models/iris/2/model.pt", "format": "TorchScript"}
    updated["metadata"]["generation"] = 2
    observed = Observed(
        deployments=[m for m in deployed if m["kind"] == "Deployment"],
        services=[m for m in deployed if m["kind"] == "Service"],
        revisions=[m for m in deployed if m["kind"] == "ControllerRevision"],
    )
    plan = plan_reconcile(updated, observed, config, NOW)
    assert plan.apply == [] and plan.delete == []
    ready = _ready(plan.status)
    assert ready["reason"] == "InvalidSpec" and "spec.model.sha256" in ready["message"]
    # The same object passes once the policy allows it: the check depends on the configuration, not a cache.
    assert plan_reconcile(updated, observed, OperatorConfig(), NOW).apply
