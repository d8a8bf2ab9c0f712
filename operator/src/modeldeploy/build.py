"""Desired state as data: the children of a ModelDeployment as plain manifests.

Pure functions of a parsed ``ModelDeployment`` and the ``OperatorConfig``: no API client, clock, environment
or kopf. The same input always gives the same output, key for key.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import asdict, dataclass
from decimal import ROUND_CEILING, Decimal
from typing import Any

from modeldeploy import labels
from modeldeploy.config import OperatorConfig
from modeldeploy.schema import API_VERSION, KIND
from modeldeploy.spec import ModelDeployment
from modeldeploy.types import Labels, Manifest

CONTAINER_NAME = "model-server"
FETCH_CONTAINER_NAME = "fetch-model"
MODEL_VOLUME = "model-store"
TMP_VOLUME = "tmp"
PORT_NAME = "http"
SERVICE_PORT = 80
RUNTIME_UID = 1000
GRACE_EXTRA_SECONDS = 30

AUTH_VOLUME = "auth-tokens"
AUTH_MOUNT_PATH = "/var/run/modelserve/auth"
AUTH_ENV = "MODELSERVE_AUTH_TOKENS_FILE"
AUTH_FILE_MODE = 0o440
"""Token files readable by the runtime's group (fsGroup) only."""
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"

LIVE_PATH = "/v2/health/live"
READY_PATH = "/v2/health/ready"


@dataclass(frozen=True)
class Children:
    """Everything a simple, single-revision ModelDeployment needs, in the order to apply them."""

    revision: str
    deployment: Manifest
    service: Manifest
    hpa: Manifest | None

    def objects(self) -> list[Manifest]:
        """The manifests in apply order: Deployment, Service, then the HPA when there is one."""
        return [self.deployment, self.service, *([self.hpa] if self.hpa is not None else [])]


def runtime_image(md: ModelDeployment, config: OperatorConfig) -> str:
    """``spec.runtime.image``, or the operator-wide default when it is empty."""
    return md.runtime.image or config.default_runtime_image


_OPTIONAL_RUNTIME_FIELDS = (
    "auth_secret_name",
    "priority_class_name",
    "runtime_class_name",
    "topology_spread_constraints",
)
"""``RuntimeSpec`` fields added after the first release: hashed only when set (not None, not empty)."""


REVISION_LENGTH = 10
"""Hex characters of a revision (``revision_of``)."""
_HEX = frozenset("0123456789abcdef")


def is_revision(value: str) -> bool:
    """Whether ``value`` has the shape of a revision ``revision_of`` makes (lowercase hex, ``REVISION_LENGTH``)."""
    return len(value) == REVISION_LENGTH and set(value) <= _HEX


def revision_of(md: ModelDeployment, config: OperatorConfig | None = None) -> str:
    """The revision: the first ``REVISION_LENGTH`` hex characters of the sha256 of what runs.

    Hashes the canonical JSON of the model and runtime blocks (defaults applied, model name resolved) and the
    image the pods run, so scaling, rollout settings and key order do not change it. Pass the operator's
    ``config`` whenever its default image is not the built-in one.
    """
    config = config or OperatorConfig()
    runtime = asdict(md.runtime)
    # Optional blocks enter the hash only when set: adding an optional field to the API never changes the
    # revision of objects that do not use it, so an operator upgrade causes no rollout.
    for key in _OPTIONAL_RUNTIME_FIELDS:
        if not runtime.get(key):
            runtime.pop(key, None)
    model = asdict(md.model)
    if model.get("signature") is None:
        model.pop("signature", None)
    inputs = {
        "model": model,
        "runtime": runtime,
        "image": runtime_image(md, config),
        "modelMountPath": config.model_mount_path,
    }
    canonical = json.dumps(inputs, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_plain)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:REVISION_LENGTH]


def _plain(value: object) -> object:
    if isinstance(value, tuple | frozenset):
        return list(value)
    raise TypeError(f"cannot hash a {type(value).__name__}")


def deployment_name(md: ModelDeployment, revision: str) -> str:
    """``NAME-REV``, the Deployment of one revision."""
    return f"{md.name}-{revision}"


