"""Local HTTP proxies standing in for the data plane of the emulated cluster: a Service and an HTTPRoute.

- :class:`ServiceProxy` (kube-proxy): per request it picks one endpoint, round robin, among the pods that the
  Service's selector matches and that are Ready and not terminating, exactly the set Kubernetes puts in the
  Service's EndpointSlices. With replica-ratio routing the share of each revision is therefore its share of
  the ready pods. No endpoint: 503, as a client of a Service with no ready pods sees a refused connection.
- :class:`RouteProxy` (a Gateway): per request it reads the HTTPRoute, picks the rule that matches the request
  and one of its backendRefs by weight (the rules are in :mod:`modeldeploy.sim.httproute`), then forwards to
  an endpoint of that backend's Service, chosen as the ServiceProxy chooses. With Gateway API routing the share
  of each revision is therefore its backendRef's weight, whatever the pod counts. A request no rule matches:
  404; the share of an invalid backendRef (no such Service or port, another kind or namespace): 500; a
  backend Service without ready endpoints: 503.

Both run in the emulated cluster's event loop and read the emulator's store directly, on every request, so
they follow the objects as the operator changes them. Each response carries ``X-Sim-Pod`` and
``X-Sim-Revision`` (the pod and its ``modeldeploy.io/revision`` label), so a load generator can attribute
every answer to a revision; the RouteProxy adds ``X-Sim-Backend`` (the Service the request went to).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp
import aiohttp.web

from modeldeploy.sim.emulator import ClusterEmulator, Obj
from modeldeploy.sim.httproute import (
    BackendRef,
    Balance,
    MirrorSampler,
    RequestInfo,
    WeightedPicker,
    backend_refs,
    invalid_backend_reason,
    mirror_targets,
    select_rule,
)
from modeldeploy.sim.selectors import match_labels_selector

__all__ = ["BACKEND_HEADER", "POD_HEADER", "REVISION_HEADER", "RouteProxy", "ServiceProxy", "service_endpoints"]

logger = logging.getLogger(__name__)

POD_HEADER = "X-Sim-Pod"
REVISION_HEADER = "X-Sim-Revision"
BACKEND_HEADER = "X-Sim-Backend"
REVISION_LABEL = "modeldeploy.io/revision"
HTTP_ROUTES = "gateway.networking.k8s.io/v1/httproutes"
_HOP_HEADERS = frozenset({"connection", "keep-alive", "transfer-encoding", "host", "content-length"})

AddressResolver = Callable[[Mapping[str, Any]], "tuple[str, int] | None"]
Endpoint = tuple[Obj, tuple[str, int]]


def _ready(pod: Obj) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def service_endpoints(
    emulator: ClusterEmulator, namespace: str, service: Obj | None, resolve: AddressResolver
) -> list[Endpoint]:
    """The ready, non-terminating pods ``service`` selects, with their addresses, in a stable order."""
    if service is None:
        return []
    selector = (service.get("spec") or {}).get("selector") or {}
    if not selector:
        return []  # A Service without a selector has no automatic endpoints.
    query = match_labels_selector({"matchLabels": selector})
    pods = emulator.list_objects("v1/pods", namespace, label_selector=query)
    out = []
    for pod in sorted(pods, key=lambda p: str(p["metadata"]["name"])):
        if pod["metadata"].get("deletionTimestamp") or not _ready(pod):
            continue
        address = resolve(pod)
        if address is not None:
            out.append((pod, address))
    return out


class _Forwarder:
    """Serving, forwarding and round robin over endpoints; subclasses choose where a request goes."""

    def __init__(self, emulator: ClusterEmulator, namespace: str, resolve: AddressResolver, timeout: float) -> None:
        self.emulator = emulator
        self.namespace = namespace
        self.resolve = resolve
        self.timeout = timeout
        self._counters: dict[str, itertools.count[int]] = {}
        self._session: aiohttp.ClientSession | None = None
        self._runner: aiohttp.web.AppRunner | None = None
        self.url = ""
        self.no_endpoint = 0

    def _endpoints_of(self, service_name: str) -> list[Endpoint]:
        service = self.emulator.get_object("v1/services", self.namespace, service_name)
        return service_endpoints(self.emulator, self.namespace, service, self.resolve)

    def _next(self, service_name: str, endpoints: list[Endpoint]) -> Endpoint:
        counter = self._counters.setdefault(service_name, itertools.count())
        return endpoints[next(counter) % len(endpoints)]

    async def _handle(self, request: aiohttp.web.Request) -> aiohttp.web.StreamResponse:
        raise NotImplementedError

    async def _forward(
        self, request: aiohttp.web.Request, endpoint: Endpoint, extra: Mapping[str, str] | None = None
    ) -> aiohttp.web.StreamResponse:
        pod, (host, port) = endpoint
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_HEADERS}
        body = await request.read()
        labels = pod["metadata"].get("labels") or {}
        tags = {
            POD_HEADER: str(pod["metadata"]["name"]),
            REVISION_HEADER: str(labels.get(REVISION_LABEL, "")),
            **(extra or {}),
        }
        try:
            async with self._session.request(
                request.method, f"http://{host}:{port}{request.path_qs}", headers=headers, data=body
            ) as upstream:
                payload = await upstream.read()
                out_headers = {k: v for k, v in upstream.headers.items() if k.lower() not in _HOP_HEADERS}
                return aiohttp.web.Response(status=upstream.status, body=payload, headers={**out_headers, **tags})
        except (aiohttp.ClientError, TimeoutError) as error:
            return aiohttp.web.Response(status=502, text=f"upstream {host}:{port} failed: {error}\n", headers=tags)

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Start serving; returns the base URL."""
        app = aiohttp.web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = aiohttp.web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = aiohttp.web.TCPSite(self._runner, host, port)
        await site.start()
        bound = self._runner.addresses[0]
        self.url = f"http://{host}:{bound[1]}"
        return self.url

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._session is not None:
            await self._session.close()
            self._session = None


