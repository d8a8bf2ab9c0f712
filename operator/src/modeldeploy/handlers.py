"""The kopf handlers: the only module that registers handlers. Each one finds the object and calls the controller.

Every trigger converges through one path, ``Controller.reconcile``:
- events of a ModelDeployment (the initial listing at start-up = resume, creation, every update);
- events of its children (Deployments, Services, HPAs labelled ``app.kubernetes.io/managed-by: modeldeploy``);
- a periodic resync of every ModelDeployment, and delayed re-reconciles the core asks for.

Handlers do not wait for the reconcile: they schedule one for the object (at once for the ModelDeployment's own
events, after 50 ms for a child's, 0.5 s for a pod's), and the controller runs at most one per object at a time,
so a burst of events for one object (a Deployment's spec, then its status) is handled by one reconcile and kopf's
per-object worker, with the event it holds, is released at once. Measured with 1,000 ModelDeployments: 7.7-8.0
writes per object instead of 8.0-8.01.

Event handlers keep no progress annotations and need no finalizer (children are owned, so the garbage collector
removes them), which keeps the operator's own writes to what the spec requires. kopf's indexes are the operator's
watch caches; kopf does not call handlers before they are filled, so a restarted operator decides from a complete
view and resumes without rewriting anything.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import kopf
from prometheus_client import start_http_server

from modeldeploy.backoff import Backoff, Endless
from modeldeploy.compact import compact, compact_object
from modeldeploy.config import OperatorConfig
from modeldeploy.controller import Controller, ObjectKey, owner_of
from modeldeploy.gate import PeeringGate
from modeldeploy.kube import KubeClient
from modeldeploy.labels import MANAGED_BY_LABEL, MANAGED_BY_VALUE
from modeldeploy.metrics import OperatorMetrics
from modeldeploy.reconcile import Observed

MD = ("modeldeploy.io", "v1alpha1", "modeldeployments")
CHILD_KINDS = {
    "deployments": ("apps", "v1", "deployments"),
    "services": ("", "v1", "services"),
    "autoscalers": ("autoscaling", "v2", "horizontalpodautoscalers"),
    "revisions": ("apps", "v1", "controllerrevisions"),
    "pods": ("", "v1", "pods"),
    "network_policies": ("networking.k8s.io", "v1", "networkpolicies"),
    "disruption_budgets": ("policy", "v1", "poddisruptionbudgets"),
}
MANAGED = {MANAGED_BY_LABEL: MANAGED_BY_VALUE}
REGISTRY = kopf.OperatorRegistry()
"""The operator's handlers, in a registry of their own (kopf's default registry is process-global)."""
WATCH_BACKOFF = Backoff(first=1.0, cap=10.0)
"""The delays between kopf's tries of a list or a watch that failed: without end, so that an API server away for any
time never stops the operator; at most 10 s apart, so that the watches resume within 10 s of its return."""
Log = logging.Logger | logging.LoggerAdapter[Any]
CHILD_EVENT_DELAY = 0.05
"""Seconds to wait after a child's event before reconciling its owner: the events of one write (a Deployment's
spec, then its status) arrive together and are handled by one reconcile."""
POD_EVENT_DELAY = 0.5
"""Seconds to wait after a pod event before reconciling its owner (events of a rollout's pods come in bursts)."""


@dataclass(frozen=True)
class RunOptions:
    """Process options given on the command line (``modeldeploy run``), passed to the handlers through ``memo``."""

    metrics_port: int | None = None
    resync_period: float = 300.0
    peering: str | None = None
    """kopf's peering object (None: standalone, always active)."""
    identity: str = ""
    """This process's identity in the peering, as given to kopf."""
    priority: int = 0
    namespaces: tuple[str, ...] = ()
    """The namespaces served; empty: all (cluster-wide peering)."""
    peering_lifetime: int = 60
    """Seconds a replica's peering keep-alive stays valid: one that stops without saying so (killed, its node lost)
    is taken over after at most this."""

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> RunOptions:
        """For an operator started by kopf's own command line (``kopf run -m modeldeploy.handlers``), which passes no
        options: the resync period from ``MODELDEPLOY_RESYNC_PERIOD_SECONDS``, as ``modeldeploy run`` reads it."""
        raw = env.get("MODELDEPLOY_RESYNC_PERIOD_SECONDS", "")
        try:
            period = float(raw) if raw else cls.resync_period
        except ValueError:
            raise ValueError(f"MODELDEPLOY_RESYNC_PERIOD_SECONDS must be a number, got {raw!r}") from None
        if not period > 0:
            raise ValueError(f"MODELDEPLOY_RESYNC_PERIOD_SECONDS must be positive, got {raw!r}")
        return cls(resync_period=period)


class IndexSource:
    """Reads ModelDeployments and their children from kopf's indexes."""

    def __init__(self, mds: kopf.Index[Any, Any], children: Mapping[str, kopf.Index[Any, Any]]) -> None:
        self._mds = mds
        self._children = children

    def model_deployment(self, key: ObjectKey) -> Mapping[str, Any] | None:
        store = self._mds.get(key)
        return next(iter(store), None) if store else None

    def model_deployments(self) -> Sequence[ObjectKey]:
        return list(self._mds.keys())

    def _get(self, kind: str, key: ObjectKey) -> list[Mapping[str, Any]]:
        store = self._children[kind].get(key)
        return list(store) if store else []

    def children(self, key: ObjectKey) -> Observed:
        return Observed(
            deployments=self._get("deployments", key),
            services=self._get("services", key),
            autoscalers=self._get("autoscalers", key),
            revisions=self._get("revisions", key),
            pods=self._get("pods", key),
            network_policies=self._get("network_policies", key),
            disruption_budgets=self._get("disruption_budgets", key),
        )


def _controller(memo: Any) -> Controller:
    controller: Controller = memo.controller
    return controller


@kopf.on.login(registry=REGISTRY)
async def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """In-cluster service account first, else the kubeconfig (``$KUBECONFIG`` read at call time)."""
    info: kopf.ConnectionInfo | None = kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(
        **kwargs
    )
    return info


@kopf.on.startup(registry=REGISTRY)
async def startup(settings: kopf.OperatorSettings, memo: Any, logger: Log, **_: Any) -> None:
    """Create the process-wide resources once: configuration, API client, metrics, resync loop."""
    settings.posting.enabled = False  # The operator posts its own Events, only on transitions.
    settings.watching.server_timeout = 300
    settings.networking.request_timeout = 60
    options: RunOptions = getattr(memo, "options", None) or RunOptions.from_env(os.environ)
    settings.peering.lifetime = options.peering_lifetime
    # kopf's requests are its watches' lists and watches. By default kopf tries each 9 times over about 54 s and then
    # gives up on a 5xx or 403 answer (an API server restarting, or a load balancer in front of it with no backend
    # left), and a watch that gives up stops the whole operator: it exits, and the kubelet restarts it with a delay
    # that doubles on each exit (up to 5 min), so the operator comes back minutes after the API server does. Endless
    # retries instead, as client-go's informers do.
    settings.networking.error_backoffs = Endless(WATCH_BACKOFF, random.random)
    # kopf's per-object worker holds the last raw event it got (the whole object, managedFields included) while
    # it waits for the next; handlers return at once (they schedule a reconcile), so an idle worker only costs
    # memory. kopf's default keeps it 5 s; 1 s still absorbs the events of one write.
    settings.queueing.idle_timeout = 1.0
    config = OperatorConfig.from_env(os.environ)
    metrics = OperatorMetrics()
    kube = KubeClient.connect(field_manager=config.field_manager)
    controller = Controller(config=config, kube=kube, metrics=metrics, namespaces=options.namespaces)
    memo.controller = controller
    if options.peering is not None:
        controller.gate = PeeringGate(kube, options.peering, options.identity, options.priority, options.namespaces)
        controller.follow_gate()
    memo.resync = asyncio.create_task(controller.resync_forever(options.resync_period))
    if options.metrics_port is not None:
        server, _thread = start_http_server(options.metrics_port, registry=metrics.registry)
        memo.metrics_server = server
    logger.info("Operator started; default runtime image %s", config.default_runtime_image)


@kopf.on.cleanup(registry=REGISTRY)
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    """Release what startup created."""
    resync: asyncio.Task[None] | None = getattr(memo, "resync", None)
    if resync is not None:
        resync.cancel()
        await asyncio.gather(resync, return_exceptions=True)
    controller: Controller | None = getattr(memo, "controller", None)
    if controller is not None:
        await controller.close()
        await controller.kube.close()
    server = getattr(memo, "metrics_server", None)
    if server is not None:
        server.shutdown()


@kopf.on.probe(id="reconciles", registry=REGISTRY)
async def reconciles_probe(memo: kopf.Memo, **_: Any) -> float:
    """Liveness detail: how many reconciles this process has done."""
    controller: Controller | None = getattr(memo, "controller", None)
    if controller is None:
        return 0.0
    return float(sum(s.value for m in controller.metrics.reconciles.collect() for s in m.samples
                     if s.name.endswith("_total")))


# --- watch caches --------------------------------------------------------------------------------------------


def _snapshot(body: kopf.Body) -> dict[str, Any]:
    """The object for the caches: a compact copy (shared strings) without ``managedFields`` (large, never read)."""
    return compact_object(body)


@kopf.index(*MD, registry=REGISTRY)
def model_deployments_index(body: kopf.Body, namespace: str | None, name: str, **_: Any) -> dict[ObjectKey, Any]:
    return {(namespace or "", name): _snapshot(body)}


def _child_index(body: kopf.Body, namespace: str | None, **_: Any) -> dict[ObjectKey, Any] | None:
    """A child of a ModelDeployment (found by its label), cached whole but compact, under its owner's key."""
    key = owner_of(body)
    return {key: _snapshot(body)} if key else None


# One index per child kind, named ``<kind>_index`` (kopf passes each to the handlers under that name). Pods have
# their own below: they are many, and only a few of their fields are kept.
for _kind in CHILD_KINDS:
    if _kind != "pods":
        kopf.index(*CHILD_KINDS[_kind], labels=MANAGED, registry=REGISTRY, id=f"{_kind}_index")(_child_index)


@kopf.index(*CHILD_KINDS["pods"], labels=MANAGED, registry=REGISTRY)
def pods_index(body: kopf.Body, namespace: str | None, **_: Any) -> dict[ObjectKey, Any] | None:
    key = owner_of(body)
    if key is None:
        return None
    # Only what analysis and the pods' health (modeldeploy.podhealth) read: pods are many, keep the cache small.
    meta = body.get("metadata", {})
    spec = body.get("spec") or {}
    ports = [{"ports": c.get("ports") or []} for c in spec.get("containers") or []]
    return {key: compact({"kind": "Pod",
                          "metadata": {"name": meta.get("name"),
                                       "namespace": meta.get("namespace"),
                                       "uid": meta.get("uid"),
                                       "resourceVersion": meta.get("resourceVersion"),
                                       "labels": meta.get("labels") or {},
                                       "deletionTimestamp": meta.get("deletionTimestamp")},
                          "spec": {"nodeName": spec.get("nodeName"), "containers": ports},
                          "status": body.get("status") or {}})}


def _attach(memo: Any, kwargs: Mapping[str, Any]) -> Controller:
    controller = _controller(memo)
    if controller.source is None:
        controller.source = IndexSource(
            kwargs["model_deployments_index"],
            {kind: kwargs[f"{kind}_index"] for kind in CHILD_KINDS},
        )
    return controller


# --- triggers ------------------------------------------------------------------------------------------------


def _listed(controller: Controller, type: str | None) -> None:
    """An event without a type is an object of a list: at startup, or of a watch that could not resume (410 Gone)
    and listed again, after which kopf's caches still hold what was deleted meanwhile. Audit them soon."""
    if type is None:
        controller.request_audit()


@kopf.on.event(*MD, registry=REGISTRY)
async def model_deployment_event(
    type: str, namespace: str | None, name: str, memo: Any, logger: Log, **kwargs: Any
) -> None:
    """Creation, update, resume (initial listing) and deletion of a ModelDeployment."""
    controller = _attach(memo, kwargs)
    _listed(controller, type)
    if type == "DELETED":
        controller.forget(("ModelDeployment", namespace or "", name))
        return
    controller.schedule((namespace or "", name), 0.0)


async def _child_event(
    type: str, body: kopf.Body, namespace: str | None, name: str, memo: Any, logger: Log, **kwargs: Any
) -> None:
    """A child of a ModelDeployment changed (readiness, drift, deletion): reconcile its owner shortly after."""
    controller = _attach(memo, kwargs)
    _listed(controller, type)
    if type == "DELETED":
        controller.forget((str(body.get("kind", "")), namespace or "", name))
    key = owner_of(body)
    if key is not None:
        controller.schedule(key, CHILD_EVENT_DELAY)


# ControllerRevisions are only read (a revision's recorded template); pods have their own handler below.
for _kind in CHILD_KINDS:
    if _kind not in ("pods", "revisions"):
        kopf.on.event(*CHILD_KINDS[_kind], labels=MANAGED, registry=REGISTRY, id=f"{_kind}_event")(_child_event)


@kopf.on.event(*CHILD_KINDS["pods"], labels=MANAGED, registry=REGISTRY)
async def pod_event(
    type: str, body: kopf.Body, namespace: str | None, name: str, memo: Any, logger: Log, **kwargs: Any
) -> None:
    """A model-server pod changed (readiness, restarts): the rollout may advance or roll back."""
    controller = _attach(memo, kwargs)
    _listed(controller, type)
    key = owner_of(body)
    if key is not None:
        # Pods change often; coalesce their events into one reconcile shortly after.
        controller.schedule(key, POD_EVENT_DELAY)
