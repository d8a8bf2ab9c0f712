"""modeldeploy.spec: typed views of a ModelDeployment and the checks the schema cannot express."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modeldeploy.rollout.config import MAX_ANALYSIS_INTERVAL_SECONDS, MAX_PAUSE_SECONDS
from modeldeploy.schema import SpecError, validate_object
from modeldeploy.spec import (
    ANNOTATIONS_SIZE_LIMIT,
    OPERATOR_POD_ANNOTATIONS_RESERVE,
    ModelDeployment,
    StorageLocation,
    parse_duration,
    parse_model_deployment,
    parse_storage_uri,
)


def obj(**spec: Any) -> dict[str, Any]:
    model = {"version": "1", "storageUri": "s3://models/iris/1/model.pt", **spec.pop("model", {})}
    return {
        "apiVersion": "modeldeploy.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "iris", "namespace": "ml", "uid": "u-1", "generation": 4},
        "spec": {"model": model, **spec},
    }


def test_parse_fills_operator_defaults_and_metadata() -> None:
    md = parse_model_deployment(obj())
    assert (md.name, md.namespace, md.uid, md.generation) == ("iris", "ml", "u-1", 4)
    assert md.model.name == "iris"  # served name defaults to metadata.name
    assert md.model.format == "TorchScript"
    assert md.replicas == 1
    assert md.autoscaling is None
    assert md.runtime.image is None
    assert md.runtime.batching.max_batch_size == 32
    assert md.runtime.gpu.resource_name == "nvidia.com/gpu"
    assert (md.runtime.priority_class_name, md.runtime.runtime_class_name) == (None, None)
    assert md.runtime.topology_spread_constraints == ()
    assert md.spec.rollout_raw["strategy"] == "RollingUpdate"
    assert md.rollout_raw is md.spec.rollout_raw
    assert (md.paused, md.revision_history_limit) == (False, 10)


def test_parse_without_namespace_or_uid() -> None:
    body = obj()
    body["metadata"] = {"name": "iris"}
    md = parse_model_deployment(body)
    assert (md.namespace, md.uid, md.generation) == ("default", None, 1)


def test_parse_full_spec() -> None:
    md = parse_model_deployment(
        obj(
            model={
                "name": "tab",
                "format": "Safetensors",
                "entryPoint": "zoo.mlp:MLP",
                "sha256": "b" * 64,
                "storageUri": "https://h.example.com/m.safetensors",
                "storageSecretRef": {"name": "creds"},
            },
            runtime={
                "image": "r/img:1",
                "imagePullSecrets": [{"name": "pull"}],
                "resources": {"limits": {"memory": "1Gi"}},
                "gpu": {"count": 2, "halfPrecision": True},
                "env": [{"name": "A", "value": "1"}],
                "tolerations": [{"key": "k", "operator": "Exists"}],
                "serviceAccountName": "sa",
                "priorityClassName": "gpu-serving",
                "runtimeClassName": "nvidia",
                "topologySpreadConstraints": [
                    {"maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "ScheduleAnyway"}
                ],
            },
            autoscaling={
                "maxReplicas": 5,
                "targetCPUUtilizationPercentage": 60,
                "inflightRequests": {"targetAverageValue": 4},
                "behavior": {"scaleUp": {"stabilizationWindowSeconds": 0}},
            },
        )
    )
    assert md.model.name == "tab"
    assert md.model.entry_point == "zoo.mlp:MLP"
    assert md.model.sha256 == "b" * 64
    assert md.model.storage_secret_name == "creds"
    assert md.model.storage == StorageLocation(
        uri="https://h.example.com/m.safetensors", scheme="https", host="h.example.com", path="/m.safetensors"
    )
    assert md.runtime.image == "r/img:1"
    assert md.runtime.image_pull_secrets == ("pull",)
    assert md.runtime.gpu.count == 2 and md.runtime.gpu.half_precision
    assert md.runtime.service_account_name == "sa"
    assert (md.runtime.priority_class_name, md.runtime.runtime_class_name) == ("gpu-serving", "nvidia")
    assert md.runtime.topology_spread_constraints == (
        {"maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "ScheduleAnyway"},
    )
    assert md.autoscaling is not None
    assert (md.autoscaling.min_replicas, md.autoscaling.max_replicas) == (1, 5)
    assert md.autoscaling.target_cpu_utilization == 60
    assert md.autoscaling.target_memory_utilization is None
    assert md.autoscaling.inflight_requests is not None
    assert md.autoscaling.inflight_requests.target_average_value == "4"
    assert md.autoscaling.behavior == {"scaleUp": {"stabilizationWindowSeconds": 0}}


def test_parsed_objects_are_frozen() -> None:
    md = parse_model_deployment(obj())
    with pytest.raises(dataclasses.FrozenInstanceError):
        md.name = "other"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        md.model.version = "2"  # type: ignore[misc]


def test_parse_does_not_modify_its_input() -> None:
    body = obj(runtime={"env": [{"name": "A", "value": "1"}]})
    parse_model_deployment(body)
    assert body == obj(runtime={"env": [{"name": "A", "value": "1"}]})


def test_replicas_under_autoscaling_are_the_autoscalers_choice() -> None:
    """The HPA writes spec.replicas through the scale subresource: allowed beside spec.autoscaling, and read within
    its bounds; its absence is told apart from a count of 1."""
    md = parse_model_deployment(obj(replicas=7, autoscaling={"minReplicas": 2, "maxReplicas": 5}))
    assert md.autoscaling is not None and md.spec.replicas_given
    assert (md.replicas, md.autoscaling.bound(md.replicas), md.autoscaling.bound(1)) == (7, 5, 2)
    absent = parse_model_deployment(obj(autoscaling={"maxReplicas": 5}))
    assert (absent.replicas, absent.spec.replicas_given) == (1, False)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (obj(model={"version": None}), "spec.model.version"),
        (obj(autoscaling={"minReplicas": 3, "maxReplicas": 2}), "spec.autoscaling.minReplicas"),
        (obj(model={"storageUri": "pvc://Bad_Claim/x"}), "spec.model.storageUri"),
        (obj(model={"storageUri": "file://relative/path"}), "spec.model.storageUri"),
        (
            obj(rollout={"analysis": {"interval": "0s", "maxErrorRatio": 0.1}}),
            "spec.rollout.analysis.interval",
        ),
        (
            {"apiVersion": "modeldeploy.io/v1alpha1", "kind": "ModelDeployment", "spec": obj()["spec"]},
            "metadata.name",
        ),
    ],
)
def test_invalid_objects_raise_spec_error_with_the_field(body: dict[str, Any], field: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse_model_deployment(body)
    assert caught.value.field == field


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("pvc://models/iris/1", StorageLocation("pvc://models/iris/1", "pvc", claim="models", path="iris/1")),
        ("pvc://models", StorageLocation("pvc://models", "pvc", claim="models")),
        ("pvc://models/", StorageLocation("pvc://models/", "pvc", claim="models")),
        ("s3://bucket/a/b.pt", StorageLocation("s3://bucket/a/b.pt", "s3", bucket="bucket", path="a/b.pt")),
        ("gs://my.bucket/", StorageLocation("gs://my.bucket/", "gs", bucket="my.bucket", path="")),
        (
            "https://h.example.com:8443/m.pt?sig=1",
            StorageLocation("https://h.example.com:8443/m.pt?sig=1", "https", host="h.example.com", path="/m.pt"),
        ),
        (
            "http://10.0.0.1/m.pt",
            StorageLocation("http://10.0.0.1/m.pt", "http", host="10.0.0.1", path="/m.pt"),
        ),
        (
            "file:///opt/models/iris",
            StorageLocation("file:///opt/models/iris", "file", path="/opt/models/iris"),
        ),
    ],
)
def test_parse_storage_uri(uri: str, expected: StorageLocation) -> None:
    assert parse_storage_uri(uri) == expected
    assert expected.downloaded == (expected.scheme in ("http", "https", "s3", "gs"))


@pytest.mark.parametrize(
    ("uri", "reason"),
    [
        ("pvc:///path", "PersistentVolumeClaim name"),
        ("pvc://UPPER/x", "PersistentVolumeClaim name"),
        ("pvc://claim/../etc", "'..'"),
        ("pvc://claim/x?y=1", "no query"),
        ("s3://", "bucket name"),
        ("s3://x/key", "bucket name"),
        ("gs://Bad_Bucket/key", "bucket name"),
        ("https:///m.pt", "no host"),
        ("http://host:99999/m.pt", "invalid URL"),
        ("file://host/path", "absolute path"),
        ("file:///", "not /"),
        ("file:///opt/../etc", "'..'"),
        ("s3://bucket/a b", "whitespace"),
        ("ftp://host/x", "must start with"),
        ("models/iris", "must start with"),
    ],
)
def test_parse_storage_uri_rejects(uri: str, reason: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse_storage_uri(uri, "spec.model.storageUri")
    assert caught.value.field == "spec.model.storageUri"
    assert reason in caught.value.message


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30.0),
        ("5m", 300.0),
        ("1h30m", 5400.0),
        ("250ms", 0.25),
        ("1.5s", 1.5),
        ("0s", 0.0),
        ("2h0m1s", 7201.0),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text, "f") == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "30", "s", "5 m", "1d", "-1s", "1h 2m", "m5"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse_duration(text, "spec.rollout.analysis.interval")
    assert caught.value.field == "spec.rollout.analysis.interval"


def _pause(duration: str) -> dict[str, Any]:
    steps = [{"setWeight": 10}, {"pause": {"duration": duration}}]
    return obj(rollout={"strategy": "Canary", "canary": {"steps": steps}})


def _interval(interval: str) -> dict[str, Any]:
    return obj(rollout={"analysis": {"interval": interval, "maxErrorRatio": 0.1}})


PAUSE_FIELD = "spec.rollout.canary.steps[1].pause.duration"
INTERVAL_FIELD = "spec.rollout.analysis.interval"
DURATION_BOUNDS = [
    (_pause, PAUSE_FIELD, MAX_PAUSE_SECONDS, "168h"),
    (_interval, INTERVAL_FIELD, MAX_ANALYSIS_INTERVAL_SECONDS, "24h"),
]


@pytest.mark.parametrize(("make", "field", "bound", "text"), DURATION_BOUNDS)
def test_duration_bounds_are_the_crds(make: Any, field: str, bound: int, text: str) -> None:
    """The operator checks the bound of the CRD's rule itself: it reads objects without their CEL rules."""
    assert bound == parse_duration(text, field)
    for body in (make(text), make(f"{bound}s")):
        assert validate_object(body) == []
        parse_model_deployment(body, admitted=True)
    over = make(f"{bound}.001s")
    assert [e.field for e in validate_object(over)] == [field]
    with pytest.raises(SpecError) as caught:
        parse_model_deployment(over, admitted=True)
    assert (caught.value.field, f"at most {text}" in caught.value.message) == (field, True)


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        (_pause("100000000h"), PAUSE_FIELD, "must be at most 168h"),
        (_pause("9" * 31 + "h"), PAUSE_FIELD, "must be at most 168h"),
        (_pause("169h"), PAUSE_FIELD, "leave it out to wait until promoted"),
        (_interval("100000000h"), INTERVAL_FIELD, "must be at most 24h"),
        (_interval("1441m"), INTERVAL_FIELD, "must be at most 24h"),
        (_interval("0.0s"), INTERVAL_FIELD, "must be longer than zero"),
    ],
)
def test_durations_out_of_bounds_are_spec_errors_of_admitted_objects(
    body: dict[str, Any], field: str, message: str
) -> None:
    with pytest.raises(SpecError) as caught:
        parse_model_deployment(body, admitted=True)
    assert caught.value.field == field
    assert message in caught.value.message


