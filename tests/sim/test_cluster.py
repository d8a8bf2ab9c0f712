"""The emulated cluster end to end: kubeconfig, the kubernetes client, kopf, the standalone command."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import kopf
import kubernetes
import pytest
import yaml
from kopf.testing import KopfRunner

from modeldeploy.sim.cluster import Cluster, run_cluster

WIDGETS = "sim.example.com/v1/widgets"


@pytest.fixture
def cluster_crds(widget_crd: dict[str, Any]) -> list[Any]:
    return [widget_crd]


async def test_kubeconfig_works_with_the_kubernetes_client(cluster: Cluster) -> None:
    config = yaml.safe_load(cluster.kubeconfig_path.read_text())
    assert config["clusters"][0]["cluster"]["server"] == cluster.url

    def list_namespaces() -> list[str]:
        with kubernetes.config.new_client_from_config(config_file=str(cluster.kubeconfig_path)) as api:
            return [ns.metadata.name for ns in kubernetes.client.CoreV1Api(api).list_namespace().items]

    assert sorted(await asyncio.to_thread(list_namespaces)) == ["default", "kube-system"]

    def create_and_read_widget() -> dict[str, Any]:
        with kubernetes.config.new_client_from_config(config_file=str(cluster.kubeconfig_path)) as api:
            custom = kubernetes.client.CustomObjectsApi(api)
            body = {"apiVersion": "sim.example.com/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {}}
            custom.create_namespaced_custom_object("sim.example.com", "v1", "default", "widgets", body)
            custom.patch_namespaced_custom_object_status(
                "sim.example.com", "v1", "default", "widgets", "w", {"status": {"ok": True}}
            )
            result: dict[str, Any] = custom.get_namespaced_custom_object(
                "sim.example.com", "v1", "default", "widgets", "w"
            )
            return result

    widget = await asyncio.to_thread(create_and_read_widget)
    assert widget["status"] == {"ok": True}


async def test_kopf_operator_runs_against_the_emulator(cluster: Cluster, eventually: Any) -> None:
    registry = kopf.OperatorRegistry()

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(server=cluster.url, insecure=True)

    @kopf.on.create("sim.example.com", "v1", "widgets", id="created", registry=registry)
    def created(spec: Any, patch: Any, **_: Any) -> dict[str, Any]:
        patch.status["size"] = spec.get("size", "unknown")
        return {"handled": True}

    settings = kopf.OperatorSettings()
    settings.watching.server_timeout = 5
    runner = KopfRunner(
        ["run", "--standalone", "--namespace", "default", "--verbose"], registry=registry, settings=settings, timeout=30
    )
    await asyncio.to_thread(runner.__enter__)
    try:
        body = {"apiVersion": "sim.example.com/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {"size": "m"}}
        cluster.emulator.create_object(WIDGETS, body, namespace="default")

        def handled() -> bool:
            obj = cluster.emulator.get_object(WIDGETS, "default", "w") or {}
            status = obj.get("status") or {}
            return status.get("size") == "m" and status.get("created") == {"handled": True}

        await eventually(handled, timeout=20)
        await asyncio.sleep(0.5)  # give kopf time to (wrongly) run the handler twice
    finally:
        await asyncio.to_thread(runner.__exit__, None, None, None)
    assert runner.exception is None
    assert runner.output.count("Handler 'created' succeeded") == 1
    writes = [r for r in cluster.requests if r.is_write and r.resource == "widgets"]
    assert writes and all(r.verb == "patch" for r in writes)


async def test_standalone_command_serves_a_cluster(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "modeldeploy.sim",
        "--port",
        "0",
        "--kubeconfig",
        str(kubeconfig),
        "--crd",
        str(Path(__file__).parent / "widget-crd.yaml"),
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), timeout=30)).decode()
        assert "Emulated cluster at http://127.0.0.1:" in line and "widgets.sim.example.com" in line
        server = yaml.safe_load(kubeconfig.read_text())["clusters"][0]["cluster"]["server"]
        assert server in line
    finally:
        process.terminate()
        assert await asyncio.wait_for(process.wait(), timeout=10) == 0


async def test_run_cluster_validates_crds() -> None:
    with pytest.raises(ValueError, match=r"spec\.group"):
        async with run_cluster(crds=[{"metadata": {"name": "x"}, "spec": {"names": {}}}]):
            pass
