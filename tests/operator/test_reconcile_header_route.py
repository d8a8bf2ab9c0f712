"""Gateway API header routing in ``plan_reconcile``: tagged requests go to the canary only once it can serve."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

from modeldeploy.config import OperatorConfig
from modeldeploy.reconcile import Observed, plan_reconcile

CONFIG = OperatorConfig()
T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
HEADER = {"name": "X-Canary", "value": "always"}


def model_deployment(version: str) -> dict[str, Any]:
    return {
        "apiVersion": "modeldeploy.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "iris", "namespace": "default", "uid": "uid-1", "generation": 1},
        "spec": {
            "model": {"version": version, "storageUri": f"s3://models/iris/{version}/", "format": "TorchScript"},
            "replicas": 1,
            "rollout": {
                "strategy": "Canary",
                "canary": {
                    "steps": [{"setWeight": 20}, {"pause": {}}],
                    "trafficRouting": {
                        "type": "GatewayAPI",
                        "gatewayAPI": {"parentRefs": [{"name": "gw"}], "header": HEADER},
                    },
                },
            },
        },
    }


class Cluster:
    """Stores what plans apply; Deployments named in ``ready`` report all their pods ready."""

    def __init__(self, md: dict[str, Any]) -> None:
        self.md = md
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.ready: set[str] = set()
        self.events: list[tuple[str, str]] = []

    def step(self) -> None:
        for (kind, name), obj in self.objects.items():
            if kind == "Deployment":
                want = obj["spec"].get("replicas", 1)
                ready = want if name in self.ready else 0
                obj["status"] = {"observedGeneration": 1, "replicas": want, "updatedReplicas": want,
                                 "readyReplicas": ready, "availableReplicas": ready}  # fmt: skip
        kinds = {k: [o for (kind, _), o in self.objects.items() if kind == k] for k in
                 ("Deployment", "Service", "ControllerRevision", "HTTPRoute")}  # fmt: skip
        observed = Observed(deployments=kinds["Deployment"], services=kinds["Service"],
                            revisions=kinds["ControllerRevision"], routes=kinds["HTTPRoute"])  # fmt: skip
        plan = plan_reconcile(self.md, observed, CONFIG, T0)
        self.events.extend((e.reason, e.message) for e in plan.events)
        for manifest in plan.apply:
            obj = copy.deepcopy(manifest)
            obj["metadata"].setdefault("generation", 1)
            self.objects[(obj["kind"], obj["metadata"]["name"])] = obj
        for ref in plan.delete:
            self.objects.pop((ref.kind, ref.name), None)
        if plan.status is not None:
            self.md["status"] = copy.deepcopy(plan.status)

    def converge(self) -> None:
        for _ in range(6):
            self.step()

    def serving_stable(self) -> str:
        """Deploy the first revision and make its pods ready; its Deployment's name."""
        self.converge()
        (stable,) = self.deployment_names()
        self.ready.add(stable)
        self.converge()
        return stable

    def route_rules(self) -> list[dict[str, Any]]:
        return list(self.objects[("HTTPRoute", "iris")]["spec"]["rules"])

    def deployment_names(self) -> list[str]:
        return sorted(name for kind, name in self.objects if kind == "Deployment")


def test_the_header_rule_waits_for_a_ready_canary_pod() -> None:
    cluster = Cluster(model_deployment("1"))
    stable = cluster.serving_stable()
    assert len(cluster.route_rules()) == 1

    cluster.md["spec"] = model_deployment("2")["spec"]
    cluster.md["metadata"]["generation"] = 2
    cluster.converge()
    canary = next(name for name in cluster.deployment_names() if name != stable)
    rules = cluster.route_rules()
    assert cluster.md["status"]["rollout"]["canaryRevision"], "the rollout started"
    assert len(rules) == 1, f"no header rule while the canary has no ready pod (it would answer 503): {rules}"
    assert {r["name"]: r["weight"] for r in rules[0]["backendRefs"]} == {stable: 100, canary: 0}

    cluster.ready.add(canary)
    cluster.converge()
    header_rule, weighted = cluster.route_rules()
    assert header_rule["matches"] == [{"headers": [{"type": "Exact", **HEADER}]}]
    assert [r["name"] for r in header_rule["backendRefs"]] == [canary]
    assert {r["name"]: r["weight"] for r in weighted["backendRefs"]} == {stable: 80, canary: 20}


