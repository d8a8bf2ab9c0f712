"""The controller keeps a measurement taken for the analysis until the state machine records it or its run is
gone, even across reconciles that do not run the rollout (an invalid spec meanwhile)."""

from __future__ import annotations

import asyncio
import base64
import copy
import json
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from reconcile_kit import OneObject

from modeldeploy.analysis.sample import Sample
from modeldeploy.analysis.sources import MetricSourceError, PodTarget, ScrapeSource
from modeldeploy.config import OperatorConfig
from modeldeploy.controller import Controller, ObjectKey
from modeldeploy.kube import ApiError, KubeClient
from modeldeploy.kube.resources import Resource
from modeldeploy.reconcile import Observed
from modeldeploy.rollout.plan import Measurement
from modeldeploy.sim.patching import merge_patch

KEY = ("ml", "iris")
RUN = "bbbbbbbbbb-step-0-1"
NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


def model_deployment(run_phase: str, measurements: int) -> dict[str, Any]:
    record = {"takenAt": "2026-01-01T11:59:30Z", "verdict": "Pass", "canary": {"requests": 50}}
    run = {
        "id": RUN,
        "revision": "bbbbbbbbbb",
        "gate": "step-0",
        "startedAt": "2026-01-01T11:59:00Z",
        "phase": run_phase,
        "measurements": [record] * measurements,
    }
    return {
        "apiVersion": "modeldeploy.io/v1alpha1", "kind": "ModelDeployment",
        "metadata": {"name": "iris", "namespace": "ml", "uid": "uid-1", "generation": 2},
        "spec": {
            "model": {"version": "2", "storageUri": "s3://models/iris/2/", "format": "TorchScript"},
            "replicas": 1,
            # Invalid: GatewayAPI routing without its gatewayAPI block, so the rollout does not run.
            "rollout": {"strategy": "Canary", "canary": {"steps": [{"analysis": {}}],
                                                         "trafficRouting": {"type": "GatewayAPI"}}},
        },
        "status": {"rollout": {"phase": "Analyzing", "stableRevision": "aaaaaaaaaa", "canaryRevision": "bbbbbbbbbb",
                               "analysisRuns": [run]}},
    }  # fmt: skip


class Api(KubeClient):
    """An API server that answers status patches with the patched object, accepts Events, and has no routes."""

    def __init__(self, md: dict[str, Any]) -> None:
        self.md = md
        self.field_manager = "modeldeploy"
        self.component = "modeldeploy"
        self.writes: list[str] = []

    async def patch_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> dict[str, Any]:
        self.writes.append(f"status {namespace}/{name}")
        return {**self.md, "status": dict(status)}

    async def post_event(
        self, involved: Mapping[str, Any], *, type_: str, reason: str, message: str, now: datetime
    ) -> None:
        self.writes.append(f"event {reason}")

    async def read_object(self, resource: Resource, namespace: str | None, name: str) -> dict[str, Any] | None:
        return None

    async def close(self) -> None:
        return None


async def reconcile_with_measurement(md: dict[str, Any]) -> tuple[bool, list[str]]:
    """Reconcile once with a measurement of ``RUN`` (seq 0) waiting; whether the controller still holds it."""
    kube = Api(md)
    controller = Controller(config=OperatorConfig(), kube=kube, clock=lambda: NOW, source=OneObject(md))
    controller._measurements[KEY] = Measurement(RUN, 0, NOW, Sample(requests=50, errors=0, pods=1))
    try:
        plan = await controller.reconcile(KEY)
        assert plan is not None and plan.analysis is None
        assert plan.status is not None and plan.status["phase"] == "Failed"  # InvalidSpec
        return KEY in controller._measurements, kube.writes
    finally:
        await controller.close()


async def test_a_measurement_survives_a_reconcile_that_did_not_run_the_rollout() -> None:
    kept, writes = await reconcile_with_measurement(model_deployment("Running", 0))
    assert kept, "the run still waits for this measurement; dropping it would only take it again"
    assert writes == ["status ml/iris", "event InvalidSpec"]


async def test_a_measurement_whose_run_is_over_or_recorded_is_dropped() -> None:
    assert not (await reconcile_with_measurement(model_deployment("Failed", 0)))[0]
    assert not (await reconcile_with_measurement(model_deployment("Running", 1)))[0]


