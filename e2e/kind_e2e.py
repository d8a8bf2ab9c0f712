"""End to end on a kind cluster: images, chart, a Canary rollout under load, a rollback with the kubectl plugin.

    python e2e/kind_e2e.py [--keep]        (make e2e)

Needs docker (with a running daemon), kind, kubectl and helm on PATH; without them it prints why and exits 0
with "skipped". It only ever talks to the kube context ``kind-modeldeploy-e2e`` (every kubectl/helm call names
it, and the driver refuses any other), and deletes the cluster at the end unless ``--keep``.

Steps: create the cluster; build the operator image (operator/), the runtime image (runtime-image/) and a
runtime image with the demo models baked in (v1, v2, v3 failing, v5 swapped, at /opt/models); load them into kind;
install charts/modeldeploy; server-side dry-run every file of examples/; deploy v1 with the Canary rollout of
``modeldeploy.sim.scenarios.model_deployment``; roll v2 out while an in-cluster load pod sends requests to the
Service (scenario a: expect no failed request); then ``kubectl modeldeploy rollback`` to v1; then turn
autoscaling on and check that the cluster's own HorizontalPodAutoscaler reads and writes the ModelDeployment's
scale subresource (kind has no metrics-server, so the HPA acts on its bounds alone: ``kubectl scale`` below
``minReplicas`` and the HPA scales it back); then roll out a version whose model is not there and check that the
real kubelet's termination message reaches the rejection reason (scenario e); then roll out v5, whose answers are
wrong but never fail, and check that golden requests reject it before any traffic (scenario j).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from modeldeploy.sim import polling
from modeldeploy.sim.scenarios import golden_requests, model_deployment

ROOT = Path(__file__).resolve().parent.parent
CLUSTER = "modeldeploy-e2e"
CONTEXT = f"kind-{CLUSTER}"
CONTEXT_PREFIX = "kind-modeldeploy-e2e"
NAMESPACE = "ml"
OPERATOR_IMAGE = "modeldeploy/operator:e2e"
RUNTIME_IMAGE = "modeldeploy/modelserve:e2e"
CPU_TORCH_INDEX = "https://download.pytorch.org/whl/cpu"
MODELS_IMAGE = "modeldeploy/modelserve-models:e2e"
TOOLS = ("docker", "kind", "kubectl", "helm")
IN_FEATURES = 256  # the demo model of ``python -m modelserve.testing``

LOAD_SCRIPT = textwrap.dedent(
    """
    import json, random, sys, time, urllib.error, urllib.request
    url, seconds, poison = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
    statuses = {}
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        data = [random.random() for _ in range(FEATURES)]
        if random.random() < poison:
            data[0] = 1000.0
        body = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, len(data)], "data": data}]})
        request = urllib.request.Request(url, body.encode(), {"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                code = response.status
        except urllib.error.HTTPError as error:
            code = error.code
        except Exception:
            code = 0
        statuses[str(code)] = statuses.get(str(code), 0) + 1
    print("LOAD-RESULT " + json.dumps(statuses), flush=True)
    """
).replace("FEATURES", str(IN_FEATURES))


class E2EError(RuntimeError):
    pass


def missing_tools() -> str | None:
    """Why the kind end-to-end run cannot happen here, or None when it can."""
    absent = [tool for tool in TOOLS if shutil.which(tool) is None]
    if absent:
        return f"{', '.join(absent)} not found on PATH"
    info = subprocess.run(["docker", "info"], capture_output=True, text=True, check=False)
    if info.returncode != 0:
        return f"docker has no working daemon (docker info: {(info.stderr or info.stdout).strip()[:200]})"
    return None


def check_context(context: str) -> None:
    """Refuse any kube context that is not this test's own kind cluster."""
    if not context.startswith(CONTEXT_PREFIX):
        raise E2EError(f"refusing to run against kube context {context!r}: only {CONTEXT_PREFIX}* is allowed")


def run(argv: Sequence[str], *, input_text: str | None = None, check: bool = True) -> str:
    print("+", " ".join(argv), flush=True)
    done = subprocess.run(list(argv), input=input_text, capture_output=True, text=True, check=False)
    if check and done.returncode != 0:
        raise E2EError(f"{argv[0]} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return done.stdout


def kubectl(*args: str, **kwargs: Any) -> str:
    check_context(CONTEXT)
    return run(["kubectl", "--context", CONTEXT, *args], **kwargs)


def wait_for(check: Callable[[], Any], timeout: float, what: str) -> Any:
    return polling.wait_for(check, timeout, 2.0, lambda: E2EError(f"not reached within {timeout:.0f}s: {what}"))


def md_status() -> dict[str, Any]:
    out = kubectl("get", "modeldeployment", "iris", "-n", NAMESPACE, "-o", "json", check=False)
    try:
        return dict(json.loads(out).get("status") or {})
    except json.JSONDecodeError:
        return {}


def apply_md(version: str, model_dir: str) -> None:
    body = model_deployment(version, f"file://{model_dir}", pause="10s",
                            analysis={"maxErrorRatio": 0.01}, replicas=2)  # fmt: skip
    body["spec"]["rollout"]["analysis"].update({"interval": "10s", "count": 2, "minRequests": 20})
    apply_body(body)


def apply_body(body: dict[str, Any]) -> None:
    """Apply a ModelDeployment that runs the models image (the demo models at /opt/models)."""
    body["spec"]["runtime"]["image"] = MODELS_IMAGE
    body["spec"]["runtime"]["imagePullPolicy"] = "IfNotPresent"
    kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", input_text=json.dumps(body))


def settled(version: str) -> bool:
    st = md_status()
    phase = (st.get("rollout") or {}).get("phase")
    return bool(st.get("phase") == "Ready" and st.get("modelVersion") == version and phase in ("Idle", "Completed"))


def start_load(name: str, seconds: int, poison: float = 0.0) -> None:
    url = f"http://iris.{NAMESPACE}.svc.cluster.local/v2/models/iris/infer"
    kubectl(
        "run",
        name,
        "-n",
        NAMESPACE,
        "--image",
        MODELS_IMAGE,
        "--image-pull-policy",
        "IfNotPresent",
        "--restart",
        "Never",
        "--command",
        "--",
        "python",
        "-c",
        LOAD_SCRIPT,
        url,
        str(seconds),
        str(poison),
    )
    wait_for(lambda: "Running" in kubectl("get", "pod", name, "-n", NAMESPACE, "-o", "jsonpath={.status.phase}",
                                          check=False), 120, f"load pod {name} running")  # fmt: skip


def load_result(name: str, timeout: float) -> dict[str, int]:
    wait_for(lambda: kubectl("get", "pod", name, "-n", NAMESPACE, "-o", "jsonpath={.status.phase}", check=False)
             in ("Succeeded", "Failed"), timeout, f"load pod {name} done")  # fmt: skip
    for line in kubectl("logs", name, "-n", NAMESPACE).splitlines():
        if line.startswith("LOAD-RESULT "):
            return {k: int(v) for k, v in json.loads(line.removeprefix("LOAD-RESULT ")).items()}
    raise E2EError(f"load pod {name} printed no result")


def build_images(workdir: Path) -> None:
    run(["docker", "build", "-t", OPERATOR_IMAGE, str(ROOT / "operator")])
    # kind has no GPUs: torch's CPU build keeps the image at about 1.5 GB instead of 5.5 (docs/runtime.md, "Image").
    run(["docker", "build", "--build-arg", f"TORCH_INDEX_URL={CPU_TORCH_INDEX}", "-t", RUNTIME_IMAGE,
         str(ROOT / "runtime-image")])  # fmt: skip
    dockerfile = workdir / "Dockerfile"
    dockerfile.write_text(
        f"FROM {RUNTIME_IMAGE}\n"
        "USER root\n"
        "RUN python -m modelserve.testing /opt/models/v1 --kind torchscript"
        " && python -m modelserve.testing /opt/models/v2 --kind torchscript"
        " && python -m modelserve.testing /opt/models/v3 --kind failing"
        " && python -m modelserve.testing /opt/models/v5 --kind swapped"
        " && chown -R 1000:1000 /opt/models\n"
        "USER 1000:1000\n",
        encoding="utf-8",
    )
    run(["docker", "build", "-t", MODELS_IMAGE, str(workdir)])
    for image in (OPERATOR_IMAGE, RUNTIME_IMAGE, MODELS_IMAGE):
        run(["kind", "load", "docker-image", image, "--name", CLUSTER])


def md_replicas() -> int | None:
    out = kubectl("get", "modeldeployment", "iris", "-n", NAMESPACE, "-o", "jsonpath={.spec.replicas}", check=False)
    return int(out) if out.strip().isdigit() else None


def stable_replicas() -> int | None:
    """spec.replicas of the stable revision's Deployment (``NAME-REV``)."""
    name = f"iris-{md_status().get('stableRevision')}"
    out = kubectl("get", "deployment", name, "-n", NAMESPACE, "-o", "jsonpath={.spec.replicas}", check=False)
    return int(out) if out.strip().isdigit() else None


def autoscaled_by_the_cluster() -> None:
    """The real HPA controller targets the ModelDeployment: the operator gives spec.replicas a value when
    autoscaling is turned on without one, and the HPA enforces its bounds through the scale subresource."""
    patch = {"spec": {"replicas": None, "autoscaling": {"minReplicas": 3, "maxReplicas": 4}}}
    kubectl("patch", "modeldeployment", "iris", "-n", NAMESPACE, "--type", "merge", "-p", json.dumps(patch))
    wait_for(lambda: md_replicas() == 3, 120, "the operator wrote spec.replicas (2 running, bounded to 3)")
    wait_for(lambda: stable_replicas() == 3, 120, "the stable's Deployment at 3")
    target = kubectl("get", "hpa", "iris", "-n", NAMESPACE, "-o", "jsonpath={.spec.scaleTargetRef.kind}")
    if target != "ModelDeployment":
        raise E2EError(f"the HPA targets {target!r}, not the ModelDeployment")
    kubectl("scale", "modeldeployment", "iris", "-n", NAMESPACE, "--replicas=1")
    # The HPA syncs every 15 s; "below minReplicas" needs no metrics.
    wait_for(lambda: md_replicas() == 3, 180, "the HPA scaled the ModelDeployment back to minReplicas")
    events = kubectl("get", "events", "-n", NAMESPACE, "--field-selector",
                     "involvedObject.kind=HorizontalPodAutoscaler,reason=SuccessfulRescale", "-o", "name")  # fmt: skip
    if not events.strip():
        raise E2EError("no SuccessfulRescale event from the HPA")
    if stable_replicas() != 3:
        raise E2EError(f"the stable's Deployment runs {stable_replicas()} pods, not the HPA's 3")
    print("scenario c on kind: the HorizontalPodAutoscaler scales the ModelDeployment")


def disruption_budget_on_the_cluster() -> None:
    """The cluster's disruption controller counts the model's pods through the PodDisruptionBudget the operator
    keeps: every revision's pods, one eviction allowed at a time (maxUnavailable 1, the default)."""

    def budget() -> dict[str, Any]:
        out = kubectl("get", "poddisruptionbudget", "iris", "-n", NAMESPACE, "-o", "json", check=False)
        return dict(json.loads(out).get("status") or {}) if out.strip().startswith("{") else {}

    desired = md_status().get("desiredReplicas")
    wait_for(lambda: budget().get("expectedPods") == desired and budget().get("currentHealthy") == desired, 120,
             f"the PodDisruptionBudget counts the {desired} pods")  # fmt: skip
    if budget().get("disruptionsAllowed") != 1:
        raise E2EError(f"the PodDisruptionBudget allows {budget().get('disruptionsAllowed')} evictions, not 1")
    print(f"scenario d on kind: the PodDisruptionBudget covers the model's {desired} pods, 1 eviction at a time")


def rejection(stable: object, reason: str) -> dict[str, Any]:
    """The rejected revision other than ``stable`` with ``reason``, or {} while there is none."""
    found = [r for r in (md_status().get("rollout") or {}).get("rejectedRevisions") or []
             if r.get("revision") != stable and r.get("reason") == reason]  # fmt: skip
    return found[0] if found else {}


def rejection_message(stable: object, reason: str, what: str) -> str:
    """Wait for the new revision to be rejected with ``reason``; its message. The stable must serve on."""
    wait_for(lambda: rejection(stable, reason), 300, what)
    message = str(rejection(stable, reason).get("message"))
    if md_status().get("stableRevision") != stable:
        raise E2EError("the stable revision changed after the rejection")
    return message


def a_model_that_does_not_load() -> None:
    """A version whose model is not there: the real kubelet restarts the server, which exits with the load error
    in its termination message; the canary is rejected for CrashLoop, in those words, and the stable serves on."""
    stable = md_status().get("stableRevision")
    apply_md("4", "/opt/models/absent")

    message = rejection_message(stable, "CrashLoop", "the model that does not load rejected for CrashLoop")
    if "exited with code" not in message or "Cannot load model iris" not in message:
        raise E2EError(f"the rejection does not say why in the server's words: {message!r}")
    print(f"scenario e on kind: the canary that cannot load was rejected: {message}")


def wrong_answers_stopped_by_golden_requests(workdir: Path) -> None:
    """Scenario j on the cluster: v5 answers classes 0 and 1 the wrong way round but never fails. Golden requests
    (computed here from a local build of v1, the same builder and seed as the image's) as the first canary step
    reject it on the one pod the step gives it, before any traffic, with the wrong answers in the message."""
    from modelserve.testing import build_torchscript

    reference = build_torchscript(workdir / "golden-reference")
    golden = golden_requests(reference.parent, features=256)
    stable = md_status().get("stableRevision")
    steps: list[dict[str, Any]] = [{"analysis": {}}, {"setWeight": 50}, {"pause": {"duration": "10s"}}]
    criteria = {"goldenRequests": golden, "count": 1, "interval": "5s", "failureLimit": 0}
    body = model_deployment("5", "file:///opt/models/v5", steps=steps, analysis=criteria, replicas=2)
    apply_body(body)
    message = rejection_message(stable, "AnalysisFailed", "the version with wrong answers rejected")
    if "golden requests" not in message or "expected" not in message:
        raise E2EError(f"the rejection does not name the wrong answers: {message!r}")
    print(f"scenario j on kind: the version with wrong answers was rejected before any traffic: {message}")


def scenario(workdir: Path) -> None:
    build_images(workdir)
    check_context(CONTEXT)
    run(["helm", "--kube-context", CONTEXT, "install", "modeldeploy", str(ROOT / "charts" / "modeldeploy"),
         "-n", "modeldeploy-system", "--create-namespace", "--wait", "--timeout", "5m",
         "--set", "image.repository=modeldeploy/operator", "--set", "image.tag=e2e",
         "--set", f"runtimeImage={RUNTIME_IMAGE}"])  # fmt: skip
    kubectl("create", "namespace", NAMESPACE)
    for example in sorted((ROOT / "examples").glob("*.yaml")):
        kubectl("apply", "--dry-run=server", "-n", NAMESPACE, "-f", str(example))

    apply_md("1", "/opt/models/v1")
    wait_for(lambda: settled("1"), 300, "v1 Ready")
    disruption_budget_on_the_cluster()
    started = time.monotonic()
    start_load("load-canary", seconds=150)
    apply_md("2", "/opt/models/v2")
    wait_for(lambda: settled("2"), 300, "v2 promoted")
    result = load_result("load-canary", 240)
    failed = sum(n for code, n in result.items() if code != "200")
    print(f"scenario a on kind: v1 -> v2 in {time.monotonic() - started:.0f}s; load {result}; {failed} failed")
    if failed:
        raise E2EError(f"{failed} requests failed during the canary rollout: {result}")

    history = md_status().get("history") or []
    first = next(h for h in history if h.get("modelVersion") == "1")
    run(["kubectl-modeldeploy", "--context", CONTEXT, "-n", NAMESPACE, "rollback", "iris",
         "--to-revision", str(first["number"])])  # fmt: skip
    wait_for(lambda: md_status().get("stableRevision") == first["revision"], 300, "rolled back to v1")
    print(run(["kubectl-modeldeploy", "--context", CONTEXT, "-n", NAMESPACE, "status", "iris"]))
    autoscaled_by_the_cluster()
    a_model_that_does_not_load()
    wrong_answers_stopped_by_golden_requests(workdir)
    print("kind e2e: passed")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", action="store_true", help="keep the kind cluster afterwards")
    args = parser.parse_args(argv)
    reason = missing_tools()
    if reason is not None:
        print(f"kind e2e skipped: {reason}")
        return 0
    existing = run(["kind", "get", "clusters"]).split()
    if CLUSTER not in existing:
        run(["kind", "create", "cluster", "--name", CLUSTER, "--wait", "180s"])
    try:
        with tempfile.TemporaryDirectory(prefix="modeldeploy-e2e-") as tmp:
            scenario(Path(tmp))
    except E2EError as error:
        print(f"kind e2e FAILED: {error}", file=sys.stderr)
        return 1
    finally:
        if not args.keep:
            run(["kind", "delete", "cluster", "--name", CLUSTER], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
