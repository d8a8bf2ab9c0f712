"""The CustomResourceDefinition: valid for the API server, self-documenting, bounded for CEL costs."""

from __future__ import annotations

import dataclasses
import functools
import json
import re
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, get_args

import kubernetes_validate
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modeldeploy import schema
from modeldeploy.analysis.criteria import Outcome, RunPhase
from modeldeploy.analysis.golden import GoldenResult
from modeldeploy.analysis.sample import Sample
from modeldeploy.analysis.webhooks import WebhookResult
from modeldeploy.build import CONTAINER_NAME, build_deployment
from modeldeploy.config import OperatorConfig
from modeldeploy.rollout.config import parse_rollout
from modeldeploy.rollout.plan import (
    MAX_ERROR_TEXT,
    AnalysisRequest,
    Controls,
    Measurement,
    Observed,
    RevisionInfo,
    RevisionObservation,
    next_rollout,
)
from modeldeploy.rollout.state import (
    MAX_ANALYSIS_RUNS,
    MAX_MESSAGE,
    MAX_PREFLIGHT_MESSAGE,
    MAX_REJECTED,
    PHASES,
    PREFLIGHT_RESULTS,
    RUN_PHASES,
    AnalysisRun,
    GpuPreflight,
    HistoryEntry,
    MeasurementRecord,
    Rejection,
    RollbackPin,
    RolloutStatus,
)
from modeldeploy.spec import BYTE_DIVISORS, CPU_DIVISORS, parse_model_deployment

REPO = Path(__file__).resolve().parents[2]
CANONICAL = REPO / "crds" / "modeldeploy.io_modeldeployments.yaml"
PACKAGED = REPO / "operator" / "src" / "modeldeploy" / "crds" / "modeldeploy.io_modeldeployments.yaml"
K8S_VERSION = kubernetes_validate.latest_version()

Node = tuple[str, Mapping[str, Any]]


def _crd() -> dict[str, Any]:
    crd = yaml.safe_load(CANONICAL.read_text(encoding="utf-8"))
    assert isinstance(crd, dict)
    return crd


def _walk(node: Mapping[str, Any], path: str = "") -> Iterator[Node]:
    """Every schema node below ``node`` (properties, map values, list items), with its path."""
    for key, sub in (node.get("properties") or {}).items():
        child = f"{path}.{key}" if path else key
        yield child, sub
        yield from _walk(sub, child)
    additional = node.get("additionalProperties")
    if isinstance(additional, Mapping):
        yield f"{path}[*]", additional
        yield from _walk(additional, f"{path}[*]")
    items = node.get("items")
    if isinstance(items, Mapping):
        yield f"{path}[]", items
        yield from _walk(items, f"{path}[]")


def _root() -> Mapping[str, Any]:
    root: Mapping[str, Any] = _crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return root


def test_packaged_copy_is_identical_to_the_canonical_crd() -> None:
    assert PACKAGED.read_bytes() == CANONICAL.read_bytes()


def test_schema_module_loads_the_packaged_crd() -> None:
    assert schema.crd_manifest() == _crd()


def test_crd_validates_as_apiextensions_v1_strictly() -> None:
    try:
        result = kubernetes_validate.validate(_crd(), K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as error:
        pytest.fail(f"CRD invalid at {list(error.absolute_path)}: {error.message}")
    assert result == ".".join(K8S_VERSION.split(".")[:2])


def test_validator_rejects_a_broken_crd() -> None:
    broken = _crd()
    broken["spec"]["versions"][0]["subresources"]["scale"]["labelSelector"] = ".status.selector"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def test_names_scope_and_version() -> None:
    spec = _crd()["spec"]
    assert _crd()["metadata"]["name"] == "modeldeployments.modeldeploy.io"
    assert spec["group"] == "modeldeploy.io"
    assert spec["scope"] == "Namespaced"
    assert spec["names"]["kind"] == "ModelDeployment"
    assert spec["names"]["plural"] == "modeldeployments"
    assert "mdeploy" in spec["names"]["shortNames"]
    assert "all" in spec["names"]["categories"]
    [version] = spec["versions"]
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)


def test_status_and_scale_subresources() -> None:
    sub = _crd()["spec"]["versions"][0]["subresources"]
    assert sub["status"] == {}
    assert sub["scale"] == {
        "specReplicasPath": ".spec.replicas",
        "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector",
    }


