"""The kind end-to-end run (``e2e/kind_e2e.py``): skipped here unless Docker, kind, kubectl and helm work."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

DRIVER = Path(__file__).resolve().parents[2] / "e2e" / "kind_e2e.py"


def load_driver() -> ModuleType:
    spec = importlib.util.spec_from_file_location("kind_e2e", DRIVER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_driver_refuses_any_other_context() -> None:
    driver = load_driver()
    driver.check_context("kind-modeldeploy-e2e")
    for context in ("kind-prod", "gke_acme_europe-west1_main", "modeldeploy-e2e", ""):
        with pytest.raises(driver.E2EError, match="refusing"):
            driver.check_context(context)


@pytest.mark.e2e
@pytest.mark.timeout(1800)
def test_kind_end_to_end() -> None:
    driver = load_driver()
    reason = driver.missing_tools()
    if reason is not None:
        pytest.skip(f"kind e2e needs Docker (with a daemon), kind, kubectl and helm: {reason}")
    driver.check_context(driver.CONTEXT)
    assert driver.main([]) == 0
