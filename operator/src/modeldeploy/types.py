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
