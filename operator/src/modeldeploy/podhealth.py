"""Why a revision's pods are not ready, read from what the cluster reports (pure).

A rollout that waits for pods says how many are ready; at 3 a.m. the question is why the others are not. The
answer is already in the objects the operator watches, spread over them:

- a container that keeps exiting: its exit code, its reason (``OOMKilled``) and its termination message, which
  the runtime image fills with the error it logged last (``Fetch failed: sha256 mismatch ...``, ``Cannot load
  model ...``; docs/runtime.md, "Termination message"). Init containers count: the model fetch is one;
- a container that cannot start: the image cannot be pulled, a Secret or ConfigMap it names is missing
  (``ErrImagePull``, ``ImagePullBackOff``, ``CreateContainerConfigError`` and the like);
- pods that cannot be created at all: the Deployment's ``ReplicaFailure`` condition (a ResourceQuota, a missing
  PriorityClass, an admission policy);
- pods the scheduler cannot place: ``PodScheduled=False`` with reason ``Unschedulable``, whose message counts the
  nodes and what each lacks.

:func:`revision_trouble` turns the first of these into one sentence for the ModelDeployment's conditions and for
the reason of a rollback. It reads status only and decides nothing: whether a revision is rejected stays with the
rollout state machine (crash-looping pods, the progress deadline).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from modeldeploy.types import as_items, as_map

__all__ = ["CRASH_LOOP_RESTARTS", "DETAIL_CHARS", "container_trouble", "crash_looping", "revision_trouble"]

CRASH_LOOP_RESTARTS = 3
"""Restarts after which a container waiting in CrashLoopBackOff marks its revision as crash-looping."""

DETAIL_CHARS = 400
"""Characters kept of a message the cluster wrote (a termination message, the scheduler's): the status message
stays short, and under the CRD's 4096-character limits with the operator's own words around it."""

CANNOT_START = frozenset(
    {
        "ErrImagePull",
        "ImagePullBackOff",
        "InvalidImageName",
        "ErrImageNeverPull",
        "CreateContainerConfigError",
        "CreateContainerError",
        "RunContainerError",
    }
)
"""Reasons a container waits with that do not pass by themselves: the pod needs a fix (an image, a Secret)."""

_SPACE = re.compile(r"\s+")


def _detail(text: object) -> str:
    """A message of the cluster's on one line, cut to :data:`DETAIL_CHARS`."""
    line = _SPACE.sub(" ", str(text or "")).strip()
    return line if len(line) <= DETAIL_CHARS else line[: DETAIL_CHARS - 1].rstrip() + "…"


def _statuses(pod: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    """The pod's container statuses, init containers first (they run first)."""
    status = as_map(pod.get("status"))
    for key in ("initContainerStatuses", "containerStatuses"):
        yield from as_items(status.get(key))


def crash_looping(pods: Sequence[Mapping[str, Any]]) -> bool:
    """Whether any container of these pods, init containers included, waits in CrashLoopBackOff after several
    restarts."""
    for pod in pods:
        for container in _statuses(pod):
            waiting = as_map(as_map(container.get("state")).get("waiting"))
            restarts = container.get("restartCount")
            looping = isinstance(restarts, int) and restarts >= CRASH_LOOP_RESTARTS
            if waiting.get("reason") == "CrashLoopBackOff" and looping:
                return True
    return False


def container_trouble(pod: Mapping[str, Any]) -> str:
    """What keeps a container of this pod from running, in one sentence; "" when none of its containers that
    are not ready says.

    A container that exited with an error (now, or before its current restart) gives its exit code, its reason
    when it says more than ``Error`` (``OOMKilled``) and its termination message. A container waiting for
    something that will not come by itself (:data:`CANNOT_START`) gives that reason and the kubelet's message.
    The restart count is left out on purpose: it grows with every restart, and the status message would change
    (and be written, and posted as an Event) with it.
    """
    name = str(as_map(pod.get("metadata")).get("name") or "")
    for container in _statuses(pod):
        if container.get("ready") is True:
            continue
        where = f"container {container.get('name')} of pod {name}"
        state = as_map(container.get("state"))
        waiting = as_map(state.get("waiting"))
        reason = waiting.get("reason")
        if isinstance(reason, str) and reason in CANNOT_START:
            message = _detail(waiting.get("message"))
            return f"{where} cannot start: {reason}" + (f": {message}" if message else "")
        for terminated in (state.get("terminated"), as_map(container.get("lastState")).get("terminated")):
            if not isinstance(terminated, Mapping):
                continue
            code = terminated.get("exitCode")
            reason = str(terminated.get("reason") or "")
            if code in (0, None) and reason != "OOMKilled":
                continue
            why = f" ({reason})" if reason and reason not in ("Error", "Completed") else ""
            message = _detail(terminated.get("message"))
            return f"{where} exited with code {code}{why}" + (f": {message}" if message else "")
    return ""


def _unschedulable(pod: Mapping[str, Any]) -> str | None:
    """The scheduler's message when it cannot place this pod; None when it can, or has not said."""
    if as_map(pod.get("spec")).get("nodeName"):
        return None
    for condition in as_items(as_map(pod.get("status")).get("conditions")):
        if (
            condition.get("type") == "PodScheduled"
            and condition.get("status") == "False"
            and condition.get("reason") == "Unschedulable"
        ):
            return _detail(condition.get("message"))
    return None


def revision_trouble(deployment: Mapping[str, Any] | None, pods: Sequence[Mapping[str, Any]]) -> str:
    """Why this revision's pods are not (all) ready, in one sentence; "" when nothing the cluster reports says.

    ``pods`` are the revision's pods that are not being deleted. In order: a container of a pod (pods by name,
    so the answer is the same on every pass), pods that cannot be created, pods that cannot be scheduled.
    """
    ordered = sorted(pods, key=lambda p: str(as_map(p.get("metadata")).get("name") or ""))
    for pod in ordered:
        trouble = container_trouble(pod)
        if trouble:
            return trouble
    for condition in as_items(as_map(as_map(deployment).get("status")).get("conditions")):
        if condition.get("type") == "ReplicaFailure" and condition.get("status") == "True":
            message = _detail(condition.get("message"))
            return "pods cannot be created" + (f": {message}" if message else "")
    waiting = [message for message in map(_unschedulable, ordered) if message is not None]
    if waiting:
        count = f"{len(waiting)} pod cannot" if len(waiting) == 1 else f"{len(waiting)} pods cannot"
        return f"{count} be scheduled" + (f": {waiting[0]}" if waiting[0] else "")
    return ""
