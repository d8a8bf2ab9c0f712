from __future__ import annotations

import copy
from typing import Any

import pytest

from modeldeploy.rollout.config import GatewayAPISpec, HeaderMatch, parse_rollout
from modeldeploy.rollout.routing import (
    GatewayAPIRouter,
    Mirror,
    ReplicaRatioRouter,
    RoutingError,
    router_for,
)

SEL = "modeldeploy.io/model-deployment"
REV = "modeldeploy.io/revision"
A, B = "a" * 10, "b" * 10
"""Revisions as ``build.revision_of`` makes them: a route's ``iris-<10 hex>`` backends are ours."""


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
    objs = router.build_desired({A: 90, B: 10}, canary=B)
    kinds = [(o["kind"], o["metadata"]["name"]) for o in objs]
    assert kinds == [("Service", "iris"), ("Service", f"iris-{A}"), ("Service", f"iris-{B}"), ("HTTPRoute", "iris")]
    assert objs[0]["spec"]["selector"] == {SEL: "iris"}  # in-cluster clients: the replica-ratio split
    route = objs[-1]
    assert route["apiVersion"] == "gateway.networking.k8s.io/v1"
    header_rule, weighted = route["spec"]["rules"]
    assert header_rule["matches"] == [{"headers": [{"type": "Exact", "name": "x-canary", "value": "1"}]}]
    assert header_rule["backendRefs"] == [{"name": f"iris-{B}", "port": 80, "weight": 1}]
    assert weighted["backendRefs"] == [
        {"name": f"iris-{A}", "port": 80, "weight": 90},
        {"name": f"iris-{B}", "port": 80, "weight": 10},
    ]
    assert router.verify([route], {A: 90, B: 10}) and not router.verify([route], {A: 80, B: 20})
    # Without a canary the header rule goes away.
    assert len(router.build_route({A: 100})["spec"]["rules"]) == 1


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
    route = router.build_route({A: 75, B: 25}, copy.deepcopy(original), canary=B)
    rules = route["spec"]["rules"]
    assert rules[0] == original["spec"]["rules"][0]  # not ours: untouched
    assert rules[1]["matches"][0]["headers"] == [{"type": "Exact", "name": "x-canary", "value": "1"}]
    assert rules[1]["matches"][0]["path"] == {"type": "PathPrefix", "value": "/v2"}
    assert rules[2]["backendRefs"] == [
        {"name": f"iris-{A}", "port": 80, "weight": 75},
        {"name": f"iris-{B}", "port": 80, "weight": 25},
    ]
    # A rule shared with someone else's backend: their ref and weight stay, ours split our 50.
    assert rules[-1]["backendRefs"][0] == {"name": "legacy", "port": 80, "weight": 50}
    assert sum(r["weight"] for r in rules[-1]["backendRefs"][1:]) == 50
    assert route["metadata"]["resourceVersion"] == "42"
    assert router.managed_backends(route) == [f"iris-{A}", f"iris-{B}"]
    # Applying again (to the edited route) is stable, and dropping the canary removes the header rule.
    again = router.build_route({A: 75, B: 25}, route, canary=B)
    assert again == route
    done = router.build_route({B: 100}, route)
    assert len(done["spec"]["rules"]) == 3 and done["spec"]["rules"][1]["backendRefs"] == [
        {"name": f"iris-{B}", "port": 80, "weight": 100}
    ]


def test_gateway_existing_route_without_our_backend_is_an_error() -> None:
    router = GatewayAPIRouter("iris", "ml", GatewayAPISpec(http_route="shared"))
    route = existing_route()
    route["spec"]["rules"] = route["spec"]["rules"][:1]
    with pytest.raises(RoutingError, match="no rule with a backendRef to Service iris"):
        router.build_route({A: 100}, route)
    with pytest.raises(RoutingError, match="must be read"):
        router.build_route({A: 100}, None)


def mirror_filter(revision: str, percent: int) -> dict[str, Any]:
    backend = {"name": f"iris-{revision}", "port": 80}
    return {"type": "RequestMirror", "requestMirror": {"backendRef": backend, "percent": percent}}


