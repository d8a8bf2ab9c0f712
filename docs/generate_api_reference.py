"""Generate docs/api-reference.md from the CRD (crds/modeldeploy.io_modeldeployments.yaml).

    python docs/generate_api_reference.py          # rewrite docs/api-reference.md
    python docs/generate_api_reference.py --check  # exit 1 when the committed file is stale

Every field of spec and status with its type, default, constraints and description, the CEL validation rules
with their messages, and the printer columns. tests/test_docs.py fails when the committed file differs from
what this script generates.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
CRD_PATH = REPO / "crds" / "modeldeploy.io_modeldeployments.yaml"
OUTPUT = REPO / "docs" / "api-reference.md"

Schema = Mapping[str, Any]


@dataclass
class Section:
    """One object of the schema: its path and the rows of its direct fields."""

    path: str
    description: str
    rows: list[list[str]] = field(default_factory=list)


@dataclass(frozen=True)
class Rule:
    path: str
    rule: str
    message: str


def _cell(text: object) -> str:
    """Markdown-table-safe text: one line, pipes escaped."""
    return " ".join(str(text).split()).replace("|", "\\|")


def _code(text: object) -> str:
    value = _cell(text)
    return f"`{value}`" if value else ""


def type_of(schema: Schema) -> str:
    """A readable type: ``string``, ``integer (int32)``, ``int-or-string``, ``[]object``, ``map[string]string``."""
    if schema.get("x-kubernetes-int-or-string"):
        return "int-or-string"
    kind = str(schema.get("type", ""))
    if kind == "array":
        items = schema.get("items") or {}
        return f"[]{type_of(items)}"
    if kind == "object" and "additionalProperties" in schema and not schema.get("properties"):
        extra = schema["additionalProperties"]
        return f"map[string]{type_of(extra) if isinstance(extra, Mapping) else 'any'}"
    if kind == "object" and schema.get("x-kubernetes-preserve-unknown-fields") and not schema.get("properties"):
        return "object (free-form)"
    if not kind and schema.get("x-kubernetes-preserve-unknown-fields"):
        return "any"
    fmt = schema.get("format")
    return f"{kind} ({fmt})" if fmt else kind


def constraints_of(schema: Schema) -> str:
    parts: list[str] = []
    if "enum" in schema:
        parts.append("one of " + ", ".join(_code(v if v != "" else '""') for v in schema["enum"]))
    for key, label in (("minimum", "min"), ("maximum", "max"), ("minLength", "min length"),
                       ("maxLength", "max length"), ("minItems", "min items"), ("maxItems", "max items"),
                       ("maxProperties", "max entries")):  # fmt: skip
        if key in schema:
            parts.append(f"{label} {schema[key]}")
    if "pattern" in schema:
        parts.append(f"pattern {_code(schema['pattern'])}")
    if schema.get("x-kubernetes-list-type") == "map":
        keys = ", ".join(schema.get("x-kubernetes-list-map-keys") or [])
        parts.append(f"list keyed by {keys}")
    return "; ".join(parts)


def _default(schema: Schema) -> str:
    if "default" not in schema:
        return ""
    value = schema["default"]
    if isinstance(value, str):
        return _code(f'"{value}"' if value == "" else value)
    return _code(yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip())


def _children(schema: Schema) -> Iterator[tuple[str, Schema]]:
    for name, child in (schema.get("properties") or {}).items():
        yield str(name), child


def _nested(schema: Schema) -> tuple[str, Schema] | None:
    """The object schema a field leads to (its own, its items' or its map values'), with the path suffix."""
    if schema.get("properties"):
        return "", schema
    items = schema.get("items")
    if isinstance(items, Mapping) and items.get("properties"):
        return "[]", items
    extra = schema.get("additionalProperties")
    if isinstance(extra, Mapping) and extra.get("properties"):
        return ".<key>", extra
    return None


def _anchor(path: str) -> str:
    return "".join(ch for ch in path.lower() if ch.isalnum() or ch in "-_ ").replace(" ", "-")


def walk(schema: Schema, path: str, sections: list[Section], rules: list[Rule]) -> None:
    """Depth first: a section per object, rules collected with the path they apply at."""
    for rule in schema.get("x-kubernetes-validations") or []:
        where = path + str(rule.get("fieldPath", "")) if rule.get("fieldPath") else path
        rules.append(Rule(where, str(rule["rule"]), str(rule.get("message", ""))))
    section = Section(path, str(schema.get("description", "")))
    sections.append(section)
    required = set(schema.get("required") or [])
    pending: list[tuple[str, Schema]] = []
    for name, child in _children(schema):
        child_path = f"{path}.{name}"
        nested = _nested(child)
        name_cell = _code(name)
        if nested is not None:
            if nested[0]:  # an array or map: its own rules, then its items' in their section
                for rule in child.get("x-kubernetes-validations") or []:
                    rules.append(Rule(child_path, str(rule["rule"]), str(rule.get("message", ""))))
            target = child_path + nested[0]
            name_cell = f"[{name_cell}](#{_anchor(target)})"
            pending.append((target, nested[1]))
        else:
            _field_rules(child, child_path, rules)
        section.rows.append(
            [
                name_cell,
                _code(type_of(child)),
                "yes" if name in required else "",
                _default(child),
                _cell(constraints_of(child)),
                _cell(child.get("description", "")),
            ]
        )
    for target, nested_schema in pending:
        walk(nested_schema, target, sections, rules)


def _field_rules(schema: Schema, path: str, rules: list[Rule]) -> None:
    """Rules of a leaf field (and of its array items or map values)."""
    for rule in schema.get("x-kubernetes-validations") or []:
        rules.append(Rule(path, str(rule["rule"]), str(rule.get("message", ""))))
    items = schema.get("items")
    if isinstance(items, Mapping):
        _field_rules(items, f"{path}[]", rules)
    values = schema.get("additionalProperties")
    if isinstance(values, Mapping):
        _field_rules(values, f"{path}.<key>", rules)


def render(crd: Mapping[str, Any]) -> str:
    version = next(v for v in crd["spec"]["versions"] if v.get("storage"))
    root: Schema = version["schema"]["openAPIV3Schema"]
    names = crd["spec"]["names"]
    group = crd["spec"]["group"]
    out: list[str] = [
        "# API reference",
        "",
        "<!-- Generated by docs/generate_api_reference.py from crds/modeldeploy.io_modeldeployments.yaml."
        " Do not edit by hand: change the CRD and run `python docs/generate_api_reference.py`. -->",
        "",
        f"`{names['kind']}` in API group `{group}`, version `{version['name']}` "
        f"(`apiVersion: {group}/{version['name']}`), {crd['spec']['scope'].lower()}. "
        f"Plural `{names['plural']}`, short names {', '.join(f'`{n}`' for n in names.get('shortNames', []))}, "
        f"categories {', '.join(f'`{c}`' for c in names.get('categories', []))}.",
        "",
        _cell(root.get("description", "")),
        "",
        "Defaults are applied by the API server when the object is stored. Every rule in "
        "[Validation rules](#validation-rules) is enforced by the API server (CEL), so an invalid object is "
        "refused at `kubectl apply` time. See [rollouts.md](rollouts.md) for what the rollout fields do and "
        "[design.md](design.md) for the objects the operator creates.",
        "",
        "Contents: [spec](#spec) · [status](#status) · [Validation rules](#validation-rules) · "
        "[Printer columns](#printer-columns) · [Subresources](#subresources)",
        "",
    ]
    rules: list[Rule] = []
    for top in ("spec", "status"):
        sections: list[Section] = []
        walk(root["properties"][top], top, sections, rules)
        for section in sections:
            level = "##" if section.path == top else "###"
            out += [f"{level} {section.path}", ""]
            if section.description:
                out += [_cell(section.description), ""]
            if section.rows:
                out += [
                    "| Field | Type | Required | Default | Constraints | Description |",
                    "|---|---|---|---|---|---|",
                    *("| " + " | ".join(row) + " |" for row in section.rows),
                    "",
                ]
    for rule in root.get("x-kubernetes-validations") or []:
        where = str(rule.get("fieldPath", "")).lstrip(".") or "(object)"
        rules.insert(0, Rule(where, str(rule["rule"]), str(rule.get("message", ""))))
    out += [
        "## Validation rules",
        "",
        "CEL rules (`x-kubernetes-validations`), with the message the API server returns when one fails.",
        "",
        "| Field | Rule | Message |",
        "|---|---|---|",
        *(f"| {_code(r.path)} | {_code(r.rule)} | {_cell(r.message)} |" for r in rules),
        "",
        "## Printer columns",
        "",
        "What `kubectl get modeldeployments` shows (`-o wide` adds the columns of priority 1); "
        "`kubectl modeldeploy list` shows the same.",
        "",
        "| Column | Type | JSONPath | Priority | Description |",
        "|---|---|---|---|---|",
    ]
    for column in version.get("additionalPrinterColumns") or []:
        out.append(
            f"| {_cell(column['name'])} | {_cell(column.get('type', ''))} | {_code(column['jsonPath'])} | "
            f"{column.get('priority', 0)} | {_cell(column.get('description', ''))} |"
        )
    subresources = version.get("subresources") or {}
    out += ["", "## Subresources", ""]
    if "status" in subresources:
        out.append("- `status`: the operator writes `.status` through the status subresource; users write `.spec`.")
    scale = subresources.get("scale")
    if scale:
        out.append(
            f"- `scale`: `kubectl scale` sets `{scale['specReplicasPath']}`; replicas are read from "
            f"`{scale['statusReplicasPath']}` and the pod selector from `{scale.get('labelSelectorPath', '')}` "
            "(so a HorizontalPodAutoscaler can target a ModelDeployment)."
        )
    return "\n".join(out).rstrip() + "\n"


def load_crd(path: Path = CRD_PATH) -> dict[str, Any]:
    crd = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(crd, dict) or crd.get("kind") != "CustomResourceDefinition":
        raise SystemExit(f"{path} is not a CustomResourceDefinition")
    return crd


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="exit 1 when docs/api-reference.md is stale")
    args = parser.parse_args(argv)
    text = render(load_crd())
    if args.check:
        current = OUTPUT.read_text(encoding="utf-8") if OUTPUT.exists() else ""
        if current != text:
            print(f"{OUTPUT.relative_to(REPO)} is stale: run python docs/generate_api_reference.py", file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_text(text, encoding="utf-8")
    print(f"Wrote {OUTPUT.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
