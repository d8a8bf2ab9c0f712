"""A simulated Deployment/Pod controller (kube-controller-manager plus kubelet, much simplified).

It runs in-process against the :class:`~modeldeploy.sim.emulator.ClusterEmulator` store, through the same
write path as API requests (so resourceVersions and watch events happen), and writes nothing when nothing
changed. For each Deployment it keeps ``spec.replicas`` pods of the current pod template (named
``<deployment>-<template hash>-<suffix>``, owned by the Deployment, labelled with ``pod-template-hash``),
rolls pods on template changes honouring ``maxSurge``/``maxUnavailable``, moves pods through their
lifecycle as a :class:`PodBehavior` dictates, and writes the Deployment status as the real controller
does (zero counts omitted, ``Available`` and ``Progressing`` conditions, ``ProgressDeadlineExceeded``).

Scheduling: when the cluster has Node objects, a pod is bound (``spec.nodeName``) to the first Ready, uncordoned
node (by name) that matches its node selector, required node affinity and tolerations and has room for its
extended resources (allocatable minus what the pods bound there request: GPUs); until then it stays Pending with
``PodScheduled=False`` (reason ``Unschedulable``) and its lifecycle has not started. CPU and memory are not
accounted. Without any Node object every pod is bound to ``sim-node`` at once, as before nodes existed.

ReplicaSets are not simulated: pods are owned by their Deployment directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import hashlib
import inspect
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from modeldeploy.scheduling import node_fits, parse_node, parse_pod, pod_requests
from modeldeploy.sim.emulator import ApiError, ClusterEmulator, Obj, WatchEvent, now_iso

__all__ = [
    "BEHAVIOR_ANNOTATION",
    "BehaviorChooser",
    "CrashLoop",
    "DeploymentController",
    "NeverReady",
    "PodBehavior",
    "PodHook",
    "PodState",
    "Ready",
    "behavior_from_annotation",
    "template_hash",
]

logger = logging.getLogger(__name__)

BEHAVIOR_ANNOTATION = "sim.modeldeploy.io/behavior"
MANAGER = "kube-controller-manager"
DEPLOYMENTS = "apps/v1/deployments"
PODS = "v1/pods"
NODES = "v1/nodes"
DEFAULT_NODE = "sim-node"
"""Where pods are bound when the cluster has no Node objects at all (no scheduling is simulated then)."""


@dataclass(frozen=True)
class PodState:
    """What a pod looks like at some age: phase, readiness, restarts, why its container waits."""

    phase: str  # Pending | Running
    ready: bool
    running: bool  # the container process is up (the kubelet seam fires on the first True)
    restart_count: int = 0
    waiting_reason: str | None = None  # ContainerCreating, CrashLoopBackOff
    exit_code: int = 1
    """After a restart: the exit code of the container's previous run (``lastState.terminated``)."""
    termination_message: str = ""
    """After a restart: what the previous run left in its termination-message file."""


class PodBehavior(Protocol):
    """How a simulated pod evolves: its state as a function of its age in seconds."""

    def state(self, age: float) -> PodState: ...


@dataclass(frozen=True)
class Ready:
    """Starts, then becomes Ready after ``delay`` seconds."""

    delay: float = 0.2

    def state(self, age: float) -> PodState:
        if age < self.delay:
            return PodState("Pending", ready=False, running=False, waiting_reason="ContainerCreating")
        return PodState("Running", ready=True, running=True)


@dataclass(frozen=True)
class NeverReady:
    """Runs but never passes its readiness probe."""

    def state(self, age: float) -> PodState:
        return PodState("Running", ready=False, running=True)


