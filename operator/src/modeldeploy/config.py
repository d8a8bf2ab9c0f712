"""Operator-wide settings. Pure data: nothing here reads the process environment by itself."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from modeldeploy.schema import NAMESPACE_NAME

DEFAULT_RUNTIME_IMAGE = "ghcr.io/modeldeploy/modelserve:0.1.0"

_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_IMAGE = re.compile(r"^[^\s]+$")
_HOST_PATTERN = re.compile(r"^[a-z0-9*?.\[\]_-]+$")
STORAGE_SCHEMES = frozenset({"pvc", "http", "https", "s3", "gs", "file"})
_PEER_KEYS = frozenset({"namespaceSelector", "podSelector", "ipBlock"})
_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})
_BOOLS = ("require_sha256", "model_network_policy", "model_disruption_budget", "gpu_preflight")
_LISTS = ("allowed_schemes", "allowed_hosts")
_SECONDS = ("write_failure_seconds",)


@dataclass(frozen=True)
class OperatorConfig:
    """Settings that apply to every ModelDeployment the operator manages.

    ``from_env`` reads them from a mapping such as ``os.environ``; the variable for each field is listed in
    ``ENV_VARS``.
    """

    default_runtime_image: str = DEFAULT_RUNTIME_IMAGE
    """Runtime image used when ``spec.runtime.image`` is empty."""
    cluster_domain: str = "cluster.local"
    """DNS suffix of in-cluster Service names, used in ``status.url``."""
    field_manager: str = "modeldeploy"
    """Field manager for server-side apply."""
    model_mount_path: str = "/mnt/models"
    """Where the model artifact is put (emptyDir) or mounted (PersistentVolumeClaim) in the pods."""
    require_sha256: bool = False
    """Artifact policy: refuse downloaded models (http, https, s3, gs) without ``spec.model.sha256``."""
    allowed_schemes: tuple[str, ...] = ()
    """Artifact policy: the ``storageUri`` schemes allowed; empty allows every scheme the API supports."""
    allowed_hosts: tuple[str, ...] = ()
    """Artifact policy: host (http, https) or bucket (s3, gs) patterns allowed (``fnmatch`` globs, so
    ``*.example.com`` matches every subdomain); empty allows any."""
    model_network_policy: bool = False
    """Create a NetworkPolicy for every ModelDeployment; a ModelDeployment cannot switch it off."""
    model_network_policy_ingress_from: tuple[Mapping[str, Any], ...] = ()
    """Callers (NetworkPolicyPeer objects) admitted by default besides the ModelDeployment's own namespace."""
    model_disruption_budget: bool = True
    """Keep a PodDisruptionBudget for every ModelDeployment that does not set ``spec.disruptionBudget.enabled``."""
    operator_namespace: str = ""
    """Namespace the operator runs in; model NetworkPolicies admit it (analysis scrapes the pods)."""
    monitoring_namespace: str = ""
    """Namespace of the metrics scraper (Prometheus); model NetworkPolicies admit it. Empty: none."""
    gpu_preflight: bool = True
    """Check free GPUs before a GPU rollout (lists Nodes and the Pods of every namespace; see docs/rollouts.md)."""
    write_failure_seconds: float = 120.0
    """How long a ModelDeployment's reconciles may fail in a row on writes the API server fails (5xx, 429, no
    answer: a webhook that times out, say) before the failing write is reported on it (``WriteFailing``)."""

    def __post_init__(self) -> None:
        if not self.default_runtime_image or not _IMAGE.match(self.default_runtime_image):
            raise ValueError(
                f"default_runtime_image must be a non-empty image reference, "
                f"got {self.default_runtime_image!r}"
            )
        if not _DNS_SUBDOMAIN.match(self.cluster_domain):
            raise ValueError(f"cluster_domain must be a DNS name, got {self.cluster_domain!r}")
        if not self.field_manager or len(self.field_manager) > 128:
            raise ValueError(f"field_manager must be 1 to 128 characters, got {self.field_manager!r}")
        if not self.write_failure_seconds > 0:
            raise ValueError(f"write_failure_seconds must be positive, got {self.write_failure_seconds!r}")
        if not self.model_mount_path.startswith("/") or self.model_mount_path == "/":
            raise ValueError(f"model_mount_path must be an absolute directory, got {self.model_mount_path!r}")
        unknown = sorted(set(self.allowed_schemes) - STORAGE_SCHEMES)
        if unknown:
            raise ValueError(
                f"allowed_schemes must be among {', '.join(sorted(STORAGE_SCHEMES))}, got {', '.join(unknown)}"
            )
        for pattern in self.allowed_hosts:
            if not _HOST_PATTERN.match(pattern):
                raise ValueError(
                    f"allowed_hosts entries must be lowercase host or bucket names or glob patterns, got {pattern!r}"
                )
        for index, peer in enumerate(self.model_network_policy_ingress_from):
            if not isinstance(peer, Mapping) or not peer or not set(peer) <= _PEER_KEYS:
                raise ValueError(
                    f"model_network_policy_ingress_from[{index}] must be a NetworkPolicyPeer object with "
                    f"namespaceSelector, podSelector or ipBlock, got {peer!r}"
                )
        for name in ("operator_namespace", "monitoring_namespace"):
            value = getattr(self, name)
            if value and not NAMESPACE_NAME.fullmatch(value):
                raise ValueError(f"{name} must be a namespace name, got {value!r}")

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> OperatorConfig:
        """Build the configuration from environment variables (see ``ENV_VARS``); unset ones keep defaults.

        Raises ValueError naming the variable when a value is invalid.
        """
        values: dict[str, object] = {}
        for field in fields(cls):
            var = ENV_VARS[field.name]
            raw = env.get(var)
            if raw is None or raw == "":
                continue
            if field.name in _SECONDS:
                try:
                    values[field.name] = float(raw)
                except ValueError:
                    raise ValueError(f"{var} must be a number of seconds, got {raw!r}") from None
            elif field.name in _BOOLS:
                if raw.strip().lower() not in _TRUE | _FALSE:
                    raise ValueError(f"{var} must be true or false, got {raw!r}")
                values[field.name] = raw.strip().lower() in _TRUE
            elif field.name in _LISTS:
                values[field.name] = tuple(item.strip().lower() for item in raw.split(",") if item.strip())
            elif field.name == "model_network_policy_ingress_from":
                try:
                    peers = json.loads(raw)
                except ValueError:
                    raise ValueError(f"{var} must be a JSON list of NetworkPolicyPeer objects, got {raw!r}") from None
                if not isinstance(peers, list):
                    raise ValueError(f"{var} must be a JSON list of NetworkPolicyPeer objects, got {raw!r}")
                values[field.name] = tuple(peers)
            else:
                values[field.name] = raw
        try:
            return cls(**values)  # type: ignore[arg-type]
        except ValueError as error:
            raise ValueError(f"invalid operator configuration from the environment: {error}") from None


