"""Tests for modeldeploy.reconcile: the pure decision of what to write.

A tiny in-memory cluster carries plans out (apply = store, delete = remove, status = replace) and a Deployment
is marked ready on cue, so whole convergence sequences run without any API server.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import event, example, given, settings
from hypothesis import strategies as st
from reconcile_kit import body

from modeldeploy.analysis.sample import Sample
from modeldeploy.conditions import find
from modeldeploy.config import OperatorConfig
from modeldeploy.labels import MODEL_DEPLOYMENT_LABEL, REVISION_LABEL, STABLE_ANNOTATION
from modeldeploy.reconcile import (
    Observed,
    Plan,
    assess_deployment,
    check_spec,
    gpu_query,
    initial_scale,
    plan_reconcile,
    refused_status,
    serving_selector,
)
from modeldeploy.rollout.plan import Measurement
from modeldeploy.spec import AutoscalingSpec

CONFIG = OperatorConfig()
T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


def model_deployment(**spec_overrides: Any) -> dict[str, Any]:
    """reconcile_kit's ModelDeployment, in namespace ``default`` with 2 replicas."""
    md = body(**{"replicas": 2, **spec_overrides})
    md["metadata"]["namespace"] = "default"
    return md


@dataclass
class FakeCluster:
    """Carries plans out the way the API server would, minus everything irrelevant to the decision."""

    md: dict[str, Any]
    objects: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    now: datetime = T0
    writes: int = 0
    events: list[tuple[str, str]] = field(default_factory=list)
    measurement: Measurement | None = None
    """The analysis measurement to hand to the next reconciles (as the controller does once it is taken)."""
    pods: list[dict[str, Any]] = field(default_factory=list)
    """Pods as the kubelet reports them; none unless a test puts them here."""

    def observed(self) -> Observed:
        by_kind: dict[str, list[dict[str, Any]]] = {
            "Deployment": [],
            "Service": [],
            "HorizontalPodAutoscaler": [],
            "ControllerRevision": [],
            "HTTPRoute": [],
            "PodDisruptionBudget": [],
        }
        for (kind, _), obj in self.objects.items():
            by_kind[kind].append(obj)
        return Observed(
            deployments=by_kind["Deployment"],
            services=by_kind["Service"],
            autoscalers=by_kind["HorizontalPodAutoscaler"],
            revisions=by_kind["ControllerRevision"],
            routes=by_kind["HTTPRoute"],
            disruption_budgets=by_kind["PodDisruptionBudget"],
            pods=self.pods,
            measurement=self.measurement,
        )

    def step(self) -> Plan:
        plan = plan_reconcile(self.md, self.observed(), CONFIG, self.now)
        if plan.scale is not None:  # through the ModelDeployment's scale subresource, first
            assert "replicas" not in self.md["spec"], "spec.replicas is written only where it is absent"
            self.scale(plan.scale)
        for manifest in plan.apply:
            key = (manifest["kind"], manifest["metadata"]["name"])
            old = self.objects.get(key)
            obj = copy.deepcopy(manifest)
            # The operator sets every Deployment's count: an HPA scales the ModelDeployment, not a Deployment.
            assert key[0] != "Deployment" or isinstance(obj["spec"].get("replicas"), int), obj
            obj["metadata"]["uid"] = f"uid-{key[1]}"
            generation = 1
            if old is not None:
                generation = old["metadata"]["generation"] + (old.get("spec") != obj.get("spec"))
                obj["status"] = old.get("status", {})
            obj["metadata"]["generation"] = generation
            self.objects[key] = obj
        for ref in plan.delete:
            assert self.objects[(ref.kind, ref.name)]["metadata"]["uid"] == ref.uid
            del self.objects[(ref.kind, ref.name)]
        if plan.status is not None:
            self.md["status"] = copy.deepcopy(plan.status)
        self.events.extend((e.type, e.reason) for e in plan.events)
        self.writes += plan.writes
        return plan

    def converge(self, limit: int = 12) -> None:
        for _ in range(limit):
            self.simulate()
            if self.step().writes == 0:
                return
        raise AssertionError("did not converge")

    def deployments(self) -> dict[str, dict[str, Any]]:
        return {name: obj for (kind, name), obj in self.objects.items() if kind == "Deployment"}

    healthy: set[str] = field(default_factory=set)
    failing: set[str] = field(default_factory=set)

    def simulate(self) -> None:
        """The Deployment controller: healthy Deployments have all their pods ready, others none."""
        for dep_name, dep in self.deployments().items():
            want = dep["spec"].get("replicas", 1)
            ok = dep_name in self.healthy or "*" in self.healthy
            deadline = dep_name in self.failing
            dep["status"] = {
                "observedGeneration": dep["metadata"]["generation"],
                "replicas": want,
                "updatedReplicas": want,
                "readyReplicas": want if ok else 0,
                "availableReplicas": want if ok else 0,
                "conditions": [
                    {
                        "type": "Progressing",
                        "status": "False" if deadline else "True",
                        "reason": "ProgressDeadlineExceeded" if deadline else "NewReplicaSetAvailable",
                    }
                ],
            }

    def make_ready(self, name: str | None = None, *, ready: bool = True, deadline: bool = False) -> None:
        names = [name] if name is not None else list(self.deployments())
        for dep_name in names:
            (self.healthy.add if ready else self.healthy.discard)(dep_name)
            (self.failing.add if deadline else self.failing.discard)(dep_name)
        self.simulate()

    def update_spec(self, **spec_overrides: Any) -> None:
        self.md["spec"].update(spec_overrides)
        self.md["metadata"]["generation"] += 1

    def scale(self, replicas: int) -> None:
        """A write of spec.replicas through the scale subresource (the HPA's, kubectl scale's)."""
        self.update_spec(replicas=replicas)

    def condition(self, type_: str) -> Mapping[str, Any]:
        found = find(self.md["status"]["conditions"], type_)
        assert found is not None
        return found


