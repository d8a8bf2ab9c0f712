from __future__ import annotations

import pickle
from pathlib import Path

import orjson
import pytest
import torch

from modelserve.errors import ModelLoadError, UnsafeFormat
from modelserve.formats import MANIFEST_NAME, ModelFormat, resolve


def test_detects_each_demo_format(models: dict[str, Path]) -> None:
    assert resolve(models["mlp"]).format is ModelFormat.TORCHSCRIPT
    assert resolve(models["export"]).format is ModelFormat.TORCH_EXPORT
    source = resolve(models["safetensors"])
    assert source.format is ModelFormat.SAFETENSORS
    assert source.entry_point == "modelserve.testing:DemoMLP"
    assert source.signature is not None and source.signature.inputs[0].shape == (-1, 16)


def test_model_dir_may_name_the_file(models: dict[str, Path]) -> None:
    source = resolve(models["mlp"] / "model.pt")
    assert source.artifact.name == "model.pt" and source.model_dir == models["mlp"]


def test_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="does not exist"):
        resolve(tmp_path / "nope")


def test_empty_directory_lists_what_it_found(tmp_path: Path) -> None:
    (tmp_path / "README").write_text("hi")
    with pytest.raises(ModelLoadError, match=r"no model file found.*README"):
        resolve(tmp_path)


def test_several_candidates_need_the_manifest(tmp_path: Path, models: dict[str, Path]) -> None:
    for name in ("a.pt", "b.pt"):
        (tmp_path / name).write_bytes((models["mlp"] / "model.pt").read_bytes())
    with pytest.raises(ModelLoadError, match="several model files"):
        resolve(tmp_path)
    (tmp_path / MANIFEST_NAME).write_bytes(orjson.dumps({"file": "b.pt"}))
    assert resolve(tmp_path).artifact.name == "b.pt"


def test_refuses_torch_save_archive(tmp_path: Path) -> None:
    torch.save(torch.nn.Linear(2, 2).state_dict(), tmp_path / "model.pt")
    with pytest.raises(UnsafeFormat, match=r"torch\.save archive.*pickle can run arbitrary code.*safetensors"):
        resolve(tmp_path)


def test_refuses_raw_pickles(tmp_path: Path) -> None:
    (tmp_path / "model.pkl").write_bytes(pickle.dumps({"w": [1, 2]}))
    with pytest.raises(UnsafeFormat, match="only pickle files found"):
        resolve(tmp_path)
    (tmp_path / "model.pt").write_bytes(pickle.dumps({"w": [1, 2]}))
    with pytest.raises(UnsafeFormat, match="raw pickle"):
        resolve(tmp_path / "model.pt")


def test_safetensors_needs_an_entry_point(tmp_path: Path, models: dict[str, Path]) -> None:
    (tmp_path / "model.safetensors").write_bytes((models["safetensors"] / "model.safetensors").read_bytes())
    with pytest.raises(ModelLoadError, match="entryPoint"):
        resolve(tmp_path)
    (tmp_path / MANIFEST_NAME).write_bytes(orjson.dumps({"entryPoint": "not an entry point"}))
    with pytest.raises(ModelLoadError, match="entryPoint"):
        resolve(tmp_path)


def test_the_server_settings_declare_format_and_entry_point(tmp_path: Path, models: dict[str, Path]) -> None:
    """What the operator passes from spec.model (MODELSERVE_MODEL_FORMAT, MODELSERVE_ENTRY_POINT) is used where the
    model directory has no manifest: weights alone load with the deployment's entry point."""
    (tmp_path / "model.safetensors").write_bytes((models["safetensors"] / "model.safetensors").read_bytes())
    source = resolve(tmp_path, "Safetensors", "modelserve.testing:DemoMLP")
    assert (source.format, source.entry_point) == (ModelFormat.SAFETENSORS, "modelserve.testing:DemoMLP")
    with pytest.raises(ModelLoadError, match=r"MODELSERVE_ENTRY_POINT.*'broken'"):
        resolve(tmp_path, "Safetensors", "broken")
    assert resolve(models["mlp"], "TorchScript").format is ModelFormat.TORCHSCRIPT
    with pytest.raises(ModelLoadError, match="only used with the Safetensors format, not TorchScript"):
        resolve(models["mlp"], "TorchScript", "modelserve.testing:DemoMLP")
    with pytest.raises(ModelLoadError, match="'ONNX' is not one of"):
        resolve(models["mlp"], "ONNX")
    # spec.model.format defaults to TorchScript: a torch.export program needs TorchExport, and the error says so
    with pytest.raises(
        ModelLoadError, match=r"format is TorchScript .*spec.model.format.*found: model.pt2 \(TorchExport\)"
    ):
        resolve(models["export"], "TorchScript")


def test_a_manifest_that_contradicts_the_settings_is_an_error(models: dict[str, Path]) -> None:
    """Two sources of truth that disagree: say so instead of silently picking one."""
    with pytest.raises(ModelLoadError, match=r"told entry point 'mypkg:Net', but .*modelserve.json: entryPoint is"):
        resolve(models["safetensors"], "Safetensors", "mypkg:Net")
    with pytest.raises(
        ModelLoadError, match=r"told format TorchExport \(.*spec.model.format\), but .*modelserve.json says Safetensors"
    ):
        resolve(models["safetensors"], "TorchExport")
    same = resolve(models["safetensors"], "Safetensors", "modelserve.testing:DemoMLP")  # agreeing is fine
    assert same.entry_point == "modelserve.testing:DemoMLP"


@pytest.mark.parametrize(
    ("manifest", "message"),
    [
        (b"{not json", "not valid JSON"),
        (b"[]", "expected a JSON object"),
        (b'{"format": "ONNX"}', "format 'ONNX' is not one of"),
        (b'{"file": "../escape.pt"}', "relative path inside"),
        (b'{"inputs": [{"name": "x", "datatype": "FP99", "shape": [1]}]}', "datatype"),
        (b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [-2]}]}', "shape"),
        (b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1]}, '
         b'{"name": "x", "datatype": "FP32", "shape": [1]}]}', "duplicate"),
    ],
)  # fmt: skip
def test_manifest_errors_are_specific(tmp_path: Path, models: dict[str, Path], manifest: bytes, message: str) -> None:
    (tmp_path / "model.pt").write_bytes((models["mlp"] / "model.pt").read_bytes())
    (tmp_path / MANIFEST_NAME).write_bytes(manifest)
    with pytest.raises(ModelLoadError, match=message):
        resolve(tmp_path)
