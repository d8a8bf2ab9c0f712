"""The ModelDeployment API as the API server enforces it: the CRD's defaults, OpenAPI schema and CEL rules.

The CRD (``crds/modeldeploy.io_modeldeployments.yaml``, shipped as package data) is the single source of
truth. ``default_object`` applies its structural defaults the way the API server does on create and update;
``validate_object`` checks the OpenAPI v3 schema (with the Kubernetes extensions int-or-string,
preserve-unknown-fields, nullable, list-type map) and evaluates every ``x-kubernetes-validations`` CEL rule
with ``self`` bound at the rule's location (``duration()`` parses as Go does, as in the API server's cel-go, and
the Kubernetes quantity library's ``quantity()`` and its comparisons read quantities as ``resource.ParseQuantity``).
Unknown fields are reported, as with ``kubectl apply`` (strict field validation), rather than silently pruned.

Pure: no API client, no clock, no environment.
"""

from __future__ import annotations

import copy
import functools
import importlib.resources
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_UP, Context, Decimal
from typing import Any

import jsonschema
import yaml

from modeldeploy.types import FieldPath, Manifest

GROUP = "modeldeploy.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "ModelDeployment"
PLURAL = "modeldeployments"
CRD_NAME = f"{PLURAL}.{GROUP}"
CRD_RESOURCE = "crds/modeldeploy.io_modeldeployments.yaml"

PathTuple = tuple[str | int, ...]


class SpecError(ValueError):
    """An invalid field: ``field`` is its path (``spec.model.storageUri``), ``message`` says what is wrong."""

    def __init__(self, field: FieldPath, message: str) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.message = message

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SpecError) and (self.field, self.message) == (other.field, other.message)

    def __hash__(self) -> int:
        return hash((self.field, self.message))

    def __repr__(self) -> str:
        return f"SpecError({self.field!r}, {self.message!r})"