# --- a metric source that never answers -------------------------------------------------------------------


class FailingSource:
    """A metric source whose backend is down for good (Prometheus unreachable)."""

    source_type = "Scrape"

    def __init__(self) -> None:
        self.calls = 0

    async def measure(self, revision: str, pods: Sequence[PodTarget]) -> Sample:
        self.calls += 1
        raise MetricSourceError(f"Prometheus query at http://prom:9090/api/v1/query failed: refused #{self.calls}")

    async def rebase(self, revision: str, pods: Sequence[PodTarget]) -> None:
        pass


class MiniCluster(KubeClient):
    """Stores what the operator applies; every Deployment has all its pods ready at once."""

    def __init__(self, md: dict[str, Any]) -> None:
        self.md = md
        self.field_manager = "modeldeploy"
        self.component = "modeldeploy"
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.events: list[tuple[str, str, str]] = []
        self.version = 1

    async def apply_object(self, manifest: Mapping[str, Any], *, field_manager: str | None = None) -> dict[str, Any]:
        obj = copy.deepcopy(dict(manifest))
        obj["metadata"].update(uid=f"uid-{obj['metadata']['name']}", generation=1)
        if obj["kind"] == "Deployment":
            n = obj["spec"].get("replicas", 1)
            obj["status"] = {"observedGeneration": 1, "replicas": n, "updatedReplicas": n, "readyReplicas": n,
                             "availableReplicas": n}  # fmt: skip
        self.objects[obj["kind"], obj["metadata"]["name"]] = obj
        return obj

    async def read_object(self, resource: Resource, namespace: str | None, name: str) -> dict[str, Any] | None:
        return self.objects.get((resource.kind, name))

    async def delete_object(
        self, resource: Resource, namespace: str | None, name: str, *, uid: str | None = None
    ) -> bool:
        return self.objects.pop((resource.kind, name), None) is not None

    async def patch_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> dict[str, Any]:
        self.md["status"] = merge_patch(self.md.get("status") or {}, dict(status))
        self.version += 1
        self.md["metadata"]["resourceVersion"] = str(self.version)
        return copy.deepcopy(self.md)

    async def post_event(
        self, involved: Mapping[str, Any], *, type_: str, reason: str, message: str, now: datetime
    ) -> None:
        self.events.append((type_, reason, message))

    async def close(self) -> None:
        return None

    # The controller's object source (its watch caches).

    def model_deployment(self, key: ObjectKey) -> Mapping[str, Any] | None:
        return self.md if key == KEY else None

    def model_deployments(self) -> Sequence[ObjectKey]:
        return [KEY]

    def children(self, key: ObjectKey) -> Observed:
        def of(kind: str) -> list[dict[str, Any]]:
            return [o for (k, _), o in self.objects.items() if k == kind]

        return Observed(deployments=of("Deployment"), services=of("Service"), revisions=of("ControllerRevision"),
                        network_policies=of("NetworkPolicy"))  # fmt: skip


def canary_deployment(version: str) -> dict[str, Any]:
    return {
        "apiVersion": "modeldeploy.io/v1alpha1", "kind": "ModelDeployment",
        "metadata": {"name": "iris", "namespace": "ml", "uid": "uid-1", "generation": 1, "resourceVersion": "1"},
        "spec": {
            "model": {"version": version, "storageUri": f"s3://models/iris/{version}/", "format": "TorchScript"},
            "replicas": 2,
            "rollout": {"strategy": "Canary", "canary": {"steps": [{"setWeight": 50}, {"analysis": {}}]},
                        "analysis": {"interval": "10s", "count": 2, "maxErrorRatio": 0.01}},
        },
    }  # fmt: skip


async def settle(controller: Controller) -> None:
    """Let the measurements a reconcile started finish (they run as the controller's tasks)."""
    for _ in range(20):
        await asyncio.sleep(0)
        if controller._tasks:
            await asyncio.gather(*list(controller._tasks))


async def run_rollout(
    controller: Controller, cluster: MiniCluster, spec: dict[str, Any], clock: dict[str, Any]
) -> None:
    """Deploy the first version, then roll out ``spec`` until the rollout stops moving (30 s a pass)."""
    for _ in range(3):
        await controller.reconcile(KEY)
    assert cluster.md["status"]["rollout"]["phase"] == "Completed"
    cluster.md["spec"] = spec
    cluster.md["metadata"]["generation"] = 2
    for _ in range(40):
        await controller.reconcile(KEY)
        await settle(controller)
        if cluster.md["status"]["rollout"]["phase"] not in ("Progressing", "Analyzing", "Promoting"):
            break
        clock["now"] += timedelta(seconds=30)


