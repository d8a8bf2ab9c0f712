"""Progressive-delivery scenarios against real ``modelserve`` processes: shared by the local harness and kind.

The local harness (:class:`LocalHarness`) runs the emulated cluster (``BackgroundCluster``) in a thread, a
:class:`~modeldeploy.sim.kubelet.SimKubelet` that runs every pod as a ``modelserve`` process, a
:class:`~modeldeploy.sim.proxy.ServiceProxy` for the Service (or a ``RouteProxy`` for the HTTPRoute), and the
real operator (``kopf.testing.KopfRunner``) in the same process. The operator scrapes the pods' ``/metrics``
through ``Controller.pod_address``; its default resolver is the module function
``modeldeploy.controller.default_pod_address`` (looked up at call time), which the harness points at the
kubelet's loopback addresses while it runs, so no operator code or option exists only for the harness.

Scenarios (each returns a :class:`ScenarioResult` with the numbers to quote):

- :func:`canary_promotes` (a): v1 -> v2 Canary (setWeight 50, pause, analysis, promote) under load.
- :func:`failing_canary_rolls_back` (b): v2 -> v3, a model that fails on some inputs; maxErrorRatio fails.
- :func:`slow_canary_rolls_back` (c): v2 -> v3-slow, a slower model; maxP99LatencyRatio fails.
- :func:`operator_restart_mid_canary` (d): the operator stops while the canary pauses and starts again.
- :func:`golden_gate` (j): golden requests before any traffic: v1 -> v2 (the same answers) passes and is promoted,
  v2 -> v5-swapped (a label-map bug that never fails) is rolled back before any client reaches it.

With ``trafficRouting: GatewayAPI`` the load goes through a :class:`~modeldeploy.sim.proxy.RouteProxy` (the
HTTPRoute ``NAME`` the operator writes), and a :class:`RolloutMonitor` samples the status and the route every
50 ms so each weight's window can be cut out of the load:

- :func:`gateway_canary_promotes` (e): v1 -> v2, setWeight 20, pause, setWeight 50, pause, analysis, promote.
- :func:`gateway_header_routing` (f): v1 -> v2 with a header match; tagged requests reach only the canary.
- :func:`gateway_canary_rolls_back` (g): v2 -> v3 failing through the route; traffic back to the stable first.
- :func:`shadow_canary_rolls_back` (i): v2 -> v3 failing, analysed on mirrored requests only (``setMirror``):
  rolled back before any client got one of its answers.

:func:`model_deployment` builds the manifests (also used by the kind driver, ``e2e/kind_e2e.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import math
import os
import random
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp

from modeldeploy.sim import polling
from modeldeploy.sim.cluster import BackgroundCluster, Cluster
from modeldeploy.sim.httproute import mirror_targets
from modeldeploy.sim.kubelet import SimKubelet
from modeldeploy.sim.proxy import REVISION_HEADER, RouteProxy, ServiceProxy

__all__ = [
    "IN_FEATURES",
    "LoadGenerator",
    "LoadReport",
    "LocalHarness",
    "RolloutMonitor",
    "ScenarioResult",
    "StepShare",
    "build_models",
    "canary_promotes",
    "failing_canary_rolls_back",
    "gateway_canary_promotes",
    "gateway_canary_rolls_back",
    "gateway_header_routing",
    "gateway_routing",
    "golden_gate",
    "golden_requests",
    "model_deployment",
    "operator_restart_mid_canary",
    "shadow_canary_rolls_back",
    "slow_canary_rolls_back",
]

T = TypeVar("T")
MD = "modeldeploy.io/v1alpha1/modeldeployments"
HTTP_ROUTES = "gateway.networking.k8s.io/v1/httproutes"
NAMESPACE = "ml"
NAME = "iris"
IN_FEATURES, HIDDEN, OUT_FEATURES = 16, 64, 4
POISON = 1000.0


# --- models ------------------------------------------------------------------------------------------------


def build_models(root: Path) -> dict[str, Path]:
    """Model directories: ``v1``, ``v2`` (healthy, the same weights), ``v3`` (fails on poisoned rows), ``v3-slow``
    (slow), ``v5-swapped`` (answers classes 0 and 1 the wrong way round), ``unloadable`` (a ``model.pt`` that is not
    a model: the server exits at start).

    The slow model adds ``SLOW_LOOPS`` 256x256 matrix products to the forward pass (about 18 ms on one CPU
    thread, against 0.03 ms for the healthy one), which puts its server-side p99 at several times the stable's
    (the scenario prints the measured ratio). Imports torch (only this function does).
    """
    import torch

    from modelserve import testing

    dirs = {key: root / key for key in ("v1", "v2", "v3", "v3-slow")}
    testing.build_torchscript(dirs["v1"], IN_FEATURES, HIDDEN, OUT_FEATURES)
    testing.build_torchscript(dirs["v2"], IN_FEATURES, HIDDEN, OUT_FEATURES)
    testing.build_torchscript(dirs["v3"], IN_FEATURES, HIDDEN, OUT_FEATURES, failing=True)

    class SlowMLP(testing.DemoMLP):
        def __init__(self) -> None:
            super().__init__(IN_FEATURES, HIDDEN, OUT_FEATURES)
            self.heavy = torch.nn.Linear(256, 256)
            self.loops: int = SLOW_LOOPS

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = torch.ones(x.shape[0], 256)
            for _ in range(self.loops):
                h = torch.tanh(self.heavy(h))
            out: torch.Tensor = self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x))))) + h[:, :4] * 0
            return out

    torch.manual_seed(0)
    dirs["v3-slow"].mkdir(parents=True, exist_ok=True)
    scripted = torch.jit.script(SlowMLP().eval())
    signature = {
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, IN_FEATURES]}],
        "outputs": [{"name": "output", "datatype": "FP32", "shape": [-1, OUT_FEATURES]}],
    }
    extra = {"modelserve.json": json.dumps(signature).encode()}
    torch.jit.save(scripted, str(dirs["v3-slow"] / "model.pt"), _extra_files=extra)
    # A label-map bug (classes 0 and 1 exchanged): it never fails and is as fast as v2, so error and latency
    # thresholds pass it; only its answers are wrong, for about half of the load's inputs.
    dirs["v5-swapped"] = root / "v5-swapped"
    testing.build_torchscript(dirs["v5-swapped"], IN_FEATURES, HIDDEN, OUT_FEATURES, swapped=True)
    dirs["unloadable"] = root / "unloadable"
    dirs["unloadable"].mkdir(parents=True, exist_ok=True)
    (dirs["unloadable"] / "model.pt").write_bytes(b"not a TorchScript archive")
    return dirs


SLOW_LOOPS = 900


def load_like_inputs(count: int, seed: int = 7, features: int = IN_FEATURES) -> list[list[float]]:
    """Rows like the load generator's unpoisoned requests."""
    rng = random.Random(seed)
    return [[rng.random() for _ in range(features)] for _ in range(count)]