def format_path(path: Sequence[str | int]) -> FieldPath:
    """``('spec', 'runtime', 'env', 0, 'name')`` -> ``spec.runtime.env[0].name``; odd keys go in brackets."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", part):
            out += f".{part}" if out else part
        else:
            out += f"[{part}]"
    return out


# --- loading the CRD ---------------------------------------------------------------------------------------


@functools.cache
def _crd() -> Manifest:
    text = importlib.resources.files("modeldeploy").joinpath(CRD_RESOURCE).read_text(encoding="utf-8")
    crd = yaml.safe_load(text)
    if not isinstance(crd, dict) or crd.get("kind") != "CustomResourceDefinition":
        raise RuntimeError(f"package data {CRD_RESOURCE} is not a CustomResourceDefinition")
    return crd


def crd_manifest() -> Manifest:
    """The CustomResourceDefinition, as a fresh copy the caller may modify."""
    return copy.deepcopy(_crd())


@functools.cache
def _version() -> Mapping[str, Any]:
    for version in _crd()["spec"]["versions"]:
        if version["name"] == VERSION:
            return dict(version)
    raise RuntimeError(f"the CRD has no version {VERSION}")


def openapi_schema() -> Mapping[str, Any]:
    """The ``openAPIV3Schema`` of the served version (shared: do not modify)."""
    schema: Mapping[str, Any] = _version()["schema"]["openAPIV3Schema"]
    return schema


# --- defaulting --------------------------------------------------------------------------------------------


def default_object(obj: Mapping[str, Any]) -> Manifest:
    """A copy of ``obj`` with the CRD's defaults applied, as the API server stores it.

    A default applies where the field is absent (or null and not nullable) and its parent object is present;
    defaults of the newly added object are applied in turn. Idempotent.
    """
    result = copy.deepcopy(dict(obj))
    _apply_defaults(result, openapi_schema())
    return result


def _apply_defaults(value: Any, schema: Mapping[str, Any]) -> None:
    if isinstance(value, dict):
        properties: Mapping[str, Any] = schema.get("properties") or {}
        for key, sub in properties.items():
            if "default" not in sub:
                continue
            if key not in value or (value[key] is None and not sub.get("nullable", False)):
                value[key] = copy.deepcopy(sub["default"])
        for key, sub in properties.items():
            if key in value:
                _apply_defaults(value[key], sub)
        additional = schema.get("additionalProperties")
        if isinstance(additional, Mapping):
            for key, item in value.items():
                if key not in properties:
                    _apply_defaults(item, additional)
    elif isinstance(value, list):
        items = schema.get("items")
        if isinstance(items, Mapping):
            for item in value:
                _apply_defaults(item, items)


# --- OpenAPI validation ------------------------------------------------------------------------------------

_COPIED_KEYWORDS = (
    "type",
    "enum",
    "required",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "uniqueItems",
    "minProperties",
    "maxProperties",
    "format",
)


def _to_json_schema(schema: Mapping[str, Any]) -> dict[str, Any]:
    """Translate a structural schema node into JSON Schema (draft 4, the dialect of OpenAPI v3.0)."""
    out: dict[str, Any] = {key: copy.deepcopy(schema[key]) for key in _COPIED_KEYWORDS if key in schema}
    nullable = bool(schema.get("nullable", False))
    if schema.get("x-kubernetes-int-or-string"):
        out["type"] = ["integer", "string"]
    if nullable and "type" in out:
        types = out["type"] if isinstance(out["type"], list) else [out["type"]]
        out["type"] = [*types, "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
    if "properties" in schema:
        out["properties"] = {key: _to_json_schema(sub) for key, sub in schema["properties"].items()}
    additional = schema.get("additionalProperties")
    if isinstance(additional, Mapping):
        out["additionalProperties"] = _to_json_schema(additional)
    elif additional is not None:
        out["additionalProperties"] = bool(additional)
    elif "properties" in schema and not schema.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    elif schema.get("type") == "object" and not schema.get("x-kubernetes-preserve-unknown-fields"):
        # An object with neither properties nor additionalProperties keeps no fields at all.
        out["additionalProperties"] = False
    if isinstance(schema.get("items"), Mapping):
        out["items"] = _to_json_schema(schema["items"])
    if schema.get("x-kubernetes-list-type") == "set":
        out["uniqueItems"] = True
    return out


_FORMATS = jsonschema.FormatChecker(formats=())


@_FORMATS.checks("int32")
def _is_int32(value: object) -> bool:
    return not isinstance(value, int) or -(2**31) <= value < 2**31


@_FORMATS.checks("int64")
def _is_int64(value: object) -> bool:
    return not isinstance(value, int) or -(2**63) <= value < 2**63


_DATE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


@_FORMATS.checks("date-time", raises=ValueError)
def _is_date_time(value: object) -> bool:
    if not isinstance(value, str):
        return True
    if not _DATE_TIME.match(value):
        return False
    datetime.fromisoformat(value.upper().replace("Z", "+00:00"))
    return True


def _is_finite_number(checker: Any, instance: object) -> bool:
    """JSON numbers: never NaN or an infinity, which YAML (``.nan``, ``.inf``) can spell and JSON cannot, so the
    API server never holds one (and NaN would pass every minimum and maximum)."""
    return isinstance(instance, int | float) and not isinstance(instance, bool) and math.isfinite(instance)


_Validator = jsonschema.validators.extend(  # type: ignore[no-untyped-call]  # jsonschema leaves it untyped
    jsonschema.Draft4Validator,
    type_checker=jsonschema.Draft4Validator.TYPE_CHECKER.redefine("number", _is_finite_number),
)


@functools.cache
def _validator() -> jsonschema.Draft4Validator:
    schema = _to_json_schema(openapi_schema())
    # metadata is validated by the API server itself, not by the CRD schema.
    schema["properties"]["metadata"] = {"type": "object"}
    validator: jsonschema.Draft4Validator = _Validator(schema, format_checker=_FORMATS)
    return validator


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _show(value: object) -> str:
    text = repr(value) if not isinstance(value, str) else f'"{value}"'
    return text if len(text) <= 80 else text[:77] + "..."


def _schema_errors(error: jsonschema.ValidationError) -> Iterator[tuple[PathTuple, str]]:
    path: PathTuple = tuple(error.absolute_path)
    kind: Any = error.validator
    expected: Any = error.validator_value
    instance: Any = error.instance
    error_schema: Any = error.schema
    if kind == "required" and isinstance(instance, dict):
        for name in expected:
            if name not in instance:
                yield (*path, name), "Required value"
    elif kind == "additionalProperties" and expected is False and isinstance(instance, dict):
        known = set(error_schema.get("properties") or {})
        for name in sorted(set(instance) - known):
            yield (*path, name), "unknown field"
    elif kind == "type" and isinstance(instance, float) and not math.isfinite(instance):
        yield path, f"Invalid value: {_show(instance)}: must be a finite number"
    elif kind == "type":
        wanted = " or ".join(
            t for t in ([expected] if isinstance(expected, str) else expected) if t != "null"
        )
        yield path, f"Invalid value: {_show(instance)}: must be of type {wanted}, not {_json_type(instance)}"
    elif kind == "enum":
        supported = ", ".join(_show(v) for v in expected if v is not None)
        yield path, f"Unsupported value: {_show(instance)}: supported values: {supported}"
    elif kind == "pattern":
        yield path, f"Invalid value: {_show(instance)}: should match '{expected}'"
    elif kind == "minimum":
        yield path, f"Invalid value: {_show(instance)}: must be greater than or equal to {expected}"
    elif kind == "maximum":
        yield path, f"Invalid value: {_show(instance)}: must be less than or equal to {expected}"
    elif kind == "minLength":
        yield path, f"Invalid value: {_show(instance)}: must be at least {expected} characters long"
    elif kind == "maxLength":
        yield path, f"Too long: may not be longer than {expected} characters"
    elif kind == "maxItems":
        yield path, f"Too many: {len(instance)}: must have at most {expected} items"
    elif kind == "minItems":
        yield path, f"Invalid value: must have at least {expected} items"
    elif kind == "maxProperties":
        yield path, f"Too many: {len(instance)}: must have at most {expected} entries"
    elif kind == "format":
        yield path, f"Invalid value: {_show(instance)}: must be a valid {expected}"
    elif kind == "uniqueItems":
        yield path, "Duplicate value: items must be unique"
    else:
        yield path, error.message


# --- CEL rules ---------------------------------------------------------------------------------------------

_NANOSECONDS = {
    "ns": 1,
    "us": 1_000,
    "\u00b5s": 1_000,  # micro sign
    "\u03bcs": 1_000,  # Greek mu
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}
_GO_DURATION_PART = re.compile(r"([0-9]*)(?:\.([0-9]*))?(ns|us|\u00b5s|\u03bcs|ms|s|m|h)")
_INT64_MAX = 2**63 - 1


class DurationError(ValueError):
    """A duration Go's ``time.ParseDuration`` refuses; the message is Go's."""


def go_duration_nanoseconds(text: str) -> int:
    """Nanoseconds in ``text`` as Go's ``time.ParseDuration`` reads it, which is what the API server's CEL
    ``duration()`` does: ``1h30m``, ``1.5h``, ``250ms``, ``5us`` or ``5\u00b5s``, an optional sign, and ``0``.

    Raises DurationError where Go returns an error: malformed text, or a total beyond int64 nanoseconds (about
    2562047h).
    """
    invalid = DurationError(f'time: invalid duration "{text}"')
    rest = text
    negative = rest.startswith("-")
    if rest[:1] in ("-", "+"):
        rest = rest[1:]
    if rest == "0":
        return 0
    if not rest:
        raise invalid
    total, position = 0, 0
    for match in _GO_DURATION_PART.finditer(rest):
        whole, fraction, unit = match.groups()
        if match.start() != position or not (whole or fraction):
            raise invalid
        scale = _NANOSECONDS[unit]
        total += int(whole or "0") * scale
        if fraction:
            total += int(fraction) * scale // 10 ** len(fraction)
        if total > _INT64_MAX + negative:
            raise invalid
        position = match.end()
    if position != len(rest):
        raise invalid
    return -total if negative else total


class _AbortedRuleError(Exception):
    """Carries a DurationError out of celpy, which would otherwise turn it into an error value that its ``&&``
    and ``?:`` then report as a missing overload instead of Go's message."""


