from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from modelserve import protocol_v2
from modelserve.errors import RequestError
from modelserve.protocol_v2 import Limits, _from_json, decode_request, encode_response
from modelserve.signature import Signature, TensorSpec, dtype_of
from modelserve.testing import reference_forward

from .conftest import IN, OUT, ClientFactory, json_number_texts, v2_body

SIG = Signature((TensorSpec("input", "FP32", (-1, 2)),), (TensorSpec("output", "FP32", (-1, 2)),))
LIMITS = Limits(max_elements=1000)


def binary_body(array: np.ndarray, binary_output: bool = True) -> tuple[bytes, dict[str, str]]:
    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "datatype": "FP32",
                    "shape": list(array.shape),
                    "parameters": {"binary_data_size": array.nbytes},
                }
            ],
            "parameters": {"binary_data_output": binary_output},
        }
    )
    return header + array.tobytes(), {"Inference-Header-Content-Length": str(len(header))}


def test_json_inference_matches_the_model(client: TestClient, models: dict[str, Path]) -> None:
    x = np.random.default_rng(1).standard_normal((3, IN)).astype(np.float32)
    body = {"id": "r1", "inputs": [{"name": "input", "datatype": "FP32", "shape": [3, IN], "data": x.tolist()}]}
    r = client.post("/v2/models/mlp/infer", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["id"] == "r1" and out["model_name"] == "mlp" and out["model_version"] == "1"
    (tensor,) = out["outputs"]
    assert tensor["name"] == "output" and tensor["datatype"] == "FP32" and tensor["shape"] == [3, OUT]
    expected = reference_forward(models["mlp"] / "model.pt", torch.from_numpy(x))
    np.testing.assert_allclose(np.array(tensor["data"]).reshape(3, OUT), expected, rtol=1e-5, atol=1e-6)


def test_binary_inference_round_trip(client: TestClient, models: dict[str, Path]) -> None:
    x = np.random.default_rng(2).standard_normal((2, IN)).astype(np.float32)
    body, headers = binary_body(x)
    r = client.post("/v2/models/mlp/versions/1/infer", content=body, headers=headers)
    assert r.status_code == 200, r.text
    n = int(r.headers["inference-header-content-length"])
    header = orjson.loads(r.content[:n])
    (tensor,) = header["outputs"]
    assert tensor["parameters"]["binary_data_size"] == 2 * OUT * 4
    got = np.frombuffer(r.content[n:], np.float32).reshape(2, OUT)
    expected = reference_forward(models["mlp"] / "model.pt", torch.from_numpy(x))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_metadata_and_health(client: TestClient) -> None:
    assert client.get("/v2/health/live").status_code == 200
    assert client.get("/v2/health/ready").json()["ready"] is True
    assert client.get("/v2").json()["extensions"] == ["binary_tensor_data"]
    meta = client.get("/v2/models/mlp").json()
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, IN]}]
    assert meta["outputs"] == [{"name": "output", "datatype": "FP32", "shape": [-1, OUT]}]
    assert client.get("/v2/models/mlp/versions/1").status_code == 200
    assert client.get("/v2/models/mlp/ready").json() == {"name": "mlp", "ready": True}
    assert client.get("/v2/models/mlp/versions/1/ready").status_code == 200


@pytest.mark.parametrize(
    ("path", "status", "message"),
    [
        ("/v2/models/other/infer", 404, "model 'other' not found"),
        ("/v2/models/mlp/versions/7/infer", 404, "no version '7'"),
        ("/v2/models/other", 404, "not found"),
        ("/v2/nothing/here", 404, "no such endpoint"),
    ],
)
def test_not_found(client: TestClient, path: str, status: int, message: str) -> None:
    r = client.post(path, json=v2_body()) if path.endswith("infer") else client.get(path)
    assert r.status_code == status and message in r.json()["error"]


def test_wrong_method_is_405_json(client: TestClient) -> None:
    r = client.get("/v2/models/mlp/infer")
    assert r.status_code == 405 and "GET" in r.json()["error"]
    assert client.delete("/v2/health/ready").status_code == 405


# ---- the C parser of JSON number arrays (compiled build): every body decodes as orjson alone decodes it ----