def test_model_deployment_shortcuts_match_the_spec() -> None:
    md: ModelDeployment = parse_model_deployment(obj(replicas=3, paused=True))
    assert (md.model, md.runtime, md.replicas, md.autoscaling, md.paused) == (
        md.spec.model,
        md.spec.runtime,
        3,
        None,
        True,
    )


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
FUZZ_PATHS = [
    ("metadata",),
    ("metadata", "name"),
    ("spec",),
    ("spec", "model"),
    ("spec", "model", "storageUri"),
    ("spec", "model", "format"),
    ("spec", "runtime"),
    ("spec", "runtime", "gpu"),
    ("spec", "runtime", "env"),
    ("spec", "runtime", "batching"),
    ("spec", "runtime", "tolerations"),
    ("spec", "runtime", "topologySpreadConstraints"),
    ("spec", "runtime", "resources"),
    ("spec", "autoscaling"),
    ("spec", "rollout"),
    ("spec", "rollout", "canary"),
    ("spec", "rollout", "analysis"),
    ("spec", "replicas"),
]


@settings(max_examples=60, deadline=None)
@given(path=st.sampled_from(FUZZ_PATHS), value=JSON)
def test_any_malformed_value_gives_a_spec_error_never_a_crash(path: tuple[str, ...], value: Any) -> None:
    body = obj()
    node: Any = body
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = value
    try:
        md = parse_model_deployment(body)
    except SpecError as error:
        assert error.field.split(".")[0].split("[")[0] in ("metadata", "spec", "apiVersion", "kind", "")
    else:
        assert md.name