def _cel_duration(value: Any) -> Any:
    """CEL ``duration(string)`` parsed as Go parses it (celpy's own refuses the micro sign, and its range is not
    int64 nanoseconds). A duration Go refuses ends the rule's evaluation with Go's message, as cel-go reports it.
    """
    from celpy import celtypes

    if isinstance(value, celtypes.DurationType):
        return value
    if not isinstance(value, str):
        raise TypeError(f"no such overload: duration({type(value).__name__})")
    try:
        nanoseconds = go_duration_nanoseconds(str(value))
    except DurationError as error:
        raise _AbortedRuleError(str(error)) from error
    # celpy's durations hold microseconds: rounding away from zero keeps every comparison with a whole number of
    # microseconds (each bound in the CRD) as it is in nanoseconds.
    microseconds = -(-abs(nanoseconds) // 1000)
    return celtypes.DurationType(timedelta(microseconds=microseconds if nanoseconds >= 0 else -microseconds))


class QuantityError(ValueError):
    """A quantity the API server's ``resource.ParseQuantity`` refuses; the message is Go's."""


_QUANTITY_SPLIT = "^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$"
_QUANTITY_FORMAT_WRONG = f"quantities must match the regular expression '{_QUANTITY_SPLIT}'"
_QUANTITY_SUFFIX = "unable to parse quantity's suffix"
_DIGITS = "0123456789"
_DECIMAL_SUFFIXES = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
_BINARY_SUFFIXES = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}
_NANO = Decimal("1e-9")
_INT32 = 2**32


