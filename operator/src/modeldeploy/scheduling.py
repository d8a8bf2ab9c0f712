"""Where a ModelDeployment's pods could run, and how many GPUs are free there. Pure: plain data in, numbers out.

The GPU pre-flight of a rollout (``rollout.plan``) needs one number: the GPUs free for the pods the rollout adds.
``modeldeploy.capacity`` reads Nodes and Pods on demand and keeps them as a ``ClusterSnapshot`` of small records;
``free_gpus`` answers for one ModelDeployment (one ``GpuQuery``).

What counts (the scheduler's own arithmetic, restricted to what the pre-flight needs):

- A node counts when it is Ready, not cordoned (``spec.unschedulable``), matches the pods' ``nodeSelector`` and
  their required node affinity (``requiredDuringSchedulingIgnoredDuringExecution``: ``matchExpressions`` and
  ``matchFields`` on the node name), and every ``NoSchedule`` / ``NoExecute`` taint it has is tolerated by the
  pods' tolerations (the user's plus the one ``gpu.count`` adds). Preferred affinity, pod (anti-)affinity and
  topology spread constraints are not evaluated: they can only make fewer nodes fit, so the pre-flight may be
  optimistic for a spec that uses them, never pessimistic. Priority preemption is not evaluated either: GPUs of
  lower-priority pods count as used, so for pods with a high ``priorityClassName`` it may be pessimistic.
- Free on a node = its allocatable GPUs minus the GPUs requested by the non-terminated pods bound to it
  (``spec.nodeName`` set, phase not Succeeded or Failed). A pod's request of an extended resource is its
  ``requests`` (or, as Kubernetes defaults it, its ``limits``) summed over containers, or the largest init
  container's when that is more.
- Pods of the ModelDeployment itself count as used only for the revisions that keep running through the
  rollout (``GpuQuery.keep_revisions``: the stable, and the previous one while kept warm). GPUs held by its other
  revisions (the canary being checked, a canary it replaces) count as free: the plan's ``extra_pods`` already
  counts every pod the rollout runs above the stable's ``N``.
- A pod needs all its GPUs on one node, so only whole pods count: a node with 3 free GPUs holds one pod of 2
  GPUs and leaves 1 unusable (``rollout.replicas.usable_gpus``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from modeldeploy.drift import parse_quantity
from modeldeploy.labels import MODEL_DEPLOYMENT_LABEL, REVISION_LABEL
from modeldeploy.rollout.replicas import usable_gpus

_BLOCKING_EFFECTS = ("NoSchedule", "NoExecute")
_TERMINATED = ("Succeeded", "Failed")


def parse_count(value: object) -> int:
    """A Kubernetes quantity as a whole count (extended resources are integers): ``"8"``, ``8``, ``"8000m"``.

    Anything that is not a quantity counts as 0, and so does a negative one: a damaged object never makes GPUs
    appear out of nothing.
    """
    quantity = parse_quantity(value)
    return 0 if quantity is None else max(0, int(quantity))


@dataclass(frozen=True)
class Taint:
    key: str
    value: str
    effect: str


@dataclass(frozen=True)
class NodeInfo:
    """What the pre-flight keeps of a Node."""

    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    taints: tuple[Taint, ...] = ()
    allocatable: Mapping[str, int] = field(default_factory=dict)
    """Extended resources only (names with a ``/``: ``nvidia.com/gpu``)."""
    schedulable: bool = True
    """Ready and not cordoned."""


@dataclass(frozen=True)
class PodUse:
    """What the pre-flight keeps of a bound, running pod that requests extended resources."""

    namespace: str
    node: str
    requests: Mapping[str, int]
    model_deployment: str = ""
    """The ``modeldeploy.io/model-deployment`` label ("" for any other pod)."""
    revision: str = ""


@dataclass(frozen=True)
class ClusterSnapshot:
    """GPU-relevant Nodes and Pods of the cluster at one moment."""

    nodes: tuple[NodeInfo, ...] = ()
    pods: tuple[PodUse, ...] = ()


@dataclass(frozen=True)
class GpuQuery:
    """One ModelDeployment's question: how many GPUs could its new pods get?"""

    namespace: str
    name: str
    resource_name: str
    gpus_per_pod: int
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: tuple[Mapping[str, Any], ...] = ()
    affinity: Mapping[str, Any] | None = None
    keep_revisions: frozenset[str] = frozenset()
    """This ModelDeployment's revisions whose pods keep their GPUs through the rollout."""