async def test_a_metric_source_that_always_fails_rolls_the_canary_back() -> None:
    """Prometheus down for good: the analysis fails after consecutiveErrorLimit (default 4) errors in a row, and
    the canary is rolled back with reason MeasurementErrors, instead of analysing forever."""
    clock = {"now": NOW}
    cluster = MiniCluster(canary_deployment("1"))
    controller = Controller(config=OperatorConfig(), kube=cluster, clock=lambda: clock["now"], source=cluster)
    failing = FailingSource()
    controller._sources[KEY] = failing
    try:
        await run_rollout(controller, cluster, canary_deployment("2")["spec"], clock)
        rollout = cluster.md["status"]["rollout"]
        assert rollout["phase"] in ("RollingBack", "RolledBack"), rollout["message"]
        (rejected,) = rollout["rejectedRevisions"]
        assert rejected["reason"] == "MeasurementErrors" and "refused #5" in rejected["message"]
        assert failing.calls == 5
        failed = [e for e in cluster.events if e[1] == "MeasurementFailed"]
        assert len(failed) == 5 and all(e[0] == "Warning" for e in failed)
        assert ("Warning", "RollingBack") in {(t, r) for t, r, _ in cluster.events}
    finally:
        await controller.close()


# --- golden requests through the controller ---------------------------------------------------------------------


class PodsCluster(MiniCluster):
    """MiniCluster whose Deployments have their pods, ready, in the watch cache (the analysis targets)."""

    def children(self, key: ObjectKey) -> Observed:
        observed = super().children(key)
        pods = []
        for (kind, name), obj in self.objects.items():
            if kind != "Deployment":
                continue
            labels = obj["spec"]["template"]["metadata"]["labels"]
            for i in range(obj["spec"].get("replicas", 1)):
                ready = [{"type": "Ready", "status": "True"}]
                pods.append({"metadata": {"name": f"{name}-{i}", "labels": labels},
                             "status": {"podIP": "127.0.0.1", "conditions": ready}})  # fmt: skip
        return replace(observed, pods=pods)


class QuietSource:
    """A Scrape-like source that sees no traffic and records when the controller rebases it."""

    source_type = "Scrape"

    def __init__(self) -> None:
        self.rebased: list[tuple[str, list[str]]] = []

    async def measure(self, revision: str, pods: Sequence[PodTarget]) -> Sample:
        return Sample(requests=0, pods=len(pods))

    async def rebase(self, revision: str, pods: Sequence[PodTarget]) -> None:
        self.rebased.append((revision, [p.name for p in pods]))


async def serve(app: web.Application) -> tuple[web.AppRunner, int]:
    """Serve ``app`` on a free local port."""
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]


async def roll_out(
    controller: Controller, cluster: PodsCluster, clock: dict[str, datetime], next_md: Mapping[str, Any]
) -> str:
    """Make the first revision stable, change the spec to ``next_md``'s and reconcile, 10 s apart, until the
    rollout ends or rolls back; the first stable revision."""
    for _ in range(3):
        await controller.reconcile(KEY)
    stable: str = cluster.md["status"]["rollout"]["stableRevision"]
    cluster.md["spec"] = next_md["spec"]
    cluster.md["metadata"]["generation"] = 2
    for _ in range(20):
        await controller.reconcile(KEY)
        await settle(controller)
        if cluster.md["status"]["rollout"]["phase"] in ("Completed", "RolledBack", "RollingBack"):
            break
        clock["now"] += timedelta(seconds=10)
    return stable


def golden_deployment(version: str) -> dict[str, Any]:
    case = {"name": "c", "inputs": [{"name": "input", "shape": [1, 2], "data": [0.2, 0.8]}],
            "outputs": [{"name": "output", "argmax": [1]}]}  # fmt: skip
    md = canary_deployment(version)
    md["spec"]["rollout"]["canary"]["steps"] = [{"analysis": {}}, {"setWeight": 50}]
    md["spec"]["rollout"]["analysis"] = {"interval": "10s", "count": 1, "failureLimit": 0,
                                         "goldenRequests": {"cases": [case]}}  # fmt: skip
    return md


