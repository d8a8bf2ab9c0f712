"""The reconcile decision: from a ModelDeployment and the children observed now, what to write.

Pure: no API client, no clock, no kopf. The I/O layer (``modeldeploy.kube``) carries the plan out; the handlers
(``modeldeploy.handlers``) glue the two. Every decision is recomputed from what is observed (level-triggered),
and a plan for an object that already matches its spec holds no writes at all.

One pass:
1. check the spec as the API server would (defaults, schema, CEL) plus what only the operator can check;
2. step the rollout state machine (``modeldeploy.rollout``) with the revisions observed now;
3. build every object the decision needs: one Deployment per live revision (each from its own recorded
   template, a ControllerRevision), the routing objects (Service, preview Service, HTTPRoute), the HPA;
4. keep only what differs from the cluster, in the order that never starves traffic (grow, route, shrink);
5. compute status and conditions; Events for every transition.
"""

from __future__ import annotations

import copy
import json
from collections import OrderedDict
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from modeldeploy import conditions as cond
from modeldeploy.build import (
    build_controller_revision,
    build_deployment,
    build_disruption_budget,
    build_hpa,
    build_network_policy,
    owner_references,
    revision_of,
    runtime_image,
    wants_disruption_budget,
    wants_network_policy,
)
from modeldeploy.config import OperatorConfig
from modeldeploy.drift import GatedField, needs_apply, stamp
from modeldeploy.labels import (
    MODEL_DEPLOYMENT_LABEL,
    REVISION_LABEL,
    STABLE_ANNOTATION,
    STABLE_VALUE,
    TOTAL_REPLICAS_ANNOTATION,
    revision_selector,
    selector,
    selector_string,
)
from modeldeploy.podhealth import crash_looping, revision_trouble
from modeldeploy.policy import check_policy
from modeldeploy.rollout.config import RolloutSpec, RolloutSpecError, parse_rollout
from modeldeploy.rollout.plan import (
    AnalysisRequest,
    Controls,
    Decision,
    Measurement,
    RevisionInfo,
    RevisionObservation,
    because,
    next_rollout,
    revision_failure,
)
from modeldeploy.rollout.plan import Observed as RolloutObserved
from modeldeploy.rollout.routing import GatewayAPIRouter, RoutingError, router_for
from modeldeploy.rollout.state import RolloutStatus, clip
from modeldeploy.scheduling import GpuQuery, parse_count
from modeldeploy.schema import SpecError, default_object
from modeldeploy.spec import AutoscalingSpec, ModelDeployment, parse_model_deployment
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
    revisions: Sequence[Mapping[str, Any]] = ()
    """ControllerRevisions: the recorded template of every revision in history."""
    pods: Sequence[Mapping[str, Any]] = ()
    routes: Sequence[Mapping[str, Any]] = ()
    """HTTPRoutes: the one the operator created, or the existing one it edits."""
    network_policies: Sequence[Mapping[str, Any]] = ()
    disruption_budgets: Sequence[Mapping[str, Any]] = ()
    """PodDisruptionBudgets (the operator's one per ModelDeployment)."""
    measurement: Measurement | None = None
    """The analysis measurement the previous decision asked for, once taken."""
    gpus_free: int | None = None
    """Free GPUs for the new pods of a rollout (``scheduling.free_gpus`` for ``gpu_query``); None: not read."""
    dropped: Mapping[tuple[str, str], Collection[GatedField]] = field(default_factory=dict)
    """(kind, name) of a child -> the gated fields the API server dropped from its last write (``drift``)."""


@dataclass(frozen=True)
class Plan:
    """What to do now. Empty ``apply``/``delete``/``events`` and ``status is None`` mean: nothing to write."""

    apply: list[Manifest] = field(default_factory=list)
    delete: list[ChildRef] = field(default_factory=list)
    status: dict[str, Any] | None = None
    events: list[Event] = field(default_factory=list)
    requeue_after: float | None = None
    analysis: AnalysisRequest | None = None
    """A measurement to take (then pass back in ``Observed.measurement``)."""
    scale: int | None = None
    """Written first, through the ModelDeployment's scale subresource: ``spec.replicas`` for its
    HorizontalPodAutoscaler to scale from, when autoscaling is on and the field is absent (``initial_scale``)."""

    @property
    def writes(self) -> int:
        """How many write requests carrying the plan out takes."""
        return (
            (self.scale is not None) + len(self.apply) + len(self.delete) + len(self.events) + (self.status is not None)
        )


