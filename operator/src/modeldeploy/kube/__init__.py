"""The only package of the operator that talks to the Kubernetes API server."""

from modeldeploy.kube.client import ApiError, ApiUnreachableError, KubeClient
from modeldeploy.kube.resources import Resource, resource_for

__all__ = ["ApiError", "ApiUnreachableError", "KubeClient", "Resource", "resource_for"]
