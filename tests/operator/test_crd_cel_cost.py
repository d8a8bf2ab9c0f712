"""The CRD's CEL rules fit the API server's static cost limits, checked with a port of its estimator (cel_cost).

The estimator itself is pinned to numbers from the upstream test suites, so it is a test that can fail rather than a
number made up here:

* cel-go ``checker/cost_test.go`` ``TestCost``;
* Kubernetes ``apiextensions-apiserver/pkg/apiserver/schema/cel/compilation_test.go`` ``TestCostEstimation``;
* Kubernetes ``apiserver/pkg/cel/library/cost_test.go`` ``TestQuantityCost``, ``TestURLsCost``,
  ``TestStringLibrary``, ``TestListsCost``;
* Kubernetes ``apiextensions-apiserver/pkg/apiserver/schema/cel/model/schemas_test.go``
  ``TestEstimateMaxLengthJSON``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pytest
from cel_cost import (
    BOOL,
    BYTES,
    DURATION,
    INT,
    MAX_REQUEST_SIZE_BYTES,
    MAX_UINT64,
    STATIC_ESTIMATED_COST_LIMIT,
    STATIC_ESTIMATED_CRD_COST_LIMIT,
    STRING,
    TIMESTAMP,
    CelType,
    DeclType,
    Estimate,
    Options,
    RuleCost,
    UnsupportedExpressionError,
    estimate,
    estimate_expression,
    estimate_schema,
    max_cardinality,
    rule_max_cost,
    schema_decl_type,
    total_cost,
)

from modeldeploy import schema

Schema = dict[str, Any]


def _report(costs: Sequence[RuleCost], limit: int) -> str:
    lines = [f"{len(costs)} rule(s), most expensive first (limit {limit:,} each):"]
    lines += [f"  {cost}" for cost in sorted(costs, key=lambda c: c.total, reverse=True)]
    return "\n".join(lines)


# --- the real CRD -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def crd_costs() -> list[RuleCost]:
    return estimate(schema.crd_manifest())


def test_every_rule_of_the_crd_is_estimated(crd_costs: list[RuleCost]) -> None:
    """All x-kubernetes-validations are found (an estimator that skipped rules would pass everything)."""
    crd = schema.crd_manifest()
    declared = 0

    def count(node: Any) -> None:
        nonlocal declared
        if isinstance(node, Mapping):
            declared += len(node.get("x-kubernetes-validations") or [])
            for key, value in node.items():
                if key != "x-kubernetes-validations":
                    count(value)
        elif isinstance(node, list):
            for item in node:
                count(item)

    count(crd["spec"]["versions"])
    assert declared > 0
    assert len([c for c in crd_costs if c.kind == "rule"]) == declared


def test_each_rule_is_within_the_per_expression_limit(crd_costs: list[RuleCost]) -> None:
    """apiextensions validation.go: a rule is refused when MaxCost x cardinality > StaticEstimatedCostLimit (the
    cardinality being the product of the enclosing maxItems/maxProperties), so this checks the product, which is
    never less than the rule's own cost."""
    over = [c for c in crd_costs if c.total > STATIC_ESTIMATED_COST_LIMIT or c.max_cost > STATIC_ESTIMATED_COST_LIMIT]
    assert not over, _report(over, STATIC_ESTIMATED_COST_LIMIT)


def test_the_crd_total_is_within_the_per_crd_limit(crd_costs: list[RuleCost]) -> None:
    """apiextensions validation.go: the sum over a version's rules of cost x cardinality must stay within
    StaticEstimatedCRDCostLimit."""
    for version in sorted({c.version for c in crd_costs}):
        costs = [c for c in crd_costs if c.version == version]
        total = total_cost(costs)
        assert total <= STATIC_ESTIMATED_CRD_COST_LIMIT, (
            f"version {version}: total {total:,} > {STATIC_ESTIMATED_CRD_COST_LIMIT:,}\n"
            + _report(costs, STATIC_ESTIMATED_COST_LIMIT)
        )


def _crd_resources_schema() -> Mapping[str, Any]:
    spec = schema.openapi_schema()["properties"]["spec"]
    resources: Mapping[str, Any] = spec["properties"]["runtime"]["properties"]["resources"]
    return resources


_QUANTITY: Schema = {"x-kubernetes-int-or-string": True, "pattern": "^[0-9.]+[a-zA-Z]*$"}
# spec.runtime.resources as it was when the rule below was written: requests and limits, each at most 16 quantities.
RESOURCES: Schema = {
    "type": "object",
    "properties": {
        "requests": {"type": "object", "maxProperties": 16, "additionalProperties": _QUANTITY},
        "limits": {"type": "object", "maxProperties": 16, "additionalProperties": _QUANTITY},
    },
}


