"""The operator as users run it: the `modeldeploy run` process, its health endpoint and its own metrics."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from typing import Any

import pytest

from .conftest import MD, ThreadedCluster

pytestmark = pytest.mark.component


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status, response.read().decode()
    except OSError:
        return 0, ""


def test_run_serves_health_and_metrics(emulated: ThreadedCluster, tmp_path: Any) -> None:
    health, metrics = free_port(), free_port()
    env = {**os.environ, "KUBECONFIG": emulated.kubeconfig}
    log = (tmp_path / "operator.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "modeldeploy.cli", "run", "--health-port", str(health), "--metrics-port", str(metrics)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while get(f"http://127.0.0.1:{health}/healthz")[0] != 200:
            assert process.poll() is None, (tmp_path / "operator.log").read_text()
            assert time.monotonic() < deadline, "no /healthz within 30 s"
            time.sleep(0.2)
        emulated.create(
            MD,
            {
                "apiVersion": "modeldeploy.io/v1alpha1",
                "kind": "ModelDeployment",
                "metadata": {"name": "iris", "namespace": "ml"},
                "spec": {"model": {"version": "1", "storageUri": "s3://models/iris/1/m.pt", "format": "TorchScript"}},
            },
        )
        emulated.wait_for(lambda: (emulated.get(MD, "ml", "iris") or {}).get("status", {}).get("phase") == "Ready")
        status, text = get(f"http://127.0.0.1:{metrics}/metrics")
        assert status == 200
        assert 'modeldeploy_reconcile_total{result="changed"}' in text
        assert "modeldeploy_reconcile_duration_seconds_bucket" in text
        assert 'modeldeploy_api_writes_total{kind="Deployment",verb="apply"} 1.0' in text
        code, body = get(f"http://127.0.0.1:{health}/healthz")
        assert code == 200 and "reconciles" in body
    finally:
        process.terminate()
        assert process.wait(30) == 0, (tmp_path / "operator.log").read_text()
        log.close()


def test_run_rejects_bad_configuration_naming_the_variable(emulated: ThreadedCluster) -> None:
    env = {**os.environ, "KUBECONFIG": emulated.kubeconfig, "MODELDEPLOY_RESYNC_SECONDS": "soon"}
    result = subprocess.run(
        [sys.executable, "-m", "modeldeploy.cli", "run"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "MODELDEPLOY_RESYNC_SECONDS" in result.stderr
