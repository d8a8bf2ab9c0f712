"""The CRD's rules that keep out what the API server would refuse later (pods it cannot create, label selectors it
cannot store) or what could never do its job (an analysis that cannot fail), checked on the real CRD with
modeldeploy.schema: each table lists admitted and refused values."""

from __future__ import annotations

from typing import Any

import pytest

from modeldeploy.schema import SpecError, validate_object
from modeldeploy.spec import parse_model_deployment


def obj(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "modeldeploy.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "iris", "namespace": "default"},
        "spec": {"model": {"version": "1", "storageUri": "s3://models/iris/1/model.pt"}, **spec},
    }


def refused(errors: list[SpecError], field: str, words: str) -> bool:
    return [(e.field, words in e.message) for e in errors] == [(field, True)]


# --- spec.rollout.analysis: failureLimit < count -----------------------------------------------------------

RUN_CAN_FAIL = "failureLimit must be less than count"


@pytest.mark.parametrize(
    ("analysis", "admitted"),
    [
        ({}, True),  # the defaults: count 3, failureLimit 1
        ({"count": 2}, True),
        ({"count": 1, "failureLimit": 0}, True),
        ({"count": 100, "failureLimit": 99}, True),
        ({"failureLimit": 2}, True),
        ({"count": 1}, False),  # with the default failureLimit 1
        ({"failureLimit": 3}, False),  # with the default count 3
        ({"count": 2, "failureLimit": 2}, False),
        ({"count": 2, "failureLimit": 50}, False),
        ({"count": 100, "failureLimit": 100}, False),
    ],
)
def test_analysis_failure_limit_below_count(analysis: dict[str, Any], admitted: bool) -> None:
    errors = validate_object(obj(rollout={"analysis": {"maxErrorRatio": 0.01, **analysis}}))
    if admitted:
        assert errors == []
    else:
        assert refused(errors, "spec.rollout.analysis.failureLimit", RUN_CAN_FAIL), errors
        assert "with count 1 set failureLimit 0" in errors[0].message


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize(
    ("spec", "field"),
    [
        (lambda v: {"rollout": {"analysis": {"maxErrorRatio": v}}}, "spec.rollout.analysis.maxErrorRatio"),
        (lambda v: {"rollout": {"analysis": {"maxP99LatencyRatio": v}}}, "spec.rollout.analysis.maxP99LatencyRatio"),
        (
            lambda v: {"autoscaling": {"maxReplicas": 4, "behavior": {"scaleUp": {"tolerance": v}}}},
            "spec.autoscaling.behavior.scaleUp.tolerance",
        ),
    ],
)
def test_numbers_json_cannot_hold_are_refused(spec: Any, field: str, value: float) -> None:
    """YAML spells NaN and the infinities (``.nan``, ``.inf``); JSON cannot, so no API server holds one. NaN would
    pass every minimum and maximum (an error ratio of NaN fails no analysis), so ``modeldeploy render`` of such a
    file says where instead."""
    errors = validate_object(obj(**spec(value)))
    assert refused(errors, field, "must be a finite number"), errors


# --- spec.runtime.resources: what the API server's pod validation refuses --------------------------------------

RESOURCE_NAME = "must be cpu, memory, ephemeral-storage, hugepages-<size> or a resource name with a domain"


@pytest.mark.parametrize(
    ("name", "admitted"),
    [
        ("cpu", True),
        ("memory", True),
        ("ephemeral-storage", True),
        ("hugepages-2Mi", True),
        ("hugepages-1Gi", True),
        ("nvidia.com/gpu", True),
        ("amd.com/gpu", True),
        ("nvidia.com/mig-1g.5gb", True),
        ("example.kubernetes.io/widget", True),
        ("kubernetes.io/widget", True),
        (f"{'a' * 244}/x", True),  # requests.<prefix> must still be a DNS subdomain
        (f"{'a' * 245}.kubernetes.io/x", False),  # a prefix is at most 253 characters
        (f"{'a' * 245}/x", False),  # not an extended resource name: requests.<prefix> is 254 characters
        ("gpu", False),  # the usual slip for nvidia.com/gpu
        ("GPU", False),
        ("storage", False),
        ("pods", False),  # a quota resource, not a container resource
        ("hugepages-", False),
        ("nvidia.com/", False),
        ("Nvidia.com/gpu", False),
        ("nvidia.com/gpu/0", False),
        ("requests.nvidia.com/gpu", False),
        ("nvidia.com/" + "g" * 64, False),
    ],
)
def test_resource_names(name: str, admitted: bool) -> None:
    for kind in ("requests", "limits"):
        errors = validate_object(obj(runtime={"resources": {kind: {name: 1}}}))
        if admitted:
            assert errors == [], (kind, errors)
        else:
            assert refused(errors, f"spec.runtime.resources.{kind}", RESOURCE_NAME), (kind, errors)