@dataclass(frozen=True)
class GpuFree:
    """The answer to a ``GpuQuery``."""

    nodes: int
    """Nodes the pods could be scheduled on."""
    free: int
    """Free GPUs on those nodes."""
    usable: int
    """Free GPUs in whole pods (``gpus_per_pod`` on one node each): what the pre-flight compares with."""


# --- reading objects ----------------------------------------------------------------------------------------


def _extended(resources: object) -> dict[str, int]:
    if not isinstance(resources, Mapping):
        return {}
    return {str(k): parse_count(v) for k, v in resources.items() if "/" in str(k) and parse_count(v) > 0}


def parse_node(node: Mapping[str, Any], *, extended_only: bool = True) -> NodeInfo | None:
    """The pre-flight's record of a Node; None for a node with no extended resource at all (``extended_only``)."""
    meta = node.get("metadata") or {}
    spec = node.get("spec") or {}
    status = node.get("status") or {}
    allocatable = _extended(status.get("allocatable"))
    name = meta.get("name")
    if (extended_only and not allocatable) or not isinstance(name, str):
        return None
    ready = any(
        isinstance(c, Mapping) and c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or []
    )
    taints = tuple(
        Taint(str(t.get("key") or ""), str(t.get("value") or ""), str(t.get("effect") or ""))
        for t in spec.get("taints") or []
        if isinstance(t, Mapping)
    )
    labels = meta.get("labels") or {}
    return NodeInfo(
        name=name,
        labels={str(k): str(v) for k, v in labels.items()} if isinstance(labels, Mapping) else {},
        taints=taints,
        allocatable=allocatable,
        schedulable=ready and not spec.get("unschedulable"),
    )


def pod_requests(pod_spec: Mapping[str, Any]) -> dict[str, int]:
    """A pod's effective request of each extended resource (what the scheduler reserves on its node)."""
    total: dict[str, int] = {}
    for container in pod_spec.get("containers") or []:
        resources = (container or {}).get("resources") or {}
        limits = _extended(resources.get("limits"))
        requests = {**limits, **_extended(resources.get("requests"))}
        for name, count in requests.items():
            total[name] = total.get(name, 0) + count
    for container in pod_spec.get("initContainers") or []:
        resources = (container or {}).get("resources") or {}
        requests = {**_extended(resources.get("limits")), **_extended(resources.get("requests"))}
        for name, count in requests.items():
            total[name] = max(total.get(name, 0), count)
    for name, count in _extended(pod_spec.get("overhead")).items():
        total[name] = total.get(name, 0) + count
    return total


def parse_pod(pod: Mapping[str, Any]) -> PodUse | None:
    """The pre-flight's record of a Pod; None when it holds no extended resource on any node."""
    spec = pod.get("spec") or {}
    node = spec.get("nodeName")
    if not node or (pod.get("status") or {}).get("phase") in _TERMINATED:
        return None
    requests = pod_requests(spec)
    if not requests:
        return None
    meta = pod.get("metadata") or {}
    labels = meta.get("labels") or {}
    return PodUse(
        namespace=str(meta.get("namespace") or ""),
        node=str(node),
        requests=requests,
        model_deployment=str(labels.get(MODEL_DEPLOYMENT_LABEL) or ""),
        revision=str(labels.get(REVISION_LABEL) or ""),
    )


def snapshot_of(nodes: Iterable[Mapping[str, Any]], pods: Iterable[Mapping[str, Any]]) -> ClusterSnapshot:
    """Records of the GPU nodes and of the pods bound to them."""
    node_records = tuple(n for n in (parse_node(obj) for obj in nodes) if n is not None)
    names = {n.name for n in node_records}
    pod_records = tuple(p for p in (parse_pod(obj) for obj in pods) if p is not None and p.node in names)
    return ClusterSnapshot(node_records, pod_records)


