from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from modelserve import testing
from modelserve.app import create_app
from modelserve.config import ServeConfig
from modelserve.errors import ModelLoadError
from modelserve.inference import PROBE_HEADER, TIMEOUT_HEADER
from modelserve.signature import Array, Signature, TensorSpec

from .conftest import IN, ClientFactory, make_config, metric, v2_body

SIG = Signature((TensorSpec("input", "FP32", (-1, IN)),), (TensorSpec("output", "FP32", (-1, IN)),))


class SlowEngine:
    """A fake engine whose forward takes `delay` seconds (released by `gate` when given)."""

    def __init__(self, delay: float = 0.0, gate: threading.Event | None = None) -> None:
        self.signature = SIG
        self.device = "cpu"
        self.healthy = True
        self.load_seconds = 0.0
        self.delay = delay
        self.gate = gate
        self.started = threading.Event()  # set by the first forward

    def predict(self, inputs: Sequence[Array]) -> list[Array]:
        self.started.set()
        if self.gate is not None:
            self.gate.wait(5)
        time.sleep(self.delay)
        return [inputs[0]]

    def warm_up(self, batch_sizes: Sequence[int] = (1,)) -> None:
        return None

    def check_device(self) -> bool:
        return self.healthy

    def memory_stats(self) -> dict[str, int]:
        return {"allocated": 42}


def test_metrics_follow_the_documented_names(models: dict[str, Path], make_client: ClientFactory) -> None:
    client = make_client(models["mlp"], device="cpu")  # no GPU series on the CPU (test_cuda.py checks them on one)
    assert client.post("/v2/models/mlp/infer", json=v2_body()).status_code == 200
    assert client.post("/v1/models/mlp:predict", json={"instances": [[0.0] * IN]}).status_code == 200
    assert client.post("/v2/models/mlp/infer", content=b"{").status_code == 400
    text = client.get("/metrics").text
    labels = 'model="mlp",outcome="{}",protocol="{}",version="1"'
    assert metric(text, "modelserve_requests_total{" + labels.format("success", "v2")) == 1
    assert metric(text, "modelserve_requests_total{" + labels.format("success", "v1")) == 1
    assert metric(text, "modelserve_requests_total{" + labels.format("client_error", "v2")) == 1
    assert metric(text, 'modelserve_request_duration_seconds_count{model="mlp",version="1"}') == 3
    for stage in ("decode", "queue", "inference", "encode"):
        assert metric(text, f'modelserve_stage_duration_seconds_count{{model="mlp",stage="{stage}",version="1"}}') == 2
    assert metric(text, 'modelserve_batch_size_count{model="mlp"}') >= 1
    assert metric(text, 'modelserve_queue_depth{model="mlp"}') == 0
    assert metric(text, 'modelserve_inflight_requests{model="mlp"}') == 0
    assert metric(text, 'modelserve_model_load_seconds{model="mlp",version="1"}') > 0
    assert "modelserve_gpu_memory_bytes" not in text.split("# TYPE modelserve_gpu_memory_bytes gauge")[-1]


def test_probe_requests_are_counted_apart_from_client_traffic(
    models: dict[str, Path], make_client: ClientFactory
) -> None:
    """The operator's golden requests carry Modeldeploy-Probe: the canary analysis must judge clients' traffic only,
    so probes are in their own counter and not in the request count or latency (any answer, right or refused)."""
    client = make_client(models["mlp"], device="cpu")
    probe = {"Modeldeploy-Probe": "golden"}
    assert client.post("/v2/models/mlp/infer", json=v2_body(), headers=probe).status_code == 200
    assert client.post("/v2/models/mlp/infer", json=v2_body(), headers=probe).status_code == 200
    assert client.post("/v2/models/mlp/infer", content=b"{", headers=probe).status_code == 400
    assert client.post("/v1/models/mlp:predict", json={"instances": [[0.0] * IN]}, headers=probe).status_code == 200
    assert client.post("/v2/models/mlp/infer", json=v2_body()).status_code == 200
    text = client.get("/metrics").text
    labels = 'model="mlp",outcome="{}",protocol="{}",version="1"'
    assert metric(text, "modelserve_probe_requests_total{" + labels.format("success", "v2")) == 2
    assert metric(text, "modelserve_probe_requests_total{" + labels.format("client_error", "v2")) == 1
    assert metric(text, "modelserve_probe_requests_total{" + labels.format("success", "v1")) == 1
    assert metric(text, "modelserve_requests_total{" + labels.format("success", "v2")) == 1
    assert metric(text, "modelserve_requests_total{" + labels.format("client_error", "v2")) == 0
    assert metric(text, "modelserve_requests_total{" + labels.format("success", "v1")) == 0
    assert metric(text, 'modelserve_request_duration_seconds_count{model="mlp",version="1"}') == 1