def test_printer_columns_point_at_schema_fields() -> None:
    columns = _crd()["spec"]["versions"][0]["additionalPrinterColumns"]
    names = [c["name"] for c in columns]
    assert names[:8] == ["Model", "Stable", "Canary", "Ready", "Desired", "Phase", "Weight", "Revision"]
    assert names[-1] == "Age"
    known = {path for path, _ in _walk(_root())}
    for column in columns:
        path = column["jsonPath"].lstrip(".")
        assert path in known or path == "metadata.creationTimestamp", column


def test_every_field_has_a_description() -> None:
    missing = [path for path, node in _walk(_root()) if not str(node.get("description", "")).strip()]
    assert missing == []
    assert _root().get("description")


def test_schema_is_structural() -> None:
    """Every node has a type, except int-or-string nodes (which must not have one)."""
    bad = []
    for path, node in _walk(_root()):
        if node.get("x-kubernetes-int-or-string"):
            if "type" in node:
                bad.append(path)
        elif "type" not in node:
            bad.append(path)
    assert bad == []


def test_strings_lists_and_maps_are_bounded_for_cel_cost() -> None:
    unbounded = []
    for path, node in _walk(_root()):
        kind = node.get("type")
        if path in ("apiVersion", "kind"):
            continue
        if kind == "string" and not ({"maxLength", "enum"} & node.keys() or node.get("format") == "date-time"):
            unbounded.append(path)
        if kind == "array" and "maxItems" not in node:
            unbounded.append(path)
        is_map = kind == "object" and isinstance(node.get("additionalProperties"), Mapping)
        if is_map and "maxProperties" not in node:
            unbounded.append(path)
        if node.get("x-kubernetes-int-or-string") and "maxLength" not in node:
            unbounded.append(path)  # the API server since 1.34 bounds an int-or-string's size by its maxLength
    assert unbounded == []


def _shape(node: Any) -> Any:
    """A schema without its descriptions."""
    if isinstance(node, dict):
        return {k: _shape(v) for k, v in node.items() if k != "description"}
    if isinstance(node, list):
        return [_shape(v) for v in node]
    return node


def _affinity() -> dict[str, Any]:
    node: dict[str, Any] = _root()["properties"]["spec"]["properties"]["runtime"]["properties"]["affinity"]
    return node["properties"]


def _pod_affinity_terms() -> dict[str, dict[str, Any]]:
    """The four copies of the pod affinity term: (anti-)affinity, required and preferred."""
    terms = {}
    for kind in ("podAffinity", "podAntiAffinity"):
        rules = _affinity()[kind]["properties"]
        terms[f"{kind}.required"] = rules["requiredDuringSchedulingIgnoredDuringExecution"]["items"]
        preferred = rules["preferredDuringSchedulingIgnoredDuringExecution"]["items"]
        terms[f"{kind}.preferred"] = preferred["properties"]["podAffinityTerm"]
    return terms


def test_the_label_selectors_share_one_schema() -> None:
    """A CRD cannot refer to a shared definition, so each label selector carries its own copy of the schema and its
    rules; they must not drift apart (only their descriptions differ)."""
    runtime = _root()["properties"]["spec"]["properties"]["runtime"]["properties"]
    peers = _root()["properties"]["spec"]["properties"]["networkPolicy"]["properties"]["ingressFrom"]["items"]
    selectors = {
        "podSelector": peers["properties"]["podSelector"],
        "namespaceSelector": peers["properties"]["namespaceSelector"],
        "labelSelector": runtime["topologySpreadConstraints"]["items"]["properties"]["labelSelector"],
    }
    for name, term in _pod_affinity_terms().items():
        selectors[f"{name}.labelSelector"] = term["properties"]["labelSelector"]
        selectors[f"{name}.namespaceSelector"] = term["properties"]["namespaceSelector"]
    assert len(selectors) == 11
    for name, node in selectors.items():
        assert _shape(node) == _shape(selectors["podSelector"]), name