def model_url(md: ModelDeployment, config: OperatorConfig) -> str:
    """In-cluster URL of the model's OIP v2 endpoint, for ``status.url``."""
    return f"http://{md.name}.{md.namespace}.svc.{config.cluster_domain}/v2/models/{md.model.name}"


def owner_references(md: ModelDeployment) -> list[dict[str, Any]]:
    """The controller reference to the ModelDeployment, or none when its uid is not known yet."""
    if not md.uid:
        return []
    return [
        {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "name": md.name,
            "uid": md.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]


def _metadata(
    md: ModelDeployment, name: str, object_labels: Labels, annotations: Labels | None = None
) -> Manifest:
    meta: Manifest = {"name": name, "namespace": md.namespace, "labels": dict(sorted(object_labels.items()))}
    if annotations:
        meta["annotations"] = dict(annotations)
    owners = owner_references(md)
    if owners:
        meta["ownerReferences"] = owners
    return meta


# --- Deployment --------------------------------------------------------------------------------------------


def _container_security_context() -> Manifest:
    """Pod Security Standard "restricted", plus a read-only root filesystem."""
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "runAsUser": RUNTIME_UID,
        "runAsGroup": RUNTIME_UID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _model_dir(md: ModelDeployment, config: OperatorConfig) -> str:
    storage = md.model.storage
    if storage.scheme == "file":
        return storage.path
    if storage.scheme == "pvc" and storage.path:
        return f"{config.model_mount_path}/{storage.path}"
    return config.model_mount_path


DEVICE_ENV = "MODELSERVE_DEVICE"


def _server_env(md: ModelDeployment) -> list[Manifest]:
    batching = md.runtime.batching
    ours = {
        "MODELSERVE_MAX_BATCH_SIZE": str(batching.max_batch_size),
        "MODELSERVE_MAX_QUEUE_DELAY_MS": str(batching.max_queue_delay_ms),
        "MODELSERVE_MAX_QUEUE_SIZE": str(batching.max_queue_size),
        "MODELSERVE_DRAIN_SECONDS": str(md.runtime.drain_seconds),
        "MODELSERVE_HALF_PRECISION": "true" if md.runtime.gpu.half_precision else "false",
        "MODELSERVE_MODEL_VERSION": md.model.version,
        "MODELSERVE_MODEL_FORMAT": md.model.format,
    }
    if md.model.entry_point:
        ours["MODELSERVE_ENTRY_POINT"] = md.model.entry_point
    if md.runtime.gpu.count > 0 and not any(item.get("name") == DEVICE_ENV for item in md.runtime.env):
        # Fail at load when the GPU is not visible (a driver or runtime mismatch) instead of serving on the CPU,
        # which `auto` would fall back to unnoticed.
        ours[DEVICE_ENV] = "cuda"
    if md.runtime.auth_secret_name:
        ours[AUTH_ENV] = AUTH_MOUNT_PATH
    env: list[Manifest] = [{"name": key, "value": ours[key]} for key in sorted(ours)]
    # The user's variables follow ours in their own order: $(VAR) references depend on that order.
    env.extend(copy.deepcopy(dict(item)) for item in md.runtime.env)
    return env


def _resources(md: ModelDeployment) -> Manifest:
    resources: Manifest = {kind: dict(values) for kind, values in sorted(md.runtime.resources.items())}
    gpu = md.runtime.gpu
    if gpu.count > 0:
        resources.setdefault("limits", {})[gpu.resource_name] = gpu.count
    return {kind: dict(sorted(values.items())) for kind, values in resources.items() if values}


def _fetch_resources(server: Manifest) -> Manifest:
    """The init container gets the server's CPU and memory, never its GPUs or other extended resources."""
    out: Manifest = {}
    for kind, values in server.items():
        kept = {
            name: value for name, value in values.items() if name in ("cpu", "memory", "ephemeral-storage")
        }
        if kept:
            out[kind] = kept
    return out


def _tolerations(md: ModelDeployment) -> list[Manifest]:
    tolerations = [copy.deepcopy(dict(t)) for t in md.runtime.tolerations]
    gpu = md.runtime.gpu
    if gpu.count > 0:
        automatic = {"key": gpu.resource_name, "operator": "Exists", "effect": "NoSchedule"}
        if automatic not in tolerations:
            tolerations.append(automatic)
    return tolerations


def _topology_spread_constraints(md: ModelDeployment, revision: str) -> list[Manifest]:
    """The user's constraints; one without ``labelSelector`` counts the pods of ``revision`` only.

    Counting the previous revision's pods too, which a rollout scales away, would skew where the new pods go (and
    with DoNotSchedule leave them Pending). A ``labelSelector`` the user gave is kept as it is.
    """
    constraints = [copy.deepcopy(dict(c)) for c in md.runtime.topology_spread_constraints]
    for constraint in constraints:
        if "labelSelector" not in constraint:
            constraint["labelSelector"] = {"matchLabels": labels.revision_selector(md.name, revision)}
    return constraints


def _probe(path: str, period: int, failure_threshold: int) -> Manifest:
    return {
        "httpGet": {"path": path, "port": PORT_NAME, "scheme": "HTTP"},
        "periodSeconds": period,
        "timeoutSeconds": 2,
        "successThreshold": 1,
        "failureThreshold": failure_threshold,
    }


def build_deployment(
    md: ModelDeployment,
    config: OperatorConfig,
    revision: str,
    replicas: int,
    *,
    stable: bool = False,
) -> Manifest:
    """The Deployment ``NAME-REV`` running ``replicas`` pods of one revision.

    The operator always sets the count, with or without autoscaling: an HPA scales the ModelDeployment (its
    scale subresource), never a revision's Deployment. ``stable``: the revision is the rollout's stable one; its
    Deployment's metadata (not the pod template, so no pod restarts when the marker comes or goes) carries
    ``modeldeploy.io/stable``.
    """
    model, runtime = md.model, md.runtime
    image = runtime_image(md, config)
    pod_labels = {**runtime.pod_labels, **labels.revision_labels(md.name, revision, model.version)}
    pod_annotations = {**runtime.pod_annotations, labels.REVISION_ANNOTATION: revision}
    model_dir = _model_dir(md, config)
    resources = _resources(md)

    volumes: list[Manifest] = [{"name": TMP_VOLUME, "emptyDir": {}}]
    server_mounts: list[Manifest] = [{"name": TMP_VOLUME, "mountPath": "/tmp"}]
    if runtime.auth_secret_name:
        # The tokens reach the server only, as files (never env), so a rotation needs no restart.
        volumes.append(
            {"name": AUTH_VOLUME, "secret": {"secretName": runtime.auth_secret_name, "defaultMode": AUTH_FILE_MODE}}
        )
        server_mounts.append({"name": AUTH_VOLUME, "mountPath": AUTH_MOUNT_PATH, "readOnly": True})
    init_containers: list[Manifest] = []
    storage = model.storage
    if storage.scheme == "pvc":
        volumes.append(
            {"name": MODEL_VOLUME, "persistentVolumeClaim": {"claimName": storage.claim, "readOnly": True}}
        )
        server_mounts.append({"name": MODEL_VOLUME, "mountPath": config.model_mount_path, "readOnly": True})
    elif storage.downloaded:
        volumes.append({"name": MODEL_VOLUME, "emptyDir": {}})
        server_mounts.append({"name": MODEL_VOLUME, "mountPath": config.model_mount_path, "readOnly": True})
        fetch_args = ["fetch", model.storage_uri, config.model_mount_path]
        if model.sha256:
            fetch_args += ["--sha256", model.sha256]
        if model.signature is not None:
            fetch_args += ["--verify-identity", model.signature.identity, "--verify-issuer", model.signature.issuer]
            if model.signature.bundle_uri:
                fetch_args += ["--signature-bundle", model.signature.bundle_uri]
        fetch: Manifest = {
            "name": FETCH_CONTAINER_NAME,
            "image": image,
            "imagePullPolicy": runtime.image_pull_policy,
            "command": ["modelserve"],
            "args": fetch_args,
            "volumeMounts": [
                {"name": MODEL_VOLUME, "mountPath": config.model_mount_path},
                {"name": TMP_VOLUME, "mountPath": "/tmp"},
            ],
            "securityContext": _container_security_context(),
        }
        fetch_resources = _fetch_resources(resources)
        if fetch_resources:
            fetch["resources"] = fetch_resources
        if model.storage_secret_name:
            fetch["envFrom"] = [{"secretRef": {"name": model.storage_secret_name}}]
        init_containers.append(fetch)

    server: Manifest = {
        "name": CONTAINER_NAME,
        "image": image,
        "imagePullPolicy": runtime.image_pull_policy,
        "command": ["modelserve"],
        "args": [
            "serve",
            "--model-dir",
            model_dir,
            "--model-name",
            model.name,
            "--port",
            str(runtime.port),
        ],
        "ports": [{"name": PORT_NAME, "containerPort": runtime.port, "protocol": "TCP"}],
        "env": _server_env(md),
        "startupProbe": _probe(LIVE_PATH, period=5, failure_threshold=120),
        "readinessProbe": _probe(READY_PATH, period=5, failure_threshold=3),
        "livenessProbe": _probe(LIVE_PATH, period=10, failure_threshold=3),
        "volumeMounts": server_mounts,
        "securityContext": _container_security_context(),
    }
    if resources:
        server["resources"] = resources

    pod_spec: Manifest = {
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUNTIME_UID,
            "runAsGroup": RUNTIME_UID,
            "fsGroup": RUNTIME_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "terminationGracePeriodSeconds": runtime.drain_seconds + GRACE_EXTRA_SECONDS,
        "enableServiceLinks": False,
        "containers": [server],
        "volumes": volumes,
    }
    if init_containers:
        pod_spec["initContainers"] = init_containers
    if runtime.service_account_name:
        pod_spec["serviceAccountName"] = runtime.service_account_name
    else:
        pod_spec["automountServiceAccountToken"] = False
    if runtime.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": name} for name in runtime.image_pull_secrets]
    if runtime.node_selector:
        pod_spec["nodeSelector"] = dict(sorted(runtime.node_selector.items()))
    tolerations = _tolerations(md)
    if tolerations:
        pod_spec["tolerations"] = tolerations
    if runtime.affinity:
        pod_spec["affinity"] = copy.deepcopy(dict(runtime.affinity))
    if runtime.topology_spread_constraints:
        pod_spec["topologySpreadConstraints"] = _topology_spread_constraints(md, revision)
    if runtime.priority_class_name:
        pod_spec["priorityClassName"] = runtime.priority_class_name
    if runtime.runtime_class_name:
        pod_spec["runtimeClassName"] = runtime.runtime_class_name

    spec: Manifest = {"replicas": replicas}
    spec.update(
        {
            "revisionHistoryLimit": 2,
            "progressDeadlineSeconds": int(md.rollout_raw.get("progressDeadlineSeconds", 600)),
            "selector": {"matchLabels": labels.revision_selector(md.name, revision)},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0}},
            "template": {
                "metadata": {
                    "labels": dict(sorted(pod_labels.items())),
                    "annotations": dict(sorted(pod_annotations.items())),
                },
                "spec": pod_spec,
            },
        }
    )
    annotations = {labels.REVISION_ANNOTATION: revision}
    if stable:
        annotations[labels.STABLE_ANNOTATION] = labels.STABLE_VALUE
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(
            md,
            deployment_name(md, revision),
            labels.revision_labels(md.name, revision, model.version),
            dict(sorted(annotations.items())),
        ),
        "spec": spec,
    }