# The rule that was on spec.runtime.resources until it was found to be too expensive.
REQUESTS_WITHIN_LIMITS = (
    "!has(self.requests) || !has(self.limits) || self.requests.all(k, !(k in self.limits) || "
    "((k.contains('/') && !k.contains('kubernetes.io/')) || k.startsWith('hugepages-')) || "
    "quantity(type(self.requests[k]) == string ? self.requests[k] : string(int(self.requests[k])))"
    ".compareTo(quantity(type(self.limits[k]) == string ? self.limits[k] : string(int(self.limits[k])))) <= 0)"
)


def test_the_former_requests_within_limits_rule_is_flagged() -> None:
    """The rule is refused by the API server. string(int(x)) has no size estimate in cel-go, so the ternary's
    result size, and with it the quantity() parse, is unbounded: the estimate saturates. Even written without the
    ternary, 16 keys x two quantity() parses of an int-or-string value (3,145,726 characters x 0.1 = 314,573 each)
    is over the limit."""
    assert rule_max_cost(RESOURCES, REQUESTS_WITHIN_LIMITS) == MAX_UINT64
    assert rule_max_cost(_crd_resources_schema(), REQUESTS_WITHIN_LIMITS) > STATIC_ESTIMATED_COST_LIMIT
    # self 1 + .requests 1 + ['cpu'] 1, quantity() ceil(3,145,726 x 0.1) = 314,573, isInteger() 1.
    assert rule_max_cost(RESOURCES, "quantity(self.requests['cpu']).isInteger()") == 3 + 314_573 + 1
    # Without the ternary: range and result 3, then per key: loop condition 2, && 1, <= 1, compareTo() 1, and
    # two quantity() parses of self.xxx[k] (4 + 314,573 each): 3 + 16 x 629,159.
    plain = "self.requests.all(k, quantity(self.requests[k]).compareTo(quantity(self.limits[k])) <= 0)"
    assert rule_max_cost(RESOURCES, plain) == 10_066_547 > STATIC_ESTIMATED_COST_LIMIT


def test_a_too_expensive_crd_fails_the_check() -> None:
    """The whole-CRD path (walk, cardinality, total) flags a rule over the limit."""
    crd = schema.crd_manifest()
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["runtime"][
        "properties"
    ]["resources"]["x-kubernetes-validations"] = [{"rule": REQUESTS_WITHIN_LIMITS}]
    costs = estimate(crd)
    flagged = [c for c in costs if c.total > STATIC_ESTIMATED_COST_LIMIT]
    assert ".spec.runtime.resources" in [c.path for c in flagged]
    assert total_cost(costs) > STATIC_ESTIMATED_CRD_COST_LIMIT


# --- cel-go checker/cost_test.go TestCost -------------------------------------------------------------------------


class _Hints:
    """cel-go cost_test.go testCostEstimator: sizes by dotted path."""

    def __init__(self, hints: Mapping[str, int]) -> None:
        self.hints = hints

    def estimate_size(self, path: Sequence[str] | None) -> Estimate | None:
        size = self.hints.get(".".join(path or ()))
        return Estimate(0, size) if size is not None else None


_ALL_TYPES = CelType("object", decl=DeclType("object", fields={"single_int32": DeclType("int")}))
_ALL_LIST = CelType("list", elem=_ALL_TYPES)
_INT_LIST = CelType("list", elem=INT)
_NESTED_LIST = CelType("list", elem=_ALL_LIST)
_ALL_MAP = CelType("map", key=STRING, elem=_ALL_TYPES)
_NESTED_MAP = CelType("map", key=STRING, elem=_ALL_MAP)
_ZERO = (0, 0)
_ONE = (1, 1)