@pytest.mark.parametrize(
    ("value", "admitted"),
    [
        (0, True),
        ("0", True),
        ("500m", True),
        ("1e-3", True),  # a negative exponent is not a negative amount
        ("+1", True),
        (-1, False),
        ("-1", False),
        ("-500m", False),
        ("-0", False),  # Go reads zero; refused with the rest rather than written out as a special case
        ("1" * 65, False),  # longer than any amount, and what keeps the rules' CEL cost small
    ],
)
def test_resource_amounts_are_not_negative(value: Any, admitted: bool) -> None:
    for kind in ("requests", "limits"):
        errors = validate_object(obj(runtime={"resources": {kind: {"memory": value}}}))
        if admitted:
            assert errors == [], (kind, errors)
        elif isinstance(value, str) and len(value) > 64:
            assert refused(errors, f"spec.runtime.resources.{kind}.memory", "longer than 64 characters"), (kind, errors)
        else:
            assert refused(errors, f"spec.runtime.resources.{kind}.memory", "must not be negative"), (kind, errors)


EQUAL = "must be equal to the"
NEEDS_LIMIT = "needs a limit of the same amount"
AT_MOST = "must be less than or equal to the"
WHOLE = "must be an integer"
PAGES = "must be a whole number of"
NO_PAGE_SIZE = "names no page size"


@pytest.mark.parametrize(
    ("resources", "field", "words"),
    [
        ({}, None, None),
        ({"limits": {"nvidia.com/gpu": 1}}, None, None),  # the request defaults to the limit
        ({"requests": {"nvidia.com/gpu": 1}, "limits": {"nvidia.com/gpu": "1"}}, None, None),
        ({"requests": {"nvidia.com/gpu": "1000m"}, "limits": {"nvidia.com/gpu": 1}}, None, None),
        ({"requests": {"amd.com/gpu": 2, "cpu": 4}, "limits": {"amd.com/gpu": 2}}, None, None),
        ({"requests": {"hugepages-2Mi": "1Gi", "memory": "1Gi"}, "limits": {"hugepages-2Mi": "1024Mi"}}, None, None),
        ({"limits": {"hugepages-1Gi": "2Gi", "cpu": 1}}, None, None),
        ({"limits": {"hugepages-2Mi": 0, "memory": "1Gi"}}, None, None),  # zero pages
        ({"limits": {"hugepages-2Mi": 4194304, "memory": "1Gi"}}, None, None),  # two pages, in bytes
        ({"limits": {"hugepages-64Ki": "192Ki", "memory": "1Gi"}}, None, None),
        ({"requests": {"cpu": "500m"}, "limits": {"cpu": 1}}, None, None),
        ({"requests": {"cpu": 1}, "limits": {"cpu": "1000m"}}, None, None),
        ({"requests": {"cpu": "1e3"}, "limits": {"cpu": "1k"}}, None, None),
        ({"requests": {"memory": "1G"}, "limits": {"memory": "1Gi"}}, None, None),
        ({"requests": {"memory": "4Gi", "ephemeral-storage": "10Gi"}}, None, None),  # no limits: nothing to exceed
        ({"requests": {"cpu": 8}, "limits": {"memory": "1Gi"}}, None, None),  # no cpu limit
        ({"requests": {"example.kubernetes.io/widget": 1}}, None, None),  # in kubernetes.io/: may be overcommitted
        ({"requests": {"cpu": "250m"}, "limits": {"cpu": "0.5"}}, None, None),  # fractions of native resources
        ({"limits": {"nvidia.com/gpu": "2e0"}}, None, None),
        ({"requests": {"nvidia.com/gpu": 1}}, "requests[nvidia.com/gpu]", NEEDS_LIMIT),
        ({"requests": {"nvidia.com/gpu": 1}, "limits": {"cpu": 1}}, "requests[nvidia.com/gpu]", NEEDS_LIMIT),
        ({"requests": {"nvidia.com/gpu": 1}, "limits": {"nvidia.com/gpu": 2}}, "requests[nvidia.com/gpu]", EQUAL),
        ({"requests": {"amd.com/gpu": "2"}, "limits": {"amd.com/gpu": 1}}, "requests[amd.com/gpu]", EQUAL),
        ({"requests": {"hugepages-1Gi": "2Gi"}}, "requests[hugepages-1Gi]", NEEDS_LIMIT),
        ({"requests": {"hugepages-2Mi": "1Gi"}, "limits": {"hugepages-2Mi": "2Gi"}}, "requests[hugepages-2Mi]", EQUAL),
        ({"requests": {"cpu": "1500m"}, "limits": {"cpu": 1}}, "requests.cpu", AT_MOST),
        ({"requests": {"cpu": "1001m"}, "limits": {"cpu": "1"}}, "requests.cpu", AT_MOST),
        ({"requests": {"cpu": "1.0000000001"}, "limits": {"cpu": "1"}}, "requests.cpu", AT_MOST),  # to 1.000000001
        ({"requests": {"cpu": 2}, "limits": {"cpu": "500m"}}, "requests.cpu", AT_MOST),
        ({"requests": {"cpu": "1e3"}, "limits": {"cpu": 999}}, "requests.cpu", AT_MOST),
        ({"requests": {"memory": "1Gi"}, "limits": {"memory": "1G"}}, "requests.memory", AT_MOST),
        (
            {"requests": {"ephemeral-storage": "2Gi"}, "limits": {"ephemeral-storage": "1Gi"}},
            "requests[ephemeral-storage]",
            AT_MOST,
        ),
        (
            {"requests": {"example.kubernetes.io/widget": 2}, "limits": {"example.kubernetes.io/widget": 1}},
            "requests[example.kubernetes.io/widget]",
            AT_MOST,
        ),
        ({"limits": {"nvidia.com/gpu": "500m"}}, "limits[nvidia.com/gpu]", WHOLE),  # no fractional GPUs
        ({"limits": {"nvidia.com/gpu": "1.5"}}, "limits[nvidia.com/gpu]", WHOLE),
        ({"requests": {"amd.com/gpu": "0.5"}, "limits": {"amd.com/gpu": "0.5"}}, "requests[amd.com/gpu]", WHOLE),
        ({"limits": {"cpu": "1e1.5"}}, "limits.cpu", "must be a quantity"),  # the pattern admits it; Go does not
        ({"limits": {"hugepages-2Mi": "3Mi", "memory": "1Gi"}}, "limits[hugepages-2Mi]", PAGES),
        ({"limits": {"hugepages-1Gi": "1.5Gi", "cpu": 1}}, "limits[hugepages-1Gi]", PAGES),
        ({"limits": {"hugepages-2Mi": "2097152.5", "memory": "1Gi"}}, "limits[hugepages-2Mi]", PAGES),  # rounded up
        (
            {"requests": {"hugepages-2Mi": "1Mi", "cpu": 1}, "limits": {"hugepages-2Mi": "1Mi"}},
            "requests[hugepages-2Mi]",  # each amount is checked as it is read, requests first
            PAGES,
        ),
        ({"limits": {"hugepages-abc": "1Gi", "memory": "1Gi"}}, "limits[hugepages-abc]", NO_PAGE_SIZE),
        ({"limits": {"hugepages-500m": "1", "memory": "1Gi"}}, "limits[hugepages-500m]", NO_PAGE_SIZE),
    ],
)
def test_resource_amounts_the_operator_checks(resources: dict[str, Any], field: str | None, words: str | None) -> None:
    """Comparisons of amounts: admitted by the schema (a CEL quantity() comparison costs too much), refused by the
    operator's spec check with the field and the API server's reason, before any pod exists."""
    manifest = obj(runtime={"resources": resources})
    assert validate_object(manifest) == []
    if words is None:
        parse_model_deployment(manifest)
    else:
        with pytest.raises(SpecError) as raised:
            parse_model_deployment(manifest)
        assert raised.value.field == f"spec.runtime.resources.{field}"
        assert words in raised.value.message, raised.value.message


