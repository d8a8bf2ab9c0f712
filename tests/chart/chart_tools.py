"""Running helm on the chart for tests, and Prometheus for the monitoring tests: installs the tools with `make tools`
or `make prometheus-tools` when they are missing."""

from __future__ import annotations

import re
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "modeldeploy"
HELM = REPO / ".tools" / "bin" / "helm"
PROMETHEUS = REPO / ".tools" / "bin" / "prometheus"
PROMTOOL = REPO / ".tools" / "bin" / "promtool"
DASHBOARD = CHART / "dashboards" / "modeldeploy.json"
RELEASE = "modeldeploy"
NAMESPACE = "modeldeploy-system"


class ToolsUnavailableError(Exception):
    """A tool could not be installed (the package download failed)."""


def _ensure(tool: Path, target: str) -> Path:
    """Path to `tool`, running `make <target>` first when it is missing."""
    if tool.exists():
        return tool
    # -o: never rebuild the virtual environment from inside a test run.
    result = subprocess.run(
        ["make", "-C", str(REPO), "-o", ".stamps/setup", target], capture_output=True, text=True, check=False
    )
    if result.returncode != 0 or not tool.exists():
        raise ToolsUnavailableError(f"`make {target}` failed: {(result.stderr or result.stdout)[-800:]}")
    return tool


def ensure_helm() -> Path:
    return _ensure(HELM, "tools")


def ensure_prometheus() -> tuple[Path, Path]:
    """Paths to prometheus and promtool (Debian's package, unpacked by `make prometheus-tools`)."""
    return _ensure(PROMETHEUS, "prometheus-tools"), _ensure(PROMTOOL, "prometheus-tools")


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(ensure_helm()), *args], capture_output=True, text=True, check=False)


def template(values: dict[str, Any] | None = None, *extra: str) -> subprocess.CompletedProcess[str]:
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as handle:
        yaml.safe_dump(values or {}, handle)
        path = handle.name
    try:
        return helm("template", RELEASE, str(CHART), "--namespace", NAMESPACE, "--include-crds", "-f", path, *extra)
    finally:
        Path(path).unlink()


def render(values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every object the chart renders with these values (CRDs and test hooks included)."""
    result = template(values)
    if result.returncode != 0:
        raise AssertionError(f"helm template failed: {result.stderr}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def of_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in of_kind(objects, kind) if name is None or o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def pod_meta_label(pod_label: str, kind: str = "label") -> str:
    """Prometheus' name for a pod label in Kubernetes service discovery (``kind``: ``label``, or ``labelpresent``
    for the label's presence)."""
    return f"__meta_kubernetes_pod_{kind}_" + re.sub(r"[^a-zA-Z0-9_]", "_", pod_label)