def test_gpu_memory_is_exported_when_the_engine_reports_it(make_client: ClientFactory, tmp_path: Path) -> None:
    class GpuEngine(SlowEngine):
        device = "cuda:0"

    engine = GpuEngine()
    engine.device = "cuda:0"
    client = make_client(tmp_path, loader=lambda c: engine)
    assert metric(client.get("/metrics").text, 'modelserve_gpu_memory_bytes{device="cuda:0",kind="allocated"}') == 42


def test_a_failing_forward_is_a_500_counted_as_server_error(
    models: dict[str, Path], make_client: ClientFactory
) -> None:
    client = make_client(models["failing"])
    body = v2_body()
    body["inputs"][0]["data"][0] = 1000.0
    r = client.post("/v2/models/mlp/infer", json=body)
    assert r.status_code == 500 and "poisoned input" in r.json()["error"]
    assert client.post("/v2/models/mlp/infer", json=v2_body()).status_code == 200
    text = client.get("/metrics").text
    assert metric(text, 'modelserve_requests_total{model="mlp",outcome="server_error",protocol="v2"') == 1
    assert metric(text, 'modelserve_requests_total{model="mlp",outcome="success",protocol="v2"') == 1
    assert client.get("/v2/health/ready").status_code == 200


def test_full_queue_is_503_with_retry_after(make_client: ClientFactory, tmp_path: Path) -> None:
    gate = threading.Event()
    engine = SlowEngine(gate=gate)
    client = make_client(tmp_path, loader=lambda c: engine, max_queue_size=1, max_batch_size=1)
    depth = 'modelserve_queue_depth{model="mlp"}'
    with ThreadPoolExecutor(4) as pool:
        # One request at a time, so that which one is refused does not depend on thread timing: the first runs
        # (held by the gate), the second waits (the queue is full), the third is refused.
        pending = [pool.submit(client.post, "/v2/models/mlp/infer", json=v2_body())]
        assert engine.started.wait(5)
        pending.append(pool.submit(client.post, "/v2/models/mlp/infer", json=v2_body()))
        deadline = time.monotonic() + 5
        while metric(client.get("/metrics").text, depth) < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert metric(client.get("/metrics").text, depth) == 1
        pending.append(pool.submit(client.post, "/v2/models/mlp/infer", json=v2_body()))
        third = pending[-1].result(timeout=5)  # refused at once, while the gate still holds the first
        assert not gate.is_set() and third.status_code == 503
        gate.set()
        statuses = [f.result().status_code for f in pending]
    assert statuses == [200, 200, 503]
    rejected = next(f.result() for f in pending if f.result().status_code == 503)
    assert rejected.headers["retry-after"] == "1" and "queue full" in rejected.json()["error"]
    text = client.get("/metrics").text
    assert metric(text, 'modelserve_requests_total{model="mlp",outcome="overloaded",protocol="v2"') == 1


def test_deadline_from_header_parameter_or_default_is_504(make_client: ClientFactory, tmp_path: Path) -> None:
    client = make_client(tmp_path, loader=lambda c: SlowEngine(delay=0.3), request_timeout_ms=5000)
    r = client.post("/v2/models/mlp/infer", json=v2_body(), headers={"Modelserve-Timeout-Ms": "50"})
    assert r.status_code == 504 and "deadline exceeded" in r.json()["error"]
    body = v2_body()
    body["parameters"] = {"timeout_ms": 50}
    assert client.post("/v2/models/mlp/infer", json=body).status_code == 504
    assert client.post("/v2/models/mlp/infer", json=v2_body()).status_code == 200
    bad = client.post("/v2/models/mlp/infer", json=v2_body(), headers={"Modelserve-Timeout-Ms": "soon"})
    assert bad.status_code == 400
    text = client.get("/metrics").text
    assert metric(text, 'modelserve_requests_total{model="mlp",outcome="timeout",protocol="v2"') == 2


def test_health_stays_responsive_while_the_model_is_busy(make_client: ClientFactory, tmp_path: Path) -> None:
    gate = threading.Event()
    client = make_client(tmp_path, loader=lambda c: SlowEngine(gate=gate))
    with ThreadPoolExecutor(2) as pool:
        busy = pool.submit(client.post, "/v2/models/mlp/infer", json=v2_body())
        time.sleep(0.05)
        started = time.perf_counter()
        assert client.get("/v2/health/ready").status_code == 200
        assert 'modelserve_inflight_requests{model="mlp"} 1.0' in client.get("/metrics").text
        assert time.perf_counter() - started < 0.5
        gate.set()
        assert busy.result().status_code == 200


def test_not_ready_until_loaded_and_load_failure_keeps_it_unready(make_client: ClientFactory, tmp_path: Path) -> None:
    gate = threading.Event()

    def slow_loader(config: ServeConfig) -> SlowEngine:
        gate.wait(5)
        return SlowEngine()

    client = make_client(tmp_path, loader=slow_loader, ready=False)
    assert client.get("/v2/health/live").status_code == 200
    assert client.get("/v2/health/ready").status_code == 503
    r = client.post("/v2/models/mlp/infer", json=v2_body())
    assert r.status_code == 503 and "not ready" in r.json()["error"]
    gate.set()

    def broken(config: ServeConfig) -> SlowEngine:
        raise ModelLoadError("no model file found")

    failed = make_client(tmp_path, loader=broken, ready=False)
    time.sleep(0.1)
    assert failed.get("/v2/health/ready").json() == {"ready": False, "phase": "failed"}
    assert "no model file found" in failed.get("/v2/models/mlp").json()["error"]


