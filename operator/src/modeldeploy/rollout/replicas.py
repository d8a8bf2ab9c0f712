"""Replica arithmetic for rollouts. Pure functions, table-tested.

Conventions (argo-rollouts' ``GetDesiredCanaryWeight`` / canary replica counts):

- ``N`` is the desired pod count of the whole ModelDeployment (``spec.replicas`` or the autoscaler's choice),
  sized for 100% of the traffic. A revision serving ``w`` percent needs ``ceil(N * w / 100)`` ready pods.
- Exact routing (Gateway API) with ``Surge`` capacity: the stable keeps all ``N`` pods until promotion and
  the canary gets ``ceil(N * w / 100)`` extra pods.
- ``Neutral`` capacity: canary pods come out of the stable's budget; stable + canary never exceed
  ``N + maxSurgePods``. When that budget cannot hold both revisions' needs, the canary is given less and
  the weight actually applied is lowered to what its pods can serve.
- Replica-ratio routing (one Service over both revisions): traffic follows the ready pods, so the weight can
  only be approximated, in steps of ``100 / (canary + stable pods)`` percent.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from modeldeploy.rollout.config import CapacityMode


def pods_for_weight(total: int, weight: int) -> int:
    """Ready pods a revision needs to serve ``weight`` percent of traffic sized for ``total`` pods."""
    if total < 0 or not 0 <= weight <= 100:
        raise ValueError(f"need total >= 0 and 0 <= weight <= 100, got total={total} weight={weight}")
    return math.ceil(total * weight / 100)


def weight_for_pods(total: int, pods: int) -> int:
    """The largest whole weight that ``pods`` ready pods can serve (inverse of ``pods_for_weight``)."""
    if total <= 0:
        return 100 if pods > 0 else 0
    return min(100, (100 * pods) // total)


def ratio_weight(canary_pods: int, stable_pods: int) -> int:
    """Canary weight (rounded percent) when one Service spreads traffic evenly over all ready pods."""
    pods = canary_pods + stable_pods
    if pods <= 0:
        return 0
    return round(100 * canary_pods / pods)


def ratio_granularity(total_pods: int) -> float:
    """Smallest weight step replica-ratio routing can express with ``total_pods`` pods (100 / pods)."""
    return 100.0 if total_pods <= 0 else 100.0 / total_pods


@dataclass(frozen=True)
class CanaryScale:
    """Target replica counts for one canary weight, and the weight those pods allow."""

    canary: int
    stable: int
    weight: int
    """The canary weight to apply once the canary's pods are ready (may be below the requested one)."""


def plan_canary_scale(total: int, weight: int, *, mode: CapacityMode, surge: int, exact_routing: bool) -> CanaryScale:
    """Canary and stable replica targets for ``weight`` percent to the canary.

    ``surge`` is ``maxSurgePods`` (Neutral only). With ``exact_routing`` (Gateway API) the applied weight is
    exact; without (replica ratio) it is the pod ratio of the targets.
    """
    if total < 0 or not 0 <= weight <= 100 or surge < 0:
        raise ValueError(f"need total >= 0, 0 <= weight <= 100, surge >= 0; got {total}, {weight}, {surge}")
    if weight == 100:
        return CanaryScale(canary=total, stable=0, weight=100)
    if exact_routing:
        canary = pods_for_weight(total, weight)
        stable_need = pods_for_weight(total, 100 - weight)
        if mode == "Surge":
            return CanaryScale(canary=canary, stable=total, weight=weight)
        budget = total + surge
        if canary + stable_need <= budget:
            return CanaryScale(canary=canary, stable=stable_need, weight=weight)
        canary = max(0, budget - stable_need)
        stable = min(total, budget - canary)
        # What the canary's pods can serve, but never more on the stable than its pods can: whole percents
        # cannot always be exact, and then the stable is the one protected.
        applied = max(min(weight, weight_for_pods(total, canary)), 100 - weight_for_pods(total, stable))
        return CanaryScale(canary=canary, stable=pods_for_weight(total, 100 - applied), weight=applied)
    # Replica ratio: the stable keeps at least one pod while it has any traffic share.
    canary = pods_for_weight(total, weight)
    stable = max(1 if total > 0 else 0, total - canary)
    if mode == "Neutral":
        canary = min(canary, max(0, total + surge - stable))
    return CanaryScale(canary=canary, stable=stable, weight=ratio_weight(canary, stable) if canary else 0)