def _annotations(total: int) -> dict[str, str]:
    """Pod annotations of ``total`` bytes, keys and values together, each value within the CRD's 4096."""
    out: dict[str, str] = {}
    while total > 0:
        key = f"example.com/a{len(out):03d}"
        out[key] = "x" * min(4096, total - len(key))
        total -= len(key) + len(out[key])
    return out


LIMIT = ANNOTATIONS_SIZE_LIMIT - OPERATOR_POD_ANNOTATIONS_RESERVE
MULTIBYTE = {f"example.com/a{i:03d}": "é" * 4096 for i in range(32)}  # 131,616 characters, 262,688 bytes


@pytest.mark.parametrize(
    ("annotations", "admitted"),
    [(_annotations(10_000), True), (_annotations(LIMIT), True), (_annotations(LIMIT + 1), False), (MULTIBYTE, False)],
)
def test_pod_annotations_must_fit_the_api_servers_limit(annotations: dict[str, str], admitted: bool) -> None:
    body = obj(runtime={"podAnnotations": annotations})
    assert validate_object(body) == []  # each value is within the CRD's 4096 characters; only their sum is over
    if admitted:
        parse_model_deployment(body, admitted=True)
    else:
        with pytest.raises(SpecError) as caught:
            parse_model_deployment(body, admitted=True)
        assert caught.value.field == "spec.runtime.podAnnotations"
        assert f"at most {LIMIT} bytes" in caught.value.message
