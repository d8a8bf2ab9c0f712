"""Which backends of a shared HTTPRoute a ModelDeployment manages: ``NAME`` and ``NAME-<revision>`` only."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from modeldeploy.rollout.config import GatewayAPISpec
from modeldeploy.rollout.routing import GatewayAPIRouter, RoutingError, is_our_backend

A, B = "0123456789", "abcdef0123"


@pytest.mark.parametrize(
    ("service", "ours"),
    [
        ("iris", True),
        (f"iris-{A}", True),
        (f"iris-{B}", True),
        ("iris-large", False),  # another ModelDeployment named like a prefix of ours
        ("iris-large-0123456789", False),
        ("iris-preview", False),
        ("iris-012345678", False),  # one hex character short
        ("iris-0123456789a", False),  # one too many
        ("iris-ABCDEF0123", False),  # revisions are lowercase
        ("iris-", False),
        ("iri", False),
        ("irisaaaaaaaaaaa", False),
        ("other", False),
    ],
)
def test_our_backends_are_name_and_name_dash_revision(service: str, ours: bool) -> None:
    assert is_our_backend("iris", service) is ours


def shared_route() -> dict[str, Any]:
    def rule(path: str, backend: str) -> dict[str, Any]:
        match = {"path": {"type": "PathPrefix", "value": path}}
        return {"matches": [match], "backendRefs": [{"name": backend, "port": 80}]}

    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "shared", "namespace": "ml", "resourceVersion": "1"},
        "spec": {"rules": [rule("/iris", "iris"), rule("/iris-large", "iris-large")]},
    }


def test_two_model_deployments_with_a_common_prefix_share_one_route() -> None:
    iris = GatewayAPIRouter("iris", "ml", GatewayAPISpec(http_route="shared"))
    large = GatewayAPIRouter("iris-large", "ml", GatewayAPISpec(http_route="shared"))
    route = iris.build_route({A: 80, B: 20}, copy.deepcopy(shared_route()))
    rules = route["spec"]["rules"]
    assert [r["name"] for r in rules[0]["backendRefs"]] == [f"iris-{A}", f"iris-{B}"]
    assert rules[1] == shared_route()["spec"]["rules"][1]  # iris-large's rule: untouched
    assert iris.managed_backends(route) == [f"iris-{A}", f"iris-{B}"]
    assert large.managed_backends(route) == ["iris-large"]
    # iris-large then edits only its own rule, and iris sees its weights unchanged.
    both = large.build_route({B: 100}, route)
    assert both["spec"]["rules"][0] == rules[0]
    assert both["spec"]["rules"][1]["backendRefs"] == [{"name": f"iris-large-{B}", "port": 80, "weight": 100}]
    assert iris.route_weights(both) == {A: 80, B: 20} and large.route_weights(both) == {B: 100}
    assert iris.verify([both], {A: 80, B: 20}) and large.verify([both], {B: 100})


def test_a_route_naming_only_a_longer_name_is_not_ours() -> None:
    route = shared_route()
    route["spec"]["rules"] = route["spec"]["rules"][1:]
    with pytest.raises(RoutingError, match="no rule with a backendRef to Service iris"):
        GatewayAPIRouter("iris", "ml", GatewayAPISpec(http_route="shared")).build_route({A: 100}, route)
