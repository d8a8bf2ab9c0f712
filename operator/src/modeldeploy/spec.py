"""Typed, frozen views of a ModelDeployment, and the checks its schema cannot express.

``parse_model_deployment`` takes the object as stored by the API server (or as written by a user: the CRD's
defaults are applied and the object validated first), checks what OpenAPI and CEL cannot (the parts of a
storage URI, duration strings) and returns a ``ModelDeployment``. Every problem is a ``SpecError`` naming the
field. The rollout block is kept raw (``rollout_raw``) for ``modeldeploy.rollout`` to interpret.

Pure: no API client, no clock, no environment.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal, cast
from urllib.parse import urlsplit

from modeldeploy.rollout.config import MAX_ANALYSIS_INTERVAL_SECONDS, MAX_PAUSE_SECONDS, RolloutSpecError
from modeldeploy.rollout.config import parse_duration as rollout_duration
from modeldeploy.schema import QuantityError, SpecError, default_object, format_path, parse_quantity, validate_object

ModelFormat = Literal["TorchScript", "TorchExport", "Safetensors"]
StorageScheme = Literal["pvc", "http", "https", "s3", "gs", "file"]

DOWNLOADED_SCHEMES: frozenset[str] = frozenset({"http", "https", "s3", "gs"})
DEFAULT_NAMESPACE = "default"

_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]$")


# --- the dataclasses ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StorageLocation:
    """A parsed ``spec.model.storageUri``.

    ``pvc``: ``claim`` and ``path`` inside it. ``s3``/``gs``: ``bucket`` and object ``path`` (key or prefix).
    ``http``/``https``: ``host`` and ``path``. ``file``: ``path``, an absolute directory or file in the image.
    """

    uri: str
    scheme: StorageScheme
    path: str = ""
    claim: str = ""
    bucket: str = ""
    host: str = ""

    @property
    def downloaded(self) -> bool:
        """True when an init container must fetch the artifact before the server starts."""
        return self.scheme in DOWNLOADED_SCHEMES


@dataclass(frozen=True)
class SignatureSpec:
    """``spec.model.signature``: the Sigstore signer the artifact must be signed by."""

    identity: str
    issuer: str
    bundle_uri: str | None = None


@dataclass(frozen=True)
class ModelSpec:
    """``spec.model``."""

    name: str
    version: str
    storage_uri: str
    storage: StorageLocation
    format: ModelFormat
    entry_point: str | None = None
    sha256: str | None = None
    storage_secret_name: str | None = None
    signature: SignatureSpec | None = None


@dataclass(frozen=True)
class GpuSpec:
    """``spec.runtime.gpu``."""

    count: int = 0
    resource_name: str = "nvidia.com/gpu"
    half_precision: bool = False


@dataclass(frozen=True)
class BatchingSpec:
    """``spec.runtime.batching``."""

    max_batch_size: int = 32
    max_queue_delay_ms: int = 5
    max_queue_size: int = 1024


@dataclass(frozen=True)
class RuntimeSpec:
    """``spec.runtime``. Embedded core types (env, tolerations, affinity, resources, topology spread constraints)
    stay plain data."""

    image: str | None
    """None means the operator-wide default image."""
    image_pull_policy: str
    image_pull_secrets: tuple[str, ...]
    resources: Mapping[str, Mapping[str, str | int]]
    gpu: GpuSpec
    env: tuple[Mapping[str, Any], ...]
    node_selector: Mapping[str, str]
    tolerations: tuple[Mapping[str, Any], ...]
    affinity: Mapping[str, Any] | None
    service_account_name: str | None
    pod_annotations: Mapping[str, str]
    pod_labels: Mapping[str, str]
    batching: BatchingSpec
    drain_seconds: int
    port: int
    auth_secret_name: str | None = None
    """``spec.runtime.auth.secretRef.name``: the Secret of accepted caller tokens, or None (no caller auth)."""
    priority_class_name: str | None = None
    runtime_class_name: str | None = None
    topology_spread_constraints: tuple[Mapping[str, Any], ...] = ()
    """As written: a constraint without ``labelSelector`` gets the revision's pod selector when the pods are built."""


@dataclass(frozen=True)
class InflightRequestsTarget:
    """``spec.autoscaling.inflightRequests``: a Pods metric with an AverageValue target."""

    target_average_value: str
    metric_name: str = "modelserve_inflight_requests"


