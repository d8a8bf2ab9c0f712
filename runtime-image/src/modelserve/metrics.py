"""Prometheus metrics. The names are a contract with the operator's canary analysis (docs/runtime.md)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

disable_created_metrics()  # type: ignore[no-untyped-call]  # no *_created series: they double the scrape size for no use here

OUTCOMES: Final = ("success", "client_error", "server_error", "overloaded", "timeout")
STAGES: Final = ("decode", "queue", "inference", "encode")
PROTOCOLS: Final = ("v2", "v1")
CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"

_LATENCY_BUCKETS = (
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0,
)  # fmt: skip
_STAGE_BUCKETS = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
)  # fmt: skip
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)

MemoryReader = Callable[[], Mapping[str, Mapping[str, int]]]


class _GpuMemoryCollector(Collector):
    def __init__(self, read: MemoryReader) -> None:
        self._read = read

    @staticmethod
    def _family() -> GaugeMetricFamily:
        return GaugeMetricFamily(
            "modelserve_gpu_memory_bytes", "Accelerator memory in bytes by device and kind", labels=["device", "kind"]
        )

    def describe(self) -> Iterable[Metric]:
        yield self._family()

    def collect(self) -> Iterable[Metric]:
        family = self._family()
        for device, kinds in self._read().items():
            for kind, value in kinds.items():
                family.add_metric([device, kind], float(value))
        yield family


class Metrics:
    """All metrics of one server, in their own registry (several servers can live in one test process)."""

    def __init__(self, model: str, version: str, gpu_memory: MemoryReader | None = None) -> None:
        self.model = model
        self.version = version
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "modelserve_requests",
            "Inference requests by model, version, protocol and outcome",
            ["model", "version", "protocol", "outcome"],
            registry=r,
        )
        self.request_duration = Histogram(
            "modelserve_request_duration_seconds",
            "End-to-end inference request latency in seconds",
            ["model", "version"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.stage_duration = Histogram(
            "modelserve_stage_duration_seconds",
            "Latency of one stage of an inference request (decode, queue, inference, encode) in seconds",
            ["model", "version", "stage"],
            buckets=_STAGE_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "modelserve_batch_size", "Rows per batch run by the model", ["model"], buckets=_BATCH_BUCKETS, registry=r
        )
        self.queue_depth = Gauge(
            "modelserve_queue_depth", "Requests waiting for the inference thread", ["model"], registry=r
        )
        self.inflight = Gauge("modelserve_inflight_requests", "Inference requests being handled", ["model"], registry=r)
        self.model_load = Gauge(
            "modelserve_model_load_seconds",
            "Seconds it took to load and warm up the model",
            ["model", "version"],
            registry=r,
        )
        if gpu_memory is not None:
            r.register(_GpuMemoryCollector(gpu_memory))
        # Label children resolved once: the hot path only calls inc/observe.
        self.request_counters = {
            (p, o): self.requests.labels(model, version, p, o) for p in PROTOCOLS for o in OUTCOMES
        }
        for child in self.request_counters.values():
            child.inc(0)
        self.request_latency = self.request_duration.labels(model, version)
        self.stage = {s: self.stage_duration.labels(model, version, s) for s in STAGES}
        self.batch = self.batch_size.labels(model)
        self.depth = self.queue_depth.labels(model)
        self.inflight_gauge = self.inflight.labels(model)
        self.load_seconds = self.model_load.labels(model, version)

    def record(self, protocol: str, outcome: str, seconds: float) -> None:
        self.request_counters[protocol, outcome].inc()
        self.request_latency.observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)


def outcome_of(status: int) -> str:
    """The outcome label for an HTTP status of an inference response."""
    if status < 400:
        return "success"
    if status in (408, 504):
        return "timeout"
    if status == 503:
        return "overloaded"
    if status < 500:
        return "client_error"
    return "server_error"
