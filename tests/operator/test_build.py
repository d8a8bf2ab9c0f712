"""modeldeploy.build: the children of a ModelDeployment, checked against the official Kubernetes schemas."""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Mapping
from typing import Any

import kubernetes_validate
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reconcile_kit import FULL_AFFINITY, assert_valid_k8s

from modeldeploy import build, labels
from modeldeploy.build import build_children, build_deployment, build_hpa, build_service, revision_of
from modeldeploy.config import OperatorConfig
from modeldeploy.schema import parse_quantity, validate_object
from modeldeploy.spec import ModelDeployment, parse_model_deployment

K8S_VERSION = kubernetes_validate.latest_version()
CONFIG = OperatorConfig()


def body(name: str = "iris", uid: str | None = "0f6b1c2e-uid", **spec: Any) -> dict[str, Any]:
    model = {"version": "1", "storageUri": "s3://models/iris/1/model.pt", **spec.pop("model", {})}
    metadata: dict[str, Any] = {"name": name, "namespace": "ml"}
    if uid:
        metadata["uid"] = uid
    return {
        "apiVersion": "modeldeploy.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": metadata,
        "spec": {"model": model, **spec},
    }


def md_of(**spec: Any) -> ModelDeployment:
    return parse_model_deployment(body(**spec))


ALLOWED_VOLUME_TYPES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}


