"""The C JSON tensor parser (runtime-image/src/modelserve/_jsontensor.c), built with the compiled request path:
checked against orjson (numbers, documents) and the generator of its power-of-ten table. The end-to-end check
(decode_request with and without it) is in test_protocol_v2.py."""

from __future__ import annotations

import importlib.util
import json
import struct
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from .conftest import json_number_texts

RUNTIME = Path(__file__).resolve().parents[2] / "runtime-image"


def test_the_power_of_ten_table_is_the_generators_output() -> None:
    spec = importlib.util.spec_from_file_location("gen_pow10", RUNTIME / "native" / "gen_pow10.py")
    assert spec is not None and spec.loader is not None
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    assert (RUNTIME / "src" / "modelserve" / "_pow10.h").read_text() == gen.header()
    # two entries of Go's strconv table (eisel_lemire.go), which the algorithm's port assumes
    assert gen.mantissa128(-348) == 0xFA8FD5A0081C0288_1732C869CD60E453
    assert gen.mantissa128(43) >> 64 == 0xE596B7B0C643C719


# Absent from the pure-Python build; test_structure.py fails the compiled run (make test-native) without it.
jt: Any = pytest.importorskip("modelserve._jsontensor", reason="built with the compiled request path (make native)")


def orjson_float(text: str) -> float | None:
    """What orjson makes of one number, as a double (None: it refuses it)."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def bits(x: float) -> bytes:
    return struct.pack("<d", x)


@pytest.mark.parametrize(
    "text",
    [
        "0", "-0", "-0.0", "0.0", "1", "-1", "1.5", "1e5", "1E5", "1e+5", "1e-5", "0.1", "0.13965606689453125",
        "0.10000000149011612", "3.4028234663852886e+38", "1.401298464324817e-45", "1.1754943508222875e-38",
        "9007199254740992", "-9007199254740992", "9007199254740993.0", "9007199254740995.0", "1.7976931348623157e308",
        "2.2250738585072014e-308", "2.2250738585072011e-308", "4.9e-324", "5e-324", "2e-324", "1e-400", "0e400",
        "123456789012345678901234567890e-10", "0.000000000000000000000000000000123", "3.141592653589793238462643",
        "1234567890123456789", "12345678901234567890.5", "1e22", "1e23", "9999999999999999999e-19",
        "7.2057594037927933e16", "1448997445238699", "8.98846567431158e307",
    ],
)  # fmt: skip
def test_numbers_convert_as_orjson_does(text: str) -> None:
    got, want = jt.parse_float(text.encode()), orjson_float(text)
    assert want is not None
    if got is not None:
        assert bits(got) == bits(want), text


@pytest.mark.parametrize(
    "text",
    [
        "1e400", "-1e400", "1.7976931348623159e308",  # infinite as a double: orjson refuses them
        "9007199254740993", "18446744073709551615", "-9223372036854775809",  # integers past 2**53: left to orjson
        "01", "-01", "1.", ".5", "+1", "-", "1e", "1e+", "0x10", "NaN", "Infinity", "1.5x", "", " 1", "1 ", "--1",
        "0." + "0" * 60 + "12345678901234567890123",  # more than 19 digits, and too long for the fallback
    ],
)  # fmt: skip
def test_what_it_does_not_convert_is_left_to_orjson(text: str) -> None:
    assert jt.parse_float(text.encode()) is None


def test_the_common_forms_take_the_parser() -> None:
    """The forms clients send are converted here, not left to orjson (else split() would gain nothing)."""
    rng = np.random.default_rng(7)
    texts = [repr(float(v)) for v in rng.random(2000, dtype=np.float32)]  # float32 data printed as doubles
    texts += [repr(float(v)) for v in rng.normal(size=2000)]
    texts += [str(int(v)) for v in rng.integers(-(2**53), 2**53, 500)]
    texts += [f"{v:.7g}" for v in rng.normal(size=500)]
    for text in texts:
        got = jt.parse_float(text.encode())
        assert got is not None, text
        assert bits(got) == bits(orjson_float(text) or 0.0), text


number_texts = json_number_texts | st.from_regex(r"\A[-+.0-9eE]{0,12}\Z")  # the latter mostly not JSON numbers


@settings(max_examples=3000, deadline=None)
@given(number_texts)
def test_any_number_converts_as_orjson_does_or_not_at_all(text: str) -> None:
    got, want = jt.parse_float(text.encode()), orjson_float(text)
    if got is not None:
        assert want is not None and bits(got) == bits(want), text
    elif want is not None and abs(want) <= 2**53 and ("." in text or "e" in text.lower()):
        assert len(text) >= 64, text  # every other float orjson reads is converted here


# ---- split() ----


def restore(skeleton: Any, entries: list[tuple[bytes, bytes | None, int, int]]) -> Any:
    """The skeleton's document with each marker at $.inputs[*].data back as its numbers; a marker anywhere else
    fails the test."""

    def check(value: Any) -> None:
        if isinstance(value, str):
            assert not value.startswith("\x00"), "a marker outside $.inputs[*].data"
        elif isinstance(value, list):
            for v in value:
                check(v)
        elif isinstance(value, dict):
            for v in value.values():
                check(v)

    if isinstance(skeleton, dict) and isinstance(skeleton.get("inputs"), list):
        for item in skeleton["inputs"]:
            if isinstance(item, dict) and isinstance(item.get("data"), str) and item["data"].startswith("\x00"):
                f64, _, _, _ = entries[int(item["data"][1:])]
                item["data"] = np.frombuffer(f64, np.float64).tolist()
    check(skeleton)
    return skeleton


def same(a: Any, b: Any) -> bool:
    """Documents equal, numbers compared as doubles (the parser's floats against orjson's ints and floats)."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and isinstance(b, int | float) and not isinstance(b, bool):
        return bits(a) == bits(float(b))
    return type(a) is type(b) and a == b


