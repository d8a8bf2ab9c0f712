"""Operator benchmark: N ModelDeployments created at once against the emulated API server.

The emulated cluster (API server + simulated Deployment/Pod controller) runs in this process; the operator runs
as its own process (`modeldeploy run`), so its peak RSS is its own. Prints: time until every object is Ready,
the operator's CPU time until then, API requests per object (reads and writes, Events included), writes during
no-op resyncs, the operator's peak RSS.

    python benchmarks/bench_operator.py [--count 1000] [--resync 15]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from modeldeploy.demo import admission
from modeldeploy.schema import crd_manifest
from modeldeploy.sim.cluster import run_cluster

MD = "modeldeploy.io/v1alpha1/modeldeployments"
READS = {"get", "list", "watch"}
WRITES = {"create", "update", "patch", "delete", "deletecollection"}


def model_deployment(i: int) -> dict[str, Any]:
    return {
        "apiVersion": "modeldeploy.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": f"model-{i:04d}", "namespace": "bench"},
        "spec": {
            "model": {"version": "1", "storageUri": f"s3://models/m{i}/model.pt", "format": "TorchScript"},
            "replicas": 1 + i % 3,
        },
    }


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def current_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def ready(obj: dict[str, Any]) -> bool:
    st = obj.get("status") or {}
    return st.get("phase") == "Ready" and st.get("observedGeneration") == obj["metadata"].get("generation")


async def main(count: int, resync: float) -> int:
    async with run_cluster(
        crds=[crd_manifest()], admission={MD: admission}, ready_delay=0.5, tick=0.2,
        namespaces=("default", "bench"),
    ) as cluster:
        env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig_path)}
        log = tempfile.NamedTemporaryFile("w+", prefix="modeldeploy-bench-", suffix=".log")  # noqa: SIM115
        operator = subprocess.Popen(  # noqa: ASYNC220  (a long-lived child, not awaited)
            [sys.executable, "-m", "modeldeploy.cli", "run", "--health-port", "0", "--metrics-port", "0",
             "--resync-period", str(resync)],
            env=env, stdout=log, stderr=subprocess.STDOUT, text=True,
        )
        try:
            # Wait for the operator to be watching (its first list of ModelDeployments).
            deadline = time.monotonic() + 60
            while not any(r.resource == "modeldeployments" and r.verb in ("list", "watch") for r in cluster.requests):
                if operator.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    print(log.read()[-5000:], file=sys.stderr)
                    raise SystemExit("the operator did not start")
                await asyncio.sleep(0.1)
            await asyncio.sleep(1.0)
            start_index = len(cluster.requests)
            cpu_before = cpu_seconds(operator.pid)
            started = time.monotonic()
            for i in range(count):
                cluster.emulator.create_object(MD, model_deployment(i), manager="bench")
            created = time.monotonic() - started
            last_report = 0.0
            while True:
                objs = cluster.emulator.list_objects(MD, "bench")
                done = sum(1 for o in objs if ready(o))
                if done == count:
                    break
                if time.monotonic() - last_report > 5:
                    last_report = time.monotonic()
                    print(f"  {time.monotonic() - started:5.1f} s: {done}/{count} Ready, operator RSS "
                          f"{current_rss_mb(operator.pid):.0f} MB", flush=True)
                if time.monotonic() - started > 600:
                    raise SystemExit(f"only {done}/{count} converged in 600 s")
                await asyncio.sleep(0.25)
            converged = time.monotonic() - started
            cpu = cpu_seconds(operator.pid) - cpu_before
            await asyncio.sleep(2.0)  # late events of the last objects
            during = cluster.requests[start_index:]
            reads = [r for r in during if r.verb in READS and r.verb != "watch"]
            writes = [r for r in during if r.verb in WRITES]

            quiet_start = len(cluster.requests)
            await asyncio.sleep(resync * 2 + 5)
            quiet_writes = [r for r in cluster.requests[quiet_start:] if r.verb in WRITES]
            rss = peak_rss_mb(operator.pid)
        finally:
            operator.terminate()
            try:
                operator.wait(30)
            except subprocess.TimeoutExpired:
                operator.kill()

    by_kind = Counter(f"{r.verb} {r.resource}{'/' + r.subresource if r.subresource else ''}" for r in writes)
    print(f"ModelDeployments:              {count} (created in {created:.2f} s)")
    print(f"Time until all Ready:          {converged:.1f} s   (target < 60 s)")
    print(f"Operator CPU until all Ready:  {cpu:.1f} s   (of 2 cores shared with the emulated cluster)")
    print(f"API reads per object:          {len(reads) / count:.2f}  (watch streams not counted)")
    print(f"API writes per object:         {len(writes) / count:.2f}  (target <= 8, Events included)")
    for what, n in sorted(by_kind.items()):
        print(f"    {what:<40} {n / count:.2f}")
    print(f"Writes during no-op resyncs:   {len(quiet_writes)}  ({resync * 2 + 5:.0f} s, resync every {resync:.0f} s; "
          "target 0)")
    print(f"Operator peak RSS:             {rss:.0f} MB  (target < 200 MB)")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--resync", type=float, default=15.0)
    args = parser.parse_args()
    sys.exit(asyncio.run(main(args.count, args.resync)))