CEL_GO_COST_CASES: list[tuple[str, str, dict[str, CelType], dict[str, int], int, tuple[int, int]]] = [
    # (upstream case name, expression, variables, size hints, presence test cost, wanted [min, max])
    ("const", '"Hello World!"', {}, {}, 1, _ZERO),
    ("identity", "input", {"input": _INT_LIST}, {}, 1, _ONE),
    ("select: map", "input['key']", {"input": CelType("map", key=STRING, elem=STRING)}, {}, 1, (2, 2)),
    ("select: field", "input.single_int32", {"input": _ALL_TYPES}, {}, 1, (2, 2)),
    ("select: field test only no has() cost", "has(input.single_int32)", {"input": _ALL_TYPES}, {}, 0, _ONE),
    ("select: field test only", "has(input.single_int32)", {"input": _ALL_TYPES}, {}, 1, (2, 2)),
    ("select: non-proto field test", "has(input.testAttr.nestedAttr)", {"input": _NESTED_MAP}, {}, 1, (3, 3)),
    ("select: non-proto field test no has() cost", "has(input.testAttr.nestedAttr)", {"input": _NESTED_MAP}, {},
     0, (2, 2)),
    ("create list", "[1, 2, 3]", {}, {}, 1, (10, 10)),
    ("create map", '{"a": 1, "b": 2, "c": 3}', {}, {}, 1, (30, 30)),
    ("all comprehension", "input.all(x, true)", {"input": _ALL_LIST}, {"input": 100}, 1, (2, 302)),
    ("nested all comprehension", "input.all(x, x.all(y, true))", {"input": _NESTED_LIST},
     {"input": 50, "input.@items": 10}, 1, (2, 1752)),
    ("all comprehension on literal", "[1, 2, 3].all(x, true)", {}, {}, 1, (20, 20)),
    ("variable cost function", "input.matches('[0-9]')", {"input": STRING}, {"input": 500}, 1, (3, 103)),
    ("variable cost function with constant", "'123'.matches('[0-9]')", {}, {}, 1, (2, 2)),
    ("or", "true || false", {}, {}, 1, _ZERO),
    ("or accumulated branch cost", "a || b || c || d", {v: BOOL for v in "abcd"}, {}, 1, (1, 4)),
    ("and accumulated branch cost", "a && b && c && d", {v: BOOL for v in "abcd"}, {}, 1, (1, 4)),
    ("lt", "1 < 2", {}, {}, 1, _ONE),
    ("eq", "1 == 2", {}, {}, 1, _ONE),
    ("in", "2 in [1, 2, 3]", {}, {}, 1, (13, 13)),
    ("plus", "1 + 1", {}, {}, 1, _ONE),
    ("%", "1 % 1", {}, {}, 1, _ONE),
    ("ternary", "true ? 1 : 2", {}, {}, 1, _ZERO),
    ("string size", 'size("123")', {}, {}, 1, _ONE),
    ("bytes to string conversion", "string(input)", {"input": BYTES}, {"input": 500}, 1, (1, 51)),
    ("bytes to string conversion equality", "string(input) == string(input)", {"input": BYTES}, {"input": 500}, 1,
     (3, 152)),
    ("string to bytes conversion equality", "bytes(input) == bytes(input)", {"input": STRING}, {"input": 500}, 1,
     (3, 302)),
    ("int to string conversion", "string(1)", {}, {}, 1, _ONE),
    ("contains", "input.contains(arg1)", {"input": STRING, "arg1": STRING}, {"input": 500, "arg1": 500}, 1,
     (2, 2502)),
    ("matches", "input.matches('\\\\d+a\\\\d+b')", {"input": STRING}, {"input": 500}, 1, (3, 103)),
    ("startsWith", "input.startsWith(arg1)", {"input": STRING, "arg1": STRING}, {"arg1": 500}, 1, (2, 52)),
    ("endsWith", "input.endsWith(arg1)", {"input": STRING, "arg1": STRING}, {"arg1": 500}, 1, (2, 52)),
    ("size receiver", "input.size()", {"input": STRING}, {}, 1, (2, 2)),
    ("size", "size(input)", {"input": STRING}, {}, 1, (2, 2)),
    ("ternary eval", "(x > 2 ? input1 : input2).all(y, true)", {"x": INT, "input1": _ALL_LIST, "input2": _ALL_LIST},
     {"input1": 1, "input2": 1}, 1, (4, 7)),
    ("comprehension over map", "input.all(k, input[k].single_int32 > 3)", {"input": _ALL_MAP}, {"input": 10}, 1,
     (2, 82)),
    ("comprehension over nested map of maps", "input.all(k, input[k].all(x, true))", {"input": _NESTED_MAP},
     {"input": 5, "input.@values": 10}, 1, (2, 187)),
    ("string size of map keys", "input.all(k, k.contains(k))", {"input": _NESTED_MAP},
     {"input": 5, "input.@keys": 10}, 1, (2, 32)),
    ("comprehension variable shadowing", "input.all(k, input[k].all(k, true) && k.contains(k))",
     {"input": _NESTED_MAP}, {"input": 2, "input.@values": 2, "input.@keys": 5}, 1, (2, 34)),
    ("list concat", "(list1 + list2).all(x, true)", {"list1": _INT_LIST, "list2": _INT_LIST},
     {"list1": 10, "list2": 10}, 1, (4, 64)),
    ("str concat", '"abcdefg".contains(str1 + str2)', {"str1": STRING, "str2": STRING}, {"str1": 10, "str2": 10}, 1,
     (2, 6)),
    ("list size comparison", "list1.size() == list2.size()", {"list1": _INT_LIST, "list2": _INT_LIST}, {}, 1,
     (5, 5)),
    ("list size from ternary", "x > y ? list1.size() : list2.size()",
     {"x": INT, "y": INT, "list1": _INT_LIST, "list2": _INT_LIST}, {}, 1, (5, 5)),
    ("str endsWith equality",
     'str1.endsWith("abcdefghijklmnopqrstuvwxyz") == str2.endsWith("abcdefghijklmnopqrstuvwxyz")',
     {"str1": STRING, "str2": STRING}, {}, 1, (9, 9)),
    ("nested subexpression operators", "((5 != 6) == (1 == 2)) == ((3 <= 4) == (9 != 9))", {}, {}, 1, (7, 7)),
    ("str size estimate", "string(timestamp1) == string(timestamp2)",
     {"timestamp1": TIMESTAMP, "timestamp2": TIMESTAMP}, {}, 1, (5, 1844674407370955268)),
    ("timestamp equality check", "timestamp1 == timestamp2", {"timestamp1": TIMESTAMP, "timestamp2": TIMESTAMP}, {},
     1, (3, 3)),
    ("duration inequality check", "duration1 != duration2", {"duration1": DURATION, "duration2": DURATION}, {}, 1,
     (3, 3)),
]


