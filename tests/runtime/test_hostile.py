"""Hostile payloads against the real HTTP server: every one gets a 4xx JSON error, the server stays ready
and answers correctly afterwards, and the process's resident memory stays bounded."""

from __future__ import annotations

import json
import resource
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

from modelserve.testing import serve_in_thread

from .conftest import IN, make_config, v2_body

BODY_LIMIT = 1024 * 1024
URL = "/v2/models/mlp/infer"


def rss_bytes() -> int:
    """Current resident set size of this process (the server runs in a thread of it)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # peak, as a fallback


@pytest.fixture(scope="module")
def server(models: dict[str, Path]) -> Iterator[str]:
    config = make_config(models["mlp"], max_body_bytes=BODY_LIMIT)
    with serve_in_thread(config) as (base, _):
        yield base


def tensor(shape: object, data: object = None, datatype: str = "FP32", **params: object) -> bytes:
    entry: dict[str, object] = {"name": "input", "datatype": datatype, "shape": shape}
    if data is not None:
        entry["data"] = data
    if params:
        entry["parameters"] = params
    return json.dumps({"inputs": [entry]}).encode()


def nested(depth: int) -> bytes:
    return (
        b'{"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 16], "data": '
        + (b"[" * depth + b"1" + b"]" * depth)
        + b"}]}"
    )


HOSTILE: list[tuple[str, bytes, dict[str, str]]] = [
    ("nesting beyond the parser's limit", nested(100_000), {}),
    ("nesting below the parser's limit", nested(1000), {}),
    ("nested objects", b'{"inputs": ' + b'{"a": ' * 50_000 + b"1" + b"}" * 50_000 + b"}", {}),
    ("shape of 1e12 elements", tensor([10**12], [0.0]), {}),
    ("shape whose product overflows int64", tensor([2**62, 2**62, 16], [0.0]), {}),
    ("shape beyond 64-bit integers", b'{"inputs": [{"name": "input", "datatype": "FP32", "shape": [1'
     + b"0" * 40 + b', 16], "data": [0]}]}', {}),
    ("shape of floats", tensor([1e12, 16], [0.0]), {}),
    ("negative shape", tensor([-1, 16], [0.0] * 16), {}),
    ("shape of 33 dimensions", tensor([1] * 33, [0.0]), {}),
    ("NaN literal", b'{"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 16], "data": [NaN'
     + b", 0" * 15 + b"]}]}", {}),
    ("Infinity by overflow", tensor([1, 16], "[1e999" + ", 0" * 15 + "]"), {}),
    ("binary size larger than the body", tensor([1, 16], None, binary_data_size=10**15),
     {"Inference-Header-Content-Length": "0"}),
    ("binary size beyond the header length", tensor([1, 16], None, binary_data_size=64), {}),
    ("header length beyond the body", tensor([1, 16], [0.5] * 16), {"Inference-Header-Content-Length": "999999"}),
    ("negative header length", tensor([1, 16], [0.5] * 16), {"Inference-Header-Content-Length": "-5"}),
    ("data of the wrong type", tensor([1, 16], [{"x": 1}] * 16), {}),
    ("huge integer in data", tensor([1, 16], None, datatype="INT64"), {}),
]  # fmt: skip


def _fix_payloads() -> list[tuple[str, bytes, dict[str, str]]]:
    fixed = []
    for name, body, headers in HOSTILE:
        if name == "Infinity by overflow":  # json.dumps quoted the raw list; splice it in as JSON
            body = body.replace(b'"[1e999', b"[1e999").replace(b'0]"', b"0]")
        if name == "binary size larger than the body":
            headers = {"Inference-Header-Content-Length": str(len(body))}
            body += b"\x00" * 64
        if name == "huge integer in data":
            body = body.replace(b'"shape": [1, 16]', b'"shape": [1, 16], "data": [' + b"9" * 30 + b"]")
        fixed.append((name, body, headers))
    return fixed


@pytest.mark.parametrize(("body", "headers"), [(b, h) for _, b, h in _fix_payloads()], ids=[n for n, _, _ in HOSTILE])
def test_hostile_payload_is_a_4xx_json_error(server: str, body: bytes, headers: dict[str, str]) -> None:
    response = httpx.post(server + URL, content=body, headers=headers, timeout=30)
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:300])
    assert response.headers["content-type"] == "application/json"
    assert isinstance(response.json()["error"], str)
    assert httpx.get(server + "/v2/health/ready").status_code == 200


def test_v1_hostile_payloads(server: str) -> None:
    deep = b'{"instances": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    for body in (deep, b'{"instances": [[NaN]]}', b'{"instances": "x"}', b'{"instances": [[1e999]]}'):
        response = httpx.post(server + "/v1/models/mlp:predict", content=body, timeout=30)
        assert response.status_code == 400, response.text[:200]
        assert "error" in response.json()


def _oversize(server: str, i: int) -> int:
    """One upload of 8x the body limit, generated lazily so the client itself holds no large buffer."""
    size = 8 * BODY_LIMIT

    def chunks() -> Iterator[bytes]:
        block = b"0" * 65536
        for _ in range(size // len(block)):
            yield block

    # Odd: declared, refused on Content-Length before reading. Even: chunked, refused while streaming.
    headers = {"Content-Length": str(size)} if i % 2 else {}
    try:
        response = httpx.post(server + URL, content=chunks(), headers=headers, timeout=30)
    except httpx.TransportError:
        return -1  # the server may close the connection after answering 413 mid-upload
    assert response.json()["error"].startswith("request body")
    return response.status_code


def test_many_concurrent_oversize_bodies_keep_memory_bounded(server: str) -> None:
    before = rss_bytes()
    with ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(lambda i: _oversize(server, i), range(64)))
    grown = rss_bytes() - before
    assert set(statuses) <= {413, -1} and statuses.count(413) >= 32, statuses
    assert grown < 200 * 1024 * 1024, f"RSS grew by {grown / 2**20:.0f} MiB"
    assert httpx.get(server + "/v2/health/ready").status_code == 200
    response = httpx.post(server + URL, json=v2_body(), timeout=30)
    assert response.status_code == 200
    assert np.asarray(response.json()["outputs"][0]["data"]).shape == (4,)


def test_hostile_payloads_in_parallel_keep_memory_bounded(server: str) -> None:
    payloads = [(body, headers) for _, body, headers in _fix_payloads()] * 8
    before = rss_bytes()

    def post(payload: tuple[bytes, dict[str, str]]) -> int:
        return httpx.post(server + URL, content=payload[0], headers=payload[1], timeout=30).status_code

    with ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(post, payloads))
    assert all(400 <= s < 500 for s in statuses), statuses
    assert rss_bytes() - before < 200 * 1024 * 1024
    ok = httpx.post(server + URL, json=v2_body(rows=3, features=IN), timeout=30)
    assert ok.status_code == 200 and ok.json()["outputs"][0]["shape"] == [3, 4]