def test_the_affinity_terms_share_one_schema() -> None:
    """The pod affinity term is copied four times and the node selector term twice; the copies must not drift
    apart. A required node selector term only adds the rule against an empty term."""
    terms = _pod_affinity_terms()
    for name, term in terms.items():
        assert _shape(term) == _shape(terms["podAffinity.required"]), name
    node = _affinity()["nodeAffinity"]["properties"]
    required = node["requiredDuringSchedulingIgnoredDuringExecution"]["properties"]["nodeSelectorTerms"]["items"]
    preferred = node["preferredDuringSchedulingIgnoredDuringExecution"]["items"]["properties"]["preference"]
    assert [r["message"] for r in required["x-kubernetes-validations"]] == [
        "a required node selector term needs matchExpressions or matchFields (an empty term matches no node)"
    ]
    assert _shape({k: v for k, v in required.items() if k != "x-kubernetes-validations"}) == _shape(preferred)
    assert _shape(_affinity()["podAffinity"]) == _shape(_affinity()["podAntiAffinity"])


def test_no_rule_parses_quantities() -> None:
    """The API server rejects a CRD whose rule may cost more than 10,000,000 units, and its estimate of
    ``quantity(v)`` is 0.1 per character of ``v``. Before Kubernetes 1.34 an int-or-string value (as every quantity
    here is) is costed as a 3 MiB string whatever its maxLength: one ``quantity()`` is about 314,573 units, and
    comparing each request with its limit over a 16-entry map (32 calls) is over the limit. Quantities are compared
    by the operator's spec check instead (``modeldeploy.spec``)."""
    for rule in schema.cel_rules():
        assert not re.search(r"\b(quantity|isQuantity)\(", rule.rule), rule


def test_every_cel_rule_has_a_message_and_compiles() -> None:
    rules = schema.cel_rules()
    assert len(rules) >= 15
    for rule in rules:
        assert rule.message, rule
        schema._program(rule.rule)  # raises when the rule does not compile


def test_defaults_satisfy_their_own_schema() -> None:
    """A default must be valid where it is applied (the API server rejects the CRD otherwise)."""
    for path, node in _walk(_root()):
        if "default" not in node:
            continue
        default = node["default"]
        if "enum" in node:
            assert default in node["enum"], path
        if node.get("type") == "integer":
            assert isinstance(default, int), path
            assert node.get("minimum", default) <= default <= node.get("maximum", default), path


@pytest.mark.parametrize(
    ("block", "fields"),
    [
        (
            "spec.model",
            {"name", "version", "storageUri", "format", "entryPoint", "sha256", "storageSecretRef"},
        ),
        (
            "spec.runtime",
            {
                "image",
                "imagePullPolicy",
                "imagePullSecrets",
                "resources",
                "gpu",
                "env",
                "nodeSelector",
                "tolerations",
                "affinity",
                "topologySpreadConstraints",
                "priorityClassName",
                "runtimeClassName",
                "serviceAccountName",
                "podAnnotations",
                "podLabels",
                "batching",
                "drainSeconds",
                "port",
            },
        ),
        (
            "spec.autoscaling",
            {
                "minReplicas",
                "maxReplicas",
                "targetCPUUtilizationPercentage",
                "targetMemoryUtilizationPercentage",
                "inflightRequests",
                "behavior",
            },
        ),
        (
            "spec.rollout",
            {
                "strategy",
                "progressDeadlineSeconds",
                "rollingUpdate",
                "canary",
                "blueGreen",
                "analysis",
                "firstDeployAnalysis",
                "keepPreviousWarm",
                "promote",
                "abort",
                "rollbackTo",
            },
        ),
        (
            "status",
            {
                "observedGeneration",
                "phase",
                "conditions",
                "replicas",
                "readyReplicas",
                "selector",
                "url",
                "currentRevision",
                "stableRevision",
                "canaryRevision",
                "canaryWeight",
                "lastGoodSpecHash",
                "lastGoodGeneration",
                "rollout",
                "history",
            },
        ),
    ],
)
def test_field_names_follow_the_design(block: str, fields: set[str]) -> None:
    node: Mapping[str, Any] = _root()
    for part in block.split("."):
        node = node["properties"][part]
    assert fields <= set(node["properties"])


@pytest.mark.parametrize("path", ["status.rollout", "status.history[]"])
def test_rollout_status_is_open_for_the_rollout_engine(path: str) -> None:
    nodes = dict(_walk(_root()))
    assert nodes[path]["x-kubernetes-preserve-unknown-fields"] is True