def test_device_failure_fails_readiness_and_liveness(make_client: ClientFactory, tmp_path: Path) -> None:
    engine = SlowEngine()
    engine.device = "cuda:0"
    client = make_client(tmp_path, loader=lambda c: engine)
    assert client.get("/v2/health/live").json() == {"live": True}
    engine.healthy = False
    assert client.get("/v2/health/ready").status_code == 503
    assert client.get("/v2/models/mlp/ready").status_code == 503
    live = client.get("/v2/health/live")
    assert live.status_code == 503
    assert live.json() == {"live": False, "reason": "device cuda:0 failed; the process must restart"}


def test_a_model_error_on_the_cpu_is_only_that_request_s_error(make_client: ClientFactory, tmp_path: Path) -> None:
    """The lookup model raises for an index past its table: a 500 for that request, nothing more (on
    CUDA the same input is a device fault: test_cuda.py)."""
    testing.build_lookup(tmp_path / "lookup")
    client = make_client(tmp_path / "lookup", name="lookup", device="cpu")
    body = {"inputs": [{"name": "index", "datatype": "INT64", "shape": [1, 1], "data": [1000]}]}
    r = client.post("/v2/models/lookup/infer", json=body)
    message = r.json()["error"]
    assert r.status_code == 500 and message.endswith(
        "RuntimeError: index 1000 is out of bounds for dimension 0 with size 8 (traceback in the server log)"
    ), message
    body["inputs"][0]["data"] = [5]
    assert client.post("/v2/models/lookup/infer", json=body).json()["outputs"][0]["data"] == [5.0]
    assert client.get("/v2/health/ready").status_code == 200 and client.get("/v2/health/live").status_code == 200


def test_openapi_is_served(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    assert doc["openapi"].startswith("3.") and "/v2/models/{name}/infer" in doc["paths"]
    for path in ("/v2/models/{name}/infer", "/v2/models/{name}/versions/{version}/infer", "/v1/models/{name}:predict"):
        headers = {p["name"].lower() for p in doc["paths"][path]["post"]["parameters"] if p["in"] == "header"}
        assert headers == {TIMEOUT_HEADER, PROBE_HEADER}, path  # the server's own request headers, documented


def test_identical_numbers_batched_or_alone(make_client: ClientFactory, models: dict[str, Path]) -> None:
    client = make_client(models["mlp"], max_batch_size=8, max_queue_delay_ms=20)
    xs = [np.random.default_rng(i).standard_normal((1, IN)).astype(np.float32) for i in range(6)]
    alone = [client.post("/v2/models/mlp/infer", json=v2_body_of(x)).json()["outputs"][0]["data"] for x in xs]
    with ThreadPoolExecutor(6) as pool:
        together = list(pool.map(lambda x: client.post("/v2/models/mlp/infer", json=v2_body_of(x)), xs))
    for a, t in zip(alone, together, strict=True):
        np.testing.assert_allclose(a, t.json()["outputs"][0]["data"], rtol=1e-5, atol=1e-6)


def v2_body_of(x: Array) -> dict[str, object]:
    return {"inputs": [{"name": "input", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}]}


# ---- fuzzing the whole HTTP surface against the OpenAPI description ----


@pytest.fixture(scope="module")
def fuzz_app(models: dict[str, Path]) -> object:
    app = create_app(make_config(models["mlp"], max_body_bytes=100_000))
    with TestClient(app) as warm:  # load once; the app keeps its state for schemathesis' own client
        deadline = time.monotonic() + 30
        while warm.get("/v2/health/ready").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.01)
        yield app


@pytest.fixture(scope="module")
def fuzz_operations(fuzz_app: object) -> list[Any]:
    schema = schemathesis.openapi.from_asgi("/openapi.json", fuzz_app)
    return [result.ok() for result in schema.get_all_operations()]


def test_fuzz_never_a_server_error(fuzz_operations: list[Any]) -> None:
    """Random requests from the OpenAPI description: never a 5xx (503 only while not ready), always JSON errors."""

    @given(st.data())
    @settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def run(data: st.DataObject) -> None:
        operation = data.draw(st.sampled_from(fuzz_operations))
        case = data.draw(operation.as_strategy())
        if case.path_parameters and data.draw(st.booleans()):
            case.path_parameters["name"] = "mlp"  # reach the model often, not only 404s
            if "version" in case.path_parameters:
                case.path_parameters["version"] = "1"
        response = case.call()
        assert response.status_code < 500, response.text
        if response.status_code >= 400:
            assert isinstance(response.json()["error"], str)

    run()