@pytest.mark.parametrize(
    ("resources", "refused"),
    [
        ({"limits": {"hugepages-2Mi": "2Mi"}}, True),
        ({"requests": {"hugepages-2Mi": "2Mi"}, "limits": {"hugepages-2Mi": "2Mi"}}, True),
        ({"limits": {"hugepages-2Mi": "2Mi", "ephemeral-storage": "1Gi", "nvidia.com/gpu": 1}}, True),
        ({"requests": {"cpu": "500m"}, "limits": {"hugepages-2Mi": "2Mi"}}, False),
        ({"limits": {"hugepages-2Mi": "2Mi", "memory": "1Gi"}}, False),
        ({"requests": {"memory": "1Gi"}, "limits": {"hugepages-1Gi": "1Gi"}}, False),
    ],
)
def test_hugepages_need_cpu_or_memory_beside_them(resources: dict[str, Any], refused: bool) -> None:
    """The API server refuses a container with hugepages and no cpu or memory amount, in requests or limits."""
    manifest = obj(runtime={"resources": resources})
    assert validate_object(manifest) == []
    if not refused:
        parse_model_deployment(manifest)
        return
    with pytest.raises(SpecError) as raised:
        parse_model_deployment(manifest)
    assert raised.value.field == "spec.runtime.resources"
    assert "needs a cpu or memory request or limit" in raised.value.message, raised.value.message


def test_gpus_from_gpu_count_and_cpu_requests_together() -> None:
    """gpu.count adds the GPU limit when the pods are built; the checks see only what resources says."""
    runtime = {"gpu": {"count": 2}, "resources": {"requests": {"cpu": "2"}, "limits": {"cpu": "4"}}}
    assert validate_object(obj(runtime=runtime)) == []
    assert parse_model_deployment(obj(runtime=runtime)).spec.runtime.gpu.count == 2


