"""Carry out reconcile plans: read what is observed, decide with the pure core, write through ``modeldeploy.kube``.

This module holds no kopf: the handlers call it, and so does the periodic resync. All state that matters lives in
the cluster (children and ``.status``); what is kept here is only caches and scheduling.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from modeldeploy.config import OperatorConfig
from modeldeploy.drift import needs_apply
from modeldeploy.fresh import FreshObjects, Key, key_of
from modeldeploy.kube import ApiError, KubeClient
from modeldeploy.kube.resources import resource_for
from modeldeploy.labels import MODEL_DEPLOYMENT_LABEL
from modeldeploy.metrics import OperatorMetrics
from modeldeploy.reconcile import Event, Observed, Plan, owned_by, plan_reconcile

logger = logging.getLogger("modeldeploy")

ObjectKey = tuple[str, str]  # namespace, name


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
    retry_seconds: float = 5.0
    fresh: FreshObjects = field(default_factory=FreshObjects)
    _locks: defaultdict[ObjectKey, asyncio.Lock] = field(default_factory=lambda: defaultdict(asyncio.Lock))
    _timers: dict[ObjectKey, asyncio.TimerHandle] = field(default_factory=dict)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    # --- reading -------------------------------------------------------------------------------------------

    def _observe(self, key: ObjectKey) -> tuple[Mapping[str, Any] | None, Observed]:
        assert self.source is not None, "the controller has no object source yet"
        md = self.source.model_deployment(key)
        md = self.fresh.resolve(("ModelDeployment", *key), md)
        seen = self.source.children(key)

        def freshen(objs: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
            out = []
            for obj in objs:
                resolved = self.fresh.resolve(key_of(obj), obj)
                if resolved is not None:
                    out.append(resolved)
            return out

        observed = Observed(
            deployments=freshen(seen.deployments),
            services=freshen(seen.services),
            autoscalers=freshen(seen.autoscalers),
        )
        # Children the operator just created but the watch has not delivered yet.
        known = {key_of(o) for group in (observed.deployments, observed.services, observed.autoscalers) for o in group}
        extra: dict[str, list[Mapping[str, Any]]] = {"Deployment": [], "Service": [], "HorizontalPodAutoscaler": []}
        for fkey, obj in self.fresh.items_for(key[0]):
            if fkey not in known and fkey[0] in extra and _child_of(obj, key[1]):
                extra[fkey[0]].append(obj)
        if any(extra.values()):
            observed = Observed(
                deployments=[*observed.deployments, *extra["Deployment"]],
                services=[*observed.services, *extra["Service"]],
                autoscalers=[*observed.autoscalers, *extra["HorizontalPodAutoscaler"]],
            )
        return md, observed

    # --- reconciling ---------------------------------------------------------------------------------------

    async def reconcile(self, key: ObjectKey) -> Plan | None:
        """Converge one ModelDeployment; returns the plan carried out (None when the object is gone)."""
        async with self._locks[key]:
            started = time.perf_counter()
            md, observed = self._observe(key)
            if md is None or md.get("metadata", {}).get("deletionTimestamp"):
                self._locks.pop(key, None)
                return None
            try:
                plan = plan_reconcile(md, observed, self.config, self.clock())
                conflicts = await self._execute(md, observed, plan)
                if conflicts:
                    await self._report_conflicts(md, conflicts)
            except ApiError as error:
                self.metrics.reconciles.labels("error").inc()
                self.metrics.errors.labels(error.reason or str(error.code)).inc()
                logger.warning("Reconcile of %s/%s failed: %s; retrying", key[0], key[1], error)
                self.schedule(key, self.retry_seconds)
                raise
            finally:
                self.metrics.duration.observe(time.perf_counter() - started)
            self.metrics.reconciles.labels("changed" if plan.writes else "unchanged").inc()
            if plan.requeue_after is not None:
                self.schedule(key, plan.requeue_after)
            return plan

    async def _execute(self, md: Mapping[str, Any], observed: Observed, plan: Plan) -> list[str]:
        uid = str(md["metadata"].get("uid", ""))
        seen = {key_of(o) for o in (*observed.deployments, *observed.services, *observed.autoscalers)}
        conflicts: list[str] = []
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
                if existing is not None and not needs_apply(manifest, existing):
                    self.fresh.put(existing)
                    continue
            self.metrics.api_writes.labels("apply", resource.kind).inc()
            self.fresh.put(await self.kube.apply_object(manifest))
        for ref in plan.delete:
            resource = resource_for(ref.api_version, ref.kind)
            self.metrics.api_writes.labels("delete", resource.kind).inc()
            await self.kube.delete_object(resource, ref.namespace, ref.name, uid=ref.uid)
            self.fresh.forget((ref.kind, ref.namespace, ref.name))
        if plan.status is not None:
            meta = md["metadata"]
            self.metrics.api_writes.labels("patch", "ModelDeployment/status").inc()
            self.fresh.put(await self.kube.patch_status(meta["namespace"], meta["name"], plan.status))
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

    async def _report_conflicts(self, md: Mapping[str, Any], conflicts: list[str]) -> None:
        meta = md["metadata"]
        message = "; ".join(conflicts)
        logger.warning("ModelDeployment %s/%s: %s", meta.get("namespace"), meta.get("name"), message)
        await self.post_event(md, Event("Warning", "ChildConflict", message))

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

    def _fire(self, key: ObjectKey) -> None:
        self._timers.pop(key, None)
        task = asyncio.get_running_loop().create_task(self._reconcile_quietly(key))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _reconcile_quietly(self, key: ObjectKey) -> None:
        try:
            await self.reconcile(key)
        except ApiError:
            pass  # Counted and rescheduled in reconcile().
        except Exception:
            logger.exception("Reconcile of %s/%s crashed", *key)
            self.metrics.errors.labels("Crash").inc()
            self.schedule(key, self.retry_seconds)

    async def resync_forever(self, period: float) -> None:
        """Re-reconcile every known ModelDeployment every ``period`` seconds (level-triggered safety net)."""
        while True:
            await asyncio.sleep(period)
            if self.source is None:
                continue
            for key in list(self.source.model_deployments()):
                await self._reconcile_quietly(key)

    def forget(self, key: Key) -> None:
        self.fresh.forget(key)

    async def close(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def _child_of(obj: Mapping[str, Any], name: str) -> bool:
    return obj.get("metadata", {}).get("labels", {}).get(MODEL_DEPLOYMENT_LABEL) == name