def test_gateway_created_route_mirrors_the_weighted_rule_only() -> None:
    router = GatewayAPIRouter(
        "iris", "ml", GatewayAPISpec(parent_refs=({"name": "gw"},), header=HeaderMatch("x-canary", "1"))
    )
    objs = router.build_desired({A: 100, B: 0}, canary=B, mirror=Mirror(B, 30))
    route = objs[-1]
    # Requests with the header go to the canary for real (testers reach it before any weight): never copied.
    header_rule, weighted = route["spec"]["rules"]
    assert "filters" not in header_rule and header_rule["backendRefs"][0]["name"] == f"iris-{B}"
    assert weighted["filters"] == [mirror_filter(B, 30)]
    assert weighted["backendRefs"] == [
        {"name": f"iris-{A}", "port": 80, "weight": 100},
        {"name": f"iris-{B}", "port": 80, "weight": 0},
    ]
    assert router.route_mirrors(route) == {B: 30}
    assert router.verify([route], {A: 100, B: 0}, Mirror(B, 30))
    assert not router.verify([route], {A: 100, B: 0}, Mirror(B, 50))
    assert not router.verify([route], {A: 100, B: 0})
    # Without the mirror the filter goes (no empty filters list either).
    assert "filters" not in router.build_route({A: 100, B: 0})["spec"]["rules"][0]


def test_gateway_existing_route_mirror_keeps_the_owners_filters() -> None:
    router = GatewayAPIRouter("iris", "ml", GatewayAPISpec(http_route="shared"))
    original = existing_route()
    theirs = [
        {"type": "RequestHeaderModifier", "requestHeaderModifier": {"add": [{"name": "x-team", "value": "ml"}]}},
        {"type": "RequestMirror", "requestMirror": {"backendRef": {"name": "audit", "port": 80}}},
    ]
    original["spec"]["rules"][1]["filters"] = copy.deepcopy(theirs)
    route = router.build_route({A: 100, B: 0}, copy.deepcopy(original), mirror=Mirror(B, 10))
    rules = route["spec"]["rules"]
    assert rules[0] == original["spec"]["rules"][0]
    assert rules[1]["filters"] == [*theirs, mirror_filter(B, 10)]
    assert rules[2]["filters"] == [mirror_filter(B, 10)]
    assert router.route_mirrors(route) == {B: 10}
    # A new share replaces ours in place; applying again changes nothing.
    moved = router.build_route({A: 100, B: 0}, route, mirror=Mirror(B, 40))
    assert moved["spec"]["rules"][1]["filters"] == [*theirs, mirror_filter(B, 40)]
    assert router.build_route({A: 100, B: 0}, moved, mirror=Mirror(B, 40)) == moved
    # Ending it leaves exactly what the owner wrote.
    ended = router.build_route({A: 100}, moved)
    assert ended["spec"]["rules"][1]["filters"] == theirs and "filters" not in ended["spec"]["rules"][2]


def test_a_mirror_filter_without_percent_copies_every_request() -> None:
    # A Gateway API older than v1.3 drops the percent field: the route then mirrors everything, and says so.
    router = GatewayAPIRouter("iris", "ml", GatewayAPISpec(parent_refs=({"name": "gw"},)))
    route = router.build_route({A: 100, B: 0}, mirror=Mirror(B, 20))
    del route["spec"]["rules"][0]["filters"][0]["requestMirror"]["percent"]
    assert router.route_mirrors(route) == {B: 100}
    assert not router.verify([route], {A: 100, B: 0}, Mirror(B, 20))


def test_mirrors_the_routers_refuse() -> None:
    router = GatewayAPIRouter("iris", "ml", GatewayAPISpec(parent_refs=({"name": "gw"},)))
    with pytest.raises(RoutingError, match="no Service to mirror to"):
        router.build_desired({A: 100}, mirror=Mirror(B, 20))
    with pytest.raises(RoutingError, match="between 1 and 100"):
        router.build_route({A: 100, B: 0}, mirror=Mirror(B, 0))
    with pytest.raises(RoutingError, match="only be mirrored with trafficRouting type GatewayAPI"):
        ReplicaRatioRouter("iris", "ml").build_desired({A: 100, B: 0}, mirror=Mirror(B, 20))


def test_factory() -> None:
    gw = parse_rollout(
        {
            "strategy": "Canary",
            "canary": {"trafficRouting": {"type": "GatewayAPI", "gatewayAPI": {"httpRoute": "r"}}},
        }
    )
    assert router_for(gw, "iris", "ml").router_type == "GatewayAPI"
    assert router_for(parse_rollout({}), "iris", "ml").router_type == "Replicas"
