from __future__ import annotations

import ast
import os
from pathlib import Path

import modelserve

PACKAGE = Path(modelserve.__file__).parent
ALLOWED = {"engine.py", "testing.py"}  # testing.py builds demo models; the server never imports it


def test_only_the_engine_imports_torch() -> None:
    offenders = []
    for path in PACKAGE.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            if any(n == "torch" or n.startswith("torch.") or n.startswith("safetensors.torch") for n in names):
                offenders.append(path.name)
    assert set(offenders) <= ALLOWED, offenders
    assert "engine.py" in offenders


def test_no_unpickling_anywhere() -> None:
    for path in PACKAGE.glob("*.py"):
        text = path.read_text()
        assert "pickle.load" not in text, path.name
        for line in text.splitlines():
            if "torch.load(" in line:
                assert "weights_only=True" in line, f"{path.name}: {line.strip()}"


def test_the_request_path_is_compiled_exactly_when_expected() -> None:
    """`make test-native` runs this suite again against the mypyc build (runtime-image/setup.py) with
    MODELSERVE_EXPECT_COMPILED=1: every request-path module, and the C JSON parser, must then be a compiled
    extension, and none in the plain run, so that neither run tests the other's code by accident (a stale build on
    the path, say)."""
    compiled = os.environ.get("MODELSERVE_EXPECT_COMPILED") == "1"
    assert modelserve.compiled_modules() == (list(modelserve.COMPILED) if compiled else [])
