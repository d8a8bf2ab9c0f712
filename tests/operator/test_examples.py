"""Every file in examples/ is a valid ModelDeployment that renders to valid children."""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from modeldeploy.build import build_children
from modeldeploy.config import OperatorConfig
from modeldeploy.rollout.config import parse_rollout
from modeldeploy.schema import KIND, validate_object
from modeldeploy.spec import parse_model_deployment

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
K8S_VERSION = kubernetes_validate.latest_version()


def _model_deployments(path: Path) -> list[dict[str, object]]:
    docs = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]
    return [d for d in docs if isinstance(d, dict) and d.get("kind") == KIND]


def test_the_documented_examples_exist() -> None:
    names = {p.name for p in EXAMPLES.glob("*.yaml")}
    documented = {"cpu-model", "gpu-model", "baked-model", "safetensors-model", "shadow-canary", "golden-requests"}
    assert {f"{name}.yaml" for name in documented} <= names


def test_the_examples_can_all_be_applied_to_one_cluster() -> None:
    # `make demo` applies the whole folder: two objects with the same namespace and name would collide.
    keys = [(d["metadata"].get("namespace", "default"), d["metadata"]["name"])  # type: ignore[index,union-attr]
            for path in sorted(EXAMPLES.glob("*.yaml")) for d in _model_deployments(path)]  # fmt: skip
    assert len(keys) == len(set(keys)), sorted(keys)


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_example_is_valid_and_renders(path: Path) -> None:
    docs = _model_deployments(path)
    assert docs, f"{path.name} holds no ModelDeployment"
    for doc in docs:
        assert validate_object(doc) == []
        children = build_children(parse_model_deployment(doc), OperatorConfig())
        for child in children.objects():
            try:
                kubernetes_validate.validate(child, K8S_VERSION, strict=True)
            except kubernetes_validate.ValidationError as error:
                pytest.fail(f"{path.name}: {child['kind']} invalid at {list(error.absolute_path)}: {error.message}")


@pytest.mark.parametrize(
    ("name", "check"),
    [
        ("cpu-model.yaml", lambda s: s["model"]["format"] == "TorchScript" and s["replicas"] == 2),
        ("cpu-model.yaml", lambda s: s["model"]["storageUri"].startswith("s3://")),
        (
            "gpu-model.yaml",
            lambda s: s["runtime"]["gpu"]["count"] == 1 and "inflightRequests" in s["autoscaling"],
        ),
        (
            "gpu-model.yaml",
            lambda s: bool(s["runtime"]["tolerations"]) and bool(s["runtime"]["nodeSelector"]),
        ),
        (
            "gpu-model.yaml",  # spread without ever leaving a pod Pending; no PriorityClass the file does not create
            lambda s: (
                [c["whenUnsatisfiable"] for c in s["runtime"]["topologySpreadConstraints"]] == ["ScheduleAnyway"]
                and "priorityClassName" not in s["runtime"]
            ),
        ),
        ("baked-model.yaml", lambda s: s["model"]["storageUri"].startswith("file://")),
        (
            "safetensors-model.yaml",
            lambda s: (
                s["model"]["format"] == "Safetensors"
                and s["model"]["entryPoint"].split(":")[0] + ".py"
                in {p.name for p in (EXAMPLES / "models/tabular").iterdir()}
                and s["model"]["storageUri"].endswith("/")  # a directory: the weights, the module, the manifest
            ),
        ),
        (
            "golden-requests.yaml",  # a gate before any traffic: the first step is the analysis, which the operator
            lambda s: (  # accepts (goldenRequests with their shapes, before any weight)
                s["rollout"]["canary"]["steps"][0] == {"analysis": {}}
                and (golden := parse_rollout(s["rollout"]).analysis.golden) is not None  # type: ignore[union-attr]
                and len(golden.cases) == 3
                and s["rollout"]["analysis"]["failureLimit"] == 0
            ),
        ),
    ],
)
def test_example_shows_what_it_is_for(name: str, check: object) -> None:
    [doc] = _model_deployments(EXAMPLES / name)
    assert callable(check) and check(doc["spec"])