ENV_NAME_RULE = ("spec", "runtime", "env", 0, "name")
ENV_SPECS: list[tuple[str, dict[str, Any]]] = [
    ("minimal", {}),
    (
        "every-variable",
        {
            "model": {"format": "Safetensors", "entryPoint": "pkg.mod:Net"},
            "runtime": {"auth": {"secretRef": {"name": "tokens"}}, "gpu": {"count": 1, "halfPrecision": True}},
        },
    ),
]


@pytest.mark.parametrize("extra", [s for _, s in ENV_SPECS], ids=[name for name, _ in ENV_SPECS])
def test_every_variable_the_operator_sets_is_reserved(extra: dict[str, Any]) -> None:
    """A user's variable of one of these names would be a second entry of the container's env. MODELSERVE_DEVICE
    is the exception: the user's replaces the operator's (test_build.py)."""
    body = {
        "apiVersion": schema.API_VERSION,
        "kind": schema.KIND,
        "metadata": {"name": "iris", "namespace": "ml"},
        "spec": {
            "model": {"version": "1", "storageUri": "s3://models/iris/1", **extra.get("model", {})},
            "runtime": extra.get("runtime", {}),
        },
    }
    deployment = build_deployment(parse_model_deployment(body), OperatorConfig(), "abcdef0123", 1)
    pod = deployment["spec"]["template"]["spec"]
    (server,) = [c for c in pod["containers"] if c["name"] == CONTAINER_NAME]
    (rule,) = [r for r in schema.cel_rules() if r.path == ENV_NAME_RULE]
    allowed = {e["name"] for e in server["env"] if schema.evaluate_rule(rule.rule, e["name"])}
    assert allowed <= {"MODELSERVE_DEVICE"}
    assert all("env" not in c for c in pod.get("initContainers", []))


def test_rollout_block_describes_every_strategy() -> None:
    rollout = _root()["properties"]["spec"]["properties"]["rollout"]
    for word in ("RollingUpdate", "Canary", "BlueGreen", "roll back", "status.rollout"):
        assert word in rollout["description"]


# --- status.rollout: everything the operator writes there is described, and valid ----------------------------

CHART_COPY = REPO / "charts" / "modeldeploy" / "crds" / CANONICAL.name
ROLLOUT = "status.rollout"
T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
STABLE, CANARY, OLD = "0123456789", "abcdef0123", "fedcba9876"
GOOD = Sample(requests=1000.0, errors=1.0, p99_seconds=0.1, pods=2)
BAD = Sample(requests=1000.0, errors=200.0, p99_seconds=0.1, pods=2)
THIN = Sample(requests=3.0, errors=0.0, p99_seconds=0.1, pods=1)
WRONG = "case 'setosa' on pod md-abc-1: output 'output': argmax [2], expected [0]"
# The canary's answers to ROLLOUT_SPECS["canary"]'s golden requests (maxMismatches 1) with each sample: the good
# one tolerates a wrong answer (so `detail` is written by a passing measurement too), the bad one does not.
GOLDEN = {
    "good": GoldenResult(checks=4, mismatches=1, pods=2, detail=(WRONG,)),
    "bad": GoldenResult(checks=4, mismatches=4, pods=2, detail=(WRONG,) * 3),
    "thin": GoldenResult(checks=4, mismatches=0, pods=2),
}
# The answers of ROLLOUT_SPECS["canary"]'s two webhooks with each sample.
NO = "webhook 'evals' answered HTTP 412: accuracy 0.71 < 0.9"
WEBHOOKS = {
    "good": WebhookResult(checks=2, failures=0),
    "bad": WebhookResult(checks=2, failures=1, detail=(NO, "webhook 'load' could not be asked: timeout")),
    "thin": WebhookResult(checks=2, failures=0),
}


def test_chart_copy_is_identical_to_the_canonical_crd() -> None:
    assert CHART_COPY.read_bytes() == CANONICAL.read_bytes(), "run `make sync-crds`"