@dataclass(frozen=True)
class AutoscalingSpec:
    """``spec.autoscaling``."""

    min_replicas: int
    max_replicas: int
    target_cpu_utilization: int | None = None
    target_memory_utilization: int | None = None
    inflight_requests: InflightRequestsTarget | None = None
    behavior: Mapping[str, Any] | None = None

    def bound(self, replicas: int) -> int:
        """``replicas`` brought within ``minReplicas``..``maxReplicas``, as the HPA would."""
        return min(self.max_replicas, max(self.min_replicas, replicas))


@dataclass(frozen=True)
class NetworkPolicySpec:
    """``spec.networkPolicy``; None fields follow the operator's defaults."""

    enabled: bool | None = None
    ingress_from: tuple[Mapping[str, Any], ...] | None = None
    """NetworkPolicyPeer objects admitted as callers; None means the operator's default callers."""


@dataclass(frozen=True)
class DisruptionBudgetSpec:
    """``spec.disruptionBudget``: at most one of the two limits is set (CEL); with neither, ``maxUnavailable: 1``."""

    enabled: bool | None = None
    """None follows the operator's default (on unless the operator is configured otherwise)."""
    max_unavailable: int | str | None = None
    min_available: int | str | None = None


@dataclass(frozen=True)
class ModelDeploymentSpec:
    """``spec``."""

    model: ModelSpec
    runtime: RuntimeSpec
    replicas: int
    """``spec.replicas`` or 1. Under ``autoscaling``, the HorizontalPodAutoscaler's current choice: it scales the
    ModelDeployment through its scale subresource, which writes this field (see ``replicas_given``)."""
    autoscaling: AutoscalingSpec | None
    rollout_raw: Mapping[str, Any]
    """``spec.rollout`` with defaults applied, parsed by ``modeldeploy.rollout``."""
    paused: bool
    revision_history_limit: int
    network_policy: NetworkPolicySpec = field(default_factory=NetworkPolicySpec)
    replicas_given: bool = True
    """Whether ``spec.replicas`` is in the object (not the default of 1)."""
    disruption_budget: DisruptionBudgetSpec = field(default_factory=DisruptionBudgetSpec)


@dataclass(frozen=True)
class ModelDeployment:
    """A parsed ModelDeployment: identity from metadata, and the spec."""

    name: str
    namespace: str
    uid: str | None
    generation: int
    spec: ModelDeploymentSpec
    annotations: Mapping[str, str] = field(default_factory=dict)

    # Shortcuts to the spec, so callers can write md.model rather than md.spec.model.
    @property
    def model(self) -> ModelSpec:
        return self.spec.model

    @property
    def runtime(self) -> RuntimeSpec:
        return self.spec.runtime

    @property
    def replicas(self) -> int:
        return self.spec.replicas

    @property
    def autoscaling(self) -> AutoscalingSpec | None:
        return self.spec.autoscaling

    @property
    def rollout_raw(self) -> Mapping[str, Any]:
        return self.spec.rollout_raw

    @property
    def paused(self) -> bool:
        return self.spec.paused

    @property
    def revision_history_limit(self) -> int:
        return self.spec.revision_history_limit

    @property
    def network_policy(self) -> NetworkPolicySpec:
        return self.spec.network_policy

    @property
    def disruption_budget(self) -> DisruptionBudgetSpec:
        return self.spec.disruption_budget


# --- checks the schema cannot express ----------------------------------------------------------------------


def parse_duration(text: str, field_path: str) -> float:
    """A Go-style duration (``30s``, ``1m30s``, ``250ms``, ``1h``) in seconds; SpecError when malformed.

    The rollout's own parser reads it (one reading of a duration for the spec check and the rollout), but only a
    string is taken here, as the CRD's fields are strings: no bare number of seconds.
    """
    if isinstance(text, str) and text and text == text.strip():
        try:
            return rollout_duration(text, field_path)
        except RolloutSpecError:
            pass
    raise SpecError(field_path, f"Invalid value: {text!r}: must be a duration such as 30s, 5m or 1h")


