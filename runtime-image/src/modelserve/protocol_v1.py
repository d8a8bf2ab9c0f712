"""TensorFlow-Serving-style v1 REST bodies: {"instances": [...]} -> {"predictions": [...]}.

Row format ("instances") and columnar format ("inputs" -> "outputs") are both accepted.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson

from modelserve.errors import RequestError
from modelserve.protocol_v2 import Limits, json_array, load_json
from modelserve.signature import Array, Signature, TensorSpec, has_non_finite


class PredictRequest:  # a plain class, not a dataclass: see protocol_v2.InferRequest
    __slots__ = ("columnar", "inputs")

    def __init__(self, inputs: list[Array], columnar: bool) -> None:
        self.inputs = inputs
        self.columnar = columnar


def decode_request(body: bytes, signature: Signature, limits: Limits) -> PredictRequest:
    payload = load_json(body)
    if not isinstance(payload, dict):
        raise RequestError('request body must be a JSON object with "instances" (or "inputs")')
    if "instances" in payload:
        instances = payload["instances"]
        if not isinstance(instances, list) or not instances:
            raise RequestError('"instances" must be a non-empty list')
        return PredictRequest(_rows(instances, signature, limits), columnar=False)
    if "inputs" in payload:
        return PredictRequest(_columns(payload["inputs"], signature, limits), columnar=True)
    raise RequestError('request body needs "instances" (a list of rows) or "inputs"')


def _rows(instances: list[Any], signature: Signature, limits: Limits) -> list[Array]:
    specs = signature.inputs
    if len(specs) == 1 and not isinstance(instances[0], dict):
        return [_array(instances, specs[0], limits)]
    if not all(isinstance(row, dict) for row in instances):
        raise RequestError(
            f"the model has inputs {', '.join(s.name for s in specs)}: each instance must be an object "
            "mapping input names to values"
        )
    arrays = []
    for spec in specs:
        try:
            column = [row[spec.name] for row in instances]
        except KeyError:
            raise RequestError(f"an instance lacks input {spec.name!r}") from None
        arrays.append(_array(column, spec, limits))
    return arrays


def _columns(inputs: Any, signature: Signature, limits: Limits) -> list[Array]:
    specs = signature.inputs
    if not isinstance(inputs, dict):
        if len(specs) != 1:
            raise RequestError('"inputs" must be an object mapping input names to tensors')
        return [_array(inputs, specs[0], limits)]
    unknown = set(inputs) - {s.name for s in specs}
    if unknown:
        raise RequestError(f"unknown input(s): {', '.join(sorted(unknown))}")
    try:
        return [_array(inputs[s.name], s, limits) for s in specs]
    except KeyError as exc:
        raise RequestError(f"missing input {exc}") from None


def _array(data: Any, spec: TensorSpec, limits: Limits) -> Array:
    try:
        array = json_array(data, spec.dtype)
    except (ValueError, TypeError, OverflowError) as exc:
        raise RequestError(f"input {spec.name!r}: not a regular array of {spec.datatype}: {exc}") from None
    if array.size > limits.max_elements:
        raise RequestError(f"input {spec.name!r}: {array.size} elements is more than the server accepts")
    spec.check(array)
    if not limits.allow_non_finite and has_non_finite(array):
        raise RequestError(f"input {spec.name!r} contains NaN or Inf")
    return array


def encode_response(request: PredictRequest, output_names: Sequence[str], arrays: Sequence[Array]) -> bytes:
    opts = orjson.OPT_SERIALIZE_NUMPY
    if request.columnar:
        if len(arrays) == 1:
            return orjson.dumps({"outputs": np.ascontiguousarray(arrays[0])}, option=opts)
        return orjson.dumps(
            {"outputs": {n: np.ascontiguousarray(a) for n, a in zip(output_names, arrays, strict=True)}}, option=opts
        )
    if len(arrays) == 1:
        return orjson.dumps({"predictions": np.ascontiguousarray(arrays[0])}, option=opts)
    rows = len(arrays[0]) if arrays[0].ndim else 1
    predictions = [
        {
            n: (np.ascontiguousarray(a[i]) if a.ndim > 1 else a[i].item())
            for n, a in zip(output_names, arrays, strict=True)
        }
        for i in range(rows)
    ]
    return orjson.dumps({"predictions": predictions}, option=opts)


def model_status(name: str, version: str, ready: bool) -> dict[str, Any]:
    """GET /v1/models/{name} in TF-Serving's shape."""
    return {
        "model_version_status": [
            {
                "version": version,
                "state": "AVAILABLE" if ready else "UNAVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            }
        ]
    }
