"""The operator as users run it: the `modeldeploy run` process, its health endpoint and its own metrics."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from modeldeploy.sim.emulator import ApiError, Fault, RequestRecord

from .conftest import DEPLOYMENTS, MD, ThreadedCluster
from .test_operator import IRIS, ready

pytestmark = pytest.mark.component

UNAVAILABLE = Fault(503, "ServiceUnavailable", "the server is currently unable to handle the request")


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


@contextlib.contextmanager
def operator_process(emulated: ThreadedCluster, log_path: Path, *options: str) -> Iterator[subprocess.Popen[bytes]]:
    """``modeldeploy run OPTIONS`` against ``emulated``, its output in ``log_path``; if it still runs at the end, it
    is stopped (SIGTERM) and must exit 0."""
    env = {**os.environ, "KUBECONFIG": emulated.kubeconfig}
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "modeldeploy.cli", "run", *options], env=env, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            yield process
        finally:
            if process.poll() is None:
                process.terminate()
                assert process.wait(30) == 0, log_path.read_text()


def test_run_serves_health_and_metrics(emulated: ThreadedCluster, tmp_path: Any) -> None:
    health, metrics = free_port(), free_port()
    log_path = tmp_path / "operator.log"
    with operator_process(emulated, log_path, "--health-port", str(health), "--metrics-port", str(metrics)) as process:
        deadline = time.monotonic() + 30
        while get(f"http://127.0.0.1:{health}/healthz")[0] != 200:
            assert process.poll() is None, log_path.read_text()
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


def test_run_rejects_bad_configuration_naming_the_variable(emulated: ThreadedCluster) -> None:
    env = {**os.environ, "KUBECONFIG": emulated.kubeconfig, "MODELDEPLOY_WRITE_FAILURE_SECONDS": "soon"}
    result = subprocess.run(
        [sys.executable, "-m", "modeldeploy.cli", "run"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "MODELDEPLOY_WRITE_FAILURE_SECONDS" in result.stderr


def test_a_watch_that_fails_stops_the_operator_with_an_error_for_the_kubelet_to_restart(
    emulated: ThreadedCluster, tmp_path: Any
) -> None:
    """A watch stream of Deployments ends with an ERROR event (the API server's storage failed under the watch).
    kopf does not retry that: it stops the watch, and with it the operator, which must then exit with a failure
    status (for the kubelet to restart it) and say so in its last line, not run on deaf to Deployment changes."""
    log_path = tmp_path / "operator.log"
    with operator_process(emulated, log_path, "--health-port", "0", "--metrics-port", "0") as process:
        emulated.create(MD, IRIS)
        emulated.wait_for(lambda: ready(emulated), message="iris Ready")
        assert process.poll() is None, log_path.read_text()
        failure = ApiError(500, "InternalError", "etcdserver: no leader")
        emulated.call(emulated.cluster.emulator.cut_watches, DEPLOYMENTS, failure)
        code = process.wait(30)
    text = log_path.read_text()
    assert code == 1, text
    last = text.strip().splitlines()[-1]
    stopped = "The operator stopped on an error it does not recover from in-process (WatchingError: "
    assert last.startswith(stopped), last
    assert "etcdserver: no leader" in last and "resumes every rollout from its status" in last, last


def writes_unavailable(record: RequestRecord, _: bytes) -> Fault | None:
    return UNAVAILABLE if record.is_write else None


def test_the_log_level_leaves_out_what_is_below_it(emulated: ThreadedCluster, tmp_path: Any) -> None:
    """INFO (the default) logs the start; WARNING leaves it out and still logs a warning (a failed reconcile)."""
    outputs = {}
    for level in ("INFO", "WARNING"):
        health, log_path = free_port(), tmp_path / f"{level}.log"
        with operator_process(emulated, log_path, "--health-port", str(health), "--metrics-port", "0",
                              "--log-level", level):  # fmt: skip
            emulated.wait_for(lambda: get(f"http://127.0.0.1:{health}/healthz")[0] == 200, timeout=30)  # noqa: B023
            emulated.call(emulated.cluster.emulator.set_faults, writes_unavailable)
            name = f"iris-{level.lower()}"
            emulated.create(MD, {**IRIS, "metadata": {"name": name, "namespace": "ml"}})
            emulated.wait_for(lambda: "Reconcile of ml/" in log_path.read_text(), timeout=30)  # noqa: B023
            emulated.call(emulated.cluster.emulator.set_faults, None)
        outputs[level] = log_path.read_text()
    assert "Operator started" in outputs["INFO"]
    assert "Operator started" not in outputs["WARNING"], outputs["WARNING"]
    assert "Reconcile of ml/iris-warning failed" in outputs["WARNING"]