@pytest.mark.parametrize(
    ("value", "schema_words", "operator_words"),
    [
        (8, None, None),
        ("8", None, None),
        ("500m", None, None),
        ("1e-3", None, None),
        (0, "must be more than zero", None),
        (-2, "must be more than zero", None),
        ("-2", "must be more than zero", None),
        ("0", None, "must be more than zero"),  # zero as a string: only a quantity comparison sees it
        ("0.0m", None, "must be more than zero"),
        ("1e1.5", None, "must be a quantity such as 8 or 500m"),
    ],
)
def test_inflight_requests_target(value: Any, schema_words: str | None, operator_words: str | None) -> None:
    """The HorizontalPodAutoscaler refuses a target that is not more than zero; so do the CRD and the operator."""
    manifest = obj(autoscaling={"maxReplicas": 3, "inflightRequests": {"targetAverageValue": value}})
    errors = validate_object(manifest)
    field = "spec.autoscaling.inflightRequests.targetAverageValue"
    if schema_words is not None:
        assert refused(errors, field, schema_words), errors
        return
    assert errors == []
    if operator_words is None:
        parse_model_deployment(manifest)
    else:
        with pytest.raises(SpecError) as raised:
            parse_model_deployment(manifest)
        assert (raised.value.field, operator_words in raised.value.message) == (field, True), raised.value


# --- label keys and values ----------------------------------------------------------------------------------

PREFIX_253 = "a" * 253
GOOD_KEYS = [
    "team",
    "kubernetes.io/os",
    "node.kubernetes.io/instance-type",
    "example.com/pool_A-1.x",
    "a" * 63,
    f"{PREFIX_253}/x",
    "1-2.example/3",
]
BAD_KEYS = [
    "",
    "node pool",
    "-team",
    "team-",
    "team.",
    "a" * 64,
    "/team",
    "example.com/",
    "Example.com/team",  # the prefix is a DNS subdomain: lowercase
    "example..com/team",
    "-example.com/team",
    "team/ml/serving",
    f"{PREFIX_253}a/x",
    "tëam",
]
GOOD_VALUES = ["", "linux", "g5.xlarge", "a_b-c.D", "a" * 63, "0"]
BAD_VALUES = ["-x", "x-", "x.", "a b", "a" * 64, "é", "a/b"]


def _label_key_cases(field: str, place: Any) -> list[Any]:
    return [
        *(pytest.param(place(k), field, None, id=f"key-ok-{k[:20]}") for k in GOOD_KEYS),
        *(pytest.param(place(k), field, "keys must be", id=f"key-bad-{k[:20]}") for k in BAD_KEYS),
    ]


def _selector(key: str) -> dict[str, Any]:
    return {"networkPolicy": {"ingressFrom": [{"namespaceSelector": {"matchLabels": {key: "x"}}}]}}


@pytest.mark.parametrize(
    ("spec", "field", "words"),
    [
        *_label_key_cases("spec.runtime.nodeSelector", lambda k: {"runtime": {"nodeSelector": {k: "x"}}}),
        *_label_key_cases("spec.runtime.podLabels", lambda k: {"runtime": {"podLabels": {k: "x"}}}),
        *_label_key_cases("spec.networkPolicy.ingressFrom[0].namespaceSelector.matchLabels", _selector),
    ],
)
def test_label_keys(spec: dict[str, Any], field: str, words: str | None) -> None:
    errors = validate_object(obj(**spec))
    if words is None:
        assert errors == []
    else:
        assert refused(errors, field, words), errors


@pytest.mark.parametrize(
    ("key", "admitted"),
    [
        *((k, True) for k in GOOD_KEYS),
        ("Example.COM/Thing", True),  # checked lowercased, as the API server checks annotation keys
        *((k, False) for k in BAD_KEYS if k != "Example.com/team"),
    ],
)
def test_pod_annotation_keys(key: str, admitted: bool) -> None:
    errors = validate_object(obj(runtime={"podAnnotations": {key: "any value at all: {\"a\": 1}"}}))
    if admitted:
        assert errors == []
    else:
        assert refused(errors, "spec.runtime.podAnnotations", "podAnnotations keys must be annotation keys"), errors


def _values(value: str) -> list[tuple[dict[str, Any], str]]:
    """``value`` in each place that holds a label value, with the path of its error."""
    peer = "spec.networkPolicy.ingressFrom[0]"
    requirement = {"key": "team", "operator": "In", "values": [value]}
    return [
        ({"runtime": {"nodeSelector": {"pool": value}}}, "spec.runtime.nodeSelector.pool"),
        ({"runtime": {"podLabels": {"team": value}}}, "spec.runtime.podLabels.team"),
        (
            {"networkPolicy": {"ingressFrom": [{"podSelector": {"matchLabels": {"app": value}}}]}},
            f"{peer}.podSelector.matchLabels.app",
        ),
        (
            {"networkPolicy": {"ingressFrom": [{"namespaceSelector": {"matchExpressions": [requirement]}}]}},
            f"{peer}.namespaceSelector.matchExpressions[0].values[0]",
        ),
    ]


@pytest.mark.parametrize(
    ("spec", "field", "admitted"),
    [
        *(pytest.param(s, f, True, id=f"ok-{v[:10]}-{f}") for v in GOOD_VALUES for s, f in _values(v)),
        *(pytest.param(s, f, False, id=f"bad-{v[:10]}-{f}") for v in BAD_VALUES for s, f in _values(v)),
    ],
)
def test_label_values(spec: dict[str, Any], field: str, admitted: bool) -> None:
    errors = validate_object(obj(**spec))
    if admitted:
        assert errors == []
    else:
        assert [e.field for e in errors] == [field], errors


