"""The operator image's Dockerfile agrees with the chart: command, user, ports, read-only root."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = (REPO / "operator" / "Dockerfile").read_text(encoding="utf-8")
VALUES = yaml.safe_load((REPO / "charts" / "modeldeploy" / "values.yaml").read_text(encoding="utf-8"))
DEPLOYMENT = (REPO / "charts" / "modeldeploy" / "templates" / "deployment.yaml").read_text(encoding="utf-8")


def instructions(name: str) -> list[str]:
    return re.findall(rf"^{name}\s+(.+)$", DOCKERFILE, flags=re.MULTILINE)


def test_multi_stage_slim_python() -> None:
    stages = instructions("FROM")
    assert len(stages) == 2
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim$", DOCKERFILE, flags=re.MULTILINE)
    assert stages[0] == "${PYTHON_IMAGE} AS build" and stages[1] == "${PYTHON_IMAGE}"
    assert "pip wheel --wheel-dir /wheels ." in DOCKERFILE
    assert "--no-index --find-links=/wheels modeldeploy" in DOCKERFILE


def test_runs_as_uid_1000_matching_the_chart() -> None:
    (user,) = instructions("USER")
    assert user == "1000:1000"
    assert VALUES["podSecurityContext"]["runAsUser"] == 1000
    assert VALUES["podSecurityContext"]["runAsGroup"] == 1000
    assert VALUES["securityContext"]["readOnlyRootFilesystem"] is True


def test_exec_form_entrypoint_matches_the_chart_command() -> None:
    (entrypoint,) = instructions("ENTRYPOINT")
    assert json.loads(entrypoint) == ["modeldeploy", "run"]
    assert "command: [modeldeploy, run]" in DEPLOYMENT
    (cmd,) = instructions("CMD")
    ports = {VALUES["health"]["port"], VALUES["metrics"]["port"]}
    assert json.loads(cmd) == [
        f"--health-port={VALUES['health']['port']}",
        f"--metrics-port={VALUES['metrics']['port']}",
    ]
    (expose,) = instructions("EXPOSE")
    assert {int(p) for p in expose.split()} == ports


def test_dockerignore_keeps_the_context_small() -> None:
    lines = (REPO / "operator" / ".dockerignore").read_text(encoding="utf-8").split("\n")
    assert "**" in lines and "!pyproject.toml" in lines and "!src/" in lines