def answers(model_dir: Path, rows: list[list[float]]) -> list[list[float]]:
    """The outputs of the TorchScript model in ``model_dir`` for ``rows``, in process (imports torch)."""
    import torch

    model = torch.jit.load(str(model_dir / "model.pt")).eval()  # type: ignore[no-untyped-call]
    with torch.no_grad():
        out: list[list[float]] = model(torch.tensor(rows, dtype=torch.float32)).tolist()
    return out


def _argmax(row: list[float]) -> int:
    return max(range(len(row)), key=row.__getitem__)


def golden_requests(model_dir: Path, count: int = 6, features: int = IN_FEATURES) -> dict[str, Any]:
    """A ``goldenRequests`` block from a known-good model: ``count`` load-like inputs, at least one per class the
    model gives them, each expecting that class (``argmax``); the first also expects every value."""
    rows = load_like_inputs(200, features=features)
    outputs = answers(model_dir, rows)
    classes = [_argmax(row) for row in outputs]
    chosen = [classes.index(c) for c in sorted(set(classes))]
    chosen += [i for i in range(len(rows)) if i not in chosen][: max(0, count - len(chosen))]
    cases: list[dict[str, Any]] = [
        {
            "name": f"row-{i}",
            "inputs": [{"name": "input", "datatype": "FP32", "shape": [1, features], "data": rows[i]}],
            "outputs": [{"name": "output", "argmax": [classes[i]]}],
        }
        for i in chosen[:count]
    ]
    cases[0]["outputs"] = [{"name": "output", "data": outputs[chosen[0]]}]
    return {"cases": cases, "absoluteTolerance": 1e-4, "relativeTolerance": 1e-3}


def model_deployment(
    version: str, storage_uri: str, *, name: str = NAME, namespace: str = NAMESPACE, pause: str = "5s",
    analysis: dict[str, Any] | None = None, replicas: int = 1, extra_env: dict[str, str] | None = None,
    steps: list[dict[str, Any]] | None = None, traffic_routing: dict[str, Any] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """A ModelDeployment of ``version`` with a Canary rollout.

    Default steps: setWeight 50, pause, analysis (then promote); default routing: replica ratio.
    """
    criteria = analysis if analysis is not None else {"maxErrorRatio": 0.05}
    if steps is None:
        steps = [{"setWeight": 50}, {"pause": {"duration": pause}}, {"analysis": {}}]
    env = {"MODELSERVE_TORCH_THREADS": "1", **(extra_env or {})}
    return {
        "apiVersion": "modeldeploy.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "model": {"version": version, "storageUri": storage_uri, "format": "TorchScript"},
            "runtime": {"drainSeconds": 1, "env": [{"name": k, "value": v} for k, v in sorted(env.items())]},
            "replicas": replicas,
            "rollout": {
                "strategy": "Canary",
                "progressDeadlineSeconds": 120,
                "canary": {
                    "steps": steps,
                    "trafficRouting": traffic_routing or {"type": "Replicas"},
                },
                "analysis": {"interval": "2s", "count": 2, "minRequests": 20, "failureLimit": 0, **criteria},
            },
        },
    }


def gateway_routing(header: tuple[str, str] | None = None) -> dict[str, Any]:
    """``trafficRouting`` for Gateway API: the operator creates the HTTPRoute ``NAME``; optional header match."""
    gateway: dict[str, Any] = {"parentRefs": [{"name": "gateway"}]}
    if header is not None:
        gateway["header"] = {"name": header[0], "value": header[1]}
    return {"type": "GatewayAPI", "gatewayAPI": gateway}


# --- load ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Response:
    started: float  # monotonic
    seconds: float
    status: int
    revision: str
    poisoned: bool