@pytest.mark.parametrize(
    ("key", "words"),
    [
        ("team", None),
        ("example.com/team", None),
        (f"{PREFIX_253}/team", None),
        ("team name", "should match"),
        ("Example.com/team", "should match"),
        ("a/b/c", "should match"),
        ("a" * 64, "should match"),
        (f"{PREFIX_253}a/team", "prefix (before the '/') must be at most 253 characters"),
    ],
)
def test_label_selector_requirement_keys(key: str, words: str | None) -> None:
    requirement = {"key": key, "operator": "Exists"}
    errors = validate_object(obj(networkPolicy={"ingressFrom": [{"podSelector": {"matchExpressions": [requirement]}}]}))
    if words is None:
        assert errors == []
    else:
        assert refused(errors, "spec.networkPolicy.ingressFrom[0].podSelector.matchExpressions[0].key", words), errors


OPERATOR_VALUES = "operators In and NotIn need at least one value; Exists and DoesNotExist take none"


@pytest.mark.parametrize(
    ("requirement", "admitted"),
    [
        ({"operator": "In", "values": ["a"]}, True),
        ({"operator": "NotIn", "values": ["a", "b"]}, True),
        ({"operator": "Exists"}, True),
        ({"operator": "DoesNotExist", "values": []}, True),
        ({"operator": "In"}, False),
        ({"operator": "In", "values": []}, False),
        ({"operator": "NotIn"}, False),
        ({"operator": "Exists", "values": ["a"]}, False),
        ({"operator": "DoesNotExist", "values": ["a"]}, False),
    ],
)
def test_label_selector_requirement_operators_and_values(requirement: dict[str, Any], admitted: bool) -> None:
    """As the API server validates a NetworkPolicy's selectors; the operator renders these into one."""
    for selector in ("podSelector", "namespaceSelector"):
        peer = {selector: {"matchExpressions": [{"key": "team", **requirement}]}}
        errors = validate_object(obj(networkPolicy={"ingressFrom": [peer]}))
        if admitted:
            assert errors == [], (selector, errors)
        else:
            field = f"spec.networkPolicy.ingressFrom[0].{selector}.matchExpressions[0].values"
            assert refused(errors, field, OPERATOR_VALUES), (selector, errors)


# --- metadata: what the API server checks before the CRD's schema ------------------------------------------------


@pytest.mark.parametrize(
    ("metadata", "field", "words"),
    [
        ({"name": "iris", "namespace": "ml-prod"}, "", ""),
        ({"name": "iris"}, "", ""),  # no namespace: kubectl's context gives one
        ({"name": "iris", "namespace": "a" * 63}, "", ""),
        ({"name": "iris", "labels": {"team": "ml"}, "annotations": {"note": "x"}}, "", ""),
        ({"name": 5, "namespace": "default"}, "metadata.name", "must be a string"),
        ({"name": "iris", "namespace": "Bad_NS"}, "metadata.namespace", "RFC 1123 label"),
        ({"name": "iris", "namespace": "-ml"}, "metadata.namespace", "RFC 1123 label"),
        ({"name": "iris", "namespace": "a" * 64}, "metadata.namespace", "at most 63"),
        ({"name": "iris", "namespace": 7}, "metadata.namespace", "must be a string"),
        ({"name": "iris", "labels": {"replicas": 3}}, "metadata.labels", "map of strings to strings"),
        ({"name": "iris", "annotations": ["a"]}, "metadata.annotations", "map of strings to strings"),
    ],
)
def test_metadata_is_checked_as_the_api_server_does(metadata: dict[str, Any], field: str, words: str) -> None:
    """A name that is not a string gets one clear error instead of a CEL evaluation error of the name rule."""
    errors = validate_object({**obj(), "metadata": metadata})
    if not field:
        assert errors == []
    else:
        assert refused(errors, field, words), errors


# --- spec.runtime.env[].valueFrom: core EnvVarSource --------------------------------------------------------


def env_from(source: dict[str, Any]) -> dict[str, Any]:
    return obj(runtime={"env": [{"name": "V", "valueFrom": source}]})


VALUE_FROM = "spec.runtime.env[0].valueFrom"


@pytest.mark.parametrize(
    "source",
    [
        {"secretKeyRef": {"name": "hub-token", "key": "token"}},
        {"secretKeyRef": {"name": "hub-token", "key": "token.txt", "optional": True}},
        {"configMapKeyRef": {"name": "settings.v2", "key": "LOG_LEVEL", "optional": False}},
        {"fieldRef": {"fieldPath": "metadata.namespace"}},
        {"fieldRef": {"apiVersion": "v1", "fieldPath": "status.podIPs"}},
        {"fieldRef": {"fieldPath": "metadata.labels['modeldeploy.io/revision']"}},
        {"fieldRef": {"fieldPath": "metadata.annotations['Example.com/Owner']"}},
        {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}},
        {"resourceFieldRef": {"containerName": "model-server", "resource": "requests.cpu", "divisor": "1m"}},
        {"resourceFieldRef": {"resource": "requests.cpu", "divisor": 1}},
        {"resourceFieldRef": {"resource": "limits.hugepages-2Mi", "divisor": "1Ki"}},
        {"resourceFieldRef": {"resource": "limits.ephemeral-storage"}},
    ],
)
def test_env_value_sources_the_api_server_admits(source: dict[str, Any]) -> None:
    manifest = env_from(source)
    assert validate_object(manifest) == []
    assert parse_model_deployment(manifest).spec.runtime.env[0]["valueFrom"] == source