def test_first_deploy_creates_deployment_and_service_then_becomes_ready() -> None:
    cluster = FakeCluster(model_deployment())
    plan = cluster.step()
    assert [m["kind"] for m in plan.apply] == ["ControllerRevision", "Deployment", "Service", "PodDisruptionBudget"]
    assert plan.status is not None and plan.status["phase"] == "Pending"
    assert ("Normal", "FirstDeploy") in cluster.events
    assert cluster.step().writes == 0, "a second look with nothing changed writes nothing"

    cluster.make_ready()
    plan = cluster.step()
    assert plan.apply == [] and plan.delete == []
    assert cluster.md["status"]["phase"] == "Ready"
    assert cluster.condition("Ready")["status"] == "True"
    assert cluster.condition("Ready")["reason"] == "Available"
    assert cluster.md["status"]["readyReplicas"] == 2
    assert cluster.md["status"]["desiredReplicas"] == 2
    assert cluster.md["status"]["url"] == "http://iris.default.svc.cluster.local/v2/models/iris"
    assert cluster.md["status"]["observedGeneration"] == 1
    assert ("Normal", "Available") in cluster.events
    assert cluster.step().writes == 0


def test_writes_for_a_whole_first_deploy_stay_small() -> None:
    cluster = FakeCluster(model_deployment())
    cluster.converge()
    cluster.make_ready()
    cluster.converge()
    # ControllerRevision, Deployment, Service, PodDisruptionBudget, two status patches, and a few Events.
    assert cluster.writes <= 9


def test_new_version_rolls_out_while_the_old_revision_keeps_serving() -> None:
    cluster = FakeCluster(model_deployment())
    cluster.converge()
    cluster.make_ready()
    cluster.converge()
    (old_name,) = cluster.deployments()
    old_revision = cluster.md["status"]["stableRevision"]

    cluster.update_spec(model={"version": "2", "storageUri": "s3://models/iris/2/model.pt", "format": "TorchScript"})
    cluster.converge()
    assert len(cluster.deployments()) == 2, "the old revision is kept until the new one is ready"
    assert cluster.md["status"]["phase"] == "Progressing"
    assert cluster.md["status"]["stableRevision"] == old_revision
    assert cluster.condition("Ready")["status"] == "True"
    assert cluster.condition("Ready")["reason"] == "PreviousRevisionServing"
    assert cluster.condition("Progressing")["status"] == "True"

    new_name = next(n for n in cluster.deployments() if n != old_name)
    cluster.make_ready(new_name)
    cluster.converge()
    assert list(cluster.deployments()) == [new_name]
    assert cluster.md["status"]["stableRevision"] != old_revision
    assert cluster.md["status"]["modelVersion"] == "2"
    assert ("Normal", "Promoted") in cluster.events


@pytest.mark.parametrize(
    ("update", "field"),
    [
        (
            {"model": {"version": "2", "storageUri": "ftp://nowhere/model.pt", "format": "TorchScript"}},
            "spec.model.storageUri",
        ),
        # Admitted by the CRD (amounts are compared by the operator, not by CEL); the pods would be refused.
        (
            {"runtime": {"resources": {"requests": {"nvidia.com/gpu": 1}, "limits": {"nvidia.com/gpu": 2}}}},
            "spec.runtime.resources.requests[nvidia.com/gpu]",
        ),
        ({"runtime": {"resources": {"limits": {"nvidia.com/gpu": "500m"}}}}, "spec.runtime.resources.limits"),
        ({"runtime": {"resources": {"limits": {"hugepages-2Mi": "3Mi"}}}}, "spec.runtime.resources.limits"),
        # Hugepages alone: the API server refuses the pods (HugePages require cpu or memory).
        ({"runtime": {"resources": {"limits": {"hugepages-2Mi": "4Mi"}}}}, "spec.runtime.resources"),
        # A stored object of an older CRD, whose affinity was not structural: checked, never a crash.
        ({"runtime": {"affinity": {"nodeAffinity": "gpu"}}}, "spec.runtime.affinity.nodeAffinity"),
    ],
    ids=["storage-uri", "gpu-request-not-its-limit", "half-a-gpu", "half-a-page", "hugepages-alone", "affinity-shape"],
)
def test_invalid_update_keeps_the_last_good_children_and_says_why(update: dict[str, Any], field: str) -> None:
    cluster = FakeCluster(model_deployment())
    cluster.converge()
    cluster.make_ready()
    cluster.converge()
    before = copy.deepcopy(cluster.objects)

    cluster.update_spec(**update)
    plan = cluster.step()
    assert plan.apply == [] and plan.delete == []
    assert cluster.objects == before
    ready = cluster.condition("Ready")
    assert ready["status"] == "False"
    assert ready["reason"] == "InvalidSpec"
    assert field in ready["message"]
    assert "keeps serving" in ready["message"]
    assert cluster.md["status"]["observedGeneration"] == 2
    assert ("Warning", "InvalidSpec") in cluster.events
    assert cluster.step().writes == 0, "the same invalid spec is reported once"


@pytest.mark.parametrize("admitted", [False, True], ids=["cel", "operator"])
def test_golden_requests_and_caller_auth_go_together(admitted: bool) -> None:
    """Golden requests to a model server with caller authentication carry a token from its Secret (the controller
    reads it); neither the CRD's rules nor the operator's own checks refuse the pair."""
    case = {
        "name": "c",
        "inputs": [{"name": "input", "shape": [1, 4], "data": [0.0, 1.0, 2.0, 3.0]}],
        "outputs": [{"name": "output", "argmax": [0]}],
    }
    md = model_deployment(
        rollout={"strategy": "BlueGreen", "analysis": {"goldenRequests": {"cases": [case]}}},
        runtime={"auth": {"secretRef": {"name": "tokens"}}},
    )
    _, parsed, rollout = check_spec(md, admitted=admitted)
    assert rollout.analysis is not None and rollout.analysis.golden is not None
    assert parsed.runtime.auth_secret_name == "tokens"


MD_SCALE_TARGET = {"apiVersion": "modeldeploy.io/v1alpha1", "kind": "ModelDeployment", "name": "iris"}