SIG_XY = Signature(
    (TensorSpec("x", "FP32", (-1, -1)), TensorSpec("y", "FP64", (-1,))), (TensorSpec("output", "FP32", (-1, 2)),)
)
number_texts = json_number_texts | st.sampled_from(
    ["1e400", "true", "null", '"1"', "[1]", "NaN", "01", "-0", "3.4028235677973366e38"]
)
spaces = st.sampled_from(["", " ", "\n  ", "\t", "\r\n"])


@st.composite
def oip_bodies(draw: st.DrawFn) -> bytes:
    inputs = []
    for name, datatype in (("x", "FP32"), ("y", "FP64")):
        tokens = draw(st.lists(number_texts, max_size=24))
        w = draw(spaces)
        count = len(tokens) + draw(st.sampled_from([0, 0, 0, 1]))  # now and then a shape that does not fit
        pairs = [
            f'"name": "{name}"',
            f'"datatype": "{draw(st.sampled_from([datatype] * 4 + ["FP16", "INT32", "INT64", "BOOL"]))}"',
            f'"shape": {json.dumps([1, count] if name == "x" else [count])}',
            f'"data":{w}[{w}' + f",{w}".join(tokens) + f"{w}]",
        ]
        inputs.append("{" + ", ".join(draw(st.permutations(pairs))) + "}")
    extra = draw(st.sampled_from(["", ', "id": "r"', ', "parameters": {"data": [1.5]}', ', "id": "\\u0000"']))
    return ('{"inputs": [' + ", ".join(draw(st.permutations(inputs))) + "]" + extra + "}").encode()


def decoded(body: bytes, split: bool, allow_non_finite: bool) -> Any:
    limits = Limits(max_elements=1000, allow_non_finite=allow_non_finite)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # numpy's overflow to inf
            request = decode_request(body, None, SIG_XY, limits, split=split)
    except RequestError as exc:
        return str(exc)
    return [(a.dtype.str, a.shape, a.tobytes(), a.flags.writeable) for a in request.inputs], request.id


@settings(max_examples=600, deadline=None)
@given(oip_bodies(), st.booleans())
def test_json_bodies_decode_the_same_with_and_without_the_c_parser(body: bytes, allow_non_finite: bool) -> None:
    assert decoded(body, True, allow_non_finite) == decoded(body, False, allow_non_finite)


def test_the_compiled_build_parses_json_arrays_in_c() -> None:
    body = b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [0.1, 2]},' \
        b' {"name": "y", "datatype": "FP64", "shape": [1], "data": [0.1]}]}'  # fmt: skip
    assert (protocol_v2._SPLIT is not None) == (os.environ.get("MODELSERVE_EXPECT_COMPILED") == "1")
    if protocol_v2._SPLIT is not None:
        assert protocol_v2._SPLIT(body) is not None
    x, y = decode_request(body, None, SIG_XY, LIMITS).inputs
    assert x.tobytes() == np.array([[0.1, 2]], np.float32).tobytes()
    assert y.tobytes() == np.array([0.1], np.float64).tobytes()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "malformed JSON"),
        (b"[1, 2]", "JSON object"),
        (b'{"inputs": []}', "non-empty list"),
        (b'{"inputs": [{"name": "nope", "datatype": "FP32", "shape": [1, 16], "data": []}]}', "unknown input 'nope'"),
        (b'{"inputs": [{"name": "input", "datatype": "INT64", "shape": [1, 16], "data": [' + b"1," * 15 + b"1]}]}",
         "datatype INT64 does not match the model's FP32"),
        (b'{"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]}]}',
         "input 'input': shape [1, 3] does not match the expected shape [-1, 16]"),
        (b'{"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 16], "data": [1, 2]}]}',
         "data has 2 elements but shape [1, 16] needs 16"),
        (b'{"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 16], "data": ["a"]}]}', "not a regular"),
        (b'{"inputs": [{"name": "input", "datatype": "FP32", "shape": [1000000000, 1000000000], "data": [1]}]}',
         "more than the"),
        (b'{"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, -16], "data": [1]}]}', "non-negative"),
        (b'{"inputs": [{"name": "input", "datatype": "STRING", "shape": [1], "data": [1]}]}', "unsupported datatype"),
        (b'{"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 16], "data": [NaN]}]}', "malformed JSON"),
        (b"[" * 5000 + b"]" * 5000, "malformed JSON"),
        (b'{"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 16], "data": '
         + b"[" * 200 + b"1" + b"]" * 200 + b"}]}", "not a regular"),
        (b'{"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 16], "data": [' + b"1," * 15 + b'1]}],'
         b' "outputs": [{"name": "nope"}]}', "unknown output 'nope'"),
    ],
)  # fmt: skip
def test_client_mistakes_are_400_with_a_clear_message(client: TestClient, body: bytes, message: str) -> None:
    r = client.post("/v2/models/mlp/infer", content=body)
    assert r.status_code == 400, r.text
    assert message in r.json()["error"]


