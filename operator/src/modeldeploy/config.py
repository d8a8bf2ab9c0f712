"""Operator-wide settings. Pure data: nothing here reads the process environment by itself."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, fields

DEFAULT_RUNTIME_IMAGE = "ghcr.io/modeldeploy/modelserve:0.1.0"

_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_IMAGE = re.compile(r"^[^\s]+$")


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
    resync_seconds: float = 10.0
    """How soon to look again at a ModelDeployment that has not converged yet."""
    model_mount_path: str = "/mnt/models"
    """Where the model artifact is put (emptyDir) or mounted (PersistentVolumeClaim) in the pods."""

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
        if not self.resync_seconds > 0:
            raise ValueError(f"resync_seconds must be positive, got {self.resync_seconds!r}")
        if not self.model_mount_path.startswith("/") or self.model_mount_path == "/":
            raise ValueError(f"model_mount_path must be an absolute directory, got {self.model_mount_path!r}")

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
            if field.name == "resync_seconds":
                try:
                    values[field.name] = float(raw)
                except ValueError:
                    raise ValueError(f"{var} must be a number of seconds, got {raw!r}") from None
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
    "resync_seconds": "MODELDEPLOY_RESYNC_SECONDS",
    "model_mount_path": "MODELDEPLOY_MODEL_MOUNT_PATH",
}
"""Environment variable for each field of ``OperatorConfig``."""
