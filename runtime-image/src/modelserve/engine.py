"""The engine: loads a model onto a device and runs batches. The only module of the runtime that imports torch.

Every call into the engine other than construction happens on the one inference thread of its device
(see batching.py), so the engine itself holds no locks.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import torch

from modelserve.errors import DeviceFailed, InferenceFailed, ModelLoadError
from modelserve.formats import MANIFEST_NAME, ModelFormat, ModelSource, parse_signature_json
from modelserve.signature import Array, Signature, TensorSpec, datatype_of

log = logging.getLogger(__name__)

_TORCH_DTYPE_TO_NUMPY: dict[torch.dtype, np.dtype[Any]] = {
    torch.bool: np.dtype(np.bool_),
    torch.uint8: np.dtype(np.uint8),
    torch.int8: np.dtype(np.int8),
    torch.int16: np.dtype(np.int16),
    torch.int32: np.dtype(np.int32),
    torch.int64: np.dtype(np.int64),
    torch.float16: np.dtype(np.float16),
    torch.float32: np.dtype(np.float32),
    torch.float64: np.dtype(np.float64),
}
_TRACEBACK_LOG_INTERVAL_S = 60.0  # a model error's full traceback is logged at most this often per error
# Messages PyTorch uses when the accelerator itself is broken (as opposed to a bad input).
_FATAL_DEVICE_ERRORS = (
    "CUDA error",
    "device-side assert",
    "illegal memory access",
    "CUBLAS_STATUS",
    "CUDNN_STATUS",
    "unspecified launch failure",
    "uncorrectable ECC error",
)


@dataclass(frozen=True, slots=True)
class EngineOptions:
    device: str = "auto"  # auto | cpu | cuda
    device_index: int = 0
    half_precision: bool = False
    torch_threads: int = 0  # 0: one per two cores, at least one


def select_device(requested: str, index: int, cuda_available: Callable[[], bool] | None = None) -> str:
    """The torch device string to use: CUDA (with the configured index) when present and asked for."""
    available = (cuda_available or torch.cuda.is_available)()
    if requested == "cpu":
        return "cpu"
    if requested in ("auto", "cuda"):
        if available:
            count = torch.cuda.device_count()
            if not 0 <= index < count:
                raise ModelLoadError(f"CUDA device index {index} out of range: {count} device(s) visible")
            return f"cuda:{index}"
        if requested == "cuda":
            raise ModelLoadError("device 'cuda' requested but no CUDA device is available")
        return "cpu"
    raise ModelLoadError(f"unknown device {requested!r}; expected auto, cpu or cuda")


def configure_threads(threads: int) -> int:
    """Set torch's intra-op threads; 0 picks half the cores (the rest serve HTTP), at least one."""
    n = threads if threads > 0 else max(1, (os.cpu_count() or 2) // 2)
    torch.set_num_threads(n)
    with contextlib.suppress(RuntimeError):  # can only be set once per process
        torch.set_num_interop_threads(1)
    return n


class Engine:
    """A loaded model on one device: `predict` runs one (possibly batched) forward pass."""

    def __init__(
        self,
        module: Callable[..., Any],
        signature: Signature,
        device: str,
        half_precision: bool = False,
        output_names: Sequence[str] | None = None,
    ) -> None:
        self.module = module
        self.signature = signature
        self.device = device
        self.half_precision = half_precision
        self.healthy = True
        self.load_seconds = 0.0
        self._torch_device = torch.device(device)
        self._on_cuda = self._torch_device.type == "cuda"
        self._output_names = list(output_names or [s.name for s in signature.outputs])
        self.clock: Callable[[], float] = time.monotonic
        self._logged: dict[str, tuple[float, int]] = {}  # error line -> (when its traceback was logged, repeats)

    # ---- inference ----

    def predict(self, inputs: Sequence[Array]) -> list[Array]:
        """Run the model on arrays in signature input order; returns arrays in output order."""
        if not self.healthy:
            raise DeviceFailed(f"device {self.device} is unusable after an earlier error")
        try:
            with torch.inference_mode():
                tensors = [self._to_tensor(a) for a in inputs]
                result = self.module(*tensors)
                return self._outputs_to_numpy(result)
        except InferenceFailed:
            raise
        except Exception as exc:
            if self._on_cuda and _is_fatal_device_error(exc):
                self.healthy = False
                log.error("Device %s failed; readiness is now false: %s", self.device, exc)
                raise DeviceFailed(f"device {self.device} failed: {exc}") from exc
            raise InferenceFailed(self._model_error(exc)) from exc

    def _model_error(self, exc: BaseException) -> str:
        """The client's message for an exception the model raised. TorchScript wraps the error in its interpreter's
        traceback (source lines, server paths): the message keeps the last line and the log the whole traceback,
        once per distinct error and minute, with the count of repeats, so a client that sends the same bad input
        in a loop cannot flood the log."""
        text = str(exc).strip()
        if "\n" not in text:
            return f"model raised {type(exc).__name__}: {text}"
        last = text.splitlines()[-1].strip()
        now = self.clock()
        logged, repeats = self._logged.get(last, (-_TRACEBACK_LOG_INTERVAL_S, 0))
        if now - logged >= _TRACEBACK_LOG_INTERVAL_S:
            again = f" ({repeats} more since the last report)" if repeats else ""
            log.warning("Model raised %s%s: %s", type(exc).__name__, again, text)
            self._logged[last] = (now, 0)
        else:
            self._logged[last] = (logged, repeats + 1)
        if len(self._logged) > 256:  # errors that differ every time (an index in the message): keep it bounded
            self._logged = {line: entry for line, entry in self._logged.items() if now - entry[0] < 1.0}
        return f"model failed: {last} (traceback in the server log)"

    def _to_tensor(self, array: Array) -> torch.Tensor:
        if not array.flags.writeable:
            array = array.copy()
        tensor = torch.from_numpy(array)
        if self._on_cuda:
            tensor = tensor.to(self._torch_device, non_blocking=True)
        if self.half_precision and tensor.is_floating_point():
            tensor = tensor.half()
        return tensor

    def _outputs_to_numpy(self, result: Any) -> list[Array]:
        if isinstance(result, torch.Tensor):
            tensors = [result]
        elif isinstance(result, dict):
            names = self._output_names or sorted(result)
            try:
                tensors = [result[n] for n in names]
            except KeyError as exc:
                raise InferenceFailed(f"model output has no key {exc}; it returned {sorted(result)}") from None
        elif isinstance(result, list | tuple):
            tensors = list(result)
        else:
            raise InferenceFailed(f"model returned {type(result).__name__}; expected tensors")
        arrays: list[Array] = []
        for i, t in enumerate(tensors):
            if not isinstance(t, torch.Tensor):
                raise InferenceFailed(f"model output {i} is {type(t).__name__}, not a tensor")
            if self.half_precision and t.dtype == torch.float16:
                t = t.float()
            arrays.append(t.detach().cpu().numpy())
        return arrays

    def warm_up(self, batch_sizes: Sequence[int] = (1,)) -> None:
        """Run the model on zeros so lazy initialisation (CUDA kernels, allocator) happens before ready."""
        for batch in batch_sizes:
            inputs = [np.zeros(s.example_shape(batch), dtype=s.dtype) for s in self.signature.inputs]
            self.predict(inputs)
        if self._on_cuda:
            torch.cuda.synchronize(self._torch_device)

    def complete_output_signature(self) -> None:
        """Fill in output specs from one warm-up run when neither the model nor a manifest declared them."""
        if self.signature.outputs:
            return
        inputs = [np.zeros(s.example_shape(1), dtype=s.dtype) for s in self.signature.inputs]
        outputs = self.predict(inputs)
        names = self._output_names or [f"output_{i}" for i in range(len(outputs))]
        batch = self.signature.batchable
        specs = tuple(
            TensorSpec(name, datatype_of(a.dtype), ((-1, *a.shape[1:]) if batch and a.ndim else a.shape))
            for name, a in zip(names, outputs, strict=True)
        )
        self.signature = Signature(self.signature.inputs, specs)
        self._output_names = list(names)

    # ---- device state ----

    def check_device(self) -> bool:
        """False once the device has failed; on CUDA also probes it with a tiny kernel."""
        if not self.healthy:
            return False
        if self._on_cuda:
            try:
                torch.ones(1, device=self._torch_device).add_(1)
                torch.cuda.synchronize(self._torch_device)
            except Exception as exc:
                log.error("Device %s probe failed: %s", self.device, exc)
                self.healthy = False
        return self.healthy

    def memory_stats(self) -> dict[str, int]:
        """Bytes of accelerator memory by kind (allocated, reserved); empty on CPU."""
        if not self._on_cuda:
            return {}
        return {
            "allocated": int(torch.cuda.memory_allocated(self._torch_device)),
            "reserved": int(torch.cuda.memory_reserved(self._torch_device)),
        }


def _is_fatal_device_error(exc: BaseException) -> bool:
    accel = getattr(torch, "AcceleratorError", None)
    if accel is not None and isinstance(exc, accel):
        return True
    text = str(exc)
    return any(marker in text for marker in _FATAL_DEVICE_ERRORS)


# ---- loading ----


def load_engine(source: ModelSource, options: EngineOptions) -> Engine:
    """Load the model described by `source` onto the selected device (no warm-up)."""
    started = time.perf_counter()
    configure_threads(options.torch_threads)
    device = select_device(options.device, options.device_index)
    half = options.half_precision
    if half and not device.startswith("cuda"):
        log.warning("Half precision requested but the device is %s; running in full precision", device)
        half = False
    loader = {
        ModelFormat.TORCHSCRIPT: _load_torchscript,
        ModelFormat.TORCH_EXPORT: _load_export,
        ModelFormat.SAFETENSORS: _load_safetensors,
    }[source.format]
    try:
        module, signature, output_names = loader(source, device)
    except (ModelLoadError, InferenceFailed):
        raise
    except Exception as exc:
        raise ModelLoadError(f"cannot load {source.artifact.name} as {source.format.value}: {exc}") from exc
    if half and hasattr(module, "half"):
        module = module.half()
    engine = Engine(module, signature, device, half, output_names)
    engine.complete_output_signature()
    engine.load_seconds = time.perf_counter() - started
    return engine


def _manifest_signature(source: ModelSource, fallback: Signature | None) -> Signature:
    if source.signature is not None:
        if fallback is not None and not source.signature.outputs:
            return Signature(source.signature.inputs, fallback.outputs)
        return source.signature
    if fallback is not None:
        return fallback
    raise ModelLoadError(
        f"{source.artifact.name}: the model does not declare its inputs; list them in {MANIFEST_NAME} as "
        '"inputs": [{"name": ..., "datatype": "FP32", "shape": [-1, ...]}]'
    )


def _load_torchscript(source: ModelSource, device: str) -> tuple[Any, Signature, list[str] | None]:
    extra: dict[str, Any] = {MANIFEST_NAME: ""}
    with warnings.catch_warnings():  # TorchScript is deprecated upstream but remains a supported format here
        warnings.simplefilter("ignore", DeprecationWarning)
        module = torch.jit.load(  # type: ignore[no-untyped-call]
            str(source.artifact), map_location=device, _extra_files=extra
        )
    module.eval()
    embedded: Signature | None = None
    raw = extra.get(MANIFEST_NAME)
    if raw:
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise ModelLoadError(f"{source.artifact.name}: embedded {MANIFEST_NAME} is not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ModelLoadError(f"{source.artifact.name}: embedded {MANIFEST_NAME} must be an object")
        inputs, outputs = parse_signature_json(data, f"{source.artifact.name}:extra/{MANIFEST_NAME}")
        if inputs is not None:
            embedded = Signature(inputs, outputs or ())
    signature = _manifest_signature(source, embedded)
    return module, signature, None


def _load_export(source: ModelSource, device: str) -> tuple[Any, Signature, list[str] | None]:
    program = torch.export.load(str(source.artifact))
    inputs, outputs = _export_signature(program)
    module = program.module()
    if device != "cpu":
        module = module.to(device)
    signature = _manifest_signature(source, Signature(inputs, outputs))
    return module, signature, None


def _export_signature(program: Any) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    user_inputs = set(program.graph_signature.user_inputs)
    user_outputs = list(program.graph_signature.user_outputs)
    inputs: list[TensorSpec] = []
    outputs: list[TensorSpec] = []
    for node in program.graph.nodes:
        if node.op == "placeholder" and node.name in user_inputs:
            inputs.append(_spec_from_fake(node.name, node.meta.get("val")))
        elif node.op == "output":
            args = node.args[0] if isinstance(node.args[0], list | tuple) else [node.args[0]]
            for i, arg in enumerate(args):
                name = user_outputs[i] if i < len(user_outputs) and user_outputs[i] else f"output_{i}"
                outputs.append(_spec_from_fake(f"output_{i}" if name is None else name, arg.meta.get("val")))
    return tuple(inputs), tuple(outputs)


def _spec_from_fake(name: str, value: Any) -> TensorSpec:
    if not isinstance(value, torch.Tensor):
        raise ModelLoadError(f"exported program tensor {name!r} has no tensor metadata")
    shape = tuple(d if isinstance(d, int) else -1 for d in value.shape)
    dtype = _TORCH_DTYPE_TO_NUMPY.get(value.dtype)
    if dtype is None:
        raise ModelLoadError(f"tensor {name!r} has dtype {value.dtype}, which the protocol cannot carry")
    return TensorSpec(name, datatype_of(dtype), shape)


def _load_safetensors(source: ModelSource, device: str) -> tuple[Any, Signature, list[str] | None]:
    from safetensors.torch import load_file

    assert source.entry_point is not None  # resolve() guarantees it
    module_name, _, class_name = source.entry_point.partition(":")
    model_dir = str(source.model_dir)
    if model_dir not in sys.path:
        sys.path.insert(0, model_dir)
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as exc:
        raise ModelLoadError(f"entry point {source.entry_point!r} cannot be imported: {exc}") from exc
    try:
        module = cls(**source.init_kwargs)
    except Exception as exc:
        raise ModelLoadError(f"entry point {source.entry_point!r} failed to construct: {exc}") from exc
    if not isinstance(module, torch.nn.Module):
        raise ModelLoadError(f"entry point {source.entry_point!r} built a {type(module).__name__}, not a Module")
    state = load_file(str(source.artifact), device="cpu")
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelLoadError(f"weights do not fit {source.entry_point}: {exc}") from None
    module = module.to(device).eval()
    return module, _manifest_signature(source, None), None
