from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modeldeploy.analysis.criteria import judge_counts
from modeldeploy.rollout.config import (
    MAX_ANALYSIS_INTERVAL_SECONDS,
    MAX_PAUSE_SECONDS,
    AnalysisSpec,
    AnalysisStep,
    IntOrPercent,
    MirrorStep,
    PauseStep,
    RolloutSpecError,
    SetWeightStep,
    WebhookHeader,
    WebhookSpec,
    parse_duration,
    parse_int_or_percent,
    parse_rollout,
)
from modeldeploy.schema import DurationError, crd_manifest, go_duration_nanoseconds


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


def _crd_duration_patterns() -> set[str]:
    patterns: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "duration" in str(node.get("description", "")).lower() and "pattern" in node:
                patterns.add(node["pattern"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(crd_manifest())
    return patterns


DURATION_PATTERN = "^([0-9]+(\\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$"


def test_the_crd_has_one_duration_pattern() -> None:
    assert _crd_duration_patterns() == {DURATION_PATTERN}


@settings(max_examples=300, deadline=None)
@given(st.from_regex(DURATION_PATTERN, fullmatch=True))
def test_durations_the_crd_admits_read_as_its_rules_read_them(text: str) -> None:
    """The rollout reads every duration the CRD's pattern admits as the CEL duration() of the CRD's bounds does (Go's
    time.ParseDuration), to within rounding: the bound the API server checks is the bound the operator keeps."""
    seconds = parse_duration(text, "f")
    try:
        nanoseconds = go_duration_nanoseconds(text)
    except DurationError:
        assert seconds > 2562047 * 3600  # past int64 nanoseconds: Go refuses, and the CRD's rules with it
        return
    assert seconds == pytest.approx(nanoseconds / 1e9, rel=1e-9, abs=1e-9 * (text.count(".") + 1))


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
    ("raw", "pause", "interval"),
    [
        ({"pause": "168h", "interval": "24h"}, MAX_PAUSE_SECONDS, MAX_ANALYSIS_INTERVAL_SECONDS),
        ({"pause": "1h30m", "interval": "1ns"}, 5400, 1e-9),
    ],
)
def test_durations_within_their_bounds(raw: dict[str, str], pause: float, interval: float) -> None:
    spec = parse_rollout(
        {
            "strategy": "Canary",
            "canary": {"steps": [{"pause": {"duration": raw["pause"]}}]},
            "analysis": {"maxErrorRatio": 0.1, "interval": raw["interval"]},
        }
    )
    assert spec.steps == (PauseStep(pause),)
    assert spec.analysis is not None and spec.analysis.interval_seconds == pytest.approx(interval)
    assert (MAX_PAUSE_SECONDS, MAX_ANALYSIS_INTERVAL_SECONDS) == (7 * 24 * 3600, 24 * 3600)


_CASE = "spec.rollout.analysis.goldenRequests.cases[0]"


def _case(
    name: str = "setosa",
    inputs: list[Any] | None = None,
    shape: list[int] | None = None,
    data: list[Any] | None = None,
    datatype: str = "FP32",
    output: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A golden case (valid unless a part is given)."""
    tensor = {"name": "input", "datatype": datatype, "shape": shape or [1, 4], "data": data or [5.1, 3.5, 1.4, 0.2]}
    if datatype.startswith("INT") and data is None:
        tensor["data"] = [5, 3, 1, 0]
    return {
        "name": name,
        "inputs": [tensor] if inputs is None else inputs,
        "outputs": [output or {"name": "output", "argmax": [0]}],
    }


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
        ({"analysis": {"maxErrorRatio": 0.1, "interval": "24h0.5s"}}, "spec.rollout.analysis.interval"),
        ({"analysis": {"maxErrorRatio": 0.1, "interval": "100000000h"}}, "spec.rollout.analysis.interval"),
        ({"analysis": {"maxErrorRatio": 0.1, "interval": 86401}}, "spec.rollout.analysis.interval"),
        (
            {"canary": {"steps": [{"setWeight": 5}, {"pause": {"duration": "168h1s"}}]}},
            "spec.rollout.canary.steps[1].pause.duration",
        ),
        (
            {"canary": {"steps": [{"pause": {"duration": "9" * 31 + "h"}}]}},
            "spec.rollout.canary.steps[0].pause.duration",
        ),
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
        (
            {"analysis": {"maxErrorRatio": 0.1, "source": {"type": "Prometheus", "prometheus": {
                "url": "http://prom:9090", "errorRatioQuery": 'sum(rate(errors{rev="{{ revision }}"}[5m]))'}}}},
            "spec.rollout.analysis.source.prometheus.errorRatioQuery",
        ),
        (
            {"analysis": {"maxP99LatencyMs": 100, "source": {"type": "Prometheus", "prometheus": {
                "url": "http://prom:9090", "p99LatencyQuery": 'histogram_quantile(0.99, x{r="{{rev}}"})'}}}},
            "spec.rollout.analysis.source.prometheus.p99LatencyQuery",
        ),
        (
            {"analysis": {"maxP99LatencyMs": 100, "source": {"type": "Prometheus", "prometheus": {
                "url": "http://prom:9090", "p99LatencyQuery": 'x{r="{{revision}"}'}}}},
            "spec.rollout.analysis.source.prometheus.p99LatencyQuery",
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
        ({"analysis": {"goldenRequests": {}}}, "spec.rollout.analysis.goldenRequests.cases"),
        ({"analysis": {"goldenRequests": {"cases": []}}}, "spec.rollout.analysis.goldenRequests.cases"),
        ({"analysis": {"goldenRequests": {"cases": ["x"]}}}, "spec.rollout.analysis.goldenRequests.cases[0]"),
        ({"analysis": {"goldenRequests": {"cases": [_case(name="")]}}}, f"{_CASE}.name"),
        ({"analysis": {"goldenRequests": {"cases": [_case(), _case()]}}}, "spec.rollout.analysis.goldenRequests.cases"),
        ({"analysis": {"goldenRequests": {"cases": [_case(inputs=[])]}}}, f"{_CASE}.inputs"),
        ({"analysis": {"goldenRequests": {"cases": [_case(shape=[2, 4])]}}}, f"{_CASE}.inputs[0].data"),
        ({"analysis": {"goldenRequests": {"cases": [_case(shape=[-1])]}}}, f"{_CASE}.inputs[0].shape"),
        (
            {"analysis": {"goldenRequests": {"cases": [_case(data=[1, 2, float("nan"), 4])]}}},
            f"{_CASE}.inputs[0].data[2]",
        ),
        ({"analysis": {"goldenRequests": {"cases": [_case(data=[1, 2, True, 4])]}}}, f"{_CASE}.inputs[0].data[2]"),
        ({"analysis": {"goldenRequests": {"cases": [_case(datatype="INT64", data=[1, 2, 3.5, 4])]}}},
         f"{_CASE}.inputs[0].data[2]"),
        ({"analysis": {"goldenRequests": {"cases": [_case(datatype="BYTES")]}}}, f"{_CASE}.inputs[0].datatype"),
        ({"analysis": {"goldenRequests": {"cases": [_case(output={"name": "o"})]}}}, f"{_CASE}.outputs[0]"),
        ({"analysis": {"goldenRequests": {"cases": [_case(output={"name": "o", "data": [1], "argmax": [0]})]}}},
         f"{_CASE}.outputs[0]"),
        ({"analysis": {"goldenRequests": {"cases": [_case(output={"argmax": [0]})]}}}, f"{_CASE}.outputs[0].name"),
        ({"analysis": {"goldenRequests": {"cases": [_case(output={"name": "o", "argmax": [0.5]})]}}},
         f"{_CASE}.outputs[0].argmax[0]"),
        ({"analysis": {"goldenRequests": {"cases": [_case()], "maxMismatches": -1}}},
         "spec.rollout.analysis.goldenRequests.maxMismatches"),
        ({"analysis": {"goldenRequests": {"cases": [_case()], "absoluteTolerance": -0.1}}},
         "spec.rollout.analysis.goldenRequests.absoluteTolerance"),
        ({"analysis": {"goldenRequests": {"cases": [_case()] * 33}}}, "spec.rollout.analysis.goldenRequests.cases"),
        ({"canary": []}, "spec.rollout.canary"),
        ({"analysis": {"maxErrorRatio": 0.1, "count": 1}}, "spec.rollout.analysis.failureLimit"),
    ],
)
def test_errors_name_the_field(raw: dict[str, Any], path: str) -> None:
    with pytest.raises(RolloutSpecError) as info:
        parse_rollout(raw)
    assert info.value.field_path == path
    assert isinstance(info.value, ValueError)


def test_custom_queries_keep_the_placeholders_the_source_substitutes() -> None:
    selector = 'namespace="{{namespace}}",revision="{{revision}}"'
    query = (f'sum(rate(http_errors{{{selector},code=~"5.{{2}}"}}[{{{{interval}}}}])) / '
             f"sum(rate(http_requests{{{selector}}}[{{{{interval}}}}]))")  # fmt: skip
    assert "[{{interval}}]" in query and 'code=~"5.{2}"' in query
    source = {"type": "Prometheus", "prometheus": {"url": "http://prom:9090", "errorRatioQuery": query}}
    spec = parse_rollout({"analysis": {"maxErrorRatio": 0.1, "source": source}})
    assert spec.analysis is not None and spec.analysis.source.prometheus is not None
    assert spec.analysis.source.prometheus.error_ratio_query == query


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


_tensor = st.fixed_dictionaries(
    {},
    optional={
        "name": st.one_of(st.just("input"), _json),
        "datatype": st.sampled_from(["FP32", "INT64", "BYTES", 3]),
        "shape": st.one_of(st.lists(st.integers(-1, 3), max_size=3), _json),
        "data": st.one_of(st.lists(st.one_of(st.integers(-3, 3), st.floats()), max_size=6), _json),
    },
)
_expected = st.fixed_dictionaries(
    {},
    optional={
        "name": st.one_of(st.just("output"), _json),
        "data": st.one_of(st.lists(st.floats(), max_size=4), _json),
        "argmax": st.one_of(st.lists(st.integers(-1, 3), max_size=4), _json),
    },
)
_golden_case = st.one_of(
    st.just(_case()),  # valid cases too, so that the checks after parsing run
    st.just(_case("b", output={"name": "y", "data": [0.5]})),
    st.fixed_dictionaries(
    {},
    optional={
        "name": st.one_of(st.sampled_from(["a", "b", ""]), _json),
        "inputs": st.one_of(st.lists(_tensor, max_size=2), _json),
        "outputs": st.one_of(st.lists(_expected, max_size=2), _json),
    },
    ),
)  # fmt: skip
_analysis = st.one_of(
    st.none(),
    _json,
    st.fixed_dictionaries(
        {"goldenRequests": st.one_of(_json, st.fixed_dictionaries({"cases": st.lists(_golden_case, max_size=3)},
                                                                  optional={"maxMismatches": st.integers(-1, 3)}))},
        optional={"maxErrorRatio": st.floats(-1, 2), "count": st.integers(0, 3), "failureLimit": st.integers(-1, 3)},
    ),
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(
    strategy=st.sampled_from(["Canary", "BlueGreen", "RollingUpdate", 7]),
    canary=st.one_of(_canary, _json),
    analysis=_analysis,
)
def test_any_rollout_block_parses_or_names_the_field(strategy: object, canary: Any, analysis: Any) -> None:
    """Whatever the block holds (the API server's schema normally stops most of it), parsing returns a spec or
    raises RolloutSpecError with a field path under spec.rollout; nothing else escapes."""
    try:
        parsed = parse_rollout({"strategy": strategy, "canary": canary, "analysis": analysis})
    except RolloutSpecError as error:
        assert error.field_path.startswith("spec.rollout"), error
        return
    mirrors = [s for s in parsed.steps if isinstance(s, MirrorStep) and s.percent > 0]
    if mirrors:
        assert parsed.routing.type == "GatewayAPI"
        first_live = next((i for i, s in enumerate(parsed.steps) if isinstance(s, SetWeightStep) and s.weight > 0),
                          len(parsed.steps))  # fmt: skip
        assert all(parsed.steps.index(m) < first_live for m in mirrors)
    if parsed.analysis is not None:
        assert parsed.analysis.failure_limit < parsed.analysis.count  # a run that can fail
    golden = parsed.analysis.golden if parsed.analysis is not None else None
    if golden is not None:
        for case in golden.cases:
            assert case.name and case.inputs and case.outputs
            assert all(math.prod(t.shape) == len(t.data) for t in case.inputs)
            assert all((o.data is None) != (o.argmax is None) for o in case.outputs)


def test_golden_requests_parse_with_their_defaults() -> None:
    spec = parse_rollout(
        {"strategy": "BlueGreen", "analysis": {"goldenRequests": {"cases": [_case(), _case("int", datatype="INT64")]}}}
    )
    assert spec.analysis is not None and spec.analysis.golden is not None
    golden = spec.analysis.golden
    assert (golden.max_mismatches, golden.absolute_tolerance, golden.relative_tolerance) == (0, 1e-5, 1e-4)
    assert [c.name for c in golden.cases] == ["setosa", "int"]
    assert golden.cases[0].inputs[0].shape == (1, 4) and golden.cases[0].outputs[0].argmax == (0,)
    assert golden.cases[1].inputs[0].data == (5, 3, 1, 0)
    # Golden requests alone are a criterion: no traffic threshold needed.
    assert spec.analysis.has_threshold and not spec.analysis.has_traffic_threshold


def test_an_analysis_without_any_criterion_names_golden_requests_and_webhooks_too() -> None:
    with pytest.raises(RolloutSpecError, match="goldenRequests or webhooks"):
        parse_rollout({"analysis": {"count": 1}})


@pytest.mark.parametrize(
    ("analysis", "count", "failure_limit"),
    [
        ({}, 3, 1),  # the CRD's defaults
        ({"count": 2}, 2, 1),
        ({"count": 1, "failureLimit": 0}, 1, 0),
        ({"count": 100, "failureLimit": 99}, 100, 99),
        ({"count": 5, "failureLimit": 0}, 5, 0),
    ],
)
def test_a_run_can_fail_with_these_counts(analysis: dict[str, Any], count: int, failure_limit: int) -> None:
    spec = parse_rollout({"analysis": {"maxErrorRatio": 0.1, **analysis}})
    assert spec.analysis is not None
    assert (spec.analysis.count, spec.analysis.failure_limit) == (count, failure_limit)


@pytest.mark.parametrize(
    ("analysis", "words"),
    [
        # count 1 alone keeps the default failureLimit 1: its only measurement failing would be tolerated.
        ({"count": 1}, "a run of 1 measurements with failureLimit 1 can never fail"),
        ({"count": 3, "failureLimit": 3}, "a run of 3 measurements with failureLimit 3 can never fail"),
        ({"count": 2, "failureLimit": 5}, "a run of 2 measurements with failureLimit 5 can never fail"),
        ({"failureLimit": 3}, "a run of 3 measurements with failureLimit 3 can never fail"),
    ],
)
def test_a_run_that_can_never_fail_is_refused(analysis: dict[str, Any], words: str) -> None:
    """judge_counts fails a run only once more than failureLimit measurements failed, and ends it after count: with
    failureLimit >= count every run succeeds, and a canary answering 20 % errors would be promoted. Objects
    stored before the CRD refused such a spec get InvalidSpec from this check."""
    with pytest.raises(RolloutSpecError) as info:
        parse_rollout({"strategy": "BlueGreen", "analysis": {"maxErrorRatio": 0.01, **analysis}})
    assert info.value.field_path == "spec.rollout.analysis.failureLimit"
    assert info.value.message.startswith("failureLimit must be less than count")
    assert words in info.value.message and "with count 1 set failureLimit 0" in info.value.message


@settings(max_examples=200, deadline=None)
@given(count=st.integers(1, 100), failure_limit=st.integers(0, 100))
def test_an_analysis_parses_exactly_when_a_run_of_failed_measurements_fails(count: int, failure_limit: int) -> None:
    """Measurements that all fail, judged one after another as the state machine does: the run must end Failed.
    The specs where it ends Successful instead are the ones refused."""
    raw = {"analysis": {"maxErrorRatio": 0.01, "count": count, "failureLimit": failure_limit}}
    verdict = "Running"
    failed = 0
    while verdict == "Running":
        failed += 1
        verdict = judge_counts(AnalysisSpec(count=count, failure_limit=failure_limit), 0, failed, 0).phase
    try:
        parse_rollout(raw)
    except RolloutSpecError as error:
        assert error.field_path == "spec.rollout.analysis.failureLimit"
        assert verdict == "Successful"
    else:
        assert verdict == "Failed"


def test_webhook_headers_parse_as_values_or_secret_keys() -> None:
    headers = [
        {"name": "X-Team", "value": "ml"},
        {"name": "Authorization", "valueFrom": {"secretKeyRef": {"name": "evals-token", "key": "header"}}},
    ]
    spec = parse_rollout({"strategy": "BlueGreen", "analysis": {"webhooks": [{**HOOK, "headers": headers}]}})
    assert spec.analysis is not None
    assert spec.analysis.webhooks[0].headers == (
        WebhookHeader("X-Team", value="ml"),
        WebhookHeader("Authorization", secret="evals-token", secret_key="header"),
    )


def test_webhooks_parse_with_their_defaults() -> None:
    hooks = [
        {"name": "evals", "url": "http://evals.ml.svc/check", "metadata": {"suite": "smoke", "min": "0.9"}},
        {"name": "load", "url": "https://load.example.com/run", "timeoutSeconds": 120},
    ]
    spec = parse_rollout({"strategy": "BlueGreen", "analysis": {"webhooks": hooks}})
    assert spec.analysis is not None
    assert spec.analysis.webhooks == (
        WebhookSpec("evals", "http://evals.ml.svc/check", 10, (("min", "0.9"), ("suite", "smoke"))),
        WebhookSpec("load", "https://load.example.com/run", 120),
    )
    # Webhooks alone are a criterion, one that checks the canary itself.
    assert spec.analysis.has_threshold and spec.analysis.probes_canary and not spec.analysis.has_traffic_threshold


HOOK = {"name": "evals", "url": "http://evals/check"}
H0 = "spec.rollout.analysis.webhooks[0].headers[0]"


@pytest.mark.parametrize(
    ("hooks", "field", "words"),
    [
        ([], "spec.rollout.analysis.webhooks", "non-empty list"),
        ([HOOK] * 9, "spec.rollout.analysis.webhooks", "at most 8"),
        ([HOOK, HOOK], "spec.rollout.analysis.webhooks", "two webhooks are named 'evals'"),
        (["http://evals/check"], "spec.rollout.analysis.webhooks[0]", "expected an object"),
        ([{**HOOK, "name": "Evals"}], "spec.rollout.analysis.webhooks[0].name", "DNS label"),
        ([{**HOOK, "name": "e" * 64}], "spec.rollout.analysis.webhooks[0].name", "DNS label"),
        ([{**HOOK, "url": "evals/check"}], "spec.rollout.analysis.webhooks[0].url", "http(s) URL"),
        ([{**HOOK, "url": "http:// evals"}], "spec.rollout.analysis.webhooks[0].url", "http(s) URL"),
        ([{**HOOK, "url": 7}], "spec.rollout.analysis.webhooks[0].url", "expected a string"),
        ([{**HOOK, "timeoutSeconds": 0}], "spec.rollout.analysis.webhooks[0].timeoutSeconds", "between 1 and 300"),
        ([{**HOOK, "metadata": {"n": 1}}], "spec.rollout.analysis.webhooks[0].metadata.n", "expected a string"),
        ([{**HOOK, "metadata": ["a"]}], "spec.rollout.analysis.webhooks[0].metadata", "expected an object"),
        ([{**HOOK, "headers": [{"name": "X A", "value": "v"}]}], f"{H0}.name", "expected an HTTP header name"),
        ([{**HOOK, "headers": [{"name": "Host", "value": "v"}]}], f"{H0}.name", "set by the operator's HTTP client"),
        ([{**HOOK, "headers": [{"name": "A"}]}], H0, "exactly one of value or valueFrom"),
        ([{**HOOK, "headers": [{"name": "A", "value": "x\ny"}]}], f"{H0}.value", "printable ASCII"),
        ([{**HOOK, "headers": [{"name": "A", "value": 1}]}], f"{H0}.value", "printable ASCII"),
        ([{**HOOK, "headers": [{"name": "A", "valueFrom": {}}]}], f"{H0}.valueFrom.secretKeyRef", "required"),
        ([{**HOOK, "headers": [{"name": "A", "valueFrom": {"secretKeyRef": {"name": "T", "key": "k"}}}]}],
         f"{H0}.valueFrom.secretKeyRef.name", "expected a Secret name"),
        ([{**HOOK, "headers": [{"name": "A", "valueFrom": {"secretKeyRef": {"name": "t", "key": "a/b"}}}]}],
         f"{H0}.valueFrom.secretKeyRef.key", "expected a Secret key"),
        ([{**HOOK, "headers": [{"name": "A", "value": "1"}, {"name": "a", "value": "2"}]}],
         "spec.rollout.analysis.webhooks[0].headers", "two headers are named 'a'"),
    ],
)
def test_webhooks_the_schema_did_not_check_are_refused_by_name(hooks: Any, field: str, words: str) -> None:
    """An object stored before the CRD knew webhooks (or under a looser one) is refused by the operator itself."""
    with pytest.raises(RolloutSpecError) as info:
        parse_rollout({"analysis": {"webhooks": hooks}})
    assert info.value.field_path == field and words in info.value.message


def test_a_canary_checked_by_webhooks_before_traffic_needs_room_for_a_pod() -> None:
    raw = {
        "strategy": "Canary",
        "canary": {"steps": [{"analysis": {}}, {"setWeight": 50}], "capacity": {"mode": "Neutral", "maxSurgePods": 0}},
        "analysis": {"webhooks": [HOOK], "count": 1, "failureLimit": 0},
    }
    with pytest.raises(RolloutSpecError, match=r"checks the canary \(goldenRequests or webhooks\) before"):
        parse_rollout(raw)
    raw["canary"]["capacity"]["maxSurgePods"] = 1
    parse_rollout(raw)