def plan_mirror_scale(total: int, percent: int, *, mode: CapacityMode, surge: int) -> CanaryScale:
    """Canary pods for a copy of ``percent`` percent of the requests (a ``setMirror`` step; Gateway API only).

    The stable keeps all ``total`` pods: it still answers every request. The canary gets the pods for its copy
    of the traffic, ``ceil(total * percent / 100)``; in Neutral mode at most ``surge`` of them, and the percent
    applied (``weight``) is then what those pods can serve, possibly 0.
    """
    if total < 0 or not 0 <= percent <= 100 or surge < 0:
        raise ValueError(f"need total >= 0, 0 <= percent <= 100, surge >= 0; got {total}, {percent}, {surge}")
    canary = pods_for_weight(total, percent)
    if mode == "Neutral" and canary > surge:
        return CanaryScale(canary=surge, stable=total, weight=weight_for_pods(total, surge) if surge else 0)
    return CanaryScale(canary=canary, stable=total, weight=percent)


def neutral_promotion_scale(total: int, *, surge: int, weight: int, canary_ready: int) -> CanaryScale:
    """One pass of a promotion under Neutral capacity: the canary grows to ``total`` pods while the stable
    shrinks, stable + canary within ``total + surge``, and neither revision is left with a share of the traffic
    and no pod for it.

    The canary takes the share of its ready pods (never less than ``weight``, what it already has) and the stable
    keeps the pods for the rest; the budget's room beyond that goes to the canary's next pods. Where there is no
    room for one more canary pod (``surge`` 0), one revision serves its share one pod short for a while, the
    price of Neutral capacity as in a weight step: the stable gives up a pod while the canary has no ready pod;
    after that the canary takes one more pod's share ahead of that pod, so the stable's last pod goes only with
    its last share. Whole percents favour the stable, as in ``plan_canary_scale``.
    """
    if total < 0 or not 0 <= weight <= 100 or surge < 0 or canary_ready < 0:
        raise ValueError(f"need total, surge, canary_ready >= 0 and 0 <= weight <= 100; got {total}, {surge}, "
                         f"{canary_ready}, {weight}")  # fmt: skip
    if canary_ready >= total:
        return CanaryScale(canary=total, stable=0, weight=100)
    budget = total + surge
    # The canary pods whose share the canary holds: its ready pods, or more where the weight is already ahead.
    held = max(canary_ready, total - pods_for_weight(total, 100 - weight))
    canary = min(total, budget - (total - held))
    if canary <= canary_ready:
        if canary_ready == 0:
            canary = 1
        else:
            held = canary = canary_ready + 1
    stable = min(total, budget - canary)
    return CanaryScale(canary=canary, stable=stable, weight=max(weight, 100 - weight_for_pods(total, total - held)))


def _hold(mode: CapacityMode, budget: int, have: int, own_target: int, other_target: int) -> int:
    """Pods one revision keeps while the other scales to ``other_target``: what it has at the applied weight
    (``have``), never below its own target; in Neutral mode the ``budget`` (``total + surge``) forces it down to
    what the other's target leaves."""
    keep = max(own_target, have)
    if mode == "Neutral":
        keep = max(own_target, min(keep, budget - other_target))
    return keep


def transition_stable(
    total: int,
    *,
    mode: CapacityMode,
    surge: int,
    exact_routing: bool,
    applied_weight: int,
    target: CanaryScale,
) -> int:
    """Stable replicas while the canary scales towards ``target`` and the traffic is still ``applied_weight``.

    The stable keeps what it has at the applied weight until the canary is ready, except in Neutral mode
    where the budget ``total + surge`` forces it to give up pods for the canary's target first.
    """
    current = plan_canary_scale(total, applied_weight, mode=mode, surge=surge, exact_routing=exact_routing)
    return _hold(mode, total + surge, current.stable, target.stable, target.canary)


