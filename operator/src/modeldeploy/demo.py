"""``modeldeploy demo``: the real operator reconciling the examples on the embedded emulated cluster.

It starts the emulated API server with its simulated Deployment controller, runs the operator in the same process,
applies the ModelDeployments of ``examples/``, and prints the objects the operator creates and each status change
as they converge. Then it rolls out a new model version, and shows what a bad update does (the API server rejects
what the schema forbids; the operator reports what only it can check, and the last good revision keeps serving).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from modeldeploy.conditions import find
from modeldeploy.kube import ApiError, KubeClient
from modeldeploy.kube.resources import AUTOSCALERS, DEPLOYMENTS, EVENTS, MODEL_DEPLOYMENTS, SERVICES
from modeldeploy.runner import OperatorProcess, serve
from modeldeploy.schema import crd_manifest, validate_object
from modeldeploy.sim.cluster import run_cluster

MD_RESOURCE = "modeldeploy.io/v1alpha1/modeldeployments"


def default_examples() -> list[Path]:
    """The example ModelDeployments of the source tree (``examples/*.yaml``)."""
    for parent in Path(__file__).resolve().parents:
        candidate = parent / "examples"
        if candidate.is_dir() and (parent / "crds").is_dir():
            return sorted(candidate.glob("*.yaml"))
    return []


def admission(new: dict[str, Any], old: dict[str, Any] | None) -> list[str]:
    """What the API server checks for ModelDeployments: the CRD's OpenAPI schema and CEL rules.

    Like the API server's validation ratcheting, an update that leaves the spec as it was (a status write, an
    annotation) is not re-checked.
    """
    if old is not None and old.get("spec") == new.get("spec"):
        return []
    return [str(error) for error in validate_object(new)]


def _say(text: str = "") -> None:
    print(text, flush=True)


def _summary(md: Mapping[str, Any]) -> str:
    status = md.get("status") or {}
    ready = find(status.get("conditions") or [], "Ready") or {}
    return (
        f"{md['metadata']['namespace']}/{md['metadata']['name']}: phase={status.get('phase', '-')} "
        f"ready={status.get('readyReplicas', 0)}/{status.get('desiredReplicas', '-')} "
        f"revision={status.get('stableRevision') or '-'} "
        f"Ready={ready.get('status', '-')}({ready.get('reason', '-')})"
    )


async def _watch_until(kube: KubeClient, done: Any, seconds: float, seen: dict[str, str]) -> bool:
    """Print every status change until ``done(mds)`` holds or ``seconds`` pass."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while loop.time() < deadline:
        mds = await kube.list_objects(MODEL_DEPLOYMENTS)
        for md in mds:
            line = _summary(md)
            key = f"{md['metadata']['namespace']}/{md['metadata']['name']}"
            if seen.get(key) != line:
                seen[key] = line
                _say(f"  status  {line}")
        if done(mds):
            return True
        await asyncio.sleep(0.2)
    return False


def _all_ready(mds: Sequence[Mapping[str, Any]]) -> bool:
    return bool(mds) and all((md.get("status") or {}).get("phase") == "Ready" for md in mds)


async def _print_children(kube: KubeClient) -> None:
    selector = "app.kubernetes.io/managed-by=modeldeploy"
    for resource in (DEPLOYMENTS, SERVICES, AUTOSCALERS):
        for obj in await kube.list_objects(resource, label_selector=selector):
            meta = obj["metadata"]
            owner = (meta.get("ownerReferences") or [{}])[0].get("name", "-")
            detail = ""
            if resource is DEPLOYMENTS:
                st = obj.get("status") or {}
                container = obj["spec"]["template"]["spec"]["containers"][0]
                gpus = container.get("resources", {}).get("limits", {}).get("nvidia.com/gpu", 0)
                detail = (
                    f"replicas={obj['spec'].get('replicas', 'HPA')} ready={st.get('readyReplicas', 0)} "
                    f"image={container['image']} gpu={gpus}"
                )
            elif resource is SERVICES:
                detail = f"type={obj['spec'].get('type')} ports={[p['port'] for p in obj['spec']['ports']]}"
            else:
                spec = obj["spec"]
                target = spec["scaleTargetRef"]["name"]
                detail = f"min={spec.get('minReplicas')} max={spec.get('maxReplicas')} -> {target}"
            _say(f"  {resource.kind:<24} {meta['namespace']}/{meta['name']:<28} owner={owner} {detail}")


def _load(files: Sequence[str | Path]) -> list[dict[str, Any]]:
    documents: list[dict[str, Any]] = []
    for path in files:
        documents.extend(d for d in yaml.safe_load_all(Path(path).read_text(encoding="utf-8")) if d)
    return documents


async def _demo(documents: list[dict[str, Any]]) -> int:
    if not documents:
        print("error: no ModelDeployment documents to apply (is this a source checkout with examples/?)",
              file=sys.stderr)
        return 2

    namespaces = sorted({d.get("metadata", {}).get("namespace") or "default" for d in documents} | {"default"})
    async with run_cluster(
        crds=[crd_manifest()], admission={MD_RESOURCE: admission}, ready_delay=1.0, namespaces=namespaces
    ) as cluster:
        os.environ["KUBECONFIG"] = str(cluster.kubeconfig_path)
        _say(f"Emulated cluster at {cluster.url}; starting the operator.")
        stop, ready = asyncio.Event(), asyncio.Event()
        operator = asyncio.create_task(
            serve(OperatorProcess(health_port=None, metrics_port=None, resync_period=30.0), stop, ready)
        )
        kube = KubeClient.connect(cluster.kubeconfig_path, field_manager="kubectl")
        try:
            await asyncio.wait_for(ready.wait(), timeout=30)
            seen: dict[str, str] = {}

            _say("\n== 1. kubectl apply -f examples/")
            for doc in documents:
                doc.setdefault("metadata", {}).setdefault("namespace", "default")
                await kube.create_object(doc)
                _say(f"  created ModelDeployment {doc['metadata']['namespace']}/{doc['metadata']['name']}")
            converged = await _watch_until(kube, _all_ready, 60, seen)
            _say("\n== Objects the operator created")
            await _print_children(kube)
            if not converged:
                _say("error: the examples did not converge in 60 s")
                return 1

            first = documents[0]
            ns, name = first["metadata"]["namespace"], first["metadata"]["name"]
            _say(f"\n== 2. Roll out a new model version of {ns}/{name}")
            model = dict(first["spec"]["model"])
            model["version"] = f"{model['version']}-next"
            await kube.patch_object(MODEL_DEPLOYMENTS, ns, name, {"spec": {"model": model}})

            def upgraded(mds: Sequence[Mapping[str, Any]]) -> bool:
                md = next(m for m in mds if m["metadata"]["name"] == name)
                status = md.get("status") or {}
                return status.get("modelVersion") == model["version"] and status.get("phase") == "Ready"

            if not await _watch_until(kube, upgraded, 60, seen):
                _say("error: the new version did not become ready in 60 s")
                return 1
            await _print_children(kube)

            _say(f"\n== 3. A bad update of {ns}/{name}: the API server rejects what the schema forbids")
            try:
                await kube.patch_object(MODEL_DEPLOYMENTS, ns, name, {"spec": {"model": {"storageUri": "ftp://x/m"}}})
            except ApiError as error:
                _say(f"  rejected: {error.code} {error.reason}: {error.message[:300]}")

            _say("\n== Events")
            for event in await kube.list_objects(EVENTS):
                involved = event.get("involvedObject", {})
                what = f"{event.get('type'):<8} {event.get('reason'):<24} {involved.get('name')}"
                _say(f"  {what}: {event.get('message')}")
            writes = [r for r in cluster.requests if r.verb in ("create", "update", "patch", "delete")]
            _say(f"\nThe operator and this demo made {len(cluster.requests)} API requests ({len(writes)} writes).")
            return 0
        finally:
            stop.set()
            await asyncio.gather(operator, return_exceptions=True)
            await kube.close()


def _predict(url: str, model: str, features: int) -> str:
    """One OIP v2 inference through the Service proxy, as a client would send it."""
    body = json.dumps(
        {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, features], "data": [0.5] * features}]}
    ).encode()
    request = urllib.request.Request(
        f"{url}/v2/models/{model}/infer", data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # Loopback only: the harness's Service proxy.
        answer = json.loads(response.read())
        served_by = response.headers.get("X-Sim-Revision", "?")
    output = answer["outputs"][0]
    values = f"{output['name']} {output['datatype']} {output['shape']} = {output['data']}"
    return f"{values} (served by revision {served_by})"


def run_progressive_demo() -> int:
    """Scenarios (a), (b) and (j) with real modelserve processes behind a Service proxy, and (i) behind an
    HTTPRoute proxy, under continuous load."""
    from modeldeploy.sim import scenarios

    with tempfile.TemporaryDirectory(prefix="modeldeploy-demo-") as tmp:
        root = Path(tmp)
        _say("\n== 4. Progressive delivery with real model servers (pods are modelserve processes on loopback)")
        _say("  Building demo models v1, v2, v3 (fails on some inputs) and v5 (answers some classes wrongly)...")
        models = scenarios.build_models(root / "models")

        _say("\n== 4a. Canary v1 -> v2 under continuous load: setWeight 50, pause, analysis, promote")
        with scenarios.LocalHarness(root / "a") as harness:
            result = scenarios.canary_promotes(harness, models)
            result.print()
            _say(f"  A prediction through Service {scenarios.NAME}: "
                 f"{_predict(harness.proxy(), scenarios.NAME, scenarios.IN_FEATURES)}")
            if result.final_phase != "Completed" or result.load.failures():
                _say("error: the canary did not complete without failed requests")
                return 1

        _say("\n== 4b. Canary v2 -> v3, where v3 fails on 30% of the inputs: analysis fails, automatic rollback")
        with scenarios.LocalHarness(root / "b") as harness:
            result = scenarios.failing_canary_rolls_back(harness, models)
            result.print()
            if result.final_phase != "RolledBack" or result.final_version != "2":
                _say("error: the failing canary was not rolled back")
                return 1
            failed_live = len(result.load.failures())

        _say("\n== 4c. The same v3 shadowed first (Gateway API): the gateway copies every request to it and drops its")
        _say("   answers (setMirror 100), the analysis fails on the copies, and no client ever gets a v3 answer")
        with scenarios.LocalHarness(root / "c") as harness:
            result = scenarios.shadow_canary_rolls_back(harness, models)
            result.print()
            if result.final_phase != "RolledBack" or result.load.failures():
                _say("error: the shadowed canary was not rolled back without failed requests")
                return 1
        _say(f"  Client requests failed: {failed_live} with the live canary (4b), {len(result.load.failures())} "
             "with the shadowed one (4c).")

        _say("\n== 4d. Golden requests before any client: v5 exchanges classes 0 and 1 (a label-map bug). It never")
        _say("   fails and is as fast, so error and latency thresholds would pass it; golden requests do not")
        with scenarios.LocalHarness(root / "d") as harness:
            result = scenarios.golden_gate(harness, models)
            result.print()
            if (result.final_phase != "RolledBack" or result.load.failures()
                    or result.notes["client_requests_to_v5"] != 0):  # fmt: skip
                _say("error: the version with wrong answers was not stopped before any client reached it")
                return 1
        _say(f"  v5 would have answered {result.notes['v5_would_answer_wrongly']}; clients that got a v5 answer: "
             f"{result.notes['client_requests_to_v5']}.")
    return 0


def run_demo(files: Sequence[str | Path] | None = None, *, progressive: bool = True) -> int:
    """Run the demo; returns the exit status."""
    status = asyncio.run(_demo(_load(list(files) if files else default_examples())))
    if status == 0 and progressive:
        status = run_progressive_demo()
    return status