@pytest.mark.parametrize(
    ("expression", "variables", "hints", "presence", "wanted"),
    [pytest.param(*case[1:], id=case[0]) for case in CEL_GO_COST_CASES],
)
def test_cel_go_cost(
    expression: str,
    variables: dict[str, CelType],
    hints: dict[str, int],
    presence: int,
    wanted: tuple[int, int],
) -> None:
    """cel-go checker/cost_test.go TestCost (plain cel-go: has() costs 1 unless PresenceTestHasCost(false))."""
    got = estimate_expression(expression, variables, _Hints(hints), Options(presence_test_cost=presence))
    assert (got.min, got.max) == wanted


# --- Kubernetes compilation_test.go TestCostEstimation ------------------------------------------------------------

SchemaGenerator = Callable[[int | None], Schema]


def _rule_type(rule_type: str) -> Schema:
    """parseRuleType."""
    if rule_type in ("duration", "date", "date-time"):
        return {"type": "string", "format": rule_type}
    if rule_type == "int-or-string":
        return {"x-kubernetes-int-or-string": True}
    return {"type": rule_type}


def _with(node: Schema, key: str, value: int | None) -> Schema:
    return {**node, key: value} if value is not None else node


def _rule(node: Schema, rule: str) -> Schema:
    return {**node, "x-kubernetes-validations": [{"rule": rule}]}


def gen_array_with_rule(item_type: str, rule: str) -> SchemaGenerator:
    return lambda n: _rule(_with({"type": "array", "items": _rule_type(item_type)}, "maxItems", n), rule)


def gen_array_of_arrays_with_rule(item_type: str, rule: str) -> SchemaGenerator:
    inner = {"type": "array", "items": {"type": item_type}}
    return lambda n: _rule(_with({"type": "array", "items": inner}, "maxItems", n), rule)


_OBJECT_WITH_REQUIRED: Schema = {
    "type": "object",
    "properties": {"required": {"type": "string"}, "optional": {"type": "string"}},
    "required": ["required"],
}


def gen_object_array_with_rule(rule: str) -> SchemaGenerator:
    return lambda n: _rule(_with({"type": "array", "items": _OBJECT_WITH_REQUIRED}, "maxItems", n), rule)


def get_map_array_with_rule(map_type: str, rule: str) -> SchemaGenerator:
    items = {"type": "object", "additionalProperties": {"type": map_type}}
    return lambda n: _rule(_with({"type": "array", "items": items}, "maxItems", n), rule)


def gen_map_with_rule(map_type: str, rule: str) -> SchemaGenerator:
    return lambda n: _rule(
        _with({"type": "object", "additionalProperties": _rule_type(map_type)}, "maxProperties", n), rule
    )


def gen_map_with_custom_item_rule(item: Schema, rule: str) -> SchemaGenerator:
    return lambda n: _rule(_with({"type": "object", "additionalProperties": item}, "maxProperties", n), rule)


def gen_string_with_rule(rule: str) -> SchemaGenerator:
    return lambda n: _rule(_with({"type": "string"}, "maxLength", n), rule)


def gen_bytes_with_rule(rule: str) -> SchemaGenerator:
    return lambda n: _rule(_with({"type": "string", "format": "byte"}, "maxLength", n), rule)


def gen_enum_with_rule_and_values(rule: str, *values: str) -> SchemaGenerator:
    return lambda n: _rule(_with({"type": "string", "enum": list(values)}, "maxLength", n), rule)


def gen_nested_spec_with_rule(rule: str) -> SchemaGenerator:
    def gen(n: int | None) -> Schema:
        values = _with({"type": "string"}, "maxLength", n)
        return _rule(_with({"type": "object", "additionalProperties": values}, "maxProperties", n), rule)

    return gen


def gen_all_max_nested_spec_with_root_rule(rule: str) -> SchemaGenerator:
    def gen(n: int | None) -> Schema:
        values = _with(_OBJECT_WITH_REQUIRED, "maxProperties", n)
        items = _with({"type": "object", "additionalProperties": values}, "maxProperties", n)
        return _rule(_with({"type": "array", "items": items}, "maxItems", n), rule)

    return gen