@pytest.mark.parametrize("swapped", [False, True], ids=["right", "wrong"])
async def test_the_controller_sends_golden_requests_to_the_canary_and_rebases_its_source(swapped: bool) -> None:
    """The measurement the state machine asks for carries the canary pods' answers, and the source is told to
    leave the golden requests out of the traffic; right answers promote, wrong ones reject before any weight."""
    bodies: list[dict[str, Any]] = []

    async def infer(request: web.Request) -> web.Response:
        body = await request.json()
        bodies.append(body)
        data = body["inputs"][0]["data"]
        return web.json_response({"outputs": [{"name": "output", "shape": [1, 2],
                                               "data": data[::-1] if swapped else data}]})  # fmt: skip

    app = web.Application()
    app.router.add_post("/v2/models/iris/infer", infer)
    runner, port = await serve(app)
    clock = {"now": NOW}
    cluster = PodsCluster(golden_deployment("1"))
    controller = Controller(config=OperatorConfig(), kube=cluster, clock=lambda: clock["now"], source=cluster,
                            pod_address=lambda pod: ("127.0.0.1", port))  # fmt: skip
    source = QuietSource()
    controller._sources[KEY] = source
    try:
        stable = await roll_out(controller, cluster, clock, golden_deployment("2"))
        rollout = cluster.md["status"]["rollout"]
        (run,) = rollout["analysisRuns"]
        canary = run["revision"]
        assert canary != stable and run["gate"] == "step-0"
        assert run["measurements"][-1]["golden"]["checks"] == 1
        assert bodies and bodies[0]["id"] == "modeldeploy-golden-c"
        assert source.rebased == [(canary, [f"iris-{canary}-0"])]
        if swapped:
            assert rollout["phase"] in ("RollingBack", "RolledBack")
            (rejected,) = rollout["rejectedRevisions"]
            assert rejected["reason"] == "AnalysisFailed" and "argmax [0], expected [1]" in rejected["message"]
        else:
            assert rollout["phase"] == "Completed" and rollout["stableRevision"] == canary
    finally:
        await controller.close()
        await runner.cleanup()


async def test_a_restarted_operator_exports_the_status_it_finds_unchanged() -> None:
    """A freshly started operator whose first reconcile changes nothing still exports the object's rollout phase
    and Degraded state, from the status as it stands."""
    md = model_deployment("Running", 0)
    first = Controller(config=OperatorConfig(), kube=Api(md), clock=lambda: NOW, source=OneObject(md))
    try:
        plan = await first.reconcile(KEY)
        assert plan is not None and plan.status is not None
    finally:
        await first.close()
    md["status"] = plan.status  # what the API server now holds
    restarted = Controller(config=OperatorConfig(), kube=Api(md), clock=lambda: NOW, source=OneObject(md))
    try:
        again = await restarted.reconcile(KEY)
        assert again is not None and again.status is None, "nothing changed"
    finally:
        await restarted.close()
    registry = restarted.metrics.registry
    labels = {"namespace": "ml", "name": "iris"}
    assert registry.get_sample_value("modeldeploy_rollout_phase", {**labels, "phase": "Analyzing"}) == 1
    assert registry.get_sample_value("modeldeploy_degraded", labels) == 1  # InvalidSpec


# --- a stable or a canary with no ready pods ------------------------------------------------------------------------


class DownStableSource:
    """A Scrape-like source: the canary served clean traffic; the stable has no ready pod to scrape (3 a.m.)."""

    source_type = "Scrape"

    def __init__(self) -> None:
        self.stable = ""
        self.measured: list[str] = []

    async def measure(self, revision: str, pods: Sequence[PodTarget]) -> Sample:
        self.measured.append(revision)
        if revision == self.stable:
            raise MetricSourceError(f"Revision {revision} has no ready pods to scrape")
        return Sample(requests=100, errors=0, pods=1)

    async def rebase(self, revision: str, pods: Sequence[PodTarget]) -> None:
        pass


