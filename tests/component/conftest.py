"""Tier 2: the real operator (``kopf.testing.KopfRunner``) against the emulated API server.

The emulated cluster runs in a thread of its own with its own event loop, so the operator's thread (KopfRunner)
and the test's own code never wait on each other. ``ThreadedCluster`` offers a small synchronous API over it.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlparse

import pytest
import yaml
from kopf.testing import KopfRunner

from modeldeploy.demo import admission
from modeldeploy.handlers import REGISTRY
from modeldeploy.labels import VERSION_LABEL
from modeldeploy.schema import crd_manifest
from modeldeploy.sim import polling
from modeldeploy.sim.cluster import BackgroundCluster
from modeldeploy.sim.controllers import PodBehavior, PodState, Ready
from modeldeploy.sim.emulator import RequestRecord

T = TypeVar("T")
MD = "modeldeploy.io/v1alpha1/modeldeployments"
DEPLOYMENTS = "apps/v1/deployments"
SERVICES = "v1/services"
HPAS = "autoscaling/v2/horizontalpodautoscalers"
DISRUPTION_BUDGETS = "policy/v1/poddisruptionbudgets"
REVISIONS = "apps/v1/controllerrevisions"
EVENTS = "v1/events"
PODS = "v1/pods"
WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})


class ThreadedCluster(BackgroundCluster):
    """An emulated cluster served from a background thread, with a synchronous API for tests."""

    @property
    def kubeconfig(self) -> str:
        return str(self.cluster.kubeconfig_path)

    def get(self, resource: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        return self.call(self.cluster.emulator.get_object, resource, namespace, name)

    def list(self, resource: str, namespace: str | None = None, selector: str | None = None) -> list[dict[str, Any]]:
        return self.call(self.cluster.emulator.list_objects, resource, namespace, label_selector=selector)

    def create(self, resource: str, body: dict[str, Any]) -> dict[str, Any]:
        return self.call(self.cluster.emulator.create_object, resource, body, manager="kubectl")

    def patch(self, resource: str, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        return self.call(self.cluster.emulator.patch_object, resource, namespace, name, patch, manager="kubectl")

    def delete(self, resource: str, namespace: str, name: str) -> Any:
        return self.call(self.cluster.emulator.delete_object, resource, namespace, name)

    def requests(self) -> list[RequestRecord]:
        return self.call(lambda: list(self.cluster.requests))

    def writes(self, since: int = 0) -> list[RequestRecord]:
        """Write requests that reached the API server over HTTP: the operator's (kopf's and its own).

        The test and the simulated controllers change the store directly, so they never appear here.
        """
        return [r for r in self.requests()[since:] if r.verb in WRITE_VERBS]

    def wait_for(self, check: Callable[[], T], timeout: float = 20.0, message: str = "") -> T:
        return polling.wait_for(
            check, timeout, 0.05, lambda: AssertionError(f"not reached within {timeout}s: {message or check}")
        )


RULES = Path(__file__).resolve().parents[2] / "charts" / "modeldeploy" / "rbac" / "rules.yaml"
Permission = tuple[str, str, str]  # API group, resource[/subresource], verb


def chart_grants(*sections: str) -> set[Permission]:
    """What the chart's RBAC (charts/modeldeploy/rbac/rules.yaml) grants in ``sections`` (``peering`` is both of
    its own: cluster-wide and namespaced)."""
    rules = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    out: set[Permission] = set()
    for section in sections:
        found = rules[section]
        for rule in [*found.get("cluster", []), *found.get("namespaced", [])] if isinstance(found, dict) else found:
            out |= {(g, r, v) for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}
    return out


def permission(record: RequestRecord) -> Permission:
    resource = f"{record.resource}/{record.subresource}" if record.subresource else record.resource
    return record.group, resource, record.verb


OPERATOR_AGENTS = ("modeldeploy/", "kopf/")
"""The User-Agents of the operator's requests: its own API client's and kopf's."""


def chart_rbac() -> Callable[[RequestRecord], bool]:
    """An authorizer for the emulated API server: the operator's requests only as the chart's RBAC grants them (a
    call it does not grant is 403 Forbidden, as in a cluster installed from the chart); others, all."""
    grants = chart_grants("namespaced", "cluster", "gpuPreflight", "peering")

    def allows(record: RequestRecord) -> bool:
        return not record.user_agent.startswith(OPERATOR_AGENTS) or permission(record) in grants

    return allows


