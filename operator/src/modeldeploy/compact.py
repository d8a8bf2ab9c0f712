"""Compact read-only copies of API objects, for the operator's caches.

The operator keeps every ModelDeployment and every child it watches (kopf's indexes, ``modeldeploy.fresh``). Each
watch event is decoded into new dicts and strings, so a thousand Deployments hold a thousand copies of every key
(``"containerPort"``, ``"readinessProbe"``) and of every repeated value (``"IfNotPresent"``, label keys, the image
name): half of a cached object's memory. ``compact`` copies an object with those strings shared (interned), so the
cache keeps one of each, and drops ``metadata.managedFields`` (large, never read). The copy shares nothing with the
decoded event, which is freed as soon as kopf is done with it.

Callers treat the copies as read-only, like any cached object.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

SHARED_STRING_LENGTH = 64
"""Strings up to this length are interned: keys, enum-like values, names, label values (long messages are not)."""

_intern = sys.intern


def compact(value: Any) -> Any:
    """A deep copy of a JSON-like value (mappings, lists, scalars) with keys and short strings interned.

    Mappings become plain dicts and keep their order; lists stay lists; everything else is kept as it is (ints,
    floats, bools and None are immutable).
    """
    kind = type(value)
    if kind is str:
        return _intern(value) if len(value) <= SHARED_STRING_LENGTH else value
    if kind is dict or isinstance(value, Mapping):
        return {(_intern(k) if type(k) is str else k): compact(v) for k, v in value.items()}
    if kind is list:
        return [compact(v) for v in value]
    return value


def compact_object(obj: Mapping[str, Any]) -> dict[str, Any]:
    """``compact(obj)`` without ``metadata.managedFields``."""
    out: dict[str, Any] = {}
    for key, value in obj.items():
        if key == "metadata" and isinstance(value, Mapping):
            out["metadata"] = {_intern(k): compact(v) for k, v in value.items() if k != "managedFields"}
        else:
            out[_intern(key)] = compact(value)
    return out