def check_split(body: bytes) -> Any:
    parts = jt.split(body)
    if parts is None:
        return None
    skeleton, entries = parts
    for f64, f32, start, stop in entries:
        numbers = orjson.loads(body[start:stop])  # each span is a JSON array orjson reads as these numbers
        values = np.frombuffer(f64, np.float64)
        assert [bits(float(n)) for n in numbers] == [bits(v) for v in values.tolist()]
        if f32 is not None:
            assert f32 == values.astype(np.float32).tobytes()
        else:
            assert np.isinf(values.astype(np.float32)).any()
    try:
        original = orjson.loads(body)
    except orjson.JSONDecodeError:
        with pytest.raises(orjson.JSONDecodeError):
            orjson.loads(skeleton)
        return parts
    assert same(restore(orjson.loads(skeleton), entries), original)
    return parts


def test_split_replaces_the_data_arrays_of_the_inputs_only() -> None:
    body = (
        b'{"id": "a", "parameters": {"data": [1.5]}, "inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 3],'
        b' "data": [1.5, -2, 3e-1]}, {"name": "y", "data": [[1.0]], "parameters": {"data": [2.5]}}, [{"data": [1]}],'
        b' {"d\\u0061ta": [4.5], "data" : [ ] }], "outputs": [{"data": [0.5]}]}'
    )
    skeleton, entries = check_split(body)
    assert skeleton == (
        b'{"id": "a", "parameters": {"data": [1.5]}, "inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 3],'
        b' "data": "\\u00000"}, {"name": "y", "data": [[1.0]], "parameters": {"data": [2.5]}}, [{"data": [1]}],'
        b' {"d\\u0061ta": [4.5], "data" : "\\u00001" }], "outputs": [{"data": [0.5]}]}'
    )
    assert [np.frombuffer(e[0], np.float64).tolist() for e in entries] == [[1.5, -2.0, 0.3], []]
    assert np.frombuffer(entries[0][1] or b"", np.float32).tolist() == np.array([1.5, -2, 0.3], np.float32).tolist()


@pytest.mark.parametrize(
    "body",
    [
        b'{"inputs": [{"data": ["1.5"]}]}',  # nothing to replace
        b'{"inputs": [{"data": [1.5, 1e400]}]}',
        b'{"inputs": [{"data": [1.5]}], "id": "\\u0000"}',  # the marker's escape: not split
        b'{"inputs": [{"data": [1.5]}]',  # unbalanced
        b'{"inputs": [{"data": [1.5]}]}}',
        b'{"inputs": [{"data": [1.5]}]} x',
        b'[{"inputs": [{"data": [1.5]}]}]',
        b'{"inputs": [{"data": [1.5]}], "x": "unterminated}',
        b'{"inputs": [{"data": [1.5]}], "x": ' + b"[" * 80 + b"]" * 80 + b"}",  # deeper than the scan goes
        b"",
    ],
)
def test_split_declines(body: bytes) -> None:
    assert jt.split(body) is None


def test_split_takes_memoryviews_and_long_arrays() -> None:
    values = np.random.default_rng(1).normal(size=70_000)
    body = orjson.dumps({"inputs": [{"name": "x", "data": values.tolist()}]})
    parts = jt.split(memoryview(body))
    assert parts is not None
    assert np.frombuffer(parts[1][0][0], np.float64).tobytes() == values.tobytes()
    assert jt.split(memoryview(body)[:10]) is None


def test_float32_overflow_is_marked() -> None:
    parts = jt.split(b'{"inputs": [{"data": [1.0, 3.5e38]}, {"data": [3.4028235677973362e38, -1e-50]}]}')
    assert parts is not None
    (_, over, _, _), (_, fits, _, _) = parts[1]
    assert over is None
    assert fits is not None and np.frombuffer(fits, np.float32).tolist() == [float(np.finfo(np.float32).max), -0.0]