@contextlib.contextmanager
def emulated_cluster(**options: Any) -> Iterator[ThreadedCluster]:
    """A running emulated cluster with the ModelDeployment CRD and the API server's schema/CEL admission, which
    serves the operator only what the chart's RBAC grants it; ``options`` go to ``run_cluster`` (e.g.
    ``behavior_for``)."""
    threaded = ThreadedCluster(
        crds=[crd_manifest()],
        admission={MD: admission},
        ready_delay=0.1,
        tick=0.02,
        namespaces=("default", "kube-system", "ml"),
        **options,
    ).start()
    threaded.call(threaded.cluster.emulator.set_authorizer, chart_rbac())
    try:
        yield threaded
    finally:
        threaded.stop()


@pytest.fixture
def pod_behavior() -> dict[str, PodBehavior]:
    """Deployment name, or ``version:V`` for every revision of model version V, -> how its pods behave in
    ``emulated``; a test fills it in (others: ready after 0.1 s)."""
    return {}


@pytest.fixture
def emulated(pod_behavior: dict[str, PodBehavior]) -> Iterator[ThreadedCluster]:
    """A running emulated cluster (``emulated_cluster``) whose pods follow ``pod_behavior``."""

    def chosen(deployment: dict[str, Any]) -> PodBehavior | None:
        meta = deployment["metadata"]
        version = (meta.get("labels") or {}).get(VERSION_LABEL)
        return pod_behavior.get(meta["name"]) or pod_behavior.get(f"version:{version}")

    with emulated_cluster(behavior_for=chosen) as threaded:
        yield threaded


SLOW_SECONDS = 3.0


@dataclass(frozen=True)
class SlowFrom:
    """Pods born after ``since`` (time.monotonic) become ready after SLOW_SECONDS; older ones are ready."""

    since: float

    def state(self, age: float) -> PodState:
        born = time.monotonic() - age
        return Ready(SLOW_SECONDS if born > self.since else 0.1).state(age)


def counts(emulated: ThreadedCluster) -> dict[str, tuple[int, int]]:
    """Deployment name -> (spec.replicas, status.readyReplicas)."""
    return {
        d["metadata"]["name"]: (d["spec"].get("replicas", 0), (d.get("status") or {}).get("readyReplicas", 0))
        for d in emulated.list(DEPLOYMENTS, "ml")
    }


def rollout_with_counts(
    emulated: ThreadedCluster, name: str = "iris"
) -> tuple[dict[str, Any], dict[str, tuple[int, int]], dict[str, tuple[int, int]]]:
    """``status.rollout`` read between two reads of the Deployments' ``counts`` (before, after). Status and
    Deployments are separate reads: only when the two counts agree did the operator not scale and write its status
    in between, so that the status and the counts belong together."""
    before = counts(emulated)
    obj = emulated.get(MD, "ml", name) or {}
    rollout = dict((obj.get("status") or {}).get("rollout") or {})
    return rollout, before, counts(emulated)


@pytest.fixture
def operator_factory(emulated: ThreadedCluster, monkeypatch: pytest.MonkeyPatch) -> Callable[[], KopfRunner]:
    """Start the real operator against ``emulated`` (use as a context manager; exiting stops it)."""
    monkeypatch.setenv("KUBECONFIG", emulated.kubeconfig)
    monkeypatch.setenv("MODELDEPLOY_RESYNC_PERIOD_SECONDS", "1")

    def make() -> KopfRunner:
        return KopfRunner(
            ["run", "--standalone", "--all-namespaces", "-m", "modeldeploy.handlers"], registry=REGISTRY, timeout=60
        )

    return make


class StandInPrometheus(ThreadingHTTPServer):
    """A Prometheus for the analysis: every query of the Prometheus source answered with 100 requests, a 20 ms p99,
    and ``error_ratio`` (0 unless a test sets it)."""

    error_ratio = 0.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def analysis(self, count: int) -> dict[str, Any]:
        """A ModelDeployment's ``rollout.analysis`` that queries this Prometheus: ``count`` measurements 1 s apart,
        at most 1 % errors; one failed measurement is tolerated when there are more than one."""
        return {
            "source": {"type": "Prometheus", "prometheus": {"url": self.url}},
            "interval": "1s",
            "count": count,
            "failureLimit": min(1, count - 1),
            "minRequests": 1,
            "maxErrorRatio": 0.01,
        }


class _PrometheusQueries(BaseHTTPRequestHandler):
    server: StandInPrometheus

    def do_GET(self) -> None:
        query = parse_qs(urlparse(self.path).query).get("query", [""])[0]
        value = "20" if "histogram_quantile" in query else str(self.server.error_ratio) if "outcome" in query else "100"
        body = json.dumps({"status": "success", "data": {"resultType": "scalar", "result": [0, value]}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def prometheus() -> Iterator[StandInPrometheus]:
    server = StandInPrometheus(("127.0.0.1", 0), _PrometheusQueries)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
