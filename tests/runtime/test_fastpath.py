"""The connection fast path: the same replies as the ASGI routes, byte for byte, and uvicorn's connection contract
(keep-alive, HTTP/1.0, pipelining, body limits, disconnects, shutdown)."""

from __future__ import annotations

import contextlib
import json
import logging
import re
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.routing import Match, Route

from modelserve.app import ROUTES
from modelserve.fastpath import FastPathProtocol, ServerProtocol, match_route
from modelserve.testing import serve_in_thread

from .conftest import IN, make_config, v2_body

LIMIT = 64 * 1024
TOKEN = "s3cret-token"


# ---- route matching agrees with Starlette's router ----

INFER_ROUTES = [r for r in ROUTES if isinstance(r, Route) and r.methods and "POST" in r.methods]


def starlette_match(path: str) -> tuple[str, str, str | None] | None:
    for route in INFER_ROUTES:
        match, child = route.matches({"type": "http", "path": path, "method": "POST"})
        if match is Match.FULL:
            params = child["path_params"]
            protocol = "v1" if path.startswith("/v1/") else "v2"
            return protocol, params["name"], params.get("version")
    return None


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/v2/models/mlp/infer", ("v2", "mlp", None)),
        ("/v2/models/mlp/versions/3/infer", ("v2", "mlp", "3")),
        ("/v1/models/mlp:predict", ("v1", "mlp", None)),
        ("/v2/models//infer", None),
        ("/v2/models/a/b/infer", None),
        ("/v2/models/mlp/versions//infer", None),
        ("/v2/models/mlp/ready", None),
        ("/v1/models/a/b:predict", None),
        ("/v1/models/:predict", None),
        ("/v2/models/infer", None),  # prefix and suffix overlap
        ("/v1/models:predict", None),
        ("/v2/models/x/infer", ("v2", "x", None)),
    ],
)
def test_match_route_table(path: str, expected: tuple[str, str, str | None] | None) -> None:
    assert match_route(path.encode()) == expected
    assert starlette_match(path) == expected


segment = st.text(alphabet="ab1-_.:/v", max_size=6)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["v2", "v1", "models", "versions", "infer", "mlp:predict"]) | segment, max_size=6))
def test_match_route_agrees_with_starlette(parts: list[str]) -> None:
    path = "/" + "/".join(parts)
    assert match_route(path.encode()) == starlette_match(path)


# ---- one server of each kind ----


