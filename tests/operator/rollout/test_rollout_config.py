from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modeldeploy.rollout.config import (
    AnalysisStep,
    IntOrPercent,
    MirrorStep,
    PauseStep,
    RolloutSpecError,
    SetWeightStep,
    parse_duration,
    parse_int_or_percent,
    parse_rollout,
)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30),
        ("5m", 300),
        ("1h30m", 5400),
        ("1.5h", 5400),
        ("250ms", 0.25),
        ("0", 0),
        (45, 45),
        ("2h0m1s", 7201),
    ],
)
def test_parse_duration(text: object, seconds: float) -> None:
    assert parse_duration(text, "f") == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "30", "5 m", "1d", "m5", "30s5", "-5s", True, None, -1, "1h 30m"])
def test_parse_duration_rejects(text: object) -> None:
    with pytest.raises(RolloutSpecError) as info:
        parse_duration(text, "spec.rollout.analysis.interval")
    assert info.value.field_path == "spec.rollout.analysis.interval"


@pytest.mark.parametrize(
    ("raw", "total", "up", "down"),
    [(3, 10, 3, 3), ("25%", 10, 3, 2), ("25%", 4, 1, 1), ("0%", 5, 0, 0), ("100%", 3, 3, 3), ("7", 2, 7, 7)],
)
def test_int_or_percent(raw: object, total: int, up: int, down: int) -> None:
    value = parse_int_or_percent(raw, "f")
    assert value.resolve(total, round_up=True) == up
    assert value.resolve(total, round_up=False) == down


@pytest.mark.parametrize("raw", [-1, "x%", "25.5%", True, 1.5, "%"])
def test_int_or_percent_rejects(raw: object) -> None:
    with pytest.raises(RolloutSpecError):
        parse_int_or_percent(raw, "f")


def test_defaults_from_empty_block() -> None:
    spec = parse_rollout({})
    assert spec.strategy == "RollingUpdate"
    assert spec.rolling_update.max_surge == IntOrPercent(25, percent=True)
    assert spec.progress_deadline_seconds == 600
    assert spec.analysis is None and spec.steps == ()
    assert parse_rollout(None) == spec


def test_full_canary_block() -> None:
    spec = parse_rollout(
        {
            "strategy": "Canary",
            "canary": {
                "steps": [{"setWeight": 10}, {"pause": {"duration": "1m"}}, {"pause": {}}, {"analysis": {}}],
                "trafficRouting": {
                    "type": "GatewayAPI",
                    "gatewayAPI": {
                        "parentRefs": [{"name": "gw", "namespace": "infra"}],
                        "header": {"name": "x", "value": "1"},
                    },
                },
                "capacity": {"mode": "Neutral", "maxSurgePods": 0},
            },
            "analysis": {
                "interval": "10s",
                "maxErrorRatio": 0.02,
                "source": {"type": "Prometheus", "prometheus": {"url": "http://prom:9090/"}},
            },
            "keepPreviousWarm": {"replicas": 2, "seconds": 60},
        },
        revision_history_limit=3,
    )
    assert spec.steps == (SetWeightStep(10), PauseStep(60.0), PauseStep(None), AnalysisStep())
    assert spec.routing.type == "GatewayAPI" and spec.routing.gateway_api is not None
    assert spec.routing.gateway_api.header is not None and spec.routing.gateway_api.header.name == "x"
    assert spec.capacity.mode == "Neutral" and spec.capacity.max_surge_pods == 0
    assert spec.analysis is not None and spec.analysis.interval_seconds == 10
    assert spec.analysis.source.prometheus is not None and spec.analysis.source.prometheus.url == "http://prom:9090"
    assert spec.keep_previous_warm is not None and spec.keep_previous_warm.replicas == 2
    assert spec.revision_history_limit == 3