@pytest.mark.parametrize(
    ("source", "field", "words"),
    [
        ({}, VALUE_FROM, "set exactly one of"),
        (
            {"secretKeyRef": {"name": "a", "key": "b"}, "fieldRef": {"fieldPath": "metadata.name"}},
            VALUE_FROM,
            "set exactly one of",
        ),
        ({"secretKeyRef": {"name": "a"}}, f"{VALUE_FROM}.secretKeyRef.key", "Required value"),
        ({"secretKeyRef": {"name": "Hub_Token", "key": "t"}}, f"{VALUE_FROM}.secretKeyRef.name", "should match"),
        ({"configMapKeyRef": {"name": "a", "key": "a/b"}}, f"{VALUE_FROM}.configMapKeyRef.key", "should match"),
        (
            {"secretKeyRef": {"name": "a", "key": "b", "optional": "yes"}},
            f"{VALUE_FROM}.secretKeyRef.optional",
            "boolean",
        ),
        ({"fieldRef": {"fieldPath": "metadata.labels"}}, f"{VALUE_FROM}.fieldRef.fieldPath", "should match"),
        ({"fieldRef": {"fieldPath": "spec.containers[0].image"}}, f"{VALUE_FROM}.fieldRef.fieldPath", "should match"),
        ({"fieldRef": {"fieldPath": "metadata.labels['-team']"}}, f"{VALUE_FROM}.fieldRef.fieldPath", "should match"),
        (
            {"fieldRef": {"apiVersion": "v2", "fieldPath": "metadata.name"}},
            f"{VALUE_FROM}.fieldRef.apiVersion",
            "Unsupported",
        ),
        (
            {"resourceFieldRef": {"resource": "limits.nvidia.com/gpu"}},
            f"{VALUE_FROM}.resourceFieldRef.resource",
            "should match",
        ),
        (
            {"resourceFieldRef": {"resource": "limits.cpu", "containerName": "fetch-model"}},
            f"{VALUE_FROM}.resourceFieldRef.containerName",
            "Unsupported",
        ),
        (
            {"resourceFieldRef": {"resource": "limits.cpu", "divisor": "2"}},
            f"{VALUE_FROM}.resourceFieldRef.divisor",
            "Unsupported",
        ),
        (
            {"secretKeyRef": {"name": "a", "key": "b"}, "secretRef": {"name": "a"}},
            f"{VALUE_FROM}.secretRef",
            "unknown field",
        ),
    ],
)
def test_env_value_sources_the_api_server_refuses(source: dict[str, Any], field: str, words: str) -> None:
    errors = validate_object(env_from(source))
    assert refused(errors, field, words), errors


@pytest.mark.parametrize(
    ("resource", "divisor", "ok"),
    [
        ("limits.cpu", "1m", True),
        ("requests.cpu", 1, True),
        ("limits.cpu", "1Mi", False),
        ("requests.cpu", "1k", False),
        ("limits.memory", "1Gi", True),
        ("limits.memory", "1m", False),
        ("requests.ephemeral-storage", "1M", True),
        ("limits.hugepages-1Gi", "1m", False),
    ],
)
def test_env_resource_divisor_suits_its_resource(resource: str, divisor: Any, ok: bool) -> None:
    """The CRD admits every divisor of either kind; the operator pairs them, as the API server's pod validation
    does ("only divisor's values 1m and 1 are supported with the cpu resource")."""
    manifest = env_from({"resourceFieldRef": {"resource": resource, "divisor": divisor}})
    assert validate_object(manifest) == []
    for admitted in (False, True):
        if ok:
            parse_model_deployment(manifest, admitted=admitted)
            continue
        with pytest.raises(SpecError) as raised:
            parse_model_deployment(manifest, admitted=admitted)
        assert raised.value.field == f"{VALUE_FROM}.resourceFieldRef.divisor"
        assert f"{resource} takes a divisor of" in raised.value.message


# --- spec.autoscaling.behavior: autoscaling/v2 HorizontalPodAutoscalerBehavior ---------------------------------

BEHAVIOR = "spec.autoscaling.behavior"


def behavior(value: dict[str, Any]) -> dict[str, Any]:
    return obj(autoscaling={"maxReplicas": 4, "behavior": value})


