"""The metrics' exposition is the one `prometheus_client`'s own metric objects give for the same updates."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest

from modelserve.metrics import (
    _BATCH_BUCKETS,
    _LATENCY_BUCKETS,
    _STAGE_BUCKETS,
    OUTCOMES,
    PROTOCOLS,
    STAGES,
    Metrics,
    outcome_of,
)

disable_created_metrics()  # type: ignore[no-untyped-call]  # the server exposes no *_created series


class Reference:
    """The same metrics built from prometheus_client's Counter, Gauge and Histogram."""

    def __init__(self, model: str, version: str) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "modelserve_requests", "Inference requests by model, version, protocol and outcome",
            ["model", "version", "protocol", "outcome"], registry=r,
        )  # fmt: skip
        self.probes = Counter(
            "modelserve_probe_requests",
            "Inference requests marked as probes (header Modeldeploy-Probe: the operator's golden requests), by "
            "model, version, protocol and outcome; not in modelserve_requests_total or the request latency",
            ["model", "version", "protocol", "outcome"], registry=r,
        )  # fmt: skip
        self.latency = Histogram(
            "modelserve_request_duration_seconds", "End-to-end inference request latency in seconds",
            ["model", "version"], buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.stages = Histogram(
            "modelserve_stage_duration_seconds",
            "Latency of one stage of an inference request (decode, queue, inference, encode) in seconds",
            ["model", "version", "stage"], buckets=_STAGE_BUCKETS, registry=r,
        )  # fmt: skip
        self.batch = Histogram(
            "modelserve_batch_size", "Rows per batch run by the model", ["model"], buckets=_BATCH_BUCKETS, registry=r
        )
        self.depth = Gauge("modelserve_queue_depth", "Requests waiting for the inference thread", ["model"], registry=r)
        self.inflight = Gauge("modelserve_inflight_requests", "Inference requests being handled", ["model"], registry=r)
        self.load = Gauge(
            "modelserve_model_load_seconds", "Seconds it took to load and warm up the model", ["model", "version"],
            registry=r,
        )  # fmt: skip
        for p in PROTOCOLS:
            for o in OUTCOMES:
                self.requests.labels(model, version, p, o)
                self.probes.labels(model, version, p, o)
        self.latency.labels(model, version)
        for s in STAGES:
            self.stages.labels(model, version, s)
        self.batch.labels(model)
        self.depth.labels(model)
        self.inflight.labels(model)
        self.load.labels(model, version)


seconds = st.floats(min_value=0, max_value=100, allow_nan=False) | st.sampled_from([*_LATENCY_BUCKETS, *_STAGE_BUCKETS])
events = st.lists(
    st.tuples(st.just("record"), st.sampled_from(PROTOCOLS), st.sampled_from(OUTCOMES), seconds)
    | st.tuples(st.just("probe"), st.sampled_from(PROTOCOLS), st.sampled_from(OUTCOMES), seconds)
    | st.tuples(st.just("stage"), st.sampled_from(STAGES), seconds)
    | st.tuples(st.just("stage_many"), st.sampled_from(STAGES), seconds, st.integers(1, 64))
    | st.tuples(st.just("batch"), st.integers(1, 600))
    | st.tuples(st.just("gauge"), st.sampled_from(["inc", "dec"]))
    | st.tuples(st.just("set"), st.integers(0, 2000), st.floats(0, 1e4, allow_nan=False)),
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(events)
def test_exposition_matches_prometheus_client(script: list[tuple[object, ...]]) -> None:
    ours, ref = Metrics("mlp", "7"), Reference("mlp", "7")
    for event in script:
        match event:
            case ("record", protocol, outcome, value):
                ours.record(protocol, outcome, value)  # type: ignore[arg-type]
                ref.requests.labels("mlp", "7", protocol, outcome).inc()
                ref.latency.labels("mlp", "7").observe(value)  # type: ignore[arg-type]
            case ("probe", protocol, outcome, value):
                ours.record(protocol, outcome, value, probe=True)  # type: ignore[arg-type]
                ref.probes.labels("mlp", "7", protocol, outcome).inc()
            case ("stage", stage, value):
                ours.stage[stage].observe(value)  # type: ignore[index, arg-type]
                ref.stages.labels("mlp", "7", stage).observe(value)  # type: ignore[arg-type]
            case ("stage_many", stage, value, times):
                ours.stage[stage].observe_many(value, times)  # type: ignore[index, arg-type]
                for _ in range(times):  # type: ignore[call-overload]
                    ref.stages.labels("mlp", "7", stage).observe(value)  # type: ignore[arg-type]
            case ("batch", rows):
                ours.batch.observe(rows)  # type: ignore[arg-type]
                ref.batch.labels("mlp").observe(rows)  # type: ignore[arg-type]
            case ("gauge", "inc"):
                ours.inflight_gauge.inc()
                ref.inflight.labels("mlp").inc()
            case ("gauge", "dec"):
                ours.inflight_gauge.dec()
                ref.inflight.labels("mlp").dec()
            case ("set", depth, load):
                ours.depth.set(depth)  # type: ignore[arg-type]
                ref.depth.labels("mlp").set(depth)  # type: ignore[arg-type]
                ours.load_seconds.set(load)  # type: ignore[arg-type]
                ref.load.labels("mlp", "7").set(load)  # type: ignore[arg-type]
    ours_text, ref_text = ours.render().decode(), generate_latest(ref.registry).decode()
    if not any(e[0] == "stage_many" for e in script):
        assert ours_text == ref_text
    # observe_many adds value * times to the sum, the reference adds `times` values: equal up to rounding.
    assert [_shape(line) for line in ours_text.splitlines()] == [_shape(line) for line in ref_text.splitlines()]
    for a, b in zip(ours_text.splitlines(), ref_text.splitlines(), strict=True):
        if not a.startswith("#"):
            assert math.isclose(float(a.rpartition(" ")[2]), float(b.rpartition(" ")[2]), rel_tol=1e-9)


def _shape(line: str) -> str:
    return line if line.startswith("#") else line.rpartition(" ")[0]


def test_bucket_bounds_are_inclusive() -> None:
    metrics = Metrics("m", "1")
    metrics.batch.observe(32)
    metrics.batch.observe(33)
    text = metrics.render().decode()
    assert 'modelserve_batch_size_bucket{le="32.0",model="m"} 1.0' in text
    assert 'modelserve_batch_size_bucket{le="64.0",model="m"} 2.0' in text
    assert 'modelserve_batch_size_bucket{le="+Inf",model="m"} 2.0' in text
    assert 'modelserve_batch_size_sum{model="m"} 65.0' in text


def test_gpu_memory_is_read_at_scrape_time() -> None:
    reads = {"cuda:0": {"allocated": 1024}}
    metrics = Metrics("m", "1", gpu_memory=lambda: reads)
    assert 'modelserve_gpu_memory_bytes{device="cuda:0",kind="allocated"} 1024.0' in metrics.render().decode()
    reads["cuda:0"]["allocated"] = 2048
    assert 'modelserve_gpu_memory_bytes{device="cuda:0",kind="allocated"} 2048.0' in metrics.render().decode()


def test_outcome_of_status() -> None:
    assert [outcome_of(s) for s in (200, 400, 404, 413, 408, 504, 503, 500)] == [
        "success", "client_error", "client_error", "client_error", "client_error", "timeout", "overloaded",
        "server_error",
    ]  # fmt: skip
