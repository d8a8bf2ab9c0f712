"""``modeldeploy golden record|check`` against real modelserve servers: record from v1, then v2 (the same weights)
passes and v5-swapped (classes 0 and 1 exchanged) fails, as the operator's analysis would judge them."""

from __future__ import annotations

import re
import urllib.request
from pathlib import Path

import pytest
import yaml

from modeldeploy.cli import main
from modeldeploy.sim.scenarios import IN_FEATURES, load_like_inputs

OUTCOMES = ("success", "client_error", "server_error", "overloaded", "timeout")


def scrape(url: str) -> dict[tuple[str, str], float]:
    """(metric name, outcome label) -> value, summed over the other labels, from a Prometheus exposition."""
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    totals: dict[tuple[str, str], float] = {}
    for line in text.splitlines():
        found = re.match(r'^(\w+)\{[^}]*outcome="(\w+)"[^}]*\} (\S+)$', line)
        if found:
            key = (found.group(1), found.group(2))
            totals[key] = totals.get(key, 0.0) + float(found.group(3))
    return totals


def test_record_from_a_trusted_server_then_check_candidates(
    models: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from modelserve.config import ServeConfig
    from modelserve.testing import serve_in_thread

    def config(model: str) -> ServeConfig:
        return ServeConfig(model_dir=models[model], model_name="iris", drain_seconds=0.0, torch_threads=1)

    rows = load_like_inputs(12)
    inputs = tmp_path / "inputs.yaml"
    inputs.write_text(yaml.safe_dump(
        [{"name": f"row-{i}", "inputs": [{"name": "input", "shape": [1, IN_FEATURES], "data": row}]}
         for i, row in enumerate(rows)]
    ))  # fmt: skip
    golden = tmp_path / "golden.yaml"
    with serve_in_thread(config("v1")) as (url, _):
        assert main(["golden", "record", "--url", url, "--model", "iris", "-f", str(inputs)]) == 0
        golden.write_text(capsys.readouterr().out)
    cases = yaml.safe_load(golden.read_text())["goldenRequests"]["cases"]
    classes = [c["outputs"][0]["argmax"][0] for c in cases]
    assert len(cases) == 12 and {0, 1} & set(classes), classes  # some rows the swapped model gets wrong
    check = ["golden", "check", "--model", "iris", "-f", str(golden), "--url"]
    with serve_in_thread(config("v2")) as (url, _):
        assert main([*check, url]) == 0
        assert capsys.readouterr().out.splitlines()[-1] == "0 of 12 answers wrong <= maxMismatches 0: passed"
        # The server counted them as probes, not as traffic (what the analysis reads, Scrape or Prometheus).
        metrics = scrape(f"{url}/metrics")
        assert sum(metrics.get(("modelserve_probe_requests_total", outcome), 0.0) for outcome in OUTCOMES) == 12
        assert sum(metrics.get(("modelserve_requests_total", outcome), 0.0) for outcome in OUTCOMES) == 0
    with serve_in_thread(config("v5-swapped")) as (url, _):
        assert main([*check, url]) == 1
        out = capsys.readouterr().out.splitlines()
    wrong = [line for line in out[:-1] if line.startswith("WRONG")]
    assert len(wrong) == sum(1 for c in classes if c in (0, 1)) and all("expected [" in line for line in wrong)
    assert out[-1] == f"{len(wrong)} of 12 answers wrong > maxMismatches 0: failed"