@pytest.mark.parametrize(
    ("raw", "path"),
    [
        ({"strategy": "Blue"}, "spec.rollout.strategy"),
        ({"canary": {"steps": [{"setWeight": 10, "pause": {}}]}}, "spec.rollout.canary.steps[0]"),
        ({"canary": {"steps": [{"setWeight": 101}]}}, "spec.rollout.canary.steps[0].setWeight"),
        (
            {"canary": {"steps": [{"pause": {"duration": "soon"}}]}},
            "spec.rollout.canary.steps[0].pause.duration",
        ),
        (
            {"strategy": "Canary", "canary": {"steps": [{"analysis": {}}]}},
            "spec.rollout.canary.steps[0].analysis",
        ),
        ({"analysis": {"interval": "30s"}}, "spec.rollout.analysis"),
        ({"analysis": {"maxErrorRatio": 2}}, "spec.rollout.analysis.maxErrorRatio"),
        ({"analysis": {"maxErrorRatio": 0.1, "interval": "0s"}}, "spec.rollout.analysis.interval"),
        ({"firstDeployAnalysis": True}, "spec.rollout.analysis"),
        ({"rollingUpdate": {"maxSurge": 0, "maxUnavailable": "0%"}}, "spec.rollout.rollingUpdate"),
        ({"progressDeadlineSeconds": "600"}, "spec.rollout.progressDeadlineSeconds"),
        (
            {"canary": {"trafficRouting": {"type": "GatewayAPI"}}},
            "spec.rollout.canary.trafficRouting.gatewayAPI",
        ),
        (
            {"canary": {"trafficRouting": {"type": "GatewayAPI", "gatewayAPI": {}}}},
            "spec.rollout.canary.trafficRouting.gatewayAPI",
        ),
        (
            {
                "analysis": {
                    "maxErrorRatio": 0.1,
                    "source": {"type": "Prometheus", "prometheus": {"url": "ftp://x"}},
                }
            },
            "spec.rollout.analysis.source.prometheus.url",
        ),
        ({"abort": "yes"}, "spec.rollout.abort"),
        (
            {"analysis": {"maxErrorRatio": 0.1, "consecutiveErrorLimit": -1}},
            "spec.rollout.analysis.consecutiveErrorLimit",
        ),
        (
            {"analysis": {"maxErrorRatio": 0.1, "consecutiveErrorLimit": 101}},
            "spec.rollout.analysis.consecutiveErrorLimit",
        ),
        (
            {"analysis": {"maxErrorRatio": 0.1, "consecutiveErrorLimit": "4"}},
            "spec.rollout.analysis.consecutiveErrorLimit",
        ),
        ({"canary": []}, "spec.rollout.canary"),
    ],
)
def test_errors_name_the_field(raw: dict[str, Any], path: str) -> None:
    with pytest.raises(RolloutSpecError) as info:
        parse_rollout(raw)
    assert info.value.field_path == path
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("raw", "limit"), [({}, 4), ({"consecutiveErrorLimit": 0}, 0), ({"consecutiveErrorLimit": 100}, 100)]
)
def test_consecutive_error_limit(raw: dict[str, Any], limit: int) -> None:
    spec = parse_rollout({"analysis": {"maxErrorRatio": 0.1, **raw}})
    assert spec.analysis is not None and spec.analysis.consecutive_error_limit == limit


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 200) | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)
_step = st.dictionaries(
    st.sampled_from(["setWeight", "setMirror", "pause", "analysis", "bogus"]),
    st.one_of(st.integers(-5, 120), st.just({}), st.just({"duration": "5s"}), _json),
    max_size=2,
)
_canary = st.fixed_dictionaries(
    {},
    optional={
        "steps": st.one_of(st.lists(_step, max_size=6), _json),
        "trafficRouting": st.one_of(
            st.just({"type": "GatewayAPI", "gatewayAPI": {"parentRefs": [{"name": "gw"}]}}),
            st.just({"type": "Replicas"}),
            _json,
        ),
        "capacity": st.one_of(st.fixed_dictionaries({"mode": st.sampled_from(["Surge", "Neutral", "x"]),
                                                     "maxSurgePods": st.integers(-1, 3)}), _json),
    },
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(strategy=st.sampled_from(["Canary", "BlueGreen", "RollingUpdate", 7]), canary=st.one_of(_canary, _json))
def test_any_rollout_block_parses_or_names_the_field(strategy: object, canary: Any) -> None:
    """Whatever the block holds (the API server's schema normally stops most of it), parsing returns a spec or
    raises RolloutSpecError with a field path under spec.rollout; nothing else escapes."""
    try:
        parsed = parse_rollout({"strategy": strategy, "canary": canary})
    except RolloutSpecError as error:
        assert error.field_path.startswith("spec.rollout"), error
        return
    mirrors = [s for s in parsed.steps if isinstance(s, MirrorStep) and s.percent > 0]
    if mirrors:
        assert parsed.routing.type == "GatewayAPI"
        first_live = next((i for i, s in enumerate(parsed.steps) if isinstance(s, SetWeightStep) and s.weight > 0),
                          len(parsed.steps))  # fmt: skip
        assert all(parsed.steps.index(m) < first_live for m in mirrors)
