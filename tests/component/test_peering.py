"""High availability: two `modeldeploy run` processes in one kopf peering, against the emulated API server.

A rollout is halfway through a timed pause when a replica with a higher priority starts. kopf pauses the first
one's watch streams at once; its own timers (the pause's end, the resync every second) must stop too, or it goes on
deciding from caches that no longer update and writes over the new replica's decisions. The test watches the
rollout's step only ever move forward and the standby write nothing, while the new replica finishes the rollout.
Then the object is deleted, the new replica stops, and the first resumes: what its caches still hold of the
deleted object must not be written back.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from .conftest import DEPLOYMENTS, MD, ThreadedCluster
from .test_process import free_port, get

pytestmark = pytest.mark.component

PEERINGS = "kopf.dev/v1/clusterkopfpeerings"
LIFETIME = 45
STEPS = [{"setWeight": 20}, {"pause": {"duration": "8s"}}, {"setWeight": 50}, {"pause": {"duration": "3s"}}]


@dataclass
class Operator:
    name: str
    process: subprocess.Popen[bytes]
    metrics_port: int
    log: Path

    def metric(self, name: str) -> float | None:
        code, text = get(f"http://127.0.0.1:{self.metrics_port}/metrics")
        if code != 200:
            return None
        values = [sample.value for family in text_string_to_metric_families(text) for sample in family.samples
                  if sample.name == name]  # fmt: skip
        return sum(values) if values else None

    def writes(self) -> float:
        return self.metric("modeldeploy_api_writes_total") or 0.0


@pytest.fixture
def start(emulated: ThreadedCluster, tmp_path: Path) -> Iterator[Any]:
    started: list[Operator] = []

    def run(name: str, pod_ip: str) -> Operator:
        port = free_port()
        env = {**os.environ, "KUBECONFIG": emulated.kubeconfig, "POD_ID": name, "MODELDEPLOY_POD_IP": pod_ip,
               "MODELDEPLOY_PEERING_NAME": "modeldeploy", "MODELDEPLOY_RESYNC_PERIOD_SECONDS": "1",
               "MODELDEPLOY_PEERING_LIFETIME_SECONDS": str(LIFETIME)}  # fmt: skip
        log = tmp_path / f"{name}.log"
        process = subprocess.Popen(
            [sys.executable, "-m", "modeldeploy.cli", "run", "--health-port", "0", "--metrics-port", str(port)],
            env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
        )  # fmt: skip
        operator = Operator(name, process, port, log)
        started.append(operator)
        emulated.wait_for(lambda: operator.metric("modeldeploy_active") is not None or process.poll() is not None,
                          timeout=30, message=f"{name} exporting its metrics")  # fmt: skip
        assert process.poll() is None, log.read_text()
        return operator

    yield run
    for operator in started:
        operator.process.terminate()
    for operator in started:
        assert operator.process.wait(30) == 0, operator.log.read_text()[-3000:]


def rollout(emulated: ThreadedCluster) -> dict[str, Any]:
    return dict(((emulated.get(MD, "ml", "iris") or {}).get("status") or {}).get("rollout") or {})


def test_an_outranked_replica_stops_writing_and_takes_over_again_without_ghosts(
    emulated: ThreadedCluster, start: Any
) -> None:
    emulated.create(PEERINGS, {"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering",
                               "metadata": {"name": "modeldeploy"}})  # fmt: skip
    first = start("modeldeploy-a", "10.0.0.1")
    keepalive = emulated.wait_for(lambda: ((emulated.get(PEERINGS, None, "modeldeploy") or {}).get("status") or {})
                                  .get("modeldeploy-a"), message="the first replica's keep-alive")  # fmt: skip
    assert keepalive["lifetime"] == LIFETIME, "the chart's peering.lifetimeSeconds reaches kopf"
    emulated.create(MD, {
        "apiVersion": "modeldeploy.io/v1alpha1", "kind": "ModelDeployment",
        "metadata": {"name": "iris", "namespace": "ml"},
        "spec": {"model": {"version": "1", "storageUri": "s3://models/iris/1/model.pt", "format": "TorchScript"},
                 "replicas": 2, "rollout": {"strategy": "Canary", "canary": {"steps": STEPS}}},
    })  # fmt: skip
    emulated.wait_for(lambda: (emulated.get(MD, "ml", "iris") or {}).get("status", {}).get("phase") == "Ready")
    assert first.metric("modeldeploy_active") == 1
    steps: list[tuple[str, int]] = []  # (canary revision, step index), each change, from the update to the end
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            now = rollout(emulated)
            seen = (str(now.get("canaryRevision") or ""), int(now.get("currentStepIndex") or 0))
            if seen[0] and (not steps or steps[-1] != seen):
                steps.append(seen)
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    emulated.patch(MD, "ml", "iris", {"spec": {"model": {"version": "2", "storageUri": "s3://models/iris/2/model.pt"}}})
    emulated.wait_for(lambda: rollout(emulated).get("currentStepIndex") == 1, message="the first replica in the pause")
    canary = rollout(emulated)["canaryRevision"]

    second = start("modeldeploy-b", "10.0.0.2")  # a higher priority: kopf pauses the first replica
    emulated.wait_for(lambda: first.metric("modeldeploy_active") == 0, timeout=10, message="the first standing by")
    standing_by = first.writes()
    assert second.metric("modeldeploy_active") == 1
    assert rollout(emulated).get("currentStepIndex") == 1, "the takeover was meant to happen during the pause"
    emulated.wait_for(lambda: rollout(emulated).get("stableRevision") == canary, timeout=40,
                      message="the new replica finishing the rollout")  # fmt: skip
    done.set()
    sampler.join()
    assert rollout(emulated).get("stableRevision") == canary, rollout(emulated)
    indices = [index for revision, index in steps if revision == canary]
    assert indices == sorted(indices) and indices[0] <= 1 and indices[-1] >= 3, steps  # only ever forward
    assert first.writes() == standing_by, "the standby wrote while another replica was active"
    assert second.writes() > 0
    time.sleep(1.5)  # a few more resyncs of the standby
    assert first.writes() == standing_by
    assert first.process.poll() is None and second.process.poll() is None

    # Deleted while the first stands by; then the second stops and the first takes over again. kopf's caches in
    # the first still hold the object: it must find it gone, not write its children back.
    emulated.delete(MD, "ml", "iris")
    emulated.wait_for(lambda: not emulated.list(DEPLOYMENTS, "ml"), message="the children collected")
    second.process.terminate()
    assert second.process.wait(30) == 0
    emulated.wait_for(lambda: first.metric("modeldeploy_active") == 1, timeout=15, message="the first resuming")
    time.sleep(3)  # resyncs every second
    assert first.writes() == standing_by, "the resumed replica wrote for a deleted object"
    assert emulated.list(DEPLOYMENTS, "ml") == []