def _full_rollout_status() -> RolloutStatus:
    """A status with every field of every record set (``test_full_rollout_status_sets_every_field`` checks)."""
    measurement = MeasurementRecord(
        T0 + timedelta(minutes=1),
        "Fail",
        "Failed maxErrorRatio: errorRatio 3.00% > maxErrorRatio 1.00%",
        Sample(requests=1000.0, errors=30.0, p99_seconds=0.25, pods=2),
        Sample(requests=3000.0, errors=3.0, p99_seconds=0.2, pods=6),
        GOLDEN["bad"],
        webhooks=WEBHOOKS["bad"],
    )
    run = AnalysisRun(
        id=f"{CANARY}-step-1-4",
        revision=CANARY,
        gate="step-1",
        started_at=T0,
        phase="Failed",
        measurements=(measurement,),
        message="2 consecutive measurement errors, more than consecutiveErrorLimit 1; last error: refused",
        consecutive_errors=2,
        last_error="Prometheus query failed: connection refused",
        last_error_at=T0 + timedelta(minutes=2),
        passed=4,
        inconclusive=1,
    )
    return RolloutStatus(
        phase="Paused",
        stable_revision=STABLE,
        canary_revision=CANARY,
        current_step_index=2,
        canary_weight=40,
        mirror_weight=25,
        step_started_at=T0 + timedelta(minutes=3),
        paused_at=T0 + timedelta(minutes=4),
        paused_phase="Promoting",
        waiting_since=T0 + timedelta(minutes=5),
        analysis_runs=(run,),
        rejected_revisions=(Rejection(CANARY, "MeasurementErrors", "Analysis at step 1: measurements ...", T0),),
        previous_revision=OLD,
        warm_until=T0 + timedelta(minutes=10),
        last_promote_token="promote-1",
        last_rollback_to=1,
        steps_hash="0123456789abcdef",
        rollback=RollbackPin(1, OLD, OLD, CANARY),
        gpu_preflight=GpuPreflight(CANARY, "Insufficient", 1, 2, 2, 1, "2 GPUs needed, 1 free", T0),
        message="Promotion of revision abcdef0123 paused by spec.paused",
        history=(HistoryEntry(CANARY, 2, "2", CANARY, T0), HistoryEntry(OLD, 1, "1", OLD, T0)),
    )


def _unset_fields(value: object, path: str) -> Iterator[str]:
    """Fields of ``value`` (a record, recursively) left empty: None, "", 0, () or False."""
    if isinstance(value, tuple):
        for item in value:
            yield from _unset_fields(item, f"{path}[]")
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for field in dataclasses.fields(value):
            sub = getattr(value, field.name)
            if not sub:
                yield f"{path}.{field.name}"
            yield from _unset_fields(sub, f"{path}.{field.name}")


def _key_paths(value: object, path: str) -> Iterator[str]:
    """The path of every key in a JSON document, with ``[]`` for list items (the form ``_walk`` yields)."""
    if isinstance(value, Mapping):
        for key, sub in value.items():
            yield f"{path}.{key}"
            yield from _key_paths(sub, f"{path}.{key}")
    elif isinstance(value, list):
        for item in value:
            yield f"{path}[]"
            yield from _key_paths(item, f"{path}[]")


@functools.cache
def _described() -> frozenset[str]:
    return frozenset(path for path, _ in _walk(_root()) if path.startswith(f"{ROLLOUT}."))


def _undescribed(status: RolloutStatus) -> list[str]:
    """Key paths of ``status.rollout`` as the operator writes it that the CRD does not describe."""
    return sorted(set(_key_paths(status.to_status(), ROLLOUT)) - _described())


def _model_deployment(status: RolloutStatus) -> dict[str, Any]:
    return {
        "apiVersion": schema.API_VERSION,
        "kind": schema.KIND,
        "metadata": {"name": "iris", "namespace": "default"},
        "spec": {"model": {"version": "1", "storageUri": "s3://models/iris/1/model.pt"}},
        # As the operator stores it: the JSON form.
        "status": json.loads(json.dumps({"rollout": status.to_status(), "history": status.history_to_status()})),
    }


def _node(path: str) -> Mapping[str, Any]:
    return dict(_walk(_root()))[path]


def test_full_rollout_status_sets_every_field() -> None:
    """Keeps the fixture complete: a field added to a status record must be set there, so the next tests see it."""
    assert list(_unset_fields(_full_rollout_status(), "RolloutStatus")) == []


def test_every_rollout_status_key_is_described_in_the_crd() -> None:
    """A key the operator writes under status.rollout without a schema is invisible to `kubectl explain`."""
    assert _undescribed(_full_rollout_status()) == []


def test_crd_describes_only_keys_the_operator_writes_under_rollout_status() -> None:
    written = set(_key_paths(_full_rollout_status().to_status(), ROLLOUT))
    assert sorted(_described() - written) == []