def gen_one_max_nested_spec_with_root_rule(rule: str) -> SchemaGenerator:
    def gen(n: int | None) -> Schema:
        items = _with({"type": "object", "additionalProperties": _OBJECT_WITH_REQUIRED}, "maxProperties", n)
        return _rule({"type": "array", "items": items}, rule)

    return gen


def gen_string_array_with_rule(rule: str) -> SchemaGenerator:
    """The "extended library join/isSorted" generators: withMaxItems(arrayType(withMaxLength(string)))."""
    return lambda n: _rule(_with({"type": "array", "items": _with({"type": "string"}, "maxLength", n)}, "maxItems", n),
                           rule)


def gen_replace(n: int | None) -> Schema:
    props = {
        "str": _with({"type": "string"}, "maxLength", n),
        "before": {"type": "string", "maxLength": 2},
        "after": {"type": "string", "maxLength": 4},
    }
    rule = "self.str.replace(self.before, self.after) == 'does not matter'"
    return _rule({"type": "object", "properties": props}, rule)


def gen_split(n: int | None) -> Schema:
    string = _with({"type": "string"}, "maxLength", n)
    return _rule({"type": "object", "properties": {"str": string, "separator": string}},
                 "self.str.split(self.separator) == []")


COST_LIMIT = 100_000_000  # compilation_test.go costLimit
_NUMBER_MAP: Schema = {"type": "object", "additionalProperties": {"type": "number"}}
_NUMBER_ARRAY: Schema = {"type": "array", "items": {"type": "number"}}