@dataclass
class LoadReport:
    """Every answer of a load run, with summaries."""

    responses: list[Response] = field(default_factory=list)

    @property
    def total(self) -> int:
        return len(self.responses)

    def failures(self) -> list[Response]:
        return [r for r in self.responses if r.status != 200]

    def by_revision(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.responses:
            out[r.revision] = out.get(r.revision, 0) + 1
        return out

    def window(self, revision: str) -> tuple[float, float] | None:
        """First and last moment a response came from ``revision``."""
        times = [r.started for r in self.responses if r.revision == revision]
        return (min(times), max(times)) if times else None

    def p99_ms(self, revision: str | None = None) -> float:
        values = sorted(r.seconds for r in self.responses if revision is None or r.revision == revision)
        if not values:
            return float("nan")
        return 1000.0 * values[min(len(values) - 1, math.ceil(0.99 * len(values)) - 1)]

    def summary(self) -> str:
        failures = self.failures()
        statuses: dict[int, int] = {}
        for r in failures:
            statuses[r.status] = statuses.get(r.status, 0) + 1
        per_rev = ", ".join(
            f"{rev or '-'}: {n} req, p99 {self.p99_ms(rev):.1f} ms" for rev, n in sorted(self.by_revision().items())
        )
        return f"{self.total} requests, {len(failures)} failed {statuses or ''}; per revision: {per_rev}"


class LoadGenerator:
    """Sends inference requests to ``url`` from ``concurrency`` workers in a thread of its own until stopped.

    A ``poison`` fraction of the requests carries a first feature of 1000 (the failing demo model raises on it).
    """

    def __init__(
        self, url: str, model: str = NAME, *, concurrency: int = 4, poison: float = 0.0,
        headers: dict[str, str] | None = None,
    ) -> None:  # fmt: skip
        self.url = f"{url}/v2/models/{model}/infer"
        self.concurrency = concurrency
        self.poison = poison
        self.headers = dict(headers or {})
        self.report = LoadReport()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), name="load", daemon=True)

    async def _worker(self, session: aiohttp.ClientSession, seed: int) -> None:
        rng = random.Random(seed)
        while not self._stop.is_set():
            poisoned = rng.random() < self.poison
            data = [rng.random() for _ in range(IN_FEATURES)]
            if poisoned:
                data[0] = POISON
            body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, IN_FEATURES], "data": data}]}
            started = time.monotonic()
            try:
                async with session.post(self.url, json=body, headers=self.headers) as response:
                    await response.read()
                    status, revision = response.status, response.headers.get(REVISION_HEADER, "")
            except (aiohttp.ClientError, TimeoutError):
                status, revision = 599, ""
            self.report.responses.append(Response(started, time.monotonic() - started, status, revision, poisoned))

    async def _run(self) -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
            await asyncio.gather(*(self._worker(session, i) for i in range(self.concurrency)))

    def __enter__(self) -> LoadGenerator:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(60)


@dataclass(frozen=True)
class RolloutSample:
    """One look at ``status.rollout`` and at the HTTPRoute, taken at ``at`` (monotonic)."""

    at: float
    phase: str
    step: int
    weight: int
    """``status.rollout.canaryWeight``."""
    route: dict[str, int]
    """backend Service -> weight in the route's weighted rule (the rule without header matches)."""
    header_to: list[str]
    """backend Services of the route's header-matched rules."""
    mirror: dict[str, int] = field(default_factory=dict)
    """backend Service -> percent of the weighted rule's ``RequestMirror`` filters."""