@pytest.mark.parametrize("relative", [False, True], ids=["absolute-only", "with-relative"])
async def test_a_stable_with_no_ready_pods_does_not_fail_the_canary_measurement(relative: bool) -> None:
    """Every stable pod unready, the SRE ships fix B: B's measurements must not fail for the stable. Without a
    relative criterion the stable is not measured; with one, a stable that cannot be measured is no stable
    sample (the relative criteria skipped, docs/rollouts.md), and B is promoted on its own numbers."""
    clock = {"now": NOW}
    cluster = MiniCluster(canary_deployment("1"))
    controller = Controller(config=OperatorConfig(), kube=cluster, clock=lambda: clock["now"], source=cluster)
    source = DownStableSource()
    controller._sources[KEY] = source
    spec = canary_deployment("2")["spec"]
    if relative:
        spec["rollout"]["analysis"]["maxErrorRatioIncrease"] = 0.01
    try:
        source.stable = "unknown yet"
        for _ in range(3):
            await controller.reconcile(KEY)
        source.stable = str(cluster.md["status"]["rollout"]["stableRevision"])
        await run_rollout(controller, cluster, spec, clock)
        rollout = cluster.md["status"]["rollout"]
        assert rollout["phase"] == "Completed" and rollout["stableRevision"] != source.stable, rollout["message"]
        assert not rollout.get("rejectedRevisions")
        assert (source.stable in source.measured) is relative
        assert not [e for e in cluster.events if e[1] == "MeasurementFailed"]
        if relative:
            last = rollout["analysisRuns"][-1]["measurements"][-1]
            assert "stable has no sample, relative criteria skipped" in last["message"]
    finally:
        await controller.close()


async def test_an_analysis_of_a_canary_with_no_pods_is_inconclusive_not_a_rollback() -> None:
    """``[setWeight: 0, analysis, setWeight: 50]`` without golden requests: the canary has no pod at weight 0, so
    it served no request. Its measurements are Inconclusive (fewer than minRequests) and the rollout pauses for a
    promote or an abort; it is never rolled back as MeasurementErrors for pods that were never asked for."""
    clock = {"now": NOW}
    cluster = MiniCluster(canary_deployment("1"))  # no pods in its watch cache: nothing to scrape
    controller = Controller(config=OperatorConfig(), kube=cluster, clock=lambda: clock["now"], source=cluster)
    spec = canary_deployment("2")["spec"]
    spec["rollout"]["canary"]["steps"] = [{"setWeight": 0}, {"analysis": {}}, {"setWeight": 50}]
    async with aiohttp.ClientSession() as session:
        controller._sources[KEY] = ScrapeSource(session)
        try:
            await run_rollout(controller, cluster, spec, clock)
            rollout = cluster.md["status"]["rollout"]
            assert rollout["phase"] == "Paused", rollout["message"]
            assert not rollout.get("rejectedRevisions")
            (run,) = rollout["analysisRuns"]
            assert run["phase"] == "Inconclusive" and run["inconclusive"] == 2
            assert not [e for e in cluster.events if e[1] == "MeasurementFailed"]
        finally:
            await controller.close()


async def test_a_canary_that_should_run_pods_and_has_none_ready_is_a_measurement_error() -> None:
    """At weight 50 the canary runs pods; none of them ready (a readiness probe that fails) is not "no traffic": its
    measurements fail, and the run's error limit rolls it back, as a canary that cannot be measured must be."""
    clock = {"now": NOW}
    cluster = MiniCluster(canary_deployment("1"))  # no pods in its watch cache: none ready
    controller = Controller(config=OperatorConfig(), kube=cluster, clock=lambda: clock["now"], source=cluster)
    spec = canary_deployment("2")["spec"]
    spec["rollout"]["canary"]["steps"] = [{"setWeight": 50}, {"analysis": {}}]
    async with aiohttp.ClientSession() as session:
        controller._sources[KEY] = ScrapeSource(session)
        try:
            await run_rollout(controller, cluster, spec, clock)
            failed = [e for e in cluster.events if e[1] == "MeasurementFailed"]
            assert failed and "no ready pods to scrape" in failed[0][2], cluster.events
            rollout = cluster.md["status"]["rollout"]
            assert rollout["phase"] != "Paused" and all(r["phase"] != "Inconclusive" for r in rollout["analysisRuns"])
        finally:
            await controller.close()


