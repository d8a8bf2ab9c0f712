"""The HTTPRoutes the operator renders, against the Gateway API's own schema.

``kubernetes-validate`` holds only Kubernetes' own APIs, so HTTPRoutes are checked with the schemas generated from
the Gateway API's Go types (npm ``@kubernetes-models/gateway-api``, installed by ``make gateway-api-schema`` into
``.tools/gateway-api``; the test installs it when missing and skips, saying why, where Node.js or npm is absent).
That schema has the types, enums and ranges; the CRD's CEL rules are not in it.
"""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from modeldeploy.rollout.config import GatewayAPISpec, HeaderMatch
from modeldeploy.rollout.routing import GatewayAPIRouter, Mirror

REPO = Path(__file__).resolve().parents[2]
SCHEMA = REPO / ".tools" / "gateway-api"
VALIDATE = SCHEMA / "validate.mjs"


@pytest.fixture(scope="module")
def validate() -> Any:
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("the Gateway API schema check needs Node.js and npm (neither is on PATH)")
    made = subprocess.run(["make", "-C", str(REPO), "-o", ".stamps/setup", "gateway-api-schema"],
                          capture_output=True, text=True, check=False)  # fmt: skip
    if made.returncode != 0 or not VALIDATE.exists():
        pytest.skip(f"`make gateway-api-schema` failed: {(made.stderr or made.stdout)[-600:]}")

    def run(objects: list[dict[str, Any]]) -> list[tuple[int, str]]:
        out = subprocess.run(["node", str(VALIDATE)], input=json.dumps(objects), capture_output=True, text=True,
                             check=True, timeout=60)  # fmt: skip
        return [(index, message) for index, message in json.loads(out.stdout)]

    return run


def existing_route() -> dict[str, Any]:
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "shared", "namespace": "ml", "resourceVersion": "42"},
        "spec": {
            "parentRefs": [{"name": "gw", "namespace": "infra", "sectionName": "https"}],
            "hostnames": ["models.example.com"],
            "rules": [
                {"matches": [{"path": {"type": "PathPrefix", "value": "/other"}}],
                 "backendRefs": [{"name": "other", "port": 8080}]},
                {"matches": [{"path": {"type": "PathPrefix", "value": "/v2"}, "method": "POST"}],
                 "filters": [{"type": "RequestHeaderModifier",
                              "requestHeaderModifier": {"add": [{"name": "x-team", "value": "ml"}]}}],
                 "backendRefs": [{"name": "legacy", "port": 80, "weight": 50}, {"name": "iris", "port": 80,
                                                                                 "weight": 50}]},
            ],
        },
    }  # fmt: skip


def rendered_routes() -> list[dict[str, Any]]:
    """What the router writes: created and existing routes, with weights, the header rule and a mirror."""
    created = GatewayAPIRouter("iris", "ml", GatewayAPISpec(parent_refs=({"name": "gw", "sectionName": "http"},),
                                                            header=HeaderMatch("x-canary", "always")))  # fmt: skip
    edited = GatewayAPIRouter("iris", "ml", GatewayAPISpec(http_route="shared", header=HeaderMatch("x-canary", "1")))
    routes = []
    for router, existing in ((created, None), (edited, existing_route())):
        for weights, canary, mirror in [
            ({"a": 100}, None, None),
            ({"a": 100, "b": 0}, "b", Mirror("b", 30)),
            ({"a": 100, "b": 0}, None, Mirror("b", 100)),
            ({"a": 80, "b": 20}, "b", None),
            ({"b": 100}, None, None),
        ]:
            routes.append(router.build_route(weights, copy.deepcopy(existing), canary=canary, mirror=mirror))
    return routes


def test_every_route_the_operator_renders_is_valid(validate: Any) -> None:
    routes = rendered_routes()
    assert any("filters" in rule for route in routes for rule in route["spec"]["rules"]), "mirrors are covered"
    assert validate(routes) == []


def test_the_schema_rejects_what_the_gateway_api_does(validate: Any) -> None:
    route = rendered_routes()[1]
    weighted = route["spec"]["rules"][-1]
    broken = [copy.deepcopy(route) for _ in range(3)]
    broken[0]["spec"]["rules"][-1]["filters"][0]["requestMirror"]["percent"] = 130
    broken[1]["spec"]["rules"][-1]["backendRefs"][0]["port"] = "80"
    broken[2]["spec"]["rules"][-1]["filters"][0]["type"] = "Mirror"
    assert "filters" in weighted
    errors = validate(broken)
    assert [index for index, _ in errors] == [0, 1, 2], errors
    assert "percent must be <= 100" in errors[0][1] and "port must be integer" in errors[1][1]
