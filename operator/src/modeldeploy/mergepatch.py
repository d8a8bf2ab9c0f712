"""RFC 7386 JSON merge patches computed from two documents (pure).

The operator writes `.status` with a merge patch. A merge patch only deletes a key it names with `null`, so
sending the whole desired status would leave behind every key the desired status no longer has (a cleared
`status.rollout.pausedAt` or `rollback` pin would survive on the server and come back at the next reconcile).
`create_merge_patch(current, desired)` names those keys with `null`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["create_merge_patch"]


def create_merge_patch(current: Mapping[str, Any], desired: Mapping[str, Any]) -> dict[str, Any]:
    """The merge patch that turns `current` into `desired`: changed keys, nested maps as nested patches, lists
    and scalars whole, and `None` for every key of `current` that `desired` lacks. `desired` holds no `None`
    values (a merge patch cannot express a stored null); keys equal in both are left out."""
    patch: dict[str, Any] = {}
    for key, value in desired.items():
        old = current.get(key, _MISSING)
        if old == value:
            continue
        if isinstance(value, Mapping) and isinstance(old, Mapping):
            patch[key] = create_merge_patch(old, value)
        else:
            patch[key] = value
    for key in current:
        if key not in desired:
            patch[key] = None
    return patch


_MISSING = object()