def test_full_rollout_status_validates_against_the_crd() -> None:
    assert schema.validate_object(_model_deployment(_full_rollout_status())) == []


def _long_messages(value: Any) -> Any:
    """``value`` with every ``message`` of it and its records 10,000 characters long."""
    if isinstance(value, tuple | list):
        return type(value)(_long_messages(item) for item in value)
    if not dataclasses.is_dataclass(value) or isinstance(value, type):
        return value
    changes = {
        f.name: "m" * 10_000 if f.name == "message" else _long_messages(getattr(value, f.name))
        for f in dataclasses.fields(value)
        if f.init
    }
    return dataclasses.replace(value, **changes)


def test_long_messages_are_cut_to_fit_the_crd() -> None:
    """A message longer than the CRD allows would get every status write rejected and stop the rollout."""
    status = _long_messages(_full_rollout_status())
    assert status.message == "m" * 10_000
    assert schema.validate_object(_model_deployment(status)) == []
    written = status.to_status()
    assert len(written["message"]) == MAX_MESSAGE and written["message"].endswith("…")


def test_rollout_status_is_open_on_every_object() -> None:
    """Fields written by a newer operator than the installed CRD are kept, also inside lists and nested objects."""
    closed = [
        path
        for path, node in _walk(_root())
        if path.startswith(f"{ROLLOUT}.") and node.get("type") == "object"
        if node.get("x-kubernetes-preserve-unknown-fields") is not True
    ]
    assert closed == []


def test_rollout_status_phases_are_described_but_not_enums() -> None:
    """Every value the code writes is named in the description; none is an enum, so a newer operator's new value
    never gets a status write rejected by an older CRD (helm does not upgrade CRDs)."""
    for path, values in (
        ("phase", PHASES),
        ("analysisRuns[].phase", RUN_PHASES),
        ("analysisRuns[].measurements[].verdict", get_args(Outcome)),
    ):
        node = _node(f"{ROLLOUT}.{path}")
        assert "enum" not in node, path
        assert all(re.search(rf"\b{value}\b", node["description"]) for value in values), path
    assert "enum" not in _node(f"{ROLLOUT}.pausedPhase") and "values of phase" in _node(f"{ROLLOUT}.pausedPhase")[
        "description"
    ]
    assert set(get_args(RunPhase)) == set(RUN_PHASES)  # the run verdicts analysis hands to the state machine
    assert _node(f"{ROLLOUT}.gpuPreflight.result")["enum"] == list(PREFLIGHT_RESULTS)  # older field, kept as it was


def test_rollout_status_bounds_hold_what_the_code_keeps() -> None:
    assert _node(f"{ROLLOUT}.analysisRuns")["maxItems"] >= MAX_ANALYSIS_RUNS
    assert _node(f"{ROLLOUT}.rejectedRevisions")["maxItems"] >= MAX_REJECTED
    # A run ends after count conclusive or count inconclusive measurements: at most 2 x count - 1 of them.
    count = _node("spec.rollout.analysis.count")["maximum"]
    assert _node(f"{ROLLOUT}.analysisRuns[].measurements")["maxItems"] >= 2 * count - 1
    assert _node(f"{ROLLOUT}.analysisRuns[].lastError")["maxLength"] >= MAX_ERROR_TEXT
    # Messages are cut to MAX_MESSAGE when written (rollout.state.clip).
    for path in ("message", "analysisRuns[].message", "analysisRuns[].measurements[].message",
                 "rejectedRevisions[].message"):  # fmt: skip
        assert _node(f"{ROLLOUT}.{path}")["maxLength"] >= MAX_MESSAGE, path
    assert _node(f"{ROLLOUT}.gpuPreflight.message")["maxLength"] >= MAX_PREFLIGHT_MESSAGE
    # The promote token may come from an annotation: up to 256 KiB (all annotations together).
    assert _node(f"{ROLLOUT}.lastPromoteToken")["maxLength"] >= 256 * 1024
    assert _node(f"{ROLLOUT}.canaryWeight")["maximum"] == _node("status.canaryWeight")["maximum"] == 100
    # Bounded by the number of steps (spec.rollout.canary.steps maxItems), which a newer CRD may raise.
    assert "maximum" not in _node(f"{ROLLOUT}.currentStepIndex")


# Random event sequences on the real state machine: every status it writes is described and valid.