async def test_golden_requests_to_a_first_deploy_scaled_to_no_pods_are_skipped_not_a_rollback() -> None:
    """``spec.replicas: 0`` (a model parked at zero) behind ``firstDeployAnalysis`` with golden requests: the
    revision runs no pod to ask, so the golden requests are skipped and the measurements are Inconclusive (the gate
    waits for a promote or an abort); it is never rejected as MeasurementErrors ("no ready pods to send golden
    requests to") for pods that were never asked for."""
    clock = {"now": NOW}
    parked = golden_deployment("1")
    parked["spec"]["replicas"] = 0
    parked["spec"]["rollout"]["firstDeployAnalysis"] = True
    parked["spec"]["rollout"]["analysis"]["count"] = 2
    cluster = MiniCluster(parked)
    controller = Controller(config=OperatorConfig(), kube=cluster, clock=lambda: clock["now"], source=cluster)
    async with aiohttp.ClientSession() as session:
        controller._sources[KEY] = ScrapeSource(session)
        try:
            for _ in range(12):
                await controller.reconcile(KEY)
                await settle(controller)
                clock["now"] += timedelta(seconds=30)
            rollout = cluster.md["status"]["rollout"]
            assert not rollout.get("rejectedRevisions"), rollout["rejectedRevisions"]
            assert not [e for e in cluster.events if e[1] == "MeasurementFailed"], cluster.events
            (run,) = rollout["analysisRuns"]
            assert run["gate"] == "first-deploy" and run["phase"] == "Inconclusive", run
            assert rollout["phase"] == "Paused" and rollout["stableRevision"] == "", rollout["message"]
            assert "golden requests not sent" in run["measurements"][-1]["message"]
        finally:
            await controller.close()


# --- webhooks through the controller ---------------------------------------------------------------------------


def webhook_deployment(version: str, url: str) -> dict[str, Any]:
    md = canary_deployment(version)
    md["spec"]["rollout"]["canary"]["steps"] = [{"analysis": {}}, {"setWeight": 50}]
    md["spec"]["rollout"]["analysis"] = {"interval": "10s", "count": 1, "failureLimit": 0,
                                         "webhooks": [{"name": "evals", "url": url,
                                                       "metadata": {"suite": "smoke"}}]}  # fmt: skip
    return md


