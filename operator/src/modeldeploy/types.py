"""Type aliases shared by the operator's modules."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeAlias

Manifest: TypeAlias = dict[str, Any]
"""A Kubernetes object as plain JSON-compatible data (apiVersion, kind, metadata, spec ...)."""

ReadOnlyManifest: TypeAlias = Mapping[str, Any]
"""A Kubernetes object that the receiver must not modify."""

Labels: TypeAlias = dict[str, str]
"""Label or annotation keys to values."""

FieldPath: TypeAlias = str
"""A dotted path into an object, for example ``spec.model.storageUri`` or ``spec.runtime.env[0].name``."""


def as_map(value: object) -> Mapping[str, Any]:
    """``value`` when it is an object, else an empty one. For reading data written by others (status, user
    input), where no shape is taken on trust."""
    return value if isinstance(value, Mapping) else {}


def as_items(value: object) -> list[Mapping[str, Any]]:
    """The objects of ``value`` when it is a list (anything else in it is skipped), else an empty list."""
    return [item for item in value if isinstance(item, Mapping)] if isinstance(value, list) else []
