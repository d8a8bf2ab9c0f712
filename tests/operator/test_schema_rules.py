"""The CRD's rules that keep out what the API server would refuse later (pods it cannot create, label selectors it
cannot store) or what could never do its job (an analysis that cannot fail), checked on the real CRD with
modeldeploy.schema: each table lists admitted and refused values."""

from __future__ import annotations

from typing import Any

import pytest

from modeldeploy.schema import SpecError, validate_object


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


# --- spec.runtime.resources: what the API server's pod validation refuses --------------------------------------

EQUAL = "needs a limit of the same amount"
AT_MOST = "must not be larger than the limit"


@pytest.mark.parametrize(
    ("resources", "words"),
    [
        ({}, None),
        ({"limits": {"nvidia.com/gpu": 1}}, None),  # the request defaults to the limit
        ({"requests": {"nvidia.com/gpu": 1}, "limits": {"nvidia.com/gpu": "1"}}, None),
        ({"requests": {"nvidia.com/gpu": "1000m"}, "limits": {"nvidia.com/gpu": 1}}, None),
        ({"requests": {"amd.com/gpu": 2, "cpu": 4}, "limits": {"amd.com/gpu": 2}}, None),
        ({"requests": {"hugepages-2Mi": "1Gi"}, "limits": {"hugepages-2Mi": "1024Mi"}}, None),
        ({"requests": {"cpu": "500m"}, "limits": {"cpu": 1}}, None),
        ({"requests": {"cpu": 1}, "limits": {"cpu": "1000m"}}, None),
        ({"requests": {"cpu": "1e3"}, "limits": {"cpu": "1k"}}, None),
        ({"requests": {"memory": "1G"}, "limits": {"memory": "1Gi"}}, None),
        ({"requests": {"memory": "4Gi", "ephemeral-storage": "10Gi"}}, None),  # no limits: nothing to exceed
        ({"requests": {"cpu": 8}, "limits": {"memory": "1Gi"}}, None),  # no cpu limit
        ({"requests": {"example.kubernetes.io/widget": 1}}, None),  # in kubernetes.io/: may be overcommitted
        ({"requests": {"nvidia.com/gpu": 1}}, EQUAL),
        ({"requests": {"nvidia.com/gpu": 1}, "limits": {"cpu": 1}}, EQUAL),
        ({"requests": {"nvidia.com/gpu": 1}, "limits": {"nvidia.com/gpu": 2}}, EQUAL),
        ({"requests": {"amd.com/gpu": "2"}, "limits": {"amd.com/gpu": 1}}, EQUAL),
        ({"requests": {"hugepages-1Gi": "2Gi"}}, EQUAL),
        ({"requests": {"hugepages-2Mi": "1Gi"}, "limits": {"hugepages-2Mi": "2Gi"}}, EQUAL),
        ({"requests": {"cpu": "1500m"}, "limits": {"cpu": 1}}, AT_MOST),
        ({"requests": {"cpu": "1001m"}, "limits": {"cpu": "1"}}, AT_MOST),
        ({"requests": {"cpu": "1.0000000001"}, "limits": {"cpu": "1"}}, AT_MOST),  # rounded up to 1.000000001
        ({"requests": {"cpu": 2}, "limits": {"cpu": "500m"}}, AT_MOST),
        ({"requests": {"cpu": "1e3"}, "limits": {"cpu": 999}}, AT_MOST),
        ({"requests": {"memory": "1Gi"}, "limits": {"memory": "1G"}}, AT_MOST),
        ({"requests": {"ephemeral-storage": "2Gi"}, "limits": {"ephemeral-storage": "1Gi"}}, AT_MOST),
        ({"requests": {"example.kubernetes.io/widget": 2}, "limits": {"example.kubernetes.io/widget": 1}}, AT_MOST),
    ],
)
def test_resources_requests_against_limits(resources: dict[str, Any], words: str | None) -> None:
    errors = validate_object(obj(runtime={"resources": resources}))
    if words is None:
        assert errors == []
    else:
        assert refused(errors, "spec.runtime.resources.requests", words), errors


def test_gpus_from_gpu_count_and_cpu_requests_together() -> None:
    """gpu.count adds the GPU limit when the pods are built; the rules see only what resources says."""
    runtime = {"gpu": {"count": 2}, "resources": {"requests": {"cpu": "2"}, "limits": {"cpu": "4"}}}
    assert validate_object(obj(runtime=runtime)) == []


def test_a_quantity_the_api_server_cannot_parse_fails_the_rule() -> None:
    errors = validate_object(obj(runtime={"resources": {"requests": {"cpu": "1e1.5"}, "limits": {"cpu": 1}}}))
    assert [e.field for e in errors] == ["spec.runtime.resources"]
    assert errors[0].message.startswith("Invalid value: quantities must match the regular expression '^")
    assert errors[0].message.endswith(f"evaluating rule: a request {AT_MOST} of the same resource, or the API server "
                                      "refuses the pods")


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