def parse_storage_uri(uri: str, field_path: str = "spec.model.storageUri") -> StorageLocation:
    """Split a storage URI into its parts, checking each scheme's rules; SpecError when invalid."""

    def bad(reason: str) -> SpecError:
        return SpecError(field_path, f"Invalid value: {uri!r}: {reason}")

    if any(ch.isspace() for ch in uri):
        raise bad("must not contain whitespace")
    scheme, sep, rest = uri.partition("://")
    if not sep or scheme not in ("pvc", "http", "https", "s3", "gs", "file"):
        raise bad("must start with pvc://, http://, https://, s3://, gs:// or file://")
    if scheme in ("pvc", "s3", "gs", "file") and ("?" in rest or "#" in rest):
        raise bad(f"a {scheme}:// URI takes no query or fragment")
    if scheme == "file":
        if not rest.startswith("/"):
            raise bad("file:// takes an absolute path inside the image, as in file:///models/iris")
        _check_path(rest, bad)
        if rest.rstrip("/") == "":
            raise bad("file:// must name a directory or file, not /")
        return StorageLocation(uri=uri, scheme="file", path=rest)
    if scheme == "pvc":
        claim, _, path = rest.partition("/")
        if not claim or len(claim) > 253 or not _DNS_SUBDOMAIN.match(claim):
            raise bad("pvc:// must be followed by a PersistentVolumeClaim name, as in pvc://models/iris/1")
        _check_path(path, bad)
        return StorageLocation(uri=uri, scheme="pvc", claim=claim, path=path.strip("/"))
    if scheme in ("s3", "gs"):
        bucket, _, key = rest.partition("/")
        if not _BUCKET.match(bucket):
            raise bad(f"{scheme}:// must be followed by a bucket name (3 to 63 of a-z, 0-9, '.', '-', '_')")
        return StorageLocation(uri=uri, scheme=cast(StorageScheme, scheme), bucket=bucket, path=key)
    parts = urlsplit(uri)
    try:
        host, _port = parts.hostname, parts.port
    except ValueError as error:
        raise bad(f"invalid URL ({error})") from None
    if not host:
        raise bad(f"{scheme}:// URL has no host")
    return StorageLocation(uri=uri, scheme=cast(StorageScheme, scheme), host=host, path=parts.path)


def _check_path(path: str, bad: Any) -> None:
    if any(segment == ".." for segment in path.split("/")):
        raise bad("the path must not contain '..'")


def _check_rollout_durations(rollout: Mapping[str, Any]) -> None:
    """The durations the rollout adds to its timestamps: well-formed, and within the CRD's bounds."""
    canary = rollout.get("canary") or {}
    for index, step in enumerate(canary.get("steps") or []):
        duration = (step.get("pause") or {}).get("duration")
        if duration is not None:
            field_path = f"spec.rollout.canary.steps[{index}].pause.duration"
            if parse_duration(duration, field_path) > MAX_PAUSE_SECONDS:
                raise SpecError(
                    field_path,
                    f"Invalid value: {duration!r}: must be at most 168h (7 days); leave it out to wait until promoted",
                )
    analysis = rollout.get("analysis")
    if analysis is not None and "interval" in analysis:
        field_path = "spec.rollout.analysis.interval"
        interval = parse_duration(analysis["interval"], field_path)
        if interval <= 0:
            raise SpecError(field_path, f"Invalid value: {analysis['interval']!r}: must be longer than zero")
        if interval > MAX_ANALYSIS_INTERVAL_SECONDS:
            raise SpecError(field_path, f"Invalid value: {analysis['interval']!r}: must be at most 24h")


def _native_resource(name: str) -> bool:
    """A resource Kubernetes defines (no domain, or one in kubernetes.io), as the API server's ``IsNativeResource``;
    any other is an extended resource (``nvidia.com/gpu``), counted in whole units."""
    return "/" not in name or "kubernetes.io/" in name


HUGEPAGES_PREFIX = "hugepages-"


def _overcommit_allowed(name: str) -> bool:
    """Whether a request of ``name`` may be below its limit, as the API server's ``IsOvercommitAllowed``: native
    resources other than hugepages."""
    return _native_resource(name) and not name.startswith(HUGEPAGES_PREFIX)


def _quantity(text: object, path: str, examples: str) -> Decimal:
    """``text`` read as the API server's ``resource.ParseQuantity`` reads it; SpecError with Go's reason if not."""
    try:
        return parse_quantity(str(text))
    except QuantityError as error:
        raise SpecError(path, f"Invalid value: {text!r}: must be a quantity such as {examples} ({error})") from None


