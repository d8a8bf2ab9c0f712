"""The per-ModelDeployment NetworkPolicy (builder and reconcile wiring) and caller authentication wiring."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import kubernetes_validate
import pytest
from reconcile_kit import Objects, apply_plan, assert_valid_k8s, body, observed

from modeldeploy.build import (
    AUTH_ENV,
    AUTH_MOUNT_PATH,
    build_deployment,
    build_network_policy,
    revision_of,
    wants_network_policy,
)
from modeldeploy.config import OperatorConfig
from modeldeploy.reconcile import Observed, plan_reconcile
from modeldeploy.spec import parse_model_deployment

K8S_VERSION = kubernetes_validate.latest_version()
NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
GATEWAY = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "gateway"}}}
FRONTEND = {"podSelector": {"matchLabels": {"app": "frontend"}}}
ON = OperatorConfig(
    model_network_policy=True, operator_namespace="modeldeploy-system", monitoring_namespace="monitoring"
)


def ns(name: str) -> dict[str, Any]:
    return {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": name}}}


@pytest.mark.parametrize(
    ("spec", "config", "wanted"),
    [
        ({}, OperatorConfig(), False),
        ({"networkPolicy": {"enabled": True}}, OperatorConfig(), True),
        ({"networkPolicy": {"enabled": False}}, OperatorConfig(), False),
        ({}, ON, True),
        # A ModelDeployment cannot switch the operator-wide default off.
        ({"networkPolicy": {"enabled": False}}, ON, True),
        ({"networkPolicy": {"ingressFrom": [FRONTEND]}}, OperatorConfig(), False),
    ],
)
def test_when_a_network_policy_is_wanted(spec: dict[str, Any], config: OperatorConfig, wanted: bool) -> None:
    assert wants_network_policy(parse_model_deployment(body(**spec)), config) is wanted


@pytest.mark.parametrize(
    ("spec", "config", "peers"),
    [
        # Default callers: the ModelDeployment's namespace, plus the operator's and the monitoring namespace.
        ({}, ON, [{"podSelector": {}}, ns("modeldeploy-system"), ns("monitoring")]),
        # The chart-wide extra callers come after the own namespace.
        (
            {},
            OperatorConfig(model_network_policy=True, model_network_policy_ingress_from=(GATEWAY,)),
            [{"podSelector": {}}, GATEWAY],
        ),
        # Declared callers replace the defaults (narrower), the operator and monitoring stay.
        ({"networkPolicy": {"ingressFrom": [FRONTEND]}}, ON, [FRONTEND, ns("modeldeploy-system"), ns("monitoring")]),
        # A caller that is also the operator's namespace is not listed twice.
        (
            {"networkPolicy": {"ingressFrom": [ns("modeldeploy-system")]}},
            ON,
            [ns("modeldeploy-system"), ns("monitoring")],
        ),
    ],
)
def test_network_policy_admits_only_declared_callers(
    spec: dict[str, Any], config: OperatorConfig, peers: list[dict[str, Any]]
) -> None:
    policy = build_network_policy(parse_model_deployment(body(**spec)), config)
    assert_valid_k8s(policy)
    assert policy["metadata"]["name"] == "iris" and policy["metadata"]["namespace"] == "ml"
    assert policy["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    assert policy["spec"]["podSelector"] == {"matchLabels": {"modeldeploy.io/model-deployment": "iris"}}
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    (rule,) = policy["spec"]["ingress"]
    assert rule["from"] == peers
    assert rule["ports"] == [{"protocol": "TCP", "port": "http"}]


def test_no_callers_at_all_denies_every_ingress() -> None:
    # A rule without "from" would admit everyone: with no peers there must be no rule at all.
    md = parse_model_deployment(body(networkPolicy={"enabled": True, "ingressFrom": []}))
    policy = build_network_policy(md, OperatorConfig())
    assert_valid_k8s(policy)
    assert policy["spec"]["ingress"] == [] and policy["spec"]["policyTypes"] == ["Ingress"]


def test_reconcile_creates_then_removes_the_network_policy() -> None:
    objects: Objects = {}
    obj = body(networkPolicy={"enabled": True})
    plan = plan_reconcile(obj, Observed(), OperatorConfig(), NOW)
    kinds = [m["kind"] for m in plan.apply]
    assert "NetworkPolicy" in kinds
    # It is in place no later than the Service, which routes traffic to the pods.
    assert kinds.index("NetworkPolicy") <= max(i for i, k in enumerate(kinds) if k == "Service") + 1
    apply_plan(plan, objects)
    obj["status"] = plan.status
    again = plan_reconcile(obj, observed(objects.values()), OperatorConfig(), NOW)
    assert not any(m["kind"] == "NetworkPolicy" for m in again.apply), "an unchanged policy is not re-applied"
    obj["spec"]["networkPolicy"] = {"enabled": False}
    off = plan_reconcile(obj, observed(objects.values()), OperatorConfig(), NOW)
    assert [(r.kind, r.name) for r in off.delete] == [("NetworkPolicy", "iris")]
    # With the operator-wide default on, the same spec keeps its policy.
    kept = plan_reconcile(obj, observed(objects.values()), OperatorConfig(model_network_policy=True), NOW)
    assert not any(r.kind == "NetworkPolicy" for r in kept.delete)


def test_a_network_policy_not_owned_is_never_deleted() -> None:
    foreign = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": "iris",
            "namespace": "ml",
            "uid": "someone-else",
            "labels": {"modeldeploy.io/model-deployment": "iris"},
        },
        "spec": {"podSelector": {}},
    }
    plan = plan_reconcile(body(), Observed(network_policies=[foreign]), OperatorConfig(), NOW)
    assert not any(r.kind == "NetworkPolicy" for r in plan.delete)


def test_auth_secret_is_mounted_read_only_for_the_server() -> None:
    md = parse_model_deployment(body(runtime={"auth": {"secretRef": {"name": "iris-tokens"}}}))
    deployment = build_deployment(md, OperatorConfig(), "abc", 1)
    assert_valid_k8s(deployment)
    pod = deployment["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if "secret" in v]
    assert volume["secret"] == {"secretName": "iris-tokens", "defaultMode": 0o440}
    server = pod["containers"][0]
    (mount,) = [m for m in server["volumeMounts"] if m["name"] == volume["name"]]
    assert mount == {"name": volume["name"], "mountPath": AUTH_MOUNT_PATH, "readOnly": True}
    assert {"name": AUTH_ENV, "value": AUTH_MOUNT_PATH} in server["env"]
    # Probes stay on the health endpoints, which the runtime leaves open.
    assert server["readinessProbe"]["httpGet"]["path"].startswith("/v2/health/")
    assert server["livenessProbe"]["httpGet"]["path"].startswith("/v2/health/")
    # The download never sees the tokens.
    for init in pod.get("initContainers", []):
        assert all(m["name"] != volume["name"] for m in init["volumeMounts"])


def test_auth_changes_the_revision_but_unset_auth_keeps_old_hashes() -> None:
    plain = parse_model_deployment(body())
    with_auth = parse_model_deployment(body(runtime={"auth": {"secretRef": {"name": "t"}}}))
    assert revision_of(plain) != revision_of(with_auth)
    deployment = build_deployment(plain, OperatorConfig(), "abc", 1)
    server = deployment["spec"]["template"]["spec"]["containers"][0]
    assert all(e["name"] != AUTH_ENV for e in server["env"])
    assert all(m["mountPath"] != AUTH_MOUNT_PATH for m in server["volumeMounts"])