# --- Service and HPA ---------------------------------------------------------------------------------------


def service_manifest(name: str, namespace: str, service_name: str, selector: Labels) -> Manifest:
    """A ClusterIP Service ``service_name`` of the ModelDeployment ``name``: port 80 -> the pods' ``http`` port."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": service_name, "namespace": namespace, "labels": dict(labels.common_labels(name))},
        "spec": {
            "type": "ClusterIP",
            "selector": dict(selector),
            "ports": [{"name": PORT_NAME, "port": SERVICE_PORT, "targetPort": PORT_NAME, "protocol": "TCP"}],
        },
    }


def build_service(md: ModelDeployment, config: OperatorConfig | None = None) -> Manifest:
    """The ClusterIP Service ``NAME`` in front of every revision's ready pods (port 80 -> ``http``)."""
    del config  # the Service does not depend on operator settings; accepted for a uniform signature
    service = service_manifest(md.name, md.namespace, md.name, labels.selector(md.name))
    service["metadata"] = _metadata(md, md.name, labels.common_labels(md.name))
    return service


def build_hpa(md: ModelDeployment, config: OperatorConfig | None = None) -> Manifest:
    """The autoscaling/v2 HorizontalPodAutoscaler ``NAME`` scaling the ModelDeployment itself.

    Its target is the ModelDeployment's scale subresource (``spec.replicas``; ``status.selector`` names the pods
    that take traffic), not a revision's Deployment: the HPA chooses ``N``, the pods for all the traffic, and the
    operator splits ``N`` between the revisions of a rollout, so the autoscaler keeps following the load while a
    rollout runs and never fights the counts the rollout sets. Raises ValueError when the ModelDeployment has no
    ``spec.autoscaling``.
    """
    del config
    autoscaling = md.autoscaling
    if autoscaling is None:
        raise ValueError(f"{md.namespace}/{md.name} has no spec.autoscaling")
    metrics: list[Manifest] = []
    for resource, target in (
        ("cpu", autoscaling.target_cpu_utilization),
        ("memory", autoscaling.target_memory_utilization),
    ):
        if target is not None:
            metrics.append(
                {
                    "type": "Resource",
                    "resource": {
                        "name": resource,
                        "target": {"type": "Utilization", "averageUtilization": target},
                    },
                }
            )
    if autoscaling.inflight_requests is not None:
        inflight = autoscaling.inflight_requests
        metrics.append(
            {
                "type": "Pods",
                "pods": {
                    "metric": {"name": inflight.metric_name},
                    "target": {"type": "AverageValue", "averageValue": inflight.target_average_value},
                },
            }
        )
    spec: Manifest = {
        "scaleTargetRef": {"apiVersion": API_VERSION, "kind": KIND, "name": md.name},
        "minReplicas": autoscaling.min_replicas,
        "maxReplicas": autoscaling.max_replicas,
    }
    if metrics:
        spec["metrics"] = metrics
    if autoscaling.behavior:
        spec["behavior"] = _hpa_behavior(autoscaling.behavior)
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _metadata(md, md.name, labels.common_labels(md.name)),
        "spec": spec,
    }


