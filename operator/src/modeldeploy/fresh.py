"""Objects as the operator last wrote them, until the watch stream catches up; and objects the caches still hold
that are gone.

The operator decides from its watch caches. Right after a write the cache may still hold the older object; deciding
from it would repeat the write. The response of each write is kept here and preferred over an older cached copy;
once the watch delivers the same or a newer resourceVersion, the cached copy wins again (so a change made by
someone else afterwards is always seen).

A watch that cannot resume (410 Gone) lists again, and kopf keeps in its caches every object that the new list no
longer has: deleted while the watch was down, they would stay in the operator's view for as long as it runs (a
Deployment deleted then would never be created again). :func:`ghosts` finds them by comparing the caches with a
list; :meth:`FreshObjects.mark_gone` hides each (by uid: kopf's caches keep it for good, also beside a new object
of the same name).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from modeldeploy.compact import compact_object

Key = tuple[str, str, str]  # kind, namespace, name


def key_of(obj: Mapping[str, Any]) -> Key:
    meta = obj.get("metadata", {})
    return (str(obj.get("kind", "")), str(meta.get("namespace", "")), str(meta.get("name", "")))


def uid_of(obj: Mapping[str, Any]) -> str:
    return str(obj.get("metadata", {}).get("uid") or "")


def _version(obj: Mapping[str, Any]) -> int | None:
    text = str(obj.get("metadata", {}).get("resourceVersion", ""))
    return int(text) if text.isdigit() else None


def ghosts(
    cached: Iterable[Mapping[str, Any]], listed: Iterable[Mapping[str, Any]], list_version: str
) -> list[Mapping[str, Any]]:
    """The cached objects that a list read at ``list_version`` shows are gone: those whose uid the list does not
    have, and that the list is newer than (a cached object with a newer resourceVersion was created after the list
    was read). Opaque resourceVersions find nothing: without an order, a cached object missing from the list may
    just be newer than it."""
    at = int(list_version) if list_version.isdigit() else None
    if at is None:
        return []
    present = {uid_of(obj) for obj in listed}
    return [
        obj
        for obj in cached
        if uid_of(obj) and uid_of(obj) not in present and (version := _version(obj)) is not None and version <= at
    ]


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
        self._gone: set[tuple[Key, str]] = set()  # (key, uid) of cached objects that are gone

    def __len__(self) -> int:
        return len(self._objects)

    def put(self, obj: Mapping[str, Any]) -> None:
        obj = compact_object(obj)  # Kept like the watch caches keep theirs: shared strings, no managedFields.
        self._objects[key_of(obj)] = obj

    def forget(self, key: Key) -> None:
        """The object at ``key`` is deleted (the watch said so, or the operator deleted it)."""
        self._objects.pop(key, None)

    def mark_gone(self, obj: Mapping[str, Any]) -> bool:
        """The cached ``obj`` is gone from the API server: hide it for as long as the cache holds it (another object
        under the same name has another uid). Whether it was not hidden yet."""
        mark = (key_of(obj), uid_of(obj))
        self._objects.pop(mark[0], None)
        if mark in self._gone:
            return False
        self._gone.add(mark)
        return True

    def is_gone(self, obj: Mapping[str, Any]) -> bool:
        """Whether ``obj`` (from a cache) is one :meth:`mark_gone` hides."""
        return (key_of(obj), uid_of(obj)) in self._gone

    def prune_gone(self, kind: str, cached: Iterable[Mapping[str, Any]]) -> None:
        """Drop the marks of objects of ``kind`` no longer in the caches (``cached``: all they hold of it now)."""
        held = {(key_of(obj), uid_of(obj)) for obj in cached}
        self._gone = {mark for mark in self._gone if mark[0][0] != kind or mark in held}

    @property
    def gone(self) -> frozenset[tuple[Key, str]]:
        return frozenset(self._gone)

    def items_for(self, namespace: str) -> list[tuple[Key, Mapping[str, Any]]]:
        """Every kept object in ``namespace``."""
        return [(k, v) for k, v in self._objects.items() if k[1] == namespace]

    def resolve(self, key: Key, observed: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
        """The freshest known copy of the object at ``key`` (None: none, or the cache's copy is gone)."""
        if observed is not None and self.is_gone(observed):
            return None
        mine = self._objects.get(key)
        if mine is None:
            return observed
        if observed is not None and _newer_or_same(observed, mine):
            del self._objects[key]
            return observed
        return mine
