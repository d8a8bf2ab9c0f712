"""Serve the emulated cluster on a loopback port: API server, simulated controllers and a kubeconfig file."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp.web
import yaml

from modeldeploy.sim.controllers import BehaviorChooser, DeploymentController, PodHook
from modeldeploy.sim.emulator import ClusterEmulator, RequestRecord
from modeldeploy.sim.resources import Admission, install_crd, standard_resources

__all__ = ["Cluster", "add_node", "kubeconfig_for", "node_manifest", "run_cluster"]

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
