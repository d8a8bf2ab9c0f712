"""The resource registry of the emulated cluster: built-in resources and custom resources from CRDs."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from modeldeploy.sim.emulator import ClusterEmulator

__all__ = [
    "ALL_VERBS",
    "Admission",
    "ResourceType",
    "install_crd",
    "load_crd",
    "resource_types_from_crd",
    "schema_admission",
    "standard_resources",
]

# An admission hook: (new object, old object or None on create) -> list of error messages (empty: admitted).
Admission = Callable[[dict[str, Any], "dict[str, Any] | None"], list[str]]

ALL_VERBS = frozenset({"get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"})


@dataclass(frozen=True)
class ResourceType:
    """One served resource (group, version, plural) and the API semantics the emulator applies to it."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True
    subresources: frozenset[str] = frozenset()
    verbs: frozenset[str] = ALL_VERBS
    singular: str = ""
    short_names: frozenset[str] = frozenset()
    categories: frozenset[str] = frozenset()
    custom: bool = False  # served from a CRD: no strategic merge patch, PUT needs a resourceVersion
    spec_replicas_path: str = ".spec.replicas"
    status_replicas_path: str = ".status.replicas"
    label_selector_path: str | None = None  # None: render .spec.selector (a metav1.LabelSelector)
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.group, self.version, self.plural)

    @property
    def display(self) -> str:
        """How error messages name the resource: ``pods``, ``deployments.apps``."""
        return f"{self.plural}.{self.group}" if self.group else self.plural


def _builtin(
    api_version: str, plural: str, kind: str, *, namespaced: bool = True, subresources: tuple[str, ...] = ()
) -> ResourceType:
    group, _, version = api_version.rpartition("/")
    return ResourceType(
        group=group,
        version=version,
        plural=plural,
        kind=kind,
        namespaced=namespaced,
        subresources=frozenset(subresources),
        singular=kind.lower(),
    )


def standard_resources() -> list[ResourceType]:
    """The built-in resources the operator, kopf and the simulated controllers use."""
    return [
        _builtin("v1", "namespaces", "Namespace", namespaced=False, subresources=("status",)),
        _builtin("v1", "pods", "Pod", subresources=("status",)),
        _builtin("v1", "nodes", "Node", namespaced=False, subresources=("status",)),
        _builtin("v1", "services", "Service", subresources=("status",)),
        _builtin("v1", "events", "Event"),
        _builtin("v1", "secrets", "Secret"),
        _builtin("v1", "configmaps", "ConfigMap"),
        _builtin("v1", "endpoints", "Endpoints"),
        _builtin("v1", "serviceaccounts", "ServiceAccount"),
        _builtin("apps/v1", "deployments", "Deployment", subresources=("status", "scale")),
        _builtin("apps/v1", "replicasets", "ReplicaSet", subresources=("status", "scale")),
        _builtin("apps/v1", "controllerrevisions", "ControllerRevision"),
        _builtin("autoscaling/v2", "horizontalpodautoscalers", "HorizontalPodAutoscaler", subresources=("status",)),
        _builtin("events.k8s.io/v1", "events", "Event"),
        _builtin("coordination.k8s.io/v1", "leases", "Lease"),
        _builtin("networking.k8s.io/v1", "networkpolicies", "NetworkPolicy"),
        _builtin("policy/v1", "poddisruptionbudgets", "PodDisruptionBudget", subresources=("status",)),
        _builtin("gateway.networking.k8s.io/v1", "httproutes", "HTTPRoute", subresources=("status",)),
        _builtin(
            "apiextensions.k8s.io/v1",
            "customresourcedefinitions",
            "CustomResourceDefinition",
            namespaced=False,
            subresources=("status",),
        ),
        _builtin("kopf.dev/v1", "clusterkopfpeerings", "ClusterKopfPeering", namespaced=False),
        _builtin("kopf.dev/v1", "kopfpeerings", "KopfPeering"),
    ]


def load_crd(source: str | Path | Mapping[str, Any]) -> dict[str, Any]:
    """Read a CRD manifest from a dict or a YAML file (the first CustomResourceDefinition document)."""
    if isinstance(source, Mapping):
        return dict(source)
    text = Path(source).read_text(encoding="utf-8")
    for document in yaml.safe_load_all(text):
        if isinstance(document, dict) and document.get("kind") == "CustomResourceDefinition":
            return document
    raise ValueError(f"{source}: no CustomResourceDefinition document found")


