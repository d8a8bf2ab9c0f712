"""Prometheus metrics. The names are a contract with the operator's canary analysis (docs/runtime.md).

The request path updates plain Python numbers, not `prometheus_client` metric objects: one of those takes a lock
and walks its buckets in Python on every call, several microseconds per request at five observations each
(docs/runtime.md, "HTTP fast path"). `_Collector` turns the numbers into `prometheus_client` metric families at
scrape time, so the exposition format is still the library's. Every update happens on the event loop's thread
(the batcher reports batch sizes there too), so no lock is needed: a scrape runs on the same thread.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

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
# With `--workers` (workers.py), the other worker processes' numbers: each one's snapshot (Metrics.snapshot, as
# JSON) and whether that process is still alive. Counters and histograms add up over all of them, the dead
# included (a restarted worker's predecessor keeps its counts, so sums never go down); gauges only over the live.
Peer = tuple[bool, Mapping[str, Any]]
PeerReader = Callable[[], Sequence[Peer]]


class _GpuMemoryCollector(Collector):
    def __init__(self, read: MemoryReader, peers: PeerReader | None = None) -> None:
        self._read = read
        self._peers = peers

    @staticmethod
    def _family() -> GaugeMetricFamily:
        return GaugeMetricFamily(
            "modelserve_gpu_memory_bytes", "Accelerator memory in bytes by device and kind", labels=["device", "kind"]
        )

    def describe(self) -> Iterable[Metric]:
        yield self._family()

    def collect(self) -> Iterable[Metric]:
        family = self._family()
        totals: dict[tuple[str, str], float] = {}
        readings: list[Mapping[str, Mapping[str, Any]]] = [self._read()]
        if self._peers is not None:
            readings += [snapshot.get("gpu", {}) for alive, snapshot in self._peers() if alive]
        for reading in readings:  # worker processes share the device: its memory in use is their sum
            for device, kinds in reading.items():
                for kind, value in kinds.items():
                    totals[device, kind] = totals.get((device, kind), 0.0) + float(value)
        for (device, kind), total in totals.items():
            family.add_metric([device, kind], total)
        yield family


class Value:
    """A counter or gauge series."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount

    def dec(self, amount: float = 1.0) -> None:
        self.value -= amount

    def set(self, value: float) -> None:
        self.value = value