def _scan_quantity(text: str) -> tuple[bool, str, str, str]:
    """Sign, whole digits, fraction digits and suffix of ``text``, scanned as Go's ``parseQuantityString`` does
    (leading zeros dropped; an empty whole part is 0)."""
    positive, position, end = True, 0, len(text)
    if text[:1] in ("-", "+"):
        positive = text[0] == "+"
        position = 1
    while position < end and text[position] == "0":
        position += 1
    if position >= end:
        return positive, "0", "", ""
    start = position
    while position < end and text[position] in _DIGITS:
        position += 1
    whole = text[start:position] or "0"
    fraction = ""
    if position < end and text[position] == ".":
        position += 1
        start = position
        while position < end and text[position] in _DIGITS:
            position += 1
        fraction = text[start:position]
    suffix_start = position
    while position < end and text[position] in "eEinumkKMGTP":
        position += 1
    if position < end and text[position] in "-+":
        position += 1
    while position < end and text[position] in _DIGITS:
        position += 1
    if position < end:
        raise QuantityError(_QUANTITY_FORMAT_WRONG)
    return positive, whole, fraction, text[suffix_start:]


def parse_quantity(text: str) -> Decimal:
    """The exact value of a Kubernetes quantity (``500m``, ``1.5Gi``, ``1e3``), as the API server's
    ``resource.ParseQuantity`` reads it: a non-zero value is rounded away from zero to whole nano units, and a
    binary-suffixed one is capped at 2^63 - 1.

    Raises QuantityError, with Go's message, where Go returns an error.
    """
    if not text:
        raise QuantityError(_QUANTITY_FORMAT_WRONG)
    positive, whole, fraction, suffix = _scan_quantity(text)
    binary = suffix in _BINARY_SUFFIXES
    if suffix in _DECIMAL_SUFFIXES:
        exponent = _DECIMAL_SUFFIXES[suffix]
    elif binary:
        exponent = _BINARY_SUFFIXES[suffix]
    elif len(suffix) > 1 and suffix[0] in "eE" and re.fullmatch(r"[+-]?[0-9]+", suffix[1:]):
        parsed = int(suffix[1:])
        if not -(2**63) <= parsed < 2**63:
            raise QuantityError(_QUANTITY_SUFFIX)
        exponent = (parsed + 2**31) % _INT32 - 2**31  # Go keeps it as an int32
    else:
        raise QuantityError(_QUANTITY_SUFFIX)
    # Decimal from a string is exact; a product is, with room for all its digits.
    if binary:
        exact = Context(prec=len(whole) + len(fraction) + 20)
        value = exact.multiply(Decimal(f"{whole}{fraction}E-{len(fraction)}"), Decimal(2**exponent))
    else:
        value = Decimal(f"{whole}{fraction}E{exponent - len(fraction)}")
    places = value.as_tuple().exponent
    if value != 0 and isinstance(places, int) and places < -9:
        # As many digits as the rounded value has, so that the context's precision never rounds it again.
        value = value.quantize(_NANO, rounding=ROUND_UP, context=Context(prec=max(28, value.adjusted() + 11)))
    if binary and value > _INT64_MAX:
        value = Decimal(_INT64_MAX)
    return value if positive else value.copy_negate()