def test_autoscaling_adds_an_hpa_that_scales_the_model_deployment_then_removes_it() -> None:
    autoscaling = {"minReplicas": 1, "maxReplicas": 4, "targetCPUUtilizationPercentage": 70}
    runtime = {"resources": {"requests": {"cpu": "500m", "memory": "1Gi"}}}
    md = model_deployment(autoscaling=autoscaling, runtime=runtime)
    del md["spec"]["replicas"]
    cluster = FakeCluster(md)
    plan = cluster.step()
    # The HPA ignores a target without a count: the first pass gives it one, the minimum for a new model.
    assert plan.scale == 1 and cluster.md["spec"]["replicas"] == 1
    assert (plan.events[0].type, plan.events[0].reason) == ("Normal", "ReplicasInitialized")
    cluster.converge()
    assert cluster.events.count(("Normal", "ReplicasInitialized")) == 1, "written once"
    kinds = sorted(kind for kind, _ in cluster.objects)
    assert kinds == ["ControllerRevision", "Deployment", "HorizontalPodAutoscaler", "PodDisruptionBudget", "Service"]
    (deployment,) = cluster.deployments().values()
    assert deployment["spec"]["replicas"] == 1
    hpa = cluster.objects[("HorizontalPodAutoscaler", "iris")]
    assert hpa["spec"]["scaleTargetRef"] == MD_SCALE_TARGET
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 4)

    cluster.scale(3)  # the HPA scales the ModelDeployment; the operator scales the Deployment
    cluster.converge()
    (deployment,) = cluster.deployments().values()
    assert deployment["spec"]["replicas"] == 3 and cluster.md["status"]["desiredReplicas"] == 3
    cluster.update_spec(autoscaling={**autoscaling, "maxReplicas": 2})  # read within the bounds at once
    cluster.converge()
    assert next(iter(cluster.deployments().values()))["spec"]["replicas"] == 2

    # Autoscaling off: the HPA goes and its last count (in spec.replicas) stays the count.
    del cluster.md["spec"]["autoscaling"]
    cluster.update_spec()
    cluster.converge()
    assert sorted(kind for kind, _ in cluster.objects) == [
        "ControllerRevision",
        "Deployment",
        "PodDisruptionBudget",
        "Service",
    ]
    (deployment,) = cluster.deployments().values()
    assert deployment["spec"]["replicas"] == 3
    cluster.update_spec(replicas=5)
    cluster.converge()
    assert next(iter(cluster.deployments().values()))["spec"]["replicas"] == 5


def test_children_of_someone_else_are_never_changed_or_deleted() -> None:
    cluster = FakeCluster(model_deployment())
    foreign = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {
            "name": "iris",
            "namespace": "default",
            "uid": "other",
            "ownerReferences": [{"uid": "someone-else", "controller": True}],
        },
    }
    cluster.objects[("HorizontalPodAutoscaler", "iris")] = foreign
    cluster.converge()
    assert cluster.objects[("HorizontalPodAutoscaler", "iris")] is foreign


def test_paused_first_deploy_runs_no_pods() -> None:
    cluster = FakeCluster(model_deployment(paused=True))
    plan = cluster.step()
    assert [m for m in plan.apply if m["kind"] == "Deployment"] == []
    assert cluster.md["status"]["phase"] == "Paused"
    assert cluster.condition("Progressing")["reason"] == "Paused"
    cluster.update_spec(paused=False)
    cluster.converge()
    assert len(cluster.deployments()) == 1


def test_progress_deadline_rolls_back_and_keeps_the_stable_revision() -> None:
    cluster = FakeCluster(model_deployment())
    cluster.converge()
    cluster.make_ready()
    cluster.converge()
    stable = cluster.md["status"]["stableRevision"]
    (stable_name,) = cluster.deployments()
    cluster.update_spec(model={"version": "2", "storageUri": "s3://models/iris/2/model.pt", "format": "TorchScript"})
    cluster.converge()
    new_name = next(n for n in cluster.deployments() if n != stable_name)
    cluster.make_ready(new_name, ready=False, deadline=True)
    cluster.converge()
    assert cluster.md["status"]["phase"] == "Degraded"
    assert cluster.condition("Degraded")["status"] == "True"
    assert cluster.condition("Ready")["status"] == "True", "the stable revision still serves"
    assert cluster.md["status"]["stableRevision"] == stable
    assert cluster.md["status"]["rollout"]["rejectedRevisions"][0]["revision"] == new_name.split("-")[-1]
    assert list(cluster.deployments()) == [stable_name], "the rejected revision is scaled down and removed"
    assert ("Warning", "RollingBack") in cluster.events


def pod_of(deployment_name: str, index: int, status: dict[str, Any], *, node: str | None = "node-1") -> dict[str, Any]:
    """A pod of the revision whose Deployment is ``deployment_name`` (``iris-<revision>``)."""
    revision = deployment_name.rsplit("-", 1)[-1]
    return {
        "metadata": {
            "name": f"{deployment_name}-{index}",
            "labels": {MODEL_DEPLOYMENT_LABEL: "iris", REVISION_LABEL: revision},
        },
        "spec": {"nodeName": node} if node else {},
        "status": status,
    }


def crashing(container: str, code: int, message: str, restarts: int = 4) -> dict[str, Any]:
    key = "initContainerStatuses" if container == "fetch" else "containerStatuses"
    return {
        key: [
            {
                "name": container,
                "ready": False,
                "restartCount": restarts,
                "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 1m20s"}},
                "lastState": {"terminated": {"exitCode": code, "reason": "Error", "message": message}},
            }
        ]
    }


