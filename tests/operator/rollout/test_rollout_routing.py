from __future__ import annotations

import copy
from typing import Any

import pytest

from modeldeploy.rollout.config import GatewayAPISpec, HeaderMatch, parse_rollout
from modeldeploy.rollout.routing import (
    GatewayAPIRouter,
    ReplicaRatioRouter,
    RoutingError,
    router_for,
)

SEL = "modeldeploy.io/model-deployment"
REV = "modeldeploy.io/revision"


def test_replica_ratio_selector() -> None:
    router = ReplicaRatioRouter("iris", "ml")
    assert router.main_service_selector({"a": 75, "b": 25}) == {SEL: "iris"}
    assert router.main_service_selector({"a": 100, "b": 0}) == {SEL: "iris", REV: "a"}
    assert router.main_service_selector({}) == {SEL: "iris", REV: "none"}
    objs = router.build_desired({"a": 100, "b": 0}, preview="b")
    assert [o["metadata"]["name"] for o in objs] == ["iris", "iris-preview"]
    assert objs[1]["spec"]["selector"] == {SEL: "iris", REV: "b"}
    assert router.verify(objs, {"a": 100, "b": 0}) and not router.verify(objs, {"a": 50, "b": 50})
    with pytest.raises(RoutingError):
        router.main_service_selector({"a": 60, "b": 30})


def test_gateway_created_route_with_header() -> None:
    router = GatewayAPIRouter(
        "iris", "ml", GatewayAPISpec(parent_refs=({"name": "gw"},), header=HeaderMatch("x-canary", "1"))
    )
    objs = router.build_desired({"a": 90, "b": 10}, canary="b")
    kinds = [(o["kind"], o["metadata"]["name"]) for o in objs]
    assert kinds == [("Service", "iris-a"), ("Service", "iris-b"), ("HTTPRoute", "iris")]
    route = objs[-1]
    assert route["apiVersion"] == "gateway.networking.k8s.io/v1"
    header_rule, weighted = route["spec"]["rules"]
    assert header_rule["matches"] == [{"headers": [{"type": "Exact", "name": "x-canary", "value": "1"}]}]
    assert header_rule["backendRefs"] == [{"name": "iris-b", "port": 80, "weight": 1}]
    assert weighted["backendRefs"] == [
        {"name": "iris-a", "port": 80, "weight": 90},
        {"name": "iris-b", "port": 80, "weight": 10},
    ]
    assert router.verify([route], {"a": 90, "b": 10}) and not router.verify([route], {"a": 80, "b": 20})
    # Without a canary the header rule goes away.
    assert len(router.build_route({"a": 100})["spec"]["rules"]) == 1


def existing_route() -> dict[str, Any]:
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "shared", "namespace": "ml", "resourceVersion": "42"},
        "spec": {
            "parentRefs": [{"name": "gw"}],
            "rules": [
                {
                    "matches": [{"path": {"type": "PathPrefix", "value": "/other"}}],
                    "backendRefs": [{"name": "other", "port": 80}],
                },
                {
                    "matches": [{"path": {"type": "PathPrefix", "value": "/v2"}}],
                    "backendRefs": [{"name": "iris", "port": 80}],
                },
                {
                    "backendRefs": [
                        {"name": "legacy", "port": 80, "weight": 50},
                        {"name": "iris", "port": 80, "weight": 50},
                    ]
                },
            ],
        },
    }


def test_gateway_existing_route_edits_only_our_backends() -> None:
    router = GatewayAPIRouter("iris", "ml", GatewayAPISpec(http_route="shared", header=HeaderMatch("x-canary", "1")))
    original = existing_route()
    route = router.build_route({"a": 75, "b": 25}, copy.deepcopy(original), canary="b")
    rules = route["spec"]["rules"]
    assert rules[0] == original["spec"]["rules"][0]  # not ours: untouched
    assert rules[1]["matches"][0]["headers"] == [{"type": "Exact", "name": "x-canary", "value": "1"}]
    assert rules[1]["matches"][0]["path"] == {"type": "PathPrefix", "value": "/v2"}
    assert rules[2]["backendRefs"] == [
        {"name": "iris-a", "port": 80, "weight": 75},
        {"name": "iris-b", "port": 80, "weight": 25},
    ]
    # A rule shared with someone else's backend: their ref and weight stay, ours split our 50.
    assert rules[-1]["backendRefs"][0] == {"name": "legacy", "port": 80, "weight": 50}
    assert sum(r["weight"] for r in rules[-1]["backendRefs"][1:]) == 50
    assert route["metadata"]["resourceVersion"] == "42"
    assert router.managed_backends(route) == ["iris-a", "iris-b"]
    # Applying again (to the edited route) is stable, and dropping the canary removes the header rule.
    again = router.build_route({"a": 75, "b": 25}, route, canary="b")
    assert again == route
    done = router.build_route({"b": 100}, route)
    assert len(done["spec"]["rules"]) == 3 and done["spec"]["rules"][1]["backendRefs"] == [
        {"name": "iris-b", "port": 80, "weight": 100}
    ]


def test_gateway_existing_route_without_our_backend_is_an_error() -> None:
    router = GatewayAPIRouter("iris", "ml", GatewayAPISpec(http_route="shared"))
    route = existing_route()
    route["spec"]["rules"] = route["spec"]["rules"][:1]
    with pytest.raises(RoutingError, match="no rule with a backendRef to Service iris"):
        router.build_route({"a": 100}, route)
    with pytest.raises(RoutingError, match="must be read"):
        router.build_route({"a": 100}, None)


def test_factory() -> None:
    gw = parse_rollout(
        {
            "strategy": "Canary",
            "canary": {"trafficRouting": {"type": "GatewayAPI", "gatewayAPI": {"httpRoute": "r"}}},
        }
    )
    assert router_for(gw, "iris", "ml").router_type == "GatewayAPI"
    assert router_for(parse_rollout({}), "iris", "ml").router_type == "Replicas"
