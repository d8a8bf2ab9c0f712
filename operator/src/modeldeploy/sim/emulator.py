"""An emulated Kubernetes API server with the semantics the operator relies on.

:class:`ClusterEmulator` extends kmock's ``KubernetesEmulator`` (which keeps kmock's discovery endpoints and
HTTP plumbing) with its own object store and the behaviour of the real API server: uid, creationTimestamp,
cluster-wide ``resourceVersion``, optimistic concurrency, ``generation``, status and scale subresources, label
and field selectors, merge/strategic/JSON patches, server-side apply with managed fields, finalizers,
owner-reference garbage collection, resumable watches, admission hooks and Status-shaped errors; and, on cue, the
failures of a busy or failing-over API server (:meth:`ClusterEmulator.set_faults`, :meth:`ClusterEmulator.cut_watches`,
:meth:`ClusterEmulator.compact`).

Every write goes through one synchronous code path (``_create``, ``_finish_update``, ``_delete``), used
both by HTTP requests and by the in-process API (:meth:`ClusterEmulator.create_object` and friends) that
the simulated controllers call, so both produce the same resourceVersions and watch events.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import logging
import secrets
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp.web
import attrs
import kmock
import yaml

from modeldeploy.sim import patching
from modeldeploy.sim.resources import Admission, ResourceType, resource_types_from_crd
from modeldeploy.sim.selectors import (
    FIELDS_BY_RESOURCE,
    FieldSelector,
    LabelSelector,
    SelectorError,
    match_labels_selector,
)

__all__ = [
    "WRITE_VERBS",
    "ApiError",
    "ClusterEmulator",
    "Fault",
    "Obj",
    "RequestRecord",
    "WatchEvent",
    "now_iso",
]

logger = logging.getLogger(__name__)

Obj = dict[str, Any]
StoreKey = tuple[str, str, str, str]  # (group, plural, namespace or "", name)

WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})
_MERGE_PATCH = "application/merge-patch+json"
_STRATEGIC_PATCH = "application/strategic-merge-patch+json"
_JSON_PATCH = "application/json-patch+json"
_APPLY_PATCH = "application/apply-patch+yaml"
_SERVER_OWNED_METADATA = (
    "uid",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "generation",
    "resourceVersion",
    "namespace",
    "name",
)


def now_iso() -> str:
    """The current time as Kubernetes renders it (RFC 3339, seconds, UTC)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ApiError(Exception):
    """An API failure rendered as a ``kind: Status`` body with the given HTTP code and reason."""

    def __init__(self, code: int, reason: str, message: str, details: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = dict(details or {})

    def status(self) -> Obj:
        body: Obj = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details:
            body["details"] = self.details
        return body


def _details(rt: ResourceType, name: str | None) -> Obj:
    details: Obj = {"group": rt.group, "kind": rt.plural}
    if name:
        details["name"] = name
    return details


def _not_found(rt: ResourceType, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{rt.display} "{name}" not found', _details(rt, name))


def _conflict(rt: ResourceType, name: str) -> ApiError:
    return ApiError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {rt.display} "{name}": the object has been modified; '
        "please apply your changes to the latest version and try again",
        _details(rt, name),
    )


def _forbidden(record: RequestRecord) -> ApiError:
    """RBAC's refusal, worded as the API server words it."""
    resource = f"{record.resource}/{record.subresource}" if record.subresource else record.resource
    what = f'{record.resource}.{record.group} "{record.name}"' if record.group else f'{record.resource} "{record.name}"'
    if record.name is None:
        what = f"{record.resource}.{record.group}" if record.group else record.resource
    where = f' in the namespace "{record.namespace}"' if record.namespace else " at the cluster scope"
    return ApiError(
        403,
        "Forbidden",
        f'{what} is forbidden: User "{record.user_agent}" cannot {record.verb} resource "{resource}" in API group '
        f'"{record.group}"{where}',
    )


def _bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def _invalid(rt: ResourceType, name: str, messages: list[str]) -> ApiError:
    details = _details(rt, name) | {"kind": rt.kind, "causes": [{"message": m} for m in messages]}
    group = f".{rt.group}" if rt.group else ""
    return ApiError(422, "Invalid", f'{rt.kind}{group} "{name}" is invalid: {"; ".join(messages)}', details)


def _page(items: list[Obj], limit: str | None, token: str | None) -> tuple[list[Obj], str]:
    """One chunk of a list (``limit``/``continue``): objects after the token's (namespace, name), and the token
    for the next chunk ("" after the last). Items come sorted by namespace and name."""
    start: tuple[str, str] | None = None
    if token:
        try:
            decoded = json.loads(base64.urlsafe_b64decode(token.encode()).decode())
            start = (str(decoded[0]), str(decoded[1]))
        except (ValueError, TypeError, IndexError, UnicodeDecodeError) as error:
            raise _bad_request(f"invalid continue token: {error}") from error
        items = [i for i in items if (_meta(i).get("namespace") or "", _meta(i).get("name") or "") > start]
    if not limit:
        return items, ""
    try:
        size = int(limit)
    except ValueError as error:
        raise _bad_request(f"invalid limit {limit!r}") from error
    if size <= 0 or len(items) <= size:
        return items, ""
    last = _meta(items[size - 1])
    key = [last.get("namespace") or "", last.get("name") or ""]
    return items[:size], base64.urlsafe_b64encode(json.dumps(key).encode()).decode()


@dataclass
class RequestRecord:
    """One API request, as an audit log would show it (``code`` is set once the response is known)."""

    verb: str  # get, list, watch, create, update, patch, delete, deletecollection
    group: str
    version: str
    resource: str
    subresource: str | None
    namespace: str | None
    name: str | None
    user_agent: str
    content_type: str = ""
    label_selector: str = ""
    code: int = 0
    fault: Fault | None = None  # the failure answered in place of (or after) serving it, if one was injected

    @property
    def is_write(self) -> bool:
        return self.verb in WRITE_VERBS


@dataclass(frozen=True)
class Fault:
    """A failure the emulated API server answers with, chosen for a request by the hook of
    :meth:`ClusterEmulator.set_faults`: an overloaded server (429 with ``Retry-After``, which API Priority and
    Fairness sends), an etcd leader change or a timeout (500, 503, 504)."""

    code: int
    reason: str
    message: str
    after: bool = False
    """Serve the request first (a write commits, and its watch event goes out) and only then answer with the
    failure: the client is told that a write failed which did happen, as when a reply is lost to a timeout. Not for
    watches, whose reply is a stream already under way."""
    retry_after: int | None = None
    delay: float = 0.0
    """Seconds the server takes before it answers (or serves, with ``after``): a validating admission webhook that
    times out, for which the API server waits the webhook's ``timeoutSeconds`` and then answers 500. Other requests
    are served meanwhile."""

    RESET = 0
    """The ``code`` of a fault that gives no answer at all: the connection is closed (an API server that restarts
    or a load balancer in front of it that drops the connection). With ``after``, the request is served first, as
    when a write commits and its reply is lost on the way."""

    @classmethod
    def reset(cls, *, after: bool = False) -> Fault:
        return cls(cls.RESET, "ConnectionReset", "the connection was closed without an answer", after=after)

    def error(self) -> ApiError:
        # As the API server words a throttled request: the wait both in the header and in the Status's details.
        details = {"retryAfterSeconds": self.retry_after} if self.retry_after is not None else None
        return ApiError(self.code, self.reason, self.message, details)

    def response(self) -> aiohttp.web.Response:
        response = _json_response(self.error().status(), status=self.code)
        if self.retry_after is not None:
            response.headers["Retry-After"] = str(self.retry_after)
        return response


@dataclass(frozen=True)
class WatchEvent:
    """A committed change: ``type`` ADDED/MODIFIED/DELETED, the object after it and before it."""

    rv: int
    resource: ResourceType
    type: str
    object: Obj
    old: Obj | None


_WatchItem = WatchEvent | ApiError | None
"""What a watch stream's queue carries: a committed change; an error to end the stream with (an ERROR event); or
``None``, to end it without one."""


def _error_event(error: ApiError) -> bytes:
    """A watch stream's ERROR event line, carrying the error's Status."""
    return json.dumps({"type": "ERROR", "object": error.status()}).encode() + b"\n"


@dataclass(frozen=True)
class _HttpRequest:
    method: str
    params: dict[str, str]
    headers: dict[str, str]
    body: bytes
    raw: aiohttp.web.BaseRequest


@dataclass(frozen=True)
class _Route:
    resource: ResourceType
    namespace: str | None
    name: str | None
    subresource: str | None


def _path_tokens(path: str) -> list[str]:
    return [token for token in path.strip().strip(".").split(".") if token]


def _get_at(obj: Any, path: str) -> Any:
    node = obj
    for token in _path_tokens(path):
        if not isinstance(node, dict):
            return None
        node = node.get(token)
    return node


def _set_at(obj: Obj, path: str, value: Any) -> None:
    tokens = _path_tokens(path)
    node = obj
    for token in tokens[:-1]:
        child = node.get(token)
        if not isinstance(child, dict):
            child = node[token] = {}
        node = child
    node[tokens[-1]] = value


def _meta(obj: Mapping[str, Any]) -> Obj:
    metadata = obj.get("metadata")
    return metadata if isinstance(metadata, dict) else {}


def _strip_managed(obj: Obj) -> Obj:
    result = dict(obj)
    result["metadata"] = {k: v for k, v in _meta(obj).items() if k != "managedFields"}
    return result


def _json_response(body: Any, status: int = 200) -> aiohttp.web.Response:
    """A JSON response with exactly ``Content-Type: application/json``, as the API server sends it."""
    return aiohttp.web.Response(
        body=json.dumps(body).encode(), status=status, headers={"Content-Type": "application/json"}
    )


def _random_suffix(length: int = 5) -> str:
    alphabet = "bcdfghjklmnpqrstvwxz2456789"  # the alphabet Kubernetes uses for generated names
    return "".join(secrets.choice(alphabet) for _ in range(length))


@attrs.define(kw_only=True)
class ClusterEmulator(kmock.KubernetesEmulator):
    """An in-memory Kubernetes API server served over HTTP by kmock's request handling.

    Declare resources with :meth:`register` (see :func:`modeldeploy.sim.resources.standard_resources`) and
    custom resources with :func:`modeldeploy.sim.resources.install_crd`. Requests for undeclared resources
    get 404, like a real server. Every HTTP request is recorded in :attr:`requests_log`.
    """

    require_namespaces: bool = True  # creating in a namespace that does not exist fails (when namespaces exist)
    history_limit: int = 20000  # watch events kept for resuming; older resourceVersions get 410 Gone
    requests_log: list[RequestRecord] = attrs.field(factory=list, init=False)
    forbidden: set[tuple[str, str, str, bool]] = attrs.field(factory=set, init=False)
    """(group, plural, verb, cluster_wide) denied with 403 Forbidden, as RBAC would: see :meth:`forbid`."""

    _types: dict[tuple[str, str, str], ResourceType] = attrs.field(factory=dict, init=False)
    _kinds: dict[tuple[str, str], ResourceType] = attrs.field(factory=dict, init=False)
    _store: dict[StoreKey, Obj] = attrs.field(factory=dict, init=False)
    _rv: int = attrs.field(default=1, init=False)
    _history: deque[WatchEvent] = attrs.field(factory=deque, init=False)
    _compacted_rv: int = attrs.field(default=0, init=False)
    _watchers: dict[tuple[str, str], set[asyncio.Queue[_WatchItem]]] = attrs.field(factory=dict, init=False)
    _listeners: list[Callable[[WatchEvent], None]] = attrs.field(factory=list, init=False)
    _admission: dict[tuple[str, str], list[Admission]] = attrs.field(factory=dict, init=False)
    _disabled: dict[tuple[str, str], list[str]] = attrs.field(factory=dict, init=False)
    _gc_pending: bool = attrs.field(default=False, init=False)
    _closed: bool = attrs.field(default=False, init=False)
    _faults: Callable[[RequestRecord, bytes], Fault | None] | None = attrs.field(default=None, init=False)
    _authorizer: Callable[[RequestRecord], bool] | None = attrs.field(default=None, init=False)

    # --- registry -------------------------------------------------------------------------------------------

    def register(self, *types: ResourceType) -> None:
        """Serve these resources (also in API discovery, with their verbs and subresources)."""
        for rt in types:
            self._types[rt.key] = rt
            self._kinds.setdefault((rt.group, rt.plural), rt)
            self.resources[kmock.resource(rt.group, rt.version, rt.plural)] = kmock.ResourceInfo(
                kind=rt.kind,
                namespaced=rt.namespaced,
                singular=rt.singular or rt.kind.lower(),
                verbs=set(rt.verbs),
                shortnames=set(rt.short_names),
                categories=set(rt.categories),
                subresources=set(rt.subresources),
            )

    def forbid(self, resource: str | ResourceType, *verbs: str, cluster_wide_only: bool = False) -> None:
        """Answer ``verbs`` on ``resource`` with 403 Forbidden (a client without the RBAC permission).
        ``cluster_wide_only``: only requests across all namespaces (a namespaced Role still allows the rest)."""
        rt = self.resource_type(resource)
        for verb in verbs:
            self.forbidden.add((rt.group, rt.plural, verb, cluster_wide_only))

    def unregister(self, rt: ResourceType) -> None:
        self._types.pop(rt.key, None)
        if self._kinds.get((rt.group, rt.plural)) == rt:
            del self._kinds[(rt.group, rt.plural)]
        self.resources.pop(kmock.resource(rt.group, rt.version, rt.plural), None)

    @property
    def resource_types(self) -> list[ResourceType]:
        return list(self._types.values())

    def resource_type(self, ref: str | ResourceType) -> ResourceType:
        """Resolve ``"apps/v1/deployments"``, ``"v1/pods"`` or a :class:`ResourceType`."""
        if isinstance(ref, ResourceType):
            return ref
        parts = ref.strip("/").split("/")
        key = (
            ("", parts[0], parts[1]) if len(parts) == 2 else (parts[0], parts[1], parts[2]) if len(parts) == 3 else None
        )
        if key is None or key not in self._types:
            raise KeyError(f"resource {ref!r} is not served (use group/version/plural or v1/plural)")
        return self._types[key]

    def set_admission(self, resource: str | ResourceType, hook: Admission) -> None:
        """Validate every write of this resource with ``hook(new, old)``; messages make a 422 Invalid."""
        rt = self.resource_type(resource)
        self._admission.setdefault((rt.group, rt.plural), []).append(hook)

    def disable_fields(self, resource: str | ResourceType, *paths: str) -> None:
        """Serve ``resource`` as an API server whose feature gate for these fields (dotted paths,
        ``spec.behavior.scaleUp.tolerance``) is off: a write drops them, unless the object it replaces already has
        them (the API server's ``dropDisabledFields``: an object written while the gate was on keeps them)."""
        rt = self.resource_type(resource)
        self._disabled.setdefault((rt.group, rt.plural), []).extend(paths)

    def _drop_disabled(self, rt: ResourceType, new: Obj, old: Obj | None) -> None:
        for path in self._disabled.get((rt.group, rt.plural), ()):
            parent, _, leaf = path.rpartition(".")
            kept = _get_at(old, parent)
            if isinstance(kept, dict) and leaf in kept:
                continue
            holder = _get_at(new, parent)
            if isinstance(holder, dict):
                holder.pop(leaf, None)

    def set_faults(self, choose: Callable[[RequestRecord, bytes], Fault | None] | None) -> None:
        """Ask ``choose(record, body)`` for every resource request served over HTTP whether to fail it, and how
        (``body``: the request's body as sent); ``None`` ends the faults. The record says which request was failed
        (``record.fault``)."""
        self._faults = choose

    def set_authorizer(self, allows: Callable[[RequestRecord], bool] | None) -> None:
        """Serve only the resource requests ``allows(record)`` permits, as RBAC does: the others are answered 403
        Forbidden in the API server's words, before any fault. ``None`` permits everything (the default)."""
        self._authorizer = allows

    def cut_watches(self, resource: str | ResourceType | None = None, error: ApiError | None = None) -> None:
        """End every open watch stream now (of ``resource`` only, if given), as a restarting API server or a
        dropped connection does; clients watch again from the last resourceVersion they saw. With ``error``, each
        stream ends with an ERROR event carrying its Status, as the API server sends when the storage fails under a
        watch (500 InternalError)."""
        only = None if resource is None else self.resource_type(resource)
        for (group, plural), queues in self._watchers.items():
            if only is None or (only.group, only.plural) == (group, plural):
                for queue in queues:
                    queue.put_nowait(error)

    def compact(self) -> None:
        """Forget the watch history, as etcd's compaction does: a watch resumed from an older resourceVersion gets
        410 Gone, and its client has to list again."""
        self._history.clear()
        self._compacted_rv = self._rv

    def add_listener(self, listener: Callable[[WatchEvent], None]) -> None:
        """Call ``listener(event)`` synchronously after every committed change (in-process watch)."""
        self._listeners.append(listener)

    def remove_listener(self, listener: Callable[[WatchEvent], None]) -> None:
        self._listeners.remove(listener)

    def store_crd(self, manifest: Mapping[str, Any]) -> Obj:
        """Store a CRD object (create or replace) and serve the resource it declares."""
        rt = self.resource_type("apiextensions.k8s.io/v1/customresourcedefinitions")
        body = copy.deepcopy(dict(manifest))
        name = _meta(body).get("name")
        if not name:
            raise ValueError("a CRD needs metadata.name")
        old = self._store.get(self._key(rt, None, name))
        if old is None:
            return self._create(rt, None, body, manager="modeldeploy-sim", dry_run=False)
        body.setdefault("metadata", {})["resourceVersion"] = _meta(old)["resourceVersion"]
        return self._finish_update(rt, old, body, subresource=None, managed=_meta(old).get("managedFields"))

    # --- in-process API (no HTTP) ---------------------------------------------------------------------------

    def get_object(self, resource: str | ResourceType, namespace: str | None, name: str) -> Obj | None:
        rt = self.resource_type(resource)
        obj = self._store.get(self._key(rt, namespace, name))
        return self._present(rt, obj) if obj is not None else None

    def get_scale(self, resource: str | ResourceType, namespace: str | None, name: str) -> Obj:
        """The object's Scale, as ``GET .../scale`` returns it (what an HPA reads); ApiError as the server's."""
        rt = self.resource_type(resource)
        return self._scale_view(rt, self._require(rt, namespace, name))

    def iter_stored(self, resource: str | ResourceType) -> list[Obj]:
        """The stored objects of a resource, without copying: read-only, for the in-process controllers."""
        rt = self.resource_type(resource)
        return [obj for key, obj in self._store.items() if key[:2] == (rt.group, rt.plural)]

    def list_objects(
        self,
        resource: str | ResourceType,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
    ) -> list[Obj]:
        rt = self.resource_type(resource)
        return self._list(rt, namespace, LabelSelector.parse(label_selector), FieldSelector.parse(None))

    def create_object(
        self, resource: str | ResourceType, body: Obj, *, namespace: str | None = None, manager: str = "sim"
    ) -> Obj:
        rt = self.resource_type(resource)
        namespace = namespace or _meta(body).get("namespace")
        return self._create(rt, namespace if rt.namespaced else None, copy.deepcopy(body), manager=manager)

    def update_object(
        self, resource: str | ResourceType, body: Obj, *, subresource: str | None = None, manager: str = "sim"
    ) -> Obj:
        """PUT semantics: replace the object (or only its status with ``subresource="status"``)."""
        rt = self.resource_type(resource)
        metadata = _meta(body)
        return self._replace(
            rt, metadata.get("namespace"), metadata.get("name", ""), copy.deepcopy(body), subresource, manager
        )

    def patch_object(
        self,
        resource: str | ResourceType,
        namespace: str | None,
        name: str,
        patch: Any,
        *,
        patch_type: str = "merge",
        subresource: str | None = None,
        manager: str = "sim",
        force: bool = False,
    ) -> Obj:
        """Patch with ``patch_type`` ``merge``, ``strategic``, ``json`` or ``apply``."""
        content_types = {
            "merge": _MERGE_PATCH,
            "strategic": _STRATEGIC_PATCH,
            "json": _JSON_PATCH,
            "apply": _APPLY_PATCH,
        }
        rt = self.resource_type(resource)
        return self._patch(
            rt,
            namespace,
            name,
            content_types[patch_type],
            copy.deepcopy(patch),
            subresource,
            manager,
            force,
            False,
        )

    def delete_object(
        self,
        resource: str | ResourceType,
        namespace: str | None,
        name: str,
        *,
        propagation: str = "Background",
    ) -> Obj | None:
        """Delete (or mark for deletion when finalizers remain); None when the object does not exist."""
        rt = self.resource_type(resource)
        try:
            return self._delete(rt, namespace, name, {"propagationPolicy": propagation}, False)
        except ApiError as error:
            if error.code == 404:
                return None
            raise

    @property
    def resource_version(self) -> int:
        """The latest cluster-wide resourceVersion."""
        return self._rv

    def close_watches(self) -> None:
        """End every open watch stream (before the HTTP server shuts down)."""
        self._closed = True
        self.cut_watches()

    # --- the store ---

    def _key(self, rt: ResourceType, namespace: str | None, name: str) -> StoreKey:
        return (rt.group, rt.plural, (namespace or "") if rt.namespaced else "", name)

    def _present(self, rt: ResourceType, obj: Obj) -> Obj:
        result = copy.deepcopy(obj)
        result["apiVersion"] = rt.api_version
        result["kind"] = rt.kind
        return result

    def _require(self, rt: ResourceType, namespace: str | None, name: str) -> Obj:
        obj = self._store.get(self._key(rt, namespace, name))
        if obj is None:
            raise _not_found(rt, name)
        return obj

    def _list(self, rt: ResourceType, namespace: str | None, labels: LabelSelector, fields: FieldSelector) -> list[Obj]:
        matching = [
            (key, obj)
            for key, obj in self._store.items()
            if key[:2] == (rt.group, rt.plural)
            and (namespace is None or not rt.namespaced or key[2] == namespace)
            and labels.matches(obj)
            and fields.matches(obj)
        ]
        items = [self._present(rt, obj) for _, obj in sorted(matching, key=lambda item: item[0])]
        return items

    def _commit(self, rt: ResourceType, event_type: str, new: Obj, old: Obj | None) -> Obj:
        metadata = new["metadata"]
        if rt.plural == "customresourcedefinitions" and rt.group == "apiextensions.k8s.io":
            self._sync_crd(new, deleted=event_type == "DELETED")
        self._rv += 1
        metadata["resourceVersion"] = str(self._rv)
        key = self._key(rt, metadata.get("namespace"), metadata["name"])
        if event_type == "DELETED":
            self._store.pop(key, None)
        else:
            self._store[key] = new
        event = WatchEvent(self._rv, rt, event_type, new, old)
        self._history.append(event)
        while len(self._history) > self.history_limit:
            self._compacted_rv = self._history.popleft().rv
        for queue in self._watchers.get((rt.group, rt.plural), ()):
            queue.put_nowait(event)
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:
                logger.exception("A cluster listener failed on %s %s", event_type, metadata.get("name"))
        return self._present(rt, new)

    def _sync_crd(self, crd: Obj, *, deleted: bool) -> None:
        try:
            types = resource_types_from_crd(crd)
        except (ValueError, KeyError, TypeError) as error:
            logger.warning("Ignoring an invalid CRD %s: %s", _meta(crd).get("name"), error)
            return
        if deleted:
            for rt in types:
                self.unregister(rt)
            for key in [k for k in self._store if k[:2] == (types[0].group, types[0].plural)]:
                del self._store[key]
            return
        for old_rt in [t for t in self._types.values() if (t.group, t.plural) == (types[0].group, types[0].plural)]:
            self.unregister(old_rt)
        self.register(*types)
        names = (crd.get("spec") or {}).get("names") or {}
        crd["status"] = {
            "acceptedNames": copy.deepcopy(names),
            "storedVersions": [t.version for t in types[:1]],
            "conditions": [
                {
                    "type": "NamesAccepted",
                    "status": "True",
                    "reason": "NoConflicts",
                    "message": "no conflicts found",
                },
                {
                    "type": "Established",
                    "status": "True",
                    "reason": "InitialNamesAccepted",
                    "message": "the initial names have been accepted",
                },
            ],
        }

    def _admit(self, rt: ResourceType, new: Obj, old: Obj | None) -> None:
        messages: list[str] = []
        for hook in self._admission.get((rt.group, rt.plural), ()):
            messages.extend(hook(self._present(rt, new), self._present(rt, old) if old is not None else None))
        if messages:
            raise _invalid(rt, _meta(new).get("name", ""), messages)

    # --- writes ---

    def _create(
        self,
        rt: ResourceType,
        namespace: str | None,
        body: Any,
        *,
        manager: str,
        dry_run: bool = False,
        managed: list[Obj] | None = None,
    ) -> Obj:
        if not isinstance(body, dict):
            raise _bad_request("the request body must be a JSON object")
        self._check_type(rt, body)
        metadata = body.get("metadata")
        if metadata is None:
            metadata = body["metadata"] = {}
        if not isinstance(metadata, dict):
            raise _bad_request("metadata must be an object")
        if metadata.get("resourceVersion"):
            raise _bad_request("resourceVersion should not be set on objects to be created")
        if rt.namespaced:
            body_namespace = metadata.get("namespace")
            if namespace and body_namespace and body_namespace != namespace:
                raise _bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request"
                )
            namespace = namespace or body_namespace
            if not namespace:
                raise _bad_request(f"a namespace is required to create {rt.display}")
            metadata["namespace"] = namespace
            self._check_namespace(namespace)
        else:
            metadata.pop("namespace", None)
        if not metadata.get("name"):
            if not metadata.get("generateName"):
                raise _invalid(rt, "", ["metadata.name: Required value: name or generateName is required"])
            metadata["name"] = metadata["generateName"] + _random_suffix()
        name = metadata["name"]
        if not isinstance(name, str) or len(name) > 253:
            raise _invalid(rt, str(name), ["metadata.name: Invalid value: must be a string of at most 253 characters"])
        if self._key(rt, namespace, name) in self._store:
            raise ApiError(409, "AlreadyExists", f'{rt.display} "{name}" already exists', _details(rt, name))
        if "status" in rt.subresources and rt.plural != "customresourcedefinitions":
            body.pop("status", None)
        for key in ("deletionTimestamp", "deletionGracePeriodSeconds"):
            metadata.pop(key, None)
        metadata["uid"] = str(uuid.uuid4())
        metadata["creationTimestamp"] = now_iso()
        metadata["generation"] = 1
        if managed is None:
            managed = [self._managed_entry(rt, manager, "Update", patching.field_paths(body), None)]
        metadata["managedFields"] = managed
        body["apiVersion"] = rt.api_version
        body["kind"] = rt.kind
        self._drop_disabled(rt, body, None)
        self._admit(rt, body, None)
        if dry_run:
            return self._present(rt, body)
        return self._commit(rt, "ADDED", body, None)

    def _check_type(self, rt: ResourceType, body: Obj) -> None:
        kind, api_version = body.get("kind"), body.get("apiVersion")
        if kind is not None and kind != rt.kind:
            raise _bad_request(f"the object kind {kind!r} does not match the resource {rt.display} ({rt.kind})")
        if api_version is not None and api_version != rt.api_version:
            group = api_version.rpartition("/")[0] if isinstance(api_version, str) else None
            if group != rt.group:
                raise _bad_request(f"the object apiVersion {api_version!r} does not match {rt.api_version!r}")

    def _check_namespace(self, namespace: str) -> None:
        ns_type = self._types.get(("", "v1", "namespaces"))
        if not self.require_namespaces or ns_type is None:
            return
        existing = self._store.get(self._key(ns_type, None, namespace))
        if existing is None:
            raise _not_found(ns_type, namespace)
        if _meta(existing).get("deletionTimestamp"):
            raise ApiError(
                403,
                "Forbidden",
                f"unable to create new content in namespace {namespace} because it is being terminated",
            )

    def _managed_entry(
        self, rt: ResourceType, manager: str, operation: str, fields: set[patching.FieldPath], sub: str | None
    ) -> Obj:
        entry: Obj = {
            "manager": manager,
            "operation": operation,
            "apiVersion": rt.api_version,
            "time": now_iso(),
            "fieldsType": "FieldsV1",
            "fieldsV1": patching.fields_to_v1(fields),
        }
        if sub:
            entry["subresource"] = sub
        return entry

    def _with_entry(self, entries: list[Obj], entry: Obj) -> list[Obj]:
        """Replace the entry of this manager/operation/subresource; keep its time if its fields are equal."""
        ident = (entry["manager"], entry["operation"], entry.get("subresource"))
        result: list[Obj] = []
        placed = False
        for old in entries:
            if (old.get("manager"), old.get("operation"), old.get("subresource")) == ident:
                if old.get("fieldsV1") == entry["fieldsV1"] and old.get("apiVersion") == entry["apiVersion"]:
                    entry = old
                result.append(entry)
                placed = True
            else:
                result.append(old)
        if not placed:
            result.append(entry)
        return [e for e in result if e.get("fieldsV1") or e is entry]

    def _replace(
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        body: Any,
        subresource: str | None,
        manager: str,
        dry_run: bool = False,
    ) -> Obj:
        if not isinstance(body, dict) or not isinstance(body.get("metadata", {}), dict):
            raise _bad_request("the request body must be a JSON object with an object metadata")
        self._check_type(rt, body)
        old = self._require(rt, namespace, name)
        self._check_identity(rt, body, namespace, name)
        body_rv = _meta(body).get("resourceVersion")
        if not body_rv and rt.custom:
            raise _invalid(rt, name, ["metadata.resourceVersion: Invalid value: 0x0: must be specified for an update"])
        if body_rv and body_rv != _meta(old)["resourceVersion"]:
            raise _conflict(rt, name)
        fields = patching.field_paths(body, status_only=subresource == "status", with_status=subresource is None)
        managed = self._with_entry(
            _meta(old).get("managedFields") or [],
            self._managed_entry(rt, manager, "Update", fields, subresource),
        )
        return self._finish_update(rt, old, body, subresource=subresource, managed=managed, dry_run=dry_run)

    def _check_identity(self, rt: ResourceType, body: Obj, namespace: str | None, name: str) -> None:
        metadata = _meta(body)
        if metadata.get("name") not in (None, name):
            raise _bad_request(
                f"the name of the object ({metadata['name']}) does not match the name on the URL ({name})"
            )
        if rt.namespaced and metadata.get("namespace") not in (None, namespace):
            raise _bad_request("the namespace of the provided object does not match the namespace sent on the request")

    def _spec_changed(self, rt: ResourceType, old: Obj, new: Obj) -> bool:
        ignored = {"metadata", "apiVersion", "kind"} | ({"status"} if "status" in rt.subresources else set())
        return {k: v for k, v in old.items() if k not in ignored} != {k: v for k, v in new.items() if k not in ignored}

    def _finish_update(
        self,
        rt: ResourceType,
        old: Obj,
        candidate: Obj,
        *,
        subresource: str | None,
        managed: list[Obj] | None,
        dry_run: bool = False,
        compare_managed: bool = False,
    ) -> Obj:
        """Turn a requested state into the stored one: server-owned fields, generation, no-op, finalizers."""
        if subresource == "status":
            new = copy.deepcopy(old)
            if candidate.get("status") is not None:
                new["status"] = copy.deepcopy(candidate["status"])
            else:
                new.pop("status", None)
        else:
            new = copy.deepcopy(candidate)
            if "status" in rt.subresources:
                if "status" in old:
                    new["status"] = copy.deepcopy(old["status"])
                else:
                    new.pop("status", None)
        metadata = new.get("metadata")
        if not isinstance(metadata, dict):
            metadata = new["metadata"] = {}
        old_meta = _meta(old)
        for key in _SERVER_OWNED_METADATA:
            if key in old_meta:
                metadata[key] = old_meta[key]
            else:
                metadata.pop(key, None)
        if managed:
            metadata["managedFields"] = managed
        else:
            metadata.pop("managedFields", None)
        new["apiVersion"] = rt.api_version
        new["kind"] = rt.kind
        if self._spec_changed(rt, old, new):
            metadata["generation"] = int(old_meta.get("generation", 1)) + 1
        finalizers = metadata.get("finalizers") or []
        if old_meta.get("deletionTimestamp") and set(finalizers) - set(old_meta.get("finalizers") or []):
            raise _invalid(
                rt,
                metadata["name"],
                ["metadata.finalizers: Forbidden: no new finalizers can be added if the object is being deleted"],
            )
        if subresource is None:
            self._drop_disabled(rt, new, old)
        self._admit(rt, new, old)
        unchanged = new == old if compare_managed else _strip_managed(new) == _strip_managed(old)
        if unchanged:
            return self._present(rt, old)
        if dry_run:
            return self._present(rt, new)
        if old_meta.get("deletionTimestamp") and not finalizers:
            result = self._commit(rt, "DELETED", new, old)
            self._schedule_gc()
            return result
        return self._commit(rt, "MODIFIED", new, old)

    def _patch(
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        content_type: str,
        patch: Any,
        subresource: str | None,
        manager: str,
        force: bool,
        dry_run: bool,
    ) -> Obj:
        if content_type == _APPLY_PATCH:
            return self._apply(rt, namespace, name, patch, subresource, manager, force, dry_run)
        old = self._require(rt, namespace, name)
        if subresource == "scale":
            return self._patch_scale(rt, old, content_type, patch, dry_run)
        base = self._present(rt, old)
        try:
            if content_type == _MERGE_PATCH:
                if not isinstance(patch, dict):
                    raise patching.PatchError("a merge patch must be a JSON object")
                patched = patching.merge_patch(base, patch)
                fields = patching.field_paths(patch, status_only=subresource == "status", with_status=True)
            elif content_type == _STRATEGIC_PATCH:
                if rt.custom:
                    raise ApiError(
                        415,
                        "UnsupportedMediaType",
                        f"the body of the request was in an unknown format - accepted media types include: "
                        f"{_JSON_PATCH}, {_MERGE_PATCH}, {_APPLY_PATCH}",
                    )
                if not isinstance(patch, dict):
                    raise patching.PatchError("a strategic merge patch must be a JSON object")
                patched = patching.strategic_merge_patch(base, patch)
                fields = patching.field_paths(patch, status_only=subresource == "status", with_status=True)
            elif content_type == _JSON_PATCH:
                patched = patching.json_patch(base, patch)
                fields = set()
            else:
                raise ApiError(
                    415,
                    "UnsupportedMediaType",
                    f"the body of the request was in an unknown format: {content_type!r}",
                )
        except patching.PatchError as error:
            raise ApiError(422, "Invalid", f"the patch could not be applied: {error}", _details(rt, name)) from error
        if not isinstance(patched, dict):
            raise _bad_request("the patched object is not a JSON object")
        self._check_identity(rt, patched, namespace, name)
        patched_rv = _meta(patched).get("resourceVersion")
        if patched_rv and patched_rv != _meta(old)["resourceVersion"]:
            raise _conflict(rt, name)
        managed = _meta(old).get("managedFields") or []
        if fields:
            managed = self._with_entry(managed, self._managed_entry(rt, manager, "Update", fields, subresource))
        return self._finish_update(rt, old, patched, subresource=subresource, managed=managed, dry_run=dry_run)

    def _apply(
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        applied: Any,
        subresource: str | None,
        manager: str,
        force: bool,
        dry_run: bool,
    ) -> Obj:
        if not manager:
            raise _bad_request("PATCH, application/apply-patch+yaml requires fieldManager to be set")
        if not isinstance(applied, dict):
            raise _bad_request("an applied configuration must be an object")
        if not applied.get("apiVersion") or not applied.get("kind"):
            raise _bad_request("an applied configuration must set apiVersion and kind")
        self._check_type(rt, applied)
        self._check_identity(rt, applied, namespace, name)
        status_only = subresource == "status"
        new_fields = patching.field_paths(applied, status_only=status_only, with_status="status" not in rt.subresources)
        old = self._store.get(self._key(rt, namespace, name))
        if old is None:
            if subresource:
                raise _not_found(rt, name)
            if _meta(applied).get("resourceVersion"):
                raise _not_found(rt, name)
            body = copy.deepcopy(applied)
            body.setdefault("metadata", {})["name"] = name
            entry = self._managed_entry(rt, manager, "Apply", new_fields, None)
            return self._create(rt, namespace, body, manager=manager, dry_run=dry_run, managed=[entry])
        applied_rv = _meta(applied).get("resourceVersion")
        if applied_rv and applied_rv != _meta(old)["resourceVersion"]:
            raise _conflict(rt, name)
        entries: list[Obj] = copy.deepcopy(_meta(old).get("managedFields") or [])
        mine: set[patching.FieldPath] = set()
        others: dict[int, set[patching.FieldPath]] = {}
        owned_by_others: set[patching.FieldPath] = set()  # by any other manager, applier or updater
        for index, entry in enumerate(entries):
            if entry.get("subresource") != subresource:
                continue
            fields = patching.fields_from_v1(entry.get("fieldsV1") or {})
            if entry.get("manager") == manager and entry.get("operation") == "Apply":
                mine = fields
            elif entry.get("manager") != manager:
                owned_by_others |= fields
                if entry.get("operation") == "Apply":
                    others[index] = fields
        conflicts: list[tuple[str, patching.FieldPath]] = []
        for index, fields in others.items():
            for path in sorted(fields & new_fields):
                if patching.get_path(old, path) != patching.get_path(applied, path):
                    conflicts.append((entries[index].get("manager", ""), path))
                    if force:
                        fields.discard(path)
            if force:
                entries[index]["fieldsV1"] = patching.fields_to_v1(fields)
        if conflicts and not force:
            described = ", ".join(f'conflict with "{who}": .{".".join(t[2:] for t in path)}' for who, path in conflicts)
            raise ApiError(
                409,
                "Conflict",
                f"Apply failed with {len(conflicts)} conflict(s): {described}",
                _details(rt, name),
            )
        kept = set().union(*others.values()) if others else set()
        source = {"status": applied.get("status")} if status_only else applied
        merged = patching.apply_merge(self._present(rt, old), source)
        # A field this manager no longer applies is removed only when no other manager owns it (it then stays,
        # theirs alone): how an HPA, or a handover manager, keeps a Deployment's spec.replicas.
        merged = patching.prune_paths(merged, mine - new_fields - owned_by_others, new_fields | kept)
        entries = self._with_entry(entries, self._managed_entry(rt, manager, "Apply", new_fields, subresource))
        return self._finish_update(
            rt, old, merged, subresource=subresource, managed=entries, dry_run=dry_run, compare_managed=True
        )

    def _scale_view(self, rt: ResourceType, obj: Obj, *, for_update: bool = False) -> Obj:
        """The Scale of ``obj``. As the API server's, a custom resource without a value at its spec replicas path
        has no Scale to read (500), and an update must give it one (``for_update``: the view holds None)."""
        metadata = _meta(obj)
        replicas = _get_at(obj, rt.spec_replicas_path)
        if replicas is None and not for_update:
            raise ApiError(500, "InternalError", f'the spec replicas field "{rt.spec_replicas_path}" does not exist')
        if rt.label_selector_path is None:
            selector = match_labels_selector((obj.get("spec") or {}).get("selector"))
        else:
            selector = _get_at(obj, rt.label_selector_path) if rt.label_selector_path else ""
        status: Obj = {"replicas": _get_at(obj, rt.status_replicas_path) or 0}
        if selector:
            status["selector"] = selector
        return {
            "apiVersion": "autoscaling/v1",
            "kind": "Scale",
            "metadata": {
                k: metadata[k]
                for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
                if k in metadata
            },
            "spec": {"replicas": replicas},
            "status": status,
        }

    def _patch_scale(self, rt: ResourceType, old: Obj, content_type: str, patch: Any, dry_run: bool) -> Obj:
        view = self._scale_view(rt, old, for_update=True)
        try:
            if content_type in (_MERGE_PATCH, _STRATEGIC_PATCH):
                patched = patching.merge_patch(view, patch)
            elif content_type == _JSON_PATCH:
                patched = patching.json_patch(view, patch)
            else:
                raise ApiError(415, "UnsupportedMediaType", f"unsupported patch type for scale: {content_type!r}")
        except patching.PatchError as error:
            raise ApiError(422, "Invalid", f"the patch could not be applied: {error}") from error
        return self._write_scale(rt, old, patched, dry_run)

    def _write_scale(self, rt: ResourceType, old: Obj, scale: Any, dry_run: bool) -> Obj:
        name = _meta(old)["name"]
        if not isinstance(scale, dict):
            raise _bad_request("a Scale must be an object")
        scale_rv = _meta(scale).get("resourceVersion")
        if scale_rv and scale_rv != _meta(old)["resourceVersion"]:
            raise _conflict(rt, name)
        replicas = (scale.get("spec") or {}).get("replicas")
        if replicas is None:
            raise _bad_request(f'the spec replicas field "{rt.spec_replicas_path}" cannot be empty')
        if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
            raise _invalid(rt, name, [f"spec.replicas: Invalid value: {replicas!r}: must be a non-negative integer"])
        candidate = copy.deepcopy(old)
        _set_at(candidate, rt.spec_replicas_path, replicas)
        result = self._finish_update(
            rt, old, candidate, subresource=None, managed=_meta(old).get("managedFields"), dry_run=dry_run
        )
        return self._scale_view(rt, result)

    def _delete(
        self, rt: ResourceType, namespace: str | None, name: str, options: Mapping[str, Any], dry_run: bool
    ) -> Obj:
        old = self._require(rt, namespace, name)
        metadata = _meta(old)
        preconditions = options.get("preconditions") or {}
        if preconditions.get("uid") and preconditions["uid"] != metadata.get("uid"):
            raise ApiError(
                409,
                "Conflict",
                f"Precondition failed: UID in precondition: {preconditions['uid']}, "
                f"UID in object meta: {metadata.get('uid')}",
                _details(rt, name),
            )
        if preconditions.get("resourceVersion") and preconditions["resourceVersion"] != metadata["resourceVersion"]:
            raise _conflict(rt, name)
        policy = options.get("propagationPolicy") or "Background"
        if policy not in ("Background", "Foreground", "Orphan"):
            raise _bad_request(f"propagationPolicy must be Background, Foreground or Orphan, not {policy!r}")
        if dry_run or metadata.get("deletionTimestamp"):
            return self._present(rt, old)
        if policy == "Orphan":
            self._orphan_dependents(metadata["uid"])
        new = copy.deepcopy(old)
        if metadata.get("finalizers"):
            new["metadata"]["deletionTimestamp"] = now_iso()
            new["metadata"]["deletionGracePeriodSeconds"] = 0
            return self._commit(rt, "MODIFIED", new, old)
        result = self._commit(rt, "DELETED", new, old)
        if policy != "Orphan":
            self._schedule_gc()
        return result

    def _orphan_dependents(self, uid: str) -> None:
        for key, obj in list(self._store.items()):
            refs = _meta(obj).get("ownerReferences") or []
            if any(ref.get("uid") == uid for ref in refs):
                candidate = copy.deepcopy(obj)
                remaining = [ref for ref in refs if ref.get("uid") != uid]
                if remaining:
                    candidate["metadata"]["ownerReferences"] = remaining
                else:
                    candidate["metadata"].pop("ownerReferences", None)
                managed = _meta(obj).get("managedFields")
                self._finish_update(self._kinds[key[:2]], obj, candidate, subresource=None, managed=managed)

    def _schedule_gc(self) -> None:
        if self._gc_pending:
            return
        self._gc_pending = True
        try:
            asyncio.get_running_loop().call_soon(self.collect_garbage)
        except RuntimeError:
            self.collect_garbage()

    def collect_garbage(self) -> int:
        """Delete dependents whose owners are all gone (recursively) and objects of deleted namespaces.

        Runs in the background after every deletion, like the garbage collector of kube-controller-manager.
        Returns how many objects it deleted or marked for deletion.
        """
        self._gc_pending = False
        attempted: set[StoreKey] = set()
        count = 0
        namespaces_served = ("", "namespaces") in self._kinds and self.require_namespaces
        while True:
            uids = {_meta(obj).get("uid") for obj in self._store.values()}
            namespaces = {k[3] for k in self._store if k[:2] == ("", "namespaces")}
            victims: list[StoreKey] = []
            for key, obj in self._store.items():
                metadata = _meta(obj)
                if key in attempted or metadata.get("deletionTimestamp"):
                    continue
                refs = [ref for ref in metadata.get("ownerReferences") or [] if ref.get("uid")]
                orphaned = bool(refs) and not any(ref["uid"] in uids for ref in refs)
                homeless = namespaces_served and bool(key[2]) and key[2] not in namespaces
                if orphaned or homeless:
                    victims.append(key)
            if not victims:
                return count
            for key in victims:
                attempted.add(key)
                rt = self._kinds.get(key[:2])
                if rt is None or key not in self._store:
                    continue
                try:
                    self._delete(rt, key[2] or None, key[3], {}, False)
                    count += 1
                except ApiError as error:
                    logger.warning("Garbage collection of %s failed: %s", key, error.message)

    # --- HTTP ---

    async def _serve_version(self, request: kmock.Request) -> Any:
        payload = await super()._serve_version(request)
        if isinstance(payload, dict) and str(payload.get("groupVersion", "")).startswith("/"):
            payload["groupVersion"] = payload["groupVersion"][1:]  # the core group is "v1", not "/v1"
        return payload

    # --- requests ---

    def _route(self, path: str) -> _Route | None:
        parts = [part for part in path.split("/") if part]
        if len(parts) >= 3 and parts[0] == "api":
            group, version, rest = "", parts[1], parts[2:]
        elif len(parts) >= 4 and parts[0] == "apis":
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            return None
        namespace: str | None = None
        if rest[0] == "namespaces" and len(rest) >= 3 and not (len(rest) == 3 and rest[2] in ("status", "finalize")):
            namespace, rest = rest[1], rest[2:]
        rt = self._types.get((group, version, rest[0]))
        if rt is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        name = rest[1] if len(rest) > 1 else None
        subresource = "/".join(rest[2:]) or None
        if subresource is not None and subresource not in rt.subresources:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if rt.namespaced and name is not None and namespace is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if not rt.namespaced and namespace is not None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        return _Route(rt, namespace, name, subresource)

    async def __call__(self, raw: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        """Serve resource requests here; discovery (``/api``, ``/apis/...``, ``/version``) is kmock's."""
        try:
            route = self._route(raw.path)
        except ApiError as error:
            return _json_response(error.status(), status=error.code)
        if route is None:
            response: aiohttp.web.StreamResponse = await super().__call__(raw)
            return response
        request = _HttpRequest(
            method=raw.method.upper(),
            params=dict(raw.query),
            headers=dict(raw.headers),
            body=await raw.read(),
            raw=raw,
        )
        record = self._record(request, route)
        if self._authorizer is not None and not self._authorizer(record):
            record.code = 403
            forbidden = _forbidden(record)
            return _json_response(forbidden.status(), status=forbidden.code)
        fault = self._faults(record, request.body) if self._faults is not None else None
        if fault is not None and fault.after and record.verb == "watch":
            fault = None  # a watch's reply is a stream already under way: it can only be refused
        record.fault = fault
        if fault is not None and fault.delay > 0:
            await asyncio.sleep(fault.delay)
        if fault is not None and not fault.after:
            record.code = fault.code
            return self._fail(raw, fault)
        try:
            response = await self._serve(request, route, record)
        except ApiError as error:
            response = _json_response(error.status(), status=error.code)
        except Exception as error:
            logger.exception("The emulated API server failed on %s %s", raw.method, raw.path)
            failure = ApiError(500, "InternalError", f"an error on the server ({error!r}) has prevented the request")
            response = _json_response(failure.status(), status=500)
        if fault is not None:  # served, and its reply lost: the client sees the failure (code 0: no answer)
            record.code = record.code or fault.code
            return self._fail(raw, fault)
        record.code = record.code or response.status
        return response

    @staticmethod
    def _fail(raw: aiohttp.web.BaseRequest, fault: Fault) -> aiohttp.web.StreamResponse:
        """The fault's answer; for a reset, the connection closed with none (aiohttp then writes nothing)."""
        if fault.code == Fault.RESET:
            if raw.transport is not None:
                raw.transport.close()
            return aiohttp.web.Response(status=500)
        return fault.response()

    def _record(self, request: _HttpRequest, route: _Route) -> RequestRecord:
        method = request.method
        watching = request.params.get("watch") in ("true", "1")
        if method == "GET":
            verb = "watch" if watching else "get" if route.name else "list"
        elif method == "POST":
            verb = "create"
        elif method == "PUT":
            verb = "update"
        elif method == "PATCH":
            verb = "patch"
        elif method == "DELETE":
            verb = "delete" if route.name else "deletecollection"
        else:
            verb = method.lower()
        rt = route.resource
        record = RequestRecord(
            verb=verb,
            group=rt.group,
            version=rt.version,
            resource=rt.plural,
            subresource=route.subresource,
            namespace=route.namespace,
            name=route.name,
            user_agent=request.headers.get("User-Agent", ""),
            content_type=request.headers.get("Content-Type", "").split(";")[0].strip().lower(),
            label_selector=request.params.get("labelSelector", ""),
        )
        self.requests_log.append(record)
        return record

    def _body(self, request: _HttpRequest, *, yaml_allowed: bool = False) -> Any:
        if not request.body:
            return None
        try:
            if yaml_allowed:
                try:  # Clients send JSON (a subset of YAML) almost always: parse it the fast way first.
                    return json.loads(request.body)
                except ValueError:
                    return yaml.safe_load(request.body)
            return json.loads(request.body)
        except (ValueError, yaml.YAMLError) as error:
            raise _bad_request(
                f"the request body is not valid {'YAML' if yaml_allowed else 'JSON'}: {error}"
            ) from error

    async def _serve(self, request: _HttpRequest, route: _Route, record: RequestRecord) -> aiohttp.web.StreamResponse:
        rt, namespace, name, sub = route.resource, route.namespace, route.name, route.subresource
        params = request.params
        dry_run = params.get("dryRun") == "All"
        manager = params.get("fieldManager") or (record.user_agent.split("/")[0] if record.user_agent else "unknown")
        verb = record.verb
        cluster_wide = rt.namespaced and namespace is None
        if (rt.group, rt.plural, verb, False) in self.forbidden or (
            cluster_wide and (rt.group, rt.plural, verb, True) in self.forbidden
        ):
            scope = "at the cluster scope" if cluster_wide or not rt.namespaced else f'in the namespace "{namespace}"'
            raise ApiError(
                403,
                "Forbidden",
                f'{rt.display} is forbidden: User "system:serviceaccount:modeldeploy:modeldeploy" cannot {verb} '
                f'resource "{rt.plural}" in API group "{rt.group}" {scope}',
            )
        if verb not in rt.verbs and not (verb == "get" and sub):
            raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")
        if verb == "watch":
            fields = params.get("fieldSelector")
            if name is not None:
                fields = ",".join(filter(None, [fields, f"metadata.name={name}"]))
            return await self._stream_watch(request, rt, namespace, params.get("labelSelector"), fields)
        if verb == "list":
            labels, field_selector = self._selectors(params.get("labelSelector"), params.get("fieldSelector"), rt)
            items = self._list(rt, namespace, labels, field_selector)
            items, token = _page(items, params.get("limit"), params.get("continue"))
            list_meta: Obj = {"resourceVersion": str(self._rv)}
            if token:
                list_meta["continue"] = token
            body = {"apiVersion": rt.api_version, "kind": f"{rt.kind}List", "metadata": list_meta, "items": items}
            return _json_response(body)
        if verb == "create":
            obj = self._create(rt, namespace, self._body(request), manager=manager, dry_run=dry_run)
            return _json_response(obj, status=201)
        if verb == "deletecollection":
            labels, field_selector = self._selectors(params.get("labelSelector"), params.get("fieldSelector"), rt)
            options = self._body(request) or {}
            deleted = [
                self._delete(rt, _meta(obj).get("namespace"), _meta(obj)["name"], options, dry_run)
                for obj in self._list(rt, namespace, labels, field_selector)
            ]
            return _json_response(
                {"apiVersion": rt.api_version, "kind": f"{rt.kind}List", "metadata": {}, "items": deleted}
            )
        assert name is not None
        if verb == "get":
            obj = self._require(rt, namespace, name)
            return _json_response(self._scale_view(rt, obj) if sub == "scale" else self._present(rt, obj))
        if verb == "update":
            if sub == "scale":
                scale = self._write_scale(rt, self._require(rt, namespace, name), self._body(request), dry_run)
                return _json_response(scale)
            obj = self._replace(rt, namespace, name, self._body(request), sub, manager, dry_run)
            return _json_response(obj)
        if verb == "patch":
            content_type = record.content_type
            body = self._body(request, yaml_allowed=content_type == _APPLY_PATCH)
            force = params.get("force") in ("true", "1")
            existed = self._key(rt, namespace, name) in self._store
            obj = self._patch(rt, namespace, name, content_type, body, sub, manager, force, dry_run)
            return _json_response(obj, status=200 if existed or dry_run else 201)
        if verb == "delete":
            options = self._body(request) or {}
            if not isinstance(options, dict):
                raise _bad_request("DeleteOptions must be an object")
            for key in ("propagationPolicy",):
                if key in params:
                    options[key] = params[key]
            return _json_response(self._delete(rt, namespace, name, options, dry_run))
        raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")

    def _selectors(
        self, labels: str | None, fields: str | None, rt: ResourceType | None = None
    ) -> tuple[LabelSelector, FieldSelector]:
        extra = FIELDS_BY_RESOURCE.get((rt.group, rt.plural), ()) if rt is not None else ()
        try:
            return LabelSelector.parse(labels), FieldSelector.parse(fields, extra)
        except SelectorError as error:
            raise _bad_request(str(error)) from error

    def _translate(
        self, event: WatchEvent, namespace: str | None, labels: LabelSelector, fields: FieldSelector
    ) -> str | None:
        """The event type a filtered watcher sees: entering/leaving the selection is ADDED/DELETED."""

        def selected(obj: Obj | None) -> bool:
            if obj is None:
                return False
            in_namespace = namespace is None or _meta(obj).get("namespace") == namespace
            return in_namespace and labels.matches(obj) and fields.matches(obj)

        now = selected(event.object)
        if event.type != "MODIFIED":
            return event.type if now else None
        before = selected(event.old)
        if now and before:
            return "MODIFIED"
        if now:
            return "ADDED"
        if before:
            return "DELETED"
        return None

    async def _stream_watch(
        self,
        request: _HttpRequest,
        rt: ResourceType,
        namespace: str | None,
        label_text: str | None,
        field_text: str | None,
    ) -> aiohttp.web.StreamResponse:
        labels, fields = self._selectors(label_text, field_text, rt)
        params = request.params
        try:
            timeout = float(params["timeoutSeconds"]) if params.get("timeoutSeconds") else None
            since = int(params.get("resourceVersion") or 0)
        except ValueError as error:
            raise _bad_request(f"invalid watch parameter: {error}") from error
        initial: list[tuple[str, Obj]] = []
        gone = since and since < self._compacted_rv
        if not since:
            initial = [("ADDED", obj) for obj in self._list(rt, namespace, labels, fields)]
        elif not gone:
            for event in self._history:
                if event.rv > since and (event.resource.group, event.resource.plural) == (
                    rt.group,
                    rt.plural,
                ):
                    kind = self._translate(event, namespace, labels, fields)
                    if kind:
                        initial.append((kind, self._present(rt, event.object)))
        queue: asyncio.Queue[_WatchItem] = asyncio.Queue()
        watchers = self._watchers.setdefault((rt.group, rt.plural), set())
        watchers.add(queue)
        raw = request.raw
        response = aiohttp.web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        try:
            await response.prepare(raw)
            if gone:
                expired = ApiError(410, "Expired", f"too old resource version: {since} ({self._compacted_rv})")
                await response.write(_error_event(expired))
                return response
            for kind, obj in initial:
                await response.write(json.dumps({"type": kind, "object": obj}).encode() + b"\n")
            async for item in self._events(queue, raw, timeout):
                if isinstance(item, ApiError):
                    await response.write(_error_event(item))
                    return response
                event = item
                kind = self._translate(event, namespace, labels, fields)
                if kind:
                    payload = {"type": kind, "object": self._present(rt, event.object)}
                    await response.write(json.dumps(payload).encode() + b"\n")
        except ConnectionResetError:
            pass
        finally:
            watchers.discard(queue)
        return response

    async def _events(
        self, queue: asyncio.Queue[_WatchItem], raw: aiohttp.web.BaseRequest, seconds: float | None
    ) -> AsyncIterator[WatchEvent | ApiError]:
        deadline = None if seconds is None else time.monotonic() + seconds
        while not self._closed:
            wait = 1.0 if deadline is None else min(1.0, deadline - time.monotonic())
            if wait <= 0:
                return
            try:  # asyncio.timeout, not wait_for, which on Python 3.11 can lose the handler's cancellation
                async with asyncio.timeout(wait):
                    event = await queue.get()
            except TimeoutError:
                if raw.transport is None or raw.transport.is_closing():
                    return
                continue
            if event is None:
                return
            yield event


def describe(records: Iterable[RequestRecord]) -> list[str]:
    """Render request records as ``verb group/version/resource[/sub] ns/name`` lines (for messages)."""
    lines = []
    for r in records:
        api = f"{r.group}/{r.version}" if r.group else r.version
        sub = f"/{r.subresource}" if r.subresource else ""
        lines.append(
            f"{r.verb} {api}/{r.resource}{sub} {r.namespace or ''}/{r.name or ''} [{r.user_agent}] -> {r.code}"
        )
    return lines
