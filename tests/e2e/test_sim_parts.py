"""The pieces of the local harness on their own: the kubelet's command line, the proxy's endpoints, and the
operator's Service drift check that the harness exposed (a widened selector must be applied)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from modeldeploy.drift import needs_apply, stamp
from modeldeploy.sim.emulator import ClusterEmulator
from modeldeploy.sim.kubelet import KubeletError, SimKubelet
from modeldeploy.sim.proxy import ServiceProxy
from modeldeploy.sim.resources import standard_resources


def pod(name: str, *, fetch_uri: str | None = None, ready: bool = True, revision: str = "r1") -> dict[str, Any]:
    spec: dict[str, Any] = {
        "containers": [{
            "name": "model-server", "command": ["modelserve"],
            "args": ["serve", "--model-dir", "/mnt/models", "--model-name", "iris", "--port", "8080"],
            "env": [{"name": "MODELSERVE_MAX_BATCH_SIZE", "value": "4"},
                    {"name": "FROM_SECRET", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}],
        }],
    }  # fmt: skip
    if fetch_uri is not None:
        spec["initContainers"] = [{"name": "fetch-model", "args": ["fetch", fetch_uri, "/mnt/models"]}]
    return {
        "metadata": {"name": name, "namespace": "ml", "uid": f"uid-{name}",
                     "labels": {"modeldeploy.io/model-deployment": "iris", "modeldeploy.io/revision": revision}},
        "spec": spec,
        "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
    }  # fmt: skip


def test_kubelet_runs_the_server_container_on_a_loopback_port(tmp_path: Path) -> None:
    dirs = {"s3://models/iris/1": tmp_path}
    kubelet = SimKubelet(model_dir_for=lambda uri: dirs.get(uri), env={"EXTRA": "1"})
    argv, env = kubelet.command_for(pod("p", fetch_uri="s3://models/iris/1"), 40123)
    assert argv[1:3] == ["-m", "modelserve"]
    assert argv[3:] == ["serve", "--model-name", "iris", "--model-dir", str(tmp_path),
                        "--host", "127.0.0.1", "--port", "40123"]  # fmt: skip
    assert env["MODELSERVE_MAX_BATCH_SIZE"] == "4" and env["EXTRA"] == "1" and "FROM_SECRET" not in env


def test_kubelet_names_what_it_cannot_run(tmp_path: Path) -> None:
    kubelet = SimKubelet(model_dir_for=lambda uri: None)
    with pytest.raises(KubeletError, match=r"no local directory for the model 's3://models/other'"):
        kubelet.command_for(pod("p", fetch_uri="s3://models/other"), 1)
    other = pod("q")
    other["spec"]["containers"][0]["command"] = ["sh"]
    with pytest.raises(KubeletError, match="only the modelserve command"):
        kubelet.command_for(other, 1)
    assert kubelet.address(pod("p")) is None


def test_proxy_endpoints_follow_the_service_selector_and_readiness() -> None:
    emulator = ClusterEmulator()
    emulator.register(*standard_resources())
    emulator.create_object("v1/namespaces", {"metadata": {"name": "ml"}})
    selector = {"modeldeploy.io/model-deployment": "iris", "modeldeploy.io/revision": "r1"}
    emulator.create_object("v1/services", {"metadata": {"name": "iris", "namespace": "ml"},
                                           "spec": {"selector": selector, "ports": [{"port": 80}]}})  # fmt: skip
    for index, body in enumerate([pod("a"), pod("b", revision="r2"), pod("c", ready=False), pod("d")]):
        created = emulator.create_object("v1/pods", {k: v for k, v in body.items() if k != "status"})
        emulator.update_object("v1/pods", {**created, "status": body["status"]}, subresource="status")
        assert index >= 0
    ports = {"a": 1, "b": 2, "c": 3, "d": 4}
    proxy = ServiceProxy(emulator, "ml", "iris", lambda p: ("127.0.0.1", ports[p["metadata"]["name"]]))
    assert [p["metadata"]["name"] for p, _ in proxy.endpoints()] == ["a", "d"]
    # Split traffic: the selector loses the revision key and every ready pod of both revisions serves.
    emulator.patch_object("v1/services", "ml", "iris", {"spec": {"selector": {"modeldeploy.io/revision": None}}})
    assert [address for _, address in proxy.endpoints()] == [("127.0.0.1", 1), ("127.0.0.1", 2), ("127.0.0.1", 4)]


def test_a_widened_service_selector_is_drift() -> None:
    narrow = {"modeldeploy.io/model-deployment": "iris", "modeldeploy.io/revision": "r1"}
    wide = {"modeldeploy.io/model-deployment": "iris"}

    def service(selector: dict[str, str]) -> dict[str, Any]:
        body = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "iris"}, "spec": {"selector": selector}}
        return stamp(body)

    observed = service(narrow)
    observed["spec"]["clusterIP"] = "10.0.0.1"
    assert needs_apply(service(wide), observed), "a subset match must not hide the revision key to remove"
    current = service(wide)
    current["spec"]["clusterIP"] = "10.0.0.1"
    assert not needs_apply(service(wide), current)
