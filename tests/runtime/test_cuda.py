"""The runtime on a real CUDA device: loading each format onto the GPU, half precision, the served answers, GPU
memory metrics, and a real device fault (a device-side assert) turning readiness and liveness off.

Skipped where torch sees no CUDA device (CI has none). The fakes in test_engine.py and test_app.py cover the same
branches everywhere; these tests check them against the real thing. On a GPU machine:
`pytest tests/runtime/test_cuda.py` (see docs/runtime.md, "GPU").
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch

from modelserve.engine import EngineOptions, load_engine, select_device
from modelserve.errors import ModelLoadError
from modelserve.formats import resolve
from modelserve.testing import build_lookup

from .conftest import IN, OUT, ClientFactory, metric, serve_subprocess
from .test_protocol_v2 import binary_body

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device visible to torch")

CPU = EngineOptions(device="cpu", torch_threads=1)
GPU = EngineOptions(device="cuda", torch_threads=1)


def _rel_error(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.linalg.norm(got.astype(np.float64) - want) / np.linalg.norm(want))


def test_auto_picks_the_gpu_and_a_missing_index_is_a_load_error() -> None:
    assert select_device("auto", 0) == "cuda:0"
    count = torch.cuda.device_count()
    with pytest.raises(ModelLoadError, match=f"{count} device"):
        select_device("cuda", count)


@pytest.mark.parametrize("kind", ["mlp", "export", "safetensors"])
def test_each_format_runs_on_the_gpu_like_on_the_cpu(models: dict[str, Path], kind: str) -> None:
    cpu, gpu = load_engine(resolve(models[kind]), CPU), load_engine(resolve(models[kind]), GPU)
    assert gpu.device == "cuda:0" and cpu.device == "cpu"
    params = list(gpu.module.parameters()) if hasattr(gpu.module, "parameters") else []
    assert params and all(p.device.type == "cuda" for p in params)
    gpu.warm_up((1, 8))
    for seed in range(3):
        batch = np.random.default_rng(seed).standard_normal((5, IN)).astype(np.float32)
        (want,) = cpu.predict([batch])
        (got,) = gpu.predict([batch])
        assert got.dtype == np.float32 and got.shape == (5, OUT)
        assert _rel_error(got, want.astype(np.float64)) < 1e-5  # float32 both; TF32 is off by default
    stats = gpu.memory_stats()
    assert stats["allocated"] > 0 and stats["reserved"] >= stats["allocated"]
    assert gpu.check_device() and gpu.healthy


@pytest.mark.parametrize("kind", ["mlp", "export", "safetensors"])
def test_half_precision_answers_in_float32_close_to_full_precision(models: dict[str, Path], kind: str) -> None:
    full = load_engine(resolve(models[kind]), CPU)
    half = load_engine(resolve(models[kind]), EngineOptions(device="cuda", half_precision=True, torch_threads=1))
    assert half.half_precision and all(p.dtype == torch.float16 for p in half.module.parameters())
    batch = np.random.default_rng(7).standard_normal((16, IN)).astype(np.float32)
    (want,) = full.predict([batch])
    (got,) = half.predict([batch])
    assert got.dtype == np.float32  # the protocol answers in the declared datatype, not float16
    assert 0 < _rel_error(got, want.astype(np.float64)) < 1e-2  # float16 rounding shows, and stays small


def test_the_served_model_answers_from_the_gpu(models: dict[str, Path], make_client: ClientFactory) -> None:
    client = make_client(models["mlp"], device="cuda")
    cpu = load_engine(resolve(models["mlp"]), CPU)
    x = np.random.default_rng(3).standard_normal((4, IN)).astype(np.float32)
    (want,) = cpu.predict([x])
    r = client.post(
        "/v2/models/mlp/infer",
        json={"inputs": [{"name": "input", "datatype": "FP32", "shape": [4, IN], "data": x.ravel().tolist()}]},
    )
    assert r.status_code == 200, r.text
    got = np.array(r.json()["outputs"][0]["data"], np.float32).reshape(4, OUT)
    assert _rel_error(got, want.astype(np.float64)) < 1e-5
    body, headers = binary_body(x)
    r = client.post("/v2/models/mlp/infer", content=body, headers=headers)
    n = int(r.headers["inference-header-content-length"])
    got = np.frombuffer(r.content[n:], np.float32).reshape(4, OUT)
    assert _rel_error(got, want.astype(np.float64)) < 1e-5
    text = client.get("/metrics").text
    for kind in ("allocated", "reserved"):
        assert metric(text, f'modelserve_gpu_memory_bytes{{device="cuda:0",kind="{kind}"}}') > 0
    assert client.get("/v2/health/ready").status_code == 200 and client.get("/v2/health/live").status_code == 200


def _lookup(client: httpx.Client, index: int) -> httpx.Response:
    body = {"inputs": [{"name": "index", "datatype": "INT64", "shape": [1, 1], "data": [index]}]}
    return client.post("/v2/models/lookup/infer", json=body)


def test_a_real_device_fault_turns_readiness_and_liveness_off(tmp_path: Path) -> None:
    """A device-side assert leaves the CUDA context unusable for the rest of the process: the request that caused
    it gets a 500, later ones fail at once, readiness and liveness answer 503 so the kubelet restarts the container.
    In a subprocess: the fault would poison this test process's own CUDA context."""
    build_lookup(tmp_path / "lookup")
    log_path = tmp_path / "server.log"
    with (
        log_path.open("wb") as log_file,  # a file, not a pipe: nothing reads it until the end
        serve_subprocess(tmp_path / "lookup", "lookup", stderr=log_file, DEVICE="cuda") as (_, base),
        httpx.Client(base_url=base, timeout=30) as c,
    ):
        good = _lookup(c, 5)
        assert good.status_code == 200 and good.json()["outputs"][0]["data"] == [5.0]
        bad = _lookup(c, 1000)
        assert bad.status_code == 500 and "device cuda:0 failed" in bad.json()["error"], bad.text
        after = _lookup(c, 5)
        assert after.status_code == 500 and "unusable" in after.json()["error"], after.text
        assert c.get("/v2/health/ready").status_code == 503
        assert c.get("/v2/models/lookup/ready").status_code == 503
        live = c.get("/v2/health/live")
        assert live.status_code == 503 and "cuda:0" in live.json()["reason"], live.text
        text = c.get("/metrics").text
        labels = 'model="lookup",outcome="server_error",protocol="v2",version="1"'
        assert metric(text, f"modelserve_requests_total{{{labels}}}") == 2
    log = log_path.read_text(errors="replace")
    assert "readiness is now false" in log, log[-3000:]


