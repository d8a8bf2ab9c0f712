"""Static cost estimation of a CRD's CEL validation rules, the way the Kubernetes API server does it.

The API server refuses a CustomResourceDefinition when a rule's estimated cost, multiplied by the number of times
the rule can run in one object, exceeds ``StaticEstimatedCostLimit`` (10,000,000), or when the sum of those products
over all the rules of a version exceeds ``StaticEstimatedCRDCostLimit`` (100,000,000). There is no API server in
this repository's CI, so this module ports the estimation to Python, for the subset of CEL that CRD rules use:

* cel-go ``checker/cost.go`` (the ``coster``): cost of literals, identifiers, ``select``, ``has()``, calls,
  comprehensions (``all``, ``exists``, ``exists_one``, ``map``, ``filter``), list and map literals, ``&&``/``||``,
  the ternary operator, equality and ordering, ``in``, ``+`` on strings/bytes/lists, ``contains``, ``startsWith``,
  ``endsWith``, ``matches``, ``string()``/``bytes()`` conversions; and its size tracking (``computeSize``,
  ``computeEntrySize``, field paths with ``@items``/``@keys``/``@values``, local comprehension variables).
* Kubernetes ``k8s.io/apiserver/pkg/cel/library/cost.go`` (``CostEstimator.EstimateCallCost``): ``quantity``,
  ``isQuantity`` and the Quantity methods, ``url`` and its accessors, ``format.*``/``validate``, and the string
  and list extension functions.
* Kubernetes ``k8s.io/apiserver/pkg/cel/common/schemas.go`` (``SchemaDeclType``) and ``apiserver/pkg/cel/types.go``
  / ``limits.go``: the size (``MaxElements``) and minimum serialized size of every schema node.
* Kubernetes ``k8s.io/apiextensions-apiserver/pkg/apiserver/schema/cel/compilation.go`` (``sizeEstimator``,
  ``maxCardinality``) and ``pkg/apis/apiextensions/validation/{validation,cel_validation}.go``
  (``CELSchemaContext.childContext``, ``extractMaxElements``, ``getExpressionCost``, ``TotalCost``).

Arithmetic follows cel-go exactly: estimates are ``[min, max]`` ranges of unsigned 64-bit integers that saturate at
``2**64 - 1``, and cost factors are applied in IEEE double precision and rounded up (``multiplyByCostFactor``).

Where upstream versions differ, this estimator takes the MORE conservative (larger) estimate, so that a rule an API
server of any supported version would refuse fails here first. Each such choice is marked ``CONSERVATIVE`` below.
Anything it does not understand (an unknown function, macro, or type) raises :class:`UnsupportedExpressionError` rather
than guessing a cost.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import celpy
import lark

# --- limits (apiextensions validation.go, apiserver/pkg/apis/cel/config.go) ------------------------------------

STATIC_ESTIMATED_COST_LIMIT = 10_000_000
STATIC_ESTIMATED_CRD_COST_LIMIT = 100_000_000
MAX_REQUEST_SIZE_BYTES = 3 * 1024 * 1024  # celconfig.MaxRequestSizeBytes == apiservercel.DefaultMaxRequestSizeBytes

# --- cel-go common/cost.go --------------------------------------------------------------------------------------

SELECT_AND_IDENT_COST = 1
CONST_COST = 0
LIST_CREATE_BASE_COST = 10
MAP_CREATE_BASE_COST = 30
STRUCT_CREATE_BASE_COST = 40
STRING_TRAVERSAL_COST_FACTOR = 0.1
REGEX_STRING_LENGTH_COST_FACTOR = 0.25

# --- apiserver/pkg/cel/limits.go --------------------------------------------------------------------------------

MAX_DURATION_SIZE_JSON = 32
MAX_DATETIME_SIZE_JSON = 32
MIN_DURATION_SIZE_JSON = 3
JSON_DATE_SIZE = 12
MIN_DATETIME_SIZE_JSON = 21
MIN_STRING_SIZE = 2
MIN_BOOL_SIZE = 4
MIN_NUMBER_SIZE = 1
MAX_NAME_FORMAT_REGEX_SIZE = 128

MAX_UINT64 = 2**64 - 1
_TWO_TO_64 = float(2**64)


class UnsupportedExpressionError(Exception):
    """The rule uses CEL this estimator does not model; it refuses to guess a cost."""


# --- estimate arithmetic: cel-go checker/cost.go SizeEstimate / CostEstimate ------------------------------------


def _add(x: int, y: int) -> int:
    """``addUint64NoOverflow``."""
    return min(x + y, MAX_UINT64)


def _mul(x: int, y: int) -> int:
    """``multiplyUint64NoOverflow``."""
    return min(x * y, MAX_UINT64)


def _mul_factor(x: int, factor: float) -> int:
    """``multiplyByCostFactor``: float64 product rounded up, saturating (float semantics are Go's, on purpose)."""
    xf = float(x)
    if xf > 0 and factor > 0 and xf > _TWO_TO_64 / factor:
        return MAX_UINT64
    product = math.ceil(xf * factor)
    if product >= _TWO_TO_64:
        return MAX_UINT64
    return int(product)


@dataclass(frozen=True)
class Estimate:
    """An inclusive ``[min, max]`` range: cel-go's ``SizeEstimate`` and ``CostEstimate`` (same arithmetic)."""

    min: int
    max: int

    def add(self, other: Estimate) -> Estimate:
        return Estimate(_add(self.min, other.min), _add(self.max, other.max))

    def multiply(self, other: Estimate) -> Estimate:
        return Estimate(_mul(self.min, other.min), _mul(self.max, other.max))

    def multiply_by_factor(self, factor: float) -> Estimate:
        return Estimate(_mul_factor(self.min, factor), _mul_factor(self.max, factor))

    def union(self, other: Estimate) -> Estimate:
        return Estimate(min(self.min, other.min), max(self.max, other.max))


def fixed(value: int) -> Estimate:
    return Estimate(value, value)


UNKNOWN_SIZE = Estimate(0, MAX_UINT64)
ZERO = fixed(0)
ONE = fixed(1)


# --- schema to declaration types: apiserver/pkg/cel/common/schemas.go SchemaDeclType ----------------------------


@dataclass(frozen=True)
class Options:
    """Knobs where upstream versions disagree; the defaults are the conservative choices (see module docstring)."""

    # cel-go has charged 1 for has() since v0.17.7, but every Kubernetes environment sets
    # cel.CostEstimatorOptions(checker.PresenceTestHasCost(false)) "to avoid breaking changes"
    # (apiserver/pkg/cel/environment/base.go), and older cel-go charged 0 too: 0 is what the API server computes.
    presence_test_cost: int = 0
    # estimateMaxElementsFromMaxLength multiplies maxLength by 4 (bytes per code point) in newer versions and used
    # maxLength as-is before. CONSERVATIVE: the larger, 4.
    max_length_factor: int = 4
    # Before Kubernetes 1.34 an x-kubernetes-int-or-string is always as long as the largest request
    # (estimateMaxStringLengthPerRequest: maxRequestSizeBytes - 2), whatever its maxLength; newer versions bound it
    # by maxLength * 4. CONSERVATIVE: ignore maxLength.
    int_or_string_uses_max_length: bool = False
    # Newer versions bound a string without maxLength by its longest enum value (estimateMaxStringEnumLength);
    # older ones by the request size. CONSERVATIVE: ignore enums.
    enum_bounds_string_length: bool = False


DEFAULT_OPTIONS = Options()

_CEL_RESERVED = frozenset(
    {"true", "false", "null", "in", "as", "break", "const", "continue", "else", "for", "function", "if", "import",
     "let", "loop", "package", "namespace", "return", "var", "void", "while"}
)
_IDENT = re.compile(r"^[_a-zA-Z][_a-zA-Z0-9]*$")
_ESCAPES = {"__": "__underscores__", ".": "__dot__", "-": "__dash__", "/": "__slash__"}


def escape_property_name(name: str) -> str | None:
    """``apiservercel.Escape``: the CEL identifier for a property name, or None when it cannot be accessed."""
    if not name or name[0].isdigit():
        return None
    if name in _CEL_RESERVED:
        return f"__{name}__"
    escaped = re.sub(r"__|[./-]", lambda m: _ESCAPES[m.group(0)], name)
    return escaped if _IDENT.match(escaped) else None


class DeclType:
    """``apiservercel.DeclType``: a CEL type derived from a schema, with its size bounds.

    ``max_elements`` is the size estimate of a value (characters of a string, items of a list, entries of a map;
    0 for scalars and objects, as upstream leaves it unset); ``min_serialized_size`` the fewest JSON bytes a value
    can take.
    """

    def __init__(
        self,
        kind: str,
        *,
        max_elements: int = 0,
        min_serialized_size: int = 0,
        elem: DeclType | None = None,
        key: DeclType | None = None,
        fields: Mapping[str, DeclType] | None = None,
    ) -> None:
        self.kind = kind
        self.max_elements = max_elements
        self.min_serialized_size = min_serialized_size
        self.elem = elem
        self.key = key
        self.fields: Mapping[str, DeclType] = dict(fields or {})

    def cel_type(self) -> CelType:
        if self.kind == "list":
            assert self.elem is not None
            return CelType("list", elem=self.elem.cel_type())
        if self.kind == "map":
            assert self.elem is not None and self.key is not None
            return CelType("map", elem=self.elem.cel_type(), key=self.key.cel_type())
        if self.kind == "object":
            return CelType("object", decl=self)
        return CelType(self.kind)

    def __repr__(self) -> str:
        return f"DeclType({self.kind}, max_elements={self.max_elements}, min={self.min_serialized_size})"


def _string_key_type() -> DeclType:
    # apiservercel.StringType, the key type of every map: MaxElements is never set, so a map key's size estimate is
    # [0, 0] (confirmed by compilation_test.go TestCostEstimation "map of strings with value length").
    return DeclType("string", min_serialized_size=MIN_STRING_SIZE)


def _zero_if_negative(value: int) -> int:
    return max(value, 0)


def _estimate_max_string_length_per_request(schema: Mapping[str, Any]) -> int:
    """``estimateMaxStringLengthPerRequest``."""
    if schema.get("x-kubernetes-int-or-string"):
        return MAX_REQUEST_SIZE_BYTES - 2
    fmt = schema.get("format")
    if fmt == "duration":
        return MAX_DURATION_SIZE_JSON
    if fmt == "date":
        return JSON_DATE_SIZE
    if fmt == "date-time":
        return MAX_DATETIME_SIZE_JSON
    return MAX_REQUEST_SIZE_BYTES - 2  # subtract 2 for ""


def _estimate_max_array_items_from_min_size(min_size: int) -> int:
    """``estimateMaxArrayItemsFromMinSize``: subtract 2 for [ and ], one comma per item."""
    return (MAX_REQUEST_SIZE_BYTES - 2) // (min_size + 1)


def _estimate_max_additional_properties_from_min_size(min_size: int) -> int:
    """``estimateMaxAdditionalPropertiesFromMinSize``: "": plus comma plus the smallest value per entry."""
    return (MAX_REQUEST_SIZE_BYTES - 2) // (min_size + 6)


def with_type_and_object_meta(schema: Mapping[str, Any]) -> Mapping[str, Any]:
    """``WithTypeAndObjectMeta``: kind, apiVersion, metadata.name and metadata.generateName are always there at a
    resource root; unless the schema declares all four as strings they are (re)declared as unbounded strings."""
    props = schema.get("properties") or {}
    meta = props.get("metadata") or {}
    meta_props = meta.get("properties") or {}
    if (
        (props.get("kind") or {}).get("type") == "string"
        and (props.get("apiVersion") or {}).get("type") == "string"
        and meta.get("type") == "object"
        and (meta_props.get("name") or {}).get("type") == "string"
        and (meta_props.get("generateName") or {}).get("type") == "string"
    ):
        return schema
    string = {"type": "string"}
    new_props = dict(props)
    new_props["kind"] = string
    new_props["apiVersion"] = string
    new_props["metadata"] = {"type": "object", "properties": {"name": string, "generateName": string}}
    result = dict(schema)
    result["properties"] = new_props
    return result


def schema_decl_type(
    schema: Mapping[str, Any] | None, is_resource_root: bool = False, options: Options = DEFAULT_OPTIONS
) -> DeclType | None:
    """``SchemaDeclType``: the declaration type of a (structural) schema, or None where CEL cannot see it."""
    if schema is None:
        return None
    if schema.get("x-kubernetes-int-or-string"):
        if options.int_or_string_uses_max_length and "maxLength" in schema:
            max_elements = _zero_if_negative(int(schema["maxLength"])) * options.max_length_factor
        else:
            max_elements = _estimate_max_string_length_per_request(schema)
        return DeclType("dyn", max_elements=max_elements, min_serialized_size=1)
    if is_resource_root:
        schema = with_type_and_object_meta(schema)
    kind = schema.get("type")
    if kind == "array":
        items = schema.get("items")
        if not isinstance(items, Mapping):
            return None
        item_type = schema_decl_type(items, bool(items.get("x-kubernetes-embedded-resource")), options)
        if item_type is None:
            return None
        if "maxItems" in schema:
            max_items = _zero_if_negative(int(schema["maxItems"]))
        else:
            max_items = _estimate_max_array_items_from_min_size(item_type.min_serialized_size)
        return DeclType("list", elem=item_type, max_elements=max_items, min_serialized_size=2)
    if kind == "object":
        additional = schema.get("additionalProperties")
        if isinstance(additional, Mapping):
            value_type = schema_decl_type(additional, bool(additional.get("x-kubernetes-embedded-resource")), options)
            if value_type is None:
                return None
            if "maxProperties" in schema:
                max_props = _zero_if_negative(int(schema["maxProperties"]))
            else:
                max_props = _estimate_max_additional_properties_from_min_size(value_type.min_serialized_size)
            return DeclType(
                "map", key=_string_key_type(), elem=value_type, max_elements=max_props, min_serialized_size=2
            )
        required = set(schema.get("required") or ())
        fields: dict[str, DeclType] = {}
        min_size = 2  # {}
        for name, prop in (schema.get("properties") or {}).items():
            field_type = schema_decl_type(prop, bool(prop.get("x-kubernetes-embedded-resource")), options)
            if field_type is None:
                continue
            escaped = escape_property_name(name)
            if escaped is not None:
                fields[escaped] = field_type
            if name in required and "default" not in prop:
                min_size += len(name.encode()) + field_type.min_serialized_size + 4
        return DeclType("object", fields=fields, min_serialized_size=min_size)
    if kind == "string":
        fmt = schema.get("format")
        if fmt == "byte":
            if "maxLength" in schema:
                size = _zero_if_negative(int(schema["maxLength"]))
            else:
                size = _estimate_max_string_length_per_request(schema)
            return DeclType("bytes", max_elements=size, min_serialized_size=MIN_STRING_SIZE)
        if fmt == "duration":
            return DeclType(
                "duration",
                max_elements=_estimate_max_string_length_per_request(schema),
                min_serialized_size=MIN_DURATION_SIZE_JSON,
            )
        if fmt in ("date", "date-time"):
            return DeclType(
                "timestamp",
                max_elements=_estimate_max_string_length_per_request(schema),
                min_serialized_size=JSON_DATE_SIZE if fmt == "date" else MIN_DATETIME_SIZE_JSON,
            )
        if "maxLength" in schema:
            size = _zero_if_negative(int(schema["maxLength"])) * options.max_length_factor
        elif options.enum_bounds_string_length and schema.get("enum"):
            size = max((len(v.encode()) for v in schema["enum"] if isinstance(v, str)), default=0)
        else:
            size = _estimate_max_string_length_per_request(schema)
        return DeclType("string", max_elements=size, min_serialized_size=MIN_STRING_SIZE)
    if kind == "boolean":
        return DeclType("bool", min_serialized_size=MIN_BOOL_SIZE)
    if kind == "number":
        return DeclType("double", min_serialized_size=MIN_NUMBER_SIZE)
    if kind == "integer":
        return DeclType("int", min_serialized_size=MIN_NUMBER_SIZE)
    return None


# --- CEL types (just enough of cel-go's checker to pick overloads) ----------------------------------------------


@dataclass(frozen=True, eq=True)
class CelType:
    kind: str
    elem: CelType | None = None
    key: CelType | None = None
    decl: DeclType | None = field(default=None, compare=True, hash=False)

    def field(self, name: str) -> CelType | None:
        if self.kind == "object" and self.decl is not None:
            decl = self.decl.fields.get(name)
            return decl.cel_type() if decl is not None else None
        return None


DYN = CelType("dyn")
BOOL = CelType("bool")
INT = CelType("int")
UINT = CelType("uint")
DOUBLE = CelType("double")
STRING = CelType("string")
BYTES = CelType("bytes")
NULL = CelType("null")
TYPE = CelType("type")
DURATION = CelType("duration")
TIMESTAMP = CelType("timestamp")
QUANTITY = CelType("quantity")
URL = CelType("url")
FORMAT = CelType("format")
STRING_LIST = CelType("list", elem=STRING)
_SCALARS = frozenset({"bool", "double", "duration", "int", "timestamp", "uint"})  # cel-go isScalar


# --- AST, built from celpy's lark parse tree, with cel-go's macro expansion -------------------------------------


class Node:
    _next_id = 0

    def __init__(self) -> None:
        Node._next_id += 1
        self.id = Node._next_id


class Lit(Node):
    def __init__(self, value: object, kind: str) -> None:
        super().__init__()
        self.value = value
        self.kind = kind


class Ident(Node):
    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name


class Select(Node):
    def __init__(self, operand: Node, field_name: str, test_only: bool = False) -> None:
        super().__init__()
        self.operand = operand
        self.field = field_name
        self.test_only = test_only


class Call(Node):
    def __init__(self, function: str, args: Sequence[Node], target: Node | None = None) -> None:
        super().__init__()
        self.function = function
        self.args = list(args)
        self.target = target


class CreateList(Node):
    def __init__(self, elements: Sequence[Node]) -> None:
        super().__init__()
        self.elements = list(elements)


class CreateMap(Node):
    def __init__(self, entries: Sequence[tuple[Node, Node]]) -> None:
        super().__init__()
        self.entries = list(entries)


class Comprehension(Node):
    def __init__(
        self,
        iter_var: str,
        iter_range: Node,
        accu_var: str,
        accu_init: Node,
        loop_condition: Node,
        loop_step: Node,
        result: Node,
    ) -> None:
        super().__init__()
        self.iter_var = iter_var
        self.iter_range = iter_range
        self.accu_var = accu_var
        self.accu_init = accu_init
        self.loop_condition = loop_condition
        self.loop_step = loop_step
        self.result = result


ACCUMULATOR = "@result"  # parser.AccumulatorName (older cel-go: "__result__"); either is excluded from paths

_BINARY = {
    "relation_lt": "_<_",
    "relation_le": "_<=_",
    "relation_gt": "_>_",
    "relation_ge": "_>=_",
    "relation_eq": "_==_",
    "relation_ne": "_!=_",
    "relation_in": "@in",
    "addition_add": "_+_",
    "addition_sub": "_-_",
    "multiplication_mul": "_*_",
    "multiplication_div": "_/_",
    "multiplication_mod": "_%_",
}

_SIMPLE_ESCAPES = {
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "v": "\v",
    "\\": "\\",
    "'": "'",
    '"': '"',
    "`": "`",
    "?": "?",
}


def _unescape(body: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(body):
        ch = body[i]
        if ch != "\\":
            out.append(ch)
            i += 1
            continue
        nxt = body[i + 1]
        if nxt in _SIMPLE_ESCAPES:
            out.append(_SIMPLE_ESCAPES[nxt])
            i += 2
        elif nxt in "xX":
            out.append(chr(int(body[i + 2 : i + 4], 16)))
            i += 4
        elif nxt == "u":
            out.append(chr(int(body[i + 2 : i + 6], 16)))
            i += 6
        elif nxt == "U":
            out.append(chr(int(body[i + 2 : i + 10], 16)))
            i += 10
        elif nxt in "0123":
            out.append(chr(int(body[i + 1 : i + 4], 8)))
            i += 4
        else:
            raise UnsupportedExpressionError(f"unknown escape \\{nxt}")
    return "".join(out)


def _string_literal(text: str) -> str:
    raw = text[0] in "rR"
    if raw:
        text = text[1:]
    quote = text[:3] if text[:3] in ('"""', "'''") else text[0]
    body = text[len(quote) : -len(quote)]
    return body if raw else _unescape(body)


def _literal(token: lark.Token) -> Lit:
    text = str(token)
    kind = token.type
    if kind in ("INT_LIT", "UINT_LIT"):
        body = text.rstrip("uU").lstrip("-")
        value = int(body, 16) if body[:2].lower() == "0x" else int(body)
        return Lit(-value if text.startswith("-") else value, "int" if kind == "INT_LIT" else "uint")
    if kind == "FLOAT_LIT":
        return Lit(float(text), "double")
    if kind in ("STRING_LIT", "MLSTRING_LIT"):
        return Lit(_string_literal(text), "string")
    if kind == "BYTES_LIT":
        chars = _string_literal(text[1:])
        data = bytes(ord(c) for c in chars) if all(ord(c) < 256 for c in chars) else chars.encode()
        return Lit(data, "bytes")
    if kind == "BOOL_LIT":
        return Lit(text == "true", "bool")
    if kind == "NULL_LIT":
        return Lit(None, "null")
    raise UnsupportedExpressionError(f"literal {text!r}")


def _children(tree: lark.Tree[Any]) -> list[Any]:
    return list(tree.children)


def _tree(child: Any) -> lark.Tree[Any]:
    if not isinstance(child, lark.Tree):
        raise UnsupportedExpressionError(f"unexpected token {child!r}")
    return child


class _Builder:
    """Turns celpy's lark tree into the AST cel-go's parser would produce (macros expanded as parser/macro.go)."""

    def build(self, tree: lark.Tree[Any]) -> Node:
        method = getattr(self, f"_{tree.data}", None)
        if method is None:
            raise UnsupportedExpressionError(f"syntax {tree.data}")
        node: Node = method(tree)
        return node

    def _sub(self, child: Any) -> Node:
        return self.build(_tree(child))

    def _expr(self, tree: lark.Tree[Any]) -> Node:
        kids = _children(tree)
        if len(kids) == 1:
            return self._sub(kids[0])
        return Call("_?_:_", [self._sub(k) for k in kids])

    def _conditionalor(self, tree: lark.Tree[Any]) -> Node:
        kids = _children(tree)
        if len(kids) == 1:
            return self._sub(kids[0])
        return Call("_||_", [self._sub(kids[0]), self._sub(kids[1])])

    def _conditionaland(self, tree: lark.Tree[Any]) -> Node:
        kids = _children(tree)
        if len(kids) == 1:
            return self._sub(kids[0])
        return Call("_&&_", [self._sub(kids[0]), self._sub(kids[1])])

    def _binary(self, tree: lark.Tree[Any]) -> Node:
        kids = _children(tree)
        if len(kids) == 1:
            return self._sub(kids[0])
        op = _tree(kids[0])
        return Call(_BINARY[str(op.data)], [self._sub(op.children[0]), self._sub(kids[1])])

    _relation = _binary
    _addition = _binary
    _multiplication = _binary

    def _unary(self, tree: lark.Tree[Any]) -> Node:
        kids = _children(tree)
        if len(kids) == 1:
            return self._sub(kids[0])
        op = _tree(kids[0]).data
        return Call("!_" if op == "unary_not" else "-_", [self._sub(kids[1])])

    def _member(self, tree: lark.Tree[Any]) -> Node:
        return self._sub(tree.children[0])

    _primary = _member
    _paren_expr = _member

    def _member_dot(self, tree: lark.Tree[Any]) -> Node:
        return Select(self._sub(tree.children[0]), str(tree.children[1]))

    def _exprlist(self, kids: list[Any]) -> list[Node]:
        if not kids:
            return []
        return [self._sub(k) for k in _tree(kids[0]).children]

    def _member_dot_arg(self, tree: lark.Tree[Any]) -> Node:
        kids = _children(tree)
        target_tree = _tree(kids[0])
        name = str(kids[1])
        raw_args = _tree(kids[2]).children if len(kids) > 2 else []
        macro = self._macro(target_tree, name, list(raw_args))
        if macro is not None:
            return macro
        target = self.build(target_tree)
        args = [self._sub(a) for a in raw_args]
        if isinstance(target, Ident) and target.name == "format":
            # format.dns1123Label() etc.: a namespaced global function of the Kubernetes format library.
            return Call(f"format.{name}", args)
        return Call(name, args, target=target)

    def _macro(self, target_tree: lark.Tree[Any], name: str, raw_args: list[Any]) -> Node | None:
        """parser/macro.go: all, exists, exists_one, map, filter."""
        if name not in ("all", "exists", "exists_one", "map", "filter") or len(raw_args) not in (2, 3):
            return None
        if len(raw_args) == 3 and name != "map":
            return None
        var_node = self._sub(raw_args[0])
        if not isinstance(var_node, Ident):
            raise UnsupportedExpressionError(f"{name}() needs a simple identifier as its variable")
        iter_range = self.build(target_tree)
        var = var_node.name
        args = [self._sub(a) for a in raw_args[1:]]

        def accu() -> Ident:
            return Ident(ACCUMULATOR)

        if name == "all":
            init: Node = Lit(True, "bool")
            cond: Node = Call("@not_strictly_false", [accu()])
            step: Node = Call("_&&_", [accu(), args[0]])
            result: Node = accu()
        elif name == "exists":
            init = Lit(False, "bool")
            cond = Call("@not_strictly_false", [Call("!_", [accu()])])
            step = Call("_||_", [accu(), args[0]])
            result = accu()
        elif name == "exists_one":
            init = Lit(0, "int")
            cond = Lit(True, "bool")
            step = Call("_?_:_", [args[0], Call("_+_", [accu(), Lit(1, "int")]), accu()])
            result = Call("_==_", [accu(), Lit(1, "int")])
        elif name == "map":
            init = CreateList([])
            cond = Lit(True, "bool")
            appended = Call("_+_", [accu(), CreateList([args[-1]])])
            step = appended if len(args) == 1 else Call("_?_:_", [args[0], appended, accu()])
            result = accu()
        else:  # filter
            init = CreateList([])
            cond = Lit(True, "bool")
            step = Call("_?_:_", [args[0], Call("_+_", [accu(), CreateList([Ident(var)])]), accu()])
            result = accu()
        return Comprehension(var, iter_range, ACCUMULATOR, init, cond, step, result)

    def _member_index(self, tree: lark.Tree[Any]) -> Node:
        return Call("_[_]", [self._sub(tree.children[0]), self._sub(tree.children[1])])

    def _ident(self, tree: lark.Tree[Any]) -> Node:
        return Ident(str(tree.children[0]))

    def _ident_arg(self, tree: lark.Tree[Any]) -> Node:
        kids = _children(tree)
        name = str(kids[0])
        args = self._exprlist(kids[1:])
        if name == "has":
            if len(args) != 1 or not isinstance(args[0], Select):
                raise UnsupportedExpressionError("has() needs a field selection")
            return Select(args[0].operand, args[0].field, test_only=True)
        return Call(name, args)

    def _literal(self, tree: lark.Tree[Any]) -> Node:
        token = tree.children[0]
        assert isinstance(token, lark.Token)
        return _literal(token)

    def _list_lit(self, tree: lark.Tree[Any]) -> Node:
        return CreateList(self._exprlist(_children(tree)))

    def _map_lit(self, tree: lark.Tree[Any]) -> Node:
        kids = _children(tree)
        flat = [self._sub(k) for k in _tree(kids[0]).children] if kids else []
        return CreateMap(list(zip(flat[::2], flat[1::2], strict=True)))


def parse(rule: str) -> Node:
    """Parse a CEL expression with celpy's grammar and expand its macros as cel-go does."""
    try:
        tree = celpy.Environment().compile(rule)
    except Exception as exc:  # celpy raises its own CELParseError
        raise UnsupportedExpressionError(f"cannot parse {rule!r}: {exc}") from exc
    return _Builder().build(tree)


# --- type checking: just enough of cel-go checker/checker.go to know each node's type and overloads -------------

_TYPE_IDENTS = frozenset({"bool", "bytes", "double", "duration", "dyn", "int", "list", "map", "null_type", "string",
                          "timestamp", "type", "uint"})
_ORDERED = ("bool", "int", "uint", "double", "string", "bytes", "timestamp", "duration")
_NUMERIC = ("int", "uint", "double")
_ORDER_PREFIX = {"_<_": "less", "_<=_": "less_equals", "_>_": "greater", "_>=_": "greater_equals"}
_TIME_ACCESSORS = frozenset({"getDate", "getDayOfMonth", "getDayOfWeek", "getDayOfYear", "getFullYear", "getHours",
                             "getMilliseconds", "getMinutes", "getMonth", "getSeconds"})
_QUANTITY_METHODS = {
    "sign": INT,
    "asInteger": INT,
    "isInteger": BOOL,
    "asApproximateFloat": DOUBLE,
    "isGreaterThan": BOOL,
    "isLessThan": BOOL,
    "compareTo": INT,
    "add": QUANTITY,
    "sub": QUANTITY,
}
_URL_METHODS = {
    "getScheme": STRING,
    "getHostname": STRING,
    "getHost": STRING,
    "getPort": STRING,
    "getEscapedPath": STRING,
    "getQuery": CelType("map", key=STRING, elem=STRING_LIST),
}


def _is(t: CelType, *kinds: str) -> bool:
    return t.kind == "dyn" or t.kind in kinds


def _join(a: CelType, b: CelType) -> CelType:
    return a if a == b else DYN


class _Checker:
    def __init__(self, variables: Mapping[str, CelType]) -> None:
        self.variables = variables
        self.types: dict[int, CelType] = {}
        self.overloads: dict[int, list[str]] = {}
        self.scopes: list[dict[str, CelType]] = []

    def check(self, node: Node) -> CelType:
        t = self._check(node)
        self.types[node.id] = t
        return t

    def _check(self, node: Node) -> CelType:
        if isinstance(node, Lit):
            return CelType(node.kind)
        if isinstance(node, Ident):
            for scope in reversed(self.scopes):
                if node.name in scope:
                    return scope[node.name]
            if node.name in self.variables:
                return self.variables[node.name]
            if node.name in _TYPE_IDENTS:
                return TYPE
            raise UnsupportedExpressionError(f"undeclared reference {node.name!r}")
        if isinstance(node, Select):
            operand = self.check(node.operand)
            if node.test_only:
                return BOOL
            if operand.kind == "object":
                result = operand.field(node.field)
                if result is None:
                    raise UnsupportedExpressionError(f"no such field {node.field!r}")
                return result
            if operand.kind == "map":
                assert operand.elem is not None
                return operand.elem
            if operand.kind == "dyn":
                return DYN
            raise UnsupportedExpressionError(f"cannot select {node.field!r} from {operand.kind}")
        if isinstance(node, CreateList):
            elems = [self.check(e) for e in node.elements]
            elem = elems[0] if elems and all(e == elems[0] for e in elems) else DYN
            return CelType("list", elem=elem)
        if isinstance(node, CreateMap):
            keys = [self.check(k) for k, _ in node.entries]
            values = [self.check(v) for _, v in node.entries]
            key = keys[0] if keys and all(k == keys[0] for k in keys) else DYN
            value = values[0] if values and all(v == values[0] for v in values) else DYN
            return CelType("map", key=key, elem=value)
        if isinstance(node, Comprehension):
            rng = self.check(node.iter_range)
            if rng.kind == "list":
                assert rng.elem is not None
                var_type = rng.elem
            elif rng.kind == "map":
                assert rng.key is not None
                var_type = rng.key
            elif rng.kind == "dyn":
                var_type = DYN
            else:
                raise UnsupportedExpressionError(f"cannot iterate over {rng.kind}")
            accu_type = self.check(node.accu_init)
            self.scopes.append({node.accu_var: accu_type})
            self.scopes.append({node.iter_var: var_type})
            self.check(node.loop_condition)
            step = self.check(node.loop_step)
            self.scopes.pop()
            if accu_type.kind == "list" and step.kind == "list":
                self.scopes[-1][node.accu_var] = step  # map()/filter(): the accumulator takes the step's type
            result = self.check(node.result)
            self.scopes.pop()
            return result
        if isinstance(node, Call):
            target = self.check(node.target) if node.target is not None else None
            args = [self.check(a) for a in node.args]
            overloads, result = self._resolve(node.function, target, args)
            self.overloads[node.id] = overloads
            return result
        raise UnsupportedExpressionError(type(node).__name__)

    def _resolve(self, fn: str, target: CelType | None, args: list[CelType]) -> tuple[list[str], CelType]:
        """The overload ids cel-go's checker would record for a call (several when an argument is dyn)."""
        n = len(args)
        if target is None:
            if fn in ("_&&_", "_||_") and n == 2:
                return (["logical_and" if fn == "_&&_" else "logical_or"], BOOL)
            if fn == "!_" and n == 1:
                return (["logical_not"], BOOL)
            if fn == "@not_strictly_false":
                return (["not_strictly_false"], BOOL)
            if fn == "-_" and n == 1:
                return ([f"negate_{args[0].kind}"], args[0])
            if fn == "_?_:_" and n == 3:
                return (["conditional"], _join(args[1], args[2]))
            if fn in ("_==_", "_!=_") and n == 2:
                return (["equals" if fn == "_==_" else "not_equals"], BOOL)
            if fn in _ORDER_PREFIX and n == 2:
                return self._ordering(fn, args)
            if fn == "_+_" and n == 2:
                return self._add(args)
            if fn in ("_-_", "_*_", "_/_", "_%_") and n == 2:
                if args[0].kind == "timestamp" and args[1].kind == "timestamp":
                    return (["subtract_timestamp_timestamp"], DURATION)
                return ([f"arithmetic{fn}"], args[0] if args[0].kind != "dyn" else args[1])
            if fn == "_[_]" and n == 2:
                return self._index(args[0])
            if fn == "@in" and n == 2:
                container = args[1]
                ids = []
                if _is(container, "list"):
                    ids.append("in_list")
                if _is(container, "map"):
                    ids.append("in_map")
                if not ids:
                    raise UnsupportedExpressionError(f"'in' on {container.kind}")
                return (ids, BOOL)
            if fn == "size" and n == 1:
                return ([f"size_{args[0].kind}"], INT)
            if fn == "matches" and n == 2:
                return (["matches"], BOOL)  # the global form: overload "matches", not "matches_string"
            if fn == "type" and n == 1:
                return (["type"], TYPE)
            if fn in ("int", "uint", "double", "bool", "string", "bytes", "duration", "timestamp", "dyn") and n == 1:
                return self._conversion(fn, args[0])
            if fn in ("quantity", "isQuantity") and n == 1:
                return ([fn], QUANTITY if fn == "quantity" else BOOL)
            if fn in ("url", "isURL") and n == 1:
                return ([fn], URL if fn == "url" else BOOL)
            if fn.startswith("format.") and n <= 1:
                return ([fn], CelType("optional", elem=FORMAT) if fn == "format.named" else FORMAT)
            raise UnsupportedExpressionError(f"function {fn}/{n}")
        return self._member(fn, target, args)

    def _ordering(self, fn: str, args: list[CelType]) -> tuple[list[str], CelType]:
        prefix = _ORDER_PREFIX[fn]
        a, b = args
        ids = [f"{prefix}_{kind}" for kind in _ORDERED if _is(a, kind) and _is(b, kind)]
        # CrossTypeNumericComparisons (enabled in the Kubernetes environments) adds mixed numeric overloads: O(1).
        if a.kind != b.kind and _is(a, *_NUMERIC) and _is(b, *_NUMERIC):
            ids.append(f"{prefix}_numeric")
        if not ids:
            raise UnsupportedExpressionError(f"{fn} on {a.kind}, {b.kind}")
        return (ids, BOOL)

    def _add(self, args: list[CelType]) -> tuple[list[str], CelType]:
        a, b = args
        ids: list[str] = []
        result = DYN
        for kind in ("int", "uint", "double", "string", "bytes", "list"):
            if _is(a, kind) and _is(b, kind):
                ids.append(f"add_{kind}")
                if a.kind == kind:
                    result = _join(a, b) if kind == "list" and b.kind == "list" else a
        if {a.kind, b.kind} in ({"timestamp", "duration"}, {"duration"}):
            ids.append("add_time")
            result = TIMESTAMP if "timestamp" in (a.kind, b.kind) else DURATION
        if not ids:
            raise UnsupportedExpressionError(f"_+_ on {a.kind}, {b.kind}")
        return (ids, result)

    def _index(self, container: CelType) -> tuple[list[str], CelType]:
        if container.kind == "list":
            assert container.elem is not None
            return (["index_list"], container.elem)
        if container.kind == "map":
            assert container.elem is not None
            return (["index_map"], container.elem)
        if container.kind == "dyn":
            return (["index_list", "index_map"], DYN)
        raise UnsupportedExpressionError(f"cannot index {container.kind}")

    def _conversion(self, fn: str, arg: CelType) -> tuple[list[str], CelType]:
        # dyn(x): newer cel-go (maybeUnwrapDynCall) charges 1 + x and copies x's size to the result; older versions
        # treat it as any O(1) call, whose result has no size. Same cost; CONSERVATIVE: no size (unknown).
        result = DYN if fn == "dyn" else CelType(fn)
        if fn == "string":
            sources = ["bytes", "string", "int", "uint", "double", "bool", "timestamp", "duration"]
            kinds = sources if arg.kind == "dyn" else [arg.kind]
            return ([f"{k}_to_string" for k in kinds], result)
        if fn == "bytes":
            return (["string_to_bytes" if arg.kind != "bytes" else "bytes_to_bytes"], result)
        return ([f"to_{fn}"], result)

    def _member(self, fn: str, target: CelType, args: list[CelType]) -> tuple[list[str], CelType]:
        n = len(args)
        tk = target.kind
        if fn == "size" and n == 0:
            return ([f"{tk}_size"], INT)
        if fn in ("contains", "startsWith", "endsWith", "matches") and n == 1 and _is(target, "string"):
            ids = {"contains": "contains_string", "startsWith": "starts_with_string",
                   "endsWith": "ends_with_string", "matches": "matches_string"}
            return ([ids[fn]], BOOL)
        if fn in _TIME_ACCESSORS and _is(target, "timestamp", "duration"):
            return ([f"{tk}_{fn}"], INT)
        if fn in _QUANTITY_METHODS and _is(target, "quantity"):
            return ([f"quantity_{fn}"], _QUANTITY_METHODS[fn])
        if fn in _URL_METHODS and n == 0 and _is(target, "url"):
            return ([f"url_{fn}"], _URL_METHODS[fn])
        if fn == "validate" and n == 1 and _is(target, "format"):
            return (["format_validate"], CelType("optional", elem=STRING_LIST))
        if fn in ("lowerAscii", "upperAscii", "trim", "substring") and _is(target, "string"):
            return ([f"string_{fn}"], STRING)
        if fn == "replace" and n in (2, 3) and _is(target, "string"):
            return (["string_replace"], STRING)
        if fn == "split" and n in (1, 2) and _is(target, "string"):
            return (["string_split"], STRING_LIST)
        if fn in ("find", "findAll") and n in (1, 2) and _is(target, "string"):
            return ([f"string_{fn}"], STRING if fn == "find" else STRING_LIST)
        if fn == "join" and n in (0, 1) and _is(target, "list"):
            return (["list_join"], STRING)
        if fn in ("indexOf", "lastIndexOf") and n == 1 and _is(target, "string", "list"):
            return ([f"{tk}_{fn}"], INT)
        if fn in ("isSorted", "sum", "min", "max") and n == 0 and _is(target, "list"):
            elem = target.elem if target.elem is not None else DYN
            return ([f"list_{fn}"], BOOL if fn == "isSorted" else elem)
        raise UnsupportedExpressionError(f"method {tk}.{fn}/{n}")


# --- the coster: cel-go checker/cost.go ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _EntrySize:
    """``entrySizeEstimate``: sizes of a container's keys (or indices) and values, when both are known."""

    container: str
    key: Estimate
    val: Estimate

    def union(self, other: _EntrySize | None) -> _EntrySize | None:
        if other is None:
            return None
        return _EntrySize(self.container, self.key.union(other.key), self.val.union(other.val))


@dataclass
class _LocalVar:
    path: list[str]
    size: Estimate | None
    entry_size: _EntrySize | None


@dataclass(frozen=True)
class _AstNode:
    """``checker.AstNode`` as handed to the estimators: path, type, expression and computed size."""

    path: list[str] | None
    type: CelType
    expr: Node | None
    computed_size: Estimate | None


class SizeEstimator(Protocol):
    """The ``EstimateSize`` half of cel-go's ``checker.CostEstimator``: a size for a field path, or None."""

    def estimate_size(self, path: Sequence[str] | None) -> Estimate | None: ...


class _SizeEstimator:
    """apiextensions ``compilation.go`` ``sizeEstimator.EstimateSize``: walk the path through the declaration
    types (the first element, the variable, is always taken to be the rule's root)."""

    def __init__(self, root: DeclType) -> None:
        self.root = root

    def estimate_size(self, path: Sequence[str] | None) -> Estimate | None:
        if not path:
            return None
        node = self.root
        for name in path[1:]:
            if name in ("@items", "@values"):
                if node.elem is None:
                    return None
                node = node.elem
            elif name == "@keys":
                if node.key is None:
                    return None
                node = node.key
            else:
                found = node.fields.get(name)
                if found is None:
                    return None
                node = found
        return Estimate(0, node.max_elements)


class _Coster:
    def __init__(self, checker: _Checker, sizes: SizeEstimator, options: Options) -> None:
        self.types = checker.types
        self.overloads = checker.overloads
        self.estimator = sizes
        self.presence_test_cost = fixed(options.presence_test_cost)
        self.expr_paths: dict[int, list[str]] = {}
        self.local_vars: dict[str, list[_LocalVar]] = {}
        self.computed_sizes: dict[int, Estimate] = {}
        self.computed_entry_sizes: dict[int, _EntrySize] = {}

    # -- scopes

    def _peek(self, name: str) -> _LocalVar | None:
        stack = self.local_vars.get(name)
        return stack[-1] if stack else None

    def _push(self, name: str, var: _LocalVar) -> None:
        self.local_vars.setdefault(name, []).append(var)

    def _pop(self, name: str) -> None:
        self.local_vars[name].pop()

    # -- paths and sizes

    def _type(self, e: Node) -> CelType:
        return self.types[e.id]

    def _get_path(self, e: Node) -> list[str]:
        if isinstance(e, Ident):
            var = self._peek(e.name)
            if var is not None:
                return list(var.path)
        return list(self.expr_paths.get(e.id, []))

    def _add_path(self, e: Node, path: list[str]) -> None:
        self.expr_paths[e.id] = path

    def _set_size(self, e: Node, size: Estimate | None) -> None:
        if size is not None:
            self.computed_sizes[e.id] = size

    def _set_entry_size(self, e: Node, size: _EntrySize | None) -> None:
        if size is not None:
            self.computed_entry_sizes[e.id] = size

    def _compute_entry_size(self, e: Node) -> _EntrySize | None:
        found = self.computed_entry_sizes.get(e.id)
        if found is not None:
            return found
        if isinstance(e, Ident):
            var = self._peek(e.name)
            if var is not None and var.entry_size is not None:
                return var.entry_size
        return None

    def _compute_size(self, e: Node) -> Estimate | None:
        """``computeSize``: computed, then literal, then schema path, then scalar type, then local variable."""
        found = self.computed_sizes.get(e.id)
        if found is not None:
            return found
        literal = _compute_expr_size(e)
        if literal is not None:
            return literal
        from_schema = self.estimator.estimate_size(self._get_path(e))
        if from_schema is not None:
            self.computed_sizes[e.id] = from_schema
            return from_schema
        if self._type(e).kind in _SCALARS:
            return ONE
        if isinstance(e, Ident):
            var = self._peek(e.name)
            if var is not None and var.size is not None:
                return var.size
        return None

    def _size_or_unknown(self, e: Node | _AstNode) -> Estimate:
        size = e.computed_size if isinstance(e, _AstNode) else self._compute_size(e)
        return size if size is not None else UNKNOWN_SIZE

    def _ast_node(self, e: Node) -> _AstNode:
        """``newAstNode``: paths rooted at the accumulator are not handed to the estimators."""
        path: list[str] | None = self._get_path(e)
        if path and path[0] in (ACCUMULATOR, "__result__"):
            path = None
        return _AstNode(path, self._type(e), e, self._compute_size(e))

    # -- cost

    def cost(self, e: Node) -> Estimate:
        if isinstance(e, Lit):
            return fixed(CONST_COST)
        if isinstance(e, Ident):
            var = self._peek(e.name)
            # costIdent. Note that a non-local identifier gets the path [name], and the Kubernetes size estimator
            # ignores the path's first element: a type name such as `int` in `type(self) == int` is sized like
            # `self` (the rule's root). That is upstream behaviour, kept as is: it makes `type(self) == int` on an
            # unbounded int-or-string cost 314,573 + 3.
            self._add_path(e, list(var.path) if var is not None else [e.name])
            return fixed(SELECT_AND_IDENT_COST)
        if isinstance(e, Select):
            return self._cost_select(e)
        if isinstance(e, Call):
            return self._cost_call(e)
        if isinstance(e, CreateList):
            return self._cost_create_list(e)
        if isinstance(e, CreateMap):
            return self._cost_create_map(e)
        if isinstance(e, Comprehension):
            return self._cost_comprehension(e)
        raise UnsupportedExpressionError(type(e).__name__)

    def _cost_select(self, e: Select) -> Estimate:
        """``costSelect``."""
        if e.test_only:
            return self.presence_test_cost.add(self.cost(e.operand))
        total = self.cost(e.operand)
        if self._type(e.operand).kind in ("map", "object"):  # MapKind, StructKind, TypeParamKind; not DynKind
            total = total.add(fixed(SELECT_AND_IDENT_COST))
        self._add_path(e, [*self._get_path(e.operand), e.field])
        return total

    def _cost_create_list(self, e: CreateList) -> Estimate:
        """``costCreateList``."""
        total = ZERO
        item_size = Estimate(MAX_UINT64 if e.elements else 0, 0)
        for element in e.elements:
            total = total.add(self.cost(element))
            item_size = item_size.union(self._size_or_unknown(element))
        self._set_entry_size(e, _EntrySize("list", ONE, item_size))
        return total.add(fixed(LIST_CREATE_BASE_COST))

    def _cost_create_map(self, e: CreateMap) -> Estimate:
        """``costCreateMap``."""
        total = ZERO
        key_size = Estimate(MAX_UINT64 if e.entries else 0, 0)
        val_size = Estimate(MAX_UINT64 if e.entries else 0, 0)
        for key, value in e.entries:
            total = total.add(self.cost(key)).add(self.cost(value))
            key_size = key_size.union(self._size_or_unknown(key))
            val_size = val_size.union(self._size_or_unknown(value))
        self._set_entry_size(e, _EntrySize("map", key_size, val_size))
        return total.add(fixed(MAP_CREATE_BASE_COST))

    def _cost_comprehension(self, e: Comprehension) -> Estimate:
        """``costComprehension`` (single iteration variable: ``pushIterSingle``)."""
        total = self.cost(e.iter_range).add(self.cost(e.accu_init))
        init = e.accu_init
        accu = _LocalVar(self._get_path(init), self._compute_size(init), self._compute_entry_size(init))
        self._push(e.accu_var, accu)
        entry = self._compute_entry_size(e.iter_range)
        container = entry.container if entry is not None else self._type(e.iter_range).kind
        if container == "list":
            size, subpath = (entry.val if entry is not None else None), "@items"
        else:
            size, subpath = (entry.key if entry is not None else None), "@keys"
        self._push(e.iter_var, _LocalVar([*self._get_path(e.iter_range), subpath], size, None))
        loop_cost = self.cost(e.loop_condition)
        step_cost = self.cost(e.loop_step)
        self._pop(e.iter_var)
        total = total.add(self.cost(e.result))
        self._pop(e.accu_var)
        range_count = self._size_or_unknown(e.iter_range)
        total = total.add(range_count.multiply(step_cost.add(loop_cost)))
        if isinstance(e.accu_init, Lit):
            self._set_size(e, self._compute_size(e.accu_init))
        elif isinstance(e.accu_init, CreateList | CreateMap):
            self._set_size(e, range_count)
            self._set_entry_size(e, self._compute_entry_size(e.loop_step))
        return total

    def _cost_call(self, e: Call) -> Estimate:
        """``costCall``."""
        arg_costs = []
        arg_nodes = []
        for arg in e.args:
            arg_costs.append(self.cost(arg))
            arg_nodes.append(self._ast_node(arg))
        total = ZERO
        target: _AstNode | None = None
        if e.target is not None:
            total = total.add(self.cost(e.target))
            target = self._ast_node(e.target)
        fn_cost = Estimate(MAX_UINT64, 0)
        result_size: Estimate | None = None
        for overload in self.overloads[e.id]:
            call_cost, call_size = self._function_cost(e, overload, target, arg_nodes, arg_costs)
            fn_cost = fn_cost.union(call_cost)
            if call_size is not None:
                result_size = call_size if result_size is None else result_size.union(call_size)
            # Indexing keeps a size: the entry size of a literal container, else the schema's size of the element
            # via the path @items/@values (so `self.m[k]` is as long as the map's value schema allows, not unknown).
            # Not a guess: cel-go costCall does this for IndexList/IndexMap, and compilation_test.go
            # TestCostEstimation "nested types with root rule ..." (7340027) depends on it.
            if overload in ("index_list", "index_map") and e.args:
                entry = self._compute_entry_size(e.args[0])
                result_size = entry.val if entry is not None else None
                subpath = "@items" if overload == "index_list" else "@values"
                self._add_path(e, [*self._get_path(e.args[0]), subpath])
            if result_size is None:
                result_size = self._compute_size(e)
        self._set_size(e, result_size)
        return total.add(fn_cost)

    def _function_cost(
        self,
        e: Call,
        overload: str,
        target: _AstNode | None,
        args: list[_AstNode],
        arg_costs: list[Estimate],
    ) -> tuple[Estimate, Estimate | None]:
        """``functionCost``: the Kubernetes estimator first, then cel-go's own cases, else O(1)."""
        arg_sum = ZERO
        for c in arg_costs:
            arg_sum = arg_sum.add(c)
        k8s = self._kubernetes_call_cost(e.function, overload, target, args)
        if k8s is not None:
            return k8s[0].add(arg_sum), k8s[1]
        size = self._size_or_unknown
        if overload == "string_to_bytes" and len(args) == 1:
            sz = size(args[0])
            return sz.multiply_by_factor(STRING_TRAVERSAL_COST_FACTOR).add(arg_sum), Estimate(sz.min, _mul(sz.max, 4))
        if overload == "bytes_to_string" and len(args) == 1:
            sz = size(args[0])
            return sz.multiply_by_factor(STRING_TRAVERSAL_COST_FACTOR).add(arg_sum), Estimate(sz.min // 4, sz.max)
        if overload in ("starts_with_string", "ends_with_string") and len(args) == 1:
            return size(args[0]).multiply_by_factor(STRING_TRAVERSAL_COST_FACTOR).add(arg_sum), None
        if overload == "in_list" and len(args) == 2:
            # "If a list is composed entirely of constant values this is O(1), but we don't account for that here."
            return size(args[1]).multiply_by_factor(1).add(arg_sum), None
        if overload == "matches_string" and target is not None and len(args) == 1:
            str_cost = size(target).add(ONE).multiply_by_factor(STRING_TRAVERSAL_COST_FACTOR)
            regex_cost = size(args[0]).multiply_by_factor(REGEX_STRING_LENGTH_COST_FACTOR)
            return str_cost.multiply(regex_cost).add(arg_sum), None
        if overload == "contains_string" and target is not None and len(args) == 1:
            str_cost = size(target).multiply_by_factor(STRING_TRAVERSAL_COST_FACTOR)
            sub_cost = size(args[0]).multiply_by_factor(STRING_TRAVERSAL_COST_FACTOR)
            return str_cost.multiply(sub_cost).add(arg_sum), None
        if overload in ("logical_or", "logical_and"):
            lhs, rhs = arg_costs
            # min cost is min of LHS for short circuited && or ||
            return Estimate(lhs.min, lhs.add(rhs).max), None
        if overload == "conditional":
            result = size(args[1]).union(size(args[2]))
            entry_true = self._compute_entry_size(e.args[1])
            entry_false = self._compute_entry_size(e.args[2])
            self._set_entry_size(e, entry_true.union(entry_false) if entry_true is not None else None)
            return arg_costs[0].add(arg_costs[1].union(arg_costs[2])), result
        if overload in ("add_string", "add_bytes", "add_list") and len(args) == 2:
            result = size(args[0]).add(size(args[1]))
            lhs_entry = self._compute_entry_size(e.args[0])
            rhs_entry = self._compute_entry_size(e.args[1])
            self._set_entry_size(e, lhs_entry.union(rhs_entry) if lhs_entry is not None else None)
            if overload == "add_list":
                # list concatenation is O(1), but we handle it here to track size
                return ONE.add(arg_sum), result
            return result.multiply_by_factor(STRING_TRAVERSAL_COST_FACTOR).add(arg_sum), result
        if overload in _SIZED_COMPARISONS:
            smallest_max = min(size(args[0]).max, size(args[1]).max)
            low = 1 if smallest_max > 0 else 0
            return Estimate(low, smallest_max).multiply_by_factor(STRING_TRAVERSAL_COST_FACTOR).add(arg_sum), None
        # O(1) functions: "Benchmarks suggest that most of the other operations take +/- 50% of a base cost unit"
        return ONE.add(arg_sum), None

    def _size_estimate(self, node: _AstNode) -> Estimate:
        """library ``CostEstimator.sizeEstimate``: computed size, else the schema, else unknown."""
        if node.computed_size is not None:
            return node.computed_size
        from_schema = self.estimator.estimate_size(node.path)
        return from_schema if from_schema is not None else UNKNOWN_SIZE

    def _list_element_node(self, lst: _AstNode) -> _AstNode | None:
        """library ``CostEstimator.listElementNode``."""
        if lst.type.kind != "list" or lst.type.elem is None:
            return None
        path = [*lst.path, "@items"] if lst.path is not None else None
        return _AstNode(path, lst.type.elem, None, None)

    def _kubernetes_call_cost(
        self, fn: str, overload: str, target: _AstNode | None, args: list[_AstNode]
    ) -> tuple[Estimate, Estimate | None] | None:
        """k8s.io/apiserver/pkg/cel/library/cost.go ``CostEstimator.EstimateCallCost`` (the cost excludes the
        arguments, which functionCost adds)."""
        traversal = STRING_TRAVERSAL_COST_FACTOR
        if fn in ("quantity", "isQuantity") and len(args) >= 1:
            # Newer versions charge a traversal of the argument; some versions test `target != nil`, which a global
            # call never has, and fall back to O(1). CONSERVATIVE: the union of both.
            return self._size_estimate(args[0]).multiply_by_factor(traversal).union(ONE), None
        if overload.startswith("quantity_") and fn in _QUANTITY_METHODS:
            return ONE, None
        # Newer versions also special-case `_==_` on Quantity, IP, CIDR, URL, Semver... to O(1) (or the URL's size);
        # older ones leave it to cel-go's Equals, where a quantity has no size, so it is MaxUint64 x 0.1.
        # CONSERVATIVE: not special-cased (library/cost_test.go TestQuantityCost of those versions expects that).
        if fn == "url" and len(args) == 1:
            # Newer versions also report ResultSize; CONSERVATIVE: older ones do not (the size stays unknown).
            return self._size_estimate(args[0]).multiply_by_factor(traversal), None
        if overload.startswith("url_"):
            return ONE, None
        if fn == "format.named":
            return ONE, None
        if overload == "format_validate" and target is not None:
            sz = self._size_estimate(args[0])
            return (
                sz.multiply_by_factor(traversal).multiply_by_factor(
                    MAX_NAME_FORMAT_REGEX_SIZE * REGEX_STRING_LENGTH_COST_FACTOR
                ),
                None,
            )
        if overload in ("string_lowerAscii", "string_upperAscii", "string_substring", "string_trim") and target:
            sz = self._size_estimate(target)
            return sz.multiply_by_factor(traversal), sz
        if overload == "string_replace" and target is not None and len(args) >= 2:
            return self._replace_cost(target, args)
        if overload == "string_split" and target is not None:
            sz = self._size_estimate(target)
            most = sz.max
            if len(args) > 1 and isinstance(args[1].expr, Lit) and isinstance(args[1].expr.value, int):
                most = args[1].expr.value
            return sz.multiply_by_factor(2 * traversal), Estimate(0, most)
        if overload == "list_join" and target is not None:
            return self._join_cost(target, args)
        if overload in ("string_find", "string_findAll") and target is not None and len(args) >= 1:
            sz = self._size_estimate(target)
            str_cost = sz.add(ONE).multiply_by_factor(traversal)
            regex_cost = self._size_estimate(args[0]).multiply_by_factor(REGEX_STRING_LENGTH_COST_FACTOR)
            return str_cost.multiply(regex_cost), Estimate(0, sz.max)
        if fn in ("isSorted", "sum", "max", "min", "indexOf", "lastIndexOf") and target is not None:
            element = self._list_element_node(target)
            if element is not None:
                el_cost = ONE
                if element.type.kind in ("string", "bytes"):
                    el_cost = el_cost.add(self._size_estimate(element).multiply_by_factor(traversal))
                return self._size_estimate(target).multiply(el_cost), None
            return self._size_estimate(target).multiply_by_factor(traversal), None
        return None

    def _replace_cost(self, target: _AstNode, args: list[_AstNode]) -> tuple[Estimate, Estimate]:
        sz = self._size_estimate(target)
        to_replace = self._size_estimate(args[0])
        replace_with = self._size_estimate(args[1])
        if to_replace.min == 0:
            count_max = sz.max + 1 if sz.max < MAX_UINT64 else sz.max
            retained_max = sz.max
        elif replace_with.max <= to_replace.min:
            count_max, retained_max = 0, sz.max
        else:
            count_max, retained_max = min(math.ceil(sz.max / to_replace.min), MAX_UINT64), 0
        if to_replace.max == 0:
            count_min = sz.min + 1 if sz.min < MAX_UINT64 else sz.min
            retained_min = sz.min
        elif to_replace.max <= replace_with.min:
            count_min, retained_min = 0, sz.min
        else:
            count_min, retained_min = min(math.ceil(sz.min / to_replace.max), MAX_UINT64), 0
        result = Estimate(count_min, count_max).multiply(replace_with).add(Estimate(retained_min, retained_max))
        return sz.multiply_by_factor(2 * STRING_TRAVERSAL_COST_FACTOR), result

    def _join_cost(self, target: _AstNode, args: list[_AstNode]) -> tuple[Estimate, Estimate]:
        sz = ZERO
        list_size = self._size_estimate(target)
        element = self._list_element_node(target)
        if element is not None:
            sz = list_size.multiply(self._size_estimate(element))
        if args:
            separator = self._size_estimate(args[0])
            separators = Estimate(max(list_size.min - 1, 0), max(list_size.max - 1, 0))
            sz = sz.add(separator.multiply(separators))
        return sz.multiply_by_factor(STRING_TRAVERSAL_COST_FACTOR), sz


_SIZED_COMPARISONS = frozenset(
    {f"{p}_{k}" for p in ("less", "less_equals", "greater", "greater_equals") for k in ("string", "bytes")}
    | {"equals", "not_equals"}
)


def _compute_expr_size(e: Node) -> Estimate | None:
    """``computeExprSize``: the exact size of literals and of list and map literals."""
    if isinstance(e, Lit):
        if e.kind == "string":
            assert isinstance(e.value, str)
            return fixed(len(e.value))  # runes, as CEL's size()
        if e.kind == "bytes":
            assert isinstance(e.value, bytes)
            return fixed(len(e.value))
        return ONE
    if isinstance(e, CreateList):
        return fixed(len(e.elements))
    if isinstance(e, CreateMap):
        return fixed(len(e.entries))
    return None


def estimate_expression(
    expression: str,
    variables: Mapping[str, CelType],
    sizes: SizeEstimator,
    options: Options = DEFAULT_OPTIONS,
) -> Estimate:
    """cel-go ``checker.Cost``: the static cost ``[min, max]`` of an expression over the declared variables, with
    ``sizes`` as the size estimator (the Kubernetes library estimator is always layered on top)."""
    ast = parse(expression)
    checker = _Checker(variables)
    checker.check(ast)
    return _Coster(checker, sizes, options).cost(ast)


def expression_cost(rule: str, root: DeclType, options: Options = DEFAULT_OPTIONS) -> Estimate:
    """The static cost estimate ``[min, max]`` of one CEL rule whose ``self`` (and ``oldSelf``) has the type
    ``root``, sizes taken from the schema as apiextensions' ``sizeEstimator`` does."""
    self_type = root.cel_type()
    return estimate_expression(rule, {"self": self_type, "oldSelf": self_type}, _SizeEstimator(root), options)


def rule_max_cost(
    schema: Mapping[str, Any], rule: str, *, is_resource_root: bool = False, options: Options = DEFAULT_OPTIONS
) -> int:
    """``CompilationResult.MaxCost`` of ``rule`` declared on ``schema``."""
    decl = schema_decl_type(schema, is_resource_root, options)
    if decl is None:
        raise UnsupportedExpressionError("rule declared on a schema CEL cannot see")
    return expression_cost(rule, decl, options).max


# --- the whole CRD: apiextensions validation.go / cel_validation.go ---------------------------------------------


def max_cardinality(min_serialized_size: int) -> int:
    """compilation.go ``maxCardinality``: how often data of this minimum size fits in one request."""
    return MAX_REQUEST_SIZE_BYTES // (min_serialized_size + 1)


def _extract_max_elements(schema: Mapping[str, Any]) -> int | None:
    """cel_validation.go ``extractMaxElements`` (None: unbounded)."""
    kind = schema.get("type")
    if kind == "object":
        if schema.get("additionalProperties") is not None:
            return _zero_if_negative(int(schema["maxProperties"])) if "maxProperties" in schema else None
        return 1
    if kind == "array":
        return _zero_if_negative(int(schema["maxItems"])) if "maxItems" in schema else None
    return 1


@dataclass(frozen=True)
class RuleCost:
    """One rule (or messageExpression) of a CRD version, with what the API server checks it by."""

    version: str
    path: str  # the schema node, e.g. ".spec.runtime.resources.requests.*" (".*" map values, "[*]" list items)
    index: int  # position in the node's x-kubernetes-validations
    expression: str
    kind: str  # "rule" or "messageExpression"
    max_cost: int  # CompilationResult.MaxCost
    cardinality: int  # product of the enclosing maxItems/maxProperties, or maxCardinality(...) when unbounded
    cardinality_bounded: bool

    @property
    def total(self) -> int:
        """``getExpressionCost`` (rules: cost times cardinality); messageExpressions count once, unmultiplied."""
        if self.kind == "messageExpression":
            return self.max_cost
        if self.max_cost == 0:
            return 0
        return min(self.max_cost * self.cardinality, MAX_UINT64)

    def __str__(self) -> str:
        bound = "" if self.cardinality_bounded else " (unbounded: estimated)"
        return (
            f"{self.version}{self.path} x-kubernetes-validations[{self.index}].{self.kind}: cost {self.max_cost:,}"
            f" x cardinality {self.cardinality:,}{bound} = {self.total:,}\n    {self.expression}"
        )


def _walk(
    schema: Mapping[str, Any], path: str, cardinality: int | None, is_root: bool
) -> Iterator[tuple[Mapping[str, Any], str, int | None, bool]]:
    yield schema, path, cardinality, is_root
    factor = _extract_max_elements(schema)
    child = None if cardinality is None or factor is None else min(cardinality * factor, MAX_UINT64)
    for name, prop in (schema.get("properties") or {}).items():
        yield from _walk(prop, f"{path}.{name}", child, False)
    items = schema.get("items")
    if isinstance(items, Mapping):
        yield from _walk(items, f"{path}[*]", child, False)
    additional = schema.get("additionalProperties")
    if isinstance(additional, Mapping):
        yield from _walk(additional, f"{path}.*", child, False)


def estimate_schema(
    schema: Mapping[str, Any], *, version: str = "", options: Options = DEFAULT_OPTIONS
) -> list[RuleCost]:
    """Every rule and messageExpression of one version's ``openAPIV3Schema``, with its cost and cardinality."""
    results: list[RuleCost] = []
    for node, path, cardinality, is_root in _walk(schema, "", 1, True):
        rules = node.get("x-kubernetes-validations") or []
        if not rules:
            continue
        decl = schema_decl_type(node, is_root or bool(node.get("x-kubernetes-embedded-resource")), options)
        if decl is None:
            raise UnsupportedExpressionError(f"{path}: rules on a schema CEL cannot see")
        bounded = cardinality is not None
        card = cardinality if cardinality is not None else max_cardinality(decl.min_serialized_size)
        for index, rule in enumerate(rules):
            for kind in ("rule", "messageExpression"):
                text = rule.get(kind)
                if not text:
                    continue
                try:
                    cost = expression_cost(text, decl, options).max
                except UnsupportedExpressionError as exc:
                    where = f"{version}{path} x-kubernetes-validations[{index}]"
                    raise UnsupportedExpressionError(f"{where}: {exc}") from exc
                results.append(RuleCost(version, path or ".", index, text, kind, cost, card, bounded))
    return results


def estimate(crd: Mapping[str, Any], options: Options = DEFAULT_OPTIONS) -> list[RuleCost]:
    """Every rule of every version of a CustomResourceDefinition manifest."""
    results: list[RuleCost] = []
    for version in crd["spec"]["versions"]:
        schema = (version.get("schema") or {}).get("openAPIV3Schema")
        if schema:
            results.extend(estimate_schema(schema, version=str(version["name"]), options=options))
    return results


def total_cost(costs: Sequence[RuleCost]) -> int:
    """``TotalCost.ObserveExpressionCost`` summed (saturating) over the rules of one version."""
    total = 0
    for cost in costs:
        total = _add(total, cost.total)
    return total
