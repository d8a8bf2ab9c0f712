"""The reconcile decision: from a ModelDeployment and the children observed now, what to write.

Pure: no API client, no clock, no kopf. The I/O layer (``modeldeploy.kube``) carries the plan out; the handlers
(``modeldeploy.handlers``) glue the two. Every decision is recomputed from what is observed (level-triggered),
and a plan for an object that already matches its spec holds no writes at all.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from modeldeploy import conditions as cond
from modeldeploy.build import build_deployment, build_hpa, build_service, revision_of
from modeldeploy.config import OperatorConfig
from modeldeploy.drift import needs_apply
from modeldeploy.labels import MODEL_DEPLOYMENT_LABEL, REVISION_LABEL
from modeldeploy.schema import SpecError, default_object, validate_object
from modeldeploy.spec import ModelDeployment, parse_model_deployment
from modeldeploy.types import Manifest

EventType = Literal["Normal", "Warning"]


@dataclass(frozen=True)
class Event:
    """A Kubernetes Event to post about the ModelDeployment."""

    type: EventType
    reason: str
    message: str


@dataclass(frozen=True)
class ChildRef:
    """Identifies a child object to delete."""

    api_version: str
    kind: str
    namespace: str
    name: str
    uid: str


@dataclass(frozen=True)
class Observed:
    """The children of one ModelDeployment as seen now (from the operator's watch caches)."""

    deployments: Sequence[Mapping[str, Any]] = ()
    services: Sequence[Mapping[str, Any]] = ()
    autoscalers: Sequence[Mapping[str, Any]] = ()


@dataclass(frozen=True)
class Plan:
    """What to do now. Empty ``apply``/``delete``/``events`` and ``status is None`` mean: nothing to write."""

    apply: list[Manifest] = field(default_factory=list)
    delete: list[ChildRef] = field(default_factory=list)
    status: dict[str, Any] | None = None
    events: list[Event] = field(default_factory=list)
    requeue_after: float | None = None

    @property
    def writes(self) -> int:
        """How many write requests carrying the plan out takes."""
        return len(self.apply) + len(self.delete) + len(self.events) + (self.status is not None)


def owned_by(obj: Mapping[str, Any], uid: str) -> bool:
    """Whether ``obj`` has a controller owner reference to the object with ``uid``."""
    refs = obj.get("metadata", {}).get("ownerReferences") or []
    return any(ref.get("uid") == uid and ref.get("controller") for ref in refs)


def _ref(obj: Mapping[str, Any]) -> ChildRef:
    meta = obj.get("metadata", {})
    return ChildRef(
        api_version=str(obj.get("apiVersion", "")),
        kind=str(obj.get("kind", "")),
        namespace=str(meta.get("namespace", "")),
        name=str(meta.get("name", "")),
        uid=str(meta.get("uid", "")),
    )


def _desired_replicas(deployment: Mapping[str, Any]) -> int:
    replicas = deployment.get("spec", {}).get("replicas")
    return 1 if replicas is None else int(replicas)


@dataclass(frozen=True)
class RevisionState:
    """How one revision's Deployment is doing."""

    desired: int
    current: int
    ready: int
    updated: int
    available: bool
    deadline_exceeded: bool


def assess_deployment(deployment: Mapping[str, Any]) -> RevisionState:
    """Read a Deployment's status the way ``kubectl rollout status`` does."""
    meta, status = deployment.get("metadata", {}), deployment.get("status") or {}
    desired = _desired_replicas(deployment)
    ready = int(status.get("readyReplicas") or 0)
    updated = int(status.get("updatedReplicas") or 0)
    available_replicas = int(status.get("availableReplicas") or 0)
    current = int(status.get("observedGeneration") or 0) >= int(meta.get("generation") or 1)
    deadline = any(
        c.get("type") == "Progressing" and c.get("reason") == "ProgressDeadlineExceeded"
        for c in status.get("conditions") or []
    )
    available = current and updated >= desired and ready >= desired and available_replicas >= desired
    return RevisionState(desired, int(status.get("replicas") or 0), ready, updated, available, deadline)


def _invalid_plan(obj: Mapping[str, Any], error: SpecError, now: datetime) -> Plan:
    status = dict(obj.get("status") or {})
    generation = int(obj.get("metadata", {}).get("generation") or 1)
    serving = status.get("stableRevision")
    keep = f" The last good revision {serving} keeps serving." if serving else ""
    message = f"{error}.{keep}"
    old_conditions = list(status.get("conditions") or [])
    new_conditions = cond.merge_conditions(
        old_conditions,
        [
            cond.Condition(cond.READY, "False", "InvalidSpec", message),
            cond.Condition(cond.PROGRESSING, "False", "InvalidSpec", "Waiting for a valid spec."),
            cond.Condition(cond.DEGRADED, "True", "InvalidSpec", message),
        ],
        generation=generation,
        now=now,
    )
    desired = {**status, "observedGeneration": generation, "phase": "Failed", "conditions": new_conditions}
    events = []
    if cond.changed(old_conditions, new_conditions, cond.READY, include_message=True):
        events.append(Event("Warning", "InvalidSpec", message))
    return Plan(status=None if desired == status else desired, events=events)


def plan_reconcile(obj: Mapping[str, Any], observed: Observed, config: OperatorConfig, now: datetime) -> Plan:
    """Decide the writes that converge the cluster toward ``obj``'s spec.

    ``obj`` is the ModelDeployment as read from the API server (defaults applied by the server, but the
    operator applies the CRD's defaults again so that it never depends on them). Children in ``observed``
    that are not controlled by ``obj`` are never changed or deleted.
    """
    try:
        defaulted = default_object(dict(obj))
        errors = validate_object(defaulted)
        if errors:
            raise errors[0]
        md = parse_model_deployment(defaulted)
    except SpecError as error:
        return _invalid_plan(obj, error, now)
    return _plan_valid(obj, md, observed, config, now)


def _plan_valid(
    obj: Mapping[str, Any], md: ModelDeployment, observed: Observed, config: OperatorConfig, now: datetime
) -> Plan:
    uid = md.uid
    status = dict(obj.get("status") or {})
    old_conditions = list(status.get("conditions") or [])
    revision = revision_of(md, config)

    deployments = {
        d["metadata"].get("labels", {}).get(REVISION_LABEL, ""): d
        for d in observed.deployments
        if owned_by(d, uid)
    }
    services = [s for s in observed.services if owned_by(s, uid)]
    autoscalers = [h for h in observed.autoscalers if owned_by(h, uid)]

    autoscaled = md.autoscaling is not None
    desired_deployment = build_deployment(md, config, revision, None if autoscaled else md.replicas)
    desired_service = build_service(md, config)
    desired_hpa = build_hpa(md, config, desired_deployment["metadata"]["name"]) if autoscaled else None

    applies: list[Manifest] = []
    deletes: list[ChildRef] = []
    events: list[Event] = []

    current = deployments.get(revision)
    previous_stable = str(status.get("stableRevision") or "")
    if not md.paused:
        if needs_apply(desired_deployment, current):
            applies.append(desired_deployment)
            if current is None:
                events.append(
                    Event(
                        "Normal",
                        "RevisionCreated",
                        f"Created revision {revision} of {md.namespace}/{md.name} "
                        f"(model {md.model.name} version {md.model.version})",
                    )
                )
        by_name = {s["metadata"]["name"]: s for s in services}
        if needs_apply(desired_service, by_name.get(desired_service["metadata"]["name"])):
            applies.append(desired_service)
        hpa_by_name = {h["metadata"]["name"]: h for h in autoscalers}
        if desired_hpa is not None and needs_apply(desired_hpa, hpa_by_name.get(desired_hpa["metadata"]["name"])):
            applies.append(desired_hpa)
        for hpa in autoscalers:
            if desired_hpa is None or hpa["metadata"]["name"] != desired_hpa["metadata"]["name"]:
                deletes.append(_ref(hpa))

    if current is not None and any(m is desired_deployment for m in applies):
        # Decide status from what the Deployment will be once applied: a changed spec bumps its generation,
        # so it is not available until its controller has observed the change.
        generation_after = int(current["metadata"].get("generation") or 1) + int(
            current.get("spec") != desired_deployment.get("spec")
        )
        current = {
            **desired_deployment,
            "metadata": {**desired_deployment["metadata"], "generation": generation_after},
            "status": current.get("status") or {},
        }
    elif current is None and any(m is desired_deployment for m in applies):
        current = {**desired_deployment, "metadata": {**desired_deployment["metadata"], "generation": 1}}
    state = assess_deployment(current) if current is not None else None
    new_ready = state is not None and state.available
    if new_ready and not md.paused:
        for rev, dep in deployments.items():
            if rev != revision:
                deletes.append(_ref(dep))
                events.append(
                    Event("Normal", "RevisionRetired", f"Removed revision {rev} of {md.namespace}/{md.name}")
                )

    stable = revision if new_ready else (previous_stable if previous_stable in deployments else "")
    stable_state = assess_deployment(deployments[stable]) if stable in deployments else None

    generation = md.generation
    ready_replicas = state.ready if state else 0
    desired_replicas = state.desired if state else (md.replicas if not autoscaled else 0)
    replicas = state.current if state else 0
    conditions: list[cond.Condition]
    if md.paused:
        phase = "Paused"
        serving = stable_state is not None and stable_state.ready > 0
        conditions = [
            cond.Condition(
                cond.READY,
                "True" if serving else "False",
                "Paused",
                f"Reconciliation of {md.namespace}/{md.name} is paused (spec.paused).",
            ),
            cond.Condition(cond.PROGRESSING, "False", "Paused", "Rollout paused by spec.paused."),
            cond.Condition(cond.DEGRADED, "False", "AsExpected", "No problem observed."),
        ]
    elif new_ready:
        phase = "Ready"
        conditions = [
            cond.Condition(
                cond.READY,
                "True",
                "Available",
                f"Revision {revision} serves {md.model.name} version {md.model.version} "
                f"with {ready_replicas}/{desired_replicas} ready replicas.",
            ),
            cond.Condition(cond.PROGRESSING, "False", "RolloutComplete", f"Revision {revision} is stable."),
            cond.Condition(cond.DEGRADED, "False", "AsExpected", "No problem observed."),
        ]
    elif state is not None and state.deadline_exceeded:
        phase = "Degraded"
        message = (
            f"Revision {revision} did not become ready within its progress deadline "
            f"({ready_replicas}/{desired_replicas} ready)."
        )
        if stable_state is not None:
            message += f" Revision {stable} keeps serving."
        conditions = [
            cond.Condition(
                cond.READY,
                "True" if stable_state is not None and stable_state.ready > 0 else "False",
                "ProgressDeadlineExceeded",
                message,
            ),
            cond.Condition(cond.PROGRESSING, "False", "ProgressDeadlineExceeded", message),
            cond.Condition(cond.DEGRADED, "True", "ProgressDeadlineExceeded", message),
        ]
    else:
        serving = stable_state is not None and stable_state.ready > 0
        phase = "Progressing" if serving else "Pending"
        waiting = f"Waiting for revision {revision}: {ready_replicas}/{desired_replicas} replicas ready."
        conditions = [
            cond.Condition(
                cond.READY,
                "True" if serving else "False",
                "PreviousRevisionServing" if serving else "ReplicasNotReady",
                f"Revision {stable} keeps serving. {waiting}" if serving else waiting,
            ),
            cond.Condition(cond.PROGRESSING, "True", "NewRevisionRollingOut", waiting),
            cond.Condition(cond.DEGRADED, "False", "AsExpected", "No problem observed."),
        ]

    new_conditions = cond.merge_conditions(old_conditions, conditions, generation=generation, now=now)
    if cond.changed(old_conditions, new_conditions, cond.READY):
        ready = cond.find(new_conditions, cond.READY) or {}
        expected = ready.get("status") == "True" or phase in ("Pending", "Progressing")
        events.append(
            Event("Normal" if expected else "Warning", str(ready.get("reason")), str(ready.get("message")))
        )

    desired_status = {
        **status,
        "observedGeneration": generation,
        "phase": phase,
        "conditions": new_conditions,
        "replicas": replicas,
        "readyReplicas": ready_replicas,
        "selector": f"{MODEL_DEPLOYMENT_LABEL}={md.name}",
        "url": f"http://{md.name}.{md.namespace}.svc.{config.cluster_domain}/v2/models/{md.model.name}",
        "currentRevision": revision,
        "stableRevision": stable,
        "modelName": md.model.name,
        "modelVersion": md.model.version,
        "desiredReplicas": desired_replicas,
    }
    requeue = None if new_ready or md.paused else config.resync_seconds
    return Plan(
        apply=applies,
        delete=deletes,
        status=None if desired_status == status else desired_status,
        events=events,
        requeue_after=requeue,
    )

