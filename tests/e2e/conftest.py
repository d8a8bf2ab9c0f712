"""Fixtures of the local end-to-end scenarios: demo models built once, one fresh harness per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from modeldeploy.sim.scenarios import LocalHarness, build_models


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Model directories v1, v2, v3 (failing), v3-slow (see ``build_models``)."""
    pytest.importorskip("torch", reason="the local scenarios build TorchScript models")
    return build_models(tmp_path_factory.mktemp("models"))


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[LocalHarness]:
    """The emulated cluster with a kubelet running real modelserve processes (the operator is started by tests)."""
    with LocalHarness(tmp_path) as running:
        yield running
    assert not running.kubelet.errors, running.kubelet.errors
