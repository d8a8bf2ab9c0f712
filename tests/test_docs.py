"""The user documentation stays true to the code: the API reference matches the CRD, every reason the operator
emits is explained in troubleshooting.md, and links between the docs resolve."""

from __future__ import annotations

import ast
import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
OPERATOR = REPO / "operator" / "src" / "modeldeploy"
REASON_MODULES = (OPERATOR / "reconcile.py", OPERATOR / "rollout" / "plan.py", OPERATOR / "controller.py")

# Where the reason is among the positional arguments of the calls that emit one.
REASON_ARGUMENT = {"Event": 1, "event": 1, "Condition": 2, "_reject": 2, "_start_rollback": 3}
# Reasons built at run time from a prefix: every value the suffix can take.
DYNAMIC_REASONS = {
    "Analysis": ("Pass", "Fail", "Inconclusive", "Successful", "Failed"),
}


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("generate_api_reference", DOCS / "generate_api_reference.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def test_api_reference_is_up_to_date() -> None:
    generator = _generator()
    expected = generator.render(generator.load_crd())
    current = (DOCS / "api-reference.md").read_text(encoding="utf-8")
    assert current == expected, "docs/api-reference.md is stale: run python docs/generate_api_reference.py"


def test_api_reference_covers_every_field_and_rule() -> None:
    generator = _generator()
    crd = generator.load_crd()
    text = generator.render(crd)
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]

    def fields(node: dict[str, object], path: str) -> list[tuple[str, str]]:
        out = []
        properties = node.get("properties") or {}
        assert isinstance(properties, dict)
        for name, child in properties.items():
            out.append((path, name))
            for sub, suffix in ((child, ""), (child.get("items") or {}, "[]")):
                if sub.get("properties"):
                    out.extend(fields(sub, f"{path}.{name}{suffix}"))
        return out

    for top in ("spec", "status"):
        for parent, name in fields(schema["properties"][top], top):
            section = text.split(f"# {parent}\n", 1)[1].split("\n#", 1)[0]
            assert f"`{name}`" in section, f"{parent}.{name} missing from the API reference"

    def messages(node: object) -> list[str]:
        if isinstance(node, dict):
            own = [str(r["message"]) for r in node.get("x-kubernetes-validations") or []]
            return own + [m for value in node.values() for m in messages(value)]
        if isinstance(node, list):
            return [m for value in node for m in messages(value)]
        return []

    rules = messages(schema)
    assert len(rules) >= 20
    for message in rules:
        assert generator._cell(message) in text, f"rule message missing: {message}"
    for column in crd["spec"]["versions"][0]["additionalPrinterColumns"]:
        assert f"`{column['jsonPath']}`" in text


def test_generator_escapes_table_cells() -> None:
    generator = _generator()
    assert generator._cell("a | b\n  c") == "a \\| b c"
    assert generator.type_of({"type": "array", "items": {"type": "object"}}) == "[]object"
    assert generator.type_of({"x-kubernetes-int-or-string": True}) == "int-or-string"
    assert generator.type_of({"type": "object", "additionalProperties": {"type": "string"}}) == "map[string]string"


Assignments = dict[str, list[ast.expr]]


def _reason_values(node: ast.expr, assigned: Assignments) -> set[str]:
    """The strings an expression in reason position can evaluate to."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return {node.value}
    if isinstance(node, ast.IfExp):
        return _reason_values(node.body, assigned) | _reason_values(node.orelse, assigned)
    if isinstance(node, ast.JoinedStr):
        prefix = node.values[0]
        assert isinstance(prefix, ast.Constant) and prefix.value in DYNAMIC_REASONS, (
            f"a reason built at run time with an unknown prefix: {ast.unparse(node)}; add it to DYNAMIC_REASONS"
        )
        return {f"{prefix.value}{suffix}" for suffix in DYNAMIC_REASONS[str(prefix.value)]}
    if isinstance(node, ast.Name):  # a local variable: what the function assigns to it
        return set().union(*(_reason_values(value, {}) for value in assigned.get(node.id, [])))
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "get"
        and isinstance(node.func.value, ast.Dict)
    ):  # {"Analyzing": "Analyzing", ...}.get(phase, "NewRevisionRollingOut")
        options = [v for v in node.func.value.values if v is not None] + list(node.args[1:])
        return set().union(*(_reason_values(v, assigned) for v in options))
    return set()  # an attribute such as rejection.reason: its value comes from a literal site found elsewhere


def _assignments(scope: ast.AST) -> Assignments:
    assigned: Assignments = {}
    for node in ast.walk(scope):
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            assigned.setdefault(node.targets[0].id, []).append(node.value)
    return assigned


def _reasons_in(scope: ast.AST, assigned: Assignments) -> set[str]:
    reasons: set[str] = set()
    for node in ast.walk(scope):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            index = REASON_ARGUMENT.get(name)
            args = node.args
            if index is not None and len(args) > index and not any(isinstance(a, ast.Starred) for a in args[:index]):
                reasons |= _reason_values(args[index], assigned)
        elif isinstance(node, ast.Return) and isinstance(node.value, ast.Tuple) and len(node.value.elts) == 2:
            first = node.value.elts[0]
            # ("CrashLoop", "message"): the failure reasons of a broken canary
            if (
                isinstance(first, ast.Constant)
                and isinstance(first.value, str)
                and re.fullmatch(r"[A-Z][A-Za-z]+", first.value)
            ):
                reasons.add(first.value)
    return reasons


def emitted_reasons(path: Path) -> set[str]:
    """Every reason a module passes to Event / Condition / rejection calls, or returns as a failure reason."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    reasons: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            reasons |= _reasons_in(node, _assignments(node))
    return reasons | _reasons_in(tree, {})


