"""Input/output signature of a model: names, Open Inference Protocol datatypes and shapes (-1 = any size)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from modelserve.errors import ModelLoadError, RequestError

Array = npt.NDArray[Any]

# Open Inference Protocol datatype <-> numpy dtype. BYTES and BF16 have no numpy equivalent served here.
DATATYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
}
_DATATYPE_OF: dict[np.dtype[Any], str] = {v: k for k, v in DATATYPES.items()}


def datatype_of(dtype: np.dtype[Any]) -> str:
    """The protocol datatype name of a numpy dtype."""
    try:
        return _DATATYPE_OF[np.dtype(dtype)]
    except KeyError:
        raise ModelLoadError(f"dtype {dtype} has no Open Inference Protocol datatype") from None


def dtype_of(datatype: str) -> np.dtype[Any]:
    """The numpy dtype of a protocol datatype name; RequestError if unknown or unsupported."""
    try:
        return DATATYPES[datatype]
    except KeyError:
        raise RequestError(f"unsupported datatype {datatype!r}; supported: {', '.join(DATATYPES)}") from None


@dataclass(frozen=True, slots=True)
class TensorSpec:
    name: str
    datatype: str
    shape: tuple[int, ...]

    @property
    def dtype(self) -> np.dtype[Any]:
        return DATATYPES[self.datatype]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}

    def example_shape(self, batch: int = 1) -> tuple[int, ...]:
        """A concrete shape for warm-up: the first -1 becomes `batch`, any other -1 becomes 1."""
        dims = list(self.shape)
        for i, d in enumerate(dims):
            if d < 0:
                dims[i] = batch if i == 0 else 1
        return tuple(dims)

    def check(self, array: Array) -> None:
        """Raise RequestError naming this input when the array's dtype or shape does not fit."""
        if array.dtype != DATATYPES[self.datatype]:
            raise RequestError(
                f"input {self.name!r}: datatype {datatype_of(array.dtype)} does not match the model's {self.datatype}"
            )
        if not shape_matches(self.shape, array.shape):
            raise RequestError(
                f"input {self.name!r}: shape {list(array.shape)} does not match the expected shape "
                f"{list(self.shape)} (-1 means any size)"
            )


_ALL = np.logical_and.reduce  # ndarray.all() goes through a Python wrapper in numpy; the ufunc reduction does not


def _load_non_finite() -> Callable[[Array], bool | None] | None:
    try:
        from modelserve._jsontensor import non_finite
    except ImportError:  # the pure-Python build
        return None
    return non_finite


# The compiled build checks contiguous float16/32/64 arrays in C (_jsontensor.c), one loop over the exponent bits;
# None from it (another layout or byte order) and the pure-Python build take numpy. test_jsontensor.py checks the
# two agree.
_NON_FINITE = _load_non_finite()


def has_non_finite(array: Array) -> bool:
    """Whether a floating-point array holds a NaN or an infinity (False for other dtypes)."""
    if array.dtype.kind != "f" or array.size == 0:
        return False
    if _NON_FINITE is not None:
        found = _NON_FINITE(array)
        if found is not None:
            return found
    return not _ALL(np.isfinite(array), axis=None)


def shape_matches(expected: Sequence[int], actual: Sequence[int]) -> bool:
    return len(expected) == len(actual) and all(e < 0 or e == a for e, a in zip(expected, actual, strict=True))


@dataclass(frozen=True, slots=True)
class Signature:
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...] = field(default=())
    _by_name: dict[str, TensorSpec] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_name", {s.name: s for s in reversed(self.inputs)})  # the first of a name wins

    @property
    def batchable(self) -> bool:
        """True when every input has a variable first dimension (the batch dimension)."""
        return bool(self.inputs) and all(s.shape and s.shape[0] < 0 for s in self.inputs)

    def input(self, name: str) -> TensorSpec:
        spec = self._by_name.get(name)
        if spec is not None:
            return spec
        raise RequestError(f"unknown input {name!r}; the model's inputs are: {', '.join(s.name for s in self.inputs)}")

    def to_json(self) -> dict[str, Any]:
        return {"inputs": [s.to_json() for s in self.inputs], "outputs": [s.to_json() for s in self.outputs]}


def parse_tensor_specs(raw: Any, where: str) -> tuple[TensorSpec, ...]:
    """Parse a list of {name, datatype, shape} objects (from a manifest); ModelLoadError when malformed."""
    if not isinstance(raw, list):
        raise ModelLoadError(f"{where}: expected a list of {{name, datatype, shape}} objects")
    specs: list[TensorSpec] = []
    for i, item in enumerate(raw):
        if not isinstance(item, Mapping):
            raise ModelLoadError(f"{where}[{i}]: expected an object")
        name, datatype, shape = item.get("name"), item.get("datatype"), item.get("shape")
        if not isinstance(name, str) or not name:
            raise ModelLoadError(f"{where}[{i}].name: expected a non-empty string")
        if datatype not in DATATYPES:
            raise ModelLoadError(f"{where}[{i}].datatype: {datatype!r} is not one of {', '.join(DATATYPES)}")
        if not isinstance(shape, list) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= -1 for d in shape
        ):
            raise ModelLoadError(f"{where}[{i}].shape: expected a list of integers >= -1")
        specs.append(TensorSpec(name, datatype, tuple(shape)))
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ModelLoadError(f"{where}: duplicate tensor names in {names}")
    return tuple(specs)
