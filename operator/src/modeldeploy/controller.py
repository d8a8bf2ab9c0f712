"""Carry out reconcile plans: read what is observed, decide with the pure core, write through ``modeldeploy.kube``.

This module holds no kopf: the handlers call it, and so does the periodic resync. All state that matters lives in
the cluster (children and ``.status``); what is kept here is only caches and scheduling.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

import aiohttp

from modeldeploy.analysis import golden as golden_requests
from modeldeploy.analysis import webhooks
from modeldeploy.analysis.sample import Sample
from modeldeploy.analysis.sources import (
    MetricSource,
    MetricSourceError,
    PodTarget,
    check_golden,
    check_webhooks,
    source_for,
)
from modeldeploy.backoff import Backoff
from modeldeploy.capacity import GpuCapacity
from modeldeploy.conditions import rfc3339
from modeldeploy.config import OperatorConfig
from modeldeploy.drift import GatedField, dropped_fields, needs_apply
from modeldeploy.fresh import FreshObjects, Key, ghosts, key_of, uid_of
from modeldeploy.kube import ApiError, KubeClient
from modeldeploy.kube.resources import (
    AUTOSCALERS,
    CONTROLLER_REVISIONS,
    DEPLOYMENTS,
    DISRUPTION_BUDGETS,
    HTTP_ROUTES,
    MODEL_DEPLOYMENTS,
    NETWORK_POLICIES,
    PODS,
    SECRETS,
    SERVICES,
    Resource,
    resource_for,
)
from modeldeploy.labels import MANAGED_BY_LABEL, MANAGED_BY_VALUE, MODEL_DEPLOYMENT_LABEL, REVISION_LABEL
from modeldeploy.mergepatch import create_merge_patch
from modeldeploy.metrics import OperatorMetrics
from modeldeploy.reconcile import (
    Event,
    Observed,
    Plan,
    check_spec,
    gpu_query,
    owned_by,
    plan_reconcile,
    refused_status,
)
from modeldeploy.rollout.config import WebhookSpec
from modeldeploy.rollout.plan import AnalysisRequest, Measurement, keep_measurement
from modeldeploy.schema import SpecError

logger = logging.getLogger("modeldeploy")

ObjectKey = tuple[str, str]  # namespace, name
T = TypeVar("T")

REFUSALS = frozenset({400, 403, 413, 422})
"""API server answers to a write that retrying the same write does not fix: a bad request, RBAC (e.g. without
``modeldeployments/status``), an object too large, a schema, CEL or admission webhook rejection. (404 is an object
deleted meanwhile; 409, 429 and 5xx pass with a retry.)"""
REFUSAL_REPEAT_SECONDS = 600.0
DROPPED_RECHECK_SECONDS = 3600.0
"""How long the controller takes a gated field the API server dropped from a child (``drift.GATED_FIELDS``) as
dropped for good: afterwards the child is applied once more, in case the cluster was upgraded or the feature gate
turned on meanwhile (on a server that still drops it, that write changes nothing)."""
AUDITED: dict[str, Resource] = {
    "deployments": DEPLOYMENTS,
    "services": SERVICES,
    "autoscalers": AUTOSCALERS,
    "revisions": CONTROLLER_REVISIONS,
    "pods": PODS,
    "network_policies": NETWORK_POLICIES,
    "disruption_budgets": DISRUPTION_BUDGETS,
}
"""The cached children an audit compares with the API server (``Observed`` field -> resource)."""
AUDIT_DELAY_SECONDS = 2.0
"""How long an audit waits after it is asked for: a watch that lists again delivers its objects in a burst."""


def server_failure(error: ApiError) -> bool:
    """Whether a failed call failed for the API server's state, not for what was sent: no answer (code 0), 429 or
    a 5xx (an admission webhook that times out or whose service is down, with ``failurePolicy: Fail``, is a 500).
    The same write may go through later unchanged; while it does not, the object goes no further."""
    return error.code == 0 or error.code == 429 or error.code >= 500


@dataclass
class Failing:
    """An object's failed passes in a row: how many, and when the first of them failed."""

    count: int
    since: float
    """``Controller.monotonic`` seconds."""
    since_time: datetime
    """The same moment by ``Controller.clock``, for messages."""


class ActivityGate(Protocol):
    """Whether this process may reconcile now (``modeldeploy.gate.PeeringGate``: only as kopf's active peer)."""

    async def active(self) -> bool: ...


class ObjectSource(Protocol):
    """Where the controller reads the ModelDeployment and its children from (the operator's watch caches)."""

    def model_deployment(self, key: ObjectKey) -> Mapping[str, Any] | None: ...

    def model_deployments(self) -> Sequence[ObjectKey]: ...

    def children(self, key: ObjectKey) -> Observed: ...