ENV_VARS: Mapping[str, str] = {
    "default_runtime_image": "MODELDEPLOY_RUNTIME_IMAGE",
    "cluster_domain": "MODELDEPLOY_CLUSTER_DOMAIN",
    "field_manager": "MODELDEPLOY_FIELD_MANAGER",
    "model_mount_path": "MODELDEPLOY_MODEL_MOUNT_PATH",
    "require_sha256": "MODELDEPLOY_POLICY_REQUIRE_SHA256",
    "allowed_schemes": "MODELDEPLOY_POLICY_ALLOWED_SCHEMES",
    "allowed_hosts": "MODELDEPLOY_POLICY_ALLOWED_HOSTS",
    "model_network_policy": "MODELDEPLOY_MODEL_NETWORK_POLICY",
    "model_network_policy_ingress_from": "MODELDEPLOY_MODEL_NETWORK_POLICY_INGRESS_FROM",
    "model_disruption_budget": "MODELDEPLOY_MODEL_DISRUPTION_BUDGET",
    "operator_namespace": "MODELDEPLOY_OPERATOR_NAMESPACE",
    "monitoring_namespace": "MODELDEPLOY_MONITORING_NAMESPACE",
    "gpu_preflight": "MODELDEPLOY_GPU_PREFLIGHT",
    "write_failure_seconds": "MODELDEPLOY_WRITE_FAILURE_SECONDS",
}
"""Environment variable for each field of ``OperatorConfig``."""