class Quantity:
    """A value of CEL's Kubernetes ``quantity`` type: compared exactly, as ``resource.Quantity.Cmp`` does."""

    __slots__ = ("value",)

    def __init__(self, value: Decimal) -> None:
        self.value = value

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Quantity):
            raise TypeError(f"no such overload: quantity == {type(other).__name__}")
        return self.value == other.value

    def __hash__(self) -> int:
        return hash(self.value)

    def __repr__(self) -> str:
        return f"Quantity({self.value})"


def _quantity_argument(value: object) -> Quantity:
    if not isinstance(value, Quantity):
        raise TypeError(f"no such overload: expected a quantity, not {type(value).__name__}")
    return value


def _cel_quantity(text: object) -> Quantity:
    if not isinstance(text, str):
        raise TypeError(f"no such overload: quantity({type(text).__name__})")
    return Quantity(parse_quantity(text))


def _cel_is_quantity(text: object) -> Any:
    from celpy import celtypes

    if not isinstance(text, str):
        raise TypeError(f"no such overload: isQuantity({type(text).__name__})")
    try:
        parse_quantity(text)
    except QuantityError:
        return celtypes.BoolType(False)
    return celtypes.BoolType(True)


def _compare(a: object, b: object) -> int:
    left, right = _quantity_argument(a).value, _quantity_argument(b).value
    return (left > right) - (left < right)


def _cel_compare_to(a: object, b: object) -> Any:
    from celpy import celtypes

    return celtypes.IntType(_compare(a, b))


def _cel_is_less_than(a: object, b: object) -> Any:
    from celpy import celtypes

    return celtypes.BoolType(_compare(a, b) < 0)


def _cel_is_greater_than(a: object, b: object) -> Any:
    from celpy import celtypes

    return celtypes.BoolType(_compare(a, b) > 0)


def _cel_sign(a: object) -> Any:
    from celpy import celtypes

    value = _quantity_argument(a).value
    return celtypes.IntType((value > 0) - (value < 0))


# The Kubernetes quantity library as the CRD's rules use it: quantity() and isQuantity() on strings, and the
# comparisons of two quantities. A quantity() that Go refuses is an error value (celpy turns the QuantityError into
# one), so `true || ...` still holds, as in cel-go.
_QUANTITY_FUNCTIONS = {
    "quantity": _cel_quantity,
    "isQuantity": _cel_is_quantity,
    "sign": _cel_sign,
    "compareTo": _cel_compare_to,
    "isLessThan": _cel_is_less_than,
    "isGreaterThan": _cel_is_greater_than,
}


# celpy (with its parser) is imported on first use: the operator checks specs the API server admitted, without
# their CEL rules, and its process need not hold the CEL engine (about 11 MB).


@functools.cache
def _cel() -> Any:
    import celpy

    return celpy.Environment()


@functools.cache
def _program(rule: str) -> Any:
    cel = _cel()
    return cel.program(
        cel.compile(rule), functions={"duration": _cel_duration, "lowerAscii": _cel_lower_ascii, **_QUANTITY_FUNCTIONS}
    )


def _cel_lower_ascii(text: object) -> Any:
    """The Kubernetes CEL strings library's ``lowerAscii()``: only the ASCII letters A-Z are lowered."""
    from celpy import celtypes

    return celtypes.StringType("".join(chr(ord(c) + 32) if "A" <= c <= "Z" else c for c in str(text)))