@dataclass(frozen=True)
class CrashLoop:
    """The container exits every ``period`` seconds with ``exit_code``, leaving ``message`` as its termination
    message: restartCount grows, it waits in CrashLoopBackOff."""

    period: float = 0.5
    exit_code: int = 1
    message: str = ""

    def state(self, age: float) -> PodState:
        restarts = int(age // self.period) if self.period > 0 else 0
        return PodState(
            "Running",
            ready=False,
            running=False,
            restart_count=restarts,
            waiting_reason="CrashLoopBackOff",
            exit_code=self.exit_code,
            termination_message=self.message,
        )


# Chooses the behaviour of a Deployment's pods; None falls back to the annotation, then to Ready(ready_delay).
BehaviorChooser = Callable[[Obj], "PodBehavior | None"]
# Called with the pod when it starts running (the seam for a kubelet that starts real processes) or stops.
PodHook = Callable[[Obj], "Awaitable[None] | None"]


def behavior_from_annotation(value: str | None, *, ready_delay: float) -> PodBehavior | None:
    """The behaviour named by ``sim.modeldeploy.io/behavior``: ready, never-ready or crashloop."""
    if value is None:
        return None
    behaviors: dict[str, PodBehavior] = {
        "ready": Ready(ready_delay),
        "never-ready": NeverReady(),
        "crashloop": CrashLoop(),
    }
    if value not in behaviors:
        logger.warning("Unknown %s annotation %r; using ready", BEHAVIOR_ANNOTATION, value)
    return behaviors.get(value, Ready(ready_delay))


def template_hash(template: Any) -> str:
    """A stable 10-character hash of a pod template (the ``pod-template-hash`` label)."""
    digest = hashlib.sha256(json.dumps(template, sort_keys=True, separators=(",", ":")).encode()).digest()
    alphabet = "bcdfghjklmnpqrstvwxz2456789"
    number = int.from_bytes(digest[:8], "big")
    chars = []
    for _ in range(10):
        number, index = divmod(number, len(alphabet))
        chars.append(alphabet[index])
    return "".join(chars)


def _resolve(value: Any, total: int, *, round_up: bool, default: str) -> int:
    value = default if value is None else value
    if isinstance(value, str) and value.endswith("%"):
        try:
            fraction = float(value[:-1]) / 100 * total
        except ValueError:
            fraction = 0.0
        return math.ceil(fraction) if round_up else math.floor(fraction)
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _is_ready(pod: Obj) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _owned_by(obj: Obj, uid: str) -> bool:
    return any(ref.get("uid") == uid for ref in (obj.get("metadata") or {}).get("ownerReferences") or [])


def _condition(
    previous: list[Obj], ctype: str, status: str, reason: str, message: str, now: str, *, update_time: bool
) -> Obj:
    old = next((c for c in previous if c.get("type") == ctype), None)
    same = old is not None and old.get("status") == status
    unchanged = same and old is not None and old.get("reason") == reason and old.get("message") == message
    condition: Obj = {"type": ctype, "status": status}
    if update_time:
        condition["lastUpdateTime"] = old.get("lastUpdateTime", now) if unchanged and old is not None else now
    condition["lastTransitionTime"] = old.get("lastTransitionTime", now) if same and old is not None else now
    condition["reason"] = reason
    condition["message"] = message
    return condition


class DeploymentController:
    """Reconciles every Deployment of the emulator on each relevant change and every ``tick`` seconds."""

    def __init__(
        self,
        emulator: ClusterEmulator,
        *,
        ready_delay: float = 0.2,
        behavior_for: BehaviorChooser | None = None,
        on_pod_running: PodHook | None = None,
        on_pod_stopped: PodHook | None = None,
        tick: float = 0.05,
    ) -> None:
        self.emulator = emulator
        self.ready_delay = ready_delay
        self.behavior_for = behavior_for
        self.on_pod_running = on_pod_running
        self.on_pod_stopped = on_pod_stopped
        self.tick = tick
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._born: dict[str, float] = {}  # pod uid -> monotonic creation time
        self._running: set[str] = set()  # pod uids whose running hook fired
        self._progress: dict[str, tuple[tuple[Any, ...], float]] = {}  # deployment uid -> (signature, time)
        self._hooks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self.emulator.add_listener(self._on_event)
        self._task = asyncio.create_task(self._run(), name="modeldeploy-sim-deployment-controller")

    async def stop(self) -> None:
        self.emulator.remove_listener(self._on_event)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._hooks:
            await asyncio.gather(*self._hooks, return_exceptions=True)

    def _on_event(self, event: WatchEvent) -> None:
        if (event.resource.group, event.resource.plural) not in (("apps", "deployments"), ("", "pods")):
            return
        self._wake.set()
        if event.resource.plural == "pods" and event.type == "DELETED":
            uid = event.object["metadata"].get("uid", "")
            self._born.pop(uid, None)
            if uid in self._running:
                self._running.discard(uid)
                self._fire(self.on_pod_stopped, event.object)

    def _fire(self, hook: PodHook | None, pod: Obj) -> None:
        if hook is None:
            return
        try:
            result = hook(copy.deepcopy(pod))
        except Exception:
            logger.exception("A pod hook failed for %s", pod["metadata"].get("name"))
            return
        if inspect.isawaitable(result):

            async def wait(awaitable: Awaitable[None] = result) -> None:
                try:
                    await awaitable
                except Exception:
                    logger.exception("A pod hook failed for %s", pod["metadata"].get("name"))

            task = asyncio.create_task(wait())
            self._hooks.add(task)
            task.add_done_callback(self._hooks.discard)

    async def _run(self) -> None:
        while True:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for loses a cancel that arrives as the wait
            # completes (an event woke it), and this loop would then never end, hanging ``stop``.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.tick):
                    await self._wake.wait()
            self._wake.clear()
            self.reconcile_all()

    def reconcile_all(self) -> None:
        """One pass over all Deployments (also callable directly from tests).

        Pods are listed once per pass and grouped by owner, so a pass costs O(objects), not O(objects^2).
        """
        # Stored objects are read without copying (this pass never mutates them; writes go through the API).
        pods_by_owner: dict[str, list[Obj]] = {}
        for pod in self.emulator.iter_stored(PODS):
            for ref in (pod.get("metadata") or {}).get("ownerReferences") or []:
                pods_by_owner.setdefault(str(ref.get("uid")), []).append(pod)
        for deployment in self.emulator.iter_stored(DEPLOYMENTS):
            try:
                self.reconcile(deployment, pods_by_owner.get(str(deployment["metadata"].get("uid")), []))
            except ApiError as error:  # e.g. a concurrent deletion; the next pass sees the new state
                logger.debug("Deployment reconciliation deferred: %s", error.message)

    def behavior(self, deployment: Obj, pod: Obj) -> PodBehavior:
        chosen = self.behavior_for(deployment) if self.behavior_for is not None else None
        if chosen is not None:
            return chosen
        annotations = (pod.get("metadata") or {}).get("annotations") or {}
        by_annotation = behavior_from_annotation(annotations.get(BEHAVIOR_ANNOTATION), ready_delay=self.ready_delay)
        return by_annotation or Ready(self.ready_delay)

    def reconcile(self, deployment: Obj, owned_pods: list[Obj] | None = None) -> None:
        """Converge one Deployment's pods and status (``owned_pods``: its pods, when the caller has them)."""
        metadata = deployment["metadata"]
        if metadata.get("deletionTimestamp"):
            return
        namespace, uid = metadata["namespace"], metadata["uid"]
        spec = deployment.get("spec") or {}
        desired = int(spec.get("replicas", 1))
        template = spec.get("template") or {}
        current_hash = template_hash(template)

        candidates = owned_pods if owned_pods is not None else self.emulator.list_objects(PODS, namespace)
        pods = [pod for pod in candidates if _owned_by(pod, uid) and not pod["metadata"].get("deletionTimestamp")]
        pods = [self._sync_pod(deployment, pod) for pod in pods]
        new = [p for p in pods if (p["metadata"].get("labels") or {}).get("pod-template-hash") == current_hash]
        old = [p for p in pods if p not in new]

        strategy = spec.get("strategy") or {}
        rolling = strategy.get("rollingUpdate") or {}
        surge = _resolve(rolling.get("maxSurge"), desired, round_up=True, default="25%")
        unavailable = _resolve(rolling.get("maxUnavailable"), desired, round_up=False, default="25%")
        if surge == 0 and unavailable == 0:
            surge = 1
        if strategy.get("type") == "Recreate":
            surge, unavailable = 0, desired

        if strategy.get("type") == "Recreate" and old:
            for pod in old:
                self._delete_pod(pod)
            old = []
        else:
            to_create = max(0, min(desired - len(new), desired + surge - len(new) - len(old)))
            if not old:
                to_create = max(0, desired - len(new))
            for _ in range(to_create):
                new.append(self._create_pod(deployment, template, current_hash))
        if len(new) > desired:
            extra = sorted(new, key=lambda p: (_is_ready(p), p["metadata"]["creationTimestamp"]))
            for pod in extra[: len(new) - desired]:
                self._delete_pod(pod)
                new.remove(pod)
        ready_count = sum(1 for p in new + old if _is_ready(p))
        min_available = max(0, desired - unavailable)
        for pod in sorted(old, key=_is_ready):
            if not _is_ready(pod):
                self._delete_pod(pod)
                old.remove(pod)
            elif ready_count - 1 >= min_available:
                self._delete_pod(pod)
                old.remove(pod)
                ready_count -= 1

        self._write_status(deployment, desired, unavailable, current_hash, new, old)

    def _create_pod(self, deployment: Obj, template: Obj, current_hash: str) -> Obj:
        metadata = deployment["metadata"]
        template_meta = template.get("metadata") or {}
        pod_meta: Obj = {
            "generateName": f"{metadata['name']}-{current_hash}-",
            "namespace": metadata["namespace"],
            "labels": {**(template_meta.get("labels") or {}), "pod-template-hash": current_hash},
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "name": metadata["name"],
                    "uid": metadata["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        }
        if template_meta.get("annotations"):
            pod_meta["annotations"] = copy.deepcopy(template_meta["annotations"])
        pod_spec = copy.deepcopy(template.get("spec") or {})
        if not pod_spec.get("nodeName"):
            node = self.schedule(pod_spec)
            if node is not None:
                pod_spec["nodeName"] = node
        pod = self.emulator.create_object(PODS, {"metadata": pod_meta, "spec": pod_spec}, manager=MANAGER)
        if pod_spec.get("nodeName"):
            self._born[pod["metadata"]["uid"]] = time.monotonic()
        return self._sync_pod(deployment, pod)

    def schedule(self, pod_spec: Obj) -> str | None:
        """The node a pod with ``pod_spec`` is bound to now; None when no node has room (it stays Pending)."""
        stored = self.emulator.iter_stored(NODES)
        if not stored:
            return DEFAULT_NODE
        nodes = [n for n in (parse_node(obj, extended_only=False) for obj in stored) if n is not None]
        used: dict[str, dict[str, int]] = {}
        for pod in self.emulator.iter_stored(PODS):
            record = parse_pod(pod)
            if record is not None:
                on_node = used.setdefault(record.node, {})
                for name, count in record.requests.items():
                    on_node[name] = on_node.get(name, 0) + count
        wanted = pod_requests(pod_spec)
        for node in sorted(nodes, key=lambda n: n.name):
            if not node_fits(
                node,
                node_selector=pod_spec.get("nodeSelector") or {},
                tolerations=pod_spec.get("tolerations") or (),
                affinity=pod_spec.get("affinity"),
            ):
                continue
            held = used.get(node.name, {})
            if all(node.allocatable.get(name, 0) - held.get(name, 0) >= count for name, count in wanted.items()):
                return node.name
        return None

    def _bind_or_wait(self, pod: Obj) -> Obj | None:
        """Bind an unscheduled pod if a node has room now; else mark it Unschedulable and return None."""
        node = self.schedule(pod.get("spec") or {})
        if node is not None:
            bound = self.emulator.update_object(
                PODS, {**pod, "spec": {**(pod.get("spec") or {}), "nodeName": node}}, manager="default-scheduler"
            )
            self._born[bound["metadata"]["uid"]] = time.monotonic()
            return bound
        wanted = ", ".join(sorted(pod_requests(pod.get("spec") or {}))) or "resources"
        previous = pod.get("status") or {}
        condition = _condition(
            previous.get("conditions") or [],
            "PodScheduled",
            "False",
            "Unschedulable",
            f"0/{len(self.emulator.iter_stored(NODES))} nodes are available: Insufficient {wanted}.",
            now_iso(),
            update_time=False,
        )
        status: Obj = {"phase": "Pending", "conditions": [condition], "qosClass": "BestEffort"}
        if status != previous:
            self.emulator.update_object(PODS, {**pod, "status": status}, subresource="status", manager=MANAGER)
        return None

    def _delete_pod(self, pod: Obj) -> None:
        self.emulator.delete_object(PODS, pod["metadata"]["namespace"], pod["metadata"]["name"])

    def _pod_status(self, pod: Obj, state: PodState) -> Obj:
        previous = pod.get("status") or {}
        now = now_iso()
        uid = pod["metadata"]["uid"]
        conditions_before = previous.get("conditions") or []
        ready = "True" if state.ready else "False"
        started = state.phase == "Running"
        conditions = [
            _condition(conditions_before, "PodScheduled", "True", "Scheduled", "", now, update_time=False),
            _condition(conditions_before, "Initialized", "True", "Initialized", "", now, update_time=False),
            _condition(
                conditions_before,
                "ContainersReady",
                ready,
                "" if state.ready else "ContainersNotReady",
                "",
                now,
                update_time=False,
            ),
            _condition(
                conditions_before,
                "Ready",
                ready,
                "" if state.ready else "ContainersNotReady",
                "",
                now,
                update_time=False,
            ),
        ]
        for condition in conditions:
            condition.pop("message", None)
            if not condition["reason"]:
                condition.pop("reason")
        containers_before = {c.get("name"): c for c in previous.get("containerStatuses") or []}
        statuses = []
        for container in (pod.get("spec") or {}).get("containers") or []:
            before = containers_before.get(container.get("name"), {})
            container_state: Obj
            if state.running:
                started_at = ((before.get("state") or {}).get("running") or {}).get("startedAt", now)
                container_state = {"running": {"startedAt": started_at}}
            else:
                container_state = {"waiting": {"reason": state.waiting_reason or "ContainerCreating"}}
            status: Obj = {
                "name": container.get("name"),
                "image": container.get("image", ""),
                "imageID": "",
                "ready": state.ready,
                "restartCount": state.restart_count,
                "started": state.running,
                "state": container_state,
            }
            if state.restart_count:
                terminated: Obj = {"exitCode": state.exit_code, "reason": "Error"}
                if state.termination_message:
                    terminated["message"] = state.termination_message
                status["lastState"] = {"terminated": terminated}
            statuses.append(status)
        digest = hashlib.sha256(uid.encode()).digest()
        result: Obj = {
            "phase": state.phase,
            "conditions": conditions,
            "hostIP": "10.0.0.1",
            "startTime": previous.get("startTime", pod["metadata"].get("creationTimestamp", now)),
            "qosClass": "BestEffort",
            "containerStatuses": statuses,
        }
        if started:
            result["podIP"] = f"10.244.{digest[0]}.{digest[1] or 1}"
        return result

    def _sync_pod(self, deployment: Obj, pod: Obj) -> Obj:
        uid = pod["metadata"]["uid"]
        if not (pod.get("spec") or {}).get("nodeName"):
            bound = self._bind_or_wait(pod)
            if bound is None:
                return self.emulator.get_object(PODS, pod["metadata"]["namespace"], pod["metadata"]["name"]) or pod
            pod = bound
        born = self._born.setdefault(uid, time.monotonic())
        state = self.behavior(deployment, pod).state(time.monotonic() - born)
        status = self._pod_status(pod, state)
        if status != pod.get("status"):
            pod = self.emulator.update_object(PODS, {**pod, "status": status}, subresource="status", manager=MANAGER)
        if state.running and uid not in self._running:
            self._running.add(uid)
            self._fire(self.on_pod_running, copy.deepcopy(pod))
        return pod

    def _write_status(
        self,
        deployment: Obj,
        desired: int,
        unavailable: int,
        current_hash: str,
        new: list[Obj],
        old: list[Obj],
    ) -> None:
        metadata = deployment["metadata"]
        previous = deployment.get("status") or {}
        replicas = len(new) + len(old)
        ready = sum(1 for p in new + old if _is_ready(p))
        available = ready
        new_available = sum(1 for p in new if _is_ready(p))
        now = now_iso()
        rs_name = f"{metadata['name']}-{current_hash}"
        deadline = (deployment.get("spec") or {}).get("progressDeadlineSeconds", 600)

        signature = (current_hash, len(new), new_available, len(old), desired)
        last_signature, since = self._progress.get(metadata["uid"], (None, time.monotonic()))
        if signature != last_signature:
            since = time.monotonic()
        self._progress[metadata["uid"]] = (signature, since)
        conditions_before = previous.get("conditions") or []
        progressing_before: Obj = next((c for c in conditions_before if c.get("type") == "Progressing"), {})
        complete = len(new) == desired and new_available == desired and not old
        was_complete = (
            progressing_before.get("reason") == "NewReplicaSetAvailable"
            and rs_name in progressing_before.get("message", "")
            and previous.get("observedGeneration") == metadata.get("generation")
        )
        if complete or was_complete:
            progressing = (
                "True",
                "NewReplicaSetAvailable",
                f'ReplicaSet "{rs_name}" has successfully progressed.',
            )
        elif (progressing_before.get("reason") == "ProgressDeadlineExceeded" and signature == last_signature) or (
            time.monotonic() - since > float(deadline)
        ):
            progressing = (
                "False",
                "ProgressDeadlineExceeded",
                f'ReplicaSet "{rs_name}" has timed out progressing.',
            )
        else:
            progressing = ("True", "ReplicaSetUpdated", f'ReplicaSet "{rs_name}" is progressing.')
        if available >= desired - unavailable:
            availability = ("True", "MinimumReplicasAvailable", "Deployment has minimum availability.")
        else:
            availability = (
                "False",
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.",
            )

        status: Obj = {"observedGeneration": metadata.get("generation", 1)}
        counts = {
            "replicas": replicas,
            "updatedReplicas": len(new),
            "readyReplicas": ready,
            "availableReplicas": available,
            "unavailableReplicas": max(0, max(desired, replicas) - available),
        }
        status.update({key: value for key, value in counts.items() if value})
        status["conditions"] = [
            _condition(conditions_before, "Available", *availability, now, update_time=True),
            _condition(conditions_before, "Progressing", *progressing, now, update_time=True),
        ]
        if status != previous:
            self.emulator.update_object(
                DEPLOYMENTS, {**deployment, "status": status}, subresource="status", manager=MANAGER
            )
