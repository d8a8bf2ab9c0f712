"""Serve the emulated cluster on a loopback port: API server, simulated controllers and a kubeconfig file."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import tempfile
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self, TypeVar

import aiohttp.web
import yaml

from modeldeploy.sim.controllers import BehaviorChooser, DeploymentController, PodHook
from modeldeploy.sim.emulator import ClusterEmulator, RequestRecord
from modeldeploy.sim.resources import Admission, install_crd, standard_resources

__all__ = ["BackgroundCluster", "Cluster", "add_node", "kubeconfig_for", "node_manifest", "run_cluster"]

T = TypeVar("T")

DEFAULT_NAMESPACES = ("default", "kube-system")


@dataclass
class Cluster:
    """A running emulated cluster (see :func:`run_cluster`)."""

    emulator: ClusterEmulator
    controller: DeploymentController
    url: str
    kubeconfig_path: Path
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def requests(self) -> list[RequestRecord]:
        return self.emulator.requests_log


def kubeconfig_for(url: str, *, context: str = "modeldeploy-sim") -> dict[str, Any]:
    """A kubeconfig pointing at ``url`` over plain HTTP with a dummy token."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": context, "cluster": {"server": url}}],
        "users": [{"name": context, "user": {"token": "modeldeploy-sim"}}],
        "contexts": [{"name": context, "context": {"cluster": context, "user": context, "namespace": "default"}}],
        "current-context": context,
        "preferences": {},
    }


def node_manifest(
    name: str,
    *,
    gpus: int = 0,
    resource_name: str = "nvidia.com/gpu",
    labels: Mapping[str, str] | None = None,
    taints: Sequence[Mapping[str, Any]] = (),
    ready: bool = True,
    unschedulable: bool = False,
) -> dict[str, Any]:
    """A Node as the kubelet and a device plugin report it: ``gpus`` of ``resource_name`` allocatable."""
    resources: dict[str, Any] = {"cpu": "16", "memory": "64Gi", "pods": "110"}
    if gpus:
        resources[resource_name] = str(gpus)
    spec: dict[str, Any] = {}
    if taints:
        spec["taints"] = [dict(t) for t in taints]
    if unschedulable:
        spec["unschedulable"] = True
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, **(labels or {})}},
        "spec": spec,
        "status": {
            "capacity": dict(resources),
            "allocatable": dict(resources),
            "conditions": [{"type": "Ready", "status": "True" if ready else "False", "reason": "KubeletReady"}],
        },
    }


def add_node(emulator: ClusterEmulator, node: Mapping[str, Any]) -> dict[str, Any]:
    """Register ``node`` as a kubelet does: create the Node, then write its status (capacity, conditions)."""
    created = emulator.create_object("v1/nodes", {k: v for k, v in node.items() if k != "status"})
    if not node.get("status"):
        return created
    return emulator.update_object("v1/nodes", {**created, "status": dict(node["status"])}, subresource="status")