def resource_types_from_crd(crd: Mapping[str, Any]) -> list[ResourceType]:
    """One :class:`ResourceType` per served version of a CRD manifest (apiextensions.k8s.io/v1)."""
    spec = crd.get("spec")
    if not isinstance(spec, Mapping):
        raise ValueError("a CRD needs a spec")
    names = spec.get("names") or {}
    group, plural, kind = spec.get("group"), names.get("plural"), names.get("kind")
    if not group or not plural or not kind:
        raise ValueError("a CRD needs spec.group, spec.names.plural and spec.names.kind")
    scope = spec.get("scope", "Namespaced")
    if scope not in ("Namespaced", "Cluster"):
        raise ValueError(f"a CRD scope must be Namespaced or Cluster, not {scope!r}")
    versions = [v for v in spec.get("versions") or [] if v.get("served", True)]
    if not versions:
        raise ValueError("a CRD needs at least one served version")
    result: list[ResourceType] = []
    for version in versions:
        subresources = version.get("subresources") or {}
        scale = subresources.get("scale") or {}
        result.append(
            ResourceType(
                group=group,
                version=version["name"],
                plural=plural,
                kind=kind,
                namespaced=scope == "Namespaced",
                subresources=frozenset(k for k in ("status", "scale") if k in subresources),
                singular=names.get("singular") or kind.lower(),
                short_names=frozenset(names.get("shortNames") or ()),
                categories=frozenset(names.get("categories") or ()),
                custom=True,
                spec_replicas_path=scale.get("specReplicasPath", ".spec.replicas"),
                status_replicas_path=scale.get("statusReplicasPath", ".status.replicas"),
                label_selector_path=scale.get("labelSelectorPath", ""),
                extra={"schema": (version.get("schema") or {}).get("openAPIV3Schema")},
            )
        )
    return result


def install_crd(
    emulator: ClusterEmulator,
    crd: str | Path | Mapping[str, Any],
    *,
    admission: Admission | None = None,
) -> list[ResourceType]:
    """Declare a custom resource from a CRD manifest (dict or YAML path) and store the CRD object itself.

    The CRD becomes visible at ``apiextensions.k8s.io/v1/customresourcedefinitions`` (established), its
    resource is served with the subresources it declares, and ``admission`` (if given) validates every write.
    """
    manifest = load_crd(crd)
    types = resource_types_from_crd(manifest)  # validates before anything is stored
    emulator.store_crd(manifest)
    if admission is not None:
        for resource_type in types:
            emulator.set_admission(resource_type, admission)
    return types


def schema_admission(crd: Mapping[str, Any], version: str | None = None) -> Admission:
    """An admission hook validating objects against a CRD's ``openAPIV3Schema`` (a JSON-schema subset).

    Kubernetes-specific extensions (CEL rules, ``x-kubernetes-*``) are not evaluated.
    """
    import jsonschema

    spec = crd.get("spec") or {}
    versions = spec.get("versions") or []
    chosen = next((v for v in versions if version is None or v.get("name") == version), None)
    if chosen is None:
        raise ValueError(f"the CRD has no version {version!r}")
    schema = dict((chosen.get("schema") or {}).get("openAPIV3Schema") or {})
    validator = jsonschema.Draft7Validator(_nullable_to_jsonschema(schema))

    def admit(new: dict[str, Any], old: dict[str, Any] | None) -> list[str]:
        body = {k: v for k, v in new.items() if k not in ("metadata", "apiVersion", "kind")}
        errors = sorted(validator.iter_errors(body), key=lambda e: list(e.absolute_path))
        return [f"{'.'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message}" for e in errors]

    return admit


def _nullable_to_jsonschema(schema: Any) -> Any:
    if isinstance(schema, list):
        return [_nullable_to_jsonschema(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    result = {key: _nullable_to_jsonschema(value) for key, value in schema.items()}
    if result.get("x-kubernetes-int-or-string"):
        result.pop("type", None)
        result["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if result.get("nullable") and isinstance(result.get("type"), str):
        result["type"] = [result["type"], "null"]
    return result
