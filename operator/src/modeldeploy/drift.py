"""Decide whether an observed child still matches what the operator would apply.

Server-side apply of an unchanged configuration is a no-op on the server, but it is still a write request. The
operator skips it when every field it would apply is already present with the same value. The API server
normalizes some values (resource quantities such as ``1000m`` -> ``1``, defaulted fields), so the comparison is a
subset check that treats equal quantities as equal.

An API server also drops fields whose feature gate is off (``GATED_FIELDS``): what it stores then lacks a field
the operator applied. Once the controller has seen that happen (``dropped_fields`` of a write's answer), it passes
those fields to ``needs_apply`` as known to be dropped, so the same configuration is not applied again on every
pass.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

_QUANTITY = re.compile(r"^([+-]?[0-9.]+)([eE][+-]?[0-9]+|Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)?$")
_SUFFIX = {
    None: Decimal(1),
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
    "Ki": Decimal(2**10),
    "Mi": Decimal(2**20),
    "Gi": Decimal(2**30),
    "Ti": Decimal(2**40),
    "Pi": Decimal(2**50),
    "Ei": Decimal(2**60),
}


def parse_quantity(value: object) -> Decimal | None:
    """A Kubernetes resource quantity as a number, or None when the value is not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return Decimal(str(value))
    if not isinstance(value, str):
        return None
    match = _QUANTITY.match(value.strip())
    if not match:
        return None
    number, suffix = match.groups()
    try:
        base = Decimal(number)
    except InvalidOperation:
        return None
    if suffix and suffix[0] in "eE":
        return base * (Decimal(10) ** int(suffix[1:]))
    return base * _SUFFIX[suffix]


def _same_scalar(desired: object, observed: object) -> bool:
    if desired == observed and type(desired) is type(observed):
        return True
    if isinstance(desired, str) and isinstance(observed, str):
        a, b = parse_quantity(desired), parse_quantity(observed)
        return a is not None and a == b
    if isinstance(desired, int | float) and isinstance(observed, int | float):
        return not isinstance(desired, bool) and not isinstance(observed, bool) and desired == observed
    a, b = parse_quantity(desired), parse_quantity(observed)
    return a is not None and a == b


def contains(observed: Any, desired: Any) -> bool:
    """True when ``observed`` holds every field of ``desired`` with an equal value.

    Maps: every desired key must be present and contained. Lists: same length, element-wise containment (the
    server keeps list order for the lists the operator sets). Scalars: equal, or equal as quantities.
    """
    if isinstance(desired, Mapping):
        if not isinstance(observed, Mapping):
            return False
        return all(key in observed and contains(observed[key], value) for key, value in desired.items())
    if isinstance(desired, list):
        if not isinstance(observed, list) or len(observed) != len(desired):
            return False
        return all(contains(o, d) for o, d in zip(observed, desired, strict=True))
    return _same_scalar(desired, observed)


APPLIED_ANNOTATION = "modeldeploy.io/applied"
"""Annotation on every owned child: a digest of the configuration the operator last applied to it."""


def applied_digest(desired: Mapping[str, Any]) -> str:
    """A short digest of an applied configuration (without status and without the digest annotation itself)."""
    meta = dict(desired.get("metadata") or {})
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if k != APPLIED_ANNOTATION}
    body = {k: v for k, v in desired.items() if k not in ("status", "metadata")}
    body["metadata"] = {**meta, "annotations": annotations}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def stamp(desired: dict[str, Any]) -> dict[str, Any]:
    """``desired`` with its applied-configuration digest annotation set (returns the same dict)."""
    meta = desired.setdefault("metadata", {})
    meta["annotations"] = {**(meta.get("annotations") or {}), APPLIED_ANNOTATION: applied_digest(desired)}
    return desired


@dataclass(frozen=True)
class GatedField:
    """A field of a child that only an API server with ``gate`` on keeps; one without the gate drops it on write."""

    kind: str
    path: tuple[str, ...]
    gate: str
    default_from: str
    """The Kubernetes minor version from which the gate is on by default."""

    @property
    def dotted(self) -> str:
        return ".".join(self.path)


HPA_TOLERANCE_GATE = "HPAConfigurableTolerance"
GATED_FIELDS = tuple(
    GatedField("HorizontalPodAutoscaler", ("spec", "behavior", direction, "tolerance"), HPA_TOLERANCE_GATE, "1.35")
    for direction in ("scaleUp", "scaleDown")
)
"""The fields the operator sets that an API server may drop: beta or alpha fields behind a feature gate."""


_ABSENT = object()


def _at(obj: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(obj, Mapping) or key not in obj:
            return _ABSENT
        obj = obj[key]
    return obj


def dropped_fields(desired: Mapping[str, Any], stored: Mapping[str, Any]) -> tuple[GatedField, ...]:
    """The gated fields ``desired`` sets that ``stored`` (the API server's answer to the write) lacks."""
    return tuple(
        f
        for f in GATED_FIELDS
        if f.kind == desired.get("kind") and _at(desired, f.path) is not _ABSENT and _at(stored, f.path) is _ABSENT
    )


def _without(obj: Mapping[str, Any], path: tuple[str, ...]) -> dict[str, Any]:
    """A copy of ``obj`` without the field at ``path`` (copies only the maps along the path)."""
    out = dict(obj)
    head, rest = path[0], path[1:]
    if not rest:
        out.pop(head, None)
    elif isinstance(out.get(head), Mapping):
        out[head] = _without(out[head], rest)
    return out


def needs_apply(
    desired: Mapping[str, Any], observed: Mapping[str, Any] | None, *, dropped: Collection[GatedField] = ()
) -> bool:
    """Whether applying ``desired`` would change ``observed`` (status is never compared).

    A subset check finds drift (someone changed a field the operator sets) but not a field the operator stopped
    applying, which server-side apply removes: a stamped ``desired`` is also compared by its digest with the one
    ``observed`` was last applied with. ``dropped``: gated fields the API server is known to drop (it dropped them
    from the last write); when the digests match, their absence from ``observed`` is not drift.
    """
    if observed is None:
        return True
    wanted = (desired.get("metadata") or {}).get("annotations", {}).get(APPLIED_ANNOTATION)
    if wanted is not None and (observed.get("metadata") or {}).get("annotations", {}).get(APPLIED_ANNOTATION) != wanted:
        return True
    trimmed = {k: v for k, v in desired.items() if k != "status"}
    if wanted is not None:
        for gated in dropped:
            if gated.kind == desired.get("kind") and _at(observed, gated.path) is _ABSENT:
                trimmed = _without(trimmed, gated.path)
    return not contains(observed, trimmed)