class RolloutMonitor:
    """Samples the rollout status and the HTTPRoute every ``period`` seconds in a thread of its own."""

    def __init__(self, h: LocalHarness, route: str = NAME, period: float = 0.05) -> None:
        self.h = h
        self.route = route
        self.period = period
        self.samples: list[RolloutSample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rollout-monitor", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            rollout = self.h.rollout()
            route = self.h.get(HTTP_ROUTES, self.route) or {}
            weighted: dict[str, int] = {}
            header_to: list[str] = []
            mirror: dict[str, int] = {}
            for rule in (route.get("spec") or {}).get("rules") or []:
                refs = rule.get("backendRefs") or []
                if any(m.get("headers") for m in rule.get("matches") or []):
                    header_to.extend(str(r.get("name")) for r in refs)
                else:
                    weighted.update({str(r.get("name")): int(r.get("weight", 1)) for r in refs})
                    mirror.update({t.ref.name: round(100 * t.share) for t in mirror_targets(rule, NAMESPACE)})
            self.samples.append(
                RolloutSample(
                    time.monotonic(), str(rollout.get("phase", "")), int(rollout.get("currentStepIndex") or 0),
                    int(rollout.get("canaryWeight") or 0), weighted, header_to, mirror,
                )
            )  # fmt: skip
            self._stop.wait(self.period)

    def window(self, check: Callable[[RolloutSample], bool]) -> tuple[float, float] | None:
        """First and last moment a sample met ``check``."""
        times = [s.at for s in self.samples if check(s)]
        return (min(times), max(times)) if times else None

    def between(self, start: float, end: float) -> list[RolloutSample]:
        return [s for s in self.samples if start <= s.at <= end]

    def __enter__(self) -> RolloutMonitor:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(10)


# --- the local harness ---------------------------------------------------------------------------------------


class LocalHarness:
    """The emulated cluster, the kubelet running real ``modelserve`` processes, Service proxies and the operator.

    Use as a context manager; ``operator()`` gives a KopfRunner context (stop and start it again at will).
    """

    def __init__(self, workdir: Path, *, tick: float = 0.05) -> None:
        self.workdir = workdir
        self.kubelet = SimKubelet(log_dir=workdir / "pod-logs")
        self._tick = tick
        self._background: BackgroundCluster | None = None
        self._proxies: list[ServiceProxy | RouteProxy] = []
        self._saved_env: dict[str, str | None] = {}
        self._saved_resolver: Any = None
        self.runners: list[Any] = []

    async def _close(self) -> None:
        for proxy in self._proxies:
            await proxy.close()
        await self.kubelet.close()

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` in the cluster's thread (the emulator is not thread-safe)."""
        return self.background.call(fn, *args)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.background.run(coro)

    @property
    def background(self) -> BackgroundCluster:
        assert self._background is not None, "the harness is not running"
        return self._background

    @property
    def cluster(self) -> Cluster:
        return self.background.cluster

    def __enter__(self) -> LocalHarness:
        import modeldeploy.controller
        from modeldeploy.demo import admission
        from modeldeploy.schema import crd_manifest

        self._background = BackgroundCluster(
            thread_name="local-harness", on_start=lambda cluster: self.kubelet.attach(cluster.controller),
            on_stop=self._close, crds=[crd_manifest()], admission={MD: admission}, tick=self._tick,
            on_pod_running=self.kubelet.on_pod_running, on_pod_stopped=self.kubelet.on_pod_stopped,
            namespaces=("default", "kube-system", NAMESPACE),
        ).start(60)  # fmt: skip
        self._saved_env["KUBECONFIG"] = os.environ.get("KUBECONFIG")
        os.environ["KUBECONFIG"] = str(self.cluster.kubeconfig_path)
        self._saved_resolver = modeldeploy.controller.default_pod_address
        modeldeploy.controller.default_pod_address = self.kubelet.address
        return self

    def __exit__(self, *_: object) -> None:
        import modeldeploy.controller

        modeldeploy.controller.default_pod_address = self._saved_resolver
        for key, value in self._saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if self._background is not None:
            self._background.stop(60)

    # cluster access
    def get(self, resource: str = MD, name: str = NAME) -> dict[str, Any] | None:
        return self.call(self.cluster.emulator.get_object, resource, NAMESPACE, name)

    def apply(self, body: dict[str, Any]) -> None:
        """Create the ModelDeployment, or replace its spec when it exists."""
        existing = self.get(MD, body["metadata"]["name"])
        if existing is None:
            self.call(lambda: self.cluster.emulator.create_object(MD, copy.deepcopy(body), manager="kubectl"))
        else:
            self.call(
                lambda: self.cluster.emulator.patch_object(
                    MD, NAMESPACE, body["metadata"]["name"], {"spec": body["spec"]}, manager="kubectl"
                )
            )

    def status(self, name: str = NAME) -> dict[str, Any]:
        return dict((self.get(MD, name) or {}).get("status") or {})

    def deployments(self) -> list[str]:
        objs = self.call(self.cluster.emulator.list_objects, "apps/v1/deployments", NAMESPACE)
        return sorted(str(d["metadata"]["name"]) for d in objs)

    def pods(self, revision: str) -> list[str]:
        """Names of the pods of ``revision``."""
        objs = self.call(
            lambda: self.cluster.emulator.list_objects(
                "v1/pods", NAMESPACE, label_selector=f"modeldeploy.io/revision={revision}"
            )
        )
        return sorted(str(p["metadata"]["name"]) for p in objs)

    def proxy(self, service: str = NAME) -> str:
        """Start a proxy for ``service``; returns its URL."""
        proxy = ServiceProxy(self.cluster.emulator, NAMESPACE, service, self.kubelet.address)
        self._proxies.append(proxy)
        return self.run(proxy.start())

    def route_proxy(self, route: str = NAME) -> RouteProxy:
        """Start a Gateway for the HTTPRoute ``route`` (its ``url`` is set); the route need not exist yet."""
        proxy = RouteProxy(self.cluster.emulator, NAMESPACE, route, self.kubelet.address)
        self._proxies.append(proxy)
        self.run(proxy.start())
        return proxy

    def operator(self) -> Any:
        from kopf.testing import KopfRunner

        from modeldeploy.handlers import REGISTRY

        runner = KopfRunner(
            ["run", "--standalone", "--all-namespaces", "-m", "modeldeploy.handlers"], registry=REGISTRY, timeout=60
        )
        self.runners.append(runner)
        return runner

    def operator_problems(self) -> list[str]:
        """Operator runs that exited badly or logged a traceback (their output), for assertions."""
        return [r.output[-3000:] for r in self.runners if r.exit_code not in (0, None) or "Traceback" in r.output]

    def wait_for(self, check: Callable[[], Any], timeout: float, what: str) -> Any:
        return polling.wait_for(
            check,
            timeout,
            0.1,
            lambda: AssertionError(
                f"not reached within {timeout:.0f}s: {what}; status: {self.status()}; "
                f"kubelet errors: {self.kubelet.errors}"
            ),
        )

    def rollout(self) -> dict[str, Any]:
        return dict(self.status().get("rollout") or {})

    def settled(self, version: str) -> bool:
        st = self.status()
        md = self.get() or {}
        return bool(
            st.get("phase") == "Ready" and st.get("modelVersion") == version
            and st.get("observedGeneration") == md.get("metadata", {}).get("generation")
            and self.rollout().get("phase") in ("Idle", "Completed", "RolledBack")
            and len(self.deployments()) == 1
        )  # fmt: skip


# --- scenarios -----------------------------------------------------------------------------------------------


@dataclass
class ScenarioResult:
    name: str
    seconds: float
    load: LoadReport
    canary_revision: str
    stable_revision: str
    final_phase: str
    final_version: str
    analysis_runs: list[dict[str, Any]]
    notes: dict[str, Any] = field(default_factory=dict)

    def print(self) -> None:
        print(
            f"\n=== scenario {self.name}: {self.seconds:.1f} s, rollout {self.final_phase}, "
            f"serving version {self.final_version}"
        )
        print(f"    load: {self.load.summary()}")
        for run in self.analysis_runs:
            for m in run.get("measurements") or []:
                print(f"    analysis {run.get('phase')}: {m.get('verdict', '')} {m.get('message', '')}")
        for key, value in self.notes.items():
            print(f"    {key}: {value}")


def _deploy(h: LocalHarness, body: dict[str, Any], version: str, timeout: float = 60) -> None:
    h.apply(body)
    h.wait_for(lambda: h.settled(version), timeout, f"version {version} Ready")


@contextlib.contextmanager
def _timed() -> Iterator[list[float]]:
    box = [time.monotonic()]
    yield box
    box.append(time.monotonic() - box[0])


def _result(h: LocalHarness, name: str, seconds: float, load: LoadReport, canary: str, stable: str,
            **notes: Any) -> ScenarioResult:  # fmt: skip
    rollout = h.rollout()
    return ScenarioResult(
        name, seconds, load, canary, stable, str(rollout.get("phase")), str(h.status().get("modelVersion")),
        list(rollout.get("analysisRuns") or []), notes,
    )  # fmt: skip


def canary_promotes(h: LocalHarness, models: dict[str, Path]) -> ScenarioResult:
    """(a) v1 -> v2 under continuous load: setWeight 50, pause 5s, analysis (2 x 2s), promote."""
    with h.operator(), _timed() as clock:
        _deploy(h, model_deployment("1", f"file://{models['v1']}"), "1")
        stable = str(h.rollout().get("stableRevision") or h.status().get("stableRevision"))
        url = h.proxy()
        with LoadGenerator(url) as load:
            time.sleep(1.0)
            h.apply(model_deployment("2", f"file://{models['v2']}"))
            canary = str(h.wait_for(lambda: h.rollout().get("canaryRevision"), 20, "canary started"))
            h.wait_for(lambda: h.settled("2"), 90, "v2 promoted")
            time.sleep(1.0)
    return _result(h, "a: canary v1 -> v2 promoted", clock[1], load.report, canary, stable)


def _rollback_scenario(
    h: LocalHarness, name: str, body: dict[str, Any], poison: float, timeout: float = 90
) -> ScenarioResult:
    models_stable = body.pop("_stable")
    with h.operator(), _timed() as clock:
        _deploy(h, models_stable, "2")
        stable = str(h.status().get("stableRevision"))
        url = h.proxy()
        with LoadGenerator(url, poison=poison) as load:
            time.sleep(1.0)
            h.apply(body)
            canary = str(h.wait_for(lambda: h.rollout().get("canaryRevision"), 20, "canary started"))
            h.wait_for(lambda: h.rollout().get("phase") == "RolledBack" and not h.pods(canary), timeout, "rolled back")
            rolled_back_at = time.monotonic()
            time.sleep(1.5)
    report = load.report
    window = report.window(canary)
    in_window = [r for r in report.responses if window and window[0] <= r.started <= window[1]]
    after = [r for r in report.responses if r.started > rolled_back_at]
    return _result(
        h, name, clock[1], report, canary, stable,
        canary_window_s=round(window[1] - window[0], 2) if window else 0.0,
        requests_in_window=len(in_window),
        canary_requests=report.by_revision().get(canary, 0),
        failed_in_window=sum(1 for r in in_window if r.status != 200),
        failed_by_canary=sum(1 for r in report.failures() if r.revision == canary),
        requests_after_rollback=len(after), failed_after_rollback=sum(1 for r in after if r.status != 200),
    )  # fmt: skip


def failing_canary_rolls_back(h: LocalHarness, models: dict[str, Path]) -> ScenarioResult:
    """(b) v2 -> v3 (raises on poisoned rows, 30% of the load): maxErrorRatio 5% fails; automatic rollback."""
    body = model_deployment("3", f"file://{models['v3']}", pause="2s")
    body["_stable"] = model_deployment("2", f"file://{models['v2']}", pause="2s")
    return _rollback_scenario(h, "b: failing canary v2 -> v3 rolled back", body, poison=0.3)


def unloadable_canary_rolls_back(h: LocalHarness, models: dict[str, Path]) -> ScenarioResult:
    """(h) v2 -> v4 whose model file is not a model: each start of its server exits with the load error, the
    kubelet restarts it, and after the third restart the canary is rejected for CrashLoop with the server's own
    words (its termination message). Its pods never become ready, so no request reaches them."""
    body = model_deployment("4", f"file://{models['unloadable']}", pause="2s")
    body["_stable"] = model_deployment("2", f"file://{models['v2']}", pause="2s")
    result = _rollback_scenario(h, "h: canary v2 -> v4 that cannot load rolled back", body, poison=0.0)
    rejected = [r for r in h.rollout().get("rejectedRevisions") or [] if r.get("revision") == result.canary_revision]
    result.notes["rejection"] = dict(rejected[0]) if rejected else {}
    return result


def slow_canary_rolls_back(h: LocalHarness, models: dict[str, Path]) -> ScenarioResult:
    """(c) v2 -> v3-slow: maxP99LatencyRatio 2 fails (measured: about 9x the stable p99); automatic rollback."""
    criteria = {"maxP99LatencyRatio": 2}
    body = model_deployment("3-slow", f"file://{models['v3-slow']}", pause="2s", analysis=criteria)
    body["_stable"] = model_deployment("2", f"file://{models['v2']}", pause="2s", analysis=criteria)
    result = _rollback_scenario(h, "c: slow canary v2 -> v3-slow rolled back", body, poison=0.0)
    result.notes["client p99 ms stable / canary"] = (
        f"{result.load.p99_ms(result.stable_revision):.1f} / {result.load.p99_ms(result.canary_revision):.1f}"
    )
    return result


def operator_restart_mid_canary(h: LocalHarness, models: dict[str, Path]) -> ScenarioResult:
    """(d) v1 -> v2; the operator stops while the canary pauses (8s), is down 3s, starts again and completes."""
    with _timed() as clock:
        with h.operator():
            _deploy(h, model_deployment("1", f"file://{models['v1']}", pause="8s"), "1")
        stable = str(h.status().get("stableRevision"))
        url = h.proxy()
        with LoadGenerator(url) as load:
            with h.operator():
                h.apply(model_deployment("2", f"file://{models['v2']}", pause="8s"))
                canary = str(h.wait_for(lambda: h.rollout().get("canaryRevision"), 20, "canary started"))
                h.wait_for(lambda: h.rollout().get("phase") == "Paused", 60, "canary paused")
            stopped_phase = h.rollout().get("phase")
            time.sleep(3.0)
            phase_while_down = h.rollout().get("phase")
            with h.operator():
                h.wait_for(lambda: h.settled("2"), 90, "v2 promoted after the restart")
                time.sleep(1.0)
    return _result(
        h, "d: operator restarted mid-canary", clock[1], load.report, canary, stable,
        phase_when_stopped=stopped_phase, phase_while_down=phase_while_down,
    )  # fmt: skip


# --- Gateway API routing: the same rollouts through an HTTPRoute (RouteProxy) --------------------------------

ACTIVE_PHASES = ("Progressing", "Paused", "Analyzing")
GATEWAY_STEPS: list[dict[str, Any]] = [
    {"setWeight": 20}, {"pause": {"duration": "3s"}},
    {"setWeight": 50}, {"pause": {"duration": "3s"}},
    {"analysis": {}},
]  # fmt: skip
CANARY_HEADER = ("X-Canary", "always")
EDGE_SECONDS = (0.25, 0.5)
"""Trimmed from each weight window (start, end): the route changes just before the status that the monitor
samples every 50 ms, and requests in flight at a change were routed by the previous weights."""


@dataclass(frozen=True)
class HeaderLoad:
    """The requests that carried the canary header (printed as their summary)."""

    report: LoadReport

    def __repr__(self) -> str:
        return self.report.summary()


@dataclass(frozen=True)
class StepShare:
    """The canary's measured share of the requests sent while the rollout held one weight."""

    weight: int
    requests: int
    canary: int
    route_weights: list[int]
    """Every canary weight the HTTPRoute showed during the window (the monitor's samples)."""

    @property
    def share(self) -> float:
        return self.canary / self.requests if self.requests else float("nan")


def _holding(weight: int) -> Callable[[RolloutSample], bool]:
    return lambda s: s.weight == weight and s.phase in ACTIVE_PHASES


def _step_shares(
    monitor: RolloutMonitor, report: LoadReport, canary: str, weights: list[int]
) -> list[StepShare]:  # fmt: skip
    out = []
    backend = f"{NAME}-{canary}"
    for weight in weights:
        window = monitor.window(_holding(weight))
        if window is None:
            out.append(StepShare(weight, 0, 0, []))
            continue
        start, end = window[0] + EDGE_SECONDS[0], window[1] - EDGE_SECONDS[1]
        inside = [r for r in report.responses if start <= r.started <= end]
        route = sorted({s.route.get(backend, 0) for s in monitor.between(start, end)})
        out.append(StepShare(weight, len(inside), sum(1 for r in inside if r.revision == canary), route))
    return out


def _gateway_body(version: str, models: dict[str, Path], key: str, **options: Any) -> dict[str, Any]:
    options.setdefault("steps", GATEWAY_STEPS)
    options.setdefault("traffic_routing", gateway_routing())
    return model_deployment(version, f"file://{models[key]}", **options)


def gateway_canary_promotes(h: LocalHarness, models: dict[str, Path]) -> ScenarioResult:
    """(e) v1 -> v2 through the HTTPRoute: setWeight 20, pause 3s, setWeight 50, pause 3s, analysis, promote.

    Notes ``steps``: the canary's measured share of the requests in each weight's window (:class:`StepShare`).
    """
    with h.operator(), _timed() as clock:
        _deploy(h, _gateway_body("1", models, "v1"), "1")
        stable = str(h.status().get("stableRevision"))
        proxy = h.route_proxy()
        with RolloutMonitor(h) as monitor, LoadGenerator(proxy.url) as load:
            time.sleep(0.5)
            h.apply(_gateway_body("2", models, "v2"))
            canary = str(h.wait_for(lambda: h.rollout().get("canaryRevision"), 20, "canary started"))
            h.wait_for(lambda: h.settled("2"), 90, "v2 promoted")
            time.sleep(1.0)
    completed = monitor.window(lambda s: s.phase == "Completed" and s.route == {f"{NAME}-{canary}": 100})
    after = [r for r in load.report.responses if completed is not None and r.started > completed[0] + 0.5]
    return _result(
        h, "e: canary v1 -> v2 through the HTTPRoute, promoted", clock[1], load.report, canary, stable,
        steps=_step_shares(monitor, load.report, canary, [20, 50]), served_by_backend=dict(proxy.served),
        requests_after_promotion=len(after), stable_after_promotion=sum(1 for r in after if r.revision == stable),
    )  # fmt: skip


def gateway_header_routing(h: LocalHarness, models: dict[str, Path]) -> ScenarioResult:
    """(f) v1 -> v2 with ``header: X-Canary: always``: those requests go to the canary, the rest by weight.

    The load is two generators: the plain one (``load``) and one sending the header (``notes['header_load']``).
    """
    header = dict([CANARY_HEADER])
    steps = [{"setWeight": 20}, {"pause": {"duration": "4s"}}]
    routing = gateway_routing(CANARY_HEADER)
    with h.operator(), _timed() as clock:
        _deploy(h, _gateway_body("1", models, "v1", steps=steps, traffic_routing=routing), "1")
        stable = str(h.status().get("stableRevision"))
        proxy = h.route_proxy()
        with (
            RolloutMonitor(h) as monitor,
            LoadGenerator(proxy.url, concurrency=3) as load,
            LoadGenerator(proxy.url, concurrency=2, headers=header) as tagged,
        ):
            time.sleep(0.5)
            h.apply(_gateway_body("2", models, "v2", steps=steps, traffic_routing=routing))
            canary = str(h.wait_for(lambda: h.rollout().get("canaryRevision"), 20, "canary started"))
            h.wait_for(lambda: h.settled("2"), 90, "v2 promoted")
            time.sleep(0.5)
    backend = f"{NAME}-{canary}"
    routed = monitor.window(lambda s: backend in s.header_to)
    with_header = [r for r in tagged.report.responses if routed is not None and routed[0] + 0.25 <= r.started
                   <= routed[1] - 0.5]  # fmt: skip
    return _result(
        h, "f: header routing to the canary through the HTTPRoute", clock[1], load.report, canary, stable,
        header_load=HeaderLoad(tagged.report), header_rule_seconds=round(routed[1] - routed[0], 2) if routed else 0.0,
        header_requests_while_routed=len(with_header),
        header_requests_to_stable=sum(1 for r in with_header if r.revision != canary),
        steps=_step_shares(monitor, load.report, canary, [20]),
    )  # fmt: skip


@dataclass(frozen=True)
class _GatewayRollback:
    monitor: RolloutMonitor
    load: LoadGenerator
    proxy: RouteProxy
    canary: str
    stable: str
    seconds: float


def _gateway_rollback(h: LocalHarness, models: dict[str, Path], steps: list[dict[str, Any]]) -> _GatewayRollback:
    """v2, then v3 (fails on poisoned rows, 30% of the load) with ``steps`` through the HTTPRoute, until v3 is
    rolled back and its pods are gone."""
    with h.operator(), _timed() as clock:
        _deploy(h, _gateway_body("2", models, "v2", steps=steps), "2")
        stable = str(h.status().get("stableRevision"))
        proxy = h.route_proxy()
        with RolloutMonitor(h) as monitor, LoadGenerator(proxy.url, poison=0.3) as load:
            time.sleep(0.5)
            h.apply(_gateway_body("3", models, "v3", steps=steps))
            canary = str(h.wait_for(lambda: h.rollout().get("canaryRevision"), 20, "canary started"))
            h.wait_for(lambda: h.rollout().get("phase") == "RolledBack" and not h.pods(canary), 60, "rolled back")
            time.sleep(1.0)
    return _GatewayRollback(monitor, load, proxy, canary, stable, clock[1])


def gateway_canary_rolls_back(h: LocalHarness, models: dict[str, Path]) -> ScenarioResult:
    """(g) v2 -> v3 (fails on poisoned rows, 30% of the load) through the HTTPRoute: setWeight 20, analysis fails.

    Traffic goes back to the stable first: the route's weights change before the canary's pods go.
    """
    steps: list[dict[str, Any]] = [{"setWeight": 20}, {"pause": {"duration": "1s"}}, {"analysis": {}}]
    run = _gateway_rollback(h, models, steps)
    monitor, load, canary, stable = run.monitor, run.load, run.canary, run.stable
    backend = f"{NAME}-{canary}"
    rolling_back = [s for s in monitor.samples if s.phase in ("RollingBack", "RolledBack")]
    moved = monitor.window(lambda s: s.phase in ("RollingBack", "RolledBack"))
    after = [r for r in load.report.responses if moved is not None and r.started > moved[0] + EDGE_SECONDS[1]]
    window = load.report.window(canary)
    in_window = [r for r in load.report.responses if window and window[0] <= r.started <= window[1]]
    return _result(
        h, "g: failing canary v2 -> v3 through the HTTPRoute, rolled back", run.seconds, load.report, canary, stable,
        route_canary_weight_once_rolling_back=sorted({s.route.get(backend, 0) for s in rolling_back}),
        requests_after_rollback=len(after), canary_after_rollback=sum(1 for r in after if r.revision == canary),
        failed_after_rollback=sum(1 for r in after if r.status != 200),
        requests_in_window=len(in_window), failed_in_window=sum(1 for r in in_window if r.status != 200),
        steps=_step_shares(monitor, load.report, canary, [20]),
    )  # fmt: skip


def shadow_canary_rolls_back(h: LocalHarness, models: dict[str, Path]) -> ScenarioResult:
    """(i) v2 -> v3 (fails on poisoned rows, 30% of the load) shadowed: setMirror 100, analysis, setWeight 20.

    The gateway copies every request to the canary and drops its answers, so the analysis sees the canary fail on
    real traffic while every client still gets the stable's answer; the rollback ends the copy before the canary
    ever has a weight.
    """
    steps: list[dict[str, Any]] = [{"setMirror": 100}, {"analysis": {}}, {"setWeight": 20}, {"pause": {}}]
    run = _gateway_rollback(h, models, steps)
    monitor, load, proxy, canary, stable = run.monitor, run.load, run.proxy, run.canary, run.stable
    backend = f"{NAME}-{canary}"
    mirrored = monitor.window(lambda s: s.mirror.get(backend, 0) > 0)
    return _result(
        h, "i: failing canary v2 -> v3 shadowed through the HTTPRoute, rolled back", run.seconds, load.report, canary,
        stable, mirror_seconds=round(mirrored[1] - mirrored[0], 2) if mirrored else 0.0,
        copies_to_canary=proxy.mirrored.get(backend, 0), copies_failed=proxy.mirror_failed.get(backend, 0),
        route_canary_weights=sorted({s.route.get(backend, 0) for s in monitor.samples if backend in s.route}),
        client_requests_to_canary=load.report.by_revision().get(canary, 0),
        mirror_after_rollback=sorted({s.mirror.get(backend, 0) for s in monitor.samples
                                      if s.phase in ("RollingBack", "RolledBack")}),
    )  # fmt: skip


def golden_gate(h: LocalHarness, models: dict[str, Path]) -> ScenarioResult:
    """(j) Golden requests as the first canary step, before any client: ``analysis`` (golden requests only, computed
    from v1), ``setWeight 50``, ``pause 2s``. v1 -> v2 (the same weights) answers them right and is promoted;
    v2 -> v5-swapped, which never fails and is as fast but answers classes 0 and 1 the wrong way round, is rolled
    back on its first measurement, on the one pod the step gave it, before it has any weight. Under load
    throughout."""
    golden = golden_requests(models["v1"])
    criteria = {"goldenRequests": golden, "count": 1, "interval": "1s", "failureLimit": 0}
    steps: list[dict[str, Any]] = [{"analysis": {}}, {"setWeight": 50}, {"pause": {"duration": "2s"}}]

    def body(version: str, model: str) -> dict[str, Any]:
        return model_deployment(version, f"file://{models[model]}", analysis=criteria, steps=steps)

    rows = load_like_inputs(1000, seed=11)
    right, wrong = answers(models["v2"], rows), answers(models["v5-swapped"], rows)
    wrong_share = sum(_argmax(a) != _argmax(b) for a, b in zip(right, wrong, strict=True)) / len(rows)
    with h.operator(), _timed() as clock:
        _deploy(h, body("1", "v1"), "1")
        url = h.proxy()
        with LoadGenerator(url) as load:
            time.sleep(1.0)
            h.apply(body("2", "v2"))
            passed = str(h.wait_for(lambda: h.rollout().get("canaryRevision"), 20, "canary v2 started"))
            h.wait_for(lambda: h.settled("2"), 90, "v2 promoted")
            passed_runs = [r for r in h.rollout().get("analysisRuns") or [] if r.get("revision") == passed]
            stable = str(h.status().get("stableRevision"))
            h.apply(body("5", "v5-swapped"))
            canary = str(h.wait_for(lambda: h.rollout().get("canaryRevision"), 20, "canary v5 started"))
            h.wait_for(lambda: h.rollout().get("phase") == "RolledBack" and not h.pods(canary), 90, "rolled back")
            time.sleep(1.0)
    result = _result(h, "j: golden requests pass v1 -> v2, stop v2 -> v5-swapped", clock[1], load.report, canary,
                     stable)  # fmt: skip
    failed_runs = [r for r in result.analysis_runs if r.get("revision") == canary]
    result.analysis_runs = passed_runs + failed_runs
    result.notes.update(
        golden_cases=len(golden["cases"]),
        v2_golden=[m.get("golden") for r in passed_runs for m in r.get("measurements") or []],
        v5_golden=[m.get("golden") for r in failed_runs for m in r.get("measurements") or []],
        v5_would_answer_wrongly=f"{wrong_share:.1%} of load-like inputs (another class than v2)",
        client_requests_to_v2=load.report.by_revision().get(passed, 0),
        client_requests_to_v5=load.report.by_revision().get(canary, 0),
        v5_rejection=next((r for r in h.rollout().get("rejectedRevisions") or [] if r.get("revision") == canary), {}),
    )
    return result