class SecretsCluster(PodsCluster):
    """PodsCluster that holds Secrets (``data`` by name), or answers 403 on every Secret (``secrets`` None: a chart
    installed without rbac.readSecrets), and records the Secrets read."""

    def __init__(self, md: dict[str, Any], secrets: dict[str, dict[str, str]] | None) -> None:
        super().__init__(md)
        self.secrets, self.secret_reads = secrets, []  # type: ignore[var-annotated]

    async def read_object(self, resource: Resource, namespace: str | None, name: str) -> dict[str, Any] | None:
        if resource.kind != "Secret":
            return await super().read_object(resource, namespace, name)
        self.secret_reads.append((namespace, name))
        if self.secrets is None:
            raise ApiError(403, "Forbidden", f'secrets "{name}" is forbidden: User "system:serviceaccount:'
                           'modeldeploy:modeldeploy" cannot get resource "secrets" in API group ""')  # fmt: skip
        data = self.secrets.get(name)
        return None if data is None else {"apiVersion": "v1", "kind": "Secret", "data": data}


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@pytest.mark.parametrize(
    ("secrets", "failure"),
    [
        ({"iris-tokens": {"old": b64("s3cret\n"), "z-next": b64("next")}}, None),
        (None, "the operator may not read it: grant it get on that Secret (chart value rbac.readSecrets.ml: "
               "[iris-tokens])"),
        ({}, "Secret ml/iris-tokens (spec.runtime.auth.secretRef) not found"),
        ({"iris-tokens": {"a": b64("rotated")}}, "refused the operator's token (HTTP 403)"),
        ({"iris-tokens": {}}, "Secret ml/iris-tokens (spec.runtime.auth.secretRef) gives golden requests no token: "
                              "it holds no keys"),
    ],
    ids=["granted", "forbidden", "missing", "not-accepted", "empty"],
)  # fmt: skip
async def test_golden_requests_to_a_server_with_caller_auth_carry_a_token_from_its_secret(
    secrets: dict[str, dict[str, str]] | None, failure: str | None
) -> None:
    """With runtime.auth the golden requests carry the Secret's first token (read at each measurement). A Secret the
    operator may not read, a missing one, or a token the pods refuse, is a measurement that could not be taken:
    MeasurementFailed saying why (and which grant is missing), then MeasurementErrors; never a wrong answer, and
    never the token in a status, Event or message."""
    tokens: list[str | None] = []

    async def infer(request: web.Request) -> web.Response:
        given = request.headers.get("Authorization")
        tokens.append(given)
        if given is None:
            return web.json_response({"error": "missing or malformed Authorization header"}, status=401)
        if given != "Bearer s3cret":
            return web.json_response({"error": "the bearer token is not valid for this server"}, status=403)
        data = (await request.json())["inputs"][0]["data"]
        return web.json_response({"outputs": [{"name": "output", "shape": [1, 2], "data": data}]})

    def deployment(version: str) -> dict[str, Any]:
        md = golden_deployment(version)
        md["spec"]["runtime"] = {"auth": {"secretRef": {"name": "iris-tokens"}}}
        return md

    app = web.Application()
    app.router.add_post("/v2/models/iris/infer", infer)
    runner, port = await serve(app)
    clock = {"now": NOW}
    cluster = SecretsCluster(deployment("1"), secrets)
    controller = Controller(config=OperatorConfig(), kube=cluster, clock=lambda: clock["now"], source=cluster,
                            pod_address=lambda pod: ("127.0.0.1", port))  # fmt: skip
    controller._sources[KEY] = QuietSource()
    try:
        await roll_out(controller, cluster, clock, deployment("2"))
        rollout = cluster.md["status"]["rollout"]
        assert cluster.secret_reads and set(cluster.secret_reads) == {("ml", "iris-tokens")}
        failed = [message for kind, reason, message in cluster.events if reason == "MeasurementFailed"]
        if failure is None:
            assert rollout["phase"] == "Completed", rollout["message"]
            assert rollout["analysisRuns"][0]["measurements"][-1]["golden"] == {"checks": 1, "mismatches": 0,
                                                                                 "pods": 1}  # fmt: skip
            assert tokens == ["Bearer s3cret"] and not failed
        else:
            # consecutiveErrorLimit (default 4) errors are tolerated; the fifth rolls the canary back.
            assert len(failed) == 5 and all(failure in message for message in failed), failed
            assert rollout["phase"] in ("RollingBack", "RolledBack"), rollout["message"]
            (rejected,) = rollout["rejectedRevisions"]
            assert rejected["reason"] == "MeasurementErrors" and failure in rejected["message"]
            runs = rollout.get("analysisRuns") or []
            assert not any(m.get("golden") for run in runs for m in run.get("measurements") or [])  # no answers judged
        seen = json.dumps([cluster.md, cluster.events, list(cluster.objects.values())])
        assert "s3cret" not in seen and b64("s3cret\n") not in seen and "rotated" not in seen
    finally:
        await controller.close()
        await runner.cleanup()


@pytest.mark.parametrize("status", [200, 412], ids=["yes", "no"])
async def test_the_controller_asks_the_webhooks_about_the_canary(status: int) -> None:
    """The webhook is POSTed the canary, its ready pod and the stable; a 2xx promotes, a 412 rejects the canary
    before it has any weight, with the webhook's answer in the rejection."""
    received: list[dict[str, Any]] = []

    async def check(request: web.Request) -> web.Response:
        received.append(await request.json())
        return web.Response(status=status, text="ok" if status == 200 else "accuracy 0.71 < 0.9")

    app = web.Application()
    app.router.add_post("/check", check)
    runner, port = await serve(app)
    url = f"http://127.0.0.1:{port}/check"
    clock = {"now": NOW}
    cluster = PodsCluster(webhook_deployment("1", url))
    controller = Controller(config=OperatorConfig(), kube=cluster, clock=lambda: clock["now"], source=cluster,
                            pod_address=lambda pod: ("10.0.0.9", 8080))  # fmt: skip
    controller._sources[KEY] = QuietSource()
    try:
        stable = await roll_out(controller, cluster, clock, webhook_deployment("2", url))
        rollout = cluster.md["status"]["rollout"]
        (run,) = rollout["analysisRuns"]
        canary = run["revision"]
        assert run["measurements"][-1]["webhooks"]["checks"] == 1
        (body,) = received
        assert body["revision"] == canary and body["stableRevision"] == stable and body["model"] == "iris"
        assert body["modelDeployment"] == {"namespace": KEY[0], "name": KEY[1]}
        assert body["pods"] == [{"name": f"iris-{canary}-0", "address": "10.0.0.9:8080"}]
        assert body["metadata"] == {"suite": "smoke"} and body["analysisRun"] == run["id"]
        if status == 200:
            assert rollout["phase"] == "Completed" and rollout["stableRevision"] == canary
        else:
            assert rollout["phase"] in ("RollingBack", "RolledBack")
            (rejected,) = rollout["rejectedRevisions"]
            assert rejected["reason"] == "AnalysisFailed"
            assert "webhook 'evals' answered HTTP 412: accuracy 0.71 < 0.9" in rejected["message"]
    finally:
        await controller.close()
        await runner.cleanup()