# (name, generator, setMaxElements, expectedCalcCost, expectedSetCost); a calc cost of None stands for
# expectCalcCostExceedsLimit: costLimit. Cases whose upstream expectation is 0 (unchecked there) are left out.
K8S_COST_ESTIMATION_CASES: list[tuple[str, SchemaGenerator, int, int | None, int]] = [
    ("number array with all", gen_array_with_rule("number", "self.all(x, true)"), 10, 4718591, 32),
    ("string array with all", gen_array_with_rule("string", "self.all(x, true)"), 20, 3145727, 62),
    ("boolean array with all", gen_array_with_rule("boolean", "self.all(x, true)"), 5, 1887437, 17),
    ("array of number arrays with all", gen_array_of_arrays_with_rule("number", "self.all(x, true)"), 100, 3145727,
     302),
    ("array of objects with all", gen_object_array_with_rule("self.all(x, true)"), 50, 555128, 152),
    ("map of numbers with all", gen_map_with_rule("number", "self.all(x, true)"), 10, 1348169, 32),
    ("map of strings with all", gen_map_with_rule("string", "self.all(x, true)"), 3, 1179647, 11),
    ("map of booleans with all", gen_map_with_rule("boolean", "self.all(x, true)"), 100, 943718, 302),
    ("string with contains", gen_string_with_rule("self.contains('test')"), 10, 314574, 5),
    ("string with startsWith", gen_string_with_rule("self.startsWith('test')"), 15, 2, 2),
    ("string with endsWith", gen_string_with_rule("self.endsWith('test')"), 30, 2, 2),
    ("concat string", gen_string_with_rule('size(self + "hello") > size("hello")'), 4, 314578, 7),
    ("index of array with numbers", gen_array_with_rule("number", "self[1] == 0.0"), 5000, 2, 2),
    ("index of array with strings", gen_array_with_rule("string", "self[1] == self[1]"), 8, 314577, 314577),
    ("O(n^2) loop with numbers", gen_array_with_rule("number", "self.all(x, self.all(y, true))"), 10, None, 352),
    ("O(n^3) loop with numbers", gen_array_with_rule("number", "self.all(x, self.all(y, self.all(z, true)))"), 10,
     None, 3552),
    ("regex matches simple", gen_string_with_rule('self.matches("x")'), 50, 314574, 22),
    ("regex matches empty string", gen_string_with_rule('"".matches("(((((((((())))))))))[0-9]")'), 10, 7, 7),
    ("regex matches empty regex", gen_string_with_rule('self.matches("")'), 100, 1, 1),
    ("map of strings with value length", gen_nested_spec_with_rule("self.all(x, x.contains(self[x]))"), 10, 2752507,
     72),
    ("set array maxLength to zero", gen_array_with_rule("number", "self[3] == 0.0"), 0, 2, 2),
    ("set map maxLength to zero", gen_map_with_rule("number", 'self["x"] == 0.0'), 0, 2, 2),
    ("set string maxLength to zero", gen_string_with_rule('self == "x"'), 0, 2, 1),
    ("set bytes maxLength to zero", gen_bytes_with_rule('self == b"x"'), 0, 2, 1),
    ("set maxLength greater than estimated maxLength", gen_array_with_rule("number", "self.all(x, x == 0.0)"),
     3 * 1024 * 2048, 6291454, 25165826),
    ("nested types with root rule with all supporting maxLength",
     gen_all_max_nested_spec_with_root_rule('self.all(x, x["y"].required == "z")'), 10, 7340027, 72),
    ("nested types with root rule with one supporting maxLength",
     gen_one_max_nested_spec_with_root_rule('self.all(x, x["y"].required == "z")'), 10, 7340027, 7340027),
    ("int-or-string array with all", gen_array_with_rule("int-or-string", "self.all(x, true)"), 10, 4718591, 32),
    ("index of array with int-or-strings", gen_array_with_rule("int-or-string", "self[0] == 5"), 10, 3, 3),
    ("index of array with booleans", gen_array_with_rule("boolean", "self[0] == false"), 25, 2, 2),
    ("index of array of objects", gen_object_array_with_rule("self[0] == null"), 422, 2, 2),
    ("index of array of array of numnbers", gen_array_of_arrays_with_rule("number", "self[0][0] == -1.0"), 51, 3, 3),
    ("array of number maps with all", get_map_array_with_rule("number", "self.all(x, x.y == 25.2)"), 12, 6291452, 74),
    ("index of array of number maps", get_map_array_with_rule("number", "self[0].x > 2.0"), 3000, 4, 4),
    ("duration array with all", gen_array_with_rule("duration", "self.all(x, true)"), 5, 2359295, 17),
    ("index of duration array", gen_array_with_rule("duration", "self[0].getHours() == 2"), 525, 4, 4),
    ("date array with all", gen_array_with_rule("date", "self.all(x, true)"), 15, 725936, 47),
    ("index of date array", gen_array_with_rule("date", "self[2].getDayOfMonth() == 13"), 42, 4, 4),
    ("date-time array with all", gen_array_with_rule("date-time", "self.all(x, true)"), 25, 428963, 77),
    ("index of date-time array", gen_array_with_rule("date-time", "self[2].getMinutes() == 45"), 99, 4, 4),
    ("map of int-or-strings with all", gen_map_with_rule("int-or-string", "self.all(x, true)"), 15, 1348169, 47),
    ("map of objects with all", gen_map_with_custom_item_rule(_OBJECT_WITH_REQUIRED, "self.all(x, true)"), 20, 428963,
     62),
    ("map of number maps with all", gen_map_with_custom_item_rule(_NUMBER_MAP, "self.all(x, true)"), 10, 1179647, 32),
    ("map of number arrays with all", gen_map_with_custom_item_rule(_NUMBER_ARRAY, "self.all(x, true)"), 25, 1179647,
     77),
    ("map of durations with all", gen_map_with_rule("duration", "self.all(x, true)"), 5, 1048577, 17),
    ("map of dates with all", gen_map_with_rule("date", "self.all(x, true)"), 10, 524288, 32),
    ("map of date-times with all", gen_map_with_rule("date-time", "self.all(x, true)"), 25, 349526, 77),
    ("extended library regex find", gen_string_with_rule("self.find('[0-9]+') == ''"), 10, 629147, 11),
    ("extended library join", gen_string_array_with_rule("self.join(' ') == 'aa bb'"), 10, 329853068905, 43),
    ("extended library isSorted", gen_string_array_with_rule("self.isSorted() == true"), 10, 329854432052, 52),
    ("extended library replace", gen_replace, 4, 629154, 12),
    ("extended library split", gen_split, 10, 629160, 22),
    ("extended library lowerAscii", gen_string_with_rule("self.lowerAscii() == 'lower!'"), 10, 314575, 6),
    ("check cost of size call", gen_map_with_rule("integer", "oldSelf.size() == self.size()"), 10, 5, 5),
    ("check cost of timestamp comparison", gen_map_with_rule("date-time", 'self["a"] == self["b"]'), 7, 8, 8),
    ("check cost of duration comparison", gen_map_with_rule("duration", 'self["c"] == self["d"]'), 42, 8, 8),
]


def _single_rule_cost(node: Schema, options: Options | None = None) -> int:
    """schemaChecker: Compile(schema, SchemaDeclType(schema, false)) and the MaxCost of its one rule."""
    (rule,) = node["x-kubernetes-validations"]
    return rule_max_cost(node, rule["rule"], options=options or Options())


@pytest.mark.parametrize(
    ("generator", "set_max", "calc_cost", "set_cost"),
    [pytest.param(*case[1:], id=case[0]) for case in K8S_COST_ESTIMATION_CASES],
)
def test_kubernetes_cost_estimation(
    generator: SchemaGenerator, set_max: int, calc_cost: int | None, set_cost: int
) -> None:
    """compilation_test.go TestCostEstimation: "calc maxLength" (no limits in the schema) and "set maxLength"."""
    calc = _single_rule_cost(generator(None))
    if calc_cost is None:
        assert calc >= COST_LIMIT
    else:
        assert calc == calc_cost
    assert _single_rule_cost(generator(set_max)) == set_cost