ROLLOUT_SPECS: dict[str, dict[str, Any]] = {
    "canary": {
        "strategy": "Canary",
        "canary": {
            "steps": [
                {"setMirror": 50},
                {"pause": {"duration": "20s"}},
                {"setWeight": 30},
                {"analysis": {}},
                {"pause": {"duration": "20s"}},
                {"pause": {}},
            ],
            "trafficRouting": {"type": "GatewayAPI", "gatewayAPI": {"parentRefs": [{"name": "gw"}]}},
        },
        "analysis": {
            "maxErrorRatio": 0.01,
            "maxP99LatencyMs": 500,
            "maxErrorRatioIncrease": 0.01,
            "interval": "10s",
            "count": 2,
            "failureLimit": 0,
            "consecutiveErrorLimit": 1,
            "minRequests": 10,
            "goldenRequests": {
                "maxMismatches": 1,
                "cases": [
                    {
                        "name": "setosa",
                        "inputs": [{"name": "input", "shape": [1, 4], "data": [5.1, 3.5, 1.4, 0.2]}],
                        "outputs": [{"name": "output", "argmax": [0]}],
                    }
                ],
            },
            "webhooks": [
                {"name": "evals", "url": "http://evals.ml.svc/check", "metadata": {"suite": "smoke"}},
                {"name": "load", "url": "http://load.ml.svc/run", "timeoutSeconds": 60},
            ],
        },
        "progressDeadlineSeconds": 60,
        "keepPreviousWarm": {"replicas": 1, "seconds": 60},
    },
    "bluegreen": {
        "strategy": "BlueGreen",
        "blueGreen": {"autoPromotionEnabled": True, "autoPromotionSeconds": 20},
        "analysis": {"maxErrorRatio": 0.01, "interval": "10s", "count": 2, "minRequests": 10},
        "firstDeployAnalysis": True,
    },
    "rolling": {"strategy": "RollingUpdate", "keepPreviousWarm": {"replicas": 1, "seconds": 30}},
}
REVISIONS = [STABLE, CANARY, OLD]
SAMPLES = st.sampled_from(["good", "bad", "thin", "error"])
TIME = st.tuples(st.just("time"), st.sampled_from([1, 10, 30, 90]))
EVENTS = st.one_of(
    TIME,  # twice as likely as each other event: rollouts get on to their analysis and promotion
    TIME,
    st.tuples(st.just("stuck"), st.sampled_from(REVISIONS)),
    st.tuples(st.just("sample"), SAMPLES),
    st.tuples(st.just("deploy"), st.sampled_from(REVISIONS)),
    st.tuples(st.just("promote"), st.sampled_from(["p1", "p2" * 200])),
    st.tuples(st.just("abort"), st.booleans()),
    st.tuples(st.just("pause"), st.booleans()),
    st.tuples(st.just("rollback"), st.integers(0, 3)),
    st.tuples(st.just("crash"), st.sampled_from(REVISIONS)),
    st.tuples(st.just("gpus"), st.sampled_from([None, 0, 8])),
)