def evaluate_rule(rule: str, value: Any) -> bool:
    """Evaluate one CEL rule with ``self`` bound to ``value``.

    Raises ValueError when the rule cannot be compiled or evaluated (a missing field read without ``has``).
    """
    from celpy import celtypes
    from celpy.adapter import json_to_cel

    try:
        program = _program(rule)
        result = program.evaluate({"self": json_to_cel(value)})
    except _AbortedRuleError as error:
        raise ValueError(str(error)) from error
    except Exception as error:  # celpy raises its own errors and Python ones (KeyError, TypeError)
        # celpy carries a function's ValueError as (its words, the exception's class, its args): a quantity Go
        # refuses is reported in Go's words, as cel-go does.
        if len(error.args) == 3 and error.args[1] is QuantityError and error.args[2]:
            raise ValueError(str(error.args[2][0])) from error
        raise ValueError(f"{type(error).__name__}: {error}") from error
    if isinstance(result, celtypes.BoolType):
        return bool(result)
    raise ValueError(f"rule did not return a bool: {result!r}")


def _field_path_suffix(field_path: str) -> PathTuple:
    """``.a.b`` or ``.a['x.y']`` (the CRD's fieldPath syntax) as path parts."""
    parts: list[str | int] = []
    for match in re.finditer(r"\.([A-Za-z_][A-Za-z0-9_]*)|\['([^']*)'\]|\[(\d+)\]", field_path):
        name, key, index = match.groups()
        parts.append(int(index) if index is not None else (name if name is not None else key))
    return tuple(parts)


def _cel_errors(
    value: Any, schema: Mapping[str, Any], path: PathTuple, skip: Sequence[PathTuple]
) -> Iterator[tuple[PathTuple, str]]:
    if value is None:
        return
    # Where the schema already rejected something at or below this node, a rule may fail to evaluate on
    # the wrong types it reads; that failure says nothing new and is not reported.
    schema_rejected_below = any(bad[: len(path)] == path for bad in skip)
    for item in schema.get("x-kubernetes-validations") or []:
        rule = item["rule"]
        if "oldSelf" in rule:
            continue  # transition rules need the stored object; there is none offline
        where = (*path, *_field_path_suffix(item.get("fieldPath", "")))
        try:
            ok = evaluate_rule(rule, value)
        except ValueError as error:
            if not schema_rejected_below:
                # As the API server words it: the error, then the rule's message (or the rule).
                yield path, f"Invalid value: {error} evaluating rule: {item.get('message') or rule}"
            continue
        if not ok:
            yield where, f"Invalid value: {item.get('message') or 'failed rule: ' + rule}"
    if isinstance(value, dict):
        properties: Mapping[str, Any] = schema.get("properties") or {}
        additional = schema.get("additionalProperties")
        for key, item in value.items():
            if key in properties:
                yield from _cel_errors(item, properties[key], (*path, key), skip)
            elif isinstance(additional, Mapping):
                yield from _cel_errors(item, additional, (*path, key), skip)
    elif isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        items: Mapping[str, Any] = schema["items"]
        for index, item in enumerate(value):
            yield from _cel_errors(item, items, (*path, index), skip)


def _list_map_errors(
    value: Any, schema: Mapping[str, Any], path: PathTuple
) -> Iterator[tuple[PathTuple, str]]:
    """Duplicate keys in ``x-kubernetes-list-type: map`` lists."""
    if isinstance(value, dict):
        properties: Mapping[str, Any] = schema.get("properties") or {}
        additional = schema.get("additionalProperties")
        for key, item in value.items():
            sub = properties.get(key, additional if isinstance(additional, Mapping) else None)
            if sub is not None:
                yield from _list_map_errors(item, sub, (*path, key))
    elif isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        if schema.get("x-kubernetes-list-type") == "map":
            keys = schema.get("x-kubernetes-list-map-keys") or []
            seen: set[tuple[Any, ...]] = set()
            for index, item in enumerate(value):
                if not isinstance(item, dict):
                    continue
                key = tuple(repr(item.get(k)) for k in keys)
                if key in seen:
                    shown = ", ".join(f"{k}={_show(item.get(k))}" for k in keys)
                    yield (*path, index), f"Duplicate value: {shown}"
                seen.add(key)
        for index, item in enumerate(value):
            yield from _list_map_errors(item, schema["items"], (*path, index))


# --- the public checks -------------------------------------------------------------------------------------


