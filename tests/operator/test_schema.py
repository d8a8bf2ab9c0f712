"""modeldeploy.schema: the CRD's defaults, OpenAPI checks and CEL rules, as the API server applies them."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from reconcile_kit import FULL_AFFINITY

from modeldeploy import schema
from modeldeploy.schema import SpecError, default_object, validate_object

DELETE = object()


def base() -> dict[str, Any]:
    return {
        "apiVersion": "modeldeploy.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "iris", "namespace": "default"},
        "spec": {"model": {"version": "1", "storageUri": "s3://models/iris/1/model.pt"}},
    }


def merged(obj: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``obj`` with ``patch`` merged in (``DELETE`` removes a key; lists are replaced)."""
    out = copy.deepcopy(dict(obj))
    for key, value in patch.items():
        if value is DELETE:
            out.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merged(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def spec(**patch: Any) -> dict[str, Any]:
    return merged(base(), {"spec": patch})


def fields(errors: list[SpecError]) -> list[str]:
    return [e.field for e in errors]


def hook(**fields: Any) -> dict[str, Any]:
    """One analysis webhook."""
    return {"name": "evals", "url": "http://evals.ml.svc/check", **fields}


def header(name: str, value: str = "v") -> dict[str, Any]:
    return {"name": name, "value": value}


SECRET_KEY_REF = {"secretKeyRef": {"name": "tokens", "key": "header"}}


def golden(output: dict[str, Any] | None = None) -> dict[str, Any]:
    """A goldenRequests block of one case."""
    return {
        "cases": [
            {
                "name": "setosa",
                "inputs": [{"name": "input", "shape": [1, 4], "data": [5.1, 3.5, 1.4, 0.2]}],
                "outputs": [output or {"name": "output", "argmax": [0]}],
            }
        ]
    }


SPREAD = "spec.runtime.topologySpreadConstraints[0]"
SPREAD_ITEM = {"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "DoNotSchedule"}


def spread(**patch: Any) -> dict[str, Any]:
    """An object with one topology spread constraint: ``SPREAD_ITEM`` with ``patch`` merged in."""
    return spec(runtime={"topologySpreadConstraints": [merged(SPREAD_ITEM, patch)]})


NODE_TERM = "spec.runtime.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0]"
ANTI_TERM = "spec.runtime.affinity.podAntiAffinity.requiredDuringSchedulingIgnoredDuringExecution[0]"
ANTI_ITEM = {"topologyKey": "kubernetes.io/hostname", "labelSelector": {"matchLabels": {"app": "iris"}}}


def node_term(term: dict[str, Any]) -> dict[str, Any]:
    """An object whose required node affinity has the one term ``term``."""
    required = {"nodeSelectorTerms": [term]}
    return spec(runtime={"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": required}}})


def node_expression(key: str, operator: str, *values: str) -> dict[str, Any]:
    """``node_term`` of one label requirement (``values`` left out when none are given)."""
    return node_term(
        {"matchExpressions": [{"key": key, "operator": operator, **({"values": list(values)} if values else {})}]}
    )


