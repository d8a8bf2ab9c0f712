"""A thin asynchronous client for the few API calls the operator makes.

Authentication and TLS come from ``lightkube``'s kubeconfig / service-account handling; requests are plain JSON so
that desired state stays plain dicts from the builders to the wire.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import httpx2 as httpx
from lightkube.config.client_adapter import AsyncClient as AdapterClient
from lightkube.config.client_adapter import ConnectionParams
from lightkube.config.kubeconfig import KubeConfig

from modeldeploy import __version__
from modeldeploy.conditions import rfc3339
from modeldeploy.kube.resources import EVENTS, MODEL_DEPLOYMENTS, Resource, resource_for

logger = logging.getLogger("modeldeploy.kube")

APPLY = "application/apply-patch+yaml"
MERGE = "application/merge-patch+json"


class ApiError(Exception):
    """An error status from the API server, with its ``Status`` reason and HTTP code."""

    def __init__(self, code: int, reason: str, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(f"{code} {reason}: {message}")
        self.code = code
        self.reason = reason
        self.message = message
        self.retry_after = retry_after
        """Seconds the API server asked the client to wait (``Retry-After``, or the Status's
        ``details.retryAfterSeconds``); None when it did not say."""


class ApiUnreachableError(ApiError):
    """No answer from the API server: the connection was refused, reset or closed, or the request timed out (an
    API server restarting during a control-plane upgrade, a load balancer in front of it, a network partition).
    Whether a write took effect is unknown, as with a 504. ``code`` is 0; ``reason`` is the kind of failure
    (``ConnectError``, ``ReadTimeout``, ``RemoteProtocolError``, ...)."""

    def __init__(self, method: str, path: str, error: Exception) -> None:
        reason = type(error).__name__
        detail = str(error) or reason
        super().__init__(0, reason, f"no answer to {method} {path}: {detail}")
        self.args = (f"the API server did not answer {method} {path} ({reason}: {detail})",)

    def __str__(self) -> str:
        return str(self.args[0])


IDEMPOTENT = frozenset({"GET", "PATCH", "DELETE"})
"""The operator's calls that may be sent twice with the same outcome: reads, server-side apply and merge patches (the
same patch twice), and deletes (a second one finds the object gone: 404, which ``delete_object`` reports as such)."""
MAX_RETRY_PAUSE = 5.0
"""A longer ``Retry-After`` is not waited out inside one call: the call fails, and the object's next pass waits."""


def retryable(method: str, error: ApiError) -> bool:
    """Whether another try of a failed call can mend it without harm: a 429 from API Priority and Fairness, or a
    connection that never opened (the request was not served, whatever its verb); and for an idempotent call, also
    an API server that is failing over or timed out (500, 502, 503, 504, or no answer: a write may have been
    served, and a second one changes nothing). Conflicts, refusals and not-found are answers, never tried again.
    Neither is a call that timed out once its connection was open: the API server is too slow for it already (a
    second try would take as long again and add to its load), and the pass fails for the object's backoff."""
    if error.code == 429:
        return True
    if isinstance(error, ApiUnreachableError):
        cause = error.__cause__
        if isinstance(cause, (httpx.ConnectError, httpx.ConnectTimeout)):
            return True
        return method in IDEMPOTENT and not isinstance(cause, httpx.TimeoutException)
    return error.code in (500, 502, 503, 504) and method in IDEMPOTENT


def retry_after_of(header: str | None, status: Mapping[str, Any]) -> float | None:
    """The wait an error response asks for: the ``Retry-After`` header (seconds, or an HTTP date), else the Status's
    ``details.retryAfterSeconds`` (API Priority and Fairness and the API server's own throttling set both); None
    when neither is there or readable. Never negative."""
    if header:
        text = header.strip()
        if text.isdigit():
            return float(text)
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            when = None
        if when is not None and when.tzinfo is not None:
            return max(0.0, (when - datetime.now(UTC)).total_seconds())
    details = status.get("details")
    seconds = details.get("retryAfterSeconds") if isinstance(details, Mapping) else None
    if isinstance(seconds, int) and not isinstance(seconds, bool) and seconds >= 0:
        return float(seconds)
    return None


def load_config(kubeconfig: str | Path | None = None) -> KubeConfig:
    """A kubeconfig file when given, else in-cluster service account, else ``$KUBECONFIG`` / ``~/.kube/config``."""
    if kubeconfig:
        return KubeConfig.from_file(kubeconfig)
    return KubeConfig.from_env()