def test_kubernetes_cost_estimation_enum() -> None:
    """compilation_test.go TestCostEstimation "enums with maxLength equals to the longest possible value": newer
    versions bound an enum string by its longest value (2); by default this estimator does not (conservative)."""
    gen = gen_enum_with_rule_and_values("self.contains('A')", "A", "B", "C", "LongValue")
    assert _single_rule_cost(gen(None), Options(enum_bounds_string_length=True)) == 2
    assert _single_rule_cost(gen(1000)) == 401
    assert _single_rule_cost(gen(None)) == 314_574  # conservative default: as long as the request


def test_int_or_string_max_length_is_ignored_by_default() -> None:
    """schemas.go: before 1.34 an int-or-string is as long as the request whatever its maxLength; newer versions
    use maxLength x 4. The default is the older, larger estimate."""
    node = {"x-kubernetes-int-or-string": True, "maxLength": 4}
    default = schema_decl_type(node)
    assert default is not None and default.max_elements == MAX_REQUEST_SIZE_BYTES - 2
    newer = schema_decl_type(node, options=Options(int_or_string_uses_max_length=True))
    assert newer is not None and newer.max_elements == 16


# --- Kubernetes library/cost_test.go ------------------------------------------------------------------------------


class _NoSizes:
    def estimate_size(self, path: Sequence[str] | None) -> Estimate | None:
        return None


LIBRARY_CASES: list[tuple[str, str, tuple[int, int]]] = [
    # TestQuantityCost
    ("quantity path", 'quantity("12Mi")', _ONE),
    ("isQuantity", 'isQuantity("20")', _ONE),
    ("isQuantity_megabytes", 'isQuantity("20M")', _ONE),
    ("equality_reflexivity", 'quantity("200M") == quantity("200M")', (3, 1844674407370955266)),
    ("equality_symmetry", 'quantity("200M") == quantity("0.2G") && quantity("0.2G") == quantity("200M")',
     (3, 3689348814741910532)),
    ("quantity_less", 'quantity("50M").isLessThan(quantity("50Mi"))', (3, 3)),
    ("quantity_greater", 'quantity("50Mi").isGreaterThan(quantity("50M"))', (3, 3)),
    ("compare_equal", 'quantity("200M").compareTo(quantity("0.2G")) > 0', (4, 4)),
    ("add_quantity", 'quantity("50k").add(quantity("20")) == quantity("50.02k")', (5, 1844674407370955268)),
    ("sub_int", 'quantity("50k").sub(20) == quantity("49980")', (4, 1844674407370955267)),
    ("arith_chain_1", 'quantity("50k").add(20).sub(quantity("100k")).asInteger() > 0', (6, 6)),
    ("arith_chain", 'quantity("50k").add(20).sub(quantity("100k")).sub(-50000).asInteger() > 0', (7, 7)),
    ("as_integer", 'quantity("50k").asInteger() > 0', (3, 3)),
    ("is_integer", 'quantity("50").isInteger()', (2, 2)),
    ("as_float", 'quantity("50.703k").asApproximateFloat() > 0.0', (3, 3)),
    # TestURLsCost
    ("url.getScheme", "url('https:://kubernetes.io/').getScheme()", (4, 4)),
    ("url.getQuery", "url('https:://kubernetes.io/').getQuery()", (4, 4)),
    # TestStringLibrary
    ("lowerAscii", "'ABCDEFGHIJ abcdefghij'.lowerAscii()", (3, 3)),
    ("lowerAsciiEquals", "'ABCDEFGHIJ abcdefghij'.lowerAscii() == 'abcdefghij ABCDEFGHIJ'.lowerAscii()", (7, 9)),
    ("upperAscii", "'ABCDEFGHIJ abcdefghij'.upperAscii()", (3, 3)),
    ("replace", "'abc 123 def 123'.replace('123', '456')", (3, 3)),
    ("replace between all chars", "'abc 123 def 123'.replace('', 'x')", (3, 3)),
    ("replace with limit", "'abc 123 def 123'.replace('123', '456', 1)", (3, 3)),
    ("split", "'abc 123 def 123'.split(' ')", (3, 3)),
    ("split with limit", "'abc 123 def 123'.split(' ', 1)", (3, 3)),
    ("substring", "'abc 123 def 123'.substring(5)", (2, 2)),
    ("substring with end", "'abc 123 def 123'.substring(5, 8)", (2, 2)),
    ("trim", "'  abc 123 def 123  '.trim()", (2, 2)),
    ("find", "'abc 123 def 123'.find('123')", (2, 2)),
    ("findAll", "'abc 123 def 123'.findAll('123')", (2, 2)),
    ("findAll with limit", "'abc 123 def 123'.findAll('123', 1)", (2, 2)),
    # TestListsCost / TestIndexOfCost (cases that do not depend on the test's own size estimator)
    ("int list sum", "[1, 2, 3, 4, 5].sum()", (15, 15)),
    ("int list isSorted", "[1, 2, 3, 4, 5].isSorted()", (15, 15)),
    ("double list max", "[1.0, 2.0, 3.0, 4.0, 5.0].max()", (15, 15)),
    ("int list indexOf", "[1, 2, 3, 4, 5].indexOf(3)", (15, 15)),
    ("string indexOf", "'01234567890123456789012345678901234567890123456789'.indexOf('123')", (5, 5)),
]


