"""The operator-wide artifact policy: which model artifacts a ModelDeployment may run.

Pure: a parsed ``ModelDeployment`` and the ``OperatorConfig`` in, the first violation (a ``SpecError`` naming
the field) out. The reconcile pass reports a violation exactly like an invalid spec: nothing new is deployed and
the last good revision keeps serving.
"""

from __future__ import annotations

from fnmatch import fnmatchcase

from modeldeploy.config import OperatorConfig
from modeldeploy.schema import SpecError
from modeldeploy.spec import ModelDeployment

STORAGE_FIELD = "spec.model.storageUri"
SHA256_FIELD = "spec.model.sha256"


def host_allowed(host: str, patterns: tuple[str, ...]) -> bool:
    """Whether ``host`` (a host name or bucket) matches one of the glob ``patterns``; no patterns allow all."""
    if not patterns:
        return True
    name = host.lower().rstrip(".")
    return any(fnmatchcase(name, pattern) for pattern in patterns)


def check_policy(md: ModelDeployment, config: OperatorConfig) -> SpecError | None:
    """The first way ``md``'s model artifact breaks the operator's artifact policy, or None when it complies.

    Checks, in order: the storage scheme (``allowed_schemes``), the host or bucket of downloaded artifacts
    (``allowed_hosts``; ``pvc://`` and ``file://`` have none), and a pinned digest for downloaded artifacts
    (``require_sha256``; a PersistentVolumeClaim or a file in the image is not downloaded, so not verified).
    """
    storage = md.model.storage
    if config.allowed_schemes and storage.scheme not in config.allowed_schemes:
        return SpecError(
            STORAGE_FIELD,
            f"Forbidden: scheme {storage.scheme}:// is not allowed by the operator's artifact policy "
            f"(allowed: {', '.join(config.allowed_schemes)})",
        )
    if storage.downloaded:
        where = storage.bucket if storage.scheme in ("s3", "gs") else storage.host
        noun = "bucket" if storage.scheme in ("s3", "gs") else "host"
        if not host_allowed(where, config.allowed_hosts):
            return SpecError(
                STORAGE_FIELD,
                f"Forbidden: {noun} {where!r} is not allowed by the operator's artifact policy "
                f"(allowed: {', '.join(config.allowed_hosts)})",
            )
        if config.require_sha256 and not md.model.sha256:
            return SpecError(
                SHA256_FIELD,
                "Required value: the operator's artifact policy requires the SHA-256 digest of downloaded "
                "models",
            )
    return None