def test_why_pods_are_not_ready_is_said_in_the_conditions_and_in_the_rollback() -> None:
    """The cluster's own words (a termination message, the scheduler's) reach the ModelDeployment: while the first
    revision waits, in the rollback of a crash-looping canary, and when the stable loses pods."""
    cluster = FakeCluster(model_deployment())
    cluster.converge()
    (first,) = cluster.deployments()
    fetch_error = "Fetch failed: sha256 mismatch for s3://models/iris/1/model.pt: expected aaa, got bbb"
    cluster.pods = [pod_of(first, 0, crashing("fetch", 5, fetch_error, restarts=1))]
    cluster.converge()
    ready = cluster.condition("Ready")
    assert ready["status"] == "False"
    assert ready["message"].endswith(f": container fetch of pod {first}-0 exited with code 5: {fetch_error}")
    assert cluster.condition("Progressing")["message"] == ready["message"]
    assert cluster.condition("Degraded")["status"] == "False", "one restart is not yet a crash loop"

    # Crash-looping with nothing to roll back to: Degraded, in the same words; the phase stays Pending.
    cluster.pods = [pod_of(first, 0, crashing("fetch", 5, fetch_error, restarts=4))]
    cluster.converge()
    degraded = cluster.condition("Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "CrashLoop")
    assert degraded["message"] == (
        f"Pods of revision {first.rsplit('-', 1)[-1]} are crash-looping: "
        f"container fetch of pod {first}-0 exited with code 5: {fetch_error}"
    )
    assert cluster.md["status"]["phase"] == "Pending"

    cluster.pods = []
    cluster.make_ready()
    cluster.converge()
    assert cluster.condition("Ready")["message"].endswith("with 2 ready replicas."), "no trouble once ready"
    assert cluster.condition("Degraded")["status"] == "False"

    cluster.update_spec(model={"version": "2", "storageUri": "s3://models/iris/2/model.pt", "format": "TorchScript"})
    cluster.converge()
    canary = next(n for n in cluster.deployments() if n != first)
    load_error = "Cannot load model iris: refused: model.pkl needs pickle; save it with torch.jit.save"
    cluster.pods = [pod_of(canary, 0, crashing("server", 11, load_error))]
    cluster.converge()
    (rejected,) = cluster.md["status"]["rollout"]["rejectedRevisions"]
    assert rejected["reason"] == "CrashLoop"
    assert rejected["message"] == (
        f"Pods of revision {rejected['revision']} are crash-looping: "
        f"container server of pod {canary}-0 exited with code 11: {load_error}"
    )
    assert load_error in cluster.condition("Degraded")["message"]

    # The stable loses a pod that no node has room for.
    cluster.pods = [
        pod_of(first, 1, {"conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                           "message": "0/3 nodes are available: 3 Insufficient memory."}]},
               node=None),
    ]  # fmt: skip
    cluster.update_spec(model={"version": "1", "storageUri": "s3://models/iris/1/model.pt", "format": "TorchScript"})
    cluster.converge()
    deployment = cluster.deployments()[first]
    deployment["status"].update(readyReplicas=1, availableReplicas=1)
    cluster.step()
    assert cluster.md["status"]["phase"] == "Degraded"
    assert cluster.condition("Degraded")["message"] == (
        f"Revision {first.rsplit('-', 1)[-1]} has 1/2 ready replicas: "
        "1 pod cannot be scheduled: 0/3 nodes are available: 3 Insufficient memory."
    )


def test_a_first_deploy_past_its_deadline_is_degraded_until_its_pods_are_ready() -> None:
    cluster = FakeCluster(model_deployment())
    cluster.converge()
    (first,) = cluster.deployments()
    cluster.make_ready(first, ready=False, deadline=True)
    cluster.converge()
    degraded = cluster.condition("Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "ProgressDeadlineExceeded")
    assert cluster.condition("Ready")["status"] == "False"
    assert list(cluster.deployments()) == [first], "nothing to roll back to: the revision stays"
    cluster.make_ready(first)
    cluster.converge()
    assert cluster.condition("Degraded")["status"] == "False" and cluster.md["status"]["phase"] == "Ready"


@pytest.mark.parametrize(
    ("status", "available"),
    [
        ({}, False),
        (
            {"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2, "readyReplicas": 2, "availableReplicas": 2},
            True,
        ),
        (
            {"observedGeneration": 0, "replicas": 2, "updatedReplicas": 2, "readyReplicas": 2, "availableReplicas": 2},
            False,
        ),
        (
            {"observedGeneration": 1, "replicas": 2, "updatedReplicas": 1, "readyReplicas": 2, "availableReplicas": 2},
            False,
        ),
        (
            {"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2, "readyReplicas": 1, "availableReplicas": 1},
            False,
        ),
    ],
)
def test_assess_deployment(status: dict[str, Any], available: bool) -> None:
    deployment = {"metadata": {"generation": 1}, "spec": {"replicas": 2}, "status": status}
    assert assess_deployment(deployment).available is available


versions = st.sampled_from(["1", "2", "3"])
actions = st.lists(
    st.one_of(
        st.tuples(st.just("version"), versions),
        st.tuples(st.just("replicas"), st.integers(min_value=1, max_value=4)),
        st.tuples(st.just("invalid"), st.just("")),
        st.tuples(st.just("ready"), st.booleans()),
        st.tuples(st.just("tick"), st.just("")),
    ),
    max_size=12,
)


SHADOW_ROLLOUT = {
    "strategy": "Canary",
    "canary": {
        "steps": [{"setMirror": 50}, {"pause": {"duration": "10s"}}, {"setWeight": 50}, {"pause": {"duration": "10s"}}],
        "trafficRouting": {"type": "GatewayAPI", "gatewayAPI": {"parentRefs": [{"name": "gw"}]}},
    },
}


@settings(max_examples=60, deadline=None)
@example([("ready", True), ("version", "2"), ("ready", True), ("replicas", 4), ("ready", True)], SHADOW_ROLLOUT)
@given(actions, st.sampled_from([None, SHADOW_ROLLOUT]))
def test_properties_over_random_histories(history: list[tuple[str, Any]], rollout: dict[str, Any] | None) -> None:
    cluster = FakeCluster(model_deployment(**({"rollout": rollout} if rollout else {})))
    last_good_spec = copy.deepcopy(cluster.md["spec"])
    for action, value in history:
        if action == "version":
            last_good_spec = {
                **last_good_spec,
                "model": {**last_good_spec["model"], "version": value, "storageUri": f"s3://models/iris/{value}/m.pt"},
            }
            cluster.md["spec"] = copy.deepcopy(last_good_spec)
            cluster.md["metadata"]["generation"] += 1
        elif action == "replicas":
            last_good_spec = {**last_good_spec, "replicas": value}
            cluster.md["spec"] = copy.deepcopy(last_good_spec)
            cluster.md["metadata"]["generation"] += 1
        elif action == "invalid":
            cluster.update_spec(replicas=-1)
        elif action == "ready":
            cluster.make_ready(ready=value)
        cluster.now += timedelta(seconds=5)

        before = {name: dep.get("status", {}).get("readyReplicas", 0) for name, dep in cluster.deployments().items()}
        if cluster.md["spec"].get("replicas") == -1:
            plan = cluster.step()
            assert plan.apply == [] and plan.delete == [], "an invalid spec never changes children"
            continue
        cluster.converge()
        # Never remove the last serving revision's pods before a successor is ready.
        if any(r > 0 for r in before.values()):
            assert any(
                d["spec"].get("replicas", 1) > 0 and d.get("status", {}).get("readyReplicas", 0) > 0
                for d in cluster.deployments().values()
            ), "some ready revision keeps its pods"
        # Once converged, another look writes nothing.
        assert cluster.step().writes == 0
        # A mirror copies requests only to a revision without live traffic, through a route that says so.
        status = cluster.md.get("status") or {}
        if status.get("mirrorWeight"):
            event("a mirror was checked")
            route = cluster.objects[("HTTPRoute", "iris")]
            (weighted,) = [r for r in route["spec"]["rules"] if "filters" in r]
            target = weighted["filters"][0]["requestMirror"]["backendRef"]["name"]
            assert {b["name"]: b["weight"] for b in weighted["backendRefs"]}[target] == 0
            assert target == f"iris-{status['canaryRevision']}" and status["canaryWeight"] == 0


def test_a_serving_revision_is_not_removed_when_the_spec_moves_on_mid_rollout() -> None:
    """v1 never became ready, v3 took over and is ready, then v2 arrives: v3 keeps serving until v2 is ready."""
    cluster = FakeCluster(model_deployment())
    cluster.converge()

    def set_version(version: str) -> None:
        model = {"version": version, "storageUri": f"s3://models/iris/{version}/m.pt", "format": "TorchScript"}
        cluster.update_spec(model=model)

    set_version("3")
    cluster.converge()
    v3 = next(n for n in cluster.deployments() if cluster.deployments()[n]["spec"].get("replicas"))
    cluster.make_ready(v3)
    set_version("2")
    cluster.converge()
    assert cluster.deployments()[v3]["spec"]["replicas"] == 2, "the only serving revision keeps its pods"
    assert cluster.md["status"]["stableRevision"] == v3.split("-")[-1]
    assert ("Normal", "RolloutReplaced") in cluster.events
    v2 = next(n for n in cluster.deployments() if n != v3)
    cluster.make_ready(v2)
    cluster.converge()
    assert list(cluster.deployments()) == [v2]


# --- the GPU pre-flight's question to the cluster ---------------------------------------------------------------

GPU_RUNTIME = {
    "gpu": {"count": 2},
    "nodeSelector": {"pool": "l4"},
    "tolerations": [{"key": "team", "operator": "Exists"}],
}
V2 = {"version": "2", "storageUri": "s3://models/iris/2/model.pt", "format": "TorchScript"}


def test_gpu_query_is_never_asked_with_the_pre_flight_off() -> None:
    cluster = FakeCluster(model_deployment(runtime=GPU_RUNTIME))
    cluster.converge()
    cluster.make_ready()
    cluster.converge()
    cluster.update_spec(model=V2)
    assert gpu_query(cluster.md, CONFIG) is not None, "a rollout of a GPU model starts"
    assert gpu_query(cluster.md, replace(CONFIG, gpu_preflight=False)) is None


def test_gpu_query_is_asked_once_per_rollout_of_a_gpu_model() -> None:
    cluster = FakeCluster(model_deployment(runtime=GPU_RUNTIME))
    assert gpu_query(cluster.md, CONFIG) is None, "nothing runs yet: no rollout"
    cluster.converge()
    cluster.make_ready()
    cluster.converge()
    stable = cluster.md["status"]["stableRevision"]
    assert gpu_query(cluster.md, CONFIG) is None, "steady state: no question"

    cluster.update_spec(model=V2)
    query = gpu_query(cluster.md, CONFIG)
    assert query is not None
    assert (query.namespace, query.name, query.resource_name, query.gpus_per_pod) == (
        "default",
        "iris",
        "nvidia.com/gpu",
        2,
    )
    assert query.node_selector == {"pool": "l4"} and query.keep_revisions == frozenset({stable})
    # The pods' tolerations: the user's and the one gpu.count adds.
    assert {t.get("key") for t in query.tolerations} == {"team", "nvidia.com/gpu"}

    # The planner records the answer; after that the cluster is not asked again for this rollout.
    plan = plan_reconcile(cluster.md, replace(cluster.observed(), gpus_free=0), CONFIG, cluster.now)
    assert [e.reason for e in plan.events].count("InsufficientGPUs") == 1
    assert plan.status is not None and plan.status["rollout"]["gpuPreflight"]["result"] == "Insufficient"
    cluster.md["status"] = plan.status
    assert gpu_query(cluster.md, CONFIG) is None

    # A result that could not be read yet (Unknown) keeps the question open.
    cluster.md["status"]["rollout"]["gpuPreflight"]["result"] = "Unknown"
    assert gpu_query(cluster.md, CONFIG) is not None


def test_gpu_query_for_gpus_in_resources_and_never_for_cpu_models() -> None:
    cpu = FakeCluster(model_deployment())
    cpu.converge()
    cpu.make_ready()
    cpu.converge()
    cpu.update_spec(model=V2)
    assert gpu_query(cpu.md, CONFIG) is None

    raw = FakeCluster(model_deployment(runtime={"resources": {"limits": {"nvidia.com/gpu": 1}}}))
    raw.converge()
    raw.make_ready()
    raw.converge()
    raw.update_spec(model=V2)
    query = gpu_query(raw.md, CONFIG)
    assert query is not None and query.gpus_per_pod == 1

    broken = copy.deepcopy(raw.md)
    broken["spec"]["replicas"] = -1
    assert gpu_query(broken, CONFIG) is None, "an invalid spec asks nothing"


def test_a_rollback_keeps_the_canary_behind_the_service_until_the_stable_is_back() -> None:
    """Replica-ratio routing: the Service keeps selecting both revisions while the stable's re-added pod starts,
    and the Progressing condition says the rollback is under way."""
    rollout = {"strategy": "Canary", "canary": {"steps": [{"setWeight": 25}, {"pause": {}}]}}
    cluster = FakeCluster(model_deployment(replicas=4, rollout=rollout))
    cluster.healthy.add("*")
    cluster.converge()
    (stable_name,) = cluster.deployments()
    cluster.update_spec(model={"version": "2", "storageUri": "s3://models/iris/2/model.pt", "format": "TorchScript"})
    cluster.converge()
    canary_name = next(n for n in cluster.deployments() if n != stable_name)
    assert {n: d["spec"]["replicas"] for n, d in cluster.deployments().items()} == {stable_name: 3, canary_name: 1}

    cluster.update_spec(rollout={**rollout, "abort": True})
    cluster.step()  # the stable scales back to 4; its new pod is not ready yet (no simulate)
    assert cluster.md["status"]["rollout"]["phase"] == "RollingBack"
    assert {n: d["spec"]["replicas"] for n, d in cluster.deployments().items()} == {stable_name: 4, canary_name: 1}
    cluster.step()
    selector = cluster.objects[("Service", "iris")]["spec"]["selector"]
    assert "modeldeploy.io/revision" not in selector, "both revisions stay behind the Service"
    progressing = cluster.condition("Progressing")
    assert (progressing["status"], progressing["reason"]) == ("True", "RollingBack")
    assert "3/4" in progressing["message"]
    assert cluster.condition("Degraded")["reason"] == "Aborted"

    cluster.simulate()  # the stable's fourth pod is ready: traffic moves, then the canary goes
    cluster.step()
    selector = cluster.objects[("Service", "iris")]["spec"]["selector"]
    assert selector["modeldeploy.io/revision"] == stable_name.split("-")[-1]
    assert canary_name in cluster.deployments()
    cluster.converge()
    assert canary_name not in cluster.deployments() or cluster.deployments()[canary_name]["spec"]["replicas"] == 0
    assert cluster.md["status"]["rollout"]["phase"] == "RolledBack"
    assert cluster.condition("Progressing")["reason"] == "RolledBack"


# --- a lost status: the stable marker on the stable revision's Deployment ----------------------------------------

GATED_ANALYSIS = {"maxErrorRatio": 0.01, "count": 1, "failureLimit": 0, "interval": "5s", "minRequests": 1}


def marked(cluster: FakeCluster) -> dict[str, bool]:
    """Which Deployments carry the stable marker."""
    return {
        name: (d["metadata"].get("annotations") or {}).get(STABLE_ANNOTATION) == "true"
        for name, d in cluster.deployments().items()
    }


def pass_first_deploy_gate(cluster: FakeCluster) -> None:
    """Reconcile a gated first deploy until its analysis asked for a measurement, answer it with a good one."""
    for _ in range(20):
        cluster.simulate()
        plan = cluster.step()
        if (cluster.md.get("status") or {}).get("stableRevision"):
            break
        request = plan.analysis
        if request is not None:
            good = Sample(requests=100, errors=0, p99_seconds=0.05, pods=2)
            cluster.measurement = Measurement(request.run_id, request.seq, cluster.now, good, attempt=request.attempt)
        elif plan.requeue_after is not None:
            cluster.now += timedelta(seconds=plan.requeue_after)
    cluster.measurement = None
    assert ("Normal", "FirstDeployPassed") in cluster.events
    cluster.converge()


def test_the_stable_marker_is_on_the_stable_deployment_and_never_on_its_pods() -> None:
    rollout = {
        "strategy": "Canary",
        "canary": {"steps": [{"setWeight": 50}]},
        "keepPreviousWarm": {"replicas": 1, "seconds": 300},
    }
    cluster = FakeCluster(model_deployment(replicas=2, rollout=rollout))
    cluster.healthy.add("*")
    cluster.converge()
    (v1,) = cluster.deployments()
    assert marked(cluster) == {v1: True}
    template = copy.deepcopy(cluster.deployments()[v1]["spec"]["template"])
    assert STABLE_ANNOTATION not in template["metadata"]["annotations"], "a marker on the pods would restart them"
    cluster.update_spec(model=V2)
    cluster.converge()
    v2 = next(n for n in cluster.deployments() if n != v1)
    assert cluster.md["status"]["stableRevision"] == v2.split("-")[-1]
    # The marker moved with the promotion; the warm previous revision lost it, its pods are untouched.
    assert marked(cluster) == {v1: False, v2: True}
    assert cluster.deployments()[v1]["spec"]["template"] == template
    assert cluster.deployments()[v1]["spec"]["replicas"] == 1
    assert cluster.step().writes == 0


def test_lost_status_after_a_passed_first_deploy_gate_keeps_serving() -> None:
    """The first deploy passed its first-deploy analysis and serves; then the status is lost (a restore without
    status, a status cleared by hand). Nothing in the cluster changes: the Service keeps selecting the revision,
    no preview Service comes back, no new analysis; the status is rebuilt with the revision as the stable."""
    cluster = FakeCluster(model_deployment(rollout={"firstDeployAnalysis": True, "analysis": GATED_ANALYSIS}))
    cluster.healthy.add("*")
    pass_first_deploy_gate(cluster)
    (name,) = cluster.deployments()
    revision = name.split("-")[-1]
    assert marked(cluster) == {name: True}
    assert cluster.objects[("Service", "iris")]["spec"]["selector"]["modeldeploy.io/revision"] == revision
    assert ("Service", "iris-preview") not in cluster.objects
    del cluster.md["status"]
    cluster.events.clear()
    plan = cluster.step()
    assert plan.apply == [] and plan.delete == [], "nothing the revision serves with is touched"
    assert plan.analysis is None and plan.status is not None
    assert plan.status["stableRevision"] == revision and plan.status["rollout"]["stableRevision"] == revision
    assert plan.status["phase"] == "Ready" and cluster.condition("Ready")["status"] == "True"
    assert ("Warning", "StableAdopted") in cluster.events and ("Normal", "FirstDeploy") not in cluster.events
    assert cluster.step().writes == 0


def test_lost_status_during_the_first_deploy_gate_stays_behind_the_preview() -> None:
    """The converse: the analysis has not passed yet (no marker), so the revision stays behind the preview."""
    cluster = FakeCluster(model_deployment(rollout={"firstDeployAnalysis": True, "analysis": GATED_ANALYSIS}))
    cluster.healthy.add("*")
    cluster.converge()
    (name,) = cluster.deployments()
    assert cluster.md["status"]["rollout"]["phase"] == "Analyzing" and marked(cluster) == {name: False}
    del cluster.md["status"]
    cluster.converge()
    assert cluster.objects[("Service", "iris")]["spec"]["selector"]["modeldeploy.io/revision"] == "none"
    assert ("Service", "iris-preview") in cluster.objects
    assert ("Warning", "StableAdopted") not in cluster.events
    assert not cluster.md["status"]["stableRevision"]


def autoscaled_at_6(rollout: dict[str, Any], min_replicas: int) -> tuple[FakeCluster, str]:
    """A converged autoscaled ModelDeployment (maxReplicas 10) that its HPA has scaled to 6."""
    autoscaling = {"minReplicas": min_replicas, "maxReplicas": 10, "targetCPUUtilizationPercentage": 70}
    md = model_deployment(autoscaling=autoscaling, rollout=rollout)
    del md["spec"]["replicas"]
    cluster = FakeCluster(md)
    cluster.healthy.add("*")
    cluster.converge()
    cluster.scale(6)
    cluster.converge()
    (v1,) = cluster.deployments()
    assert cluster.deployments()[v1]["spec"]["replicas"] == 6
    return cluster, v1


def test_lost_status_of_an_autoscaled_rollout_keeps_the_autoscalers_replicas() -> None:
    """With spec.autoscaling the pods for 100% are the HPA's choice in spec.replicas: a lost status changes no
    count mid-rollout."""
    gateway = {"type": "GatewayAPI", "gatewayAPI": {"parentRefs": [{"name": "gw"}]}}
    rollout = {"strategy": "Canary", "canary": {"steps": [{"setWeight": 50}, {"pause": {}}], "trafficRouting": gateway}}
    cluster, v1 = autoscaled_at_6(rollout, min_replicas=2)
    cluster.update_spec(model=V2)
    cluster.converge()
    v2 = next(n for n in cluster.deployments() if n != v1)
    replicas = {n: d["spec"]["replicas"] for n, d in cluster.deployments().items()}
    assert replicas == {v1: 6, v2: 3} and cluster.md["status"]["desiredReplicas"] == 6
    del cluster.md["status"]
    cluster.converge()
    assert cluster.md["status"]["stableRevision"] == v1.split("-")[-1]
    assert {n: d["spec"]["replicas"] for n, d in cluster.deployments().items()} == replicas
    assert cluster.md["status"]["desiredReplicas"] == 6


def replicas_of(cluster: FakeCluster) -> dict[str, int]:
    return {n: d["spec"].get("replicas", 1) for n, d in cluster.deployments().items()}


@pytest.mark.parametrize("lose_status", [False, True], ids=["status-kept", "status-lost"])
def test_the_autoscaler_keeps_scaling_a_replicas_routed_canary(lose_status: bool) -> None:
    """Replica-ratio routing realises the weights with pods: at 50% the stable runs N - canary pods. With
    spec.autoscaling, N is the HPA's choice, which it keeps making mid-rollout (it scales the ModelDeployment, not
    a revision): the counts the rollout gives the revisions follow it, pass after pass, across restarts and a lost
    status, and never feed back into N."""
    rollout = {"strategy": "Canary", "canary": {"steps": [{"setWeight": 50}, {"pause": {}}]}}
    cluster, v1 = autoscaled_at_6(rollout, min_replicas=1)
    cluster.simulate()
    cluster.update_spec(model=V2)
    cluster.step()
    v2 = next(n for n in cluster.deployments() if n != v1)
    assert replicas_of(cluster) == {v1: 6, v2: 3}, "the canary's pods come first, the stable keeps its 6"
    hpa = cluster.objects[("HorizontalPodAutoscaler", "iris")]["spec"]
    assert hpa["scaleTargetRef"] == MD_SCALE_TARGET and (hpa["minReplicas"], hpa["maxReplicas"]) == (1, 10)
    expected = {v1: 3, v2: 3}
    for i in range(10):  # the canary's pods are ready: 50% by pods, 3 + 3; and so it stays until the HPA acts
        if lose_status:
            del cluster.md["status"]
        if i == 5:
            cluster.scale(10)  # a traffic peak mid-rollout: the HPA scales the model up, both revisions grow
            expected = {v1: 5, v2: 5}
        cluster.simulate()
        cluster.step()
        if i == 5 and lose_status:
            # With the status lost in the same pass, the stable first takes the whole new total, until the
            # rollout has re-adopted its canary at its step; never fewer pods than the split.
            assert replicas_of(cluster) in (expected, {v1: 10, v2: 5}), replicas_of(cluster)
            continue
        assert replicas_of(cluster) == expected, (i, replicas_of(cluster))
        assert cluster.md["status"]["desiredReplicas"] == sum(expected.values())
        assert cluster.md["status"]["rollout"]["phase"] == "Paused"
        assert cluster.objects[("HorizontalPodAutoscaler", "iris")]["spec"] == hpa, "the same HPA throughout"
    cluster.md["metadata"]["annotations"] = {"modeldeploy.io/promote": "now"}
    cluster.step()
    assert replicas_of(cluster) == {v1: 5, v2: 10}, "the promotion scales the canary to the whole total"
    cluster.converge()
    assert cluster.md["status"]["stableRevision"] == v2.split("-")[-1]
    assert replicas_of(cluster) == {v2: 10}
    assert cluster.objects[("HorizontalPodAutoscaler", "iris")]["spec"] == hpa
    assert "modeldeploy.io/total-replicas" not in cluster.deployments()[v2]["metadata"]["annotations"]


@pytest.mark.parametrize(
    ("annotation", "replicas", "total"),
    [
        (None, 6, 6),  # the count running now (a fixed count before, or an older operator's HPA's choice)
        ("6", 3, 6),  # an older operator mid-rollout: the total it worked with, kept beside the stable's count
        ("12", 3, 10),  # within maxReplicas
        ("1", 1, 2),  # and minReplicas
        (None, None, 2),  # no count
        ("six", 3, 3),  # a damaged annotation: the count
        ("-6", 3, 3),
        ("\u0666", 3, 3),  # digits, but not ASCII ones
    ],
)
def test_the_initial_scale_is_the_count_running_now(annotation: str | None, replicas: int | None, total: int) -> None:
    autoscaling = AutoscalingSpec(min_replicas=2, max_replicas=10)
    deployment: dict[str, Any] = {"metadata": {"annotations": {}}, "spec": {}}
    if annotation is not None:
        deployment["metadata"]["annotations"]["modeldeploy.io/total-replicas"] = annotation
    if replicas is not None:
        deployment["spec"]["replicas"] = replicas
    assert initial_scale(autoscaling, deployment) == total
    assert initial_scale(autoscaling, None) == 2


def test_turning_autoscaling_on_keeps_the_pods_running() -> None:
    """Autoscaling on, spec.replicas removed: the first pass writes the count running now (within the bounds)
    through the scale subresource, so no pod starts or stops until the HPA decides."""
    cluster = FakeCluster(model_deployment(replicas=5))
    cluster.healthy.add("*")
    cluster.converge()
    (v1,) = cluster.deployments()
    del cluster.md["spec"]["replicas"]
    cluster.update_spec(autoscaling={"minReplicas": 3, "maxReplicas": 10, "targetCPUUtilizationPercentage": 70})
    plan = cluster.step()
    assert plan.scale == 5 and replicas_of(cluster) == {v1: 5}
    cluster.converge()
    assert cluster.md["spec"]["replicas"] == 5 and replicas_of(cluster) == {v1: 5}
    assert cluster.events.count(("Normal", "ReplicasInitialized")) == 1


@pytest.mark.parametrize("mid_rollout", [False, True], ids=["steady", "mid-rollout"])
def test_an_upgrade_from_an_hpa_on_the_deployment_keeps_its_count(mid_rollout: bool) -> None:
    """An older operator pointed the HPA at the stable's Deployment and left spec.replicas absent; mid-rollout it
    kept the HPA's total in an annotation beside the stable's share. The first pass of this operator writes that
    total to spec.replicas, points the HPA at the ModelDeployment, and changes no count."""
    autoscaling = {"minReplicas": 2, "maxReplicas": 10, "targetCPUUtilizationPercentage": 70}
    rollout = {"strategy": "Canary", "canary": {"steps": [{"setWeight": 50}, {"pause": {}}]}}
    cluster, v1 = autoscaled_at_6(rollout, min_replicas=2)
    if mid_rollout:
        cluster.update_spec(model=V2)
        cluster.converge()
    before = replicas_of(cluster)
    assert before == ({v1: 3, next(n for n in before if n != v1): 3} if mid_rollout else {v1: 6})
    # What the older operator left: no spec.replicas, the HPA on the Deployment, the total beside the stable's count.
    del cluster.md["spec"]["replicas"]
    cluster.md["spec"]["autoscaling"] = autoscaling
    hpa = cluster.objects[("HorizontalPodAutoscaler", "iris")]
    hpa["spec"]["scaleTargetRef"] = {"apiVersion": "apps/v1", "kind": "Deployment", "name": v1}
    if mid_rollout:
        cluster.deployments()[v1]["metadata"]["annotations"]["modeldeploy.io/total-replicas"] = "6"
    plan = cluster.step()
    assert plan.scale == 6
    assert cluster.objects[("HorizontalPodAutoscaler", "iris")]["spec"]["scaleTargetRef"] == MD_SCALE_TARGET
    assert replicas_of(cluster) == before
    cluster.converge()
    assert replicas_of(cluster) == before and cluster.md["spec"]["replicas"] == 6


@pytest.mark.parametrize(
    ("weights", "selector"),
    [
        ({}, "modeldeploy.io/model-deployment=iris"),
        ({"a1": 100}, "modeldeploy.io/model-deployment=iris,modeldeploy.io/revision=a1"),
        ({"a1": 100, "b2": 0}, "modeldeploy.io/model-deployment=iris,modeldeploy.io/revision=a1"),
        ({"b2": 10, "a1": 90}, "modeldeploy.io/model-deployment=iris,modeldeploy.io/revision in (a1,b2)"),
    ],
)
def test_the_scale_selector_names_the_pods_that_take_traffic(weights: dict[str, int], selector: str) -> None:
    assert serving_selector("iris", weights) == selector


def test_a_blue_green_preview_is_left_out_of_the_autoscalers_pods() -> None:
    """The HPA averages over status.selector's pods: an idle preview would halve a busy model's average."""
    rollout = {"strategy": "BlueGreen", "blueGreen": {}}
    cluster, v1 = autoscaled_at_6(rollout, min_replicas=2)
    cluster.update_spec(model=V2)
    cluster.converge()
    v2 = next(n for n in cluster.deployments() if n != v1)
    assert replicas_of(cluster) == {v1: 6, v2: 6}
    stable = v1.removeprefix("iris-")
    assert cluster.md["status"]["selector"] == f"modeldeploy.io/model-deployment=iris,modeldeploy.io/revision={stable}"


def test_a_refused_child_write_marks_the_status_degraded_and_keeps_the_rest() -> None:
    obj: dict[str, Any] = {"metadata": {"name": "iris", "namespace": "ml", "generation": 3}}
    first = refused_status(obj, "The API server refused to apply Deployment ml/iris-abc (422 Invalid: no)", T0)
    assert first is not None and first["observedGeneration"] == 3
    [degraded] = first["conditions"]
    assert (degraded["type"], degraded["status"], degraded["reason"]) == ("Degraded", "True", "WriteRejected")
    assert degraded["lastTransitionTime"] == "2026-03-01T12:00:00Z" and degraded["observedGeneration"] == 3
    # Written once: the same refusal again changes nothing.
    obj["status"] = first
    assert refused_status(obj, degraded["message"], T0 + timedelta(minutes=1)) is None
    # Another refusal rewrites the message, not the transition time; the other conditions and the rollout stay.
    ready = {"type": "Ready", "status": "True", "reason": "Available", "message": "2/2",
             "observedGeneration": 2, "lastTransitionTime": "2026-02-01T00:00:00Z"}  # fmt: skip
    obj["status"] = {**first, "conditions": [ready, degraded], "rollout": {"phase": "Progressing"}}
    later = refused_status(obj, "The API server refused to delete Service ml/x (403 Forbidden: rbac)", T0)
    assert later is not None and set(later) == {"observedGeneration", "conditions"}
    assert [c["type"] for c in later["conditions"]] == ["Degraded", "Ready"] and later["conditions"][1] == ready
    assert later["conditions"][0]["message"].endswith("(403 Forbidden: rbac)")
    assert later["conditions"][0]["lastTransitionTime"] == "2026-03-01T12:00:00Z"
