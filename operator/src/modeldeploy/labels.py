"""Label and annotation keys the operator puts on its children, and selectors built from them.

See "Naming of children" in docs/design.md.
"""

from __future__ import annotations

from modeldeploy.types import Labels

GROUP = "modeldeploy.io"

NAME_LABEL = "app.kubernetes.io/name"
INSTANCE_LABEL = "app.kubernetes.io/instance"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
COMPONENT_LABEL = "app.kubernetes.io/component"
VERSION_LABEL = "app.kubernetes.io/version"
MODEL_DEPLOYMENT_LABEL = f"{GROUP}/model-deployment"
REVISION_LABEL = f"{GROUP}/revision"

NAME_VALUE = "modeldeploy-runtime"
MANAGED_BY_VALUE = "modeldeploy"
COMPONENT_VALUE = "model-server"

REVISION_ANNOTATION = f"{GROUP}/revision"
PROMOTE_ANNOTATION = f"{GROUP}/promote"
ABORT_ANNOTATION = f"{GROUP}/abort"
ROLLBACK_TO_ANNOTATION = f"{GROUP}/rollback-to"
STABLE_ANNOTATION = f"{GROUP}/stable"
"""On the Deployment (never its pod template) of the stable revision, value ``"true"``: the operator's own
record in the cluster of ``status.rollout.stableRevision``, so that a lost or damaged status is recovered from
the children alone (see "Status fields" in docs/rollouts.md)."""
STABLE_VALUE = "true"
TOTAL_REPLICAS_ANNOTATION = f"{GROUP}/total-replicas"
"""Written by older operators on the stable revision's Deployment while a rollout set its replicas under
``spec.autoscaling`` (their HPA scaled that Deployment): the HPA's total beside the stable's share. Read only, to
take such a ModelDeployment over without changing a count (``reconcile.initial_scale``); no longer written."""

RESERVED_LABEL_KEYS = frozenset(
    {NAME_LABEL, INSTANCE_LABEL, MANAGED_BY_LABEL, COMPONENT_LABEL, VERSION_LABEL}
)
"""Labels the operator sets itself; users may not set them through ``spec.runtime.podLabels``."""


def common_labels(name: str) -> Labels:
    """Labels on every child of the ModelDeployment ``name`` (Service, HPA, Deployments, pods)."""
    return {
        NAME_LABEL: NAME_VALUE,
        INSTANCE_LABEL: name,
        MANAGED_BY_LABEL: MANAGED_BY_VALUE,
        COMPONENT_LABEL: COMPONENT_VALUE,
        MODEL_DEPLOYMENT_LABEL: name,
    }


def revision_labels(name: str, revision: str, version: str) -> Labels:
    """Labels on a revision's Deployment and its pods."""
    return {**common_labels(name), VERSION_LABEL: version, REVISION_LABEL: revision}


def selector(name: str) -> Labels:
    """Selects the pods of every revision of ``name`` (the Service's selector)."""
    return {MODEL_DEPLOYMENT_LABEL: name}


def revision_selector(name: str, revision: str) -> Labels:
    """Selects the pods of one revision (a Deployment's selector)."""
    return {MODEL_DEPLOYMENT_LABEL: name, REVISION_LABEL: revision}


def selector_string(labels: Labels) -> str:
    """A label selector in the ``key=value,key=value`` form of ``status.selector`` and ``kubectl -l``."""
    return ",".join(f"{key}={value}" for key, value in sorted(labels.items()))
