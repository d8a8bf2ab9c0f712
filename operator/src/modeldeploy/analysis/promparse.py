"""Turn the runtime's Prometheus text exposition into a ``Sample``. Pure.

The runtime exposes (fixed names):

- ``modelserve_requests_total{model,version,protocol,outcome}`` with outcome one of ``success``,
  ``client_error``, ``server_error``, ``overloaded``, ``timeout``;
- ``modelserve_request_duration_seconds`` histogram ``{model,version}``.

A measurement is the difference between two scrapes of each pod (counters and histogram buckets only grow;
a smaller value means the pod restarted, and the new value counts from zero), summed over the pods.

Errors are ``server_error`` + ``timeout``: failures of the revision itself. ``client_error`` (bad requests)
is the caller's fault and ``overloaded`` (requests shed by a full queue, HTTP 503/429) says the revision had
too few pods for its share, which replica-ratio routing and small canaries make likely; neither says the new
model is broken, so neither counts as an error. Both count as requests.
p99 comes from the histogram buckets by linear interpolation within the bucket, like PromQL's
``histogram_quantile``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

from modeldeploy.analysis.sample import Sample

REQUESTS_METRIC = "modelserve_requests_total"
DURATION_METRIC = "modelserve_request_duration_seconds"
ERROR_OUTCOMES = frozenset({"server_error", "timeout"})
OUTCOMES = ("success", "client_error", "server_error", "overloaded", "timeout")


class MetricsParseError(ValueError):
    """A scrape that is not valid Prometheus text exposition."""


@dataclass(frozen=True)
class PodScrape:
    """The counters of one pod at one moment, summed over label sets (optionally of one model)."""

    requests: Mapping[str, float] = field(default_factory=dict)
    """Requests by outcome."""
    buckets: Mapping[float, float] = field(default_factory=dict)
    """Cumulative latency histogram: upper bound (``math.inf`` for +Inf) -> observations."""


def parse_scrape(text: str, *, model: str | None = None) -> PodScrape:
    """Read one pod's /metrics text; ``model`` keeps only that model's series."""
    requests: dict[str, float] = {}
    buckets: dict[float, float] = {}
    try:
        families = list(text_string_to_metric_families(text))
    except (ValueError, TypeError, IndexError) as exc:
        raise MetricsParseError(f"Invalid Prometheus text exposition: {exc}") from exc
    for family in families:
        for sample in family.samples:
            labels = sample.labels
            if model is not None and labels.get("model") != model:
                continue
            if sample.name == REQUESTS_METRIC:
                outcome = labels.get("outcome", "")
                requests[outcome] = requests.get(outcome, 0.0) + float(sample.value)
            elif sample.name == f"{DURATION_METRIC}_bucket":
                try:
                    bound = float(labels.get("le", ""))
                except ValueError as exc:
                    raise MetricsParseError(f"Histogram bucket with invalid le={labels.get('le')!r}") from exc
                buckets[bound] = buckets.get(bound, 0.0) + float(sample.value)
    return PodScrape(requests=requests, buckets=buckets)


def _delta(previous: float | None, current: float) -> float:
    if previous is None or current < previous:  # first scrape, or the pod restarted
        return current
    return current - previous


def scrape_delta(previous: PodScrape | None, current: PodScrape) -> PodScrape:
    """What happened between two scrapes of the same pod (``previous`` None: since the pod started)."""
    old_req = previous.requests if previous is not None else {}
    old_buckets = previous.buckets if previous is not None else {}
    reset = any(current.requests.get(k, 0.0) < v for k, v in old_req.items()) or any(
        current.buckets.get(k, 0.0) < v for k, v in old_buckets.items()
    )
    if reset:
        old_req, old_buckets = {}, {}
    return PodScrape(
        requests={k: _delta(old_req.get(k), v) for k, v in current.requests.items()},
        buckets={k: _delta(old_buckets.get(k), v) for k, v in current.buckets.items()},
    )


def histogram_quantile(quantile: float, buckets: Mapping[float, float]) -> float | None:
    """PromQL ``histogram_quantile`` over cumulative buckets; None without observations."""
    if not 0 <= quantile <= 1:
        raise ValueError(f"quantile must be between 0 and 1, got {quantile}")
    bounds = sorted(buckets)
    if not bounds or bounds[-1] != math.inf:
        return None
    total = buckets[math.inf]
    if total <= 0:
        return None
    rank = quantile * total
    lower_bound, lower_count = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if bound == math.inf:
                # Like PromQL: the answer is the highest finite bound.
                finite = [b for b in bounds if b != math.inf]
                return finite[-1] if finite else None
            if bound <= 0 or count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = bound, count
    return None


def sample_from_deltas(deltas: Sequence[PodScrape]) -> Sample:
    """Sum per-pod deltas into one ``Sample``."""
    requests = 0.0
    errors = 0.0
    buckets: dict[float, float] = {}
    for delta in deltas:
        requests += sum(delta.requests.values())
        errors += sum(v for k, v in delta.requests.items() if k in ERROR_OUTCOMES)
        for bound, count in delta.buckets.items():
            buckets[bound] = buckets.get(bound, 0.0) + count
    # Keep the histogram cumulative even if pods disagree on bucket layout.
    running = 0.0
    for bound in sorted(buckets):
        running = max(running, buckets[bound])
        buckets[bound] = running
    return Sample(requests=requests, errors=errors, p99_seconds=histogram_quantile(0.99, buckets), pods=len(deltas))


def sample_from_texts(previous: Sequence[str | None], current: Sequence[str], *, model: str | None = None) -> Sample:
    """``Sample`` from two scrapes per pod (``previous[i]`` None: the pod's first scrape)."""
    if len(previous) != len(current):
        raise ValueError("previous and current scrapes must be given for the same pods")
    deltas = [
        scrape_delta(parse_scrape(p, model=model) if p is not None else None, parse_scrape(c, model=model))
        for p, c in zip(previous, current, strict=True)
    ]
    return sample_from_deltas(deltas)