def test_binary_sizes_that_do_not_match_the_header(client: TestClient) -> None:
    x = np.ones((1, IN), np.float32)
    body, headers = binary_body(x)
    r = client.post("/v2/models/mlp/infer", content=body[:-4], headers=headers)
    assert r.status_code == 400 and "binary data ends" in r.json()["error"]
    r = client.post("/v2/models/mlp/infer", content=body + b"xxxx", headers=headers)
    assert r.status_code == 400 and "add up to" in r.json()["error"]
    r = client.post("/v2/models/mlp/infer", content=body, headers={"Inference-Header-Content-Length": "99999"})
    assert r.status_code == 400 and "outside the body" in r.json()["error"]
    r = client.post("/v2/models/mlp/infer", content=body, headers={"Inference-Header-Content-Length": "x"})
    assert r.status_code == 400


def test_non_finite_binary_input_is_refused(client: TestClient) -> None:
    x = np.ones((1, IN), np.float32)
    x[0, 3] = np.inf
    body, headers = binary_body(x)
    r = client.post("/v2/models/mlp/infer", content=body, headers=headers)
    assert r.status_code == 400 and "NaN or Inf" in r.json()["error"]


def test_oversized_body_is_413(models: dict[str, Path], make_client: ClientFactory) -> None:
    client = make_client(models["mlp"], max_body_bytes=1000)
    r = client.post("/v2/models/mlp/infer", json=v2_body(rows=30))
    assert r.status_code == 413 and "1000-byte limit" in r.json()["error"]

    def chunks() -> object:  # no Content-Length: the limit holds while streaming
        for _ in range(10):
            yield b"x" * 200

    r = client.post("/v2/models/mlp/infer", content=chunks())  # type: ignore[arg-type]
    assert r.status_code == 413


def test_requested_outputs_and_two_inputs(models: dict[str, Path], make_client: ClientFactory) -> None:
    client = make_client(models["two_heads"], name="heads")
    body = {
        "inputs": [
            {"name": "scale", "datatype": "FP32", "shape": [2, 1], "data": [1, 10]},
            {"name": "features", "datatype": "FP32", "shape": [2, 3], "data": [[1, 2, 3], [3, 2, 1]]},
        ],
        "outputs": [{"name": "argmax"}],
    }
    r = client.post("/v2/models/heads/infer", json=body)
    assert r.status_code == 200, r.text
    assert r.json()["outputs"] == [{"name": "argmax", "datatype": "INT64", "shape": [2], "data": [2, 0]}]
    del body["inputs"][0]
    r = client.post("/v2/models/heads/infer", json=body)
    assert r.status_code == 400 and "missing input(s): scale" in r.json()["error"]


def test_decode_encode_units() -> None:
    body = orjson.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 2], "data": [1, 2]}]})
    req = decode_request(body, None, SIG, LIMITS)
    assert req.inputs[0].tolist() == [[1.0, 2.0]] and req.outputs is None and not req.binary_outputs
    payload, header_len = encode_response("m", "1", req, ["output"], [np.array([[3, 4]], np.float32)])
    assert header_len is None
    assert orjson.loads(payload)["outputs"][0]["data"] == [3.0, 4.0]
    with pytest.raises(RequestError, match="timeout_ms"):
        decode_request(orjson.dumps({**orjson.loads(body), "parameters": {"timeout_ms": -1}}), None, SIG, LIMITS)


