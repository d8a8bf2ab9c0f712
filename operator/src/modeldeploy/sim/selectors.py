"""Label and field selectors as the Kubernetes API parses them (``labelSelector=``, ``fieldSelector=``)."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["FIELDS_BY_RESOURCE", "FieldSelector", "LabelSelector", "SelectorError", "match_labels_selector"]

_KEY = re.compile(r"^([a-z0-9A-Z]([-a-z0-9A-Z.]*[a-z0-9A-Z])?/)?[a-z0-9A-Z]([-a-z0-9A-Z_.]*[a-z0-9A-Z])?$")
_VALUE = re.compile(r"^([a-z0-9A-Z]([-a-z0-9A-Z_.]*[a-z0-9A-Z])?)?$")
_SET_TERM = re.compile(r"^\s*(?P<key>[^\s!=()]+)\s+(?P<op>in|notin)\s*\((?P<values>[^()]*)\)\s*$")
_EQ_TERM = re.compile(r"^\s*(?P<key>[^\s!=()]+)\s*(?P<op>==|!=|=)\s*(?P<value>[^\s!=(),]*)\s*$")
_EXISTS_TERM = re.compile(r"^\s*(?P<neg>!?)\s*(?P<key>[^\s!=()]+)\s*$")


class SelectorError(ValueError):
    """A selector string that does not parse."""


Requirement = Callable[[Mapping[str, str]], bool]


def _split_terms(text: str) -> list[str]:
    terms: list[str] = []
    depth = 0
    current = ""
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth < 0:
                raise SelectorError(f"unbalanced parentheses in selector {text!r}")
        if char == "," and depth == 0:
            terms.append(current)
            current = ""
        else:
            current += char
    if depth != 0:
        raise SelectorError(f"unbalanced parentheses in selector {text!r}")
    terms.append(current)
    return terms


def _check_key(key: str, text: str) -> str:
    if not _KEY.match(key):
        raise SelectorError(f"invalid label key {key!r} in selector {text!r}")
    return key


def _check_value(value: str, text: str) -> str:
    if len(value) > 63 or not _VALUE.match(value):
        raise SelectorError(f"invalid label value {value!r} in selector {text!r}")
    return value


def _parse_term(term: str, text: str) -> Requirement:
    if match := _SET_TERM.match(term):
        key = _check_key(match["key"], text)
        values = frozenset(_check_value(v.strip(), text) for v in match["values"].split(","))
        if match["op"] == "in":
            return lambda labels: key in labels and labels[key] in values
        return lambda labels: key not in labels or labels[key] not in values
    if match := _EQ_TERM.match(term):
        key = _check_key(match["key"], text)
        value = _check_value(match["value"], text)
        if match["op"] == "!=":
            return lambda labels: labels.get(key) != value
        return lambda labels: key in labels and labels[key] == value
    if match := _EXISTS_TERM.match(term):
        key = _check_key(match["key"], text)
        if match["neg"]:
            return lambda labels: key not in labels
        return lambda labels: key in labels
    raise SelectorError(f"unable to parse requirement {term.strip()!r} in selector {text!r}")


@dataclass(frozen=True)
class LabelSelector:
    """A ``labelSelector``: ``a=b``, ``a==b``, ``a!=b``, ``a in (x)``, ``a notin (x)``, ``a``, ``!a``."""

    text: str
    requirements: tuple[Requirement, ...]

    @classmethod
    def parse(cls, text: str | None) -> LabelSelector:
        text = (text or "").strip()
        if not text:
            return cls("", ())
        return cls(text, tuple(_parse_term(term, text) for term in _split_terms(text)))

    def matches(self, obj: Mapping[str, Any]) -> bool:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        return all(requirement(labels) for requirement in self.requirements)


FIELDS_BY_RESOURCE: dict[tuple[str, str], tuple[str, ...]] = {
    ("", "pods"): ("spec.nodeName", "spec.restartPolicy", "spec.schedulerName", "spec.serviceAccountName",
                   "status.phase", "status.podIP", "status.nominatedNodeName"),
    ("", "nodes"): ("spec.unschedulable",),
    ("", "events"): ("involvedObject.kind", "involvedObject.name", "involvedObject.namespace",
                     "involvedObject.uid", "reason", "type"),
}
"""Field selectors each resource supports beyond ``metadata.name`` / ``metadata.namespace`` (the API server's
field label conversion functions, for the resources the operator and its tests query)."""


def _field_value(obj: Mapping[str, Any], path: str) -> str:
    value: Any = obj
    for part in path.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


@dataclass(frozen=True)
class FieldSelector:
    """A parsed ``fieldSelector`` (``=``, ``==``, ``!=``) on ``metadata.name``, ``metadata.namespace`` and the
    fields the resource supports (``FIELDS_BY_RESOURCE``)."""

    text: str
    requirements: tuple[tuple[str, bool, str], ...]  # (field, equal, value)

    SUPPORTED = ("metadata.name", "metadata.namespace")

    @classmethod
    def parse(cls, text: str | None, extra_fields: tuple[str, ...] = ()) -> FieldSelector:
        text = (text or "").strip()
        if not text:
            return cls("", ())
        supported = (*cls.SUPPORTED, *extra_fields)
        requirements: list[tuple[str, bool, str]] = []
        for term in text.split(","):
            match = re.match(r"^\s*([A-Za-z0-9_.]+)\s*(==|!=|=)\s*([^\s,]*)\s*$", term)
            if not match:
                raise SelectorError(f"invalid field selector term {term.strip()!r}")
            field, op, value = match.groups()
            if field not in supported:
                raise SelectorError(f'field label not supported: "{field}"')
            requirements.append((field, op != "!=", value))
        return cls(text, tuple(requirements))

    def matches(self, obj: Mapping[str, Any]) -> bool:
        return all((_field_value(obj, field) == value) == equal for field, equal, value in self.requirements)


def match_labels_selector(selector: Mapping[str, Any] | None) -> str:
    """Render a ``metav1.LabelSelector`` (matchLabels + matchExpressions) as a selector string."""
    if not selector:
        return ""
    terms = [f"{key}={value}" for key, value in sorted((selector.get("matchLabels") or {}).items())]
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = (
            expression.get("key"),
            expression.get("operator"),
            expression.get("values") or [],
        )
        if operator == "In":
            terms.append(f"{key} in ({','.join(values)})")
        elif operator == "NotIn":
            terms.append(f"{key} notin ({','.join(values)})")
        elif operator == "Exists":
            terms.append(str(key))
        elif operator == "DoesNotExist":
            terms.append(f"!{key}")
    return ",".join(terms)