def test_an_abort_takes_the_header_rule_away_with_the_weight() -> None:
    cluster = Cluster(model_deployment("1"))
    stable = cluster.serving_stable()
    cluster.md["spec"] = model_deployment("2")["spec"]
    cluster.md["metadata"]["generation"] = 2
    cluster.converge()
    canary = next(name for name in cluster.deployment_names() if name != stable)
    cluster.ready.add(canary)
    cluster.converge()
    assert len(cluster.route_rules()) == 2, "header rule in place while the canary serves"

    cluster.md["spec"]["rollout"]["abort"] = True
    cluster.md["metadata"]["generation"] = 3
    cluster.step()  # the decision that moves traffic back (RollingBack): the canary still has its pods
    assert cluster.md["status"]["rollout"]["phase"] == "RollingBack"
    assert canary in cluster.deployment_names()
    (rule,) = cluster.route_rules()  # no header rule left
    weights = {r["name"]: r["weight"] for r in rule["backendRefs"]}
    assert weights[stable] == 100 and weights.get(canary, 0) == 0, weights


def test_a_neutral_hand_back_takes_the_header_rule_away_before_the_weight() -> None:
    # With Neutral capacity a rollback hands the pods back a few at a time, so the canary keeps a weight while
    # the rollout rolls back; the tagged requests must not keep going to it alone.
    def neutral(version: str) -> dict[str, Any]:
        md = model_deployment(version)
        md["spec"]["replicas"] = 4
        canary = md["spec"]["rollout"]["canary"]
        canary["steps"] = [{"setWeight": 50}, {"pause": {}}]
        canary["capacity"] = {"mode": "Neutral", "maxSurgePods": 1}
        return md

    cluster = Cluster(neutral("1"))
    stable = cluster.serving_stable()
    cluster.md["spec"] = neutral("2")["spec"]
    cluster.md["metadata"]["generation"] = 2
    for _ in range(12):
        cluster.ready.update(cluster.deployment_names())
        cluster.step()
    canary = next(name for name in cluster.deployment_names() if name != stable)
    assert cluster.md["status"]["rollout"]["phase"] == "Paused"
    header_rule, weighted = cluster.route_rules()
    assert [r["name"] for r in header_rule["backendRefs"]] == [canary]
    assert {r["name"]: r["weight"] for r in weighted["backendRefs"]} == {stable: 50, canary: 50}

    cluster.md["spec"]["rollout"]["abort"] = True
    cluster.md["metadata"]["generation"] = 3
    cluster.step()
    assert cluster.md["status"]["rollout"]["phase"] == "RollingBack"
    rules = cluster.route_rules()
    assert len(rules) == 1, f"no header rule to a rejected canary: {rules}"
    assert {r["name"]: r["weight"] for r in rules[0]["backendRefs"]}.get(canary, 0) > 0, (
        "the hand-back is gradual: the canary still carries a weight (the case this test is about)"
    )


def test_a_mirror_step_copies_requests_to_the_canary_once_its_pods_are_ready() -> None:
    md = model_deployment("1")
    md["spec"]["replicas"] = 2
    md["spec"]["rollout"]["canary"]["steps"] = [{"setMirror": 50}, {"pause": {}}, {"setWeight": 50}, {"pause": {}}]
    cluster = Cluster(md)
    stable = cluster.serving_stable()
    assert cluster.md["status"]["mirrorWeight"] == 0

    cluster.md["spec"]["model"] = model_deployment("2")["spec"]["model"]
    cluster.md["metadata"]["generation"] = 2
    cluster.converge()
    canary = next(name for name in cluster.deployment_names() if name != stable)
    assert cluster.objects[("Deployment", canary)]["spec"]["replicas"] == 1  # half of 2 pods' traffic
    assert all("filters" not in rule for rule in cluster.route_rules()), "nothing is copied to a canary not ready"
    assert cluster.md["status"]["rollout"]["phase"] == "Progressing"

    cluster.ready.add(canary)
    cluster.converge()
    header_rule, weighted = cluster.route_rules()
    mirror = {"backendRef": {"name": canary, "port": 80}, "percent": 50}
    assert weighted["filters"] == [{"type": "RequestMirror", "requestMirror": mirror}]
    assert {r["name"]: r["weight"] for r in weighted["backendRefs"]} == {stable: 100, canary: 0}
    assert "filters" not in header_rule
    status = cluster.md["status"]
    assert status["mirrorWeight"] == 50 and status["canaryWeight"] == 0 and status["rollout"]["mirrorWeight"] == 50
    assert status["rollout"]["phase"] == "Paused"

    # A promotion gives the canary the traffic: the copy ends with it.
    cluster.md["spec"]["rollout"]["promote"] = "step"
    cluster.md["metadata"]["generation"] = 3
    cluster.converge()
    status = cluster.md["status"]
    assert status["mirrorWeight"] == 0 and "mirrorWeight" not in status["rollout"]
    assert all("filters" not in rule for rule in cluster.route_rules())