ANNOTATIONS_SIZE_LIMIT = 256 * 1024
"""The API server's limit on an object's annotations, keys and values together, in bytes."""
OPERATOR_POD_ANNOTATIONS_RESERVE = 256
"""Bytes kept for the annotations the operator adds to the pods (the revision, about 40)."""


def _check_pod_annotations(annotations: Mapping[str, Any]) -> None:
    """The pods' annotations must fit the API server's limit, with the operator's own added; the CRD bounds each
    value (4096 characters) but not their sum, and a Deployment over the limit is refused when it is written."""
    size = sum(len(str(k).encode()) + len(str(v).encode()) for k, v in annotations.items())
    limit = ANNOTATIONS_SIZE_LIMIT - OPERATOR_POD_ANNOTATIONS_RESERVE
    if size > limit:
        raise SpecError(
            "spec.runtime.podAnnotations",
            f"Too long: must have at most {limit} bytes (keys and values together; {size} given): the API server "
            f"refuses pods whose annotations pass {ANNOTATIONS_SIZE_LIMIT} bytes, and the operator adds its own",
        )


CPU_DIVISORS = ("1m", "1")
BYTE_DIVISORS = ("1", "1k", "1M", "1G", "1T", "1P", "1E", "1Ki", "1Mi", "1Gi", "1Ti", "1Pi", "1Ei")


def _check_env(env: Sequence[Mapping[str, Any]]) -> None:
    """A ``resourceFieldRef``'s divisor must suit its resource, as the API server's pod validation checks (the CRD
    admits every divisor either kind allows: pairing them in a CEL rule would cost an int-or-string's 3 MiB
    estimate per variable). The schema has been checked: ``resource`` is there."""
    for index, variable in enumerate(env):
        ref = (variable.get("valueFrom") or {}).get("resourceFieldRef") or {}
        if "divisor" not in ref:
            continue
        divisor, resource = str(ref["divisor"]), str(ref["resource"])
        allowed = CPU_DIVISORS if resource.endswith(".cpu") else BYTE_DIVISORS
        if divisor not in allowed:
            raise SpecError(
                format_path(("spec", "runtime", "env", index, "valueFrom", "resourceFieldRef", "divisor")),
                f"Unsupported value: {divisor!r}: {resource} takes a divisor of " + ", ".join(allowed),
            )


def _check_resources(resources: Mapping[str, Any]) -> None:
    """What the API server's pod validation checks in a container's resources and the CRD leaves to the operator.

    Comparing two quantities in a CEL rule costs too much for the API server's budget (each ``quantity()`` of an
    int-or-string value is costed as a 3 MiB string), so these are checked here, before any pod exists: every
    amount parses as Go parses it, an extended resource (``nvidia.com/gpu``) comes in whole units, its request (and
    a hugepages request) equals its limit, and any other request is at most its limit; hugepages come in whole
    pages and need a cpu or memory amount beside them.
    """
    amounts: dict[str, dict[str, tuple[object, Decimal]]] = {}
    for kind in ("requests", "limits"):
        amounts[kind] = {}
        for name, text in sorted((resources.get(kind) or {}).items()):
            path = format_path(("spec", "runtime", "resources", kind, name))
            value = _quantity(text, path, "500m, 2 or 4Gi")
            if not _native_resource(name) and value != value.to_integral():
                raise SpecError(path, f"Invalid value: {text!r}: must be an integer: {name} is counted in whole units")
            if name.startswith(HUGEPAGES_PREFIX):
                _check_hugepages(name, text, value, path)
            amounts[kind][name] = (text, value)
    for name, (text, value) in amounts["requests"].items():
        path = format_path(("spec", "runtime", "resources", "requests", name))
        limit = amounts["limits"].get(name)
        if not _overcommit_allowed(name):
            if limit is None:
                raise SpecError(
                    path,
                    f"Invalid value: {text!r}: a request of {name} needs a limit of the same amount, or the API "
                    "server refuses the pods: set it in limits alone (its request defaults to the limit)",
                )
            if value != limit[1]:
                raise SpecError(path, f"Invalid value: {text!r}: must be equal to the {name} limit of {limit[0]!r}")
        elif limit is not None and value > limit[1]:
            raise SpecError(
                path, f"Invalid value: {text!r}: must be less than or equal to the {name} limit of {limit[0]!r}"
            )
    hugepages = [name for kind in amounts.values() for name in kind if name.startswith(HUGEPAGES_PREFIX)]
    if hugepages and not any(name in kind for kind in amounts.values() for name in ("cpu", "memory")):
        raise SpecError(
            "spec.runtime.resources",
            f"Forbidden: {hugepages[0]} needs a cpu or memory request or limit beside it, or the API server refuses "
            "the pods (HugePages require cpu or memory)",
        )