ws = st.sampled_from(["", " ", "\n", "\t", " \r\n "])
elements = number_texts.filter(lambda t: orjson_float(t) is not None) | st.sampled_from(
    ["true", "null", '"1.5"', "[1.5]", "{}", "NaN", "01", "1.", "-", "1e999"]
)
arrays = st.builds(lambda items, w: "[" + w + ("," + w).join(items) + w + "]", st.lists(elements, max_size=12), ws)
scalars = st.sampled_from(['"x"', "1", "true", "null", '"d\\u0061ta"', '"\\"]"', "[]", "{}", '"\\\\"'])
keys = st.sampled_from(['"data"', '"name"', '"inputs"', '"d\\u0061ta"', '"da\\"ta"', '"parameters"', '"shape"'])


def objects(values: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    pair = st.builds(lambda k, w, v: f"{k}{w}:{w}{v}", keys, ws, values)
    return st.builds(lambda ps, w: "{" + w + ("," + w).join(ps) + w + "}", st.lists(pair, max_size=4), ws)


documents = st.recursive(scalars | arrays, lambda inner: objects(inner) | st.lists(inner, max_size=3).map(
    lambda items: "[" + ",".join(items) + "]"), max_leaves=10)  # fmt: skip
bodies = st.builds(
    lambda inputs, rest, w: "{" + w + f'"inputs"{w}:{w}[' + ",".join(inputs) + "]" + "".join(rest) + w + "}",
    st.lists(objects(arrays | documents), min_size=1, max_size=3),
    st.lists(st.builds(lambda k, v: f", {k}: {v}", keys, documents), max_size=2),
    ws,
)


@settings(max_examples=1500, deadline=None)
@given(bodies)
def test_split_documents_read_as_orjson_reads_them(text: str) -> None:
    check_split(text.encode())


@settings(max_examples=1500, deadline=None)
@given(bodies, st.lists(st.tuples(st.integers(0, 10_000), st.binary(max_size=3), st.integers(0, 3)), max_size=4))
def test_mangled_bodies_never_crash_and_never_disagree(text: str, edits: list[tuple[int, bytes, int]]) -> None:
    """Bytes inserted, deleted and overwritten anywhere (cut strings, stray quotes and brackets, bad UTF-8)."""
    body = bytearray(text.encode())
    for at, insert, delete in edits:
        at %= len(body) + 1
        body[at : at + delete] = insert
    check_split(bytes(body))


def test_memory_is_not_leaked() -> None:
    body = json.dumps({"inputs": [{"name": "x", "data": [0.5] * 600}, {"data": [1.5, 2]}]}).encode()
    bad = body.replace(b"2]}]}", b"2]}]")  # declined after the arrays are parsed
    for _ in range(100):
        jt.split(body), jt.split(bad)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(5000):
            jt.split(body), jt.split(bad)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 64 * 1024  # one lost buffer per call would be 5000 x 7 KB


# ---- non_finite: the request path's NaN / infinity check ----


def test_non_finite_agrees_with_numpy_on_every_float16() -> None:
    every = np.arange(1 << 16, dtype=np.uint16).view(np.float16)
    for value in every.reshape(-1, 1):
        assert jt.non_finite(value) is (not bool(np.isfinite(value).all()))


@settings(max_examples=400)
@given(st.sampled_from(["<f2", "<f4", "<f8"]), st.binary(max_size=96), st.integers(0, 7))
def test_non_finite_agrees_with_numpy_on_any_bit_pattern(dtype: str, data: bytes, offset: int) -> None:
    """Random bytes hit every NaN payload, both infinities, subnormals and zeros; the offset makes the array
    unaligned, as binary data inside a request body can be."""
    item = np.dtype(dtype).itemsize
    raw = bytes(offset) + data[: len(data) // item * item]
    array = np.frombuffer(raw, dtype=dtype, offset=offset)
    with np.errstate(invalid="ignore"):
        expected = not bool(np.isfinite(array).all())
    assert jt.non_finite(array) is expected


def test_non_finite_finds_one_value_anywhere() -> None:
    for dtype in (np.float16, np.float32, np.float64):
        for bad in (np.nan, np.inf, -np.inf):
            for at in (0, 1, 255):
                x = np.zeros(256, dtype)
                assert jt.non_finite(x) is False
                x[at] = bad
                assert jt.non_finite(x) is True
                assert jt.non_finite(x.reshape(16, 16)) is True


@pytest.mark.parametrize(
    "value",
    [
        np.zeros((4, 4), np.float32)[:, ::2],  # not contiguous
        np.zeros(4, ">f4"),  # not the native byte order
        np.zeros(4, np.int32),
        np.zeros(4, np.complex64),
        b"1234",
        1.5,
        [1.5],
    ],
    ids=["strided", "big-endian", "int32", "complex64", "bytes", "float", "list"],
)
def test_non_finite_leaves_other_arrays_to_numpy(value: object) -> None:
    assert jt.non_finite(value) is None


def test_non_finite_of_an_empty_array_is_false() -> None:
    assert jt.non_finite(np.zeros((0, 3), np.float32)) is False
