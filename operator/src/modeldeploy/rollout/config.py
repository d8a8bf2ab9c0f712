"""The ``spec.rollout`` block as typed, frozen dataclasses.

``parse_rollout`` takes the plain mapping (normally already defaulted by the CRD schema) and is robust to
missing keys: every field has the CRD's default. It checks what the schema cannot express (duration strings,
int-or-percent values, cross-field rules) and raises ``RolloutSpecError(field_path, message)``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

Strategy: TypeAlias = Literal["RollingUpdate", "Canary", "BlueGreen"]
RoutingType: TypeAlias = Literal["Replicas", "GatewayAPI"]
CapacityMode: TypeAlias = Literal["Surge", "Neutral"]
SourceType: TypeAlias = Literal["Scrape", "Prometheus"]

_BASE = "spec.rollout"


class RolloutSpecError(ValueError):
    """A ``spec.rollout`` value the operator cannot use; ``field_path`` names it."""

    def __init__(self, field_path: str, message: str) -> None:
        super().__init__(f"{field_path}: {message}")
        self.field_path = field_path
        self.message = message


# --- durations --------------------------------------------------------------------------------------------

_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ns|us|µs|ms|s|m|h)")
MAX_PAUSE_SECONDS = 7 * 24 * 3600
"""Longest ``pause.duration`` (168h, as the CRD's rule); to wait longer, a pause without duration and a promotion."""
MAX_ANALYSIS_INTERVAL_SECONDS = 24 * 3600
"""Longest ``analysis.interval`` (24h, as the CRD's rule): a run of 100 measurements then takes 100 days."""


def parse_duration(value: object, field_path: str) -> float:
    """Seconds in a Go-style duration such as ``30s``, ``5m``, ``1h30m`` or ``1.5h``.

    A bare non-negative number is taken as seconds. Anything else raises ``RolloutSpecError``.
    """
    if isinstance(value, bool):
        raise RolloutSpecError(field_path, f"expected a duration such as 30s, 5m or 1h30m, got {value!r}")
    if isinstance(value, int | float):
        if not math.isfinite(value) or value < 0:
            raise RolloutSpecError(field_path, f"a duration must be a non-negative number of seconds, got {value!r}")
        return float(value)
    if not isinstance(value, str) or not value:
        raise RolloutSpecError(field_path, f"expected a duration such as 30s, 5m or 1h30m, got {value!r}")
    text = value.strip()
    if text == "0":
        return 0.0
    position = 0
    total = 0.0
    for match in _DURATION_PART.finditer(text):
        if match.start() != position:
            break
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        position = match.end()
    if position != len(text) or position == 0:
        raise RolloutSpecError(
            field_path,
            f"invalid duration {value!r}: use numbers with units ns, us, ms, s, m, h, such as 90s or 1h30m",
        )
    return total


# --- int or percent ---------------------------------------------------------------------------------------

_INT_OR_PERCENT = re.compile(r"^([0-9]+)(%?)$")


@dataclass(frozen=True)
class IntOrPercent:
    """An absolute count or a percentage of a total, like Kubernetes' maxSurge / maxUnavailable."""

    value: int
    percent: bool = False

    def resolve(self, total: int, *, round_up: bool) -> int:
        """The count for ``total`` pods; percentages round up (surge) or down (unavailable)."""
        if not self.percent:
            return self.value
        exact = total * self.value / 100
        return math.ceil(exact) if round_up else math.floor(exact)

    def __str__(self) -> str:
        return f"{self.value}%" if self.percent else str(self.value)


def parse_int_or_percent(value: object, field_path: str) -> IntOrPercent:
    """``3`` or ``"25%"`` (or ``"3"``); negative numbers and other strings raise ``RolloutSpecError``."""
    if isinstance(value, bool):
        raise RolloutSpecError(field_path, f"expected a number or a percentage such as 25%, got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise RolloutSpecError(field_path, f"must not be negative, got {value}")
        return IntOrPercent(value)
    if isinstance(value, str):
        match = _INT_OR_PERCENT.match(value.strip())
        if match:
            return IntOrPercent(int(match.group(1)), percent=bool(match.group(2)))
    raise RolloutSpecError(field_path, f"expected a number or a percentage such as 25%, got {value!r}")


# --- the typed spec ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SetWeightStep:
    """Send ``weight`` percent of the traffic to the canary."""

    weight: int


@dataclass(frozen=True)
class MirrorStep:
    """Copy ``percent`` percent of the requests to the canary while it has no live traffic (Gateway API): the
    gateway discards the canary's answers, so its analysis sees real requests before any client depends on it."""

    percent: int


@dataclass(frozen=True)
class PauseStep:
    """Wait ``seconds``; ``None`` waits until promoted."""

    seconds: float | None


@dataclass(frozen=True)
class AnalysisStep:
    """Run ``spec.rollout.analysis`` once and continue only if it passes."""


Step: TypeAlias = SetWeightStep | MirrorStep | PauseStep | AnalysisStep


@dataclass(frozen=True)
class RollingUpdateSpec:
    max_surge: IntOrPercent = IntOrPercent(25, percent=True)
    max_unavailable: IntOrPercent = IntOrPercent(0)


@dataclass(frozen=True)
class HeaderMatch:
    name: str
    value: str


@dataclass(frozen=True)
class GatewayAPISpec:
    http_route: str = ""
    """Existing HTTPRoute to manage our backendRefs in; empty: the operator creates one (NAME)."""
    parent_refs: tuple[Mapping[str, str], ...] = ()
    header: HeaderMatch | None = None


@dataclass(frozen=True)
class TrafficRoutingSpec:
    type: RoutingType = "Replicas"
    gateway_api: GatewayAPISpec | None = None


@dataclass(frozen=True)
class CapacitySpec:
    mode: CapacityMode = "Surge"
    max_surge_pods: int = 1

    @property
    def room_beside_stable(self) -> bool:
        """Whether canary pods can run beside all of the stable's (for a mirror, or golden requests before any
        traffic): not with Neutral capacity and maxSurgePods 0."""
        return self.mode != "Neutral" or self.max_surge_pods > 0


@dataclass(frozen=True)
class CanarySpec:
    steps: tuple[Step, ...] = ()
    traffic_routing: TrafficRoutingSpec = TrafficRoutingSpec()
    capacity: CapacitySpec = CapacitySpec()


@dataclass(frozen=True)
class BlueGreenSpec:
    auto_promotion_enabled: bool = False
    auto_promotion_seconds: int = 0
    preview_service: bool = True


@dataclass(frozen=True)
class PrometheusSpec:
    url: str
    error_ratio_query: str = ""
    p99_latency_query: str = ""


@dataclass(frozen=True)
class MetricSourceSpec:
    type: SourceType = "Scrape"
    prometheus: PrometheusSpec | None = None


GOLDEN_DATATYPES = ("FP16", "FP32", "FP64", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64")
"""Tensor datatypes a golden request may send (the Open Inference Protocol's numeric ones)."""


@dataclass(frozen=True)
class GoldenTensor:
    """One input of a golden request, as the Open Inference Protocol's JSON carries it (``data`` row-major)."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: tuple[float, ...]


@dataclass(frozen=True)
class GoldenOutput:
    """What one output must be: ``data`` (every value, within the tolerances) or ``argmax`` (the index of the
    largest value along the last axis, one per row: a classifier's classes)."""

    name: str
    data: tuple[float, ...] | None = None
    argmax: tuple[int, ...] | None = None


@dataclass(frozen=True)
class GoldenCase:
    name: str
    inputs: tuple[GoldenTensor, ...]
    outputs: tuple[GoldenOutput, ...]


@dataclass(frozen=True)
class GoldenSpec:
    """``spec.rollout.analysis.goldenRequests``: known inputs and the answers a revision must give."""

    cases: tuple[GoldenCase, ...]
    max_mismatches: int = 0
    absolute_tolerance: float = 1e-5
    relative_tolerance: float = 1e-4


WEBHOOK_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
"""A webhook's name: a DNS label, as the CRD's pattern (it names the check in messages and events)."""
MAX_WEBHOOKS = 8
MAX_WEBHOOK_METADATA = 16
MAX_WEBHOOK_HEADERS = 8
HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}$")
"""An HTTP header name (a token), as the CRD's pattern."""
HEADER_VALUE = re.compile(r"^[ -~]{0,4096}$")
"""A header value typed in the spec: printable ASCII (no line break can end the header)."""
RESERVED_HEADERS = frozenset({"host", "content-type", "content-length", "transfer-encoding", "connection"})
"""Set by the operator's HTTP client; a webhook's headers may not replace them."""
SECRET_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
SECRET_KEY = re.compile(r"^[-._a-zA-Z0-9]{1,253}$")


@dataclass(frozen=True)
class WebhookHeader:
    """One request header of a webhook: ``value`` as is, or the key ``secret_key`` of the Secret ``secret``."""

    name: str
    value: str | None = None
    secret: str | None = None
    secret_key: str | None = None


@dataclass(frozen=True)
class WebhookSpec:
    """One entry of ``spec.rollout.analysis.webhooks``: a check of the user's own, asked at every measurement."""

    name: str
    url: str
    timeout_seconds: int = 10
    metadata: tuple[tuple[str, str], ...] = ()
    """Passed to the webhook as is (sorted by key), to tell one check's settings from another's."""
    headers: tuple[WebhookHeader, ...] = ()


@dataclass(frozen=True)
class AnalysisSpec:
    source: MetricSourceSpec = MetricSourceSpec()
    interval_seconds: float = 30.0
    count: int = 3
    min_requests: int = 50
    failure_limit: int = 1
    consecutive_error_limit: int = 4
    """Measurements that could not be taken (source errors) tolerated in a row; one more fails the run."""
    max_error_ratio: float | None = None
    max_p99_latency_ms: float | None = None
    max_error_ratio_increase: float | None = None
    max_p99_latency_ratio: float | None = None
    golden: GoldenSpec | None = None
    """Golden requests, checked at every measurement (``assess_measurement``)."""
    webhooks: tuple[WebhookSpec, ...] = ()
    """The user's own checks, asked at every measurement (``assess_measurement``)."""

    @property
    def has_threshold(self) -> bool:
        """Whether any criterion is configured: a traffic threshold, golden requests or webhooks."""
        return self.has_traffic_threshold or self.probes_canary

    @property
    def probes_canary(self) -> bool:
        """Whether a measurement checks the canary itself (golden requests, webhooks), which needs no traffic: an
        analysis step reached before the canary has any gives it a pod for them."""
        return self.golden is not None or bool(self.webhooks)

    @property
    def has_traffic_threshold(self) -> bool:
        """Whether any of the four traffic criteria is configured."""
        return any(
            limit is not None
            for limit in (
                self.max_error_ratio,
                self.max_p99_latency_ms,
                self.max_error_ratio_increase,
                self.max_p99_latency_ratio,
            )
        )


@dataclass(frozen=True)
class KeepWarmSpec:
    replicas: int = 1
    seconds: int = 600


@dataclass(frozen=True)
class RolloutSpec:
    strategy: Strategy = "RollingUpdate"
    progress_deadline_seconds: int = 600
    rolling_update: RollingUpdateSpec = RollingUpdateSpec()
    canary: CanarySpec | None = None
    blue_green: BlueGreenSpec = BlueGreenSpec()
    analysis: AnalysisSpec | None = None
    first_deploy_analysis: bool = False
    keep_previous_warm: KeepWarmSpec | None = None
    promote: str = ""
    abort: bool = False
    rollback_to: int = 0
    revision_history_limit: int = 10
    """From ``spec.revisionHistoryLimit`` (outside the rollout block), passed to ``parse_rollout``."""
    steps: tuple[Step, ...] = field(default=(), repr=False)
    """Canary steps (empty unless the strategy is Canary)."""

    @property
    def routing(self) -> TrafficRoutingSpec:
        return self.canary.traffic_routing if self.canary is not None else TrafficRoutingSpec()

    @property
    def capacity(self) -> CapacitySpec:
        return self.canary.capacity if self.canary is not None else CapacitySpec()


# --- parsing ----------------------------------------------------------------------------------------------


def _mapping(raw: Mapping[str, Any], key: str, path: str) -> Mapping[str, Any] | None:
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise RolloutSpecError(f"{path}.{key}", f"expected an object, got {type(value).__name__}")
    return value


def _int(raw: Mapping[str, Any], key: str, path: str, default: int, *, low: int = 0, high: int | None = None) -> int:
    value = raw.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise RolloutSpecError(f"{path}.{key}", f"expected an integer, got {value!r}")
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise RolloutSpecError(f"{path}.{key}", f"must be {bound}, got {value}")
    return value


def _bool(raw: Mapping[str, Any], key: str, path: str, default: bool) -> bool:
    value = raw.get(key, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise RolloutSpecError(f"{path}.{key}", f"expected true or false, got {value!r}")
    return value


def _str(raw: Mapping[str, Any], key: str, path: str, default: str = "") -> str:
    value = raw.get(key, default)
    if value is None:
        return default
    if not isinstance(value, str):
        raise RolloutSpecError(f"{path}.{key}", f"expected a string, got {value!r}")
    return value


QUERY_PLACEHOLDERS = ("{{revision}}", "{{namespace}}", "{{interval}}")
"""What the Prometheus source substitutes in a custom query (``analysis.sources.PrometheusSource.render``)."""


def _query(raw: Mapping[str, Any], key: str, path: str) -> str:
    """A custom Prometheus query. Anything else between double braces (``{{ revision }}``, ``{{rev}}``) would reach
    Prometheus as it is, which no PromQL parser accepts: every measurement would fail, and past
    ``consecutiveErrorLimit`` a good revision would be rolled back. Refused here, before any rollout."""
    query = _str(raw, key, path)
    rest = query
    for placeholder in QUERY_PLACEHOLDERS:
        rest = rest.replace(placeholder, "")
    unknown = re.search(r"\{\{\s*[A-Za-z_][\w.]*(\s*\}\})?", rest)  # a placeholder's start, or all of one
    if unknown is not None:
        raise RolloutSpecError(
            f"{path}.{key}",
            f"unknown placeholder {unknown.group(0)!r}: a query can use {', '.join(QUERY_PLACEHOLDERS)}, "
            "written exactly so",
        )
    return query


def _choice(raw: Mapping[str, Any], key: str, path: str, choices: Sequence[str], default: str) -> str:
    value = _str(raw, key, path, default) or default
    if value not in choices:
        raise RolloutSpecError(f"{path}.{key}", f"must be one of {', '.join(choices)}, got {value!r}")
    return value


def _number(raw: Mapping[str, Any], key: str, path: str, *, low: float, high: float | None = None) -> float | None:
    value = raw.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise RolloutSpecError(f"{path}.{key}", f"expected a number, got {value!r}")
    if value < low or (high is not None and value > high):
        bound = f"between {low:g} and {high:g}" if high is not None else f"at least {low:g}"
        raise RolloutSpecError(f"{path}.{key}", f"must be {bound}, got {value!r}")
    return float(value)


_STEP_KINDS = ("setWeight", "setMirror", "pause", "analysis")


def _parse_step(raw: object, path: str) -> Step:
    kinds = ", ".join(_STEP_KINDS)
    if not isinstance(raw, Mapping):
        raise RolloutSpecError(path, f"expected an object with one of {kinds}, got {raw!r}")
    keys = [k for k in _STEP_KINDS if k in raw and raw[k] is not None]
    if len(keys) != 1:
        raise RolloutSpecError(path, f"a step must have exactly one of {kinds}, got {sorted(raw)}")
    key = keys[0]
    if key == "setWeight":
        return SetWeightStep(_int(raw, "setWeight", path, 0, low=0, high=100))
    if key == "setMirror":
        return MirrorStep(_int(raw, "setMirror", path, 0, low=0, high=100))
    if key == "pause":
        pause = _mapping(raw, "pause", path) or {}
        duration = pause.get("duration")
        if duration is None or duration == "":
            return PauseStep(None)
        seconds = parse_duration(duration, f"{path}.pause.duration")
        if seconds > MAX_PAUSE_SECONDS:
            raise RolloutSpecError(
                f"{path}.pause.duration",
                f"must be at most 168h (7 days), got {duration!r}; leave it out to wait until promoted",
            )
        return PauseStep(seconds)
    if _mapping(raw, "analysis", path) is None:
        raise RolloutSpecError(f"{path}.analysis", "expected an object")
    return AnalysisStep()


def _check_mirror_steps(steps: Sequence[Step], path: str, routing: str, capacity: CapacitySpec) -> None:
    """A mirror needs a gateway that copies requests, pods of its own beside the stable's, and a canary without
    live traffic: a request the canary answers for real would otherwise reach it twice."""
    live_from: int | None = None
    for i, step in enumerate(steps):
        if isinstance(step, SetWeightStep) and step.weight > 0 and live_from is None:
            live_from = i
        if not isinstance(step, MirrorStep) or step.percent == 0:
            continue
        field_path = f"{path}.steps[{i}].setMirror"
        if routing != "GatewayAPI":
            raise RolloutSpecError(field_path, "setMirror needs trafficRouting type GatewayAPI")
        if not capacity.room_beside_stable:
            raise RolloutSpecError(
                field_path, "setMirror needs pods beside the stable's: capacity Neutral with maxSurgePods 0 has none"
            )
        if live_from is not None:
            raise RolloutSpecError(
                field_path,
                f"setMirror must come before the first step that gives the canary traffic (steps[{live_from}])",
            )


def _check_probe_gate(canary: CanarySpec, path: str) -> None:
    """An analysis step reached while the canary has no traffic gives it a pod, beside the stable's, for the golden
    requests or webhooks; capacity Neutral with maxSurgePods 0 has no room for one."""
    if canary.capacity.room_beside_stable:
        return
    weight = 0
    for i, step in enumerate(canary.steps):
        if isinstance(step, SetWeightStep):
            weight = step.weight
        elif isinstance(step, AnalysisStep) and weight == 0:
            raise RolloutSpecError(
                f"{path}.steps[{i}].analysis",
                "this analysis checks the canary (goldenRequests or webhooks) before it has traffic, on a pod beside "
                "the stable's, and capacity Neutral with maxSurgePods 0 has no room for one: allow maxSurgePods 1, "
                "or move the step after a setWeight step",
            )


def _parse_gateway(raw: Mapping[str, Any], path: str) -> GatewayAPISpec:
    refs_raw = raw.get("parentRefs") or []
    if not isinstance(refs_raw, Sequence) or isinstance(refs_raw, str):
        raise RolloutSpecError(f"{path}.parentRefs", "expected a list of Gateway references")
    refs: list[Mapping[str, str]] = []
    for i, ref in enumerate(refs_raw):
        if not isinstance(ref, Mapping) or not isinstance(ref.get("name"), str) or not ref["name"]:
            raise RolloutSpecError(f"{path}.parentRefs[{i}]", "expected an object with a non-empty name")
        refs.append({str(k): str(v) for k, v in ref.items() if v not in (None, "")})
    http_route = _str(raw, "httpRoute", path)
    if not http_route and not refs:
        raise RolloutSpecError(
            path, "set httpRoute (an existing route) or parentRefs (for a route the operator creates)"
        )
    header_raw = _mapping(raw, "header", path)
    header = None
    if header_raw is not None:
        name = _str(header_raw, "name", f"{path}.header")
        if not name:
            raise RolloutSpecError(f"{path}.header.name", "must not be empty")
        header = HeaderMatch(name=name, value=_str(header_raw, "value", f"{path}.header"))
    return GatewayAPISpec(http_route=http_route, parent_refs=tuple(refs), header=header)


def _parse_canary(raw: Mapping[str, Any], path: str) -> CanarySpec:
    steps_raw = raw.get("steps") or []
    if not isinstance(steps_raw, Sequence) or isinstance(steps_raw, str):
        raise RolloutSpecError(f"{path}.steps", "expected a list of steps")
    steps = tuple(_parse_step(s, f"{path}.steps[{i}]") for i, s in enumerate(steps_raw))
    tr_raw = _mapping(raw, "trafficRouting", path) or {}
    tr_path = f"{path}.trafficRouting"
    tr_type = _choice(tr_raw, "type", tr_path, ("Replicas", "GatewayAPI"), "Replicas")
    gateway = None
    gw_raw = _mapping(tr_raw, "gatewayAPI", tr_path)
    if tr_type == "GatewayAPI":
        if gw_raw is None:
            raise RolloutSpecError(f"{tr_path}.gatewayAPI", "type GatewayAPI needs the gatewayAPI block")
        gateway = _parse_gateway(gw_raw, f"{tr_path}.gatewayAPI")
    cap_raw = _mapping(raw, "capacity", path) or {}
    capacity = CapacitySpec(
        mode=_choice(cap_raw, "mode", f"{path}.capacity", ("Surge", "Neutral"), "Surge"),  # type: ignore[arg-type]
        max_surge_pods=_int(cap_raw, "maxSurgePods", f"{path}.capacity", 1, high=1000),
    )
    _check_mirror_steps(steps, path, tr_type, capacity)
    return CanarySpec(
        steps=steps,
        traffic_routing=TrafficRoutingSpec(type=tr_type, gateway_api=gateway),  # type: ignore[arg-type]
        capacity=capacity,
    )


def _parse_analysis(raw: Mapping[str, Any], path: str) -> AnalysisSpec:
    src_raw = _mapping(raw, "source", path) or {}
    src_path = f"{path}.source"
    src_type = _choice(src_raw, "type", src_path, ("Scrape", "Prometheus"), "Scrape")
    prometheus = None
    prom_raw = _mapping(src_raw, "prometheus", src_path)
    if src_type == "Prometheus":
        if prom_raw is None:
            raise RolloutSpecError(f"{src_path}.prometheus", "source type Prometheus needs the prometheus block")
        url = _str(prom_raw, "url", f"{src_path}.prometheus")
        if not re.match(r"^https?://[^\s/]+", url):
            raise RolloutSpecError(f"{src_path}.prometheus.url", f"expected an http(s) URL, got {url!r}")
        prometheus = PrometheusSpec(
            url=url.rstrip("/"),
            error_ratio_query=_query(prom_raw, "errorRatioQuery", f"{src_path}.prometheus"),
            p99_latency_query=_query(prom_raw, "p99LatencyQuery", f"{src_path}.prometheus"),
        )
    interval = parse_duration(raw.get("interval") or "30s", f"{path}.interval")
    if interval <= 0:
        raise RolloutSpecError(f"{path}.interval", "must be longer than zero")
    if interval > MAX_ANALYSIS_INTERVAL_SECONDS:
        raise RolloutSpecError(f"{path}.interval", f"must be at most 24h, got {raw.get('interval')!r}")
    spec = AnalysisSpec(
        source=MetricSourceSpec(type=src_type, prometheus=prometheus),  # type: ignore[arg-type]
        interval_seconds=interval,
        count=_int(raw, "count", path, 3, low=1, high=100),
        min_requests=_int(raw, "minRequests", path, 50),
        failure_limit=_int(raw, "failureLimit", path, 1, high=100),
        consecutive_error_limit=_int(raw, "consecutiveErrorLimit", path, 4, high=100),
        max_error_ratio=_number(raw, "maxErrorRatio", path, low=0, high=1),
        max_p99_latency_ms=_number(raw, "maxP99LatencyMs", path, low=0),
        max_error_ratio_increase=_number(raw, "maxErrorRatioIncrease", path, low=0, high=1),
        max_p99_latency_ratio=_number(raw, "maxP99LatencyRatio", path, low=1),
        golden=_parse_golden(raw, path),
        webhooks=_parse_webhooks(raw, path),
    )
    if not spec.has_threshold:
        raise RolloutSpecError(
            path,
            "analysis needs at least one threshold (maxErrorRatio, maxP99LatencyMs, maxErrorRatioIncrease, "
            "maxP99LatencyRatio), goldenRequests or webhooks",
        )
    if spec.failure_limit >= spec.count:
        # A run fails once more than failureLimit measurements fail, and ends after count of them: such a run
        # always succeeds, whatever the revision does. The CRD refuses it too; this catches objects stored before.
        raise RolloutSpecError(
            f"{path}.failureLimit",
            f"failureLimit must be less than count: a run of {spec.count} measurements with failureLimit "
            f"{spec.failure_limit} can never fail; with count 1 set failureLimit 0",
        )
    return spec


def _parse_golden(raw: Mapping[str, Any], path: str) -> GoldenSpec | None:
    golden = _mapping(raw, "goldenRequests", path)
    if golden is None:
        return None
    path = f"{path}.goldenRequests"
    cases_raw = golden.get("cases")
    if not isinstance(cases_raw, list) or not cases_raw:
        raise RolloutSpecError(f"{path}.cases", "expected a non-empty list of cases")
    if len(cases_raw) > 32:
        raise RolloutSpecError(f"{path}.cases", f"at most 32 cases, got {len(cases_raw)}")
    cases = [_parse_case(case, f"{path}.cases[{i}]") for i, case in enumerate(cases_raw)]
    _unique([c.name for c in cases], f"{path}.cases", "case")
    absolute = _number(golden, "absoluteTolerance", path, low=0)
    relative = _number(golden, "relativeTolerance", path, low=0)
    return GoldenSpec(
        cases=tuple(cases),
        max_mismatches=_int(golden, "maxMismatches", path, 0),
        absolute_tolerance=1e-5 if absolute is None else absolute,
        relative_tolerance=1e-4 if relative is None else relative,
    )


def _parse_webhooks(raw: Mapping[str, Any], path: str) -> tuple[WebhookSpec, ...]:
    if raw.get("webhooks") is None:
        return ()
    hooks: list[WebhookSpec] = []
    for i, hook in enumerate(_items(raw, "webhooks", path, MAX_WEBHOOKS)):
        hook_path = f"{path}.webhooks[{i}]"
        name = _str(hook, "name", hook_path)
        if not WEBHOOK_NAME.match(name) or len(name) > 63:
            raise RolloutSpecError(f"{hook_path}.name", f"expected a DNS label (at most 63 characters), got {name!r}")
        url = _str(hook, "url", hook_path)
        if not re.match(r"^https?://[^\s/]+", url) or len(url) > 2048:
            raise RolloutSpecError(f"{hook_path}.url", f"expected an http(s) URL, got {url[:100]!r}")
        metadata = _mapping(hook, "metadata", hook_path) or {}
        if len(metadata) > MAX_WEBHOOK_METADATA:
            raise RolloutSpecError(f"{hook_path}.metadata", f"at most {MAX_WEBHOOK_METADATA} entries")
        for key, value in metadata.items():
            if not isinstance(value, str):
                raise RolloutSpecError(f"{hook_path}.metadata.{key}", f"expected a string, got {value!r}")
        hooks.append(
            WebhookSpec(
                name=name,
                url=url,
                timeout_seconds=_int(hook, "timeoutSeconds", hook_path, 10, low=1, high=300),
                metadata=tuple(sorted((str(k), v) for k, v in metadata.items())),
                headers=_parse_headers(hook, hook_path),
            )
        )
    _unique([h.name for h in hooks], f"{path}.webhooks", "webhook")
    return tuple(hooks)


def _parse_headers(hook: Mapping[str, Any], path: str) -> tuple[WebhookHeader, ...]:
    if hook.get("headers") is None:
        return ()
    headers: list[WebhookHeader] = []
    for i, raw in enumerate(_items(hook, "headers", path, MAX_WEBHOOK_HEADERS)):
        where = f"{path}.headers[{i}]"
        name = _str(raw, "name", where)
        if not HEADER_NAME.match(name):
            raise RolloutSpecError(f"{where}.name", f"expected an HTTP header name, got {name[:100]!r}")
        if name.lower() in RESERVED_HEADERS:
            raise RolloutSpecError(f"{where}.name", f"{name} is set by the operator's HTTP client")
        if ("value" in raw) == ("valueFrom" in raw):
            raise RolloutSpecError(where, "a header takes exactly one of value or valueFrom")
        if "value" in raw:
            value = raw["value"]
            if not isinstance(value, str) or not HEADER_VALUE.match(value):
                raise RolloutSpecError(f"{where}.value", "expected printable ASCII, at most 4096 characters")
            headers.append(WebhookHeader(name, value=value))
            continue
        ref = _mapping(_mapping(raw, "valueFrom", where) or {}, "secretKeyRef", f"{where}.valueFrom")
        ref_path = f"{where}.valueFrom.secretKeyRef"
        if ref is None:
            raise RolloutSpecError(ref_path, "required")
        secret, key = _str(ref, "name", ref_path), _str(ref, "key", ref_path)
        if not SECRET_NAME.match(secret) or len(secret) > 253:
            raise RolloutSpecError(f"{ref_path}.name", f"expected a Secret name, got {secret[:100]!r}")
        if not SECRET_KEY.match(key):
            raise RolloutSpecError(f"{ref_path}.key", f"expected a Secret key, got {key[:100]!r}")
        headers.append(WebhookHeader(name, secret=secret, secret_key=key))
    _unique([h.name.lower() for h in headers], f"{path}.headers", "header")
    return tuple(headers)


def _unique(names: Sequence[str], path: str, what: str) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise RolloutSpecError(path, f"two {what}s are named {name!r}")
        seen.add(name)


def _items(raw: Mapping[str, Any], key: str, path: str, limit: int) -> list[Mapping[str, Any]]:
    items = raw.get(key)
    if not isinstance(items, list) or not items:
        raise RolloutSpecError(f"{path}.{key}", "expected a non-empty list")
    if len(items) > limit:
        raise RolloutSpecError(f"{path}.{key}", f"at most {limit} items, got {len(items)}")
    for i, item in enumerate(items):
        if not isinstance(item, Mapping):
            raise RolloutSpecError(f"{path}.{key}[{i}]", f"expected an object, got {type(item).__name__}")
    return items


def _numbers(raw: Mapping[str, Any], key: str, path: str, *, integers: bool = False) -> tuple[float, ...] | None:
    values = raw.get(key)
    if values is None:
        return None
    if not isinstance(values, list):
        raise RolloutSpecError(f"{path}.{key}", f"expected a list of numbers, got {type(values).__name__}")
    for i, value in enumerate(values):
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise RolloutSpecError(f"{path}.{key}[{i}]", f"expected a finite number, got {value!r}")
        if integers and value != int(value):
            raise RolloutSpecError(f"{path}.{key}[{i}]", f"expected an integer, got {value!r}")
    return tuple(values)


def _parse_case(raw: object, path: str) -> GoldenCase:
    if not isinstance(raw, Mapping):
        raise RolloutSpecError(path, f"expected an object, got {type(raw).__name__}")
    name = _str(raw, "name", path)
    if not name:
        raise RolloutSpecError(f"{path}.name", "every case needs a name")
    inputs = []
    for i, item in enumerate(_items(raw, "inputs", path, 16)):
        where = f"{path}.inputs[{i}]"
        datatype = _choice(item, "datatype", where, GOLDEN_DATATYPES, "FP32")
        shape = _numbers(item, "shape", where, integers=True)
        data = _numbers(item, "data", where, integers=not datatype.startswith("FP"))
        if shape is None or data is None:
            raise RolloutSpecError(where, "an input needs shape and data")
        if any(dim < 0 for dim in shape):
            raise RolloutSpecError(f"{where}.shape", f"dimensions must not be negative, got {list(shape)}")
        if math.prod(shape) != len(data):
            dims = [int(d) for d in shape]
            raise RolloutSpecError(f"{where}.data", f"shape {dims} holds {math.prod(dims)} values, not {len(data)}")
        inputs.append(GoldenTensor(_str(item, "name", where) or "input", datatype, tuple(map(int, shape)), data))
    _unique([t.name for t in inputs], f"{path}.inputs", "input")
    outputs = []
    for i, item in enumerate(_items(raw, "outputs", path, 16)):
        where = f"{path}.outputs[{i}]"
        data = _numbers(item, "data", where)
        argmax = _numbers(item, "argmax", where, integers=True)
        if (data is None) == (argmax is None):
            raise RolloutSpecError(where, "an expected output needs exactly one of data or argmax")
        out_name = _str(item, "name", where)
        if not out_name:
            raise RolloutSpecError(f"{where}.name", "every expected output needs the name the model gives it")
        outputs.append(
            GoldenOutput(out_name, data=data, argmax=None if argmax is None else tuple(int(a) for a in argmax))
        )
    _unique([o.name for o in outputs], f"{path}.outputs", "output")
    return GoldenCase(name, tuple(inputs), tuple(outputs))


def parse_rollout(raw: Mapping[str, Any] | None, *, revision_history_limit: int = 10) -> RolloutSpec:
    """Parse ``spec.rollout`` (a plain mapping; ``None`` or ``{}`` for all defaults) to a ``RolloutSpec``."""
    raw = raw or {}
    if not isinstance(raw, Mapping):
        raise RolloutSpecError(_BASE, f"expected an object, got {type(raw).__name__}")
    if revision_history_limit < 0:
        raise RolloutSpecError("spec.revisionHistoryLimit", f"must not be negative, got {revision_history_limit}")
    strategy = _choice(raw, "strategy", _BASE, ("RollingUpdate", "Canary", "BlueGreen"), "RollingUpdate")

    ru_raw = _mapping(raw, "rollingUpdate", _BASE) or {}
    ru_path = f"{_BASE}.rollingUpdate"
    rolling = RollingUpdateSpec(
        max_surge=parse_int_or_percent(ru_raw.get("maxSurge", "25%"), f"{ru_path}.maxSurge"),
        max_unavailable=parse_int_or_percent(ru_raw.get("maxUnavailable", 0), f"{ru_path}.maxUnavailable"),
    )
    if rolling.max_surge.value == 0 and rolling.max_unavailable.value == 0:
        raise RolloutSpecError(ru_path, "maxSurge and maxUnavailable must not both be zero")

    canary = None
    canary_raw = _mapping(raw, "canary", _BASE)
    if canary_raw is not None:
        canary = _parse_canary(canary_raw, f"{_BASE}.canary")
    if strategy == "Canary" and (canary is None or not canary.steps):
        # No steps: the canary is promoted as soon as it is ready (with its analysis gates, if any).
        canary = canary or CanarySpec()

    bg_raw = _mapping(raw, "blueGreen", _BASE) or {}
    bg_path = f"{_BASE}.blueGreen"
    blue_green = BlueGreenSpec(
        auto_promotion_enabled=_bool(bg_raw, "autoPromotionEnabled", bg_path, False),
        auto_promotion_seconds=_int(bg_raw, "autoPromotionSeconds", bg_path, 0, high=86400),
        preview_service=_bool(bg_raw, "previewService", bg_path, True),
    )

    analysis = None
    an_raw = _mapping(raw, "analysis", _BASE)
    if an_raw is not None:
        analysis = _parse_analysis(an_raw, f"{_BASE}.analysis")
    first_deploy_analysis = _bool(raw, "firstDeployAnalysis", _BASE, False)
    if first_deploy_analysis and analysis is None:
        raise RolloutSpecError(f"{_BASE}.analysis", "firstDeployAnalysis needs rollout.analysis")
    if strategy == "Canary" and canary is not None and analysis is None:
        for i, step in enumerate(canary.steps):
            if isinstance(step, AnalysisStep):
                raise RolloutSpecError(
                    f"{_BASE}.canary.steps[{i}].analysis", "a canary analysis step needs rollout.analysis"
                )
    if strategy == "Canary" and canary is not None and analysis is not None and analysis.probes_canary:
        _check_probe_gate(canary, f"{_BASE}.canary")

    warm = None
    warm_raw = _mapping(raw, "keepPreviousWarm", _BASE)
    if warm_raw is not None:
        warm_path = f"{_BASE}.keepPreviousWarm"
        warm = KeepWarmSpec(
            replicas=_int(warm_raw, "replicas", warm_path, 1, high=100),
            seconds=_int(warm_raw, "seconds", warm_path, 600, high=86400),
        )

    return RolloutSpec(
        strategy=strategy,  # type: ignore[arg-type]
        progress_deadline_seconds=_int(raw, "progressDeadlineSeconds", _BASE, 600, low=1, high=86400),
        rolling_update=rolling,
        canary=canary,
        blue_green=blue_green,
        analysis=analysis,
        first_deploy_analysis=first_deploy_analysis,
        keep_previous_warm=warm,
        promote=_str(raw, "promote", _BASE),
        abort=_bool(raw, "abort", _BASE, False),
        rollback_to=_int(raw, "rollbackTo", _BASE, 0),
        revision_history_limit=revision_history_limit,
        steps=canary.steps if (strategy == "Canary" and canary is not None) else (),
    )