def test_with_workers_a_device_fault_restarts_only_that_worker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With `--workers 2` the worker whose CUDA context a device-side assert broke exits and is restarted with a
    fresh one, while the other keeps serving; afterwards every connection is answered correctly again."""
    build_lookup(tmp_path / "lookup")
    monkeypatch.setenv("TMPDIR", str(tmp_path))

    def files() -> list[Path]:
        return sorted(tmp_path.glob("modelserve-workers-*/metrics-*.json"))

    log_path = tmp_path / "server.log"
    with (
        log_path.open("wb") as log_file,
        serve_subprocess(tmp_path / "lookup", "lookup", stderr=log_file, DEVICE="cuda", WORKERS="2") as (proc, base),
    ):
        deadline = time.monotonic() + 60
        while len(files()) < 2:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        with httpx.Client(base_url=base, timeout=30) as c:  # one connection: one worker
            assert _lookup(c, 5).status_code == 200
            bad = _lookup(c, 1000)
            assert bad.status_code == 500 and "device cuda:0 failed" in bad.json()["error"], bad.text
        deadline = time.monotonic() + 60
        while len(files()) < 3:  # the replacement publishes once it listens
            assert time.monotonic() < deadline, log_path.read_text(errors="replace")[-3000:]
            time.sleep(0.1)
        for _ in range(20):
            with httpx.Client(base_url=base, timeout=30) as c:
                r = _lookup(c, 5)
                assert r.status_code == 200 and r.json()["outputs"][0]["data"] == [5.0], r.text
        assert httpx.get(base + "/v2/health/live").status_code == 200
        assert proc.poll() is None
    log = log_path.read_text(errors="replace")
    assert "its device failed" in log and "restarting it" in log, log[-3000:]


def test_client_mistakes_do_not_touch_the_device(models: dict[str, Path], make_client: ClientFactory) -> None:
    client = make_client(models["mlp"], device="cuda")
    bad_shape = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, IN + 1], "data": [0.0] * (IN + 1)}]}
    r = client.post("/v2/models/mlp/infer", json=bad_shape)
    assert r.status_code == 400 and "input" in r.json()["error"]
    assert client.get("/v2/health/ready").status_code == 200