numbers = st.floats(allow_nan=False, allow_infinity=False) | st.integers(-(2**70), 2**70)
json_values = st.recursive(
    numbers
    | st.booleans()
    | st.none()
    | st.text(alphabet="0123456789.e-+x", max_size=4)
    | st.sampled_from(["NaN", "Infinity", "-Infinity", "nan", "inf"])
    | st.integers(-3, 3).map(float),
    lambda inner: st.lists(inner, max_size=4),
    max_leaves=12,
)


def expected_array(data: Any, dtype: np.dtype[Any]) -> np.ndarray[Any, Any] | None:
    """What the data of a JSON tensor decodes to, or None for a 400: numbers (true and false as 1 and 0) for a
    floating-point tensor, plus the strings "NaN", "Infinity" and "-Infinity"; whole numbers within range for an
    integer tensor (2.0 counts, 2.5 does not); only true and false for BOOL; and a regular shape."""
    kind = dtype.kind

    def convert(value: Any) -> Any:
        if isinstance(value, list):
            return [convert(v) for v in value]
        if isinstance(value, bool):
            return value
        if kind == "b" or value is None:
            raise ValueError(value)
        if isinstance(value, str):
            if kind == "f" and value in ("NaN", "Infinity", "-Infinity"):
                return float(value)
            raise ValueError(value)
        if isinstance(value, float) and kind in "iu":
            if not value.is_integer():
                raise ValueError(value)
            return int(value)
        return value

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # numpy's overflow to inf
        try:
            return np.asarray(convert(data if isinstance(data, list) else [data]), dtype=dtype)
        except (ValueError, TypeError, OverflowError):
            return None


@settings(max_examples=600, deadline=None)
@given(
    st.lists(numbers, max_size=40) | st.lists(json_values, max_size=6) | json_values,
    st.sampled_from(["FP32", "FP64", "FP16", "INT8", "UINT8", "INT32", "INT64", "UINT64", "BOOL"]),
)
def test_json_data_decodes_only_to_values_of_its_type(data: Any, datatype: str) -> None:
    """JSON data becomes the array its values mean, or a 400: never a silent conversion (numpy alone reads
    "1.5" as a number, truncates 2.5 to 2 in an integer tensor, and takes 1 as true in a BOOL one). The struct
    fast path for flat number lists and the slower general path agree with the same oracle."""
    dtype = dtype_of(datatype)
    expected = expected_array(data, dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        if expected is None:
            with pytest.raises(RequestError):
                _from_json(data, dtype, "x")
            return
        got = _from_json(data, dtype, "x")
    assert (got.dtype, got.shape) == (expected.dtype, expected.shape)
    assert got.tobytes() == expected.tobytes()


@pytest.mark.parametrize(
    ("data", "datatype", "message"),
    [
        (["1.5"], "FP32", 'FP32 data cannot hold "1.5"'),
        ([1.0, None], "FP64", "FP64 data cannot hold null"),
        ([2.5], "INT64", "INT64 data must be whole numbers"),
        ([1, 0], "BOOL", "BOOL data cannot hold 1"),
        (["7"], "INT32", 'INT32 data cannot hold "7"'),
    ],
)
def test_json_data_of_the_wrong_type_is_a_400_naming_the_value(data: Any, datatype: str, message: str) -> None:
    with pytest.raises(RequestError, match=message):
        _from_json(data, dtype_of(datatype), "x")


def test_the_struct_fast_path_rounds_and_overflows_as_numpy() -> None:
    f32 = np.dtype(np.float32)
    # All within float32's range once rounded: the packed path takes them (its arrays are read-only views).
    edge = [0.1, 1 / 3, -0.0, 5e-324, 1.4e-45, 3.4028235e38, 3.4028235677973362e38, 2**64, -(2**31), True]
    packed = _from_json(edge, f32, "x")
    assert not packed.flags.writeable
    assert packed.tobytes() == np.asarray(edge, f32).tobytes()
    # Just past float32's largest value struct refuses; numpy's answer (inf, refused later as non-finite) stands.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for too_big in (3.4028235677973366e38, 1e300, -1e39):
            assert _from_json([1.0, too_big], f32, "x").tobytes() == np.asarray([1.0, too_big], f32).tobytes()