@pytest.mark.parametrize(
    "value",
    [
        {},
        {"scaleDown": {"stabilizationWindowSeconds": 3600}},
        {"scaleUp": {"selectPolicy": "Disabled"}},
        {"scaleUp": {"tolerance": 0}, "scaleDown": {"tolerance": 1}},
        {"scaleDown": {"tolerance": 0.05, "stabilizationWindowSeconds": 600}},
        {
            "scaleUp": {
                "stabilizationWindowSeconds": 0,
                "policies": [{"type": "Pods", "value": 4, "periodSeconds": 15}],
            },
            "scaleDown": {
                "selectPolicy": "Min",
                "policies": [
                    {"type": "Percent", "value": 10, "periodSeconds": 60},
                    {"type": "Pods", "value": 1, "periodSeconds": 1800},
                ],
            },
        },
    ],
)
def test_autoscaling_behaviors_the_api_server_admits(value: dict[str, Any]) -> None:
    manifest = behavior(value)
    assert validate_object(manifest) == []
    autoscaling = parse_model_deployment(manifest).spec.autoscaling
    assert autoscaling is not None and autoscaling.behavior == value


@pytest.mark.parametrize(
    ("value", "field", "words"),
    [
        (
            {"scaleDown": {"stabilizationWindowSeconds": 3601}},
            f"{BEHAVIOR}.scaleDown.stabilizationWindowSeconds",
            "less than or equal to 3600",
        ),
        (
            {"scaleUp": {"stabilizationWindowSeconds": -1}},
            f"{BEHAVIOR}.scaleUp.stabilizationWindowSeconds",
            "greater than or equal to 0",
        ),
        ({"scaleUp": {"selectPolicy": "Average"}}, f"{BEHAVIOR}.scaleUp.selectPolicy", "Unsupported value"),
        ({"scaleDown": {"policies": []}}, f"{BEHAVIOR}.scaleDown.policies", "at least 1"),
        (
            {"scaleDown": {"policies": [{"type": "Replicas", "value": 1, "periodSeconds": 60}]}},
            f"{BEHAVIOR}.scaleDown.policies[0].type",
            "Unsupported value",
        ),
        (
            {"scaleDown": {"policies": [{"type": "Pods", "value": 0, "periodSeconds": 60}]}},
            f"{BEHAVIOR}.scaleDown.policies[0].value",
            "greater than or equal to 1",
        ),
        (
            {"scaleUp": {"policies": [{"type": "Pods", "value": 1, "periodSeconds": 1801}]}},
            f"{BEHAVIOR}.scaleUp.policies[0].periodSeconds",
            "less than or equal to 1800",
        ),
        (
            {"scaleUp": {"policies": [{"type": "Pods", "value": 1}]}},
            f"{BEHAVIOR}.scaleUp.policies[0].periodSeconds",
            "Required value",
        ),
        ({"scaleUp": {"tolerance": -0.01}}, f"{BEHAVIOR}.scaleUp.tolerance", "greater than or equal to 0"),
        ({"scaleDown": {"tolerance": 1.5}}, f"{BEHAVIOR}.scaleDown.tolerance", "less than or equal to 1"),
        ({"scaleDown": {"tolerance": "50m"}}, f"{BEHAVIOR}.scaleDown.tolerance", "must be of type number"),
        ({"scaleDown": {"tolerance": True}}, f"{BEHAVIOR}.scaleDown.tolerance", "must be of type number"),
        ({"scaledown": {}}, f"{BEHAVIOR}.scaledown", "unknown field"),
        ({"scaleDown": {"anything": ["goes", 1]}}, f"{BEHAVIOR}.scaleDown.anything", "unknown field"),
    ],
)
def test_autoscaling_behaviors_the_api_server_refuses(value: dict[str, Any], field: str, words: str) -> None:
    errors = validate_object(behavior(value))
    assert refused(errors, field, words), errors


# --- spec.runtime.affinity: what the API server admits but leaves pods Pending or a term without effect ---------


@pytest.mark.parametrize(
    ("affinity", "field", "words"),
    [
        (
            {
                "podAntiAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": [{"topologyKey": "kubernetes.io/hostname"}]
                }
            },
            "spec.runtime.affinity.podAntiAffinity.requiredDuringSchedulingIgnoredDuringExecution[0].labelSelector",
            "labelSelector is required",
        ),
        (
            {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{}]}}},
            "spec.runtime.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0]",
            "an empty term matches no node",
        ),
    ],
)
def test_affinity_the_api_server_admits_is_refused_when_written_but_kept_when_stored(
    affinity: dict[str, Any], field: str, words: str
) -> None:
    """These are CEL rules, not structural ones: a new or changed object is refused, while one stored before the CRD
    checked affinity (admitted, so its CEL rules are not run again by the operator) keeps being reconciled."""
    manifest = obj(runtime={"affinity": affinity})
    assert refused(validate_object(manifest), field, words)
    assert parse_model_deployment(manifest, admitted=True).spec.runtime.affinity == affinity


# --- spec.rollout.analysis.webhooks ---------------------------------------------------------------------------

HOOKS = "spec.rollout.analysis.webhooks"


def _hook(**fields: Any) -> dict[str, Any]:
    return {"name": "evals", "url": "http://evals.ml.svc/check", **fields}


def _secret_header(name: str = "evals-token", key: str = "header") -> dict[str, Any]:
    return {"name": "Authorization", "valueFrom": {"secretKeyRef": {"name": name, "key": key}}}