@pytest.mark.parametrize(("expression", "wanted"), [pytest.param(*case[1:], id=case[0]) for case in LIBRARY_CASES])
def test_kubernetes_library_cost(expression: str, wanted: tuple[int, int]) -> None:
    """library/cost_test.go (TestQuantityCost's equality cases are those of the versions before Quantity equality
    was special-cased to cost 1: the conservative choice)."""
    got = estimate_expression(expression, {}, _NoSizes())
    assert (got.min, got.max) == wanted


# --- Kubernetes schemas_test.go TestEstimateMaxLengthJSON ---------------------------------------------------------


def _array(item_type: str, fmt: str = "", max_items: int | None = None) -> Schema:
    items: Schema = {"type": item_type, **({"format": fmt} if fmt else {})}
    return _with({"type": "array", "items": items}, "maxItems", max_items)


MAX_ELEMENTS_CASES: list[tuple[str, Schema, int]] = [
    ("booleanArray", _array("boolean"), 629145),
    ("durationArray", _array("string", "duration"), 786431),
    ("datetimeArray", _array("string", "date-time"), 142987),
    ("dateArray", _array("string", "date"), 241978),
    ("numberArray", _array("integer"), 1572863),
    ("stringArray", _array("string"), 1048575),
    ("stringMap", {"type": "object", "additionalProperties": {"type": "string"}}, 393215),
    ("objectOptionalPropertyArray", {"type": "array", "items": _OBJECT_WITH_REQUIRED}, 185042),
    ("arrayWithLength", _array("integer", "int64", 10), 10),
    ("stringWithLength", {"type": "string", "maxLength": 20}, 80),
    ("mapWithLength", {"type": "object", "additionalProperties": {"type": "string"}, "maxProperties": 15}, 15),
    ("durationMaxSize", {"type": "string", "format": "duration"}, 32),
    ("dateSize", {"type": "string", "format": "date"}, 12),
    ("maxdatetimeSize", {"type": "string", "format": "date-time"}, 32),
    ("maxintOrStringSize", {"x-kubernetes-int-or-string": True}, MAX_REQUEST_SIZE_BYTES - 2),
    ("objectDefaultFieldArray", {"type": "array", "items": {"type": "object", "required": ["field"],
                                                            "properties": {"field": {"type": "string",
                                                                                     "default": "default"}}}}, 1048575),
    ("byteStringSize", {"type": "string", "format": "byte"}, 3145726),
    ("byteStringSetMaxLength", {"type": "string", "format": "byte", "maxLength": 20}, 20),
]


@pytest.mark.parametrize(("node", "expected"), [pytest.param(*case[1:], id=case[0]) for case in MAX_ELEMENTS_CASES])
def test_schema_max_elements(node: Schema, expected: int) -> None:
    """schemas_test.go TestEstimateMaxLengthJSON: SchemaDeclType(schema, false).MaxElements."""
    decl = schema_decl_type(node)
    assert decl is not None
    assert decl.max_elements == expected


# --- cardinality: apiextensions cel_validation.go childContext / compilation.go maxCardinality ------------------


def test_cardinality_multiplies_enclosing_limits_and_estimates_unbounded() -> None:
    """A rule's cardinality is the product of the enclosing maxItems/maxProperties; under an unbounded list or map
    it is maxCardinality(MinSerializedSize of the rule's node) = 3 MiB / (size + 1)."""
    leaf = _rule({"type": "string", "maxLength": 10}, "self.startsWith('a')")
    bounded: Schema = {
        "type": "object",
        "properties": {
            "lists": {"type": "array", "maxItems": 8, "items": {
                "type": "object", "additionalProperties": leaf, "maxProperties": 4}},
            "free": {"type": "array", "items": leaf},
        },
    }
    costs = {c.path: c for c in estimate_schema(bounded)}
    assert costs[".lists[*].*"].cardinality == 32
    assert costs[".lists[*].*"].cardinality_bounded
    assert costs[".free[*]"].cardinality == max_cardinality(2) == MAX_REQUEST_SIZE_BYTES // 3
    assert not costs[".free[*]"].cardinality_bounded
    assert costs[".lists[*].*"].total == costs[".lists[*].*"].max_cost * 32


def test_unknown_functions_are_refused_not_guessed() -> None:
    with pytest.raises(UnsupportedExpressionError):
        rule_max_cost({"type": "string"}, "self.someFunction()")
    with pytest.raises(UnsupportedExpressionError):
        rule_max_cost({"type": "object", "properties": {"a": {"type": "string"}}}, "self.b == 'x'")
