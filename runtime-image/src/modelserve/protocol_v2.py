"""Open Inference Protocol v2 (KServe v2 / Triton) REST bodies: JSON tensors and the binary data extension.

Pure functions from bytes to arrays and back; the HTTP layer lives in app.py.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from modelserve.errors import RequestError
from modelserve.signature import Array, Signature, datatype_of, dtype_of, has_non_finite

HEADER_LENGTH = "inference-header-content-length"
_NUMPY_OPTS = orjson.OPT_SERIALIZE_NUMPY


@dataclass(frozen=True, slots=True)
class Limits:
    max_elements: int  # per input tensor; bounded by the body limit
    allow_non_finite: bool = False


# A plain class, not a dataclass: built per request, and a dataclass's generated __init__ is interpreted
# even in the compiled build (about 6x slower there).
class InferRequest:
    __slots__ = ("binary_outputs", "id", "inputs", "outputs", "timeout_ms")

    def __init__(
        self, id: str | None, inputs: list[Array], outputs: tuple[str, ...] | None, binary_outputs: frozenset[str],
        timeout_ms: float | None,
    ) -> None:  # fmt: skip
        self.id = id
        self.inputs = inputs  # in the model's signature order
        self.outputs = outputs  # requested output names, None: all
        self.binary_outputs = binary_outputs  # outputs to send as binary data
        self.timeout_ms = timeout_ms


def parse_header_length(value: str | None, body_length: int) -> int | None:
    if value is None:
        return None
    try:
        n = int(value)
    except ValueError:
        raise RequestError(f"Inference-Header-Content-Length must be an integer, got {value!r}") from None
    if not 0 < n <= body_length:
        raise RequestError(f"Inference-Header-Content-Length {n} is outside the body's {body_length} bytes")
    return n


def load_json(data: bytes | memoryview) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise RequestError(f"malformed JSON: {exc}") from None


# The compiled build parses the number arrays of a JSON body in C (_jsontensor.c): split() hands back the body with
# each flat number array at $.inputs[*].data replaced by a "\u0000<k>" string, and the k-th array's values. The
# pure-Python build, and any body split() declines, take orjson alone; both give the same arrays and errors
# (tests/runtime/test_protocol_v2.py runs every body both ways).
Parsed = tuple[bytes, bytes | None, int, int]  # float64 bytes, float32 bytes (None: overflows), start, stop
Split = tuple[bytes, list[Parsed]]


def _load_split() -> Callable[[bytes], Split | None] | None:
    try:
        from modelserve._jsontensor import split
    except ImportError:  # the pure-Python build
        return None
    return split


_SPLIT = _load_split()


def decode_request(
    body: bytes, header_length: int | None, signature: Signature, limits: Limits, *, split: bool = True
) -> InferRequest:
    view = memoryview(body)
    arrays: list[Parsed] | None = None
    parts = _SPLIT(body) if split and header_length is None and _SPLIT is not None else None
    if parts is not None:
        try:
            header = orjson.loads(parts[0])
            arrays = parts[1]
        except orjson.JSONDecodeError:
            header = load_json(view)  # the error as orjson words it for the body as sent
    else:
        header = load_json(view[:header_length] if header_length is not None else view)
    binary = view[header_length:] if header_length is not None else view[:0]
    if not isinstance(header, dict):
        raise RequestError("request body must be a JSON object with an 'inputs' list")
    raw_inputs = header.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise RequestError("'inputs' must be a non-empty list of tensors")
    by_name: dict[str, Array] = {}
    offset = 0
    for i, raw in enumerate(raw_inputs):
        if not isinstance(raw, dict):
            raise RequestError(f"inputs[{i}] must be an object with name, shape, datatype and data")
        name = raw.get("name")
        if not isinstance(name, str):
            raise RequestError(f"inputs[{i}].name must be a string")
        if name in by_name:
            raise RequestError(f"input {name!r} given twice")
        spec = signature.input(name)
        array, offset = _decode_tensor(raw, name, binary, offset, limits, body, arrays)
        spec.check(array)
        by_name[name] = array
    if offset != len(binary):
        raise RequestError(
            f"binary data is {len(binary)} bytes but the inputs' binary_data_size values add up to {offset}"
        )
    missing = [s.name for s in signature.inputs if s.name not in by_name]
    if missing:
        raise RequestError(f"missing input(s): {', '.join(missing)}")
    params = _params(header.get("parameters"), "parameters")
    outputs, binary_outputs = _requested_outputs(header.get("outputs"), signature, params)
    request_id = header.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise RequestError("'id' must be a string")
    return InferRequest(
        request_id,
        [by_name[s.name] for s in signature.inputs],
        outputs,
        binary_outputs,
        _timeout_ms(params),
    )


def _params(raw: Any, where: str) -> Mapping[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise RequestError(f"{where} must be an object")
    return raw


def _timeout_ms(params: Mapping[str, Any]) -> float | None:
    value = params.get("timeout_ms")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise RequestError("parameters.timeout_ms must be a positive number of milliseconds")
    return float(value)


def _shape(raw: Any, name: str, limits: Limits) -> tuple[int, ...]:
    if not isinstance(raw, list) or len(raw) > 32:
        raise RequestError(f"input {name!r}: shape must be a list of at most 32 integers")
    for d in raw:
        if isinstance(d, bool) or not isinstance(d, int) or d < 0:
            raise RequestError(f"input {name!r}: shape {raw} must hold non-negative integers")
    shape = tuple(raw)
    count = math.prod(shape)
    if count > limits.max_elements:
        raise RequestError(
            f"input {name!r}: declared shape {list(shape)} has {count} elements, more than the "
            f"{limits.max_elements} this server accepts"
        )
    return shape


def _decode_tensor(
    raw: Mapping[str, Any], name: str, binary: memoryview, offset: int, limits: Limits, body: bytes,
    arrays: list[Parsed] | None,
) -> tuple[Array, int]:  # fmt: skip
    datatype = raw.get("datatype")
    if not isinstance(datatype, str):
        raise RequestError(f"input {name!r}: datatype must be a string such as FP32")
    dtype = dtype_of(datatype)
    shape = _shape(raw.get("shape"), name, limits)
    count = math.prod(shape)
    params = _params(raw.get("parameters"), f"input {name!r} parameters")
    size = params.get("binary_data_size")
    finite = False  # known to hold no NaN or infinity, without the check
    if size is not None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise RequestError(f"input {name!r}: binary_data_size must be a non-negative integer")
        expected = count * dtype.itemsize
        if size != expected:
            raise RequestError(
                f"input {name!r}: binary_data_size {size} does not match shape {list(shape)} of {datatype} "
                f"({expected} bytes)"
            )
        if offset + size > len(binary):
            raise RequestError(f"input {name!r}: binary data ends after {len(binary) - offset} of {size} bytes")
        array = np.frombuffer(binary[offset : offset + size], dtype=dtype).reshape(shape)
        offset += size
    else:
        data = raw.get("data")
        if data is None:
            raise RequestError(f"input {name!r}: no 'data' and no binary_data_size parameter")
        if arrays is not None and isinstance(data, str) and data[:1] == "\x00":
            array, finite = _from_split(arrays[int(data[1:])], dtype, name, body)
        else:
            array = _from_json(data, dtype, name)
        if array.size != count:
            raise RequestError(f"input {name!r}: data has {array.size} elements but shape {list(shape)} needs {count}")
        array = array.reshape(shape)
    if not finite and not limits.allow_non_finite and has_non_finite(array):
        raise RequestError(f"input {name!r} contains NaN or Inf")
    return array, offset


# A flat list of JSON numbers (the usual "data") is packed by struct in C, in half the time np.asarray takes. Any
# other list (nested, strings, values out of range, floats for an integer tensor) fails there and goes to
# json_array, which decides and words the error, so the two always agree (tests/runtime/test_protocol_v2.py checks
# both against an oracle of its own).
_PACK_CODES = {
    np.dtype(t): code
    for t, code in (
        (np.float32, "f"), (np.float64, "d"), (np.int8, "b"), (np.uint8, "B"), (np.int16, "h"), (np.uint16, "H"),
        (np.int32, "i"), (np.uint32, "I"), (np.int64, "q"), (np.uint64, "Q"),
    )
}  # fmt: skip
_F32, _F64 = np.dtype(np.float32), np.dtype(np.float64)
_PACK_MAX = 1 << 16  # elements; longer lists take np.asarray (no argument tuple of that size)
# The JSON values (as the kind numpy infers for them) each kind of tensor takes: numbers for floating point, whole
# numbers for integers (true and false count as 1 and 0, as in JSON's every numeric library), only true and false
# for BOOL.
_JSON_KINDS = {"f": "biuf", "i": "biu", "u": "biu", "b": "b"}
# The only strings a floating-point tensor takes: the names JSON lacks for NaN and the infinities.
NON_FINITE_NAMES = frozenset({"NaN", "Infinity", "-Infinity"})


def json_array(data: Any, dtype: np.dtype[Any]) -> Array:
    """`np.asarray(data, dtype)` for the data of a JSON tensor, without numpy's silent conversions: a string is
    refused (except "NaN", "Infinity" and "-Infinity" in a floating-point tensor), an integer tensor refuses
    a float unless it holds that value exactly (2.0, not 2.5 or 1e30), and a BOOL tensor takes only true and
    false. Raises ValueError, TypeError or OverflowError with the reason."""
    accepted = _JSON_KINDS.get(dtype.kind)
    if accepted is None:
        return np.asarray(data, dtype=dtype)
    inferred = np.asarray(data)  # the kind of the values; shape and raggedness errors, worded by numpy
    kind = inferred.dtype.kind
    if inferred.size == 0:
        return np.asarray(data, dtype=dtype)
    if kind == "f" and dtype.kind == "f":
        # JSON numbers read as doubles either way: converting the inferred array rounds as converting the list
        # would, without walking the Python list a second time.
        return inferred if inferred.dtype == dtype else inferred.astype(dtype)
    if kind in accepted:
        return np.asarray(data, dtype=dtype)  # numpy checks the range of integers as it converts them
    if kind == "f" and dtype.kind in "iu":
        array = np.asarray(data, dtype=dtype)
        with np.errstate(invalid="ignore"):
            exact = np.array_equal(array.astype(np.float64), inferred)
        if exact:
            return array
        raise ValueError(f"{datatype_of(dtype)} data must be whole numbers within its range")
    misfits = _first_misfit(data, dtype.kind)
    if not misfits:
        # numbers numpy could not infer one kind for (integers beyond 64 bits, mixed with floats)
        return np.asarray(data, dtype=dtype)
    raise TypeError(f"{datatype_of(dtype)} data cannot hold {orjson.dumps(misfits[0]).decode()[:40]}")


def _first_misfit(data: Any, kind: str) -> list[object]:
    """The first JSON value in `data` (nested lists) that a tensor of numpy kind `kind` does not take, in a list
    (empty when every value fits; the value itself may be None)."""
    stack = [data]
    while stack:
        value = stack.pop()
        if isinstance(value, list):
            stack.extend(reversed(value))
        elif isinstance(value, bool):
            pass  # taken by every kind
        elif kind == "b" or not isinstance(value, (int, float, str)):
            return [value]
        elif isinstance(value, str):
            if kind != "f" or value not in NON_FINITE_NAMES:
                return [value]
        elif isinstance(value, float) and kind != "f" and not value.is_integer():
            return [value]
    return []


def _from_split(parsed: Parsed, dtype: np.dtype[Any], name: str, body: bytes) -> tuple[Array, bool]:
    """(the array, whether it is known to be finite). split() parses only finite doubles, and gives no float32
    buffer where a value overflows float32, so its FP64 and FP32 arrays hold no NaN or infinity."""
    f64, f32, start, stop = parsed
    if dtype == _F64:
        return np.frombuffer(f64, dtype=dtype), True
    if dtype == _F32 and f32 is not None:
        return np.frombuffer(f32, dtype=dtype), True
    # other datatypes, and float32 overflow: the array's text, as orjson reads it
    return _from_json(orjson.loads(body[start:stop]), dtype, name), False


def _from_json(data: Any, dtype: np.dtype[Any], name: str) -> Array:
    if not isinstance(data, list):
        data = [data]
    code = _PACK_CODES.get(dtype)
    if code is not None and len(data) <= _PACK_MAX:
        try:
            return np.frombuffer(struct.pack(f"={len(data)}{code}", *data), dtype=dtype)
        except (struct.error, OverflowError, TypeError):
            pass
    try:
        return json_array(data, dtype)
    except (ValueError, TypeError, OverflowError) as exc:
        raise RequestError(f"input {name!r}: data is not a regular array of {datatype_of(dtype)}: {exc}") from None


def _requested_outputs(
    raw: Any, signature: Signature, params: Mapping[str, Any]
) -> tuple[tuple[str, ...] | None, frozenset[str]]:
    all_binary = params.get("binary_data_output") is True
    known = {s.name for s in signature.outputs}
    if raw is None:
        return None, frozenset(known if all_binary else ())
    if not isinstance(raw, list):
        raise RequestError("'outputs' must be a list of {name} objects")
    names: list[str] = []
    binary: set[str] = set()
    for i, item in enumerate(raw):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise RequestError(f"outputs[{i}] must be an object with a name")
        name = item["name"]
        if name not in known:
            raise RequestError(f"unknown output {name!r}; the model's outputs are: {', '.join(sorted(known))}")
        names.append(name)
        out_params = _params(item.get("parameters"), f"outputs[{i}].parameters")
        if out_params.get("binary_data", all_binary) is True:
            binary.add(name)
    return tuple(names), frozenset(binary)


def encode_response(
    model_name: str,
    model_version: str,
    request: InferRequest,
    output_names: Sequence[str],
    arrays: Sequence[Array],
) -> tuple[bytes, int | None]:
    """The response body and, when any output is binary, the length of its JSON header."""
    wanted = request.outputs
    outputs: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for name, array in zip(output_names, arrays, strict=True):
        if wanted is not None and name not in wanted:
            continue
        entry: dict[str, Any] = {"name": name, "datatype": datatype_of(array.dtype), "shape": array.shape}
        if name in request.binary_outputs:
            blob = np.ascontiguousarray(array).tobytes()
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = np.ascontiguousarray(array).reshape(-1)
        outputs.append(entry)
    body: dict[str, Any] = {"model_name": model_name, "model_version": model_version, "outputs": outputs}
    if request.id is not None:
        body["id"] = request.id
    header = orjson.dumps(body, option=_NUMPY_OPTS)
    if not blobs:
        return header, None
    return b"".join([header, *blobs]), len(header)


def model_metadata(name: str, version: str, signature: Signature, platform: str) -> dict[str, Any]:
    return {
        "name": name,
        "versions": [version],
        "platform": platform,
        "inputs": [s.to_json() for s in signature.inputs],
        "outputs": [s.to_json() for s in signature.outputs],
    }
