"""``modeldeploy golden record|check`` against real modelserve servers: record from v1, then v2 (the same weights)
passes and v5-swapped (classes 0 and 1 exchanged) fails, as the operator's analysis would judge them."""

from __future__ import annotations

import asyncio
import base64
import re
import urllib.request
from pathlib import Path

import aiohttp
import pytest
import yaml

from modeldeploy.analysis.golden import caller_token
from modeldeploy.analysis.sources import MetricSourceError, PodTarget, check_golden
from modeldeploy.cli import main
from modeldeploy.rollout.config import parse_rollout
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


def test_golden_requests_to_a_server_with_caller_auth(
    models: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A real modelserve with caller authentication (the runtime.auth Secret mounted as files): the CLI passes
    ``--token-file`` and says when a token is missing or refused; the operator's golden requests carry the token it
    takes from the same Secret as the API server returns it, and the server accepts it."""
    from modelserve.config import ServeConfig
    from modelserve.testing import serve_in_thread

    mount = tmp_path / "auth"  # as the kubelet mounts the Secret: one file per key
    mount.mkdir()
    (mount / "current").write_text("s3cret\n")
    (mount / "next").write_text("n3xt")
    token_file, wrong_file = tmp_path / "token", tmp_path / "wrong"
    token_file.write_text("s3cret\n")
    wrong_file.write_text("guess")
    inputs = tmp_path / "inputs.yaml"
    inputs.write_text(yaml.safe_dump(
        [{"name": f"row-{i}", "inputs": [{"name": "input", "shape": [1, IN_FEATURES], "data": row}]}
         for i, row in enumerate(load_like_inputs(3))]
    ))  # fmt: skip
    config = ServeConfig(
        model_dir=models["v1"], model_name="iris", drain_seconds=0.0, torch_threads=1, auth_tokens_file=mount
    )
    record = ["golden", "record", "--model", "iris", "-f", str(inputs)]
    with serve_in_thread(config) as (url, _):
        assert main([*record, "--url", url]) == 2
        assert "needs a token (--token-file): HTTP 401" in capsys.readouterr().err
        assert main([*record, "--url", url, "--token-file", str(token_file)]) == 0
        block = yaml.safe_load(capsys.readouterr().out)
        golden = tmp_path / "golden.yaml"
        golden.write_text(yaml.safe_dump(block))
        check = ["golden", "check", "--model", "iris", "-f", str(golden), "--url", url]
        assert main([*check, "--token-file", str(wrong_file)]) == 2
        err = capsys.readouterr().err
        assert "refused the token of --token-file: HTTP 403" in err and "guess" not in err
        assert main([*check, "--token-file", str(token_file)]) == 0
        assert capsys.readouterr().out.splitlines()[-1] == "0 of 3 answers wrong <= maxMismatches 0: passed"

        # The operator's side: the Secret's data as the API server returns it, and a pod of the revision.
        data = {path.name: base64.b64encode(path.read_bytes()).decode() for path in mount.iterdir()}
        analysis = parse_rollout({"analysis": block}).analysis
        assert analysis is not None and analysis.golden is not None
        host, port = url.removeprefix("http://").split(":")
        pods = [PodTarget("iris-0", host, int(port))]

        async def ask(token: str | None) -> int:
            async with aiohttp.ClientSession() as session:
                result = await check_golden(session, analysis.golden, "iris", "rev", pods, token=token)
            return result.mismatches

        assert caller_token(data) == "s3cret"
        assert asyncio.run(ask(caller_token(data))) == 0
        with pytest.raises(MetricSourceError, match=r"needs a caller token \(HTTP 401\)"):
            asyncio.run(ask(None))