def owned_by(obj: Mapping[str, Any], uid: str) -> bool:
    """Whether ``obj`` has a controller owner reference to the object with ``uid``."""
    refs = obj.get("metadata", {}).get("ownerReferences") or []
    return any(ref.get("uid") == uid and ref.get("controller") for ref in refs)


def _others(owned: Mapping[str, Mapping[str, Any]], keep: Manifest | None) -> list[ChildRef]:
    """The owned children of one kind (by name) other than ``keep``, the one the ModelDeployment should have."""
    return [_ref(obj) for name, obj in owned.items() if keep is None or name != _name(keep)]


def _ref(obj: Mapping[str, Any]) -> ChildRef:
    meta = obj.get("metadata", {})
    return ChildRef(
        api_version=str(obj.get("apiVersion", "")),
        kind=str(obj.get("kind", "")),
        namespace=str(meta.get("namespace", "")),
        name=str(meta.get("name", "")),
        uid=str(meta.get("uid", "")),
    )


def _name(obj: Mapping[str, Any]) -> str:
    return str(obj.get("metadata", {}).get("name", ""))


def _revision(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata", {}).get("labels") or {}).get(REVISION_LABEL, ""))


def marked_stable(deployment: Mapping[str, Any]) -> bool:
    """Whether a revision's Deployment carries the stable marker (``build_deployment(..., stable=True)``)."""
    annotations = deployment.get("metadata", {}).get("annotations") or {}
    return annotations.get(STABLE_ANNOTATION) == STABLE_VALUE


def initial_scale(autoscaling: AutoscalingSpec, stable: Mapping[str, Any] | None) -> int:
    """``N`` under ``spec.autoscaling`` while ``spec.replicas`` is absent: the count the operator writes there
    (``Plan.scale``) for the HPA to scale from, as the HPA ignores a target whose count is 0.

    That is the stable revision's count running now, so that turning autoscaling on, or an operator upgrade,
    changes no pod count: ``minReplicas`` for a new model, the Deployment's count for one that had a fixed
    count, and for a model that an older operator autoscaled, the HPA's choice it kept on the stable's Deployment
    (``modeldeploy.io/total-replicas`` while a rollout set the stable's count, the count itself otherwise).
    Within ``minReplicas``..``maxReplicas``.
    """
    if stable is None:
        return autoscaling.min_replicas
    annotations = stable.get("metadata", {}).get("annotations") or {}
    noted = _count(annotations.get(TOTAL_REPLICAS_ANNOTATION))
    current = noted if noted is not None else _count(stable.get("spec", {}).get("replicas"))
    return autoscaling.min_replicas if current is None else autoscaling.bound(current)


def serving_selector(name: str, weights: Mapping[str, int]) -> str:
    """``status.selector`` (the scale subresource's): the pods of the revisions that take traffic now, all the
    ModelDeployment's pods before any does.

    The HPA averages its metrics over the pods this selects and scales ``N`` by the result, so pods without
    traffic (a blue-green preview, a canary before its first weight, a revision scaling down) must not dilute
    the average: the model would be scaled in while its serving pods are busy."""
    serving = sorted(revision for revision, weight in weights.items() if weight > 0)
    if len(serving) == 1:
        return selector_string(revision_selector(name, serving[0]))
    if serving:
        return f"{selector_string(selector(name))},{REVISION_LABEL} in ({','.join(serving)})"
    return selector_string(selector(name))


def _count(value: object) -> int | None:
    """A replica count written as an integer or as ASCII digits (an annotation); None otherwise."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 9:
        return int(value)
    return None


# --- reading observed state --------------------------------------------------------------------------------


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
    replicas = deployment.get("spec", {}).get("replicas")
    desired = 1 if replicas is None else int(replicas)
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


def _pods_of(pods: Sequence[Mapping[str, Any]], revision: str) -> list[Mapping[str, Any]]:
    return [p for p in pods if _revision(p) == revision and not p.get("metadata", {}).get("deletionTimestamp")]


def observe_revisions(
    deployments: Mapping[str, Mapping[str, Any]], pods: Sequence[Mapping[str, Any]]
) -> dict[str, RevisionObservation]:
    """What the rollout state machine needs to know of each revision's Deployment and pods."""
    out: dict[str, RevisionObservation] = {}
    for revision, deployment in deployments.items():
        state = assess_deployment(deployment)
        own = _pods_of(pods, revision)
        out[revision] = RevisionObservation(
            desired=state.desired,
            ready=state.ready,
            updated=state.updated,
            crash_looping=crash_looping(own),
            progress_deadline_exceeded=state.deadline_exceeded,
            was_stable=marked_stable(deployment),
            trouble=revision_trouble(deployment, own) if state.ready < state.desired else "",
        )
    return out


# --- the decision ------------------------------------------------------------------------------------------


def refused_status(
    obj: Mapping[str, Any], message: str, now: datetime, reason: str = "WriteRejected"
) -> dict[str, Any] | None:
    """The status fields to write when the API server refused one of a plan's child writes, or has kept failing it
    (``message`` says which and why): ``Degraded=True`` with ``reason`` (``WriteRejected``, ``WriteFailing``) at
    the observed generation, so that the refusal
    shows where tools look (``kubectl get``, Argo CD's health), even on a first deploy with no status yet. The other
    conditions and ``status.rollout`` are left as they are; the next pass whose writes go through recomputes them.
    None when the status already says so."""
    status = obj.get("status") or {}
    generation = int(obj.get("metadata", {}).get("generation") or 1)
    old = list(status.get("conditions") or [])
    degraded = cond.Condition(cond.DEGRADED, "True", reason, clip(message))
    new = cond.merge_conditions(old, [degraded], generation=generation, now=now)
    seen = status.get("observedGeneration") == generation
    if seen and not cond.changed(old, new, cond.DEGRADED, include_message=True):
        return None
    return {"observedGeneration": generation, "conditions": new}


def _invalid_plan(obj: Mapping[str, Any], error: ValueError, now: datetime) -> Plan:
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


def template_of(defaulted: Mapping[str, Any], md: ModelDeployment, config: OperatorConfig) -> Manifest:
    """What a revision runs, as spec blocks: the defaulted model and runtime, with name and image resolved."""
    spec = defaulted.get("spec") or {}
    model = {**copy.deepcopy(dict(spec.get("model") or {})), "name": md.model.name}
    runtime = {**copy.deepcopy(dict(spec.get("runtime") or {})), "image": runtime_image(md, config)}
    return {"model": model, "runtime": runtime}


CheckedSpec = tuple[Manifest, ModelDeployment, RolloutSpec]
_CHECKED: OrderedDict[str, CheckedSpec | SpecError] = OrderedDict()
_CHECKED_SIZE = 4096


def check_spec(obj: Mapping[str, Any], *, admitted: bool = False) -> CheckedSpec:
    """The defaulted object, its parsed form and its rollout settings; SpecError naming the field if invalid.

    ``admitted``: ``obj`` was read from an API server, which enforced the CRD's CEL rules already.

    Checking runs the schema and every CEL rule, which costs milliseconds; an operator looks at the same spec
    many times (every child event), so results are memoized by the content they depend on (identity,
    generation, annotations, spec). Callers must treat the returned objects as read-only.
    """
    meta = obj.get("metadata") or {}
    key = json.dumps(
        [admitted, meta.get("name"), meta.get("namespace"), meta.get("uid"), meta.get("generation"),
         meta.get("annotations"), obj.get("apiVersion"), obj.get("kind"), obj.get("spec")],
        sort_keys=True, default=str,
    )
    cached = _CHECKED.get(key)
    if cached is None:
        cached = _check_spec(obj, admitted)
        _CHECKED[key] = cached
        if len(_CHECKED) > _CHECKED_SIZE:
            _CHECKED.popitem(last=False)
    else:
        _CHECKED.move_to_end(key)
    if isinstance(cached, SpecError):
        raise cached
    return cached


def _check_spec(obj: Mapping[str, Any], admitted: bool) -> CheckedSpec | SpecError:
    try:
        # Defaults, schema (and CEL rules unless admitted), then what only the operator checks.
        md = parse_model_deployment(obj, admitted=admitted)
        rollout = parse_rollout(md.rollout_raw, revision_history_limit=md.revision_history_limit)
    except SpecError as error:
        return error
    except RolloutSpecError as error:
        path = error.field_path if error.field_path.startswith("spec.") else f"spec.rollout.{error.field_path}"
        return SpecError(path, error.message)
    return default_object(dict(obj)), md, rollout


def gpus_per_pod(md: ModelDeployment) -> int:
    """GPUs each pod requests: ``runtime.gpu.count``, or the same resource put in ``runtime.resources``."""
    gpu = md.runtime.gpu
    if gpu.count > 0:
        return gpu.count
    resources = md.runtime.resources
    return parse_count((resources.get("limits") or {}).get(gpu.resource_name)) or parse_count(
        (resources.get("requests") or {}).get(gpu.resource_name)
    )


def gpu_query(obj: Mapping[str, Any], config: OperatorConfig) -> GpuQuery | None:
    """What to ask the cluster for the GPU pre-flight of ``obj``'s rollout; None when no pre-flight is due.

    Due when the pods request GPUs, a revision is stable, and a rollout is starting (the spec resolves to another
    revision than the stable and the canary) or in progress without a result yet (``Unknown``, or none: an
    operator upgraded mid-rollout). So the cluster is read about once per rollout, not on every reconcile.
    The node selector, tolerations and affinity are the ones the new revision's pods will carry. Never due when
    ``config.gpu_preflight`` is off.
    """
    if not config.gpu_preflight:
        return None
    try:
        _, md, _ = check_spec(obj, admitted=True)
    except SpecError:
        return None
    per_pod = gpus_per_pod(md)
    if check_policy(md, config) is not None or per_pod <= 0:
        return None
    raw = (obj.get("status") or {}).get("rollout")
    status = RolloutStatus.from_status(raw if isinstance(raw, Mapping) else None)
    stable = status.stable_revision
    if not stable:
        return None
    target = revision_of(md, config)
    canary = status.canary_revision
    starting = target != stable and target != canary and status.rejection(target) is None
    record = status.gpu_preflight
    pending = bool(canary) and canary != stable and (
        record is None or record.revision != canary or record.result == "Unknown"
    )
    if not (starting or pending):
        return None
    pod_spec = build_deployment(md, config, target, 1)["spec"]["template"]["spec"]
    keep = {stable}
    if status.previous_revision and status.warm_until is not None:
        keep.add(status.previous_revision)
    return GpuQuery(
        namespace=md.namespace,
        name=md.name,
        resource_name=md.runtime.gpu.resource_name,
        gpus_per_pod=per_pod,
        node_selector=dict(pod_spec.get("nodeSelector") or {}),
        tolerations=tuple(pod_spec.get("tolerations") or ()),
        affinity=pod_spec.get("affinity"),
        keep_revisions=frozenset(keep),
    )


def plan_reconcile(
    obj: Mapping[str, Any], observed: Observed, config: OperatorConfig, now: datetime, *, admitted: bool = True
) -> Plan:
    """Decide the writes that converge the cluster toward ``obj``'s spec.

    ``obj`` is the ModelDeployment as read from the API server (``admitted``). The operator applies the CRD's
    defaults and checks the structural schema again, so that it never depends on the installed CRD matching its
    own version; the CEL rules, which the API server enforces, are checked again only when not ``admitted``
    (``modeldeploy render``). Children in ``observed`` that are not controlled by ``obj`` are never changed or
    deleted.
    """
    try:
        defaulted, md, rollout = check_spec(obj, admitted=admitted)
    except SpecError as error:
        return _invalid_plan(obj, error, now)
    # The artifact policy depends on the operator's configuration, so it is checked outside the memoized part.
    violation = check_policy(md, config)
    if violation is not None:
        return _invalid_plan(obj, violation, now)
    return _Reconcile(obj, defaulted, md, rollout, observed, config, now).plan()


class _Reconcile:
    """The scratch state of one ``plan_reconcile`` call on a valid spec."""

    def __init__(
        self,
        obj: Mapping[str, Any],
        defaulted: Manifest,
        md: ModelDeployment,
        rollout: RolloutSpec,
        observed: Observed,
        config: OperatorConfig,
        now: datetime,
    ) -> None:
        self.obj, self.defaulted, self.md, self.rollout = obj, defaulted, md, rollout
        self.config, self.now = config, now
        uid = md.uid or ""
        self.status: dict[str, Any] = dict(obj.get("status") or {})
        self.deployments = {_revision(d): d for d in observed.deployments if owned_by(d, uid) and _revision(d)}
        self.services = {_name(s): s for s in observed.services if owned_by(s, uid)}
        self.autoscalers = {_name(h): h for h in observed.autoscalers if owned_by(h, uid)}
        self.revisions = {_revision(r): r for r in observed.revisions if owned_by(r, uid) and _revision(r)}
        self.pods = [p for p in observed.pods if (p.get("metadata", {}).get("labels") or {}).get(
            MODEL_DEPLOYMENT_LABEL) == md.name]
        self.observed_revisions = observe_revisions(self.deployments, self.pods)
        self.routes = {_name(r): r for r in observed.routes}
        self.network_policies = {_name(n): n for n in observed.network_policies if owned_by(n, uid)}
        self.disruption_budgets = {_name(b): b for b in observed.disruption_budgets if owned_by(b, uid)}
        self.measurement = observed.measurement
        self.gpus_free = observed.gpus_free
        self.dropped = observed.dropped
        self.events: list[Event] = []
        self.router = router_for(rollout, md.name, md.namespace)

    # --- templates -----------------------------------------------------------------------------------------

    def template_for(self, revision: str) -> Mapping[str, Any] | None:
        """The recorded template (model and runtime blocks) of ``revision``."""
        if revision == self.revision:
            return self.template
        recorded = self.revisions.get(revision)
        data = (recorded or {}).get("data")
        return data if isinstance(data, Mapping) else None

    def md_for(self, revision: str) -> ModelDeployment | None:
        """The ModelDeployment as it was when ``revision`` was current (its template in today's object)."""
        if revision == self.revision:
            return self.md
        template = self.template_for(revision)
        if template is None:
            return None
        replayed = copy.deepcopy(self.defaulted)
        replayed["spec"]["model"] = copy.deepcopy(dict(template.get("model") or {}))
        replayed["spec"]["runtime"] = copy.deepcopy(dict(template.get("runtime") or {}))
        try:
            return parse_model_deployment(replayed)
        except SpecError:
            return None

    # --- the pass ------------------------------------------------------------------------------------------

    def plan(self) -> Plan:
        md = self.md
        self.revision = revision_of(md, self.config)
        self.template = template_of(self.defaulted, md, self.config)
        self.total, scale = self.total_replicas()
        if scale is not None:
            self.events.append(Event("Normal", "ReplicasInitialized",
                                     f"spec.replicas set to {scale} (the pods running now) for the "
                                     "HorizontalPodAutoscaler to scale from"))
        status = RolloutStatus.from_status(self.status.get("rollout"), self.status.get("history"))
        decision = next_rollout(
            self.rollout,
            status,
            RolloutObserved(
                target=RevisionInfo(self.revision, md.model.version, self.revision),
                replicas=self.total,
                revisions=self.observed_revisions,
                measurement=self.measurement,
                gpus_per_pod=gpus_per_pod(md),
                gpus_free=self.gpus_free,
            ),
            self.now,
            Controls.from_spec(self.rollout, md.annotations, paused=md.paused),
        )
        self.events.extend(Event(e.type, e.reason, e.message) for e in decision.events)
        try:
            grow, route, shrink, deletes = self.children(decision)
        except RoutingError as error:
            return _invalid_plan(self.obj, SpecError("spec.rollout.canary.trafficRouting", str(error)), self.now)
        # Owned children carry the digest of what was applied; an edited existing object (not ours) does not.
        desired = [m if m["metadata"].get("resourceVersion") else stamp(m) for m in [*grow, *route, *shrink]]
        applies = [
            m for m in desired
            if needs_apply(m, self.observed_copy(m), dropped=self.dropped.get((m["kind"], _name(m)), ()))
        ]  # fmt: skip
        status_out = self.status_for(decision)
        return Plan(
            scale=scale,
            apply=applies,
            delete=deletes,
            status=None if status_out == self.status else status_out,
            events=self.events,
            requeue_after=decision.requeue_after,
            analysis=decision.analysis,
        )

    def total_replicas(self) -> tuple[int, int | None]:
        """``N``, the pods the ModelDeployment should run in all, and the count to write to an absent
        ``spec.replicas`` (None: nothing to write).

        ``N`` is ``spec.replicas``; under autoscaling, the HPA writes it through the scale subresource, and it is
        read within the bounds of ``spec.autoscaling`` (which may have changed since the HPA's last write). With
        the field absent, ``initial_scale`` decides and the plan writes it."""
        autoscaling = self.md.autoscaling
        if autoscaling is None:
            return self.md.replicas, None
        if self.md.spec.replicas_given:
            return autoscaling.bound(self.md.replicas), None
        stable = self.deployments.get(str(self.status.get("stableRevision") or ""))
        if stable is None:
            # A lost or damaged status: the count running now is on the Deployment with the stable marker (the
            # one the rollout adopts as its stable, see ``rollout.plan._adopt_serving``).
            marked = [d for d in self.deployments.values() if marked_stable(d)]
            if marked:
                stable = max(marked, key=lambda d: (_revision(d) == self.revision, assess_deployment(d).ready))
        total = initial_scale(autoscaling, stable)
        return total, total

    def observed_copy(self, manifest: Mapping[str, Any]) -> Mapping[str, Any] | None:
        kind, name = manifest["kind"], _name(manifest)
        if kind == "Deployment":
            return next((d for d in self.deployments.values() if _name(d) == name), None)
        if kind == "Service":
            return self.services.get(name)
        if kind == "HorizontalPodAutoscaler":
            return self.autoscalers.get(name)
        if kind == "ControllerRevision":
            return next((r for r in self.revisions.values() if _name(r) == name), None)
        if kind == "HTTPRoute":
            return self.routes.get(name)
        if kind == "NetworkPolicy":
            return self.network_policies.get(name)
        if kind == "PodDisruptionBudget":
            return self.disruption_budgets.get(name)
        return None

    def owned(self, manifest: Manifest) -> Manifest:
        """``manifest`` with the controller reference to the ModelDeployment."""
        refs = owner_references(self.md)
        if refs:
            manifest["metadata"]["ownerReferences"] = refs
        return manifest

    def header_target(self, decision: Decision) -> str | None:
        """The canary that header-matched requests may go to: only once its Deployment has a ready pod.

        A weight moves only when the canary's pods are ready; the header route follows the same rule, otherwise
        every tagged request fails (503, no endpoints) while the canary's first pods start. A rolled-back or
        rejected canary gets none either: while the rollout rolls back (an abort, a failed analysis, a missed
        deadline) its weights may still hold the canary (a Neutral capacity hands the pods back gradually), and
        tagged requests must not keep going to the revision just rejected.
        """
        status = decision.status
        canary = status.canary_revision
        if not canary or status.phase in ("RollingBack", "RolledBack") or status.rejection(canary) is not None:
            return None
        deployment = self.deployments.get(canary)
        return canary if deployment is not None and assess_deployment(deployment).ready > 0 else None

    def children(self, decision: Decision) -> tuple[list[Manifest], list[Manifest], list[Manifest], list[ChildRef]]:
        """Desired children in three groups (grow, route, shrink) and the owned children to delete."""
        md = self.md
        grow: list[Manifest] = []
        shrink: list[Manifest] = []
        deletes: list[ChildRef] = []
        stable = decision.status.stable_revision
        autoscaled = md.autoscaling is not None

        # The current revision's template is recorded before anything runs it.
        history_entry = decision.status.history_entry(self.revision)
        if history_entry is not None and self.revision not in self.revisions:
            grow.append(build_controller_revision(md, self.revision, history_entry.number, self.template))

        for revision, replicas in decision.replicas.items():
            source = self.md_for(revision)
            if source is None:
                self.events.append(Event("Warning", "TemplateMissing",
                                         f"Revision {revision} of {md.namespace}/{md.name} has no recorded template; "
                                         "its Deployment is left as it is"))
                continue
            current = self.deployments.get(revision)
            manifest = self.owned(build_deployment(source, self.config, revision, replicas, stable=revision == stable))
            before = assess_deployment(current).desired if current is not None else 0
            (grow if replicas >= before else shrink).append(manifest)

        for revision, deployment in self.deployments.items():
            if revision not in decision.replicas:
                deletes.append(_ref(deployment))

        route: list[Manifest] = []
        if decision.weights or decision.preview_revision:
            existing = None
            route_name = getattr(self.router, "route_name", None)
            if route_name and not getattr(self.router, "creates_route", True):
                existing = self.routes.get(route_name)
                if existing is None:
                    raise RoutingError(f"HTTPRoute {md.namespace}/{route_name} does not exist")
            desired_routing = self.router.build_desired(
                decision.weights,
                preview=decision.preview_revision,
                existing=existing,
                canary=self.header_target(decision),
                mirror=decision.mirror,
            )
            for manifest in desired_routing:
                # An existing HTTPRoute stays its owner's: only our backendRefs in it are edited.
                route.append(manifest if existing is not None and manifest.get("kind") == "HTTPRoute"
                             else self.owned(manifest))
            wanted = {_name(m) for m in desired_routing if m.get("kind") == "Service"}
            deletes.extend(_ref(s) for name, s in self.services.items() if name not in wanted)
        elif not self.services:
            # Nothing may take traffic yet (first-deploy gate): the Service exists and selects no pod.
            route.extend(self.owned(m) for m in self.router.build_desired({}))

        # At most one of each, named like the ModelDeployment, and all go in with the routing objects. The HPA
        # scales the ModelDeployment (N), and the rollout splits N between the revisions (build_hpa). The
        # NetworkPolicy exists before the Service first selects a pod, and the disruption budget before the first
        # pod can be evicted.
        hpa = build_hpa(md, self.config) if autoscaled and stable and stable in decision.replicas else None
        policy = build_network_policy(md, self.config) if wants_network_policy(md, self.config) else None
        budget = build_disruption_budget(md) if wants_disruption_budget(md, self.config) else None
        route.extend(self.owned(m) for m in (hpa, policy, budget) if m is not None)
        deletes.extend([*_others(self.network_policies, policy), *_others(self.disruption_budgets, budget),
                        *_others(self.autoscalers, hpa)])  # fmt: skip

        live = {h.revision for h in decision.status.history} | set(decision.replicas)
        deletes.extend(_ref(r) for rev, r in self.revisions.items() if rev not in live)
        return grow, route, shrink, deletes

    # --- status --------------------------------------------------------------------------------------------

    def trouble(self, revision: str | None) -> str:
        """Why pods of ``revision`` are not ready, when the cluster says (``podhealth.revision_trouble``)."""
        observed = self.observed_revisions.get(revision) if revision else None
        return observed.trouble if observed is not None else ""

    def mirror_carried(self, decision: Decision) -> int:
        """The share of the requests the route copies to the canary now: the decision's, unless the route read back
        holds our filter without its ``percent``. A Gateway API older than v1.3 prunes that field, and the gateway
        then copies every request: 100, and the Warning ``MirrorPercentDropped`` once (when the status changes)."""
        mirror, router = decision.mirror, self.router
        if mirror is None:
            return 0
        if not isinstance(router, GatewayAPIRouter) or mirror.percent == 100:
            return mirror.percent
        route = self.routes.get(router.route_name)
        if route is None or not router.mirror_lost_percent(route, mirror.revision):
            return mirror.percent
        carried = 100
        if self.status.get("mirrorWeight") != carried:
            self.events.append(Event(
                "Warning", "MirrorPercentDropped",
                f"HTTPRoute {self.md.namespace}/{router.route_name} copies every request to revision "
                f"{mirror.revision}, not {mirror.percent}%: its RequestMirror filter lost the percent field (Gateway "
                "API older than v1.3?). Upgrade the Gateway API CRDs, or give the canary pods for all the traffic",
            ))  # fmt: skip
        return carried

    def first_deploy_failing(self) -> cond.Condition | None:
        """``Degraded=True`` while the first revision, with nothing to roll back to, cannot come up by itself: its
        pods crash-loop, or its Deployment reports its progress deadline exceeded (what Argo CD and ``kubectl
        rollout status`` call failed). The pods keep being restarted, and the condition clears once they are
        ready; waiting for a node, an image or a quota stays ``Progressing`` only."""
        observed = self.observed_revisions.get(self.revision)
        if observed is None or self.md.paused or observed.ready >= observed.desired:
            return None
        failure = revision_failure(self.revision, observed)
        return cond.Condition(cond.DEGRADED, "True", *failure) if failure is not None else None

    def status_for(self, decision: Decision) -> dict[str, Any]:
        md = self.md
        rollout = decision.status
        stable = rollout.stable_revision
        canary = rollout.canary_revision
        stable_dep = self.deployments.get(stable)
        stable_state = assess_deployment(stable_dep) if stable_dep is not None else None
        serving = stable_state is not None and stable_state.ready > 0 and bool(decision.weights.get(stable))
        phase_of_rollout = rollout.phase
        stable_version = self.version_of(stable)
        ready_replicas = sum(assess_deployment(d).ready for d in self.deployments.values())
        replicas = sum(assess_deployment(d).current for d in self.deployments.values())
        desired_replicas = self.total

        conditions: list[cond.Condition]
        never_served = self.status.get("phase") in (None, "Pending", "Failed") and not rollout.previous_revision
        first_deploy = not stable or (
            stable == self.revision and never_served and not (stable_state is not None and stable_state.available)
        )
        if first_deploy:
            phase = "Paused" if md.paused else "Pending"
            waiting = because(rollout.message or f"Waiting for revision {self.revision} to become ready.",
                              self.trouble(self.revision))
            conditions = [
                cond.Condition(cond.READY, "False", "ReplicasNotReady", waiting),
                cond.Condition(cond.PROGRESSING, "False" if md.paused else "True",
                               "Paused" if md.paused else "NewRevisionRollingOut", waiting),
                self.first_deploy_failing() or cond.Condition(cond.DEGRADED, "False", "AsExpected",
                                                              "No problem observed."),
            ]
        else:
            ready_message = (
                f"Revision {stable} serves {md.model.name} version {stable_version} with "
                f"{stable_state.ready if stable_state else 0} ready replicas."
            )
            rejected = rollout.rejection(self.revision)
            if phase_of_rollout in ("RolledBack",) or rejected is not None:
                phase = "Degraded"
                why = rejected.message if rejected is not None else rollout.message
                message = f"Revision {self.revision} was rolled back: {why}"
                # While traffic still moves back (the stable's pods are starting), the rollback is in progress.
                progressing = (
                    cond.Condition(cond.PROGRESSING, "True", "RollingBack", rollout.message or message)
                    if phase_of_rollout == "RollingBack"
                    else cond.Condition(cond.PROGRESSING, "False", "RolledBack", message)
                )
                conditions = [
                    cond.Condition(cond.READY, "True" if serving else "False", "RolledBack",
                                   f"{ready_message} {message}"),
                    progressing,
                    cond.Condition(cond.DEGRADED, "True", rejected.reason if rejected else "RolledBack", message),
                ]
            elif md.paused or phase_of_rollout == "Paused":
                phase = "Paused"
                message = rollout.message or "Rollout paused."
                conditions = [
                    cond.Condition(cond.READY, "True" if serving else "False", "Available" if serving
                                   else "ReplicasNotReady", ready_message),
                    cond.Condition(cond.PROGRESSING, "False", "Paused", message),
                    cond.Condition(cond.DEGRADED, "False", "AsExpected", "No problem observed."),
                ]
            elif canary or phase_of_rollout in ("Progressing", "Analyzing", "Promoting", "RollingBack"):
                phase = "Progressing"
                reason = {"Analyzing": "Analyzing", "Promoting": "Promoting", "RollingBack": "RollingBack"}.get(
                    phase_of_rollout, "NewRevisionRollingOut")
                message = because(rollout.message or f"Rolling out revision {canary or self.revision}.",
                                  self.trouble(canary or self.revision))
                conditions = [
                    cond.Condition(cond.READY, "True" if serving else "False",
                                   "PreviousRevisionServing" if serving else "ReplicasNotReady",
                                   f"{ready_message} {message}"),
                    cond.Condition(cond.PROGRESSING, "True", reason, message),
                    cond.Condition(cond.DEGRADED, "False", "AsExpected", "No problem observed."),
                ]
            elif stable_state is not None and stable_state.available:
                phase = "Ready"
                conditions = [
                    cond.Condition(cond.READY, "True", "Available", ready_message),
                    cond.Condition(cond.PROGRESSING, "False", "RolloutComplete", f"Revision {stable} is stable."),
                    cond.Condition(cond.DEGRADED, "False", "AsExpected", "No problem observed."),
                ]
            else:
                phase = "Degraded"
                have = stable_state.ready if stable_state else 0
                want = stable_state.desired if stable_state else desired_replicas
                message = because(f"Revision {stable} has {have}/{want} ready replicas.", self.trouble(stable))
                conditions = [
                    cond.Condition(cond.READY, "True" if serving else "False",
                                   "ReplicasUnavailable" if serving else "ReplicasNotReady", message),
                    cond.Condition(cond.PROGRESSING, "False", "RolloutComplete", f"Revision {stable} is stable."),
                    cond.Condition(cond.DEGRADED, "True", "ReplicasUnavailable", message),
                ]

        old_conditions = list(self.status.get("conditions") or [])
        new_conditions = cond.merge_conditions(old_conditions, conditions, generation=md.generation, now=self.now)
        had_ready = cond.find(old_conditions, cond.READY) is not None
        if had_ready and cond.changed(old_conditions, new_conditions, cond.READY):
            ready = cond.find(new_conditions, cond.READY) or {}
            expected = ready.get("status") == "True" or phase in ("Pending", "Progressing", "Paused")
            self.events.append(
                Event("Normal" if expected else "Warning", str(ready.get("reason")), str(ready.get("message")))
            )

        return {
            **self.status,
            "observedGeneration": md.generation,
            "phase": phase,
            "conditions": new_conditions,
            "replicas": replicas,
            "readyReplicas": ready_replicas,
            "desiredReplicas": desired_replicas,
            "selector": serving_selector(md.name, decision.weights),
            "url": f"http://{md.name}.{md.namespace}.svc.{self.config.cluster_domain}/v2/models/{md.model.name}",
            "currentRevision": self.revision,
            "stableRevision": stable,
            "canaryRevision": canary,
            "canaryVersion": self.version_of(canary),
            "canaryWeight": decision.weights.get(canary, 0) if canary else 0,
            "mirrorWeight": self.mirror_carried(decision),
            "modelName": md.model.name,
            "modelVersion": stable_version or md.model.version,
            "rollout": rollout.to_status(),
            "history": rollout.history_to_status(),
        }

    def version_of(self, revision: str) -> str:
        if not revision:
            return ""
        if revision == self.revision:
            return self.md.model.version
        template = self.template_for(revision) or {}
        return str((template.get("model") or {}).get("version") or "")