def transition_canary(
    total: int,
    *,
    mode: CapacityMode,
    surge: int,
    exact_routing: bool,
    applied_weight: int,
    target: CanaryScale,
) -> int:
    """Canary replicas while a step lowers the weight: the stable scales towards ``target`` and the traffic is
    still ``applied_weight`` (the mirror of ``transition_stable``).

    The canary keeps what it has at the applied weight until the stable's pods are ready, except in Neutral mode
    where the budget ``total + surge`` forces it to give up pods for the stable's target first.
    """
    current = plan_canary_scale(total, applied_weight, mode=mode, surge=surge, exact_routing=exact_routing)
    return _hold(mode, total + surge, current.canary, target.canary, target.stable)


def lowering_scale(
    total: int,
    *,
    mode: CapacityMode,
    surge: int,
    exact_routing: bool,
    applied_weight: int,
    target: CanaryScale,
    stable_ready: int,
    canary_desired: int,
) -> CanaryScale:
    """One pass of a step that lowers the canary's weight from ``applied_weight`` to ``target.weight`` while the
    stable's ready pods cannot serve its new share yet: the pods and the weight for this pass.

    The stable takes back the traffic its ready pods serve as they become ready, and the canary keeps the rest
    and the pods for it, so neither side is short of pods. With exact routing that is a weight
    (``100 - weight_for_pods(stable_ready)``, never above ``applied_weight``); with replica-ratio routing the
    traffic follows the ready pods, so the canary keeps enough pods for ``total`` ready in all and the weight
    stays. The canary never scales up here. Neutral capacity gives the stable what ``total + surge`` leaves
    beside the canary's pods; when that leaves no stable pod to wait for (no surge), the canary gives up pods
    for the stable's target first (``transition_canary``), the mirror of a step that raises the weight.
    """
    if exact_routing:
        weight = max(target.weight, min(applied_weight, 100 - weight_for_pods(total, stable_ready)))
        canary = pods_for_weight(total, weight)
    else:
        weight = applied_weight
        canary = total - stable_ready
    canary = max(target.canary, min(canary, canary_desired))
    stable = target.stable
    if mode == "Neutral":
        stable = min(stable, total + surge - canary)
        if stable <= stable_ready:
            budget = transition_canary(
                total, mode=mode, surge=surge, exact_routing=exact_routing, applied_weight=weight, target=target
            )
            canary, stable = min(canary, budget), target.stable
    return CanaryScale(canary=canary, stable=stable, weight=weight)


def rollback_canary_weight(
    total: int,
    *,
    applied_weight: int,
    stable_ready: int,
    stable_target: int,
    canary_ready: int,
    exact_routing: bool,
) -> int:
    """Traffic percent a rejected canary keeps while the stable scales back up for a rollback; 0: move it all now.

    The canary keeps traffic only while it serves some (``applied_weight`` > 0) with ready pods, and the stable's
    ready pods cover neither the whole traffic (``total``) nor all the pods it may have now (``stable_target``,
    below ``total`` when a Neutral budget holds it back while the canary keeps its pods: waiting gains nothing
    more then). With exact routing the stable takes back what its ready pods serve and the canary keeps the rest,
    never more than it had. With replica-ratio routing (one Service over both revisions) the weight is the
    canary's share of all ready pods, between 1 and 99 so that the Service keeps selecting both revisions.
    """
    if applied_weight <= 0 or canary_ready <= 0 or stable_ready >= min(total, stable_target):
        return 0
    if exact_routing:
        return min(applied_weight, 100 - weight_for_pods(total, stable_ready))
    return min(99, max(1, ratio_weight(canary_ready, stable_ready)))


def rolling_update_step(
    total: int,
    *,
    max_surge: int,
    max_unavailable: int,
    new_desired: int,
    new_ready: int,
    old_desired: int,
    old_ready: int,
) -> tuple[int, int]:
    """Next (new, old) replica counts of a RollingUpdate, as the Deployment controller computes them.

    Scale the new revision up within ``total + max_surge`` pods, then take old pods away while at least
    ``total - max_unavailable`` pods stay ready (not-ready old pods go first).
    """
    if max_surge == 0 and max_unavailable == 0:
        max_unavailable = 1
    allowed = total + max_surge
    new = min(total, max(new_desired, allowed - old_desired))
    min_available = max(0, total - max_unavailable)
    removable = max(0, new_ready + old_ready - min_available)
    unready_old = max(0, old_desired - old_ready)
    old = max(0, old_desired - min(old_desired, unready_old + removable))
    return new, old