@pytest.mark.parametrize(
    ("hooks", "field", "words"),
    [
        ([_hook()], None, None),
        ([_hook(timeoutSeconds=300, metadata={"suite": "smoke", "threshold": "0.9"})], None, None),
        ([_hook(), _hook(name="load", url="https://load.example.com:8443/run?model=iris")], None, None),
        ([_hook(name=f"h{i}") for i in range(8)], None, None),
        ([], HOOKS, "must have at least 1 items"),
        ([_hook(name=f"h{i}") for i in range(9)], HOOKS, "must have at most 8 items"),
        ([_hook(), _hook()], f"{HOOKS}[1]", "Duplicate value"),
        ([_hook(name="Evals")], f"{HOOKS}[0].name", "should match"),
        ([_hook(name="")], f"{HOOKS}[0].name", "must be at least 1 characters long"),
        ([_hook(url="ftp://evals/check")], f"{HOOKS}[0].url", "should match"),
        ([_hook(url="http://")], f"{HOOKS}[0].url", "should match"),
        ([_hook(url="evals.ml.svc/check")], f"{HOOKS}[0].url", "should match"),
        ([{"name": "evals"}], f"{HOOKS}[0].url", "Required value"),
        ([_hook(timeoutSeconds=0)], f"{HOOKS}[0].timeoutSeconds", "greater than or equal to 1"),
        ([_hook(timeoutSeconds=301)], f"{HOOKS}[0].timeoutSeconds", "less than or equal to 300"),
        ([_hook(metadata={"n": 1})], f"{HOOKS}[0].metadata.n", "must be of type string"),
        ([_hook(metadata={f"k{i}": "v" for i in range(17)})], f"{HOOKS}[0].metadata", "at most 16"),
        # headers: a value, or a key of a Secret
        ([_hook(headers=[{"name": "X-Team", "value": "ml platform"}, _secret_header()])], None, None),
        ([_hook(headers=[{"name": f"X-{i}", "value": "v"} for i in range(8)])], None, None),
        ([_hook(headers=[])], f"{HOOKS}[0].headers", "must have at least 1 items"),
        ([_hook(headers=[{"name": f"X-{i}", "value": "v"} for i in range(9)])], f"{HOOKS}[0].headers", "at most 8"),
        ([_hook(headers=[{"name": "X-Team"}])], f"{HOOKS}[0].headers[0]", "exactly one of value or valueFrom"),
        ([_hook(headers=[{**_secret_header(), "value": "x"}])], f"{HOOKS}[0].headers[0]", "exactly one of value"),
        ([_hook(headers=[{"name": "X-Team", "value": "a\r\nX-Evil: 1"}])], f"{HOOKS}[0].headers[0].value",
         "should match"),
        ([_hook(headers=[{"name": "X Team", "value": "v"}])], f"{HOOKS}[0].headers[0].name", "should match"),
        ([_hook(headers=[{"name": "X-Team:", "value": "v"}])], f"{HOOKS}[0].headers[0].name", "should match"),
        ([_hook(headers=[{"name": "HOST", "value": "evil"}])], f"{HOOKS}[0].headers", "set by the operator's HTTP"),
        ([_hook(headers=[{"name": "content-length", "value": "1"}])], f"{HOOKS}[0].headers", "set by the operator"),
        ([_hook(headers=[{"name": "X-A", "value": "1"}, {"name": "x-a", "value": "2"}])], f"{HOOKS}[0].headers",
         "unique, whatever their case"),
        ([_hook(headers=[{"name": "X-A", "value": "1"}, {"name": "X-A", "value": "2"}])], f"{HOOKS}[0].headers[1]",
         "Duplicate value"),
        ([_hook(headers=[_secret_header(key="a/b")])], f"{HOOKS}[0].headers[0].valueFrom.secretKeyRef.key",
         "should match"),
        ([_hook(headers=[_secret_header(name="Tokens")])], f"{HOOKS}[0].headers[0].valueFrom.secretKeyRef.name",
         "should match"),
        ([_hook(headers=[{"name": "A", "valueFrom": {"secretKeyRef": {"name": "t"}}}])],
         f"{HOOKS}[0].headers[0].valueFrom.secretKeyRef.key", "Required value"),
    ],
)
def test_analysis_webhooks(hooks: list[Any], field: str | None, words: str | None) -> None:
    errors = validate_object(obj(rollout={"analysis": {"webhooks": hooks, "count": 1, "failureLimit": 0}}))
    if field is None:
        assert errors == []
        parse_model_deployment(obj(rollout={"analysis": {"webhooks": hooks, "count": 1, "failureLimit": 0}}))
    else:
        assert words is not None
        assert any(e.field == field and words in e.message for e in errors), errors


def test_webhooks_alone_are_a_criterion_of_an_analysis() -> None:
    assert validate_object(obj(rollout={"analysis": {"webhooks": [_hook()]}})) == []
    errors = validate_object(obj(rollout={"analysis": {"count": 2}}))
    assert refused(errors, "spec.rollout.analysis", "goldenRequests or webhooks"), errors