def tolerance_quantity(value: float) -> str:
    """An HPA ``tolerance`` (a number in the spec) as the resource quantity the HPA takes: the decimal the number
    was written as (``0.05``, not the float's ``0.05000000000000000277``), rounded up to nano units as the API server
    rounds a quantity it stores, so that what it stores compares equal to what was applied."""
    exact = Decimal(str(value))
    if exact.as_tuple().exponent < -9:  # type: ignore[operator]  # finite: the schema admits numbers only
        exact = exact.quantize(Decimal("1e-9"), rounding=ROUND_CEILING)
    text = format(exact.normalize(), "f")
    return text if text != "-0" else "0"


def _hpa_behavior(behavior: Any) -> Manifest:
    rendered: Manifest = copy.deepcopy(dict(behavior))
    for rules in rendered.values():  # scaleUp, scaleDown: objects (the schema)
        if "tolerance" in rules:
            rules["tolerance"] = tolerance_quantity(rules["tolerance"])
    return rendered


# --- NetworkPolicy -----------------------------------------------------------------------------------------


def wants_network_policy(md: ModelDeployment, config: OperatorConfig) -> bool:
    """Whether the ModelDeployment gets a NetworkPolicy: the operator-wide default, or its own opt-in.

    A ModelDeployment may switch it on; it cannot switch off the operator-wide default.
    """
    return config.model_network_policy or md.network_policy.enabled is True