@pytest.mark.parametrize(
    ("secrets", "failure"),
    [
        ({"evals-token": {"header": b64("Bearer s3cret\n"), "team": b64("ml")}}, None),
        (None, "Webhook 'evals''s headers need Secret ml/evals-token (spec.rollout.analysis.webhooks[0].headers[1]), "
               "and the operator may not read it: grant it get on that Secret (chart value rbac.readSecrets.ml: "
               "[evals-token])"),
        ({}, "Secret ml/evals-token (spec.rollout.analysis.webhooks[0].headers[1]) not found"),
        ({"evals-token": {"other": b64("x")}}, "gives webhook 'evals' no header Authorization: it has no key 'header'"),
    ],
    ids=["granted", "forbidden", "missing", "no-key"],
)  # fmt: skip
async def test_webhook_headers_from_a_secret_are_read_at_each_measurement(
    secrets: dict[str, dict[str, str]] | None, failure: str | None
) -> None:
    """A header from a Secret key reaches the webhook with the typed ones; a Secret the operator may not read, a
    missing one or a missing key is a measurement that could not be taken, saying which (then MeasurementErrors),
    and the value never reaches a status, Event or message."""
    received: list[dict[str, str]] = []

    async def check(request: web.Request) -> web.Response:
        received.append(dict(request.headers))
        return web.Response(status=200 if request.headers.get("Authorization") == "Bearer s3cret" else 401)

    def deployment(version: str, url: str) -> dict[str, Any]:
        md = webhook_deployment(version, url)
        md["spec"]["rollout"]["analysis"]["webhooks"][0]["headers"] = [
            {"name": "X-Team", "value": "ml"},
            {"name": "Authorization", "valueFrom": {"secretKeyRef": {"name": "evals-token", "key": "header"}}},
            {"name": "X-Team-Token", "valueFrom": {"secretKeyRef": {"name": "evals-token", "key": "team"}}},
        ]
        return md

    app = web.Application()
    app.router.add_post("/check", check)
    runner, port = await serve(app)
    url = f"http://127.0.0.1:{port}/check"
    clock = {"now": NOW}
    cluster = SecretsCluster(deployment("1", url), secrets)
    controller = Controller(config=OperatorConfig(), kube=cluster, clock=lambda: clock["now"], source=cluster,
                            pod_address=lambda pod: ("10.0.0.9", 8080))  # fmt: skip
    controller._sources[KEY] = QuietSource()
    try:
        await roll_out(controller, cluster, clock, deployment("2", url))
        rollout = cluster.md["status"]["rollout"]
        assert set(cluster.secret_reads) == {("ml", "evals-token")}
        failed = [message for _, reason, message in cluster.events if reason == "MeasurementFailed"]
        # One read of the Secret per measurement, for both headers that take a key of it.
        assert len(cluster.secret_reads) == (1 if failure is None else len(failed))
        if failure is None:
            assert rollout["phase"] == "Completed", rollout["message"]
            (headers,) = received
            assert headers["Authorization"] == "Bearer s3cret" and headers["X-Team"] == "ml"
            assert headers["X-Team-Token"] == "ml"
            assert not failed
        else:
            assert not received  # never asked without its headers
            assert len(failed) == 5 and all(failure in message for message in failed), failed
            (rejected,) = rollout["rejectedRevisions"]
            assert rejected["reason"] == "MeasurementErrors" and failure in rejected["message"]
        seen = json.dumps([cluster.md, cluster.events, list(cluster.objects.values())])
        assert "s3cret" not in seen and b64("Bearer s3cret\n") not in seen
    finally:
        await controller.close()
        await runner.cleanup()
