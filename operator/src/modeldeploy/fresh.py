"""Objects as the operator last wrote them, until the watch stream catches up.

The operator decides from its watch caches. Right after a write the cache may still hold the older object; deciding
from it would repeat the write. The response of each write is kept here and preferred over an older cached copy;
once the watch delivers the same or a newer resourceVersion, the cached copy wins again (so a change made by
someone else afterwards is always seen).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from modeldeploy.compact import compact_object

Key = tuple[str, str, str]  # kind, namespace, name


def key_of(obj: Mapping[str, Any]) -> Key:
    meta = obj.get("metadata", {})
    return (str(obj.get("kind", "")), str(meta.get("namespace", "")), str(meta.get("name", "")))


def _newer_or_same(observed: Mapping[str, Any], mine: Mapping[str, Any]) -> bool:
    a = str(observed.get("metadata", {}).get("resourceVersion", ""))
    b = str(mine.get("metadata", {}).get("resourceVersion", ""))
    if a.isdigit() and b.isdigit():
        return int(a) >= int(b)
    return True  # Opaque versions: trust the watch.


class FreshObjects:
    """A small overlay over the watch caches, keyed by kind/namespace/name."""

    def __init__(self) -> None:
        self._objects: dict[Key, Mapping[str, Any]] = {}

    def __len__(self) -> int:
        return len(self._objects)

    def put(self, obj: Mapping[str, Any]) -> None:
        obj = compact_object(obj)  # Kept like the watch caches keep theirs: shared strings, no managedFields.
        self._objects[key_of(obj)] = obj

    def forget(self, key: Key) -> None:
        self._objects.pop(key, None)

    def items_for(self, namespace: str) -> list[tuple[Key, Mapping[str, Any]]]:
        """Every kept object in ``namespace``."""
        return [(k, v) for k, v in self._objects.items() if k[1] == namespace]

    def resolve(self, key: Key, observed: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
        """The freshest known copy of the object at ``key``."""
        mine = self._objects.get(key)
        if mine is None:
            return observed
        if observed is not None and _newer_or_same(observed, mine):
            del self._objects[key]
            return observed
        return mine
