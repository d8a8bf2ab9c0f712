"""The CustomResourceDefinition: valid for the API server, self-documenting, bounded for CEL costs."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from modeldeploy import schema

REPO = Path(__file__).resolve().parents[2]
CANONICAL = REPO / "crds" / "modeldeploy.io_modeldeployments.yaml"
PACKAGED = REPO / "operator" / "src" / "modeldeploy" / "crds" / "modeldeploy.io_modeldeployments.yaml"
K8S_VERSION = kubernetes_validate.latest_version()

Node = tuple[str, Mapping[str, Any]]


def _crd() -> dict[str, Any]:
    crd = yaml.safe_load(CANONICAL.read_text(encoding="utf-8"))
    assert isinstance(crd, dict)
    return crd


def _walk(node: Mapping[str, Any], path: str = "") -> Iterator[Node]:
    """Every schema node below ``node`` (properties, map values, list items), with its path."""
    for key, sub in (node.get("properties") or {}).items():
        child = f"{path}.{key}" if path else key
        yield child, sub
        yield from _walk(sub, child)
    additional = node.get("additionalProperties")
    if isinstance(additional, Mapping):
        yield f"{path}[*]", additional
        yield from _walk(additional, f"{path}[*]")
    items = node.get("items")
    if isinstance(items, Mapping):
        yield f"{path}[]", items
        yield from _walk(items, f"{path}[]")


def _root() -> Mapping[str, Any]:
    root: Mapping[str, Any] = _crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return root


def test_packaged_copy_is_identical_to_the_canonical_crd() -> None:
    assert PACKAGED.read_bytes() == CANONICAL.read_bytes()


def test_schema_module_loads_the_packaged_crd() -> None:
    assert schema.crd_manifest() == _crd()


def test_crd_validates_as_apiextensions_v1_strictly() -> None:
    try:
        result = kubernetes_validate.validate(_crd(), K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as error:
        pytest.fail(f"CRD invalid at {list(error.absolute_path)}: {error.message}")
    assert result == ".".join(K8S_VERSION.split(".")[:2])


def test_validator_rejects_a_broken_crd() -> None:
    broken = _crd()
    broken["spec"]["versions"][0]["subresources"]["scale"]["labelSelector"] = ".status.selector"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def test_names_scope_and_version() -> None:
    spec = _crd()["spec"]
    assert _crd()["metadata"]["name"] == "modeldeployments.modeldeploy.io"
    assert spec["group"] == "modeldeploy.io"
    assert spec["scope"] == "Namespaced"
    assert spec["names"]["kind"] == "ModelDeployment"
    assert spec["names"]["plural"] == "modeldeployments"
    assert "mdeploy" in spec["names"]["shortNames"]
    assert "all" in spec["names"]["categories"]
    [version] = spec["versions"]
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)


def test_status_and_scale_subresources() -> None:
    sub = _crd()["spec"]["versions"][0]["subresources"]
    assert sub["status"] == {}
    assert sub["scale"] == {
        "specReplicasPath": ".spec.replicas",
        "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector",
    }


def test_printer_columns_point_at_schema_fields() -> None:
    columns = _crd()["spec"]["versions"][0]["additionalPrinterColumns"]
    names = [c["name"] for c in columns]
    assert names[:8] == ["Model", "Stable", "Canary", "Ready", "Desired", "Phase", "Weight", "Revision"]
    assert names[-1] == "Age"
    known = {path for path, _ in _walk(_root())}
    for column in columns:
        path = column["jsonPath"].lstrip(".")
        assert path in known or path == "metadata.creationTimestamp", column


def test_every_field_has_a_description() -> None:
    missing = [path for path, node in _walk(_root()) if not str(node.get("description", "")).strip()]
    assert missing == []
    assert _root().get("description")


def test_schema_is_structural() -> None:
    """Every node has a type, except int-or-string nodes (which must not have one)."""
    bad = []
    for path, node in _walk(_root()):
        if node.get("x-kubernetes-int-or-string"):
            if "type" in node:
                bad.append(path)
        elif "type" not in node:
            bad.append(path)
    assert bad == []


def test_strings_lists_and_maps_are_bounded_for_cel_cost() -> None:
    unbounded = []
    for path, node in _walk(_root()):
        kind = node.get("type")
        if path in ("apiVersion", "kind"):
            continue
        if kind == "string" and not ({"maxLength", "enum"} & node.keys() or node.get("format") == "date-time"):
            unbounded.append(path)
        if kind == "array" and "maxItems" not in node:
            unbounded.append(path)
        is_map = kind == "object" and isinstance(node.get("additionalProperties"), Mapping)
        if is_map and "maxProperties" not in node:
            unbounded.append(path)
    assert unbounded == []


def test_every_cel_rule_has_a_message_and_compiles() -> None:
    rules = schema.cel_rules()
    assert len(rules) >= 15
    for rule in rules:
        assert rule.message, rule
        schema._program(rule.rule)  # raises when the rule does not compile


def test_defaults_satisfy_their_own_schema() -> None:
    """A default must be valid where it is applied (the API server rejects the CRD otherwise)."""
    for path, node in _walk(_root()):
        if "default" not in node:
            continue
        default = node["default"]
        if "enum" in node:
            assert default in node["enum"], path
        if node.get("type") == "integer":
            assert isinstance(default, int), path
            assert node.get("minimum", default) <= default <= node.get("maximum", default), path


@pytest.mark.parametrize(
    ("block", "fields"),
    [
        (
            "spec.model",
            {"name", "version", "storageUri", "format", "entryPoint", "sha256", "storageSecretRef"},
        ),
        (
            "spec.runtime",
            {
                "image",
                "imagePullPolicy",
                "imagePullSecrets",
                "resources",
                "gpu",
                "env",
                "nodeSelector",
                "tolerations",
                "affinity",
                "serviceAccountName",
                "podAnnotations",
                "podLabels",
                "batching",
                "drainSeconds",
                "port",
            },
        ),
        (
            "spec.autoscaling",
            {
                "minReplicas",
                "maxReplicas",
                "targetCPUUtilizationPercentage",
                "targetMemoryUtilizationPercentage",
                "inflightRequests",
                "behavior",
            },
        ),
        (
            "spec.rollout",
            {
                "strategy",
                "progressDeadlineSeconds",
                "rollingUpdate",
                "canary",
                "blueGreen",
                "analysis",
                "firstDeployAnalysis",
                "keepPreviousWarm",
                "promote",
                "abort",
                "rollbackTo",
            },
        ),
        (
            "status",
            {
                "observedGeneration",
                "phase",
                "conditions",
                "replicas",
                "readyReplicas",
                "selector",
                "url",
                "currentRevision",
                "stableRevision",
                "canaryRevision",
                "canaryWeight",
                "lastGoodSpecHash",
                "lastGoodGeneration",
                "rollout",
                "history",
            },
        ),
    ],
)
def test_field_names_follow_the_design(block: str, fields: set[str]) -> None:
    node: Mapping[str, Any] = _root()
    for part in block.split("."):
        node = node["properties"][part]
    assert fields <= set(node["properties"])


@pytest.mark.parametrize("path", ["status.rollout", "status.history[]"])
def test_rollout_status_is_open_for_the_rollout_engine(path: str) -> None:
    nodes = dict(_walk(_root()))
    assert nodes[path]["x-kubernetes-preserve-unknown-fields"] is True


def test_rollout_block_describes_every_strategy() -> None:
    rollout = _root()["properties"]["spec"]["properties"]["rollout"]
    for word in ("RollingUpdate", "Canary", "BlueGreen", "roll back", "status.rollout"):
        assert word in rollout["description"]