def usable_gpus(free_per_node: Sequence[int], gpus_per_pod: int) -> int:
    """Free GPUs that new pods of ``gpus_per_pod`` GPUs each can actually use: a pod takes all its GPUs from one
    node, so each node contributes whole pods only (3 free GPUs hold one 2-GPU pod; the third stays idle).

    ``gpus_per_pod`` 0 (a CPU model) uses none. Negative free counts (a node over-committed by pods bound before
    a device plugin shrank its allocatable) count as 0.
    """
    if gpus_per_pod < 0:
        raise ValueError(f"need gpus_per_pod >= 0, got {gpus_per_pod}")
    if gpus_per_pod == 0:
        return 0
    return sum(max(0, free) // gpus_per_pod * gpus_per_pod for free in free_per_node)


@dataclass(frozen=True)
class GpuPlan:
    """Result of the GPU pre-flight check."""

    ok: bool
    extra_pods: int
    gpus_needed: int
    gpus_free: int
    message: str


def plan_gpu_capacity(
    *,
    gpus_per_pod: int,
    extra_pods: int,
    gpus_free: int,
) -> GpuPlan:
    """Does the cluster have the GPUs for the pods a rollout adds above the current ones?

    ``extra_pods`` comes from ``max_extra_pods``; ``gpus_free`` is allocatable minus requested GPUs on the
    nodes the pods can use, in whole pods per node (``usable_gpus``; ``modeldeploy.scheduling.free_gpus``
    computes it from Nodes and Pods).
    """
    if gpus_per_pod < 0 or extra_pods < 0:
        raise ValueError(f"need gpus_per_pod >= 0 and extra_pods >= 0, got {gpus_per_pod}, {extra_pods}")
    needed = gpus_per_pod * extra_pods
    if needed <= gpus_free:
        return GpuPlan(
            True,
            extra_pods,
            needed,
            gpus_free,
            f"{needed} GPUs needed for {extra_pods} extra pods, {gpus_free} free",
        )
    return GpuPlan(
        False,
        extra_pods,
        needed,
        gpus_free,
        f"The rollout needs {needed} GPUs for {extra_pods} extra pods but only {gpus_free} are free; "
        "new pods would stay Pending (use capacity mode Neutral with a smaller maxSurgePods)",
    )


def max_extra_pods(
    total: int,
    *,
    strategy: Literal["RollingUpdate", "Canary", "BlueGreen"],
    weights: tuple[int, ...] = (),
    mode: CapacityMode = "Surge",
    surge: int = 0,
    exact_routing: bool = True,
    rolling_max_surge: int = 0,
) -> int:
    """Most pods the rollout runs above ``total`` at any moment (for the GPU pre-flight)."""
    if strategy == "BlueGreen":
        return total
    if strategy == "RollingUpdate":
        return rolling_max_surge
    if mode == "Neutral":
        return surge
    # Walk the steps as the state machine does: while the canary scales to a step's target, the stable keeps
    # what it had at the weight applied before (``transition_stable``); a step that lowers the weight has the
    # canary keep its pods while the stable scales up (``transition_canary``); promotion is the last step (100).
    extra = 0
    applied = 0
    for weight in (*weights, 100):
        target = plan_canary_scale(total, weight, mode=mode, surge=surge, exact_routing=exact_routing)
        current = plan_canary_scale(total, applied, mode=mode, surge=surge, exact_routing=exact_routing)
        if target.weight < applied:
            canary, stable = _hold(mode, total + surge, current.canary, target.canary, target.stable), target.stable
        else:
            canary, stable = target.canary, _hold(mode, total + surge, current.stable, target.stable, target.canary)
        extra = max(extra, canary + stable - total)
        applied = target.weight
    return extra
