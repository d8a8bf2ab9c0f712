"""Hostile ModelDeployment specs (valid and invalid, within the schema's types) through the ``modeldeploy render``
path and through a reconcile of an object that already serves: never a crash, only a reported InvalidSpec; every
child produced is a valid Kubernetes object; an invalid spec never deletes or changes the last good children."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import cache
from typing import Any

import kubernetes_validate
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reconcile_kit import observed

from modeldeploy.conditions import find
from modeldeploy.config import OperatorConfig
from modeldeploy.reconcile import Observed, Plan, plan_reconcile

K8S_VERSION = kubernetes_validate.latest_version()
NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
UID = "uid-hostile"
GOOD_SPEC: dict[str, Any] = {
    "model": {"version": "1", "storageUri": "s3://models/iris/1/model.pt", "format": "TorchScript"},
    "replicas": 2,
}
CONFIGS = [
    OperatorConfig(),
    OperatorConfig(require_sha256=True, allowed_schemes=("s3", "https"), allowed_hosts=("models", "*.example.com")),
    OperatorConfig(model_network_policy=True, operator_namespace="modeldeploy", monitoring_namespace="monitoring"),
]
NOT_IN_KUBERNETES = {"HTTPRoute"}  # Gateway API: not in kubernetes_validate; test_gateway_api_schema.py checks it.

# Rollout blocks from valid to nonsense: shadow, weight and analysis steps in any order, both routings, both
# capacities, analyses with golden requests (some malformed).
steps = st.lists(
    st.one_of(
        st.builds(lambda w: {"setWeight": w}, st.integers(min_value=-1, max_value=101)),
        st.builds(lambda m: {"setMirror": m}, st.integers(min_value=-1, max_value=101)),
        st.just({"pause": {}}),
        st.just({"pause": {"duration": "5s"}}),
        st.just({"pause": {"duration": "100000000h"}}),
        st.just({"setWeight": 10, "setMirror": 10}),
        st.just({"analysis": {}}),
    ),
    max_size=5,
)
GOLDEN_CASE = {
    "name": "c",
    "inputs": [{"name": "input", "shape": [1, 2], "data": [1.0, 2.0]}],
    "outputs": [{"name": "output", "argmax": [0]}],
}
analyses = st.one_of(
    st.just({"maxErrorRatio": 0.01}),
    st.just({"maxErrorRatio": 0.01, "interval": "100000000h"}),
    st.just({"goldenRequests": {"cases": [GOLDEN_CASE]}, "count": 1, "failureLimit": 0}),
    st.just({"goldenRequests": {"cases": [{**GOLDEN_CASE, "outputs": [{"name": "o"}]}]}}),  # neither data nor argmax
    st.just({"goldenRequests": {"cases": [{**GOLDEN_CASE, "inputs": [{"name": "x", "shape": [3], "data": [1]}]}]}}),
    st.just({"goldenRequests": {"cases": []}}),
)
rollouts = st.fixed_dictionaries(
    {"strategy": st.sampled_from(["Canary", "BlueGreen", "RollingUpdate"])},
    optional={
        "analysis": analyses,
        "canary": st.fixed_dictionaries(
            {"steps": steps},
            optional={
                "trafficRouting": st.sampled_from(
                    [{"type": "Replicas"}, {"type": "GatewayAPI", "gatewayAPI": {"parentRefs": [{"name": "gw"}]}},
                     {"type": "GatewayAPI"}]
                ),
                "capacity": st.fixed_dictionaries(
                    {"mode": st.sampled_from(["Surge", "Neutral"]), "maxSurgePods": st.integers(0, 2)}
                ),
            },
        ),
    },
)  # fmt: skip

uris = st.one_of(
    st.sampled_from(["s3://models/iris/1/model.pt", "https://cdn.example.com/m.pt", "pvc://claim/iris"]),
    st.sampled_from(
        [
            "s3://models/iris/1/model.pt",
            "gs://team-a-models/m",
            "https://cdn.example.com/m.pt",
            "http://h:99999/x",
            "pvc://claim/models/iris",
            "pvc://Bad_Claim/x",
            "file:///models/iris",
            "file://relative",
            "s3://Models/x",
            "s3://a/x",
            "https:///nohost",
            "pvc://claim/../etc",
            "ftp://host/x",
            "s3://models/x y",
            "",
        ]
    ),
    st.text(max_size=40),
)
names = st.one_of(st.sampled_from(["tokens", "a.b-c", "Bad_Name", "", "x" * 254]), st.text(max_size=12))
selectors: st.SearchStrategy[Any] = st.one_of(
    st.just({}),
    st.fixed_dictionaries(
        {
            "matchLabels": st.dictionaries(
                st.sampled_from(["app", "team", "bad key!"]), st.sampled_from(["a", "", "x" * 70]), max_size=2
            )
        }
    ),
    st.fixed_dictionaries(
        {
            "matchExpressions": st.lists(
                st.fixed_dictionaries(
                    {
                        "key": st.sampled_from(["app", "team"]),
                        "operator": st.sampled_from(["In", "Exists", "Bogus"]),
                        "values": st.lists(st.sampled_from(["a", "b"]), max_size=2),
                    }
                ),
                max_size=2,
            )
        }
    ),
)
peers = st.lists(
    st.dictionaries(st.sampled_from(["namespaceSelector", "podSelector"]), selectors, max_size=2), max_size=3
)


def _maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.none(), strategy)


@st.composite
def specs(draw: st.DrawFn) -> dict[str, Any]:
    model: dict[str, Any] = {
        "version": draw(st.sampled_from(["1", "2", "v3.1", "", "x" * 70])),
        "storageUri": draw(uris),
        "format": draw(st.sampled_from(["TorchScript", "TorchExport", "Safetensors", "TorchScript", "Pickle"])),
    }
    optional_model: tuple[tuple[str, st.SearchStrategy[Any]], ...] = (
        ("sha256", st.sampled_from(["a" * 64, "A" * 64, "abc"])),
        ("storageSecretRef", st.fixed_dictionaries({"name": names})),
        ("entryPoint", st.sampled_from(["model:build", "", "a b"])),
        ("name", st.sampled_from(["iris", "Iris!", ""])),
    )
    for key, strategy in optional_model:
        value = draw(_maybe(strategy))
        if value is not None:
            model[key] = value
    runtime: dict[str, Any] = {}
    optional_runtime: tuple[tuple[str, st.SearchStrategy[Any]], ...] = (
        ("auth", st.fixed_dictionaries({"secretRef": st.fixed_dictionaries({"name": names})})),
        ("port", st.integers(min_value=-1, max_value=70000)),
        (
            "env",
            st.lists(
                st.fixed_dictionaries(
                    {"name": st.sampled_from(["A", "MODELSERVE_X", "1BAD", ""]), "value": st.text(max_size=8)}
                ),
                max_size=2,
            ),
        ),
        (
            "podLabels",
            st.dictionaries(
                st.sampled_from(["team", "app.kubernetes.io/name", "bad key"]), st.sampled_from(["a", ""]), max_size=2
            ),
        ),
        ("gpu", st.fixed_dictionaries({"count": st.integers(min_value=-1, max_value=9)})),
        ("drainSeconds", st.integers(min_value=-1, max_value=4000)),
        ("image", st.sampled_from(["registry.local/modelserve:1", "bad image", ""])),
    )
    for key, strategy in optional_runtime:
        value = draw(_maybe(strategy))
        if value is not None:
            runtime[key] = value
    spec: dict[str, Any] = {"model": model}
    if runtime:
        spec["runtime"] = runtime
    replicas = draw(_maybe(st.integers(min_value=-2, max_value=1100)))
    if replicas is not None:
        spec["replicas"] = replicas
    if draw(st.booleans()):
        spec["autoscaling"] = {
            "minReplicas": draw(st.integers(min_value=-1, max_value=12)),
            "maxReplicas": draw(st.integers(min_value=0, max_value=12)),
            "targetCPUUtilizationPercentage": draw(st.integers(min_value=0, max_value=120)),
        }
    network = draw(_maybe(st.fixed_dictionaries({}, optional={"enabled": st.booleans(), "ingressFrom": peers})))
    if network is not None:
        spec["networkPolicy"] = network
    if draw(st.booleans()):
        spec["paused"] = draw(st.booleans())
    rollout = draw(_maybe(rollouts))
    if rollout is not None:
        spec["rollout"] = rollout
    return spec


def body(spec: Mapping[str, Any], generation: int = 1) -> dict[str, Any]:
    return {
        "apiVersion": "modeldeploy.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "iris", "namespace": "ml", "uid": UID, "generation": generation},
        "spec": copy.deepcopy(dict(spec)),
    }


def invalid(plan: Plan) -> bool:
    ready = find((plan.status or {}).get("conditions") or [], "Ready") or {}
    return ready.get("reason") == "InvalidSpec"


def assert_valid_children(plan: Plan) -> None:
    for manifest in plan.apply:
        if manifest["kind"] in NOT_IN_KUBERNETES:
            continue
        try:
            kubernetes_validate.validate(dict(manifest), K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{manifest['kind']} invalid at {list(error.absolute_path)}: {error.message}")


@cache
def serving(config_index: int) -> tuple[dict[str, Any], tuple[dict[str, Any], ...]]:
    """The status and children of a ModelDeployment whose first revision serves, converged under a config."""
    config = CONFIGS[config_index]
    good = {**GOOD_SPEC, "model": {**GOOD_SPEC["model"], "sha256": "a" * 64}}
    obj = body(good)
    objects: dict[tuple[str, str], dict[str, Any]] = {}
    for _ in range(8):
        plan = plan_reconcile(obj, observed(objects.values()), config, NOW)
        for manifest in plan.apply:
            stored = copy.deepcopy(manifest)
            stored["metadata"]["uid"] = f"uid-{manifest['kind']}-{manifest['metadata']['name']}"
            stored["metadata"]["generation"] = 1
            if manifest["kind"] == "Deployment":
                want = manifest["spec"].get("replicas", 1)
                stored["status"] = {
                    "observedGeneration": 1,
                    "replicas": want,
                    "updatedReplicas": want,
                    "readyReplicas": want,
                    "availableReplicas": want,
                }
            objects[(manifest["kind"], manifest["metadata"]["name"])] = stored
        for ref in plan.delete:
            objects.pop((ref.kind, ref.name), None)
        if plan.status is not None:
            obj["status"] = copy.deepcopy(plan.status)
        if not plan.writes:
            break
    assert obj["status"]["phase"] == "Ready", obj["status"]
    return obj["status"], tuple(objects.values())


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=specs(), config_index=st.integers(min_value=0, max_value=len(CONFIGS) - 1))
def test_render_never_crashes_and_renders_valid_objects(spec: dict[str, Any], config_index: int) -> None:
    plan = plan_reconcile(body(spec), Observed(), CONFIGS[config_index], NOW, admitted=False)
    if invalid(plan):
        assert plan.apply == [] and plan.delete == []
    else:
        assert plan.apply, "a valid new object gets children"
        assert_valid_children(plan)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=specs(), config_index=st.integers(min_value=0, max_value=len(CONFIGS) - 1))
def test_update_of_a_serving_object_never_loses_the_last_good_children(spec: dict[str, Any], config_index: int) -> None:
    status, children = serving(config_index)
    obj = body(spec, generation=2)
    obj["status"] = copy.deepcopy(status)
    plan = plan_reconcile(obj, observed(copy.deepcopy(list(children))), CONFIGS[config_index], NOW, admitted=False)
    assert_valid_children(plan)
    if invalid(plan):
        assert plan.apply == [] and plan.delete == [], "an invalid spec changes no child"
        assert plan.status is not None and plan.status["stableRevision"] == status["stableRevision"]
    else:
        stable = f"iris-{status['stableRevision']}"
        assert all(not (ref.kind == "Deployment" and ref.name == stable) for ref in plan.delete), (
            "the serving revision is never deleted in the same pass that starts its successor"
        )


FAR = "100000000h"  # 11,000 years
DURATIONS_PAST_THEIR_BOUNDS = [
    (
        "analysis-interval",
        {
            "strategy": "Canary",
            "canary": {"steps": [{"setWeight": 10}, {"analysis": {}}]},
            "analysis": {"maxErrorRatio": 0.01, "interval": FAR},
        },
    ),
    ("analysis-interval-25h", {"strategy": "Canary", "analysis": {"maxErrorRatio": 0.01, "interval": "25h"}}),
    ("pause", {"strategy": "Canary", "canary": {"steps": [{"setWeight": 10}, {"pause": {"duration": FAR}}]}}),
    ("pause-first", {"strategy": "Canary", "canary": {"steps": [{"pause": {"duration": "9" * 31 + "h"}}]}}),
]


@pytest.mark.parametrize("admitted", [True, False], ids=["admitted", "from-a-file"])
@pytest.mark.parametrize(
    "rollout", [r for _, r in DURATIONS_PAST_THEIR_BOUNDS], ids=[name for name, _ in DURATIONS_PAST_THEIR_BOUNDS]
)
def test_a_duration_past_its_bound_is_an_invalid_spec(rollout: dict[str, Any], admitted: bool) -> None:
    """Also for an object the API server admitted (its CEL rules are not checked again): the rollout would add
    the duration to a timestamp."""
    status, children = serving(0)
    spec = {**GOOD_SPEC, "model": {**GOOD_SPEC["model"], "version": "2"}, "rollout": rollout}
    obj = body(spec, generation=2)
    obj["status"] = copy.deepcopy(status)
    plan = plan_reconcile(obj, observed(copy.deepcopy(list(children))), CONFIGS[0], NOW, admitted=admitted)
    assert invalid(plan), plan.status
    assert plan.apply == [] and plan.delete == []