def anti_term(**patch: Any) -> dict[str, Any]:
    """An object with one required pod anti-affinity term: ``ANTI_ITEM`` with ``patch`` merged in."""
    term = merged(ANTI_ITEM, patch)
    return spec(runtime={"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term]}}})


# --- defaults ----------------------------------------------------------------------------------------------


def test_defaults_fill_the_documented_values() -> None:
    obj = default_object(base())
    s = obj["spec"]
    assert s["model"]["format"] == "TorchScript"
    assert s["runtime"]["imagePullPolicy"] == "IfNotPresent"
    assert s["runtime"]["gpu"] == {"count": 0, "resourceName": "nvidia.com/gpu", "halfPrecision": False}
    assert s["runtime"]["batching"] == {"maxBatchSize": 32, "maxQueueDelayMs": 5, "maxQueueSize": 1024}
    assert (s["runtime"]["drainSeconds"], s["runtime"]["port"]) == (15, 8080)
    assert s["rollout"]["strategy"] == "RollingUpdate"
    assert s["rollout"]["rollingUpdate"] == {"maxSurge": "25%", "maxUnavailable": 0}
    assert (s["paused"], s["revisionHistoryLimit"]) == (False, 10)
    assert "replicas" not in s and "autoscaling" not in s


def test_defaults_apply_inside_objects_the_user_wrote() -> None:
    obj = default_object(
        spec(
            autoscaling={"maxReplicas": 3, "inflightRequests": {"targetAverageValue": "8"}},
            runtime={"batching": {"maxBatchSize": 8}},
            rollout={"strategy": "Canary", "canary": {"steps": [{"setWeight": 10}]}, "analysis": {}},
        )
    )
    s = obj["spec"]
    assert s["autoscaling"]["minReplicas"] == 1
    assert s["autoscaling"]["inflightRequests"]["metricName"] == "modelserve_inflight_requests"
    assert s["runtime"]["batching"] == {"maxBatchSize": 8, "maxQueueDelayMs": 5, "maxQueueSize": 1024}
    assert s["rollout"]["canary"]["trafficRouting"]["type"] == "Replicas"
    assert s["rollout"]["canary"]["capacity"] == {"mode": "Surge", "maxSurgePods": 1}
    assert s["rollout"]["analysis"]["source"] == {"type": "Scrape"}
    assert s["rollout"]["analysis"]["interval"] == "30s"
    assert "blueGreen" not in s["rollout"]


def test_defaults_replace_null_and_keep_user_values() -> None:
    obj = default_object(spec(paused=None, revisionHistoryLimit=3, model={"format": "TorchExport"}))
    assert obj["spec"]["paused"] is False
    assert obj["spec"]["revisionHistoryLimit"] == 3
    assert obj["spec"]["model"]["format"] == "TorchExport"


def test_default_object_copies_and_is_idempotent() -> None:
    original = base()
    once = default_object(original)
    assert original == base()
    assert default_object(once) == once


# --- OpenAPI checks ----------------------------------------------------------------------------------------


def test_a_minimal_object_is_valid() -> None:
    assert validate_object(base()) == []


@pytest.mark.parametrize(
    ("obj", "field", "message"),
    [
        (spec(model={"version": DELETE}), "spec.model.version", "Required value"),
        (merged(base(), {"spec": DELETE}), "spec", "Required value"),
        (spec(model={"versoin": "2"}), "spec.model.versoin", "unknown field"),
        (spec(model={"format": "ONNX"}), "spec.model.format", 'Unsupported value: "ONNX"'),
        (spec(model={"sha256": "ABC"}), "spec.model.sha256", "should match"),
        (spec(model={"version": "1 beta"}), "spec.model.version", "should match"),
        (spec(replicas="2"), "spec.replicas", "must be of type integer"),
        (spec(replicas=1001), "spec.replicas", "less than or equal to 1000"),
        (spec(runtime={"port": 80}), "spec.runtime.port", "greater than or equal to 1024"),
        (spec(runtime={"gpu": {"count": True}}), "spec.runtime.gpu.count", "must be of type integer"),
        (
            spec(runtime={"resources": {"limits": {"cpu": "two"}}}),
            "spec.runtime.resources.limits.cpu",
            "match",
        ),
        (spec(runtime={"resources": {"limits": {"cpu": 1.5}}}), "spec.runtime.resources.limits.cpu", "type"),
        (
            spec(runtime={"nodeSelector": {"kubernetes.io/os": 1}}),
            "spec.runtime.nodeSelector[kubernetes.io/os]",
            "must be of type string",
        ),
        (spec(runtime={"env": [{"name": "A"}, {"name": "A"}]}), "spec.runtime.env[1]", "Duplicate value"),
        (spec(runtime={"env": [{"name": f"V{i}"} for i in range(65)]}), "spec.runtime.env", "at most 64"),
        (
            spec(runtime={"imagePullSecrets": [{"name": "regcred"}, {"name": "other"}, {"name": "regcred"}]}),
            "spec.runtime.imagePullSecrets[2]",
            'Duplicate value: name="regcred"',
        ),
        (spec(runtime={"tolerations": [{"key": "team name"}]}), "spec.runtime.tolerations[0].key", "should match"),
        (spec(runtime={"tolerations": [{"key": "/team"}]}), "spec.runtime.tolerations[0].key", "should match"),
        (
            spec(runtime={"tolerations": [{"key": "team", "value": "-ml"}]}),
            "spec.runtime.tolerations[0].value",
            "should match",
        ),
        (
            spec(runtime={"tolerations": [{"tolerationSeconds": 2**70}]}),
            "spec.runtime.tolerations[0]",
            "int64",
        ),
        (spec(runtime={"priorityClassName": "GPU_High"}), "spec.runtime.priorityClassName", "should match"),
        (spec(runtime={"priorityClassName": "a" * 254}), "spec.runtime.priorityClassName", "Too long"),
        (spec(runtime={"runtimeClassName": "nvidia/"}), "spec.runtime.runtimeClassName", "should match"),
        (spread(maxSkew=0), f"{SPREAD}.maxSkew", "greater than or equal to 1"),
        (spread(maxSkew=2**31), f"{SPREAD}.maxSkew", "int32"),
        (spread(topologyKey=DELETE), f"{SPREAD}.topologyKey", "Required value"),
        (spread(topologyKey=""), f"{SPREAD}.topologyKey", "at least 1 characters"),
        (spread(topologyKey="zone name"), f"{SPREAD}.topologyKey", "should match"),
        (spread(whenUnsatisfiable="Never"), f"{SPREAD}.whenUnsatisfiable", 'Unsupported value: "Never"'),
        (spread(whenUnsatisfiable=DELETE), f"{SPREAD}.whenUnsatisfiable", "Required value"),
        (spread(nodeTaintsPolicy="Always"), f"{SPREAD}.nodeTaintsPolicy", "Unsupported value"),
        (spread(minDomains=0), f"{SPREAD}.minDomains", "greater than or equal to 1"),
        (spread(matchLabelKeys=["a", "a"]), f"{SPREAD}.matchLabelKeys", "Duplicate value"),
        (spread(matchLabelKeys=["-a"]), f"{SPREAD}.matchLabelKeys[0]", "should match"),
        (spread(maxskew=1), f"{SPREAD}.maxskew", "unknown field"),
        (spread(labelSelector="app=iris"), f"{SPREAD}.labelSelector", "must be of type object"),
        (spread(labelSelector={"matchLabel": {"app": "iris"}}), f"{SPREAD}.labelSelector.matchLabel", "unknown field"),
        (spread(labelSelector={"matchLabels": {"app": "iris v2"}}), f"{SPREAD}.labelSelector.matchLabels.app", "match"),
        (
            spread(labelSelector={"matchExpressions": [{"key": "app", "operator": "Equals", "values": ["a"]}]}),
            f"{SPREAD}.labelSelector.matchExpressions[0].operator",
            "Unsupported value",
        ),
        (
            spec(runtime={"affinity": {"nodeAffinity": "gpu"}}),
            "spec.runtime.affinity.nodeAffinity",
            "must be of type object",
        ),
        (spec(runtime={"affinity": {"podAfinity": {}}}), "spec.runtime.affinity.podAfinity", "unknown field"),
        (
            spec(runtime={"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {}}}}),
            "spec.runtime.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms",
            "Required value",
        ),
        (
            node_term({"matchExpressions": [{"key": "zone", "operator": "Like", "values": ["a"]}]}),
            f"{NODE_TERM}.matchExpressions[0].operator",
            "Unsupported value",
        ),
        (node_expression("zone name", "Exists"), f"{NODE_TERM}.matchExpressions[0].key", "should match"),
        (node_expression("zone", "In", "eu west"), f"{NODE_TERM}.matchExpressions[0].values[0]", "should match"),
        (
            node_term({"matchFields": [{"key": "metadata.labels", "operator": "In", "values": ["a"]}]}),
            f"{NODE_TERM}.matchFields[0].key",
            "Unsupported value",
        ),
        (
            node_term({"matchFields": [{"key": "metadata.name", "operator": "Exists", "values": ["a"]}]}),
            f"{NODE_TERM}.matchFields[0].operator",
            "Unsupported value",
        ),
        (
            node_term({"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["a", "b"]}]}),
            f"{NODE_TERM}.matchFields[0].values",
            "at most 1",
        ),
        (
            node_term({"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["Node_1"]}]}),
            f"{NODE_TERM}.matchFields[0].values[0]",
            "should match",
        ),
        (
            spec(
                runtime={
                    "affinity": {
                        "nodeAffinity": {
                            "preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 101, "preference": {}}]
                        }
                    }
                }
            ),
            "spec.runtime.affinity.nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution[0].weight",
            "less than or equal to 100",
        ),
        (
            spec(
                runtime={
                    "affinity": {
                        "podAffinity": {
                            "preferredDuringSchedulingIgnoredDuringExecution": [
                                {"weight": 0, "podAffinityTerm": ANTI_ITEM}
                            ]
                        }
                    }
                }
            ),
            "spec.runtime.affinity.podAffinity.preferredDuringSchedulingIgnoredDuringExecution[0].weight",
            "greater than or equal to 1",
        ),
        (anti_term(topologyKey=DELETE), f"{ANTI_TERM}.topologyKey", "Required value"),
        (anti_term(topologyKey=""), f"{ANTI_TERM}.topologyKey", "at least 1 characters"),
        (anti_term(namespaces=["ML_Serving"]), f"{ANTI_TERM}.namespaces[0]", "should match"),
        (anti_term(namespaces=["a", "a"]), f"{ANTI_TERM}.namespaces", "Duplicate value"),
        (anti_term(mismatchLabelKeys=["-a"]), f"{ANTI_TERM}.mismatchLabelKeys[0]", "should match"),
        (
            anti_term(labelSelector={"matchLabels": {"app": "iris v2"}}),
            f"{ANTI_TERM}.labelSelector.matchLabels.app",
            "should match",
        ),
        (
            anti_term(namespaceSelector={"matchExpressions": [{"key": "team", "operator": "Equals"}]}),
            f"{ANTI_TERM}.namespaceSelector.matchExpressions[0].operator",
            "Unsupported value",
        ),
        (
            spec(runtime={"topologySpreadConstraints": [SPREAD_ITEM, SPREAD_ITEM]}),
            "spec.runtime.topologySpreadConstraints[1]",
            "Duplicate value",
        ),
        (
            spec(runtime={"topologySpreadConstraints": [{**SPREAD_ITEM, "topologyKey": f"k{i}"} for i in range(9)]}),
            "spec.runtime.topologySpreadConstraints",
            "at most 8",
        ),
        (spec(rollout={"canary": {"steps": [{"pause": {"duration": "5 min"}}]}}), "spec.rollout", "match"),
        (spec(rollout={"canary": {"steps": [{"analysis": {"x": 1}}]}}), "spec.rollout", "unknown field"),
        (merged(base(), {"kind": "Deployment"}), "kind", "must be ModelDeployment"),
        (
            merged(base(), {"apiVersion": "modeldeploy.io/v1"}),
            "apiVersion",
            "must be modeldeploy.io/v1alpha1",
        ),
        (
            merged(base(), {"status": {"conditions": [{"type": "Ready", "status": "True"}]}}),
            "status.conditions[0].reason",
            "Required value",
        ),
        (
            merged(
                base(),
                {
                    "status": {
                        "conditions": [
                            {
                                "type": "Ready",
                                "status": "Yes",
                                "reason": "Fine",
                                "message": "",
                                "lastTransitionTime": "2024-06-01 10:00",
                            }
                        ]
                    }
                },
            ),
            "status.conditions[0].lastTransitionTime",
            "date-time",
        ),
    ],
)
def test_schema_violations_name_the_field(obj: dict[str, Any], field: str, message: str) -> None:
    errors = validate_object(obj)
    assert any(e.field.startswith(field) and message in e.message for e in errors), errors


@pytest.mark.parametrize(
    "patch",
    [
        {"runtime": {"resources": {"limits": {"cpu": 2, "memory": "1Gi", "nvidia.com/gpu": "1"}}}},
        {"autoscaling": {"maxReplicas": 2, "inflightRequests": {"targetAverageValue": 8}}},
        {"runtime": {"env": [{"name": "A", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]}},
        {"rollout": {"rollingUpdate": {"maxSurge": 1, "maxUnavailable": "10%"}}},
    ],
)
def test_int_or_string_and_preserved_fields_accept_their_shapes(patch: dict[str, Any]) -> None:
    assert validate_object(spec(**patch)) == []


@pytest.mark.parametrize(
    "runtime",
    [
        {"priorityClassName": "gpu-serving", "runtimeClassName": "nvidia"},
        {"priorityClassName": "system-cluster-critical", "runtimeClassName": "nvidia.cdi.k8s.io"},
        {"imagePullSecrets": [{"name": "regcred"}, {"name": "mirror"}]},
        {
            "tolerations": [
                {"operator": "Exists"},
                {"key": "", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
                {"key": "example.com/pool", "value": "gpu-a100_80GB.v2", "effect": "NoSchedule"},
                {"key": "dedicated", "operator": "Equal", "value": ""},
                {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute",
                 "tolerationSeconds": 0},
            ]
        },
        {"topologySpreadConstraints": []},
        {"topologySpreadConstraints": [SPREAD_ITEM]},
        {"affinity": FULL_AFFINITY},
        {"affinity": {}},
        {"affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": []}}},
        {
            "topologySpreadConstraints": [
                {
                    "maxSkew": 2,
                    "topologyKey": "kubernetes.io/hostname",
                    "whenUnsatisfiable": "ScheduleAnyway",
                    "labelSelector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["a"]}]},
                    "matchLabelKeys": ["pod-template-hash", "modeldeploy.io/revision"],
                    "nodeAffinityPolicy": "Ignore",
                    "nodeTaintsPolicy": "Honor",
                },
                {**SPREAD_ITEM, "minDomains": 3},
                {**SPREAD_ITEM, "whenUnsatisfiable": "ScheduleAnyway"},  # same key, other whenUnsatisfiable
            ]
        },
    ],
)
def test_pod_scheduling_fields_accept_their_shapes(runtime: dict[str, Any]) -> None:
    assert validate_object(spec(runtime=runtime)) == []


def test_status_written_by_the_operator_is_valid() -> None:
    obj = merged(
        base(),
        {
            "status": {
                "observedGeneration": 2,
                "phase": "Ready",
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "True",
                        "reason": "AllReplicasReady",
                        "message": "2/2 ready",
                        "observedGeneration": 2,
                        "lastTransitionTime": "2026-11-22T05:00:00Z",
                    }
                ],
                "replicas": 2,
                "readyReplicas": 2,
                "selector": "modeldeploy.io/model-deployment=iris",
                "url": "http://iris.default.svc.cluster.local/v2/models/iris",
                "currentRevision": "5d41402abc",
                "stableRevision": "5d41402abc",
                "modelVersion": "1",
                "rollout": {"step": 2, "anything": {"nested": True}},
                "history": [{"revision": "0123456789", "number": 1}],
            }
        },
    )
    assert validate_object(obj) == []


def test_nullable_and_int_or_string_translate_to_json_schema() -> None:
    translated = schema._to_json_schema(
        {
            "type": "object",
            "properties": {
                "a": {"type": "string", "nullable": True, "enum": ["x"]},
                "b": {"x-kubernetes-int-or-string": True},
                "c": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
            },
        }
    )
    assert translated["properties"]["a"] == {"type": ["string", "null"], "enum": ["x", None]}
    assert translated["properties"]["b"] == {"type": ["integer", "string"]}
    assert "additionalProperties" not in translated["properties"]["c"]
    assert translated["additionalProperties"] is False


def test_validate_object_rejects_non_objects_and_does_not_modify_input() -> None:
    assert fields(validate_object([])) == [""]  # type: ignore[arg-type]
    obj = base()
    validate_object(obj)
    assert obj == base()


# --- CEL rules ---------------------------------------------------------------------------------------------

SAFETENSORS = {"format": "Safetensors", "entryPoint": "pkg.mod:Net"}
ANALYSIS = {"maxErrorRatio": 0.01}

# (id, failing object, passing object, field of the error, part of the rule's message)
SIGNER = {"identity": "ci@example.com", "issuer": "https://accounts.google.com"}

GATEWAY = {"type": "GatewayAPI", "gatewayAPI": {"parentRefs": [{"name": "gw"}]}}
MIRROR = {"steps": [{"setMirror": 10}], "trafficRouting": GATEWAY}
CEL_CASES: list[tuple[str, dict[str, Any], dict[str, Any], str, str]] = [
    (
        "name-dns-label",
        merged(base(), {"metadata": {"name": "Iris_Model"}}),
        merged(base(), {"metadata": {"name": "iris-model"}}),
        "metadata.name",
        "DNS-1035",
    ),
    (
        "name-length",
        merged(base(), {"metadata": {"name": "a" * 53}}),
        merged(base(), {"metadata": {"name": "a" * 52}}),
        "metadata.name",
        "at most 52",
    ),
    (
        "entrypoint-required",
        spec(model={"format": "Safetensors"}),
        spec(model=SAFETENSORS),
        "spec.model.entryPoint",
        "required when format is Safetensors",
    ),
    (
        "entrypoint-only-safetensors",
        spec(model={"entryPoint": "pkg.mod:Net"}),
        spec(model={"format": "TorchScript"}),
        "spec.model.entryPoint",
        "applies only to format Safetensors",
    ),
    (
        "secret-only-downloads",
        spec(model={"storageUri": "file:///models/iris", "storageSecretRef": {"name": "creds"}}),
        spec(model={"storageUri": "https://example.com/m.pt", "storageSecretRef": {"name": "creds"}}),
        "spec.model.storageSecretRef",
        "downloaded models",
    ),
    (
        "sha256-only-downloads",
        spec(model={"storageUri": "pvc://models/iris", "sha256": "a" * 64}),
        spec(model={"storageUri": "gs://models/iris", "sha256": "a" * 64}),
        "spec.model.sha256",
        "applies only to http",
    ),
    (
        "signature-only-downloads",
        spec(model={"storageUri": "file:///models/iris", "signature": SIGNER}),
        spec(model={"storageUri": "s3://models/iris/m.pt", "signature": SIGNER}),
        "spec.model.signature",
        "signature is verified when the model is downloaded",
    ),
    (
        "storage-scheme",
        spec(model={"storageUri": "ftp://host/m.pt"}),
        spec(model={"storageUri": "pvc://models/iris/1"}),
        "spec.model.storageUri",
        "must start with",
    ),
    (
        "gpu-once",
        spec(runtime={"gpu": {"count": 1}, "resources": {"limits": {"nvidia.com/gpu": 1}}}),
        spec(runtime={"gpu": {"count": 1}, "resources": {"limits": {"cpu": 1}}}),
        "spec.runtime.gpu.count",
        "not both",
    ),
    (
        "env-value-xor-valuefrom",
        spec(runtime={"env": [{"name": "A", "value": "1", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]}),
        spec(runtime={"env": [{"name": "A", "value": "1"}]}),
        "spec.runtime.env[0]",
        "value or valueFrom",
    ),
    (
        "env-value-from-one-source",
        spec(runtime={"env": [{"name": "A", "valueFrom": {}}]}),
        spec(runtime={"env": [{"name": "A", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k"}}}]}),
        "spec.runtime.env[0].valueFrom",
        "set exactly one of",
    ),
    (
        "env-reserved",
        spec(runtime={"env": [{"name": "MODELSERVE_MAX_BATCH_SIZE", "value": "8"}]}),
        spec(runtime={"env": [{"name": "MODELSERVE_THREADS", "value": "8"}]}),
        "spec.runtime.env[0].name",
        "set by the operator",
    ),
    (
        "env-reserved-auth-tokens-file",
        spec(
            runtime={
                "auth": {"secretRef": {"name": "tok"}},
                "env": [{"name": "MODELSERVE_AUTH_TOKENS_FILE", "value": "/x"}],
            }
        ),
        spec(runtime={"auth": {"secretRef": {"name": "tok"}}, "env": [{"name": "MODELSERVE_DEVICE", "value": "cpu"}]}),
        "spec.runtime.env[0].name",
        "set by the operator",
    ),
    (
        "toleration-exists-value",
        spec(runtime={"tolerations": [{"key": "k", "operator": "Exists", "value": "v"}]}),
        spec(runtime={"tolerations": [{"key": "k", "operator": "Equal", "value": "v"}]}),
        "spec.runtime.tolerations[0]",
        "operator is Exists",
    ),
    (
        "toleration-empty-key-needs-exists",
        spec(runtime={"tolerations": [{"operator": "Equal", "value": "x"}]}),
        spec(runtime={"tolerations": [{"operator": "Exists"}]}),
        "spec.runtime.tolerations[0].operator",
        "operator must be Exists when key is empty",
    ),
    (
        "toleration-empty-key-without-operator",
        spec(runtime={"tolerations": [{"key": "", "effect": "NoSchedule"}]}),
        spec(runtime={"tolerations": [{"key": "", "operator": "Exists", "effect": "NoSchedule"}]}),
        "spec.runtime.tolerations[0].operator",
        "operator must be Exists when key is empty",
    ),
    (
        "toleration-seconds-need-no-execute",
        spec(runtime={"tolerations": [{"key": "k", "effect": "NoSchedule", "tolerationSeconds": 60}]}),
        spec(runtime={"tolerations": [{"key": "k", "effect": "NoExecute", "tolerationSeconds": 60}]}),
        "spec.runtime.tolerations[0].effect",
        "effect must be NoExecute when tolerationSeconds is set",
    ),
    (
        "toleration-seconds-without-effect",
        spec(runtime={"tolerations": [{"key": "k", "operator": "Exists", "tolerationSeconds": 60}]}),
        spec(runtime={"tolerations": [{"key": "k", "operator": "Exists"}]}),
        "spec.runtime.tolerations[0].effect",
        "effect must be NoExecute when tolerationSeconds is set",
    ),
    (
        "pod-labels-reserved",
        spec(runtime={"podLabels": {"modeldeploy.io/revision": "x"}}),
        spec(runtime={"podLabels": {"team": "ml", "app.kubernetes.io/part-of": "shop"}}),
        "spec.runtime.podLabels",
        "must not set",
    ),
    (
        "spread-min-domains",
        spread(whenUnsatisfiable="ScheduleAnyway", minDomains=2),
        spread(whenUnsatisfiable="DoNotSchedule", minDomains=2),
        f"{SPREAD}.minDomains",
        "only with whenUnsatisfiable DoNotSchedule",
    ),
    (
        "spread-match-label-keys-of-the-filled-in-selector",
        spread(matchLabelKeys=["pod-template-hash", "modeldeploy.io/revision"]),
        spread(matchLabelKeys=["pod-template-hash"]),
        f"{SPREAD}.matchLabelKeys",
        "when labelSelector is left out",
    ),
    (
        "spread-match-label-keys-also-in-the-selector",
        spread(labelSelector={"matchLabels": {"app": "iris"}}, matchLabelKeys=["pod-template-hash", "app"]),
        spread(labelSelector={"matchLabels": {"app": "iris"}}, matchLabelKeys=["pod-template-hash"]),
        f"{SPREAD}.matchLabelKeys",
        "must not also be in labelSelector",
    ),
    (
        "spread-match-label-keys-also-in-the-selector-expressions",
        spread(labelSelector={"matchExpressions": [{"key": "tier", "operator": "Exists"}]}, matchLabelKeys=["tier"]),
        spread(labelSelector={"matchExpressions": [{"key": "tier", "operator": "Exists"}]}, matchLabelKeys=["app"]),
        f"{SPREAD}.matchLabelKeys",
        "must not also be in labelSelector",
    ),
    (
        "spread-selector-in-needs-values",
        spread(labelSelector={"matchExpressions": [{"key": "app", "operator": "In", "values": []}]}),
        spread(labelSelector={"matchExpressions": [{"key": "app", "operator": "In", "values": ["iris"]}]}),
        f"{SPREAD}.labelSelector.matchExpressions[0].values",
        "need at least one value",
    ),
    (
        "spread-selector-label-keys",
        spread(labelSelector={"matchLabels": {"app/": "iris"}}),
        spread(labelSelector={"matchLabels": {"example.com/app": "iris"}}),
        f"{SPREAD}.labelSelector.matchLabels",
        "matchLabels keys must be label keys",
    ),
    (
        "spread-selector-key-prefix",
        spread(labelSelector={"matchExpressions": [{"key": "a" * 254 + "/app", "operator": "Exists"}]}),
        spread(labelSelector={"matchExpressions": [{"key": "a" * 253 + "/app", "operator": "Exists"}]}),
        f"{SPREAD}.labelSelector.matchExpressions[0].key",
        "prefix (before the '/') must be at most 253",
    ),
    (
        "node-term-not-empty",
        node_term({"matchExpressions": []}),
        node_expression("zone", "Exists"),
        NODE_TERM,
        "needs matchExpressions or matchFields",
    ),
    (
        "node-in-needs-values",
        node_expression("zone", "In"),
        node_expression("zone", "In", "a", "b"),
        f"{NODE_TERM}.matchExpressions[0].values",
        "In and NotIn need at least one value",
    ),
    (
        "node-gt-one-value",
        node_expression("gpus", "Gt", "1", "2"),
        node_expression("gpus", "Gt", "1"),
        f"{NODE_TERM}.matchExpressions[0].values",
        "Gt and Lt exactly one",
    ),
    (
        "node-exists-no-values",
        node_expression("zone", "Exists", "a"),
        node_expression("zone", "DoesNotExist"),
        f"{NODE_TERM}.matchExpressions[0].values",
        "Exists and DoesNotExist none",
    ),
    (
        "node-lt-whole-number",
        node_expression("gpu-memory", "Lt", "40Gi"),
        node_expression("gpu-memory", "Lt", "40960"),
        f"{NODE_TERM}.matchExpressions[0].values",
        "compare whole numbers",
    ),
    (
        "node-key-prefix",
        node_expression("a" * 254 + "/zone", "Exists"),
        node_expression("a" * 253 + "/zone", "Exists"),
        f"{NODE_TERM}.matchExpressions[0].key",
        "prefix (before the '/') must be at most 253",
    ),
    (
        "pod-term-match-label-keys-also-in-the-selector",
        anti_term(matchLabelKeys=["pod-template-hash", "app"]),
        anti_term(matchLabelKeys=["pod-template-hash"]),
        f"{ANTI_TERM}.matchLabelKeys",
        "must not also be in labelSelector",
    ),
    (
        # A CEL rule rather than a required property: the API server admits such a term, so an object stored
        # before the CRD checked affinity keeps working (the operator does not re-run CEL rules on stored objects).
        "pod-term-needs-a-selector",
        anti_term(labelSelector=DELETE),
        anti_term(),
        f"{ANTI_TERM}.labelSelector",
        "labelSelector is required",
    ),
    (
        "pod-term-match-and-mismatch",
        anti_term(matchLabelKeys=["tenant"], mismatchLabelKeys=["tenant"]),
        anti_term(matchLabelKeys=["tenant"], mismatchLabelKeys=["app"]),
        f"{ANTI_TERM}.mismatchLabelKeys",
        "both matchLabelKeys and mismatchLabelKeys",
    ),
    (
        "pod-term-selector-in-needs-values",
        anti_term(namespaceSelector={"matchExpressions": [{"key": "team", "operator": "NotIn"}]}),
        anti_term(namespaceSelector={"matchExpressions": [{"key": "team", "operator": "NotIn", "values": ["a"]}]}),
        f"{ANTI_TERM}.namespaceSelector.matchExpressions[0].values",
        "need at least one value",
    ),
    (
        "queue-holds-a-batch",
        spec(runtime={"batching": {"maxBatchSize": 64, "maxQueueSize": 32}}),
        spec(runtime={"batching": {"maxBatchSize": 64, "maxQueueSize": 64}}),
        "spec.runtime.batching.maxQueueSize",
        "at least maxBatchSize",
    ),
    (
        "min-le-max",
        spec(autoscaling={"minReplicas": 4, "maxReplicas": 2}),
        spec(autoscaling={"minReplicas": 2, "maxReplicas": 2}),
        "spec.autoscaling.minReplicas",
        "must not exceed",
    ),
    (
        "canary-needs-steps",
        spec(rollout={"strategy": "Canary"}),
        spec(rollout={"strategy": "Canary", "canary": {"steps": [{"setWeight": 50}]}}),
        "spec.rollout.canary",
        "needs a canary block",
    ),
    (
        "analysis-step-needs-analysis",
        spec(rollout={"strategy": "Canary", "canary": {"steps": [{"analysis": {}}]}}),
        spec(rollout={"strategy": "Canary", "canary": {"steps": [{"analysis": {}}]}, "analysis": ANALYSIS}),
        "spec.rollout.analysis",
        "analysis step needs",
    ),
    (
        "first-deploy-analysis",
        spec(rollout={"firstDeployAnalysis": True}),
        spec(rollout={"firstDeployAnalysis": True, "analysis": ANALYSIS}),
        "spec.rollout.analysis",
        "firstDeployAnalysis needs",
    ),
    (
        "pause-duration-at-most-a-week",
        spec(rollout={"canary": {"steps": [{"pause": {"duration": "167h60m1s"}}]}}),
        spec(rollout={"canary": {"steps": [{"pause": {"duration": "167h60m"}}]}}),
        "spec.rollout.canary.steps[0].pause.duration",
        "at most 168h",
    ),
    (
        "analysis-interval-at-most-a-day",
        spec(rollout={"analysis": {**ANALYSIS, "interval": "24h0.001s"}}),
        spec(rollout={"analysis": {**ANALYSIS, "interval": "24h"}}),
        "spec.rollout.analysis.interval",
        "longer than zero and at most 24h",
    ),
    (
        "analysis-interval-longer-than-zero",
        spec(rollout={"analysis": {**ANALYSIS, "interval": "0ms"}}),
        spec(rollout={"analysis": {**ANALYSIS, "interval": "1ns"}}),
        "spec.rollout.analysis.interval",
        "longer than zero and at most 24h",
    ),
    (
        "one-key-per-step",
        spec(rollout={"canary": {"steps": [{"setWeight": 10, "pause": {}}]}}),
        spec(rollout={"canary": {"steps": [{"setWeight": 10}, {"pause": {}}]}}),
        "spec.rollout.canary.steps[0]",
        "exactly one of",
    ),
    (
        "mirror-and-weight-in-one-step",
        spec(rollout={"canary": {"steps": [{"setMirror": 10, "setWeight": 0}], "trafficRouting": GATEWAY}}),
        spec(rollout={"canary": {"steps": [{"setWeight": 0}], "trafficRouting": GATEWAY}}),
        "spec.rollout.canary.steps[0]",
        "exactly one of setWeight, setMirror, pause, analysis",
    ),
    (
        "mirror-needs-gateway-api",
        spec(rollout={"canary": {"steps": [{"setMirror": 10}]}}),
        spec(rollout={"canary": {"steps": [{"setMirror": 10}], "trafficRouting": GATEWAY}}),
        "spec.rollout.canary.trafficRouting",
        "setMirror needs trafficRouting type GatewayAPI",
    ),
    (
        "mirror-needs-room-beside-the-stable",
        spec(rollout={"canary": {**MIRROR, "capacity": {"mode": "Neutral", "maxSurgePods": 0}}}),
        spec(rollout={"canary": {**MIRROR, "capacity": {"mode": "Neutral", "maxSurgePods": 1}}}),
        "spec.rollout.canary.capacity",
        "setMirror needs pods beside the stable's",
    ),
    (
        "webhook-headers-not-the-clients",
        spec(rollout={"analysis": {"webhooks": [hook(headers=[{"name": "Content-Type", "value": "text/plain"}])]}}),
        spec(rollout={"analysis": {"webhooks": [hook(headers=[{"name": "Accept", "value": "text/plain"}])]}}),
        "spec.rollout.analysis.webhooks[0].headers",
        "are set by the operator's HTTP client",
    ),
    (
        "webhook-header-names-unique-whatever-their-case",
        spec(rollout={"analysis": {"webhooks": [hook(headers=[header("X-A"), header("x-A")])]}}),
        spec(rollout={"analysis": {"webhooks": [hook(headers=[header("X-A"), header("X-B")])]}}),
        "spec.rollout.analysis.webhooks[0].headers",
        "header names must be unique, whatever their case",
    ),
    (
        "webhook-header-value-or-secret",
        spec(rollout={"analysis": {"webhooks": [hook(headers=[{"name": "X-A"}])]}}),
        spec(rollout={"analysis": {"webhooks": [hook(headers=[{"name": "X-A", "valueFrom": SECRET_KEY_REF}])]}}),
        "spec.rollout.analysis.webhooks[0].headers[0]",
        "a header takes exactly one of value or valueFrom",
    ),
    (
        "golden-output-by-data-or-argmax",
        spec(rollout={"analysis": {"goldenRequests": golden(output={"name": "output"})}}),
        spec(rollout={"analysis": {"goldenRequests": golden(output={"name": "output", "data": [0.9, 0.1]})}}),
        "spec.rollout.analysis.goldenRequests.cases[0].outputs[0]",
        "exactly one of data or argmax",
    ),
    (
        "golden-output-not-both",
        spec(rollout={"analysis": {"goldenRequests": golden(output={"name": "o", "data": [1.0], "argmax": [0]})}}),
        spec(rollout={"analysis": {"goldenRequests": golden(output={"name": "o", "argmax": [0]})}}),
        "spec.rollout.analysis.goldenRequests.cases[0].outputs[0]",
        "exactly one of data or argmax",
    ),
    (
        "gateway-block",
        spec(rollout={"canary": {"trafficRouting": {"type": "GatewayAPI"}}}),
        spec(rollout={"canary": {"trafficRouting": {"type": "GatewayAPI", "gatewayAPI": {"httpRoute": "r"}}}}),
        "spec.rollout.canary.trafficRouting.gatewayAPI",
        "needs the gatewayAPI block",
    ),
    (
        "gateway-route-or-parents",
        spec(rollout={"canary": {"trafficRouting": {"type": "GatewayAPI", "gatewayAPI": {"parentRefs": []}}}}),
        spec(
            rollout={
                "canary": {"trafficRouting": {"type": "GatewayAPI", "gatewayAPI": {"parentRefs": [{"name": "gw"}]}}}
            }
        ),
        "spec.rollout.canary.trafficRouting.gatewayAPI",
        "httpRoute",
    ),
    (
        "analysis-threshold",
        spec(rollout={"analysis": {"count": 2}}),
        spec(rollout={"analysis": {"count": 2, "maxP99LatencyMs": 250}}),
        "spec.rollout.analysis",
        "at least one threshold",
    ),
    (
        "analysis-run-can-fail",
        spec(rollout={"analysis": {**ANALYSIS, "count": 1}}),
        spec(rollout={"analysis": {**ANALYSIS, "count": 1, "failureLimit": 0}}),
        "spec.rollout.analysis.failureLimit",
        "failureLimit must be less than count",
    ),
    (
        "container-resource-names",
        spec(runtime={"resources": {"limits": {"gpu": 1}}}),
        spec(runtime={"resources": {"limits": {"nvidia.com/gpu": 1}}}),
        "spec.runtime.resources.limits",
        "a resource name with a",
    ),
    (
        "resource-amounts-not-negative",
        spec(runtime={"resources": {"requests": {"memory": "-1Gi"}}}),
        spec(runtime={"resources": {"requests": {"memory": "1Gi"}}}),
        "spec.runtime.resources.requests.memory",
        "must not be negative",
    ),
    (
        "inflight-target-more-than-zero",
        spec(autoscaling={"maxReplicas": 3, "inflightRequests": {"targetAverageValue": 0}}),
        spec(autoscaling={"maxReplicas": 3, "inflightRequests": {"targetAverageValue": 8}}),
        "spec.autoscaling.inflightRequests.targetAverageValue",
        "must be more than zero",
    ),
    (
        "selector-operator-and-values",
        spec(networkPolicy={"ingressFrom": [{"podSelector": {"matchExpressions": [{"key": "a", "operator": "In"}]}}]}),
        spec(
            networkPolicy={"ingressFrom": [{"podSelector": {"matchExpressions": [{"key": "a", "operator": "Exists"}]}}]}
        ),
        "spec.networkPolicy.ingressFrom[0].podSelector.matchExpressions[0].values",
        "operators In and NotIn need at least one value",
    ),
    (
        "node-selector-label-keys",
        spec(runtime={"nodeSelector": {"node pool": "gpu"}}),
        spec(runtime={"nodeSelector": {"example.com/node-pool": "gpu"}}),
        "spec.runtime.nodeSelector",
        "nodeSelector keys must be label keys",
    ),
    (
        "pod-labels-label-keys",
        spec(runtime={"podLabels": {"team/ml/serving": "x"}}),
        spec(runtime={"podLabels": {"example.com/team": "ml"}}),
        "spec.runtime.podLabels",
        "podLabels keys must be label keys",
    ),
    (
        "pod-annotations-keys",
        spec(runtime={"podAnnotations": {"prometheus io/scrape": "true"}}),
        spec(runtime={"podAnnotations": {"prometheus.io/scrape": "true"}}),
        "spec.runtime.podAnnotations",
        "podAnnotations keys must be annotation keys",
    ),
    (
        "caller-selector-label-keys",
        spec(networkPolicy={"ingressFrom": [{"podSelector": {"matchLabels": {"-app": "gateway"}}}]}),
        spec(networkPolicy={"ingressFrom": [{"podSelector": {"matchLabels": {"app": "gateway"}}}]}),
        "spec.networkPolicy.ingressFrom[0].podSelector.matchLabels",
        "matchLabels keys must be label keys",
    ),
    (
        "caller-selector-key-prefix",
        spec(
            networkPolicy={
                "ingressFrom": [
                    {"namespaceSelector": {"matchExpressions": [{"key": "a" * 254 + "/team", "operator": "Exists"}]}}
                ]
            }
        ),
        spec(
            networkPolicy={
                "ingressFrom": [
                    {"namespaceSelector": {"matchExpressions": [{"key": "a" * 253 + "/team", "operator": "Exists"}]}}
                ]
            }
        ),
        "spec.networkPolicy.ingressFrom[0].namespaceSelector.matchExpressions[0].key",
        "prefix (before the '/') must be at most 253 characters",
    ),
    (
        "prometheus-block",
        spec(rollout={"analysis": {**ANALYSIS, "source": {"type": "Prometheus"}}}),
        spec(rollout={"analysis": {**ANALYSIS, "source": {"type": "Prometheus", "prometheus": {"url": "http://p"}}}}),
        "spec.rollout.analysis.source.prometheus",
        "needs the prometheus block",
    ),
    (
        "disruption-budget-one-limit",
        spec(disruptionBudget={"maxUnavailable": 1, "minAvailable": 2}),
        spec(disruptionBudget={"minAvailable": 2}),
        "spec.disruptionBudget",
        "at most one of maxUnavailable and minAvailable",
    ),
    (
        "disruption-budget-max-unavailable-negative",
        spec(disruptionBudget={"maxUnavailable": -1}),
        spec(disruptionBudget={"maxUnavailable": 0}),
        "spec.disruptionBudget.maxUnavailable",
        "non-negative integer or a percentage",
    ),
    (
        "disruption-budget-min-available-negative",
        spec(disruptionBudget={"minAvailable": -1}),
        spec(disruptionBudget={"minAvailable": "100%"}),
        "spec.disruptionBudget.minAvailable",
        "non-negative integer or a percentage",
    ),
]


@pytest.mark.parametrize(
    ("failing", "passing", "field", "message"), [c[1:] for c in CEL_CASES], ids=[c[0] for c in CEL_CASES]
)
def test_cel_rule_rejects_and_accepts(
    failing: dict[str, Any], passing: dict[str, Any], field: str, message: str
) -> None:
    errors = validate_object(failing)
    assert [(e.field, message in e.message) for e in errors] == [(field, True)], errors
    assert validate_object(passing) == []


def test_every_cel_rule_has_a_failing_case() -> None:
    covered: set[str] = set()
    for _, failing, *_ in CEL_CASES:
        covered.update(e.message.removeprefix("Invalid value: ") for e in validate_object(failing))
    messages = {rule.message for rule in schema.cel_rules()}
    assert messages - covered == set()


def test_rules_reading_a_missing_field_report_an_evaluation_error() -> None:
    with pytest.raises(ValueError, match=r"no such member|KeyError"):
        schema.evaluate_rule("self.missing == 1", {"present": 1})
    assert schema.evaluate_rule("self.all(k, k.startsWith('a'))", {"ab": 1, "ac": 2}) is True
    with pytest.raises(ValueError, match="did not return a bool"):
        schema.evaluate_rule("size(self)", [1, 2])


@pytest.mark.parametrize(
    ("obj", "field", "message"),
    [
        (
            spec(rollout={"canary": {"steps": [{"pause": {"duration": "100000000h"}}]}}),
            "spec.rollout.canary.steps[0].pause.duration",
            "at most 168h",
        ),
        (
            spec(rollout={"analysis": {**ANALYSIS, "interval": "100000000h"}}),
            "spec.rollout.analysis.interval",
            "at most 24h",
        ),
        (
            spec(rollout={"analysis": {**ANALYSIS, "interval": "9" * 31 + "h"}}),
            "spec.rollout.analysis.interval",
            "at most 24h",
        ),
    ],
)
def test_a_duration_beyond_go_is_an_evaluation_error_with_the_rules_message(
    obj: dict[str, Any], field: str, message: str
) -> None:
    """Past int64 nanoseconds (about 2562047h) cel-go's duration() fails; the API server reports that failure
    followed by the rule's message, and so does validate_object."""
    errors = validate_object(obj)
    assert [e.field for e in errors] == [field], errors
    assert errors[0].message.startswith("Invalid value: time: invalid duration"), errors
    assert message in errors[0].message


@pytest.mark.parametrize(
    ("text", "nanoseconds"),
    [
        ("0", 0),
        ("30s", 30 * 10**9),
        ("1h30m", 5400 * 10**9),
        ("1.5h", 5400 * 10**9),
        (".5s", 5 * 10**8),
        ("5.s", 5 * 10**9),
        ("250ms", 25 * 10**7),
        ("5us", 5000),
        ("5\u00b5s", 5000),
        ("5\u03bcs", 5000),
        ("0.5ns", 0),
        ("1h1h", 7200 * 10**9),
        ("-1s", -(10**9)),
        ("+1s", 10**9),
        ("2562047h", 2562047 * 3600 * 10**9),
    ],
)
def test_go_duration_nanoseconds(text: str, nanoseconds: int) -> None:
    assert schema.go_duration_nanoseconds(text) == nanoseconds


@pytest.mark.parametrize("text", ["", "-", "1", "s", ".s", "1d", "1h ", " 1h", "1h-1m", "2562048h", "9" * 20 + "ns"])
def test_go_duration_nanoseconds_rejects(text: str) -> None:
    with pytest.raises(schema.DurationError, match="time: invalid duration"):
        schema.go_duration_nanoseconds(text)


def test_cel_duration_parses_as_go_does() -> None:
    """The micro sign, which celpy's own duration() refuses, a range of int64 nanoseconds, and nanoseconds
    compared with the CRD's bounds as exactly as cel-go does, although celpy keeps microseconds."""
    assert schema.evaluate_rule("duration(self) == duration('5us')", "5\u00b5s") is True
    assert schema.evaluate_rule("duration(self) > duration('0s')", "1ns") is True
    assert schema.evaluate_rule("duration(self) <= duration('24h')", "24h0.0000001s") is False
    assert schema.evaluate_rule("duration(self) <= duration('24h')", "23h59m59.9999999s") is True
    assert schema.evaluate_rule("duration(self) > duration('168h')", "2562047h") is True
    assert schema.evaluate_rule("duration(self) == duration('0s')", "0") is True
    with pytest.raises(ValueError, match='time: invalid duration "2562048h"'):
        schema.evaluate_rule("duration(self) > duration('0s') && duration(self) < duration('1h')", "2562048h")


def test_rules_are_skipped_quietly_where_the_schema_already_failed() -> None:
    errors = validate_object(spec(runtime={"batching": {"maxBatchSize": "many"}}))
    assert fields(errors) == ["spec.runtime.batching.maxBatchSize"]


def test_errors_are_reported_together() -> None:
    obj = spec(model={"format": "Safetensors", "bogus": 1}, autoscaling={"minReplicas": 2, "maxReplicas": 1})
    expected = {"spec.model.bogus", "spec.model.entryPoint", "spec.autoscaling.minReplicas"}
    assert set(fields(validate_object(obj))) == expected


def test_spec_error_carries_field_and_message() -> None:
    error = SpecError("spec.model.storageUri", "bad scheme")
    assert (error.field, error.message, str(error)) == (
        "spec.model.storageUri",
        "bad scheme",
        "spec.model.storageUri: bad scheme",
    )
    assert error == SpecError("spec.model.storageUri", "bad scheme")
    assert isinstance(error, ValueError)


def test_admit_returns_the_defaulted_object_or_raises() -> None:
    assert schema.admit(base())["spec"]["paused"] is False
    with pytest.raises(SpecError) as caught:
        schema.admit(spec(replicas=-1))
    assert caught.value.field == "spec.replicas"


@pytest.mark.parametrize(
    ("path", "text"),
    [
        (("spec", "runtime", "env", 0, "name"), "spec.runtime.env[0].name"),
        (
            ("spec", "runtime", "nodeSelector", "kubernetes.io/os"),
            "spec.runtime.nodeSelector[kubernetes.io/os]",
        ),
        ((), ""),
    ],
)
def test_format_path(path: tuple[str | int, ...], text: str) -> None:
    assert schema.format_path(path) == text


@settings(max_examples=40, deadline=None)
@given(
    batch=st.integers(min_value=1, max_value=4096),
    queue=st.integers(min_value=1, max_value=10_000),
    min_replicas=st.integers(min_value=1, max_value=20),
    max_replicas=st.integers(min_value=1, max_value=20),
)
def test_cross_field_rules_match_their_arithmetic(batch: int, queue: int, min_replicas: int, max_replicas: int) -> None:
    obj = spec(
        runtime={"batching": {"maxBatchSize": batch, "maxQueueSize": queue}},
        autoscaling={"minReplicas": min_replicas, "maxReplicas": max_replicas},
    )
    got = set(fields(validate_object(obj)))
    expected = set()
    if queue < batch:
        expected.add("spec.runtime.batching.maxQueueSize")
    if min_replicas > max_replicas:
        expected.add("spec.autoscaling.minReplicas")
    assert got == expected
