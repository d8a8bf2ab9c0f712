"""The API resources the operator reads and writes, and their REST paths."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote


@dataclass(frozen=True)
class Resource:
    """One API resource: enough to build its REST paths."""

    group: str
    version: str
    kind: str
    plural: str
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(self, namespace: str | None = None, name: str | None = None, subresource: str | None = None) -> str:
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{quote(namespace, safe='')}"
        base += f"/{self.plural}"
        if name is not None:
            base += f"/{quote(name, safe='')}"
            if subresource:
                base += f"/{subresource}"
        return base


MODEL_DEPLOYMENTS = Resource("modeldeploy.io", "v1alpha1", "ModelDeployment", "modeldeployments")
DEPLOYMENTS = Resource("apps", "v1", "Deployment", "deployments")
SERVICES = Resource("", "v1", "Service", "services")
AUTOSCALERS = Resource("autoscaling", "v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers")
CONTROLLER_REVISIONS = Resource("apps", "v1", "ControllerRevision", "controllerrevisions")
EVENTS = Resource("", "v1", "Event", "events")
PODS = Resource("", "v1", "Pod", "pods")
SECRETS = Resource("", "v1", "Secret", "secrets")
"""Read only: a Secret golden requests (its ``runtime.auth`` token) or webhook headers take values from."""
HTTP_ROUTES = Resource("gateway.networking.k8s.io", "v1", "HTTPRoute", "httproutes")
NETWORK_POLICIES = Resource("networking.k8s.io", "v1", "NetworkPolicy", "networkpolicies")
DISRUPTION_BUDGETS = Resource("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets")
NAMESPACES = Resource("", "v1", "Namespace", "namespaces", namespaced=False)
NODES = Resource("", "v1", "Node", "nodes", namespaced=False)
CLUSTER_PEERINGS = Resource("kopf.dev", "v1", "ClusterKopfPeering", "clusterkopfpeerings", namespaced=False)
PEERINGS = Resource("kopf.dev", "v1", "KopfPeering", "kopfpeerings")

KNOWN: tuple[Resource, ...] = (
    MODEL_DEPLOYMENTS,
    DEPLOYMENTS,
    SERVICES,
    AUTOSCALERS,
    CONTROLLER_REVISIONS,
    EVENTS,
    PODS,
    HTTP_ROUTES,
    NETWORK_POLICIES,
    DISRUPTION_BUDGETS,
    NAMESPACES,
    NODES,
)
_BY_KIND = {(r.api_version, r.kind): r for r in KNOWN}


def resource_for(api_version: str, kind: str) -> Resource:
    """The resource of a manifest's ``apiVersion``/``kind``; a ``KeyError`` for kinds the operator never writes."""
    try:
        return _BY_KIND[(api_version, kind)]
    except KeyError:
        raise KeyError(f"{kind} in {api_version} is not a resource the operator manages") from None