def _namespace_peer(namespace: str) -> Manifest:
    return {"namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: namespace}}}


def network_policy_callers(md: ModelDeployment, config: OperatorConfig) -> list[Manifest]:
    """The declared callers: ``spec.networkPolicy.ingressFrom`` when set, else the ModelDeployment's own
    namespace plus the operator's default callers."""
    declared = md.network_policy.ingress_from
    if declared is not None:
        return [copy.deepcopy(dict(peer)) for peer in declared]
    return [{"podSelector": {}}, *(copy.deepcopy(dict(peer)) for peer in config.model_network_policy_ingress_from)]


def build_network_policy(md: ModelDeployment, config: OperatorConfig) -> Manifest:
    """The networking.k8s.io/v1 NetworkPolicy ``NAME``: the model's pods (every revision) accept ingress on their
    ``http`` port only from the declared callers, the operator's namespace and the monitoring namespace.

    Egress is not restricted (downloads, metric pushes). Kubelet probes come from the node and are not subject to
    NetworkPolicy. Only enforced by a CNI that implements NetworkPolicy (see docs/security.md).
    """
    peers = network_policy_callers(md, config)
    for namespace in (config.operator_namespace, config.monitoring_namespace):
        if namespace and _namespace_peer(namespace) not in peers:
            peers.append(_namespace_peer(namespace))
    ingress: Manifest = {"ports": [{"protocol": "TCP", "port": PORT_NAME}]}
    if peers:
        ingress["from"] = peers
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _metadata(md, md.name, labels.common_labels(md.name)),
        "spec": {
            "podSelector": {"matchLabels": labels.selector(md.name)},
            "policyTypes": ["Ingress"],
            "ingress": [ingress] if peers else [],
        },
    }


