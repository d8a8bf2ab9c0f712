"""Status conditions in the shape of ``metav1.Condition``, computed without a clock of their own."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

ConditionStatus = Literal["True", "False", "Unknown"]

READY = "Ready"
PROGRESSING = "Progressing"
DEGRADED = "Degraded"
CONDITION_TYPES = (READY, PROGRESSING, DEGRADED)


@dataclass(frozen=True)
class Condition:
    """One condition as the operator wants it, before timestamps are merged in."""

    type: str
    status: ConditionStatus
    reason: str
    message: str


def rfc3339(now: datetime) -> str:
    """Format a timestamp the way the API server does (UTC, second precision, ``Z``)."""
    return now.astimezone(UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def find(conditions: Iterable[Mapping[str, Any]], type_: str) -> Mapping[str, Any] | None:
    """The condition of the given type, if present."""
    for cond in conditions:
        if cond.get("type") == type_:
            return cond
    return None


def merge_conditions(
    old: Sequence[Mapping[str, Any]],
    new: Sequence[Condition],
    *,
    generation: int,
    now: datetime,
) -> list[dict[str, Any]]:
    """Render desired conditions, keeping ``lastTransitionTime`` where the status did not change.

    Conditions of other types already present (written by someone else) are kept as they are, after ours.
    """
    rendered: list[dict[str, Any]] = []
    for cond in new:
        previous = find(old, cond.type)
        if previous is not None and previous.get("status") == cond.status and previous.get("lastTransitionTime"):
            transition = str(previous["lastTransitionTime"])
        else:
            transition = rfc3339(now)
        rendered.append(
            {
                "type": cond.type,
                "status": cond.status,
                "reason": cond.reason,
                "message": cond.message,
                "observedGeneration": generation,
                "lastTransitionTime": transition,
            }
        )
    ours = {c.type for c in new}
    rendered.extend(dict(c) for c in old if c.get("type") not in ours)
    return rendered


def changed(
    old: Sequence[Mapping[str, Any]],
    new: Sequence[Mapping[str, Any]],
    type_: str,
    *,
    include_message: bool = False,
) -> bool:
    """Whether a condition type's status or reason (and, if asked, message) differs between two lists."""
    before, after = find(old, type_), find(new, type_)
    if before is None or after is None:
        return before is not after
    keys = ("status", "reason", "message") if include_message else ("status", "reason")
    return any(before.get(k) != after.get(k) for k in keys)