def test_reason_extraction_finds_the_known_reasons() -> None:
    reasons = set().union(*(emitted_reasons(p) for p in REASON_MODULES if p.exists()))
    expected = {"InvalidSpec", "ReplicasNotReady", "PreviousRevisionServing", "ProgressDeadlineExceeded", "Paused",
                "AnalysisFailed", "CrashLoop", "Aborted", "AnalysisPass", "RollingBack", "StepCompleted"}  # fmt: skip
    assert expected <= reasons
    assert all(re.fullmatch(r"[A-Z][A-Za-z]+", r) for r in reasons), sorted(reasons)


@pytest.mark.parametrize("module", [p for p in REASON_MODULES if p.exists()], ids=lambda p: p.name)
def test_troubleshooting_covers_every_reason(module: Path) -> None:
    text = (DOCS / "troubleshooting.md").read_text(encoding="utf-8")
    missing = sorted(r for r in emitted_reasons(module) if f"`{r}`" not in text)
    assert not missing, f"docs/troubleshooting.md does not explain: {', '.join(missing)}"


def test_troubleshooting_covers_the_conditions_asked_about() -> None:
    text = (DOCS / "troubleshooting.md").read_text(encoding="utf-8")
    for reason in ("InvalidSpec", "ReplicasNotReady", "PreviousRevisionServing", "ProgressDeadlineExceeded",
                   "Paused", "ChildConflict"):  # fmt: skip
        assert f"### `{reason}`" in text


@pytest.mark.parametrize("page", sorted(DOCS.glob("*.md")), ids=lambda p: p.name)
def test_relative_links_resolve(page: Path) -> None:
    text = re.sub(r"`[^`\n]*`", "", page.read_text(encoding="utf-8"))  # code spans hold no links
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
        if re.match(r"[a-z]+://", target) or target.startswith("mailto:"):
            continue
        assert (page.parent / target).exists(), f"{page.name} links to {target}, which does not exist"


def test_index_links_every_doc() -> None:
    index = (DOCS / "README.md").read_text(encoding="utf-8")
    for page in DOCS.glob("*.md"):
        if page.name != "README.md":
            assert f"({page.name})" in index, f"docs/README.md does not link {page.name}"


def _example_spec(name: str) -> dict[str, Any]:
    [doc] = [d for d in yaml.safe_load_all((REPO / "examples" / name).read_text(encoding="utf-8")) if d]
    spec: dict[str, Any] = doc["spec"]
    return spec


def test_canary_example_has_the_documented_steps() -> None:
    rollout = _example_spec("canary-with-analysis.yaml")["rollout"]
    assert rollout["strategy"] == "Canary"
    assert rollout["canary"]["steps"] == [
        {"setWeight": 10},
        {"analysis": {}},
        {"setWeight": 50},
        {"pause": {"duration": "2m"}},
    ]
    assert rollout["analysis"]["maxErrorRatio"] > 0


def test_gateway_example_routes_by_header_through_a_gateway() -> None:
    routing = _example_spec("gateway-api.yaml")["rollout"]["canary"]["trafficRouting"]
    assert routing["type"] == "GatewayAPI"
    assert routing["gatewayAPI"]["parentRefs"][0]["name"] and routing["gatewayAPI"]["header"]["name"]


def test_blue_green_example_previews_and_promotes_after_analysis() -> None:
    rollout = _example_spec("blue-green.yaml")["rollout"]
    assert rollout["strategy"] == "BlueGreen" and "analysis" in rollout
    assert rollout["blueGreen"] == {"previewService": True, "autoPromotionEnabled": True, "autoPromotionSeconds": 60}


def _runtime_flag_rows() -> dict[str, list[str]]:
    """docs/runtime.md's flag tables: flag -> the row's cells after the flag."""
    rows = {}
    for line in (DOCS / "runtime.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| `--") and len(cells) >= 3:
            rows[cells[0].strip("`")] = cells[1:]
    return rows


def test_every_runtime_flag_is_documented_with_its_variable_and_default() -> None:
    from modelserve.config import FETCH_OPTIONS, SERVE_OPTIONS, env_name

    rows = _runtime_flag_rows()
    for option in (*SERVE_OPTIONS, *FETCH_OPTIONS):
        assert option.flag in rows, f"{option.flag} is missing from docs/runtime.md"
        cells = rows[option.flag]
        assert cells[0] == f"`{env_name(option.flag)}`", option.flag
        shown = cells[1]
        if shown.startswith("`") and option.default is not None:  # a literal default, not "(required)"
            value = option.type(shown.strip("`")) if option.type is not str else shown.strip("`")
            assert value == option.default, f"{option.flag}: the docs say {shown}, the code {option.default!r}"


def test_gitops_lists_every_operator_metric() -> None:
    from modeldeploy.metrics import OperatorMetrics

    text = (DOCS / "gitops.md").read_text(encoding="utf-8")
    names = {f"{m.name}_total" if m.type == "counter" else m.name for m in OperatorMetrics().registry.collect()}
    assert "modeldeploy_canary_mirror_weight" in names
    assert sorted(n for n in names if f"`{n}`" not in text) == []