@pytest.fixture(scope="module")
def servers(models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Base URLs: the fast path and the ASGI path, each with and without bearer tokens."""
    tokens = tmp_path_factory.mktemp("auth") / "tokens"
    tokens.write_text(TOKEN + "\n")
    mlp = models["mlp"]
    with (
        serve_in_thread(make_config(mlp, fast_path=True, max_body_bytes=LIMIT)) as (fast, fast_server),
        serve_in_thread(make_config(mlp, fast_path=False, max_body_bytes=LIMIT)) as (asgi, _),
        serve_in_thread(make_config(mlp, fast_path=True, max_body_bytes=LIMIT, auth_tokens_file=tokens)) as (fa, _),
        serve_in_thread(make_config(mlp, fast_path=False, max_body_bytes=LIMIT, auth_tokens_file=tokens)) as (aa, _),
    ):
        assert fast_server.config.http_protocol_class is FastPathProtocol
        yield {"fast": fast, "asgi": asgi, "fast-auth": fa, "asgi-auth": aa}


def address(base: str) -> tuple[str, int]:
    host, port = base.removeprefix("http://").split(":")
    return host, int(port)


def exchange(
    base: str, raw: bytes, responses: int = 1, timeout: float = 10.0
) -> list[tuple[int, dict[str, str], bytes]]:
    """Send raw bytes on one connection and read `responses` complete HTTP responses (by Content-Length)."""
    with socket.create_connection(address(base), timeout=timeout) as sock:
        sock.sendall(raw)
        return read_responses(sock, responses)


def read_responses(sock: socket.socket, count: int) -> list[tuple[int, dict[str, str], bytes]]:
    buf = b""
    out: list[tuple[int, dict[str, str], bytes]] = []
    while len(out) < count:
        while b"\r\n\r\n" not in buf:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"connection closed after {len(out)} responses")
            buf += chunk
        head, _, buf = buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        while len(buf) < length:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("connection closed mid-body")
            buf += chunk
        out.append((status, headers, buf[:length]))
        buf = buf[length:]
    return out


def closed_by_server(sock: socket.socket) -> bool:
    sock.settimeout(5)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def post(path: str, body: bytes, *headers: str, version: str = "1.1") -> bytes:
    lines = [f"POST {path} HTTP/{version}", "Host: test", f"Content-Length: {len(body)}", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def binary_body(rows: int = 1) -> tuple[bytes, int]:
    x = np.linspace(-1, 1, rows * IN, dtype=np.float32).reshape(rows, IN)
    header = json.dumps(
        {
            "inputs": [
                {"name": "input", "shape": [rows, IN], "datatype": "FP32", "parameters": {"binary_data_size": x.nbytes}}
            ],
            "outputs": [{"name": "output", "parameters": {"binary_data": True}}],
        }
    ).encode()
    return header + x.tobytes(), len(header)


def js(payload: object) -> bytes:
    return json.dumps(payload).encode()


BIN, BIN_LEN = binary_body(2)
CASES: list[tuple[str, bytes]] = [
    ("v2 json", post("/v2/models/mlp/infer", js(v2_body(2)))),
    ("v2 json with version", post("/v2/models/mlp/versions/1/infer", js(v2_body()))),
    ("v2 with query string", post("/v2/models/mlp/infer?x=1", js(v2_body()))),
    ("v2 binary", post("/v2/models/mlp/infer", BIN, f"Inference-Header-Content-Length: {BIN_LEN}")),
    ("v2 request id and outputs",
     post("/v2/models/mlp/infer", js({**v2_body(), "id": "r-1", "outputs": [{"name": "output"}]}))),
    ("v1 instances", post("/v1/models/mlp:predict", js({"instances": [[0.25] * IN, [0.5] * IN]}))),
    ("v1 columnar", post("/v1/models/mlp:predict", js({"inputs": [[0.25] * IN]}))),
    ("malformed json", post("/v2/models/mlp/infer", b'{"inputs": [')),
    ("wrong datatype", post("/v2/models/mlp/infer", js({"inputs": [{**v2_body()["inputs"][0], "datatype": "BYTES"}]}))),
    ("wrong shape", post("/v2/models/mlp/infer", js(v2_body(features=IN + 1)))),
    ("unknown model", post("/v2/models/nope/infer", js(v2_body()))),
    ("unknown version", post("/v2/models/mlp/versions/9/infer", js(v2_body()))),
    ("v1 unknown model", post("/v1/models/nope:predict", js({"instances": [[0.0] * IN]}))),
    ("v1 bad instances", post("/v1/models/mlp:predict", js({"instances": "x"}))),
    ("timeout header not a number", post("/v2/models/mlp/infer", js(v2_body()), "modelserve-timeout-ms: soon")),
    ("timeout header negative", post("/v2/models/mlp/infer", js(v2_body()), "modelserve-timeout-ms: -1")),
    ("bad header length", post("/v2/models/mlp/infer", js(v2_body()), "Inference-Header-Content-Length: x")),
    ("empty body", post("/v2/models/mlp/infer", b"")),
    ("chunked body", b"POST /v2/models/mlp/infer HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
     + b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in (js(v2_body())[:40], js(v2_body())[40:])) + b"0\r\n\r\n"),
]  # fmt: skip


def comparable(response: tuple[int, dict[str, str], bytes]) -> tuple[int, dict[str, str], bytes]:
    status, headers, body = response
    return status, {k: v for k, v in headers.items() if k != "date"}, body


@pytest.mark.parametrize("raw", [raw for _, raw in CASES], ids=[name for name, _ in CASES])
def test_fast_path_replies_as_the_asgi_routes(servers: dict[str, str], raw: bytes) -> None:
    fast = comparable(exchange(servers["fast"], raw)[0])
    asgi = comparable(exchange(servers["asgi"], raw)[0])
    assert fast == asgi
    assert fast[1]["content-type"] in ("application/json", "application/octet-stream")
    if fast[0] >= 400:
        assert "error" in json.loads(fast[2])


def test_binary_reply_decodes(servers: dict[str, str]) -> None:
    status, headers, body = exchange(servers["fast"], CASES[3][1])[0]
    assert status == 200
    json_length = int(headers["inference-header-content-length"])
    meta = json.loads(body[:json_length])
    assert meta["outputs"][0]["shape"] == [2, 4] and meta["outputs"][0]["parameters"]["binary_data_size"] == 32
    assert np.frombuffer(body[json_length:], dtype=np.float32).shape == (8,)


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ((), 401),
        (("Authorization: Basic abc",), 401),
        (("Authorization: Bearer wrong",), 403),
        ((f"Authorization: Bearer {TOKEN}",), 200),
    ],
)  # fmt: skip
def test_bearer_auth_same_on_both_paths(servers: dict[str, str], headers: tuple[str, ...], status: int) -> None:
    raw = post("/v2/models/mlp/infer", js(v2_body()), *headers)
    fast = comparable(exchange(servers["fast-auth"], raw)[0])
    asgi = comparable(exchange(servers["asgi-auth"], raw)[0])
    assert fast == asgi
    assert fast[0] == status
    if status != 200:
        assert fast[1]["www-authenticate"].startswith('Bearer realm="modelserve"')


def test_keep_alive_serves_many_requests_on_one_connection(servers: dict[str, str]) -> None:
    raw = post("/v2/models/mlp/infer", js(v2_body()))
    with socket.create_connection(address(servers["fast"]), timeout=10) as sock:
        for _ in range(20):
            sock.sendall(raw)
            [(status, headers, _)] = read_responses(sock, 1)
            assert status == 200 and "connection" not in headers


def test_pipelined_requests_are_answered_in_order(servers: dict[str, str]) -> None:
    """Three requests in one write: the first takes the fast path, the others queue behind it (ASGI), in order."""
    raw = (
        post("/v2/models/mlp/infer", js(v2_body(1)))
        + post("/v2/models/nope/infer", js(v2_body()))
        + post("/v1/models/mlp:predict", js({"instances": [[0.0] * IN] * 3}))
    )
    responses = exchange(servers["fast"], raw, responses=3)
    assert [r[0] for r in responses] == [200, 404, 200]
    assert json.loads(responses[0][2])["outputs"][0]["shape"] == [1, 4]
    assert len(json.loads(responses[2][2])["predictions"]) == 3


def test_http_10_gets_connection_close(servers: dict[str, str]) -> None:
    with socket.create_connection(address(servers["fast"]), timeout=10) as sock:
        sock.sendall(post("/v2/models/mlp/infer", js(v2_body()), version="1.0"))
        [(status, headers, _)] = read_responses(sock, 1)
        assert status == 200 and headers["connection"] == "close"
        assert closed_by_server(sock)


def test_connection_close_header_is_honoured(servers: dict[str, str]) -> None:
    with socket.create_connection(address(servers["fast"]), timeout=10) as sock:
        sock.sendall(post("/v2/models/mlp/infer", js(v2_body()), "Connection: close"))
        [(status, headers, _)] = read_responses(sock, 1)
        assert status == 200 and headers["connection"] == "close"
        assert closed_by_server(sock)


def test_declared_oversize_body_is_413_before_it_is_sent(servers: dict[str, str]) -> None:
    with socket.create_connection(address(servers["fast"]), timeout=10) as sock:
        sock.sendall(f"POST /v2/models/mlp/infer HTTP/1.1\r\nHost: t\r\nContent-Length: {LIMIT + 1}\r\n\r\n".encode())
        [(status, headers, body)] = read_responses(sock, 1)
        assert status == 413 and headers["connection"] == "close"
        assert str(LIMIT) in json.loads(body)["error"]
        assert closed_by_server(sock)


def test_chunked_body_over_the_limit_is_413(servers: dict[str, str]) -> None:
    chunk = b"x" * 8192
    with socket.create_connection(address(servers["fast"]), timeout=10) as sock:
        sock.sendall(b"POST /v2/models/mlp/infer HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
        sent = 0
        try:
            while sent <= LIMIT:
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sent += len(chunk)
        except OSError:
            pass  # the server may close while we still send
        [(status, _, body)] = read_responses(sock, 1)
        assert status == 413 and "limit" in json.loads(body)["error"]


def metric(base: str, name: str, labels: str) -> float:
    status, _, body = exchange(base, b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n")[0]
    assert status == 200
    found = re.search(rf"^{re.escape(name)}\{{{labels}\}} (\S+)$", body.decode(), re.M)
    assert found, f"{name}{{{labels}}} not exported"
    return float(found.group(1))


def test_metrics_count_fast_path_requests(servers: dict[str, str]) -> None:
    base = servers["fast"]
    ok = 'model="mlp",outcome="success",protocol="v2",version="1"'
    bad = 'model="mlp",outcome="client_error",protocol="v2",version="1"'
    before_ok, before_bad = (
        metric(base, "modelserve_requests_total", ok),
        metric(base, "modelserve_requests_total", bad),
    )
    for _ in range(5):
        exchange(base, post("/v2/models/mlp/infer", js(v2_body())))
    exchange(base, post("/v2/models/mlp/infer", b"not json"))
    assert metric(base, "modelserve_requests_total", ok) == before_ok + 5
    assert metric(base, "modelserve_requests_total", bad) == before_bad + 1


def test_fast_path_counts_probes_apart(servers: dict[str, str]) -> None:
    base = servers["fast"]
    ok = 'model="mlp",outcome="success",protocol="v2",version="1"'
    before = metric(base, "modelserve_requests_total", ok), metric(base, "modelserve_probe_requests_total", ok)
    for _ in range(3):
        [(status, _, _)] = exchange(base, post("/v2/models/mlp/infer", js(v2_body()), "Modeldeploy-Probe: golden"))
        assert status == 200
    exchange(base, post("/v2/models/mlp/infer", js(v2_body())))
    after = metric(base, "modelserve_requests_total", ok), metric(base, "modelserve_probe_requests_total", ok)
    assert (after[0] - before[0], after[1] - before[1]) == (1, 3)


def test_client_gone_mid_body_leaves_no_request_in_flight(servers: dict[str, str]) -> None:
    base = servers["fast"]
    for _ in range(3):
        with socket.create_connection(address(base), timeout=10) as sock:
            sock.sendall(b'POST /v2/models/mlp/infer HTTP/1.1\r\nHost: t\r\nContent-Length: 5000\r\n\r\n{"inp')
    deadline = time.monotonic() + 5
    while metric(base, "modelserve_inflight_requests", 'model="mlp"') != 0:
        assert time.monotonic() < deadline, "a request stayed in flight"
        time.sleep(0.05)
    # The batcher is not left waiting for the bodies that never came: a lone request is answered at once.
    started = time.perf_counter()
    assert exchange(base, post("/v2/models/mlp/infer", js(v2_body())))[0][0] == 200
    assert time.perf_counter() - started < 1.0


def test_expect_100_continue_and_encoded_paths_go_through_asgi(servers: dict[str, str]) -> None:
    body = js(v2_body())
    with socket.create_connection(address(servers["fast"]), timeout=10) as sock:
        head = post("/v2/models/mlp/infer", body, "Expect: 100-continue")[: -len(body)]
        sock.sendall(head)
        assert sock.recv(64).startswith(b"HTTP/1.1 100 Continue")
        sock.sendall(body)
        [(status, _, _)] = read_responses(sock, 1)
        assert status == 200
    [(status, _, _)] = exchange(servers["fast"], post("/v2/models/ml%70/infer", body))
    assert status == 200  # /v2/models/mlp/infer, decoded by the ASGI path


def test_fast_path_switch_picks_the_protocol(models: dict[str, Path]) -> None:
    from modelserve.cli import http_protocol

    assert http_protocol(make_config(models["mlp"])) is FastPathProtocol
    assert http_protocol(make_config(models["mlp"], fast_path=False)) is ServerProtocol


@pytest.mark.parametrize("fast_path", [True, False])
def test_idle_connections_close_after_the_keep_alive_timeout(models: dict[str, Path], fast_path: bool) -> None:
    """One keep-alive timer per idle period (fastpath.py): a connection in use for longer than the timeout stays
    open, an idle one is closed once the timeout has passed since its last response, on either path."""
    keep_alive = 1
    with serve_in_thread(make_config(models["mlp"], fast_path=fast_path), keep_alive_s=keep_alive) as (base, _):
        infer = post("/v2/models/mlp/infer", js(v2_body()))
        ready = b"GET /v2/health/ready HTTP/1.1\r\nHost: t\r\n\r\n"
        with socket.create_connection(address(base), timeout=10) as sock:
            started = time.monotonic()
            for i in range(8):  # 8 x 1/3 s: well past one timeout, never idle for a whole one
                sock.sendall(infer if i % 2 else ready)
                [(status, _, _)] = read_responses(sock, 1)
                assert status == 200
                time.sleep(keep_alive / 3)
            assert time.monotonic() - started > 2 * keep_alive
            last = time.monotonic()
            assert closed_by_server(sock)
            idle = time.monotonic() - last
            assert keep_alive * 0.5 <= idle < keep_alive + 1.0  # closed after about the timeout, not at once


@pytest.mark.parametrize("path", ["fast", "asgi"])
def test_an_endless_request_head_is_refused_with_431(servers: dict[str, str], path: str) -> None:
    """httptools sets no limit on a request line or header section: one connection sending header bytes forever
    would grow the server without bound. The server answers 431 (JSON) once a head passes its limit, and closes,
    with or without the fast path."""
    from modelserve.fastpath import MAX_HEAD_BYTES

    with socket.create_connection(address(servers[path]), timeout=10) as sock:
        sock.sendall(b"POST /v2/models/mlp/infer HTTP/1.1\r\nHost: t\r\nX-Big: ")
        sent, block = 0, b"a" * 65536
        with contextlib.suppress(OSError):  # the server may close before everything is sent
            while sent < 4 * MAX_HEAD_BYTES:
                sock.sendall(block)
                sent += len(block)
        [(status, headers, body)] = read_responses(sock, 1)
        assert status == 431 and headers["content-type"] == "application/json"
        assert "error" in json.loads(body) and headers["connection"] == "close"
    # A head just within the limit, and a long one pipelined behind a body in the same write, are still served.
    near = "X-Pad: " + "p" * (MAX_HEAD_BYTES // 2)
    [(status, _, _)] = exchange(servers[path], post("/v2/models/mlp/infer", js(v2_body()), near))
    assert status == 200
    raw = post("/v2/models/mlp/infer", js(v2_body(rows=512))) + post("/v2/models/mlp/infer", js(v2_body()), near)
    assert [s for s, _, _ in exchange(servers[path], raw, 2)] == [200, 200]


@pytest.mark.parametrize("fast_path", [True, False], ids=["fast", "asgi"])
def test_connections_that_never_complete_a_request_head_are_closed(models: dict[str, Path], fast_path: bool) -> None:
    """Slowloris: a connection that sends nothing, or a request head a byte at a time, is closed once it has been
    idle (no request in progress) for the keep-alive timeout; a slow body, once its head is in, is not. With or
    without the fast path."""
    keep_alive = 1
    config = make_config(models["mlp"], fast_path=fast_path)
    with serve_in_thread(config, keep_alive_s=keep_alive) as (base, _):
        silent = socket.create_connection(address(base), timeout=10)
        drip = socket.create_connection(address(base), timeout=10)
        slow_body = socket.create_connection(address(base), timeout=10)
        body = js(v2_body())
        slow_body.sendall(post("/v2/models/mlp/infer", body)[:-10])
        started = time.monotonic()
        head = b"GET /v2/health/ready HTTP/1.1\r\nHost: t\r\nX-Slow: " + b"s" * 100
        with contextlib.suppress(OSError):
            for byte in head:
                drip.sendall(bytes([byte]))
                time.sleep(0.1)
                if time.monotonic() - started > 4 * keep_alive:
                    break
        assert closed_by_server(silent) and closed_by_server(drip)
        assert time.monotonic() - started < 4 * keep_alive
        slow_body.sendall(body[-10:])
        [(status, _, _)] = read_responses(slow_body, 1)
        assert status == 200
        for sock in (silent, drip, slow_body):
            sock.close()


@pytest.mark.parametrize("path", ["fast", "asgi"])
def test_client_gone_mid_body_is_no_server_error(servers: dict[str, str], path: str) -> None:
    """A client that leaves mid-body (here pipelined behind another request, so that the ASGI cycle reads the body
    on either path) is nobody's error: no 'Exception in ASGI application' traceback, nothing left in flight."""
    errors: list[logging.LogRecord] = []
    handler = logging.Handler(logging.ERROR)
    handler.emit = errors.append  # type: ignore[method-assign]
    logger = logging.getLogger("uvicorn.error")
    logger.addHandler(handler)
    try:
        base = servers[path]
        for _ in range(5):
            with socket.create_connection(address(base), timeout=10) as sock:
                partial = post("/v2/models/mlp/infer", js(v2_body()))
                sock.sendall(post("/v2/models/mlp/infer", js(v2_body(rows=256))) + partial[:-10])
                time.sleep(0.05)
        deadline = time.monotonic() + 5
        while metric(base, "modelserve_inflight_requests", 'model="mlp"') != 0:
            assert time.monotonic() < deadline, "a request stayed in flight"
            time.sleep(0.05)
        time.sleep(0.2)
    finally:
        logger.removeHandler(handler)
    assert not errors, [r.getMessage() for r in errors]


@pytest.mark.parametrize("fast_path", [True, False], ids=["fast", "asgi"])
def test_a_slow_body_does_not_make_every_batch_wait_the_whole_delay(models: dict[str, Path], fast_path: bool) -> None:
    """A client that drips a body in keeps a request "arriving". Batches wait for such a request only while it
    is recent: after two queue delays, a lone request is answered at once again, not after the whole delay."""
    delay_ms = 400.0
    config = make_config(models["mlp"], fast_path=fast_path, max_queue_delay_ms=delay_ms)
    with serve_in_thread(config) as (base, _):
        body = js(v2_body())
        slow = socket.create_connection(address(base), timeout=10)
        slow.sendall(post("/v2/models/mlp/infer", body)[:-10])
        time.sleep(2.5 * delay_ms / 1000)
        with socket.create_connection(address(base), timeout=10) as sock:
            for _ in range(3):
                started = time.monotonic()
                sock.sendall(post("/v2/models/mlp/infer", body))
                [(status, _, _)] = read_responses(sock, 1)
                assert status == 200
                assert time.monotonic() - started < delay_ms / 1000 / 2
        slow.sendall(body[-10:])
        [(status, _, _)] = read_responses(slow, 1)
        assert status == 200
        slow.close()


@pytest.mark.parametrize("path", ["fast", "asgi"])
@pytest.mark.parametrize(
    "raw",
    [
        b"NOT A REQUEST\r\n\r\n",
        b"GET / HTTP/9.9\r\n\r\n",
        b"POST /v2/models/mlp/infer HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\nhello",
        b"POST /v2/models/mlp/infer HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"GET /v2/health/ready HTTP/1.1\r\nBad Header\r\n\r\n",
    ],
    ids=["garbage", "version", "two-lengths", "bad-chunk", "bad-header"],
)
def test_malformed_http_gets_a_json_400_and_close(servers: dict[str, str], path: str, raw: bytes) -> None:
    """Malformed HTTP is a client mistake like any other: a JSON 400 body (not uvicorn's text/plain), and the
    connection closes because the stream cannot be parsed further."""
    [(status, headers, body)] = exchange(servers[path], raw)
    assert status == 400
    assert headers["content-type"] == "application/json" and headers["connection"] == "close"
    assert json.loads(body)["error"]


@pytest.mark.parametrize("fast_path", [True, False], ids=["fast", "asgi"])
def test_a_body_that_stops_arriving_gets_408_and_close(models: dict[str, Path], fast_path: bool) -> None:
    """A request whose head is in and whose body stops arriving for `--body-timeout-seconds` gets a JSON 408 and
    its connection closes; a slow body that keeps arriving is served, however long it takes in all."""
    timeout = 0.6
    config = make_config(models["mlp"], fast_path=fast_path, body_timeout_seconds=timeout)
    with serve_in_thread(config, keep_alive_s=1) as (base, _):
        labels = 'model="mlp",outcome="client_error",protocol="v2",version="1"'
        before = metric(base, "modelserve_requests_total", labels)
        body = js(v2_body())
        with socket.create_connection(address(base), timeout=10) as stalled:
            stalled.sendall(post("/v2/models/mlp/infer", body)[:-10])
            started = time.monotonic()
            [(status, headers, reply)] = read_responses(stalled, 1)
            waited = time.monotonic() - started
            assert status == 408 and headers["content-type"] == "application/json"
            assert headers["connection"] == "close" and "request body" in json.loads(reply)["error"]
            assert timeout * 0.8 <= waited < timeout + 1.0
            assert closed_by_server(stalled)
        assert metric(base, "modelserve_requests_total", labels) == before + 1
        with socket.create_connection(address(base), timeout=10) as steady:
            raw = post("/v2/models/mlp/infer", body)
            steady.sendall(raw[: len(raw) - 8])
            started = time.monotonic()
            for byte in raw[len(raw) - 8 :]:  # 8 x 0.25 s: past 3 timeouts in all, never one without a byte
                time.sleep(timeout * 0.4)
                steady.sendall(bytes([byte]))
            [(status, _, _)] = read_responses(steady, 1)
            assert status == 200 and time.monotonic() - started > 2 * timeout
    # Without a limit (0) a stalled body is left alone.
    unlimited = make_config(models["mlp"], fast_path=fast_path, body_timeout_seconds=0.0)
    with serve_in_thread(unlimited, keep_alive_s=1) as (base, _), socket.create_connection(address(base)) as sock:
        sock.sendall(post("/v2/models/mlp/infer", body)[:-10])
        time.sleep(2.0)
        sock.sendall(body[-10:])
        [(status, _, _)] = read_responses(sock, 1)
        assert status == 200


@pytest.mark.parametrize("fast_path", [True, False], ids=["fast", "asgi"])
def test_a_body_the_server_stopped_reading_is_not_timed_out(models: dict[str, Path], fast_path: bool) -> None:
    """A request pipelined behind a slow one is not read until the first reply is out (uvicorn pauses reading):
    the client did not stall, so the wait does not count against its body timeout."""
    from .test_app import SlowEngine

    config = make_config(models["mlp"], fast_path=fast_path, body_timeout_seconds=0.4)
    with serve_in_thread(config, loader=lambda c: SlowEngine(delay=1.5), keep_alive_s=1) as (base, _):
        first = post("/v2/models/mlp/infer", js(v2_body()))
        second = post("/v2/models/mlp/infer", js(v2_body(rows=16384)))  # 2 MB: more than one read
        with socket.create_connection(address(base), timeout=20) as sock, ThreadPoolExecutor(1) as pool:
            sending = pool.submit(sock.sendall, first + second)
            statuses = [status for status, _, _ in read_responses(sock, 2)]
            sending.result()
        assert statuses == [200, 200]


@pytest.mark.parametrize("fast_path", [True, False], ids=["fast", "asgi"])
def test_inference_past_the_connection_limit_gets_503_and_close(models: dict[str, Path], fast_path: bool) -> None:
    """Past `--max-connections` open connections an inference request gets a JSON 503 with Retry-After, counted as
    overloaded, and its connection closes; health and metrics requests are still answered (a refused kubelet probe
    would take the pod out of service); once a connection closes, inference is served again."""
    limit = 3
    config = make_config(models["mlp"], fast_path=fast_path, max_connections=limit)
    infer = post("/v2/models/mlp/infer", js(v2_body()))
    overloaded = 'model="mlp",outcome="overloaded",protocol="v2",version="1"'
    with serve_in_thread(config) as (base, _):
        before = metric(base, "modelserve_requests_total", overloaded)
        held = [socket.create_connection(address(base), timeout=10) for _ in range(limit)]
        for sock in held:  # accepted and counted, and served while at the limit
            sock.sendall(infer)
            assert [s for s, _, _ in read_responses(sock, 1)] == [200]
        with socket.create_connection(address(base), timeout=10) as extra:
            extra.sendall(infer)
            [(status, headers, body)] = read_responses(extra, 1)
            assert status == 503 and headers["retry-after"] == "1" and headers["connection"] == "close"
            assert headers["content-type"] == "application/json" and str(limit) in json.loads(body)["error"]
            assert closed_by_server(extra)
        for path in ("/v2/health/ready", "/v2/health/live", "/v2/models/mlp"):
            with socket.create_connection(address(base), timeout=10) as probe:
                probe.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
                assert [s for s, _, _ in read_responses(probe, 1)] == [200], path
        with socket.create_connection(address(base), timeout=10) as extra:  # metrics: opens a connection too
            extra.sendall(b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n")
            [(status, _, text)] = read_responses(extra, 1)
        assert status == 200
        counted = re.search(rf"^modelserve_requests_total\{{{overloaded}\}} (\S+)$", text.decode(), re.M)
        assert counted and float(counted.group(1)) == before + 1
        held.pop().close()
        deadline = time.monotonic() + 5
        while True:  # the server sees the close soon, not at once
            status = exchange(base, infer)[0][0]
            if status == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert status == 200
        for sock in held:
            sock.close()