class KubeClient:
    """The operator's API client: apply, status patch, delete, read, events."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        field_manager: str,
        component: str = "modeldeploy",
        attempts: int = 3,
        retry_pause: float = 0.2,
    ) -> None:
        self._http = http
        self.field_manager = field_manager
        self.component = component
        self.attempts = attempts
        """Tries of one API call, the first included, while it fails in a way ``retryable`` says another try mends."""
        self.retry_pause = retry_pause
        """Seconds before the second try; doubling for each after it, and never less than ``Retry-After``."""

    @classmethod
    def connect(
        cls,
        kubeconfig: str | Path | None = None,
        *,
        field_manager: str,
        timeout: float = 30.0,
        context: str | None = None,
    ) -> KubeClient:
        """A client for ``context`` of the kubeconfig (default: its current context)."""
        config = load_config(kubeconfig).get(context)
        if config is None:
            raise RuntimeError("No Kubernetes configuration found (kubeconfig or service account)")
        http = AdapterClient(config, ConnectionParams(timeout=httpx.Timeout(timeout)))
        http.headers["User-Agent"] = f"modeldeploy/{__version__}"
        return cls(http, field_manager=field_manager)

    async def close(self) -> None:
        await self._http.aclose()

    async def _request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        content_type: str = "application/json",
        params: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """One API call, tried again (up to ``attempts`` in all, ``retry_pause`` apart, doubling) while it fails in
        a way another try can mend without harm (``retryable``): a blip of a busy or failing-over API server does
        not fail the operator's whole pass. What is left fails the pass, which the controller tries again later."""
        content = None if body is None else json.dumps(body, separators=(",", ":"))
        headers = {"Content-Type": content_type, "Accept": "application/json"} if content else None
        attempt = 1
        while True:
            try:
                return await self._send(method, path, content, headers, params)
            except ApiError as error:
                pause = self.retry_pause * 2.0 ** (attempt - 1)
                if error.retry_after is not None:
                    pause = max(pause, error.retry_after)
                if attempt >= self.attempts or pause > MAX_RETRY_PAUSE or not retryable(method, error):
                    raise
                logger.debug("Trying %s %s again in %.1fs (%s)", method, path, pause, error)
                attempt += 1
                await asyncio.sleep(pause)

    async def _send(
        self,
        method: str,
        path: str,
        content: str | None,
        headers: Mapping[str, str] | None,
        params: Mapping[str, str] | None,
    ) -> dict[str, Any]:
        """One try of a call: its result, or the API server's error (``ApiUnreachableError`` for no answer)."""
        try:
            response = await self._http.request(method, path, content=content, headers=headers, params=params)
        except httpx.RequestError as error:
            raise ApiUnreachableError(method, path, error) from error
        if response.status_code >= 400:
            try:
                status = response.json()
            except ValueError:
                status = {}
            if not isinstance(status, dict):
                status = {}
            raise ApiError(
                response.status_code,
                str(status.get("reason") or response.reason_phrase),
                str(status.get("message") or response.text[:500]),
                retry_after=retry_after_of(response.headers.get("Retry-After"), status),
            )
        result: dict[str, Any] = response.json() if response.content else {}
        return result

    async def apply_object(self, manifest: Mapping[str, Any], *, field_manager: str | None = None) -> dict[str, Any]:
        """Server-side apply ``manifest`` with the operator's field manager, or ``field_manager`` (create or
        update)."""
        resource = resource_for(str(manifest["apiVersion"]), str(manifest["kind"]))
        meta = manifest["metadata"]
        path = resource.path(meta.get("namespace"), meta["name"])
        params = {"fieldManager": field_manager or self.field_manager, "force": "true"}
        return await self._request("PATCH", path, body=manifest, content_type=APPLY, params=params)

    async def create_object(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        """Create ``manifest`` (POST); an ApiError 409 when it exists."""
        resource = resource_for(str(manifest["apiVersion"]), str(manifest["kind"]))
        namespace = manifest.get("metadata", {}).get("namespace")
        return await self._request("POST", resource.path(namespace), body=manifest)

    async def replace_object(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        """Replace (PUT) ``manifest``; its metadata.resourceVersion makes a concurrent change a 409 Conflict."""
        resource = resource_for(str(manifest["apiVersion"]), str(manifest["kind"]))
        meta = manifest["metadata"]
        return await self._request("PUT", resource.path(meta.get("namespace"), meta["name"]), body=manifest)

    async def read_object(
        self, resource: Resource, namespace: str | None, name: str
    ) -> dict[str, Any] | None:
        """The object, or None when it does not exist."""
        try:
            return await self._request("GET", resource.path(namespace, name))
        except ApiError as error:
            if error.code == 404:
                return None
            raise

    async def list_objects(
        self,
        resource: Resource,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> list[dict[str, Any]]:
        """Every matching object (``namespace`` None: in all namespaces), read a page at a time."""
        items: list[dict[str, Any]] = []
        async for page in self.list_pages(
            resource, namespace, label_selector=label_selector, field_selector=field_selector
        ):
            items.extend(page)
        return items

    async def list_with_version(
        self, resource: Resource, namespace: str | None = None, *, label_selector: str | None = None
    ) -> tuple[list[dict[str, Any]], str]:
        """Every matching object, and the resourceVersion the list was read at (its first page's: the pages of one
        list are one snapshot)."""
        items: list[dict[str, Any]] = []
        version = ""
        async for result in self._list_results(resource, namespace, label_selector=label_selector):
            items.extend(result.get("items") or [])
            version = version or str((result.get("metadata") or {}).get("resourceVersion") or "")
        return items, version

    async def list_pages(
        self,
        resource: Resource,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        limit: int = 500,
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """Matching objects in pages of at most ``limit`` (``limit``/``continue`` chunking), so a caller that keeps
        only a summary of each object never holds the whole list of a large cluster at once."""
        async for result in self._list_results(
            resource, namespace, label_selector=label_selector, field_selector=field_selector, limit=limit
        ):
            yield list(result.get("items") or [])

    async def _list_results(
        self,
        resource: Resource,
        namespace: str | None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        limit: int = 500,
    ) -> AsyncIterator[dict[str, Any]]:
        """The list responses of one list, a page at a time, following ``continue``."""
        if limit < 1:
            raise ValueError(f"limit must be positive, got {limit}")
        params = {"limit": str(limit)}
        if label_selector:
            params["labelSelector"] = label_selector
        if field_selector:
            params["fieldSelector"] = field_selector
        while True:
            result = await self._request("GET", resource.path(namespace), params=params)
            yield result
            token = (result.get("metadata") or {}).get("continue")
            if not token:
                return
            params = {**params, "continue": str(token)}

    async def delete_object(
        self, resource: Resource, namespace: str | None, name: str, *, uid: str | None = None
    ) -> bool:
        """Delete with background propagation; ``uid`` as a precondition. False when it was already gone."""
        body: dict[str, Any] = {"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": "Background"}
        if uid:
            body["preconditions"] = {"uid": uid}
        try:
            await self._request("DELETE", resource.path(namespace, name), body=body)
        except ApiError as error:
            if error.code == 404:
                return False
            raise
        return True

    async def patch_object(
        self, resource: Resource, namespace: str | None, name: str, patch: Mapping[str, Any]
    ) -> dict[str, Any]:
        """JSON merge patch (``null`` deletes a key)."""
        return await self._request("PATCH", resource.path(namespace, name), body=patch, content_type=MERGE)

    async def patch_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> dict[str, Any]:
        """Merge-patch the ModelDeployment's status subresource."""
        path = MODEL_DEPLOYMENTS.path(namespace, name, "status")
        return await self._request("PATCH", path, body={"status": status}, content_type=MERGE)

    async def patch_scale(self, namespace: str, name: str, replicas: int, *, resource_version: str) -> dict[str, Any]:
        """Set the ModelDeployment's ``spec.replicas`` through its scale subresource, as ``kubectl scale`` and the
        HPA do, only if the object is still at ``resource_version`` (409 Conflict otherwise)."""
        path = MODEL_DEPLOYMENTS.path(namespace, name, "scale")
        patch = {"metadata": {"resourceVersion": resource_version}, "spec": {"replicas": replicas}}
        return await self._request("PATCH", path, body=patch, content_type=MERGE)

    async def post_event(
        self,
        involved: Mapping[str, Any],
        *,
        type_: str,
        reason: str,
        message: str,
        now: datetime,
    ) -> None:
        """Post a core/v1 Event about ``involved``."""
        meta = involved.get("metadata", {})
        namespace = str(meta.get("namespace") or "default")
        stamp = rfc3339(now)
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta.get('name', 'modeldeploy')}.", "namespace": namespace},
            "involvedObject": {
                "apiVersion": involved.get("apiVersion"),
                "kind": involved.get("kind"),
                "name": meta.get("name"),
                "namespace": namespace,
                "uid": meta.get("uid"),
                "resourceVersion": meta.get("resourceVersion"),
            },
            "type": type_,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": self.component},
            "reportingComponent": self.component,
            "reportingInstance": self.component,
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
        }
        await self._request("POST", EVENTS.path(namespace), body=event)