class ServiceProxy(_Forwarder):
    """Serves ``http://127.0.0.1:PORT`` for the Service ``namespace/name`` (start with :meth:`start`)."""

    def __init__(
        self, emulator: ClusterEmulator, namespace: str, name: str, resolve: AddressResolver, *,
        timeout: float = 30.0,
    ) -> None:  # fmt: skip
        super().__init__(emulator, namespace, resolve, timeout)
        self.name = name

    def endpoints(self) -> list[Endpoint]:
        """The ready, non-terminating pods the Service selects, with their addresses, in a stable order."""
        return self._endpoints_of(self.name)

    async def _handle(self, request: aiohttp.web.Request) -> aiohttp.web.StreamResponse:
        endpoints = self.endpoints()
        if not endpoints:
            self.no_endpoint += 1
            return aiohttp.web.Response(status=503, text=f"service {self.namespace}/{self.name} has no endpoints\n")
        return await self._forward(request, self._next(self.name, endpoints))


class RouteProxy(_Forwarder):
    """Serves ``http://127.0.0.1:PORT`` as a Gateway with the one HTTPRoute ``namespace/name`` attached.

    ``balance``: ``smooth`` (deterministic weighted round robin, the default) or ``random`` (seeded weighted
    random choice). ``served`` counts the requests forwarded per backend Service; ``invalid_backend`` the 500s
    for invalid backendRefs, ``no_endpoint`` the 503s, ``unmatched`` the 404s. A rule's ``RequestMirror`` filters
    copy their share of the requests it forwards to their Service, in the background, and the answer is dropped:
    ``mirrored`` counts the copies answered per Service, ``mirror_failed`` those that got no 2xx answer (or could
    not be sent: an invalid backend, no endpoint, a connection error).
    """

    def __init__(
        self, emulator: ClusterEmulator, namespace: str, name: str, resolve: AddressResolver, *,
        timeout: float = 30.0, balance: Balance = "smooth", seed: int = 0,
    ) -> None:  # fmt: skip
        super().__init__(emulator, namespace, resolve, timeout)
        self.name = name
        self.picker = WeightedPicker(balance, seed)
        self.served: Counter[str] = Counter()
        self.invalid_backend = 0
        self.unmatched = 0
        self.sampler = MirrorSampler()
        self.mirrored: Counter[str] = Counter()
        self.mirror_failed: Counter[str] = Counter()
        self._copies: set[asyncio.Task[None]] = set()

    def route(self) -> Obj | None:
        return self.emulator.get_object(HTTP_ROUTES, self.namespace, self.name)

    def choose(self, request: RequestInfo) -> tuple[int, str, str]:
        """Where ``request`` goes: (HTTP status to answer, backend Service name, message).

        Status 200 means "forward to an endpoint of the Service"; anything else is the answer itself.
        """
        route = self.route()
        if route is None:
            return 404, "", f"HTTPRoute {self.namespace}/{self.name} not found"
        try:
            chosen = select_rule(route, request)
            if chosen is None:
                return 404, "", f"no rule of HTTPRoute {self.namespace}/{self.name} matches {request.path}"
            index, rule = chosen
            refs = backend_refs(rule, self.namespace)
        except (ValueError, TypeError, AttributeError, re.error) as error:
            return 500, "", f"HTTPRoute {self.namespace}/{self.name} is malformed: {error}"
        pick = self.picker.pick(index, [r.weight for r in refs])
        if pick is None:
            return 500, "", f"rule {index} of HTTPRoute {self.namespace}/{self.name} has no backend with weight > 0"
        ref = refs[pick]
        service = self.emulator.get_object("v1/services", ref.namespace, ref.name) if ref.name else None
        reason = invalid_backend_reason(ref, self.namespace, service)
        if reason is not None:
            return 500, ref.name, f"invalid backendRef in rule {index}: {reason}"
        return 200, ref.name, ""

    def mirrors(self, request: RequestInfo) -> list[BackendRef]:
        """Where the rule serving ``request`` copies it this time (each filter's share, spread evenly)."""
        route = self.route()
        chosen = select_rule(route, request) if route is not None else None
        if chosen is None:
            return []
        index, rule = chosen
        return [
            target.ref
            for position, target in enumerate(mirror_targets(rule, self.namespace))
            if self.sampler.copy((index, position, target.ref.name), target.share)
        ]

    async def _copy(self, request: aiohttp.web.Request, ref: BackendRef) -> None:
        """Send a copy of ``request`` to an endpoint of ``ref``'s Service and drop the answer."""
        backend = ref.name
        service = self.emulator.get_object("v1/services", ref.namespace, backend) if backend else None
        valid = invalid_backend_reason(ref, self.namespace, service) is None
        endpoints = self._endpoints_of(backend) if valid else []
        if not endpoints:
            self.mirror_failed[backend] += 1
            return
        answer = await self._forward(request, self._next(backend, endpoints))
        self.mirrored[backend] += 1
        if not 200 <= answer.status < 300:
            self.mirror_failed[backend] += 1

    async def _handle(self, request: aiohttp.web.Request) -> aiohttp.web.StreamResponse:
        info = RequestInfo(request.method, request.path, dict(request.headers), dict(request.query))
        status, backend, message = self.choose(info)
        tag = {BACKEND_HEADER: backend} if backend else {}
        if status == 404:
            self.unmatched += 1
        if status != 200:
            self.invalid_backend += status == 500
            return aiohttp.web.Response(status=status, text=message + "\n", headers=tag)
        endpoints = self._endpoints_of(backend)
        if not endpoints:
            self.no_endpoint += 1
            text = f"backend Service {self.namespace}/{backend} has no ready endpoints\n"
            return aiohttp.web.Response(status=503, text=text, headers=tag)
        self.served[backend] += 1
        await request.read()  # the copies send the same body
        for target in self.mirrors(info):
            task = asyncio.get_running_loop().create_task(self._copy(request, target))
            self._copies.add(task)
            task.add_done_callback(self._copies.discard)
        return await self._forward(request, self._next(backend, endpoints), tag)

    async def close(self) -> None:
        for task in list(self._copies):
            task.cancel()
        await asyncio.gather(*self._copies, return_exceptions=True)
        await super().close()