def _write_kubeconfig(path: Path, config: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")


@contextlib.asynccontextmanager
async def run_cluster(
    *,
    crds: Sequence[str | Path | Mapping[str, Any]] = (),
    admission: Mapping[str, Admission] | None = None,
    ready_delay: float = 0.2,
    behavior_for: BehaviorChooser | None = None,
    on_pod_running: PodHook | None = None,
    on_pod_stopped: PodHook | None = None,
    tick: float = 0.05,
    host: str = "127.0.0.1",
    port: int = 0,
    kubeconfig_path: str | Path | None = None,
    namespaces: Sequence[str] = DEFAULT_NAMESPACES,
    nodes: Sequence[Mapping[str, Any]] = (),
) -> AsyncIterator[Cluster]:
    """Run the emulated API server (``port=0``: any free port) and the simulated controllers.

    ``crds`` are CRD manifests (dicts or YAML paths) to install; ``admission`` maps a resource
    (``"modeldeploy.io/v1alpha1/modeldeployments"``) to an admission hook. Pods become Ready after
    ``ready_delay`` seconds unless ``behavior_for`` (or the pod template annotation
    ``sim.modeldeploy.io/behavior``) says otherwise. The kubeconfig is written to ``kubeconfig_path``
    (default: a temporary file removed on exit). ``nodes`` are Node objects (``node_manifest``) to create; with
    any, pods are scheduled onto them by their extended resources (GPUs), else all run on one implicit node.
    """
    emulator = ClusterEmulator()
    emulator.register(*standard_resources())
    for crd in crds:
        install_crd(emulator, crd)
    for resource, hook in (admission or {}).items():
        emulator.set_admission(resource, hook)
    for namespace in namespaces:
        emulator.create_object("v1/namespaces", {"metadata": {"name": namespace}})
    for node in nodes:
        add_node(emulator, node)

    controller = DeploymentController(
        emulator,
        ready_delay=ready_delay,
        behavior_for=behavior_for,
        on_pod_running=on_pod_running,
        on_pod_stopped=on_pod_stopped,
        tick=tick,
    )
    server = aiohttp.web.Server(emulator, handler_cancellation=True)
    runner = aiohttp.web.ServerRunner(server, shutdown_timeout=1.0)
    with contextlib.ExitStack() as stack:
        if kubeconfig_path is None:
            tmpdir = stack.enter_context(tempfile.TemporaryDirectory(prefix="modeldeploy-sim-"))
            kubeconfig_path = Path(tmpdir) / "kubeconfig"
        path = Path(kubeconfig_path)
        async with emulator:
            await runner.setup()
            try:
                site = aiohttp.web.TCPSite(runner, host, port)
                await site.start()
                bound = runner.addresses[0] if runner.addresses else (host, port)
                url = f"http://{host}:{bound[1]}"
                _write_kubeconfig(path, kubeconfig_for(url))
                await controller.start()
                try:
                    yield Cluster(emulator=emulator, controller=controller, url=url, kubeconfig_path=path)
                finally:
                    await controller.stop()
            finally:
                emulator.close_watches()
                await runner.cleanup()


class BackgroundCluster:
    """``run_cluster`` served by an event loop of its own in a background thread, with a synchronous API, so a
    test (or the local scenarios) and an operator in other threads never wait on each other.

    ``on_start`` runs in the cluster's loop once the cluster is up, before ``start`` returns; ``on_stop`` runs there
    when it is stopped, before the cluster shuts down. Other keyword arguments go to ``run_cluster``.
    """

    def __init__(
        self,
        *,
        thread_name: str = "emulated-cluster",
        on_start: Callable[[Cluster], None] | None = None,
        on_stop: Callable[[], Awaitable[None]] | None = None,
        **options: Any,
    ) -> None:
        self._options = options
        self._on_start = on_start
        self._on_stop = on_stop
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._cluster: Cluster | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=thread_name, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._serve())
        except BaseException as error:  # reported to the thread that called start()
            self._error = error
            self._ready.set()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        async with run_cluster(**self._options) as cluster:
            if self._on_start is not None:
                self._on_start(cluster)
            self._cluster = cluster
            self._ready.set()
            try:
                await self._stop.wait()
            finally:
                if self._on_stop is not None:
                    await self._on_stop()

    def start(self, timeout: float = 30) -> Self:
        self._thread.start()
        self._ready.wait(timeout)
        if self._error is not None or self._cluster is None:
            raise RuntimeError(f"the emulated cluster did not start: {self._error!r}")
        return self

    def stop(self, timeout: float = 30) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout)

    @property
    def cluster(self) -> Cluster:
        assert self._cluster is not None, "the cluster is not running"
        return self._cluster

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn`` in the cluster's thread (the emulator is not thread-safe) and return its result."""
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                future.set_result(fn(*args, **kwargs))
            except BaseException as error:
                future.set_exception(error)

        self._loop.call_soon_threadsafe(run)
        return future.result(30)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine in the cluster's loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(30)
