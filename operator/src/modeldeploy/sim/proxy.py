"""A local HTTP proxy standing in for a Kubernetes Service (kube-proxy) of the emulated cluster.

Per request it picks one endpoint, round robin, among the pods that the Service's selector matches and that
are Ready and not terminating, exactly the set Kubernetes puts in the Service's EndpointSlices. With
replica-ratio routing the share of each revision is therefore its share of the ready pods. It runs in the
emulated cluster's event loop and reads the emulator's store directly.

Each response carries ``X-Sim-Pod`` and ``X-Sim-Revision`` (the pod and its ``modeldeploy.io/revision``
label), so a load generator can attribute every answer to a revision. No endpoint: 503, as a client of a
Service with no ready pods sees a refused connection.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp
import aiohttp.web

from modeldeploy.sim.emulator import ClusterEmulator, Obj
from modeldeploy.sim.selectors import match_labels_selector

__all__ = ["POD_HEADER", "REVISION_HEADER", "ServiceProxy"]

logger = logging.getLogger(__name__)

POD_HEADER = "X-Sim-Pod"
REVISION_HEADER = "X-Sim-Revision"
REVISION_LABEL = "modeldeploy.io/revision"
_HOP_HEADERS = frozenset({"connection", "keep-alive", "transfer-encoding", "host", "content-length"})

AddressResolver = Callable[[Mapping[str, Any]], "tuple[str, int] | None"]


def _ready(pod: Obj) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


class ServiceProxy:
    """Serves ``http://127.0.0.1:PORT`` for the Service ``namespace/name`` (start with :meth:`start`)."""

    def __init__(
        self, emulator: ClusterEmulator, namespace: str, name: str, resolve: AddressResolver, *,
        timeout: float = 30.0,
    ) -> None:  # fmt: skip
        self.emulator = emulator
        self.namespace = namespace
        self.name = name
        self.resolve = resolve
        self.timeout = timeout
        self._counter = itertools.count()
        self._session: aiohttp.ClientSession | None = None
        self._runner: aiohttp.web.AppRunner | None = None
        self.url = ""
        self.no_endpoint = 0

    def endpoints(self) -> list[tuple[Obj, tuple[str, int]]]:
        """The ready, non-terminating pods the Service selects, with their addresses, in a stable order."""
        service = self.emulator.get_object("v1/services", self.namespace, self.name)
        if service is None:
            return []
        selector = (service.get("spec") or {}).get("selector") or {}
        if not selector:
            return []  # A Service without a selector has no automatic endpoints.
        query = match_labels_selector({"matchLabels": selector})
        pods = self.emulator.list_objects("v1/pods", self.namespace, label_selector=query)
        out = []
        for pod in sorted(pods, key=lambda p: str(p["metadata"]["name"])):
            if pod["metadata"].get("deletionTimestamp") or not _ready(pod):
                continue
            address = self.resolve(pod)
            if address is not None:
                out.append((pod, address))
        return out

    async def _handle(self, request: aiohttp.web.Request) -> aiohttp.web.StreamResponse:
        endpoints = self.endpoints()
        if not endpoints:
            self.no_endpoint += 1
            return aiohttp.web.Response(status=503, text=f"service {self.namespace}/{self.name} has no endpoints\n")
        pod, (host, port) = endpoints[next(self._counter) % len(endpoints)]
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_HEADERS}
        body = await request.read()
        labels = pod["metadata"].get("labels") or {}
        extra = {POD_HEADER: str(pod["metadata"]["name"]), REVISION_HEADER: str(labels.get(REVISION_LABEL, ""))}
        try:
            async with self._session.request(
                request.method, f"http://{host}:{port}{request.path_qs}", headers=headers, data=body
            ) as upstream:
                payload = await upstream.read()
                out_headers = {k: v for k, v in upstream.headers.items() if k.lower() not in _HOP_HEADERS}
                return aiohttp.web.Response(status=upstream.status, body=payload, headers={**out_headers, **extra})
        except (aiohttp.ClientError, TimeoutError) as error:
            return aiohttp.web.Response(status=502, text=f"upstream {host}:{port} failed: {error}\n", headers=extra)

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