def _check_hugepages(name: str, text: object, value: Decimal, path: str) -> None:
    """A hugepages amount is a whole number of its pages, as the API server's ``IsHugePageResourceValueDivisible``
    checks: the page size is the name's suffix (``hugepages-2Mi``), a whole number of bytes, and the amount, rounded
    up to a byte, is a multiple of it."""
    size = name[len(HUGEPAGES_PREFIX) :]
    try:
        page = parse_quantity(size)
    except QuantityError:
        page = Decimal(0)
    if page <= 0 or page != page.to_integral():
        raise SpecError(
            path,
            f"Invalid value: {text!r}: {name!r} names no page size: use hugepages-<size> with the node's page size, "
            "such as hugepages-2Mi or hugepages-1Gi",
        )
    if math.ceil(value) % int(page) != 0:
        raise SpecError(
            path, f"Invalid value: {text!r}: must be a whole number of {size} pages (a multiple of {int(page)} bytes)"
        )


# --- parsing -----------------------------------------------------------------------------------------------


def parse_model_deployment(obj: Mapping[str, Any], *, admitted: bool = False) -> ModelDeployment:
    """Parse a ModelDeployment object; raises the first SpecError when it is invalid.

    The CRD's defaults are applied and the schema checked first (as the API server would have), so the object
    may come straight from a user's file. ``admitted=True`` (an object read from the API server, which has
    enforced the CRD's CEL rules) still checks the structural schema but not the CEL rules again.
    """
    errors = validate_object(obj, cel=not admitted)
    if errors:
        raise errors[0]
    defaulted = default_object(obj)
    metadata: Mapping[str, Any] = defaulted.get("metadata") or {}
    name = metadata.get("name")
    if not isinstance(name, str) or not name:
        raise SpecError("metadata.name", "Required value")
    namespace = metadata.get("namespace") or DEFAULT_NAMESPACE
    uid = metadata.get("uid") or None
    generation = int(metadata.get("generation") or 1)
    annotations = {str(k): str(v) for k, v in (metadata.get("annotations") or {}).items()}
    spec = _parse_spec(defaulted["spec"], name)
    return ModelDeployment(
        name=name, namespace=namespace, uid=uid, generation=generation, spec=spec, annotations=annotations
    )


def _parse_spec(spec: Mapping[str, Any], name: str) -> ModelDeploymentSpec:
    rollout = copy.deepcopy(dict(spec.get("rollout") or {}))
    _check_rollout_durations(rollout)
    autoscaling = spec.get("autoscaling")
    return ModelDeploymentSpec(
        model=_parse_model(spec["model"], name),
        runtime=_parse_runtime(spec["runtime"]),
        replicas=int(spec.get("replicas", 1)),
        autoscaling=_parse_autoscaling(autoscaling) if autoscaling is not None else None,
        rollout_raw=rollout,
        paused=bool(spec["paused"]),
        revision_history_limit=int(spec["revisionHistoryLimit"]),
        network_policy=_parse_network_policy(spec.get("networkPolicy") or {}),
        replicas_given="replicas" in spec,
        disruption_budget=_parse_disruption_budget(spec.get("disruptionBudget") or {}),
    )


def _parse_disruption_budget(block: Mapping[str, Any]) -> DisruptionBudgetSpec:
    enabled = block.get("enabled")
    return DisruptionBudgetSpec(
        enabled=bool(enabled) if enabled is not None else None,
        max_unavailable=block.get("maxUnavailable"),
        min_available=block.get("minAvailable"),
    )


def _parse_network_policy(block: Mapping[str, Any]) -> NetworkPolicySpec:
    enabled = block.get("enabled")
    peers = block.get("ingressFrom")
    return NetworkPolicySpec(
        enabled=bool(enabled) if enabled is not None else None,
        ingress_from=tuple(copy.deepcopy(dict(p)) for p in peers) if peers is not None else None,
    )


