"""Model formats: what is in a model directory, read from the optional manifest `modelserve.json`
and from file names, plus the safety checks that refuse anything needing pickle. No torch here."""

from __future__ import annotations

import enum
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from modelserve.errors import ModelLoadError, UnsafeFormat
from modelserve.signature import Signature, TensorSpec, parse_tensor_specs

MANIFEST_NAME = "modelserve.json"


class ModelFormat(enum.StrEnum):
    TORCHSCRIPT = "TorchScript"
    TORCH_EXPORT = "TorchExport"
    SAFETENSORS = "Safetensors"


_BY_SUFFIX: dict[str, ModelFormat] = {
    ".pt2": ModelFormat.TORCH_EXPORT,
    ".safetensors": ModelFormat.SAFETENSORS,
    ".pt": ModelFormat.TORCHSCRIPT,
    ".pth": ModelFormat.TORCHSCRIPT,
    ".torchscript": ModelFormat.TORCHSCRIPT,
    ".ts": ModelFormat.TORCHSCRIPT,
    ".jit": ModelFormat.TORCHSCRIPT,
}
_PICKLE_SUFFIXES = {".pkl", ".pickle", ".ckpt", ".bin", ".joblib", ".pck"}
_ENTRY_POINT = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")

# Where a declared format comes from, for error messages.
FORMAT_SETTING = "--model-format / MODELSERVE_MODEL_FORMAT, which the operator sets from spec.model.format"
FORMAT_SOURCES = f"the manifest, or {FORMAT_SETTING}"

WHY_NO_PICKLE = (
    "pickle can run arbitrary code when loaded, so modelserve never unpickles model files. "
    "Use instead: TorchScript (torch.jit.script/trace then torch.jit.save), a torch.export program "
    "(torch.export.export then torch.export.save to a .pt2 file), or safetensors weights "
    "(safetensors.torch.save_file) with an entry point 'module:Class'."
)


@dataclass(frozen=True, slots=True)
class ModelSource:
    """Everything needed to load one model, resolved from a model directory."""

    format: ModelFormat
    artifact: Path
    model_dir: Path
    entry_point: str | None = None
    init_kwargs: dict[str, Any] = field(default_factory=dict)
    inputs: tuple[TensorSpec, ...] | None = None
    outputs: tuple[TensorSpec, ...] | None = None

    @property
    def signature(self) -> Signature | None:
        if self.inputs is None:
            return None
        return Signature(self.inputs, self.outputs or ())