def _rollout_statuses(raw: Mapping[str, Any], script: list[tuple[str, Any]]) -> Iterator[RolloutStatus]:
    """Drive ``next_rollout`` over a tiny cluster and yield each status: pods get ready as time passes, except
    those of a revision that is ``stuck`` or crash-looping."""
    spec = parse_rollout(raw)
    status, now, replicas = RolloutStatus(), T0, 3
    target = RevisionInfo(STABLE, "1", STABLE)
    desired: dict[str, int] = {}
    ready: dict[str, int] = {}
    crashing: set[str] = set()
    stuck: set[str] = set()
    controls = Controls()
    sample, golden, hooks, erroring, gpus_free = GOOD, GOLDEN["good"], WEBHOOKS["good"], False, None
    pending: AnalysisRequest | None = None
    # The first revision becomes stable and a rollout of the next one starts, then anything may happen.
    for kind, value in [("time", 0), ("time", 10), ("deploy", CANARY), ("time", 30), *script]:
        if kind == "time":
            now += timedelta(seconds=value)
            ready.update({rev: count for rev, count in desired.items() if rev not in stuck | crashing})
        elif kind == "stuck":
            stuck ^= {value}
        elif kind == "sample":
            erroring = value == "error"
            sample = {"good": GOOD, "bad": BAD, "thin": THIN, "error": GOOD}[value]
            golden = GOLDEN.get(value, GOLDEN["good"])
            hooks = WEBHOOKS.get(value, WEBHOOKS["good"])
        elif kind == "deploy":
            target = RevisionInfo(value, value[:2], value)
        elif kind == "crash":
            crashing ^= {value}
        elif kind == "gpus":
            gpus_free = value
        elif kind in ("promote", "abort", "pause", "rollback"):
            name = {"promote": "promote_token", "pause": "paused", "rollback": "rollback_to"}.get(kind, kind)
            controls = dataclasses.replace(controls, **{name: value})
        measurement = None
        if pending is not None:
            measurement = (
                Measurement.failed(pending, now, "Prometheus query failed: " + "connection refused " * 100)
                if erroring
                else Measurement(
                    pending.run_id, pending.seq, now, sample, GOOD if pending.stable_revision else None,
                    attempt=pending.attempt, golden=golden if spec.analysis and spec.analysis.golden else None,
                    webhooks=hooks if spec.analysis and spec.analysis.webhooks else None,
                )
            )  # fmt: skip
        observed = Observed(
            target=target,
            replicas=replicas,
            revisions={
                rev: RevisionObservation(desired[rev], ready[rev], desired[rev], crash_looping=rev in crashing)
                for rev in desired
            },
            measurement=measurement,
            gpus_per_pod=1,
            gpus_free=gpus_free,
        )
        decision = next_rollout(spec, status, observed, now, controls)
        yield decision.status
        stored = json.loads(json.dumps(decision.status.to_status()))
        status = RolloutStatus.from_status(stored, decision.status.history_to_status())
        pending = decision.analysis
        for rev in list(desired):
            if rev not in decision.replicas:
                del desired[rev], ready[rev]
        for rev, count in decision.replicas.items():
            desired[rev] = count
            ready[rev] = min(ready.get(rev, 0), count)


def test_a_rollout_through_every_state_writes_every_described_key() -> None:
    """The real state machine, scripted: measurements against the stable, a promotion held by spec.paused, a
    warm previous revision, measurement errors that roll back, a manual rollback, a failed measurement. Every
    status is valid, and
    together they write every key the CRD describes under status.rollout."""
    script = [
        *[("time", 30)] * 6,  # mirror, pause and weight steps, the analysis step's two measurements, a pause step
        ("pause", True),
        ("promote", "p1"),  # a promotion held by spec.paused: pausedPhase
        ("time", 10),
        ("pause", False),
        *[("time", 10)] * 3,  # promoted: the previous stable stays warm (warmUntil)
        ("deploy", OLD),
        ("sample", "error"),  # measurements cannot be taken: consecutiveErrors, then a rollback
        *[("time", 30)] * 6,
        ("rollback", 1),
        *[("time", 30)] * 2,
        ("sample", "bad"),  # a webhook says no: its answer in the measurement's detail
        ("deploy", CANARY),
        *[("time", 30)] * 6,
    ]
    written: set[str] = set()
    for status in _rollout_statuses(ROLLOUT_SPECS["canary"], script):
        assert schema.validate_object(_model_deployment(status), cel=False) == []
        written.update(_key_paths(status.to_status(), ROLLOUT))
    assert sorted(written - _described()) == []
    assert sorted(_described() - written) == []


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(sorted(ROLLOUT_SPECS)), sample=SAMPLES, script=st.lists(EVENTS, min_size=10, max_size=60))
def test_every_status_the_rollout_state_machine_writes_is_described_and_valid(
    name: str, sample: str, script: list[tuple[str, Any]]
) -> None:
    for status in _rollout_statuses(ROLLOUT_SPECS[name], [("sample", sample), *script]):
        assert _undescribed(status) == []
        assert schema.validate_object(_model_deployment(status), cel=False) == []


def test_the_env_resource_reference_matches_the_operator() -> None:
    """The CRD's resourceFieldRef names the container the operator builds and admits exactly the divisors the
    operator's spec check pairs with their resources; both sides are literals, so this ties them."""
    ref = _root()["properties"]["spec"]["properties"]["runtime"]["properties"]["env"]["items"]["properties"][
        "valueFrom"
    ]["properties"]["resourceFieldRef"]["properties"]
    assert ref["containerName"]["enum"] == [CONTAINER_NAME]
    assert {str(d) for d in ref["divisor"]["enum"]} == set(CPU_DIVISORS + BYTE_DIVISORS)