def _parse_model(model: Mapping[str, Any], default_name: str) -> ModelSpec:
    uri = model["storageUri"]
    secret = model.get("storageSecretRef")
    return ModelSpec(
        name=model.get("name") or default_name,
        version=model["version"],
        storage_uri=uri,
        storage=parse_storage_uri(uri),
        format=model["format"],
        entry_point=model.get("entryPoint"),
        sha256=model.get("sha256"),
        storage_secret_name=secret["name"] if secret else None,
        signature=_parse_signature(model.get("signature")),
    )


def _parse_signature(raw: Mapping[str, Any] | None) -> SignatureSpec | None:
    if not raw:
        return None
    return SignatureSpec(identity=raw["identity"], issuer=raw["issuer"], bundle_uri=raw.get("bundleUri") or None)


def _parse_runtime(runtime: Mapping[str, Any]) -> RuntimeSpec:
    gpu = runtime["gpu"]
    batching = runtime["batching"]
    resources = runtime.get("resources") or {}
    _check_resources(resources)
    _check_pod_annotations(runtime.get("podAnnotations") or {})
    _check_env(runtime.get("env") or [])
    return RuntimeSpec(
        image=runtime.get("image") or None,
        image_pull_policy=runtime["imagePullPolicy"],
        image_pull_secrets=tuple(s["name"] for s in runtime.get("imagePullSecrets") or []),
        resources={kind: dict(values) for kind, values in resources.items() if values},
        gpu=GpuSpec(
            count=int(gpu["count"]),
            resource_name=gpu["resourceName"],
            half_precision=bool(gpu["halfPrecision"]),
        ),
        env=tuple(copy.deepcopy(dict(e)) for e in runtime.get("env") or []),
        node_selector=dict(runtime.get("nodeSelector") or {}),
        tolerations=tuple(copy.deepcopy(dict(t)) for t in runtime.get("tolerations") or []),
        affinity=copy.deepcopy(dict(runtime["affinity"])) if runtime.get("affinity") else None,
        service_account_name=runtime.get("serviceAccountName") or None,
        pod_annotations=dict(runtime.get("podAnnotations") or {}),
        pod_labels=dict(runtime.get("podLabels") or {}),
        batching=BatchingSpec(
            max_batch_size=int(batching["maxBatchSize"]),
            max_queue_delay_ms=int(batching["maxQueueDelayMs"]),
            max_queue_size=int(batching["maxQueueSize"]),
        ),
        drain_seconds=int(runtime["drainSeconds"]),
        port=int(runtime["port"]),
        auth_secret_name=((runtime.get("auth") or {}).get("secretRef") or {}).get("name") or None,
        priority_class_name=runtime.get("priorityClassName") or None,
        runtime_class_name=runtime.get("runtimeClassName") or None,
        topology_spread_constraints=tuple(
            copy.deepcopy(dict(c)) for c in runtime.get("topologySpreadConstraints") or []
        ),
    )


def _check_target_average_value(text: object) -> None:
    """The HorizontalPodAutoscaler's target: a quantity Go parses, and more than zero, or the API server refuses it."""
    path = "spec.autoscaling.inflightRequests.targetAverageValue"
    if _quantity(text, path, "8 or 500m") <= 0:
        raise SpecError(path, f"Invalid value: {text!r}: must be more than zero")


def _parse_autoscaling(autoscaling: Mapping[str, Any]) -> AutoscalingSpec:
    inflight = autoscaling.get("inflightRequests")
    behavior = autoscaling.get("behavior")
    if inflight is not None:
        _check_target_average_value(inflight["targetAverageValue"])
    return AutoscalingSpec(
        min_replicas=int(autoscaling["minReplicas"]),
        max_replicas=int(autoscaling["maxReplicas"]),
        target_cpu_utilization=autoscaling.get("targetCPUUtilizationPercentage"),
        target_memory_utilization=autoscaling.get("targetMemoryUtilizationPercentage"),
        inflight_requests=(
            InflightRequestsTarget(
                target_average_value=str(inflight["targetAverageValue"]), metric_name=inflight["metricName"]
            )
            if inflight is not None
            else None
        ),
        behavior=copy.deepcopy(dict(behavior)) if behavior is not None else None,
    )