def read_manifest(model_dir: Path) -> dict[str, Any]:
    """The manifest's content, or {} when the directory has none."""
    path = model_dir / MANIFEST_NAME
    if not path.is_file():
        return {}
    try:
        data = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as exc:
        raise ModelLoadError(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ModelLoadError(f"{path}: expected a JSON object")
    return data


def parse_signature_json(data: dict[str, Any], where: str) -> tuple[tuple[TensorSpec, ...] | None, ...]:
    inputs = parse_tensor_specs(data["inputs"], f"{where}.inputs") if "inputs" in data else None
    outputs = parse_tensor_specs(data["outputs"], f"{where}.outputs") if "outputs" in data else None
    return inputs, outputs


def resolve(model_dir: Path, declared_format: str | None = None, entry_point: str | None = None) -> ModelSource:
    """Find the model artifact and its format in `model_dir` (a directory, or the artifact file itself).

    `declared_format` and `entry_point` come from the server's settings (the operator passes the ModelDeployment's
    spec.model.format and entryPoint); they take the place of the manifest's, and a manifest that says otherwise is
    an error rather than a silent choice between the two."""
    if model_dir.is_file():
        artifact: Path | None = model_dir
        model_dir = model_dir.parent
    elif model_dir.is_dir():
        artifact = None
    else:
        raise ModelLoadError(f"model directory {model_dir} does not exist")
    manifest = read_manifest(model_dir)
    where = str(model_dir / MANIFEST_NAME)

    fmt_raw = manifest.get("format")
    fmt: ModelFormat | None = None
    if fmt_raw is not None:
        try:
            fmt = ModelFormat(fmt_raw)
        except ValueError:
            raise ModelLoadError(
                f"{where}: format {fmt_raw!r} is not one of {', '.join(f.value for f in ModelFormat)}"
            ) from None
    if declared_format is not None:
        try:
            declared = ModelFormat(declared_format)
        except ValueError:
            raise ModelLoadError(
                f"model format {declared_format!r} is not one of {', '.join(f.value for f in ModelFormat)}"
            ) from None
        if fmt is not None and fmt is not declared:
            raise ModelLoadError(
                f"the server is told format {declared.value} ({FORMAT_SETTING}), but {where} says {fmt.value}"
            )
        fmt = declared
    if artifact is None and "file" in manifest:
        name = manifest["file"]
        if not isinstance(name, str) or not name or Path(name).is_absolute() or ".." in Path(name).parts:
            raise ModelLoadError(f"{where}: file must be a relative path inside the model directory")
        artifact = model_dir / name
        if not artifact.is_file():
            raise ModelLoadError(f"{where}: file {name!r} does not exist in {model_dir}")
    if artifact is None:
        artifact = _find_artifact(model_dir, fmt)
    if fmt is None:
        fmt = _format_of(artifact)
    check_no_pickle(artifact, fmt)

    from_manifest = manifest.get("entryPoint")
    source = f"{where}: entryPoint"
    if entry_point is not None:
        if from_manifest is not None and from_manifest != entry_point:
            raise ModelLoadError(f"the server is told entry point {entry_point!r}, but {source} is {from_manifest!r}")
        source = "the entry point setting (--entry-point, MODELSERVE_ENTRY_POINT)"
    else:
        entry_point = from_manifest
    if fmt is ModelFormat.SAFETENSORS:
        if not isinstance(entry_point, str) or not _ENTRY_POINT.match(entry_point):
            raise ModelLoadError(
                f"safetensors weights need an entry point 'package.module:Class' that builds the module the "
                f"weights belong to ({source} is {entry_point!r}; set spec.model.entryPoint, or entryPoint in "
                f"{where})"
            )
    elif entry_point is not None:
        raise ModelLoadError(f"{source}: an entry point is only used with the Safetensors format, not {fmt.value}")
    init_kwargs = manifest.get("init", {})
    if not isinstance(init_kwargs, dict):
        raise ModelLoadError(f"{where}: init must be an object of keyword arguments for the entry point")
    inputs, outputs = parse_signature_json(manifest, where)
    return ModelSource(fmt, artifact, model_dir, entry_point, init_kwargs, inputs, outputs)


def _format_of(artifact: Path) -> ModelFormat:
    suffix = artifact.suffix.lower()
    if suffix in _PICKLE_SUFFIXES:
        raise UnsafeFormat(f"{artifact.name}: refusing a pickle file; {WHY_NO_PICKLE}")
    try:
        return _BY_SUFFIX[suffix]
    except KeyError:
        raise ModelLoadError(
            f'{artifact.name}: cannot tell the model format from the file name; set "format" in '
            f"{MANIFEST_NAME} to one of {', '.join(f.value for f in ModelFormat)}"
        ) from None


def _find_artifact(model_dir: Path, fmt: ModelFormat | None) -> Path:
    files = sorted(p for p in model_dir.iterdir() if p.is_file() and not p.name.startswith("."))
    candidates = [
        p for p in files if p.suffix.lower() in _BY_SUFFIX and (fmt is None or _BY_SUFFIX[p.suffix.lower()] is fmt)
    ]
    if len(candidates) == 1:
        return candidates[0]
    if len(candidates) > 1:
        raise ModelLoadError(
            f"{model_dir}: several model files ({', '.join(p.name for p in candidates)}); "
            f'name the one to serve with "file" in {MANIFEST_NAME}'
        )
    others = [p for p in files if p.suffix.lower() in _BY_SUFFIX]
    if fmt is not None and others:
        wanted = ", ".join(sorted(k for k, v in _BY_SUFFIX.items() if v is fmt))
        found = ", ".join(f"{p.name} ({_BY_SUFFIX[p.suffix.lower()].value})" for p in others)
        raise ModelLoadError(
            f"{model_dir}: the format is {fmt.value} ({FORMAT_SOURCES}), but there is no {fmt.value} file ({wanted}); "
            f'found: {found}. Set the format that matches the file, or name the file with "file" in {MANIFEST_NAME}'
        )
    pickles = [p for p in files if p.suffix.lower() in _PICKLE_SUFFIXES]
    if pickles:
        raise UnsafeFormat(f"{model_dir}: only pickle files found ({pickles[0].name}); {WHY_NO_PICKLE}")
    raise ModelLoadError(
        f"{model_dir}: no model file found (expected one of {', '.join(sorted(_BY_SUFFIX))}); "
        f"found: {', '.join(p.name for p in files) or 'nothing'}"
    )


def check_no_pickle(artifact: Path, fmt: ModelFormat) -> None:
    """Refuse files whose loading would unpickle arbitrary objects (e.g. torch.save of a module).

    TorchScript archives are zip files with a `code/` tree (read by TorchScript's own restricted loader);
    `torch.save` archives are zip files holding only `data.pkl`; legacy `torch.save` files are raw pickles.
    """
    if fmt is ModelFormat.SAFETENSORS:
        return
    with artifact.open("rb") as fh:
        head = fh.read(4)
    if head[:1] == b"\x80":
        raise UnsafeFormat(f"{artifact.name}: this is a raw pickle (legacy torch.save); {WHY_NO_PICKLE}")
    if head != b"PK\x03\x04":
        raise ModelLoadError(f"{artifact.name}: not a {fmt.value} archive (not a zip file)")
    try:
        with zipfile.ZipFile(artifact) as zf:
            names = zf.namelist()
    except zipfile.BadZipFile as exc:
        raise ModelLoadError(f"{artifact.name}: corrupt {fmt.value} archive: {exc}") from None
    if fmt is ModelFormat.TORCHSCRIPT and not any("/code/" in n for n in names):
        raise UnsafeFormat(
            f"{artifact.name}: this is a torch.save archive (pickled Python objects), not TorchScript; {WHY_NO_PICKLE}"
        )