def validate_object(obj: Mapping[str, Any], *, apply_defaults: bool = True, cel: bool = True) -> list[SpecError]:
    """Every reason the API server would reject ``obj``, as SpecErrors in document order; empty when valid.

    The CRD's defaults are applied to a copy first (as the API server does before validating) unless
    ``apply_defaults`` is False. ``obj`` itself is never modified. ``cel=False`` skips the CEL rules (the
    costly part), for objects an API server has already admitted.
    """
    if not isinstance(obj, Mapping):
        return [SpecError("", f"a ModelDeployment must be an object, not {_json_type(obj)}")]
    value = default_object(obj) if apply_defaults else copy.deepcopy(dict(obj))
    found: list[tuple[PathTuple, str]] = []
    if value.get("apiVersion", API_VERSION) != API_VERSION:
        found.append(
            (("apiVersion",), f"Unsupported value: {_show(value.get('apiVersion'))}: must be {API_VERSION}")
        )
    if value.get("kind", KIND) != KIND:
        found.append((("kind",), f"Unsupported value: {_show(value.get('kind'))}: must be {KIND}"))
    found.extend(_metadata_errors(value.get("metadata")))
    for error in _validator().iter_errors(value):
        found.extend(_schema_errors(error))
    schema = openapi_schema()
    found.extend(_list_map_errors(value, schema, ()))
    if cel:
        bad_paths = [path for path, _ in found]
        found.extend(_cel_errors(value, schema, (), bad_paths))
    errors: list[SpecError] = []
    for path, message in found:
        error = SpecError(format_path(path), message)
        if error not in errors:
            errors.append(error)
    return errors


NAMESPACE_NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
"""A namespace's name, as the API server checks it: an RFC 1123 label of at most 63 characters (``fullmatch``)."""


def _metadata_errors(metadata: Any) -> Iterator[tuple[PathTuple, str]]:
    """What the API server checks of ``metadata`` before the CRD's schema sees the object: the types of its
    string fields, and the namespace's name format (the name's is the CRD's own rule)."""
    if metadata is None:
        return
    if not isinstance(metadata, Mapping):
        yield ("metadata",), f"Invalid value: {_show(metadata)}: must be an object"
        return
    for key in ("name", "namespace", "generateName"):
        value = metadata.get(key)
        if value is not None and not isinstance(value, str):
            yield ("metadata", key), f"Invalid value: {_show(value)}: must be a string"
    namespace = metadata.get("namespace")
    if isinstance(namespace, str) and namespace and not NAMESPACE_NAME.fullmatch(namespace):
        yield ("metadata", "namespace"), (
            f"Invalid value: {_show(namespace)}: a lowercase RFC 1123 label must consist of lower case alphanumeric "
            "characters or '-', and must start and end with an alphanumeric character (at most 63 characters)"
        )
    for key in ("labels", "annotations"):
        value = metadata.get(key)
        if value is None:
            continue
        if not isinstance(value, Mapping) or not all(isinstance(v, str) for v in value.values()):
            yield ("metadata", key), f"Invalid value: {_show(value)}: must be a map of strings to strings"


def admit(obj: Mapping[str, Any]) -> Manifest:
    """``obj`` with defaults applied, after checking it; raises the first SpecError when it is invalid."""
    errors = validate_object(obj)
    if errors:
        raise errors[0]
    return default_object(obj)


@dataclass(frozen=True)
class Rule:
    """One CEL rule of the CRD and where it sits (for documentation and tests)."""

    path: PathTuple
    rule: str
    message: str
    field_path: str


def cel_rules() -> list[Rule]:
    """Every ``x-kubernetes-validations`` rule in the CRD; list items appear with index 0 in the path."""
    rules: list[Rule] = []

    def walk(schema: Mapping[str, Any], path: PathTuple) -> None:
        for item in schema.get("x-kubernetes-validations") or []:
            rules.append(Rule(path, item["rule"], item.get("message", ""), item.get("fieldPath", "")))
        for key, sub in (schema.get("properties") or {}).items():
            walk(sub, (*path, key))
        if isinstance(schema.get("additionalProperties"), Mapping):
            walk(schema["additionalProperties"], (*path, "*"))
        if isinstance(schema.get("items"), Mapping):
            walk(schema["items"], (*path, 0))

    walk(openapi_schema(), ())
    return rules