@dataclass
class Controller:
    """Reconciles ModelDeployments one at a time per object, any number of objects concurrently."""

    config: OperatorConfig
    kube: KubeClient
    metrics: OperatorMetrics = field(default_factory=OperatorMetrics)
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    source: ObjectSource | None = None
    backoff: Backoff = field(default_factory=Backoff)
    """How long a failed pass waits before the object is tried again (per object, growing with each failure)."""
    draw: Callable[[], float] = field(default=random.random)
    """Uniform in [0, 1]: the jitter of each retry delay."""
    pod_address: Callable[[Mapping[str, Any]], tuple[str, int] | None] = field(
        default=lambda pod: default_pod_address(pod)
    )
    """Where a model-server pod answers (IP, port): its pod IP and container port ``http``."""
    _measurements: dict[ObjectKey, Measurement] = field(default_factory=dict)
    _measuring: dict[ObjectKey, asyncio.Task[None]] = field(default_factory=dict)
    _sources: dict[ObjectKey, MetricSource] = field(default_factory=dict)
    _session: aiohttp.ClientSession | None = None
    fresh: FreshObjects = field(default_factory=FreshObjects)
    _locks: defaultdict[ObjectKey, asyncio.Lock] = field(default_factory=lambda: defaultdict(asyncio.Lock))
    _timers: dict[ObjectKey, asyncio.TimerHandle] = field(default_factory=dict)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    gpu_capacity: GpuCapacity | None = None
    """The cluster's free GPUs for rollout pre-flights (created on first use; shared by every object)."""
    _refusals: dict[ObjectKey, tuple[str, float]] = field(default_factory=dict)
    """Per object, the last refused write reported (what and the API server's answer, when: monotonic seconds)."""
    _failures: dict[ObjectKey, Failing] = field(default_factory=dict)
    """Per object, its failed passes in a row (gone once a pass goes through)."""
    monotonic: Callable[[], float] = field(default=time.monotonic)
    """Seconds for intervals (how long a refusal or failure has lasted)."""
    _queued: dict[ObjectKey, object] = field(default_factory=dict)
    """Objects with a pass waiting for the one under way to end: a request for another pass meanwhile adds none (the
    waiting pass reads the caches when it starts, so it covers that request too)."""
    resync_concurrency: int = 8
    """How many passes a periodic resync runs at once (one slow object does not hold up the others)."""
    gate: ActivityGate | None = None
    """None: always active (standalone). With kopf peering, reconciles wait while another peer is active."""
    namespaces: tuple[str, ...] = ()
    """The namespaces served (an audit lists in each); empty: all."""
    _audit: asyncio.Task[None] | None = None
    gate_poll_seconds: float = 2.0
    _waiting: set[ObjectKey] = field(default_factory=set)
    """Objects whose reconcile waits for this process to become active again."""
    _follower: asyncio.Task[None] | None = None
    _was_active: bool = True
    _unverified: set[ObjectKey] = field(default_factory=set)
    """Objects to look up on the API server before their next reconcile: what the caches held when this process
    became active again after standing by (some may have been deleted meanwhile)."""
    _dropped: dict[Key, tuple[tuple[GatedField, ...], float]] = field(default_factory=dict)
    """Per child, the gated fields the API server dropped from the last write of it, and when (monotonic)."""
    _gone: dict[ObjectKey, str] = field(default_factory=dict)
    """Objects still in the watch cache whose API server object is gone (uid): deleted while this process was not
    watching (standing by, or a watch that had to list again). kopf's caches keep them; reconciles skip them."""

    # --- reading -------------------------------------------------------------------------------------------

    def _observe(self, key: ObjectKey) -> tuple[Mapping[str, Any] | None, Observed]:
        assert self.source is not None, "the controller has no object source yet"
        md = self.source.model_deployment(key)
        md = self.fresh.resolve(("ModelDeployment", *key), md)
        seen = self.source.children(key)
        groups: dict[str, list[Mapping[str, Any]]] = {}
        known: set[Key] = set()
        for kind, objs in (
            ("Deployment", seen.deployments),
            ("Service", seen.services),
            ("HorizontalPodAutoscaler", seen.autoscalers),
            ("ControllerRevision", seen.revisions),
            ("HTTPRoute", seen.routes),
            ("NetworkPolicy", seen.network_policies),
            ("PodDisruptionBudget", seen.disruption_budgets),
        ):
            out = groups.setdefault(kind, [])
            for obj in objs:
                known.add(key_of(obj))
                resolved = self.fresh.resolve(key_of(obj), obj)
                if resolved is not None:
                    out.append(resolved)
        # Children the operator just wrote but the watch has not delivered yet.
        for fkey, obj in self.fresh.items_for(key[0]):
            if fkey not in known and fkey[0] in groups and _child_of(obj, key[1]):
                groups[fkey[0]].append(obj)
        observed = Observed(
            deployments=groups["Deployment"],
            services=groups["Service"],
            autoscalers=groups["HorizontalPodAutoscaler"],
            revisions=groups["ControllerRevision"],
            pods=[pod for pod in seen.pods if not self.fresh.is_gone(pod)],
            routes=groups["HTTPRoute"],
            network_policies=groups["NetworkPolicy"],
            disruption_budgets=groups["PodDisruptionBudget"],
            measurement=self._measurements.get(key),
            dropped=self._known_dropped(key[0]),
        )
        return md, observed

    def _known_dropped(self, namespace: str) -> dict[tuple[str, str], tuple[GatedField, ...]]:
        """(kind, name) -> the gated fields the API server dropped from the last write of that child of
        ``namespace``, less than ``DROPPED_RECHECK_SECONDS`` ago (``Observed.dropped``)."""
        now = self.monotonic()
        return {
            (kind, name): fields
            for (kind, ns, name), (fields, since) in self._dropped.items()
            if ns == namespace and now - since < DROPPED_RECHECK_SECONDS
        }

    async def _check_dropped(
        self, md: Mapping[str, Any], manifest: Mapping[str, Any], stored: Mapping[str, Any]
    ) -> None:
        """After applying ``manifest``: record the gated fields the API server dropped from it (``stored``: its
        answer), and say so in a Warning event when they are news to this process. Without the record, the next
        pass would see those fields missing and apply again, on every pass."""
        key = key_of(manifest)
        lost = dropped_fields(manifest, stored)
        if not lost:
            self._dropped.pop(key, None)
            return
        before = self._dropped.get(key)
        self._dropped[key] = (lost, self.monotonic())
        if before is not None and before[0] == lost:
            return
        names = ", ".join(f.dotted for f in lost)
        gates = ", ".join(sorted({f"{f.gate} (on by default from Kubernetes {f.default_from})" for f in lost}))
        await self.post_event(md, Event(
            "Warning", "FieldDropped",
            f"The API server dropped {names} from {key[0]} {key[1]}/{key[2]}: its feature gate {gates} is off. "
            "The cluster-wide default applies instead; the operator applies the field again every hour, so it "
            "takes effect once the gate is on",
        ))  # fmt: skip

    def _drop(self, key: ObjectKey) -> None:
        """Forget what is kept about an object that is gone (or going)."""
        self._locks.pop(key, None)
        self._measurements.pop(key, None)
        self._refusals.pop(key, None)
        self._failures.pop(key, None)
        for child in [c for c in self._dropped if c[1:] == key]:  # Its HorizontalPodAutoscaler, named after it.
            del self._dropped[child]
        self.metrics.forget(*key)

    async def _is_gone(self, key: ObjectKey, uid: str) -> bool:
        """After a 404: whether the ModelDeployment itself is gone (or replaced by another of the same name) while
        the watch cache still holds it. Then it is forgotten and not retried: retrying would apply its children
        again every few seconds, for the garbage collector to delete (their owner is gone)."""
        try:
            current = await self.kube.read_object(MODEL_DEPLOYMENTS, key[0], key[1])
        except ApiError:
            return False
        if current is not None and str(current.get("metadata", {}).get("uid") or "") == uid:
            return False
        logger.info("ModelDeployment %s/%s (uid %s) is gone; the watch cache still had it, forgetting it", *key, uid)
        self._gone[key] = uid
        self._drop(key)
        return True

    async def _existing_route(self, md: Mapping[str, Any]) -> Mapping[str, Any] | None:
        """The HTTPRoute of GatewayAPI routing (the user's named one, or the one the operator created), read now.

        Read rather than watched: Gateway API is optional in a cluster, and a watch on a resource the cluster
        does not serve would hold back every handler.
        """
        routing = (((md.get("spec") or {}).get("rollout") or {}).get("canary") or {}).get("trafficRouting") or {}
        if routing.get("type") != "GatewayAPI":
            return None
        name = (routing.get("gatewayAPI") or {}).get("httpRoute") or md["metadata"]["name"]
        self.metrics.api_reads.labels("HTTPRoute").inc()
        return await self.kube.read_object(HTTP_ROUTES, md["metadata"]["namespace"], str(name))

    async def _gpus_free(self, md: Mapping[str, Any]) -> int | None:
        """Free GPUs for a starting GPU rollout (``reconcile.gpu_query``), else None. Never raises."""
        query = gpu_query(md, self.config)
        if query is None:
            return None
        if self.gpu_capacity is None:
            self.gpu_capacity = GpuCapacity(self.kube)
        reads = self.gpu_capacity.reads
        found = await self.gpu_capacity.free_gpus(query)
        if self.gpu_capacity.reads != reads:
            self.metrics.api_reads.labels("Node").inc()
            self.metrics.api_reads.labels("Pod").inc()
        return None if found is None else found.usable

    # --- reconciling ---------------------------------------------------------------------------------------

    async def reconcile(self, key: ObjectKey) -> Plan | None:
        """Converge one ModelDeployment; returns the plan carried out (None when the object is gone)."""
        async with self._locks[key]:
            self._queued.pop(key, None)
            started = time.perf_counter()
            md, observed = self._observe(key)
            uid = str((md or {}).get("metadata", {}).get("uid") or "")
            if md is None or md.get("metadata", {}).get("deletionTimestamp") or (uid and self._gone.get(key) == uid):
                self._drop(key)
                return None
            if key in self._unverified:
                self._unverified.discard(key)
                if await self._is_gone(key, uid):
                    return None
            try:
                route = await self._existing_route(md)
                if route is not None:
                    observed = replace(observed, routes=[*observed.routes, route])
                gpus_free = await self._gpus_free(md)
                if gpus_free is not None:
                    observed = replace(observed, gpus_free=gpus_free)
                plan = plan_reconcile(md, observed, self.config, self.clock())
                conflicts = await self._execute(md, observed, plan)
                if conflicts:
                    await self._report_conflicts(md, conflicts)
            except ApiError as error:
                if error.code == 404 and await self._is_gone(key, uid):
                    return None
                self.metrics.reconciles.labels("error").inc()
                self.metrics.errors.labels(error.reason or str(error.code)).inc()
                delay, failures = self._retry(key, error.retry_after)
                logger.warning(
                    "Reconcile of %s/%s failed: %s; retrying in %.1fs (%d failed in a row)",
                    key[0], key[1], error, delay, failures,
                )  # fmt: skip
                raise
            finally:
                self.metrics.duration.observe(time.perf_counter() - started)
            self._failures.pop(key, None)
            self.metrics.reconciles.labels("changed" if plan.writes else "unchanged").inc()
            status_after = plan.status if plan.status is not None else md.get("status")
            # The status as it stands, changed or not: an operator that just started exports every object's too.
            self.metrics.record_rollout(key[0], key[1], status_after, [e.reason for e in plan.events])
            measured = self._measurements.get(key)
            if measured is not None and not keep_measurement(measured, plan.analysis, status_after):
                self._measurements.pop(key, None)  # Recorded by the state machine, or its run is over or gone.
            if plan.analysis is not None:
                self._start_measurement(key, md, observed, plan.analysis)
            if plan.requeue_after is not None:
                self.schedule(key, plan.requeue_after)
            return plan

    async def _execute(self, md: Mapping[str, Any], observed: Observed, plan: Plan) -> list[str]:
        uid = str(md["metadata"].get("uid", ""))
        seen = {key_of(o) for o in (*observed.deployments, *observed.services, *observed.autoscalers)}
        conflicts: list[str] = []
        if plan.scale is not None:
            # First: the HPA that this pass points at the ModelDeployment must find a count to scale from.
            meta = md["metadata"]
            self.metrics.api_writes.labels("patch", "ModelDeployment/scale").inc()
            await self._write(
                md,
                f"scale ModelDeployment {meta['namespace']}/{meta['name']}",
                self.kube.patch_scale(
                    meta["namespace"], meta["name"], plan.scale, resource_version=str(meta.get("resourceVersion", ""))
                ),
            )
        for manifest in plan.apply:
            resource = resource_for(manifest["apiVersion"], manifest["kind"])
            if key_of(manifest) not in seen:
                meta = manifest["metadata"]
                self.metrics.api_reads.labels(resource.kind).inc()
                existing = await self.kube.read_object(resource, meta.get("namespace"), meta["name"])
                if existing is not None and not owned_by(existing, uid):
                    conflicts.append(
                        f"{resource.kind} {meta.get('namespace')}/{meta['name']} exists and is not owned by "
                        f"this ModelDeployment; it is left untouched"
                    )
                    continue
                known = observed.dropped.get((resource.kind, meta["name"]), ())
                if existing is not None and not needs_apply(manifest, existing, dropped=known):
                    self.fresh.put(existing)
                    continue
            name = f"{resource.kind} {manifest['metadata'].get('namespace')}/{manifest['metadata']['name']}"
            if manifest["metadata"].get("resourceVersion"):
                # An object the operator edits but does not own (an existing HTTPRoute): replace with the
                # resourceVersion it was read at, so a concurrent edit by its owner is never lost.
                self.metrics.api_writes.labels("replace", resource.kind).inc()
                self.fresh.put(await self._write(md, f"update {name}", self.kube.replace_object(manifest)))
                continue
            self.metrics.api_writes.labels("apply", resource.kind).inc()
            stored = await self._write(md, f"apply {name}", self.kube.apply_object(manifest))
            self.fresh.put(stored)
            await self._check_dropped(md, manifest, stored)
        # The status before the deletes: what cannot be undone (the Deployment of a revision the status no longer
        # runs, a promoted canary's old stable) happens only once the decision that allows it is recorded. If the
        # status write fails, the next pass decides again from the status as it was, with everything still there.
        if plan.status is not None:
            meta = md["metadata"]
            self.metrics.api_writes.labels("patch", "ModelDeployment/status").inc()
            patch = create_merge_patch(md.get("status") or {}, plan.status)  # nulls for keys the plan dropped
            self.fresh.put(await self._write(md, "", self.kube.patch_status(meta["namespace"], meta["name"], patch)))
        for ref in plan.delete:
            resource = resource_for(ref.api_version, ref.kind)
            self.metrics.api_writes.labels("delete", resource.kind).inc()
            await self._write(
                md,
                f"delete {resource.kind} {ref.namespace}/{ref.name}",
                self.kube.delete_object(resource, ref.namespace, ref.name, uid=ref.uid),
            )
            self.fresh.forget((ref.kind, ref.namespace, ref.name))
        self._refusals.pop((str(md["metadata"]["namespace"]), str(md["metadata"]["name"])), None)
        for event in plan.events:
            await self.post_event(md, event)
        return conflicts

    async def post_event(self, md: Mapping[str, Any], event: Event) -> None:
        self.metrics.api_writes.labels("create", "Event").inc()
        try:
            await self.kube.post_event(
                md, type_=event.type, reason=event.reason, message=event.message, now=self.clock()
            )
        except ApiError as error:  # Events are best effort, as in every Kubernetes controller.
            logger.warning("Could not post event %s: %s", event.reason, error)

    async def _write(self, md: Mapping[str, Any], what: str, write: Awaitable[T]) -> T:
        """Await one write of the plan (``what``: "apply Deployment ns/name"; empty for the status update); a
        refusal is reported (``_report_refusal``) before it ends the pass, and so is a write the API server has
        failed for ``config.write_failure_seconds`` of failed passes in a row (``_report_failing``)."""
        try:
            return await write
        except ApiError as error:
            if error.code in REFUSALS:
                await self._report_refusal(md, what, error)
            elif server_failure(error):
                await self._report_failing(md, what, error)
            raise

    async def _report_refusal(self, md: Mapping[str, Any], what: str, error: ApiError) -> None:
        """A write the API server refused for what it holds (not for being busy) stops the reconcile until that
        changes, and the operator's log is not where anyone looks at 3 a.m.: a Warning event on the
        ModelDeployment, once per refusal and at most every ``REFUSAL_REPEAT_SECONDS`` while it lasts (retries
        come every few seconds to a minute, ``Backoff``). The plan's own events wait until the pass completes."""
        meta = md["metadata"]
        key = (str(meta["namespace"]), str(meta["name"]))
        refusal = str(error)  # "CODE Reason: message"
        if what:
            await self._mark_degraded(md, f"The API server refused to {what} ({refusal})")
        if not self._first_report(key, f"{what} {refusal}"):
            return
        retry = f"retrying {self.backoff.describe()}"
        if not what:
            event = Event(
                "Warning",
                "StatusWriteRejected",
                f"The API server refused the status update ({refusal}). The rollout cannot record its progress "
                f"and goes no further until a status write succeeds; {retry}. Check that the installed CRD is the "
                "operator's version (helm upgrade does not update CRDs).",
            )
        else:
            event = Event(
                "Warning",
                "WriteRejected",
                f"The API server refused to {what} ({refusal}). The ModelDeployment goes no further until it is "
                f"accepted; {retry}. Usual causes: an admission webhook or policy (Kyverno, Gatekeeper), the "
                "operator's RBAC, or a value in the spec that the object's own validation refuses.",
            )
        await self.post_event(md, event)

    def _first_report(self, key: ObjectKey, reported: str) -> bool:
        """Whether to post the event for ``reported`` (what failed and how): not when the last one posted for the
        object said the same less than ``REFUSAL_REPEAT_SECONDS`` ago."""
        now = self.monotonic()
        last = self._refusals.get(key)
        if last is not None and last[0] == reported and now - last[1] < REFUSAL_REPEAT_SECONDS:
            return False
        self._refusals[key] = (reported, now)
        return True

    async def _report_failing(self, md: Mapping[str, Any], what: str, error: ApiError) -> None:
        """A write the API server keeps failing (``server_failure``) stalls the object as surely as a refusal, and
        one that lasts is not a blip of a busy or restarting API server: once the object's passes have failed for
        ``config.write_failure_seconds`` in a row, the failing write is reported like a refusal (``Degraded=True``
        with reason ``WriteFailing``, a ``WriteFailing`` or ``StatusWriteFailing`` Warning event, once per write
        and kind of failure and at most every ``REFUSAL_REPEAT_SECONDS``). The object's other writes go on as
        before: only its own failed passes count, so a slow webhook on one namespace or object kind is reported
        on the objects it holds up, and only on them."""
        meta = md["metadata"]
        key = (str(meta["namespace"]), str(meta["name"]))
        failing = self._failures.get(key)
        if failing is None or self.monotonic() - failing.since < self.config.write_failure_seconds:
            return
        since = rfc3339(failing.since_time)
        failure = str(error)  # "CODE Reason: message", or what went wrong without an answer
        if what:
            await self._mark_degraded(
                md,
                f"The API server failed to {what} ({failure}); the ModelDeployment's reconciles have failed since "
                f"{since}",
                reason="WriteFailing",
            )
        if not self._first_report(key, f"{what} {error.code} {error.reason}"):
            return
        row = failing.count + 1
        passes = f"every reconcile of this ModelDeployment has failed since {since} ({row} in a row, this one included)"
        retry = f"retrying {self.backoff.describe()}"
        if not what:
            event = Event(
                "Warning",
                "StatusWriteFailing",
                f"The API server failed the status update ({failure}), and {passes}. The rollout cannot record its "
                f"progress and goes no further until a status write succeeds; {retry}. Usual causes: an admission "
                "webhook that matches ModelDeployments and times out or has no ready endpoints, or an overloaded "
                "API server or etcd.",
            )
        else:
            event = Event(
                "Warning",
                "WriteFailing",
                f"The API server failed to {what} ({failure}), and {passes}. The ModelDeployment goes no further "
                f"until the write succeeds; {retry}. Usual causes: an admission webhook (failurePolicy: Fail) that "
                "times out or whose service has no ready endpoints (the message names it), or an overloaded API "
                "server or etcd.",
            )
        await self.post_event(md, event)

    async def _mark_degraded(self, md: Mapping[str, Any], message: str, reason: str = "WriteRejected") -> None:
        """Write ``Degraded=True`` with ``reason`` into the status, best effort (``refused_status``)."""
        fields = refused_status(md, message, self.clock(), reason)
        meta = md["metadata"]
        self.metrics.record_degraded(str(meta["namespace"]), str(meta["name"]), fields or md.get("status") or {})
        if fields is None:
            return
        self.metrics.api_writes.labels("patch", "ModelDeployment/status").inc()
        try:
            self.fresh.put(await self.kube.patch_status(meta["namespace"], meta["name"], fields))
        except ApiError as error:
            logger.warning("Could not mark %s/%s Degraded: %s", meta["namespace"], meta["name"], error)

    async def _report_conflicts(self, md: Mapping[str, Any], conflicts: list[str]) -> None:
        meta = md["metadata"]
        message = "; ".join(conflicts)
        logger.warning("ModelDeployment %s/%s: %s", meta.get("namespace"), meta.get("name"), message)
        await self.post_event(md, Event("Warning", "ChildConflict", message))

    # --- analysis measurements ------------------------------------------------------------------------------

    def _start_measurement(
        self, key: ObjectKey, md: Mapping[str, Any], observed: Observed, request: AnalysisRequest
    ) -> None:
        """Take the measurement the state machine asked for, off the reconcile path; reconcile again after."""
        if key in self._measuring or self._measurements.get(key) is not None:
            return
        try:
            _, parsed, rollout = check_spec(md, admitted=True)
        except SpecError:
            return
        if rollout.analysis is None:
            return
        spec = rollout.analysis
        namespace = parsed.namespace

        def targets(revision: str | None) -> list[PodTarget]:
            if not revision:
                return []
            out = []
            for pod in observed.pods:
                labels = pod.get("metadata", {}).get("labels") or {}
                if labels.get(REVISION_LABEL) != revision or not _pod_ready(pod):
                    continue
                address = self.pod_address(pod)
                if address is not None:
                    out.append(PodTarget(pod["metadata"]["name"], address[0], address[1]))
            return out

        async def measure() -> None:
            try:
                source = self._metric_source(key, spec, namespace, parsed.model.name)
                canary_pods = targets(request.revision)
                runs = bool(canary_pods) or _runs_pods(observed, request.revision)
                if runs:
                    canary = await source.measure(request.revision, canary_pods)
                else:
                    # Scaled to no pods (an analysis at weight 0 without golden requests, spec.replicas 0): it
                    # served nothing, which is Inconclusive (fewer than minRequests), not an error that rolls it
                    # back. One that should run pods and has none ready stays an error of the measurement.
                    canary = Sample(requests=0, errors=0, pods=0)
                stable = await self._measure_stable(key, source, request.stable_revision, targets)
                golden = None
                if spec.golden is not None and runs:  # no pod to ask (spec.replicas 0): golden requests skipped
                    assert self._session is not None  # opened by _metric_source
                    token = None
                    if parsed.runtime.auth_secret_name:
                        token = await self._caller_token(namespace, parsed.runtime.auth_secret_name)
                    golden = await check_golden(
                        self._session, spec.golden, parsed.model.name, request.revision, canary_pods, token=token
                    )
                    await source.rebase(request.revision, canary_pods)  # they are not the canary's traffic
                hooks = None
                if spec.webhooks:
                    assert self._session is not None  # opened by _metric_source
                    # The revision serving now (the request names it only when a relative criterion measures
                    # it); none on a first deploy, or when the canary is itself the stable (status lost).
                    serving = request.stable_revision or str((md.get("status") or {}).get("stableRevision") or "")
                    target = webhooks.Target(
                        namespace=namespace,
                        name=key[1],
                        model=parsed.model.name,
                        revision=request.revision,
                        stable_revision=serving if serving and serving != request.revision else None,
                        run_id=request.run_id,
                        measurement=request.seq,
                        pods=[(pod.name, pod.ip, pod.port) for pod in canary_pods],
                    )
                    headers = await self._webhook_headers(namespace, spec.webhooks)
                    hooks = await check_webhooks(self._session, spec.webhooks, target, headers)
                taken = Measurement(
                    request.run_id,
                    request.seq,
                    self.clock(),
                    canary,
                    stable,
                    attempt=request.attempt,
                    golden=golden,
                    webhooks=hooks,
                )
            except MetricSourceError as error:
                # Reported to the state machine, which counts it against consecutiveErrorLimit, posts the
                # MeasurementFailed event and says when to try again.
                logger.warning("Measurement for %s/%s failed: %s", key[0], key[1], error)
                taken = Measurement.failed(request, self.clock(), str(error))
            finally:
                self._measuring.pop(key, None)
            self._measurements[key] = taken
            self.schedule(key, 0)

        self._measuring[key] = self._spawn(measure())

    async def _secret_data(self, namespace: str, name: str, where: str, purpose: str) -> Mapping[str, Any]:
        """The ``data`` of the Secret ``name``, read now (a rotated Secret is followed), for ``purpose``; only with a
        grant on it (chart value ``rbac.readSecrets``). ``MetricSourceError`` saying what is missing, never a value."""
        what = f"Secret {namespace}/{name} ({where})"
        try:
            secret = await self.kube.read_object(SECRETS, namespace, name)
        except ApiError as error:
            if error.code == 403:
                raise MetricSourceError(
                    f"{purpose} need {what}, and the operator may not read it: grant it get on that Secret (chart "
                    f"value rbac.readSecrets.{namespace}: [{name}])"
                ) from None
            raise MetricSourceError(f"Reading {what} for {purpose.lower()} failed: {error}") from None
        if secret is None:
            raise MetricSourceError(f"{what} not found: {purpose.lower()} need it")
        data = secret.get("data") or {}
        return data if isinstance(data, Mapping) else {}

    async def _caller_token(self, namespace: str, name: str) -> str:
        """A bearer token from the ``runtime.auth`` Secret for golden requests."""
        where = "spec.runtime.auth.secretRef"
        data = await self._secret_data(namespace, name, where, "Golden requests")
        try:
            return golden_requests.caller_token(data)
        except ValueError as error:
            raise MetricSourceError(
                f"Secret {namespace}/{name} ({where}) gives golden requests no token: {error}"
            ) from None

    async def _webhook_headers(self, namespace: str, hooks: Sequence[WebhookSpec]) -> dict[str, dict[str, str]]:
        """Every webhook's request headers by webhook name, those from Secrets read now (each Secret once)."""
        out: dict[str, dict[str, str]] = {}
        read: dict[str, Mapping[str, Any]] = {}
        for i, hook in enumerate(hooks):
            headers = out[hook.name] = {}
            for j, header in enumerate(hook.headers):
                if header.value is not None:
                    headers[header.name] = header.value
                    continue
                assert header.secret is not None and header.secret_key is not None  # parse_rollout: one of the two
                where = f"spec.rollout.analysis.webhooks[{i}].headers[{j}]"
                if header.secret not in read:
                    purpose = f"Webhook {hook.name!r}'s headers"
                    read[header.secret] = await self._secret_data(namespace, header.secret, where, purpose)
                data = read[header.secret]
                try:
                    headers[header.name] = webhooks.header_value(data, header.secret_key)
                except ValueError as error:
                    raise MetricSourceError(
                        f"Secret {namespace}/{header.secret} ({where}) gives webhook {hook.name!r} no header "
                        f"{header.name}: {error}"
                    ) from None
        return out

    @staticmethod
    async def _measure_stable(
        key: ObjectKey,
        source: MetricSource,
        revision: str | None,
        targets: Callable[[str | None], list[PodTarget]],
    ) -> Sample | None:
        """The stable's sample for the relative criteria (``revision``: None when none compares with it). A stable
        that cannot be measured is no stable sample: the relative criteria are skipped (docs/rollouts.md), and
        the canary's measurement stands; failing it would roll a hotfix back to a stable that is down."""
        if not revision:
            return None
        try:
            return await source.measure(revision, targets(revision))
        except MetricSourceError as error:
            logger.info("Measurement for %s/%s: no stable sample (%s)", key[0], key[1], error)
            return None

    def _metric_source(self, key: ObjectKey, spec: Any, namespace: str, model: str) -> MetricSource:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        kind = spec.source.type
        cached = self._sources.get(key)
        if cached is None or cached.source_type != kind:
            cached = source_for(spec, self._session, namespace=namespace, model=model)
            self._sources[key] = cached
        return cached

    # --- scheduling ----------------------------------------------------------------------------------------

    def schedule(self, key: ObjectKey, delay: float) -> None:
        """Reconcile ``key`` again after ``delay`` seconds (the earliest request wins)."""
        loop = asyncio.get_running_loop()
        when = loop.time() + delay
        existing = self._timers.get(key)
        if existing is not None and existing.when() <= when:
            return
        if existing is not None:
            existing.cancel()
        self._timers[key] = loop.call_at(when, self._fire, key)

    def _retry(self, key: ObjectKey, retry_after: float | None) -> tuple[float, int]:
        """After a failed pass: reconcile ``key`` again after the backoff delay for its failures in a row (at
        least ``retry_after``, the API server's wish); returns the delay and that count."""
        failing = self._failures.get(key)
        if failing is None:
            failing = self._failures[key] = Failing(0, self.monotonic(), self.clock())
        failing.count += 1
        delay = self.backoff.delay(failing.count, self.draw(), retry_after)
        self.schedule(key, delay)
        return delay, failing.count

    def _spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run ``work`` in the background; ``close`` cancels it."""
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _fire(self, key: ObjectKey) -> None:
        self._timers.pop(key, None)
        self._spawn(self.reconcile_quietly(key))

    async def _active(self) -> bool:
        active = True if self.gate is None else await self.gate.active()
        self.metrics.set_active(active)
        if active and not self._was_active:
            # Back from standing by: what the caches hold may have been deleted meanwhile, and what waited runs.
            if self.source is not None:
                self._unverified = set(self.source.model_deployments())
            waiting, self._waiting = self._waiting, set()
            for key in waiting:
                self.schedule(key, 0.0)
        self._was_active = active
        return active

    def follow_gate(self) -> None:
        """With a gate, consult it every ``gate_poll_seconds`` from now on (once started, later calls do nothing):
        objects that waited are reconciled once it says active, and ``modeldeploy_active`` tells even a standby
        that never reconciled from the active process. (A poll: the gate reads the peering objects, there is no
        event to wait on.)"""
        if self.gate is None or (self._follower is not None and not self._follower.done()):
            return

        async def follow() -> None:
            while True:
                await self._active()
                await asyncio.sleep(self.gate_poll_seconds)

        self._follower = self._spawn(follow())

    async def reconcile_quietly(self, key: ObjectKey) -> None:
        """Reconcile, never raising: API errors were counted and rescheduled by ``reconcile``; anything else is
        logged, counted as a crash and retried later (the watch that triggered it must keep going).

        Not while another peer is active: its caches are current and this process's are not (kopf stopped its
        watch streams), so a reconcile from here would write over the active peer's decisions. The object waits
        and is reconciled once this process is active again."""
        if not await self._active():
            self._waiting.add(key)
            self.follow_gate()
            return
        if key in self._queued:
            return  # a pass already waits for the one under way; it starts from the caches as they are then
        token = object()
        lock = self._locks.get(key)
        if lock is not None and lock.locked():
            self._queued[key] = token
        try:
            await self.reconcile(key)
        except ApiError:
            pass  # Counted and rescheduled in reconcile().
        except Exception:
            logger.exception("Reconcile of %s/%s crashed", *key)
            self.metrics.errors.labels("Crash").inc()
            self._retry(key, None)
        finally:
            if self._queued.get(key) is token:  # cancelled while it waited: let the next request wait instead
                del self._queued[key]

    def request_audit(self, delay: float = AUDIT_DELAY_SECONDS) -> None:
        """Audit the caches ``delay`` seconds from now, unless an audit is already on its way (a watch listed
        again: kopf hands each listed object to the handlers as an event without a type)."""
        if self._audit is None or self._audit.done():
            self._audit = self._spawn(self._audit_after(delay))

    async def _audit_after(self, delay: float) -> None:
        await asyncio.sleep(delay)
        await self.audit()

    async def audit(self) -> int:
        """Compare the cached children with a list of each kind from the API server, hide those that are gone
        (deleted while a watch was down, then kept by kopf when it listed again), and reconcile their owners at once:
        a Deployment that is gone is created again. Returns how many were found. A kind whose list fails is left
        for the next audit."""
        if self.source is None:
            return 0
        selector = f"{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}"
        children = [self.source.children(key) for key in self.source.model_deployments()]
        owners: set[ObjectKey] = set()
        found = 0
        for field_name, resource in AUDITED.items():
            cached = [obj for seen in children for obj in getattr(seen, field_name)]
            for namespace in self.namespaces or (None,):
                try:
                    listed, version = await self.kube.list_with_version(resource, namespace, label_selector=selector)
                except ApiError as error:
                    logger.warning("Auditing the cached %s failed (%s); the next audit tries again", field_name, error)
                    continue
                scope = [obj for obj in cached if namespace in (None, obj.get("metadata", {}).get("namespace"))]
                for ghost in ghosts(scope, listed, version):
                    if self.fresh.mark_gone(ghost):
                        logger.info("%s %s/%s (uid %s) is gone; the watch cache still had it", *key_of(ghost),
                                    uid_of(ghost))  # fmt: skip
                        found += 1
                    owner = owner_of(ghost)
                    if owner is not None:
                        owners.add(owner)
            self.fresh.prune_gone(resource.kind, cached)
        for owner_key in owners:
            self.schedule(owner_key, 0.0)
        return found

    async def resync_forever(self, period: float) -> None:
        """Re-reconcile every known ModelDeployment every ``period`` seconds (level-triggered safety net), after an
        audit of the caches (a kind whose watch listed again with none of its objects left gives no event to start
        one)."""
        while True:
            await asyncio.sleep(period)
            if self.source is None:
                continue
            await self.audit()
            await self.resync()

    async def resync(self) -> None:
        """Reconcile every known ModelDeployment, ``resync_concurrency`` at a time; an object whose pass is under
        way or waiting already is left to it. Returns once every pass started here has ended."""
        if self.source is None:
            return
        slots = asyncio.Semaphore(max(1, self.resync_concurrency))

        async def one(key: ObjectKey) -> None:
            async with slots:
                await self.reconcile_quietly(key)

        # A pass waits only behind one under way; in the instant between the two, reconcile_quietly returns at once.
        busy = {key for key, lock in self._locks.items() if lock.locked()}
        await asyncio.gather(*(one(key) for key in self.source.model_deployments() if key not in busy))

    def forget(self, key: Key) -> None:
        self.fresh.forget(key)
        if key[0] == "ModelDeployment":
            self._gone.pop((key[1], key[2]), None)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def _runs_pods(observed: Observed, revision: str) -> bool:
    """Whether the Deployment of ``revision`` is meant to run pods (``spec.replicas`` above 0, or not seen yet)."""
    for deployment in observed.deployments:
        labels = deployment.get("metadata", {}).get("labels") or {}
        if labels.get(REVISION_LABEL) == revision:
            return int((deployment.get("spec") or {}).get("replicas", 1) or 0) > 0
    return True


def _pod_ready(pod: Mapping[str, Any]) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(bool(c.get("type") == "Ready" and c.get("status") == "True") for c in conditions)


def owner_of(child: Mapping[str, Any]) -> ObjectKey | None:
    """The ModelDeployment a child belongs to, by its label (None: the label is missing)."""
    meta = child.get("metadata", {})
    owner = (meta.get("labels") or {}).get(MODEL_DEPLOYMENT_LABEL)
    return (str(meta.get("namespace") or ""), str(owner)) if owner else None


def default_pod_address(pod: Mapping[str, Any]) -> tuple[str, int] | None:
    """The pod IP and the port of its container port named ``http`` (8080 when not declared)."""
    ip = (pod.get("status") or {}).get("podIP")
    if not ip:
        return None
    for container in (pod.get("spec") or {}).get("containers") or []:
        for port in container.get("ports") or []:
            if port.get("name") == "http":
                return str(ip), int(port.get("containerPort", 8080))
    return str(ip), 8080


def _child_of(obj: Mapping[str, Any], name: str) -> bool:
    return bool(obj.get("metadata", {}).get("labels", {}).get(MODEL_DEPLOYMENT_LABEL) == name)
