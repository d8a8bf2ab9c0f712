"""HTTPRoute evaluation as Gateway API implementations do it: matches, precedence, weights, invalid backends."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modeldeploy.sim.httproute import (
    BackendRef,
    MirrorSampler,
    RequestInfo,
    WeightedPicker,
    backend_refs,
    invalid_backend_reason,
    mirror_targets,
    select_rule,
)


def route(*rules: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"name": "iris", "namespace": "ml"}, "spec": {"rules": list(rules)}}


def chosen(r: dict[str, Any], request: RequestInfo) -> int | None:
    found = select_rule(r, request)
    return None if found is None else found[0]


WEIGHTED = {"backendRefs": [{"name": "iris-a", "port": 80, "weight": 80}, {"name": "iris-b", "port": 80, "weight": 20}]}
HEADER = {"matches": [{"headers": [{"type": "Exact", "name": "X-Canary", "value": "always"}]}],
          "backendRefs": [{"name": "iris-b", "port": 80, "weight": 1}]}  # fmt: skip


def test_a_header_rule_wins_over_the_catch_all_whatever_their_order() -> None:
    tagged = RequestInfo("POST", "/v2/models/iris/infer", {"x-canary": "always"})
    plain = RequestInfo("POST", "/v2/models/iris/infer", {"X-Canary": "sometimes"})
    for rules, header_index in (((HEADER, WEIGHTED), 0), ((WEIGHTED, HEADER), 1)):
        r = route(*rules)
        assert chosen(r, tagged) == header_index, "header names are case-insensitive; more header matches win"
        assert chosen(r, plain) == 1 - header_index, "an Exact header match needs the exact value"


@pytest.mark.parametrize(
    ("path_match", "path", "matches"),
    [
        ({"type": "PathPrefix", "value": "/v2"}, "/v2/models/iris/infer", True),
        ({"type": "PathPrefix", "value": "/v2/"}, "/v2", True),
        ({"type": "PathPrefix", "value": "/v2"}, "/v20/models", False),
        ({"type": "Exact", "value": "/v2/health/ready"}, "/v2/health/ready", True),
        ({"type": "Exact", "value": "/v2/health/ready"}, "/v2/health/ready/", False),
        ({"type": "RegularExpression", "value": "/v[12]/models/.*"}, "/v1/models/iris:predict", True),
        ({"value": "/"}, "/anything", True),
    ],
)
def test_path_matches(path_match: dict[str, str], path: str, matches: bool) -> None:
    r = route({"matches": [{"path": path_match}], "backendRefs": [{"name": "s", "port": 80}]})
    assert (chosen(r, RequestInfo("GET", path)) == 0) is matches


def test_precedence_exact_then_longest_prefix_then_method_then_headers_then_first_rule() -> None:
    ref = [{"name": "s", "port": 80}]
    r = route(
        {"matches": [{"path": {"type": "PathPrefix", "value": "/v2"}}], "backendRefs": ref},
        {"matches": [{"path": {"type": "PathPrefix", "value": "/v2/models"}}], "backendRefs": ref},
        {"matches": [{"path": {"type": "Exact", "value": "/v2/models/iris"}}], "backendRefs": ref},
        {"matches": [{"path": {"type": "PathPrefix", "value": "/v2/models"}, "method": "POST"}], "backendRefs": ref},
        {"matches": [{"path": {"type": "PathPrefix", "value": "/v2"}, "queryParams": [{"name": "x", "value": "1"}]}],
         "backendRefs": ref},
        {"matches": [{"path": {"type": "PathPrefix", "value": "/v2"}}], "backendRefs": ref},
    )  # fmt: skip
    assert chosen(r, RequestInfo("GET", "/v2/models/iris")) == 2
    assert chosen(r, RequestInfo("POST", "/v2/models/other")) == 3
    assert chosen(r, RequestInfo("GET", "/v2/models/other")) == 1
    assert chosen(r, RequestInfo("GET", "/v2/health", query={"x": "1"})) == 4
    assert chosen(r, RequestInfo("GET", "/v2/health")) == 0, "a tie goes to the first rule in list order"
    assert chosen(r, RequestInfo("GET", "/metrics")) is None


def test_backend_refs_fill_in_defaults_and_invalid_ones_are_named() -> None:
    refs = backend_refs({"backendRefs": [
        {"name": "a", "port": 80}, {"name": "b", "port": 80, "weight": 0, "namespace": "other"},
        {"name": "c", "kind": "Bucket", "group": "example.com", "port": 80},
    ]}, "ml")  # fmt: skip
    assert refs[0] == BackendRef("a", "ml", 80, 1)
    assert refs[1].weight == 0 and refs[1].namespace == "other"
    service = {"spec": {"ports": [{"port": 80}]}}
    assert invalid_backend_reason(refs[0], "ml", service) is None
    assert (invalid_backend_reason(refs[0], "ml", None) or "").startswith("BackendNotFound")
    assert "no port 81" in (invalid_backend_reason(BackendRef("a", "ml", 81, 1), "ml", service) or "")
    assert (invalid_backend_reason(refs[1], "ml", service) or "").startswith("RefNotPermitted")
    assert (invalid_backend_reason(refs[2], "ml", service) or "").startswith("InvalidKind")


def test_smooth_picks_are_interleaved_and_exact_over_a_cycle() -> None:
    picker = WeightedPicker()
    picks = [picker.pick("rule", [80, 20]) for _ in range(100)]
    assert picks.count(1) == 20
    assert "1, 1" not in ", ".join(map(str, picks)), "the minority backend never gets two picks in a row"
    assert [picker.pick("rule", [0, 1, 0]) for _ in range(5)] == [1] * 5, "weight 0 never receives a request"
    assert picker.pick("rule", [0, 0]) is None


@settings(max_examples=60, deadline=None)
@given(
    weights=st.lists(st.integers(0, 100), min_size=1, max_size=4).filter(lambda w: sum(w) > 0),
    start=st.integers(0, 300),
    length=st.integers(1, 400),
)
def test_smooth_picks_in_any_window_are_within_two_of_the_weight(weights: list[int], start: int, length: int) -> None:
    """The bound the end-to-end scenarios rely on: any run of consecutive picks matches the weights within 2."""
    picker = WeightedPicker()
    picks = [picker.pick(0, weights) for _ in range(start + length)][start:]
    total = sum(weights)
    for index, weight in enumerate(weights):
        assert abs(picks.count(index) - length * weight / total) < 2


def test_random_picks_follow_the_weights_and_the_seed() -> None:
    first = WeightedPicker("random", seed=7)
    second = WeightedPicker("random", seed=7)
    picks = [first.pick(0, [70, 30]) for _ in range(4000)]
    assert picks == [second.pick(0, [70, 30]) for _ in range(4000)]
    # Binomial: sd = sqrt(4000 * 0.3 * 0.7) = 29; 5 sd = 145.
    assert abs(picks.count(1) - 1200) < 145
    with pytest.raises(ValueError, match="balance"):
        WeightedPicker("fastest")  # type: ignore[arg-type]


def test_changed_weights_start_a_fresh_cycle() -> None:
    picker = WeightedPicker()
    for _ in range(7):
        picker.pick("r", [50, 50])
    assert [picker.pick("r", [20, 80]) for _ in range(5)].count(1) == 4


def test_mirror_targets_read_percent_fraction_or_everything() -> None:
    def rule(*mirrors: dict[str, Any]) -> dict[str, Any]:
        return {"filters": [{"type": "RequestHeaderModifier"}, *({"type": "RequestMirror", "requestMirror": m}
                                                                   for m in mirrors)]}  # fmt: skip

    ref = {"name": "iris-b", "port": 80}
    targets = mirror_targets(
        rule(
            {"backendRef": ref, "percent": 30},
            {"backendRef": ref, "fraction": {"numerator": 1, "denominator": 8}},
            {"backendRef": ref},
        ),
        "ml",
    )
    assert [(t.ref.name, t.ref.namespace, t.share) for t in targets] == [
        ("iris-b", "ml", 0.3), ("iris-b", "ml", 0.125), ("iris-b", "ml", 1.0)]  # fmt: skip
    assert mirror_targets({"backendRefs": [ref]}, "ml") == []


@pytest.mark.parametrize("share", [0.0, 0.01, 0.25, 1 / 3, 0.5, 0.99, 1.0])
def test_the_mirror_sampler_spreads_copies_evenly(share: float) -> None:
    sampler = MirrorSampler()
    copies = [sampler.copy("rule", share) for _ in range(300)]
    for start in range(0, 300, 7):
        for length in (1, 10, 100):
            window = copies[start : start + length]
            assert abs(sum(window) - len(window) * share) <= 1 + 1e-9, (start, length)
    assert sum(copies[:100]) == int(100 * share + 1e-9)  # exactly the share of the first k requests, rounded down
