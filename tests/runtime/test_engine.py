from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from modelserve import engine as engine_mod
from modelserve.engine import Engine, EngineOptions, load_engine, select_device
from modelserve.errors import DeviceFailed, InferenceFailed, ModelLoadError
from modelserve.formats import resolve
from modelserve.signature import Signature, TensorSpec
from modelserve.testing import DemoMLP, build_lookup, reference_forward

from .conftest import IN, OUT

CPU = EngineOptions(device="cpu", torch_threads=1)


@pytest.mark.parametrize("kind", ["mlp", "export", "safetensors"])
def test_each_format_loads_and_matches_the_reference(models: dict[str, Path], kind: str) -> None:
    eng = load_engine(resolve(models[kind]), CPU)
    assert eng.signature.inputs == (TensorSpec("input" if kind != "export" else "x", "FP32", (-1, IN)),)
    assert [s.shape for s in eng.signature.outputs] == [(-1, OUT)]
    batch = np.random.default_rng(0).standard_normal((3, IN)).astype(np.float32)
    (out,) = eng.predict([batch])
    torch.manual_seed(0)
    expected = reference_forward(models["mlp"] / "model.pt", torch.from_numpy(batch))
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)


def test_two_outputs_from_the_manifest(models: dict[str, Path]) -> None:
    eng = load_engine(resolve(models["two_heads"]), CPU)
    total, argmax = eng.predict([np.array([[1, 5, 2]], np.float32), np.array([[2]], np.float32)])
    assert total.tolist() == [[16.0]] and argmax.tolist() == [1]
    assert [s.name for s in eng.signature.outputs] == ["total", "argmax"]


def test_torchscript_without_signature_asks_for_a_manifest(tmp_path: Path) -> None:
    traced = torch.jit.trace(DemoMLP(4, 4, 2), torch.zeros(1, 4))
    torch.jit.save(traced, str(tmp_path / "model.pt"))
    with pytest.raises(ModelLoadError, match="does not declare its inputs"):
        load_engine(resolve(tmp_path), CPU)


def test_forward_errors_become_inference_failed(models: dict[str, Path]) -> None:
    eng = load_engine(resolve(models["failing"]), CPU)
    x = np.zeros((2, IN), np.float32)
    assert eng.predict([x])[0].shape == (2, OUT)
    x[1, 0] = 1000.0
    with pytest.raises(InferenceFailed, match="poisoned input"):
        eng.predict([x])
    assert eng.healthy  # a bad input is not a broken device


def test_select_device_prefers_cuda_when_present(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert select_device("auto", 1, cuda_available=lambda: True) == "cuda:1"
    assert select_device("auto", 0, cuda_available=lambda: False) == "cpu"
    assert select_device("cpu", 0, cuda_available=lambda: True) == "cpu"
    with pytest.raises(ModelLoadError, match="no CUDA device"):
        select_device("cuda", 0, cuda_available=lambda: False)
    with pytest.raises(ModelLoadError, match="out of range"):
        select_device("cuda", 5, cuda_available=lambda: True)
    with pytest.raises(ModelLoadError, match="unknown device"):
        select_device("tpu", 0, cuda_available=lambda: True)


def _cuda_engine(module: Any) -> Engine:
    sig = Signature((TensorSpec("x", "FP32", (-1, 2)),), (TensorSpec("y", "FP32", (-1, 2)),))
    eng = Engine(module, sig, "cuda:0", half_precision=True)
    eng._to_tensor = lambda a: torch.from_numpy(a).half()  # type: ignore[method-assign]  # no GPU here
    return eng


def test_a_torchscript_error_is_one_line_for_the_client_and_logged_once_a_minute(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    build_lookup(tmp_path)
    eng = load_engine(resolve(tmp_path), CPU)
    now = [0.0]
    eng.clock = lambda: now[0]
    bad = [np.array([[1000]], np.int64)]
    expected = "model failed: RuntimeError: index 1000 is out of bounds for dimension 0 with size 8"
    with caplog.at_level(logging.WARNING, logger="modelserve.engine"):
        for _ in range(3):
            with pytest.raises(InferenceFailed) as info:
                eng.predict(bad)
            assert str(info.value) == expected + " (traceback in the server log)"
        now[0] = 61.0
        with pytest.raises(InferenceFailed):
            eng.predict(bad)
    reports = [r.getMessage() for r in caplog.records]
    assert len(reports) == 2, reports
    assert "Traceback of TorchScript" in reports[0] and "more since" not in reports[0]
    assert "(2 more since the last report)" in reports[1]
    assert eng.healthy and eng.predict([np.array([[3]], np.int64)])[0].tolist() == [[3.0]]


def test_the_log_of_distinct_errors_stays_bounded(tmp_path: Path) -> None:
    build_lookup(tmp_path)
    eng = load_engine(resolve(tmp_path), CPU)
    now = [0.0]
    eng.clock = lambda: now[0]
    for index in range(8, 600):
        now[0] += 0.01
        with pytest.raises(InferenceFailed, match=f"index {index} is out of bounds"):
            eng.predict([np.array([[index]], np.int64)])
    assert len(eng._logged) <= 257


def test_cuda_fault_makes_the_device_unusable() -> None:
    def broken(x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    eng = _cuda_engine(broken)
    with pytest.raises(DeviceFailed, match="illegal memory access"):
        eng.predict([np.zeros((1, 2), np.float32)])
    assert not eng.healthy and not eng.check_device()
    with pytest.raises(DeviceFailed, match="unusable"):
        eng.predict([np.zeros((1, 2), np.float32)])


def test_half_precision_outputs_come_back_as_fp32() -> None:
    eng = _cuda_engine(lambda x: x * 2)
    (out,) = eng.predict([np.ones((1, 2), np.float32)])
    assert out.dtype == np.float32 and out.tolist() == [[2.0, 2.0]]


def test_gpu_memory_stats(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device: 1234)
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device: 4096)
    assert _cuda_engine(lambda x: x).memory_stats() == {"allocated": 1234, "reserved": 4096}
    sig = Signature((TensorSpec("x", "FP32", (-1, 2)),))
    assert Engine(lambda x: x, sig, "cpu").memory_stats() == {}


def test_half_precision_is_ignored_on_cpu(models: dict[str, Path], caplog: pytest.LogCaptureFixture) -> None:
    eng = load_engine(resolve(models["mlp"]), EngineOptions(device="cpu", half_precision=True, torch_threads=1))
    assert not eng.half_precision
    assert "full precision" in caplog.text


def test_threads_default_to_half_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine_mod.os, "cpu_count", lambda: 8)
    before = torch.get_num_threads()
    try:
        assert engine_mod.configure_threads(0) == 4
        assert engine_mod.configure_threads(3) == 3
    finally:
        torch.set_num_threads(before)


def test_the_swapped_demo_model_answers_classes_0_and_1_the_wrong_way_round(tmp_path: Path) -> None:
    """The label-map bug the golden-requests scenario catches: same weights, classes 0 and 1 exchanged."""
    from modelserve.testing import build_torchscript

    right = torch.jit.load(str(build_torchscript(tmp_path / "right", IN, 32, OUT)))  # type: ignore[no-untyped-call]
    wrong = torch.jit.load(  # type: ignore[no-untyped-call]
        str(build_torchscript(tmp_path / "wrong", IN, 32, OUT, swapped=True))
    )
    x = torch.randn(256, IN, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        a, b = right(x), wrong(x)
    assert torch.equal(a[:, [1, 0, *range(2, OUT)]], b)
    classes = a.argmax(1)
    assert (classes <= 1).any() and not torch.equal(classes, b.argmax(1))