class Distribution:
    """A histogram series: a count per bucket (the last one is +Inf) and the sum of observations."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(float(b) for b in bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1  # buckets are `le`: a value on a bound counts in it
        self.sum += value

    def observe_many(self, value: float, times: int) -> None:
        """`times` observations of the same value (e.g. the inference time of every request in one batch)."""
        self.counts[bisect_left(self.bounds, value)] += times
        self.sum += value * times

    def buckets(self) -> list[tuple[str, float]]:
        cumulative, out = 0, []
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            cumulative += count
            out.append((floatToGoString(bound), float(cumulative)))  # type: ignore[no-untyped-call]
        return out


class _Family:
    """One metric: its name, help, kind, label names and the series by label values."""

    def __init__(
        self,
        kind: str,
        name: str,
        documentation: str,
        labels: Sequence[str],
        buckets: Sequence[float] = (),
        merge: str = "sum",
    ) -> None:
        self.kind, self.name, self.documentation, self.labels = kind, name, documentation, list(labels)
        self.bounds = tuple(buckets)
        self.merge = merge  # a gauge's value over worker processes: "sum" or "max"
        self.series: dict[tuple[str, ...], Value | Distribution] = {}

    def value(self, *labels: str) -> Value:
        child = self.series.setdefault(labels, Value())
        assert isinstance(child, Value)
        return child

    def distribution(self, *labels: str) -> Distribution:
        child = self.series.setdefault(labels, Distribution(self.bounds))
        assert isinstance(child, Distribution)
        return child

    def family(self, series: Mapping[tuple[str, ...], Value | Distribution] | None = None) -> Metric:
        if series is None:
            series = self.series
        if self.kind == "histogram":
            histogram = HistogramMetricFamily(self.name, self.documentation, labels=self.labels)
            for labels, child in series.items():
                assert isinstance(child, Distribution)
                histogram.add_metric(list(labels), child.buckets(), child.sum)
            return histogram
        cls = CounterMetricFamily if self.kind == "counter" else GaugeMetricFamily
        metric = cls(self.name, self.documentation, labels=self.labels)
        for labels, child in series.items():
            assert isinstance(child, Value)
            metric.add_metric(list(labels), child.value)
        return metric

    def snapshot(self) -> list[list[Any]]:
        """The series as JSON: [labels, value] or, for a histogram, [labels, bucket counts, sum]."""
        out: list[list[Any]] = []
        for labels, child in self.series.items():
            if isinstance(child, Distribution):
                out.append([list(labels), list(child.counts), child.sum])
            else:
                out.append([list(labels), child.value])
        return out

    def merged(self, peers: Sequence[Peer]) -> dict[tuple[str, ...], Value | Distribution]:
        """This process's series combined with the other workers' (see Peer). A peer's series that does not fit
        (another bucket layout, from a different version of the server) is left out rather than mixed in."""
        out: dict[tuple[str, ...], Value | Distribution] = {}
        for labels, child in self.series.items():
            out[labels] = _copy(child)
        for alive, snapshot in peers:
            if self.kind == "gauge" and not alive:
                continue
            for entry in snapshot.get("families", {}).get(self.name, ()):
                labels = tuple(str(label) for label in entry[0])
                if self.kind == "histogram":
                    counts = [int(c) for c in entry[1]]
                    if len(counts) != len(self.bounds) + 1:
                        continue
                    dist = out.setdefault(labels, Distribution(self.bounds))
                    assert isinstance(dist, Distribution)
                    dist.counts = [a + b for a, b in zip(dist.counts, counts, strict=True)]
                    dist.sum += float(entry[2])
                    continue
                value = out.setdefault(labels, Value())
                assert isinstance(value, Value)
                number = float(entry[1])
                value.value = max(value.value, number) if self.merge == "max" else value.value + number
        return out


def _copy(child: Value | Distribution) -> Value | Distribution:
    if isinstance(child, Distribution):
        dist = Distribution(child.bounds)
        dist.counts, dist.sum = list(child.counts), child.sum
        return dist
    value = Value()
    value.value = child.value
    return value


class _Collector(Collector):
    def __init__(self, families: Sequence[_Family], peers: PeerReader | None = None) -> None:
        self._families = families
        self._peers = peers

    def collect(self) -> Iterable[Metric]:
        peers = self._peers() if self._peers is not None else ()
        for family in self._families:
            yield family.family(family.merged(peers)) if peers else family.family()


class Metrics:
    """All metrics of one server, in their own registry (several servers can live in one test process)."""

    def __init__(
        self,
        model: str,
        version: str,
        gpu_memory: MemoryReader | None = None,
        peers: PeerReader | None = None,
    ) -> None:
        """`peers`: with `--workers`, the other worker processes' snapshots, added in at every scrape."""
        self.model = model
        self.version = version
        self.registry = CollectorRegistry(auto_describe=True)
        requests = _Family(
            "counter",
            "modelserve_requests",
            "Inference requests by model, version, protocol and outcome",
            ["model", "version", "protocol", "outcome"],
        )
        probe_requests = _Family(
            "counter",
            "modelserve_probe_requests",
            "Inference requests marked as probes (header Modeldeploy-Probe: the operator's golden requests), by "
            "model, version, protocol and outcome; not in modelserve_requests_total or the request latency",
            ["model", "version", "protocol", "outcome"],
        )
        request_duration = _Family(
            "histogram",
            "modelserve_request_duration_seconds",
            "End-to-end inference request latency in seconds",
            ["model", "version"],
            _LATENCY_BUCKETS,
        )
        stage_duration = _Family(
            "histogram",
            "modelserve_stage_duration_seconds",
            "Latency of one stage of an inference request (decode, queue, inference, encode) in seconds",
            ["model", "version", "stage"],
            _STAGE_BUCKETS,
        )
        batch_size = _Family("histogram", "modelserve_batch_size", "Rows per batch run by the model", ["model"],
                             _BATCH_BUCKETS)  # fmt: skip
        queue_depth = _Family("gauge", "modelserve_queue_depth", "Requests waiting for the inference thread", ["model"])
        inflight = _Family("gauge", "modelserve_inflight_requests", "Inference requests being handled", ["model"])
        model_load = _Family(
            "gauge", "modelserve_model_load_seconds", "Seconds it took to load and warm up the model",
            ["model", "version"], merge="max",
        )  # fmt: skip
        # Series resolved once, every counter at 0 from the start: the hot path only calls inc/observe.
        self.request_counters = {(p, o): requests.value(model, version, p, o) for p in PROTOCOLS for o in OUTCOMES}
        self.probe_counters = {
            (p, o): probe_requests.value(model, version, p, o) for p in PROTOCOLS for o in OUTCOMES
        }
        self.request_latency = request_duration.distribution(model, version)
        self.stage = {s: stage_duration.distribution(model, version, s) for s in STAGES}
        self.batch = batch_size.distribution(model)
        self.depth = queue_depth.value(model)
        self.inflight_gauge = inflight.value(model)
        self.load_seconds = model_load.value(model, version)
        self._families = [
            requests, probe_requests, request_duration, stage_duration, batch_size, queue_depth, inflight, model_load
        ]  # fmt: skip
        self._gpu_memory = gpu_memory
        self.registry.register(_Collector(self._families, peers))
        if gpu_memory is not None:
            self.registry.register(_GpuMemoryCollector(gpu_memory, peers))

    def snapshot(self) -> dict[str, Any]:
        """This process's numbers as JSON, for the other worker processes' scrapes (workers.py)."""
        gpu = self._gpu_memory() if self._gpu_memory is not None else {}
        return {
            "families": {family.name: family.snapshot() for family in self._families},
            "kinds": {family.name: family.kind for family in self._families},
            "gpu": {device: dict(kinds) for device, kinds in gpu.items()},
        }

    def record(self, protocol: str, outcome: str, seconds: float, probe: bool = False) -> None:
        """Count one inference request; a probe only in its own counter, so that the traffic the canary analysis
        judges (requests, errors, latency) is the clients' alone."""
        if probe:
            self.probe_counters[protocol, outcome].value += 1
            return
        self.request_counters[protocol, outcome].value += 1
        self.request_latency.observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)


def outcome_of(status: int) -> str:
    """The outcome label for an HTTP status of an inference response."""
    if status < 400:
        return "success"
    if status == 504:
        return "timeout"
    if status == 503:
        return "overloaded"
    if status < 500:
        return "client_error"
    return "server_error"