class OldGatewayAPI(Cluster):
    """An HTTPRoute CRD older than Gateway API v1.3: the API server prunes requestMirror.percent on write."""

    def step(self) -> None:
        super().step()
        for (kind, _), obj in self.objects.items():
            for rule in obj["spec"].get("rules") or [] if kind == "HTTPRoute" else []:
                for flt in rule.get("filters") or []:
                    flt.get("requestMirror", {}).pop("percent", None)


def test_a_route_that_lost_the_mirrors_percent_is_reported() -> None:
    md = model_deployment("1")
    md["spec"]["replicas"] = 4
    md["spec"]["rollout"]["canary"]["steps"] = [{"setMirror": 25}, {"pause": {}}]
    cluster = OldGatewayAPI(md)
    stable = cluster.serving_stable()
    cluster.md["spec"]["model"] = model_deployment("2")["spec"]["model"]
    cluster.md["metadata"]["generation"] = 2
    cluster.converge()
    canary = next(name for name in cluster.deployment_names() if name != stable)
    cluster.ready.add(canary)
    cluster.converge()
    _, weighted = cluster.route_rules()
    assert weighted["filters"][0]["requestMirror"] == {"backendRef": {"name": canary, "port": 80}}
    assert cluster.md["status"]["mirrorWeight"] == 100 and cluster.md["status"]["rollout"]["mirrorWeight"] == 25
    dropped = [m for reason, m in cluster.events if reason == "MirrorPercentDropped"]
    assert len(dropped) == 1, "posted once, when the status changes"
    assert f"copies every request to revision {canary.removeprefix('iris-')}, not 25%" in dropped[0]


def test_the_service_named_like_the_model_deployment_stays_under_gateway_api() -> None:
    # status.url names the Service NAME: in-cluster clients keep it when the routing moves to a Gateway.
    md = model_deployment("1")
    gateway = md["spec"]["rollout"]["canary"]["trafficRouting"]
    md["spec"]["rollout"]["canary"]["trafficRouting"] = {"type": "Replicas"}
    cluster = Cluster(md)
    stable = cluster.serving_stable()
    assert sorted(n for k, n in cluster.objects if k == "Service") == ["iris"]

    cluster.md["spec"]["rollout"]["canary"]["trafficRouting"] = gateway
    cluster.md["metadata"]["generation"] = 2
    cluster.converge()
    assert sorted(n for k, n in cluster.objects if k == "Service") == ["iris", stable]
    selector = cluster.objects[("Service", "iris")]["spec"]["selector"]
    assert selector == {"modeldeploy.io/model-deployment": "iris", "modeldeploy.io/revision": stable[len("iris-") :]}
    assert cluster.md["status"]["url"].startswith("http://iris.default.svc.")

    # During a canary it selects both revisions (the replica-ratio split), like the Replicas router.
    cluster.md["spec"]["model"] = model_deployment("2")["spec"]["model"]
    cluster.md["metadata"]["generation"] = 3
    for _ in range(8):
        cluster.ready.update(cluster.deployment_names())
        cluster.step()
    assert len(cluster.deployment_names()) == 2
    assert cluster.objects[("Service", "iris")]["spec"]["selector"] == {"modeldeploy.io/model-deployment": "iris"}