# --- scheduling predicates ------------------------------------------------------------------------------------


def tolerates(toleration: Mapping[str, Any], taint: Taint) -> bool:
    """Whether one toleration tolerates one taint (Kubernetes' ``Toleration.ToleratesTaint``)."""
    effect = str(toleration.get("effect") or "")
    if effect and effect != taint.effect:
        return False
    key = str(toleration.get("key") or "")
    operator = str(toleration.get("operator") or "Equal")
    if not key:
        return operator == "Exists"
    if key != taint.key:
        return False
    if operator == "Exists":
        return True
    return operator == "Equal" and str(toleration.get("value") or "") == taint.value


def _requirement_matches(requirement: Mapping[str, Any], values: Mapping[str, str]) -> bool:
    key = str(requirement.get("key") or "")
    operator = requirement.get("operator")
    wanted = [str(v) for v in requirement.get("values") or []]
    present = key in values
    actual = values.get(key, "")
    if operator == "In":
        return present and actual in wanted
    if operator == "NotIn":
        return not present or actual not in wanted
    if operator == "Exists":
        return present
    if operator == "DoesNotExist":
        return not present
    if operator in ("Gt", "Lt") and present and len(wanted) == 1:
        try:
            left, right = int(actual), int(wanted[0])
        except ValueError:
            return False
        return left > right if operator == "Gt" else left < right
    return False


def _term_matches(term: Mapping[str, Any], node: NodeInfo) -> bool:
    expressions = list(term.get("matchExpressions") or [])
    fields = list(term.get("matchFields") or [])
    if not expressions and not fields:
        return False  # An empty term matches no node (Kubernetes' NodeSelectorTerm semantics).
    return all(_requirement_matches(e, node.labels) for e in expressions) and all(
        _requirement_matches(f, {"metadata.name": node.name}) for f in fields
    )


def node_fits(
    node: NodeInfo,
    *,
    node_selector: Mapping[str, str],
    tolerations: Sequence[Mapping[str, Any]] = (),
    affinity: Mapping[str, Any] | None = None,
) -> bool:
    """Whether pods with this placement could be scheduled on ``node`` (resources aside)."""
    if not node.schedulable:
        return False
    if any(node.labels.get(k) != v for k, v in node_selector.items()):
        return False
    for taint in node.taints:
        if taint.effect in _BLOCKING_EFFECTS and not any(tolerates(t, taint) for t in tolerations):
            return False
    required = ((affinity or {}).get("nodeAffinity") or {}).get("requiredDuringSchedulingIgnoredDuringExecution")
    if isinstance(required, Mapping):
        terms = [t for t in required.get("nodeSelectorTerms") or [] if isinstance(t, Mapping)]
        if not any(_term_matches(term, node) for term in terms):
            return False
    return True


def free_gpus(snapshot: ClusterSnapshot, query: GpuQuery) -> GpuFree:
    """Free GPUs for the query's pods: on the nodes they fit, less what other pods hold (see the module doc)."""
    fitting = [
        n
        for n in snapshot.nodes
        if node_fits(n, node_selector=query.node_selector, tolerations=query.tolerations, affinity=query.affinity)
    ]
    used: dict[str, int] = {n.name: 0 for n in fitting}
    for pod in snapshot.pods:
        if pod.node not in used:
            continue
        own = pod.namespace == query.namespace and pod.model_deployment == query.name
        if own and pod.revision not in query.keep_revisions:
            continue
        used[pod.node] += pod.requests.get(query.resource_name, 0)
    per_node = [max(0, n.allocatable.get(query.resource_name, 0) - used[n.name]) for n in fitting]
    return GpuFree(
        nodes=len(fitting),
        free=sum(per_node),
        usable=usable_gpus(per_node, query.gpus_per_pod),
    )
