from __future__ import annotations

import math

import pytest

from modeldeploy.analysis.promparse import (
    MetricsParseError,
    histogram_quantile,
    parse_scrape,
    sample_from_texts,
    scrape_delta,
)


def exposition(
    success: float, server_error: float, overloaded: float, buckets: dict[str, float], model: str = "iris"
) -> str:
    lines = [
        "# HELP modelserve_requests_total Requests.",
        "# TYPE modelserve_requests_total counter",
        *(
            f'modelserve_requests_total{{model="{model}",version="1",protocol="v2",outcome="{outcome}"}} {count}'
            for outcome, count in (
                ("success", success),
                ("server_error", server_error),
                ("overloaded", overloaded),
            )
        ),
        "# HELP modelserve_request_duration_seconds Latency.",
        "# TYPE modelserve_request_duration_seconds histogram",
    ]
    for le, count in buckets.items():
        lines.append(f'modelserve_request_duration_seconds_bucket{{model="{model}",version="1",le="{le}"}} {count}')
    total = buckets["+Inf"]
    lines.append(f'modelserve_request_duration_seconds_count{{model="{model}",version="1"}} {total}')
    lines.append(f'modelserve_request_duration_seconds_sum{{model="{model}",version="1"}} 1.0')
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    ("q", "buckets", "expected"),
    [
        (0.5, {0.1: 50, 0.2: 100, math.inf: 100}, 0.1),
        (0.99, {0.1: 0, 0.2: 100, math.inf: 100}, 0.199),
        (0.99, {0.1: 90, 0.5: 100, math.inf: 100}, 0.1 + 0.4 * 9 / 10),
        (0.99, {0.1: 10, math.inf: 100}, 0.1),  # in the +Inf bucket: highest finite bound, like PromQL
        (0.99, {0.1: 0, math.inf: 0}, None),
        (0.99, {0.1: 5}, None),  # no +Inf bucket
    ],
)
def test_histogram_quantile(q: float, buckets: dict[float, float], expected: float | None) -> None:
    got = histogram_quantile(q, buckets)
    assert got == pytest.approx(expected) if expected is not None else got is None


def test_delta_between_scrapes_summed_over_pods() -> None:
    before = [
        exposition(100, 1, 5, {"0.1": 90, "0.5": 105, "+Inf": 106}),
        None,  # second pod: first scrape, counts since it started
    ]
    after = [
        exposition(200, 3, 10, {"0.1": 180, "0.5": 210, "+Inf": 213}),
        exposition(95, 5, 0, {"0.1": 90, "0.5": 100, "+Inf": 100}),
    ]
    sample = sample_from_texts(before, after)
    # pod 1: 100 success + 2 server_error + 5 overloaded; pod 2: 95 + 5
    assert sample.requests == 207 and sample.errors == 7 and sample.pods == 2
    assert sample.error_ratio == pytest.approx(7 / 207)
    # buckets: 0.1 -> 90 + 90 = 180, 0.5 -> 105 + 100 = 205, +Inf -> 107 + 100 = 207: p99 rank 204.93
    assert sample.p99_seconds == pytest.approx(0.1 + 0.4 * (204.93 - 180) / 25)


def test_counter_reset_counts_from_zero() -> None:
    old = parse_scrape(exposition(500, 0, 0, {"0.1": 500, "+Inf": 500}))
    new = parse_scrape(exposition(20, 1, 0, {"0.1": 21, "+Inf": 21}))
    delta = scrape_delta(old, new)
    assert delta.requests == {"success": 20, "server_error": 1, "overloaded": 0}


def test_model_filter_and_bad_text() -> None:
    text = exposition(10, 0, 0, {"+Inf": 10}, model="iris") + exposition(99, 0, 0, {"+Inf": 99}, model="other").replace(
        "# HELP modelserve_requests_total Requests.\n# TYPE modelserve_requests_total counter\n", ""
    ).replace(
        "# HELP modelserve_request_duration_seconds Latency.\n# TYPE modelserve_request_duration_seconds histogram\n",
        "",
    )
    assert sum(parse_scrape(text, model="iris").requests.values()) == 10
    with pytest.raises(MetricsParseError):
        parse_scrape('modelserve_requests_total{outcome="success" 12\n')