# --- PodDisruptionBudget -----------------------------------------------------------------------------------


def wants_disruption_budget(md: ModelDeployment, config: OperatorConfig) -> bool:
    """Whether the ModelDeployment gets a PodDisruptionBudget: its own ``spec.disruptionBudget.enabled`` when
    set, else the operator-wide default (on unless configured off)."""
    enabled = md.disruption_budget.enabled
    return config.model_disruption_budget if enabled is None else enabled


def build_disruption_budget(md: ModelDeployment) -> Manifest:
    """The policy/v1 PodDisruptionBudget ``NAME`` over the model's pods, every revision together.

    Voluntary disruptions (a node drain, the cluster autoscaler's scale-down, a node upgrade) then evict the
    model's pods a few at a time, the next only once a replacement is ready, instead of all at once: a GPU model
    takes minutes to load. ``maxUnavailable: 1`` unless the spec sets a limit. The eviction API counts the pods
    the revisions' Deployments ask for, so the budget follows every replica change and rollout step by itself.
    Pods that are not ready may always be evicted (``unhealthyPodEvictionPolicy: AlwaysAllow``): a crash-looping
    canary or a pod whose model never loads never holds a drain up. The operator's own scale-downs are not
    evictions, so the budget never slows a rollout.
    """
    budget = md.disruption_budget
    spec: Manifest = {
        "selector": {"matchLabels": labels.selector(md.name)},
        "unhealthyPodEvictionPolicy": "AlwaysAllow",
    }
    if budget.min_available is not None:
        spec["minAvailable"] = budget.min_available
    else:
        spec["maxUnavailable"] = budget.max_unavailable if budget.max_unavailable is not None else 1
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(md, md.name, labels.common_labels(md.name)),
        "spec": spec,
    }


def build_children(md: ModelDeployment, config: OperatorConfig) -> Children:
    """The children of a simple, single-revision deploy: Deployment, Service and (with autoscaling) HPA."""
    revision = revision_of(md, config)
    autoscaling = md.autoscaling
    replicas = md.replicas
    if autoscaling is not None:
        # The HPA's choice when it has made one; a new ModelDeployment starts at the autoscaler's minimum.
        replicas = autoscaling.bound(md.replicas) if md.spec.replicas_given else autoscaling.min_replicas
    deployment = build_deployment(md, config, revision, replicas)
    hpa = build_hpa(md, config) if autoscaling is not None else None
    return Children(revision=revision, deployment=deployment, service=build_service(md, config), hpa=hpa)


# --- ControllerRevision ------------------------------------------------------------------------------------


def build_controller_revision(
    md: ModelDeployment, revision: str, number: int, template: Manifest
) -> Manifest:
    """The apps/v1 ControllerRevision ``NAME-REV`` recording what revision ``revision`` runs.

    ``template`` holds the model and runtime blocks as they were (see ``modeldeploy.reconcile.template_of``);
    the operator rebuilds the revision's Deployment from it, so a rollback restores exactly what ran.
    """
    return {
        "apiVersion": "apps/v1",
        "kind": "ControllerRevision",
        "metadata": _metadata(
            md,
            deployment_name(md, revision),
            labels.revision_labels(md.name, revision, md.model.version),
            {labels.REVISION_ANNOTATION: revision},
        ),
        "data": copy.deepcopy(template),
        "revision": number,
    }