def restricted_violations(deployment: Mapping[str, Any]) -> list[str]:
    """Checks of the Pod Security Standard "restricted" profile (v1.35) on a Deployment's pod template."""
    pod = deployment["spec"]["template"]["spec"]
    found: list[str] = []
    pod_sc = pod.get("securityContext", {})
    for host in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(host):
            found.append(host)
    for volume in pod.get("volumes", []):
        kinds = set(volume) - {"name"}
        if not kinds <= ALLOWED_VOLUME_TYPES:
            found.append(f"volume {volume['name']}: {kinds}")
    if pod_sc.get("runAsUser") == 0:
        found.append("pod runAsUser 0")
    for container in [*pod.get("initContainers", []), *pod["containers"]]:
        sc = container.get("securityContext", {})
        where = container["name"]
        if sc.get("privileged"):
            found.append(f"{where}: privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            found.append(f"{where}: allowPrivilegeEscalation not false")
        if "ALL" not in sc.get("capabilities", {}).get("drop", []):
            found.append(f"{where}: capabilities not dropped")
        if set(sc.get("capabilities", {}).get("add", [])) - {"NET_BIND_SERVICE"}:
            found.append(f"{where}: capabilities added")
        if not (sc.get("runAsNonRoot") is True or (pod_sc.get("runAsNonRoot") is True and "runAsNonRoot" not in sc)):
            found.append(f"{where}: runAsNonRoot")
        if sc.get("runAsUser") == 0:
            found.append(f"{where}: runAsUser 0")
        seccomp = sc.get("seccompProfile", pod_sc.get("seccompProfile", {})).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            found.append(f"{where}: seccompProfile")
        if any(port.get("hostPort") for port in container.get("ports", [])):
            found.append(f"{where}: hostPort")
    return found


def containers(deployment: Mapping[str, Any]) -> dict[str, Any]:
    pod = deployment["spec"]["template"]["spec"]
    return {c["name"]: c for c in [*pod.get("initContainers", []), *pod["containers"]]}


def env_of(container: Mapping[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container.get("env", [])}


# --- Deployment --------------------------------------------------------------------------------------------


def test_downloaded_model_gets_a_fetch_init_container() -> None:
    md = md_of(model={"sha256": "c" * 64, "storageSecretRef": {"name": "s3-creds"}})
    deployment = build_deployment(md, CONFIG, "abcdef0123", 2)
    pod = deployment["spec"]["template"]["spec"]
    found = containers(deployment)
    fetch, server = found["fetch-model"], found["model-server"]
    assert fetch["command"] == ["modelserve"]
    assert fetch["args"] == ["fetch", "s3://models/iris/1/model.pt", "/mnt/models", "--sha256", "c" * 64]
    assert fetch["envFrom"] == [{"secretRef": {"name": "s3-creds"}}]
    assert "envFrom" not in server
    assert server["args"] == ["serve", "--model-dir", "/mnt/models", "--model-name", "iris", "--port", "8080"]
    assert {"name": "model-store", "emptyDir": {}} in pod["volumes"]
    assert {"name": "model-store", "mountPath": "/mnt/models", "readOnly": True} in server["volumeMounts"]
    assert {"name": "tmp", "mountPath": "/tmp"} in server["volumeMounts"]


def test_sha256_is_omitted_when_not_given() -> None:
    fetch = containers(build_deployment(md_of(), CONFIG, "abcdef0123", 1))["fetch-model"]
    assert fetch["args"] == ["fetch", "s3://models/iris/1/model.pt", "/mnt/models"]
    assert "envFrom" not in fetch


def test_pvc_model_is_mounted_read_only_without_fetch() -> None:
    deployment = build_deployment(md_of(model={"storageUri": "pvc://model-store/iris/1"}), CONFIG, "abcdef0123", 1)
    pod = deployment["spec"]["template"]["spec"]
    assert "initContainers" not in pod
    assert {
        "name": "model-store",
        "persistentVolumeClaim": {"claimName": "model-store", "readOnly": True},
    } in pod["volumes"]
    server = containers(deployment)["model-server"]
    assert server["args"][server["args"].index("--model-dir") + 1] == "/mnt/models/iris/1"
    assert {"name": "model-store", "mountPath": "/mnt/models", "readOnly": True} in server["volumeMounts"]


def test_baked_model_uses_the_image_path() -> None:
    deployment = build_deployment(md_of(model={"storageUri": "file:///opt/models/iris"}), CONFIG, "abcdef0123", 1)
    pod = deployment["spec"]["template"]["spec"]
    assert "initContainers" not in pod
    assert [v["name"] for v in pod["volumes"]] == ["tmp"]
    server = containers(deployment)["model-server"]
    assert server["args"][server["args"].index("--model-dir") + 1] == "/opt/models/iris"


def test_batching_and_model_settings_become_environment() -> None:
    md = md_of(
        model={"format": "Safetensors", "entryPoint": "zoo:Net", "version": "7"},
        runtime={
            "batching": {"maxBatchSize": 8, "maxQueueDelayMs": 0, "maxQueueSize": 100},
            "drainSeconds": 5,
            "gpu": {"count": 1, "halfPrecision": True},
            "env": [{"name": "B", "value": "$(A)"}, {"name": "A", "value": "1"}],
        },
    )
    server = containers(build_deployment(md, CONFIG, "abcdef0123", 1))["model-server"]
    assert env_of(server) == {
        "MODELSERVE_MAX_BATCH_SIZE": "8",
        "MODELSERVE_MAX_QUEUE_DELAY_MS": "0",
        "MODELSERVE_MAX_QUEUE_SIZE": "100",
        "MODELSERVE_DRAIN_SECONDS": "5",
        "MODELSERVE_HALF_PRECISION": "true",
        "MODELSERVE_MODEL_VERSION": "7",
        "MODELSERVE_MODEL_FORMAT": "Safetensors",
        "MODELSERVE_ENTRY_POINT": "zoo:Net",
        "MODELSERVE_DEVICE": "cuda",
        "B": "$(A)",
        "A": "1",
    }
    names = [e["name"] for e in server["env"]]
    assert names[:-2] == sorted(names[:-2])  # ours sorted, the user's after them in their order
    assert names[-2:] == ["B", "A"]


@pytest.mark.parametrize(
    ("gpu", "env", "expected"),
    [
        ({"count": 1}, [], "cuda"),  # a GPU pod whose GPU is not visible fails at load, not on the CPU unnoticed
        ({"count": 2, "resourceName": "amd.com/gpu"}, [], "cuda"),  # ROCm's torch names its devices cuda too
        ({"count": 0}, [], None),  # CPU pods keep `auto`: no device setting, so no change to their template
        ({}, [], None),
        ({"count": 1}, [{"name": "MODELSERVE_DEVICE", "value": "cpu"}], "cpu"),  # the user's own setting wins
    ],
)
def test_gpu_pods_require_their_gpu(gpu: dict[str, Any], env: list[dict[str, str]], expected: str | None) -> None:
    server = containers(build_deployment(md_of(runtime={"gpu": gpu, "env": env}), CONFIG, "abcdef0123", 1))[
        "model-server"
    ]
    devices = [e["value"] for e in server["env"] if e["name"] == "MODELSERVE_DEVICE"]
    assert devices == ([] if expected is None else [expected])


def test_probes_port_and_grace_period() -> None:
    deployment = build_deployment(md_of(runtime={"drainSeconds": 20, "port": 9000}), CONFIG, "abcdef0123", 1)
    server = containers(deployment)["model-server"]
    assert server["ports"] == [{"name": "http", "containerPort": 9000, "protocol": "TCP"}]
    assert server["startupProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "http", "scheme": "HTTP"}
    assert server["startupProbe"]["failureThreshold"] * server["startupProbe"]["periodSeconds"] >= 300
    assert server["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert server["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 50


def test_gpu_limit_and_automatic_toleration() -> None:
    md = md_of(
        runtime={
            "gpu": {"count": 2, "resourceName": "amd.com/gpu"},
            "resources": {"requests": {"cpu": "2"}, "limits": {"memory": "8Gi"}},
            "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}],
        }
    )
    deployment = build_deployment(md, CONFIG, "abcdef0123", 1)
    found = containers(deployment)
    assert found["model-server"]["resources"] == {
        "limits": {"amd.com/gpu": 2, "memory": "8Gi"},
        "requests": {"cpu": "2"},
    }
    assert found["fetch-model"]["resources"] == {"limits": {"memory": "8Gi"}, "requests": {"cpu": "2"}}
    assert deployment["spec"]["template"]["spec"]["tolerations"] == [
        {"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"},
        {"key": "amd.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
    ]


def test_gpu_toleration_is_not_duplicated() -> None:
    toleration = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    md = md_of(runtime={"gpu": {"count": 1}, "tolerations": [toleration]})
    assert build_deployment(md, CONFIG, "abcdef0123", 1)["spec"]["template"]["spec"]["tolerations"] == [toleration]


def test_cpu_pod_has_no_gpu_and_no_tolerations() -> None:
    deployment = build_deployment(md_of(), CONFIG, "abcdef0123", 1)
    assert "tolerations" not in deployment["spec"]["template"]["spec"]
    assert "resources" not in containers(deployment)["model-server"]


def test_labels_selector_annotations_and_owner() -> None:
    md = md_of(model={"version": "v2"}, runtime={"podLabels": {"team": "ml"}, "podAnnotations": {"a": "b"}})
    deployment = build_deployment(md, CONFIG, "abcdef0123", 3)
    meta = deployment["metadata"]
    assert meta["name"] == "iris-abcdef0123"
    assert meta["namespace"] == "ml"
    assert meta["labels"] == {
        "app.kubernetes.io/name": "modeldeploy-runtime",
        "app.kubernetes.io/instance": "iris",
        "app.kubernetes.io/managed-by": "modeldeploy",
        "app.kubernetes.io/component": "model-server",
        "app.kubernetes.io/version": "v2",
        "modeldeploy.io/revision": "abcdef0123",
        "modeldeploy.io/model-deployment": "iris",
    }
    assert meta["annotations"] == {"modeldeploy.io/revision": "abcdef0123"}
    assert meta["ownerReferences"] == [
        {
            "apiVersion": "modeldeploy.io/v1alpha1",
            "kind": "ModelDeployment",
            "name": "iris",
            "uid": "0f6b1c2e-uid",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    spec = deployment["spec"]
    assert spec["replicas"] == 3
    assert spec["selector"] == {
        "matchLabels": {"modeldeploy.io/model-deployment": "iris", "modeldeploy.io/revision": "abcdef0123"}
    }
    template = spec["template"]["metadata"]
    assert template["labels"] == {**meta["labels"], "team": "ml"}
    assert template["annotations"] == {"a": "b", "modeldeploy.io/revision": "abcdef0123"}


def test_no_owner_reference_without_uid() -> None:
    md = parse_model_deployment(body(uid=None))
    for obj in build_children(md, CONFIG).objects():
        assert "ownerReferences" not in obj["metadata"]


def test_image_defaults_to_the_operator_setting() -> None:
    config = OperatorConfig(default_runtime_image="registry.local/modelserve:dev")
    found = containers(build_deployment(md_of(), config, "abcdef0123", 1))
    assert {c["image"] for c in found.values()} == {"registry.local/modelserve:dev"}
    found = containers(build_deployment(md_of(runtime={"image": "mine:1"}), config, "abcdef0123", 1))
    assert {c["image"] for c in found.values()} == {"mine:1"}


def test_service_account_and_token() -> None:
    pod = build_deployment(md_of(), CONFIG, "abcdef0123", 1)["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    pod = build_deployment(md_of(runtime={"serviceAccountName": "reader"}), CONFIG, "abcdef0123", 1)["spec"][
        "template"
    ]["spec"]
    assert pod["serviceAccountName"] == "reader"
    assert "automountServiceAccountToken" not in pod


# --- pod scheduling ----------------------------------------------------------------------------------------

ZONE_SPREAD = {"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "DoNotSchedule"}
HOST_SPREAD = {
    "maxSkew": 2,
    "topologyKey": "kubernetes.io/hostname",
    "whenUnsatisfiable": "ScheduleAnyway",
    "labelSelector": {"matchExpressions": [{"key": "team", "operator": "In", "values": ["ml"]}]},
    "matchLabelKeys": ["pod-template-hash"],
    "nodeAffinityPolicy": "Honor",
    "nodeTaintsPolicy": "Honor",
}
SCHEDULING_FIELDS = ("priorityClassName", "runtimeClassName", "topologySpreadConstraints")


@pytest.mark.parametrize(
    ("runtime", "expected"),
    [
        ({}, {}),
        ({"topologySpreadConstraints": []}, {}),
        ({"priorityClassName": "gpu-serving"}, {"priorityClassName": "gpu-serving"}),
        ({"runtimeClassName": "nvidia"}, {"runtimeClassName": "nvidia"}),
        ({"topologySpreadConstraints": [HOST_SPREAD]}, {"topologySpreadConstraints": [HOST_SPREAD]}),
    ],
)
def test_scheduling_fields_are_set_only_when_given(runtime: dict[str, Any], expected: dict[str, Any]) -> None:
    deployment = build_deployment(md_of(runtime=runtime), CONFIG, "abcdef0123", 1)
    pod = deployment["spec"]["template"]["spec"]
    assert {key: pod[key] for key in SCHEDULING_FIELDS if key in pod} == expected
    assert_valid_k8s(deployment)


def test_a_spread_without_label_selector_counts_the_pods_of_its_revision() -> None:
    md = md_of(runtime={"topologySpreadConstraints": [ZONE_SPREAD, HOST_SPREAD], "podLabels": {"team": "ml"}})
    revision = revision_of(md, CONFIG)
    deployment = build_deployment(md, CONFIG, revision, 3)
    zone, host = deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert zone == {**ZONE_SPREAD, "labelSelector": {"matchLabels": labels.revision_selector("iris", revision)}}
    assert zone["labelSelector"] == deployment["spec"]["selector"]
    assert zone["labelSelector"]["matchLabels"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    previous = build_deployment(md, CONFIG, "0123456789", 3)["spec"]["template"]["metadata"]["labels"]
    assert not zone["labelSelector"]["matchLabels"].items() <= previous.items()  # the old revision's pods
    assert host == HOST_SPREAD  # a given labelSelector is passed through unchanged
    assert md.runtime.topology_spread_constraints == (ZONE_SPREAD, HOST_SPREAD)  # the parsed spec is left alone
    assert_valid_k8s(deployment)


# --- Service and HPA ---------------------------------------------------------------------------------------


def test_service() -> None:
    service = build_service(md_of(), CONFIG)
    assert service["metadata"]["name"] == "iris"
    assert service["spec"] == {
        "type": "ClusterIP",
        "selector": {"modeldeploy.io/model-deployment": "iris"},
        "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}],
    }
    assert_valid_k8s(service)


def test_hpa_metrics_and_behavior() -> None:
    behavior = {
        "scaleDown": {
            "stabilizationWindowSeconds": 120,
            "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}],
        }
    }
    md = md_of(
        autoscaling={
            "minReplicas": 2,
            "maxReplicas": 6,
            "targetCPUUtilizationPercentage": 70,
            "targetMemoryUtilizationPercentage": 80,
            "inflightRequests": {"targetAverageValue": "8"},
            "behavior": behavior,
        }
    )
    hpa = build_hpa(md, CONFIG)
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"] == {
        "scaleTargetRef": {"apiVersion": "modeldeploy.io/v1alpha1", "kind": "ModelDeployment", "name": "iris"},
        "minReplicas": 2,
        "maxReplicas": 6,
        "metrics": [
            {
                "type": "Resource",
                "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}},
            },
            {
                "type": "Resource",
                "resource": {"name": "memory", "target": {"type": "Utilization", "averageUtilization": 80}},
            },
            {
                "type": "Pods",
                "pods": {
                    "metric": {"name": "modelserve_inflight_requests"},
                    "target": {"type": "AverageValue", "averageValue": "8"},
                },
            },
        ],
        "behavior": behavior,
    }
    assert_valid_k8s(hpa)


@pytest.mark.parametrize(
    ("value", "quantity"),
    [
        (0.05, "0.05"),
        (0, "0"),
        (0.0, "0"),
        (-0.0, "0"),
        (1, "1"),
        (1.0, "1"),
        (0.1, "0.1"),
        (0.123456789, "0.123456789"),
        (0.1234567891, "0.12345679"),  # rounded up to nano units, as the API server stores it
        (1e-10, "0.000000001"),
        (2.5e-5, "0.000025"),
    ],
)
def test_an_hpa_tolerance_is_written_as_the_quantity_the_api_server_stores(value: float, quantity: str) -> None:
    assert build.tolerance_quantity(value) == quantity
    assert parse_quantity(quantity) is not None


def test_hpa_tolerances_reach_the_hpa_as_quantities() -> None:
    behavior = {"scaleUp": {"tolerance": 0}, "scaleDown": {"tolerance": 0.05, "selectPolicy": "Min"}}
    md = md_of(autoscaling={"maxReplicas": 6, "behavior": behavior})
    hpa = build_hpa(md, CONFIG)
    assert hpa["spec"]["behavior"] == {
        "scaleUp": {"tolerance": "0"},
        "scaleDown": {"tolerance": "0.05", "selectPolicy": "Min"},
    }
    assert md.autoscaling is not None and md.autoscaling.behavior == behavior, "the parsed spec is left as it is"
    assert_valid_k8s(hpa)


@pytest.mark.parametrize(("replicas", "expected"), [(None, 2), (1, 2), (4, 4), (9, 6)])
def test_an_autoscaled_deployment_runs_the_hpas_choice_within_its_bounds(replicas: int | None, expected: int) -> None:
    """Offline there is no HPA: the Deployment runs spec.replicas (what the HPA wrote) within the bounds, and a new
    model (no spec.replicas yet) starts at minReplicas."""
    spec: dict[str, Any] = {"autoscaling": {"minReplicas": 2, "maxReplicas": 6}}
    if replicas is not None:
        spec["replicas"] = replicas
    children = build_children(md_of(**spec), CONFIG)
    assert children.deployment["spec"]["replicas"] == expected


def test_hpa_needs_autoscaling() -> None:
    with pytest.raises(ValueError, match=r"no spec\.autoscaling"):
        build_hpa(md_of(), CONFIG)


def test_children_of_fixed_and_autoscaled_deploys() -> None:
    fixed = build_children(md_of(replicas=4), CONFIG)
    assert fixed.hpa is None
    assert fixed.deployment["spec"]["replicas"] == 4
    assert [o["kind"] for o in fixed.objects()] == ["Deployment", "Service"]
    scaled = build_children(md_of(autoscaling={"maxReplicas": 3}), CONFIG)
    assert scaled.deployment["spec"]["replicas"] == 1  # minReplicas' default
    assert scaled.hpa is not None
    assert scaled.hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "modeldeploy.io/v1alpha1",
        "kind": "ModelDeployment",
        "name": "iris",
    }
    assert "metrics" not in scaled.hpa["spec"]  # the HPA's own default (80% CPU) applies
    assert scaled.deployment["metadata"]["name"] == f"iris-{scaled.revision}"


def test_kubernetes_validator_catches_a_broken_child() -> None:
    """Control: the strict validator really rejects what the API server would."""
    deployment = build_children(md_of(), CONFIG).deployment
    broken = copy.deepcopy(deployment)
    broken["spec"]["template"]["spec"]["containers"][0]["probe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def test_affinity_reaches_the_pods_as_written_and_is_valid_there() -> None:
    deployment = build_children(md_of(runtime={"affinity": FULL_AFFINITY}), CONFIG).deployment
    assert deployment["spec"]["template"]["spec"]["affinity"] == FULL_AFFINITY
    kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)


def test_model_url() -> None:
    md = md_of(model={"name": "flowers"})
    assert build.model_url(md, CONFIG) == "http://iris.ml.svc.cluster.local/v2/models/flowers"


# --- revision ----------------------------------------------------------------------------------------------


def shuffled(value: Any, rng: random.Random) -> Any:
    if isinstance(value, dict):
        keys = list(value)
        rng.shuffle(keys)
        return {k: shuffled(value[k], rng) for k in keys}
    if isinstance(value, list):
        return [shuffled(v, rng) for v in value]
    return value


RICH = body(
    model={"sha256": "d" * 64, "storageSecretRef": {"name": "c"}},
    runtime={
        "resources": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"memory": "2Gi"}},
        "env": [
            {"name": "A", "value": "1"},
            {"name": "B", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name", "apiVersion": "v1"}}},
        ],
        "nodeSelector": {"a": "1", "b": "2"},
        "affinity": {
            "nodeAffinity": {
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {
                        "weight": 10,
                        "preference": {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]},
                    }
                ]
            }
        },
    },
    replicas=2,
)


def test_revision_is_ten_hex_characters_and_stable_under_key_order() -> None:
    revision = revision_of(parse_model_deployment(RICH), CONFIG)
    assert len(revision) == 10 and int(revision, 16) >= 0
    rng = random.Random(7)
    for _ in range(5):
        assert revision_of(parse_model_deployment(shuffled(RICH, rng)), CONFIG) == revision


@pytest.mark.parametrize(
    "patch",
    [
        {"model": {"version": "2"}},
        {"model": {"storageUri": "s3://models/iris/2/model.pt"}},
        {"model": {"sha256": "e" * 64}},
        {"model": {"name": "other"}},
        {"runtime": {"image": "ghcr.io/modeldeploy/modelserve:0.2.0"}},
        {"runtime": {"env": [{"name": "A", "value": "2"}]}},
        {"runtime": {"batching": {"maxBatchSize": 4}}},
        {"runtime": {"gpu": {"count": 1}}},
        {"runtime": {"priorityClassName": "gpu-serving"}},
        {"runtime": {"runtimeClassName": "nvidia"}},
        {"runtime": {"topologySpreadConstraints": [ZONE_SPREAD]}},
    ],
)
def test_revision_changes_with_what_runs(patch: dict[str, Any]) -> None:
    before = revision_of(parse_model_deployment(RICH), CONFIG)
    changed = copy.deepcopy(RICH)
    for block, values in patch.items():
        changed["spec"].setdefault(block, {}).update(values)
    assert revision_of(parse_model_deployment(changed), CONFIG) != before


@pytest.mark.parametrize(
    "patch",
    [
        {"replicas": 7},
        {"replicas": None, "autoscaling": {"maxReplicas": 9, "targetCPUUtilizationPercentage": 50}},
        {"paused": True},
        {"revisionHistoryLimit": 3},
        {"rollout": {"strategy": "BlueGreen"}},
    ],
)
def test_revision_ignores_scaling_and_rollout_settings(patch: dict[str, Any]) -> None:
    before = revision_of(parse_model_deployment(RICH), CONFIG)
    changed = copy.deepcopy(RICH)
    for key, value in patch.items():
        if value is None:
            changed["spec"].pop(key)
        else:
            changed["spec"][key] = value
    assert revision_of(parse_model_deployment(changed), CONFIG) == before


PINNED_CONFIG = OperatorConfig(default_runtime_image="registry.example.com/modelserve:1.0")


@pytest.mark.parametrize(
    ("obj", "revision"),
    [
        # RICH's affinity and env valueFrom were free-form until the CRD gave them a schema; this value is what
        # the operator before that change computed for the RICH of today, so the hash itself did not move.
        (RICH, "ecfc0eb8a1"),
        (body(), "3b761f81a9"),
        (body(runtime={"topologySpreadConstraints": []}), "3b761f81a9"),
        (
            body(runtime={"gpu": {"count": 1}, "image": "ghcr.io/x/y:1", "auth": {"secretRef": {"name": "tok"}}}),
            "ec5547a5f7",
        ),
    ],
)
def test_revision_of_a_spec_without_the_newer_fields_is_what_it_was(obj: dict[str, Any], revision: str) -> None:
    """Values computed before priorityClassName, runtimeClassName and topologySpreadConstraints existed: an optional
    field added to the API must leave the revision of every object that does not use it alone, or an operator
    upgrade would roll out every model."""
    assert revision_of(parse_model_deployment(obj), PINNED_CONFIG) == revision


def test_revision_follows_the_default_image() -> None:
    md = parse_model_deployment(RICH)
    assert revision_of(md) == revision_of(md, CONFIG)
    assert revision_of(md, OperatorConfig(default_runtime_image="other/img:1")) != revision_of(md, CONFIG)


# --- properties over generated specs -----------------------------------------------------------------------

NAMES = st.from_regex(r"[a-z]([-a-z0-9]{0,20}[a-z0-9])?", fullmatch=True)
LABEL_VALUES = st.from_regex(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,12}[A-Za-z0-9])?", fullmatch=True)
QUANTITIES = st.one_of(
    st.integers(min_value=1, max_value=64), st.sampled_from(["500m", "1", "2", "1Gi", "512Mi", "1.5"])
)


@st.composite
def model_deployments(draw: st.DrawFn) -> dict[str, Any]:
    scheme = draw(st.sampled_from(["s3", "gs", "https", "http", "pvc", "file"]))
    path = draw(st.from_regex(r"[a-z0-9]{1,8}(/[a-z0-9._-]{1,8}){0,2}", fullmatch=True))
    uri = {
        "s3": f"s3://models/{path}",
        "gs": f"gs://models/{path}",
        "https": f"https://models.example.com/{path}",
        "http": f"http://10.0.0.7:9000/{path}",
        "pvc": f"pvc://{draw(NAMES)}/{path}",
        "file": f"file:///opt/{path}",
    }[scheme]
    model: dict[str, Any] = {"version": draw(LABEL_VALUES), "storageUri": uri}
    fmt = draw(st.sampled_from(["TorchScript", "TorchExport", "Safetensors", None]))
    if fmt:
        model["format"] = fmt
    if fmt == "Safetensors":
        model["entryPoint"] = "zoo.models:Net"
    if scheme in ("s3", "gs", "http", "https"):
        if draw(st.booleans()):
            model["sha256"] = draw(st.from_regex(r"[a-f0-9]{64}", fullmatch=True))
        if draw(st.booleans()):
            model["storageSecretRef"] = {"name": draw(NAMES)}
    if draw(st.booleans()):
        model["name"] = draw(LABEL_VALUES)

    runtime: dict[str, Any] = {}
    if draw(st.booleans()):
        runtime["image"] = f"registry.example.com/{draw(NAMES)}:{draw(LABEL_VALUES)}"
    gpu = draw(st.integers(min_value=0, max_value=2))
    if gpu:
        runtime["gpu"] = {"count": gpu, "halfPrecision": draw(st.booleans())}
    resources = {
        kind: draw(st.dictionaries(st.sampled_from(["cpu", "memory"]), QUANTITIES, max_size=2))
        for kind in ("requests", "limits")
    }
    for name, limit in resources["limits"].items():  # a request above its limit is refused (CEL)
        request = resources["requests"].get(name)
        if request is not None and parse_quantity(str(request)) > parse_quantity(str(limit)):
            resources["requests"][name] = limit
    if any(resources.values()):
        runtime["resources"] = resources
    if draw(st.booleans()):
        runtime["tolerations"] = [
            {"key": draw(NAMES), "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 30}
        ]
    env_names = draw(st.lists(st.from_regex(r"[A-Z][A-Z0-9_]{0,8}", fullmatch=True), max_size=3, unique=True))
    if env_names:
        runtime["env"] = [{"name": n, "value": draw(st.text(max_size=5))} for n in env_names]
    if draw(st.booleans()):
        runtime["nodeSelector"] = {"kubernetes.io/os": "linux"}
    if draw(st.booleans()):
        runtime["podLabels"] = {"team": draw(LABEL_VALUES)}
    if draw(st.booleans()):
        runtime["priorityClassName"] = draw(NAMES)
    if draw(st.booleans()):
        runtime["runtimeClassName"] = draw(NAMES)
    spread_keys = draw(
        st.lists(st.sampled_from(["kubernetes.io/hostname", "topology.kubernetes.io/zone"]), max_size=2, unique=True)
    )
    if spread_keys:
        runtime["topologySpreadConstraints"] = [
            {
                "maxSkew": draw(st.integers(min_value=1, max_value=3)),
                "topologyKey": key,
                "whenUnsatisfiable": draw(st.sampled_from(["DoNotSchedule", "ScheduleAnyway"])),
            }
            for key in spread_keys
        ]
    batch = draw(st.integers(min_value=1, max_value=256))
    runtime["batching"] = {
        "maxBatchSize": batch,
        "maxQueueSize": draw(st.integers(min_value=batch, max_value=4096)),
    }
    runtime["drainSeconds"] = draw(st.integers(min_value=0, max_value=3600))
    runtime["port"] = draw(st.integers(min_value=1024, max_value=65535))

    spec: dict[str, Any] = {"model": model, "runtime": runtime}
    scaling = draw(st.sampled_from(["replicas", "autoscaling", "default"]))
    if scaling == "replicas":
        spec["replicas"] = draw(st.integers(min_value=0, max_value=20))
    elif scaling == "autoscaling":
        low = draw(st.integers(min_value=1, max_value=5))
        autoscaling: dict[str, Any] = {
            "minReplicas": low,
            "maxReplicas": draw(st.integers(min_value=low, max_value=20)),
        }
        if draw(st.booleans()):
            autoscaling["targetCPUUtilizationPercentage"] = draw(st.integers(min_value=1, max_value=100))
        if draw(st.booleans()):
            autoscaling["targetMemoryUtilizationPercentage"] = draw(st.integers(min_value=1, max_value=100))
        if draw(st.booleans()):
            autoscaling["inflightRequests"] = {"targetAverageValue": draw(st.sampled_from([4, "8", "500m"]))}
        spec["autoscaling"] = autoscaling
    metadata: dict[str, Any] = {"name": draw(NAMES), "namespace": draw(NAMES)}
    if draw(st.booleans()):
        metadata["uid"] = "5b1e-uid"
    return {
        "apiVersion": "modeldeploy.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": metadata,
        "spec": spec,
    }


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(obj=model_deployments())
def test_children_of_any_valid_spec_are_valid_and_restricted(obj: dict[str, Any]) -> None:
    assert validate_object(obj) == []
    md = parse_model_deployment(obj)
    children = build_children(md, CONFIG)
    for child in children.objects():
        assert_valid_k8s(child)
        assert child["metadata"]["namespace"] == obj["metadata"]["namespace"]
        assert child["metadata"]["labels"][labels.MODEL_DEPLOYMENT_LABEL] == md.name
    assert restricted_violations(children.deployment) == []
    autoscaled = "autoscaling" in obj["spec"]
    replicas = children.deployment["spec"]["replicas"]
    if autoscaled:
        assert md.autoscaling is not None and md.autoscaling.min_replicas <= replicas <= md.autoscaling.max_replicas
    else:
        assert replicas == obj["spec"].get("replicas", 1)
    assert (children.hpa is not None) == autoscaled
    template_labels = children.deployment["spec"]["template"]["metadata"]["labels"]
    spreads = children.deployment["spec"]["template"]["spec"].get("topologySpreadConstraints", [])
    for selector in (
        children.deployment["spec"]["selector"]["matchLabels"],
        children.service["spec"]["selector"],
        *(spread["labelSelector"]["matchLabels"] for spread in spreads),
    ):
        assert selector.items() <= template_labels.items()
    again = build_children(parse_model_deployment(copy.deepcopy(obj)), CONFIG)
    assert json.dumps(again.objects()) == json.dumps(children.objects())


def test_restricted_checker_catches_violations() -> None:
    """Control: the encoded Pod Security checks fail on a pod that breaks them."""
    deployment = build_children(md_of(), CONFIG).deployment
    pod = deployment["spec"]["template"]["spec"]
    pod["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True
    pod["initContainers"][0]["securityContext"]["capabilities"] = {"drop": ["NET_RAW"]}
    pod["volumes"].append({"name": "host", "hostPath": {"path": "/"}})
    del pod["containers"][0]["securityContext"]["seccompProfile"]
    del pod["securityContext"]["seccompProfile"]
    assert restricted_violations(deployment) == [
        "volume host: {'hostPath'}",
        "fetch-model: capabilities not dropped",
        "model-server: allowPrivilegeEscalation not false",
        "model-server: seccompProfile",
    ]


def test_signature_verification_is_passed_to_the_model_download() -> None:
    signed = md_of(
        model={
            "signature": {
                "identity": "ci@example.com",
                "issuer": "https://token.actions.example",
                "bundleUri": "s3://models/iris/1/model.pt.bundle",
            }
        }
    )
    deployment = build_deployment(signed, CONFIG, revision_of(signed, CONFIG), 1)
    (fetch,) = deployment["spec"]["template"]["spec"]["initContainers"]
    args = fetch["args"]
    assert args[args.index("--verify-identity") + 1] == "ci@example.com"
    assert args[args.index("--verify-issuer") + 1] == "https://token.actions.example"
    assert args[args.index("--signature-bundle") + 1] == "s3://models/iris/1/model.pt.bundle"
    kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)
    unsigned = md_of()
    assert revision_of(signed, CONFIG) != revision_of(unsigned, CONFIG), "a signing requirement is a new revision"
    assert "--verify-identity" not in str(build_deployment(unsigned, CONFIG, "r", 1))
