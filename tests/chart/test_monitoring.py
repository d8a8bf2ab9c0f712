"""The chart's monitoring against a real Prometheus (Debian's package, `make prometheus-tools`).

- The PrometheusRule passes `promtool check rules`, and `promtool test rules` runs the alerts on the series the
  operator exports (alerts_test.yaml): each fires when it should, with its labels and text, and stays silent when
  it should.
- A real Prometheus scrapes real model servers (a stable and a failing canary revision, in threads) through the
  PodMonitor's relabelings, and the operator's metrics as the ServiceMonitor does. The operator's Prometheus
  analysis source then measures the canary with its default queries, and must agree with the Scrape source on the
  same traffic; every dashboard query and variable returns data; the alerts evaluate without error.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from chart_tools import DASHBOARD, NAMESPACE, ToolsUnavailableError, ensure_prometheus, one, pod_meta_label, render

HERE = Path(__file__).resolve().parent
ALERTS = ["ModelDeploymentRolledBack", "ModelDeploymentDegraded", "ModelDeploymentAnalysisCannotMeasure",
          "ModelDeployOperatorReconcileErrors", "ModelDeployOperatorDown"]  # fmt: skip


@pytest.fixture(scope="module")
def tools() -> tuple[Path, Path]:
    try:
        return ensure_prometheus()
    except ToolsUnavailableError as error:
        pytest.skip(f"Prometheus is not available: {error}")


def monitoring_objects() -> list[dict[str, Any]]:
    return render({"metrics": {"prometheusRule": {"enabled": True}, "podMonitor": {"enabled": True},
                               "serviceMonitor": {"enabled": True}}})  # fmt: skip


def write_rules(directory: Path, objects: list[dict[str, Any]]) -> Path:
    """The PrometheusRule's groups as a Prometheus rule file (what prometheus-operator mounts)."""
    path = directory / "rules.yaml"
    path.write_text(yaml.safe_dump(one(objects, "PrometheusRule")["spec"]), encoding="utf-8")
    return path


# -- promtool


def test_the_alerts_pass_promtool_and_their_unit_tests(tools: tuple[Path, Path], tmp_path: Path) -> None:
    _, promtool = tools
    rules = write_rules(tmp_path, monitoring_objects())
    check = subprocess.run([str(promtool), "check", "rules", str(rules)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in check.stdout
    shutil.copy(HERE / "alerts_test.yaml", tmp_path / "alerts_test.yaml")
    result = subprocess.run([str(promtool), "test", "rules", str(tmp_path / "alerts_test.yaml")],
                            capture_output=True, text=True, cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    # Every alert is tested both ways: firing with its labels and annotations, and silent.
    cases = [case for test in yaml.safe_load((HERE / "alerts_test.yaml").read_text())["tests"]
             for case in test["alert_rule_test"]]  # fmt: skip
    for alert in ALERTS:
        mine = [case for case in cases if case["alertname"] == alert]
        assert any(case["exp_alerts"] for case in mine) and any(not case["exp_alerts"] for case in mine), alert
        for case in mine:
            for expected in case["exp_alerts"]:
                assert expected["exp_annotations"]["summary"] and expected["exp_annotations"]["description"]


def test_the_unit_tests_catch_an_alert_that_counts_extrapolated_measurements(
    tools: tuple[Path, Path], tmp_path: Path
) -> None:
    """The extrapolation case in alerts_test.yaml fails the expression without round(): increase() reads 2
    measurement errors as 2.14 between scrapes, past the threshold."""
    _, promtool = tools
    rules = write_rules(tmp_path, monitoring_objects())
    text = rules.read_text(encoding="utf-8")
    assert "round(increase(" in text
    rules.write_text(text.replace("round(increase(", "(increase("), encoding="utf-8")
    shutil.copy(HERE / "alerts_test.yaml", tmp_path / "alerts_test.yaml")
    result = subprocess.run([str(promtool), "test", "rules", str(tmp_path / "alerts_test.yaml")],
                            capture_output=True, text=True, cwd=tmp_path)  # fmt: skip
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert 'name="twice"' in output and "2.143 measurements" in output


# -- a real Prometheus


MODEL = "iris"
MODEL_NAMESPACE = "ml"
STABLE, CANARY = "5d8f7c9b6a", "7f6e5d4c3b"
SCRAPE_SECONDS = 0.5


@dataclass
class Pod:
    name: str
    revision: str
    url: str
    port: int


@dataclass
class Live:
    prometheus: str
    pods: list[Pod]
    sent: dict[str, dict[str, int]]
    """Per revision: requests, server errors, client errors, probes, as the clients saw them."""
    before: float
    """A time after the first scrapes and before any request."""
    scrape_sample: Any
    """The Scrape source's sample of the canary over the same traffic (a ``modeldeploy.analysis.sample.Sample``)."""
    objects: list[dict[str, Any]]

    def window(self) -> int:
        """Seconds back to ``before``, and one more: a query window that holds all the traffic."""
        return math.ceil(time.time() - self.before) + 1


def pod_meta_labels(pod: Pod, template: dict[str, Any], port: str) -> dict[str, str]:
    """The service-discovery labels Prometheus gives a pod of this template (kubernetes_sd_configs, role pod)."""
    labels = {
        "__meta_kubernetes_namespace": MODEL_NAMESPACE,
        "__meta_kubernetes_pod_name": pod.name,
        "__meta_kubernetes_pod_container_name": template["spec"]["containers"][0]["name"],
        "__meta_kubernetes_pod_container_port_name": port,
    }
    for key, value in template["metadata"]["labels"].items():
        labels[pod_meta_label(key)] = value
        labels[pod_meta_label(key, "labelpresent")] = "true"
    return labels


def pod_monitor_scrape_config(monitor: dict[str, Any], targets: list[tuple[str, dict[str, str]]]) -> dict[str, Any]:
    """The scrape configuration prometheus-operator generates for the PodMonitor's endpoint, with static targets
    carrying the labels pod discovery would give: keep the selected pods and the endpoint's port; `namespace`,
    `pod`, `container`, `job` and `endpoint` labels; then the PodMonitor's own relabelings."""
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    relabel: list[dict[str, Any]] = []
    for key, value in monitor["spec"]["selector"]["matchLabels"].items():
        relabel.append({"action": "keep", "regex": f"({value});true",
                        "source_labels": [pod_meta_label(key), pod_meta_label(key, "labelpresent")]})  # fmt: skip
    relabel += [
        {"action": "keep", "source_labels": ["__meta_kubernetes_pod_container_port_name"], "regex": endpoint["port"]},
        {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
        {"source_labels": ["__meta_kubernetes_pod_container_name"], "target_label": "container"},
        {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
        {"target_label": "job", "replacement": f"{monitor['metadata']['namespace']}/{monitor['metadata']['name']}"},
        {"target_label": "endpoint", "replacement": endpoint["port"]},
    ]
    keys = {"sourceLabels": "source_labels", "targetLabel": "target_label"}
    relabel += [{keys.get(k, k): v for k, v in r.items()} for r in endpoint["relabelings"]]
    return {
        "job_name": f"podMonitor/{monitor['metadata']['namespace']}/{monitor['metadata']['name']}/0",
        "scrape_interval": f"{round(SCRAPE_SECONDS * 1000)}ms",  # the chart's 15s, shortened for the test
        "scrape_timeout": f"{round(SCRAPE_SECONDS * 1000)}ms",
        "metrics_path": endpoint["path"],
        "static_configs": [{"targets": [address], "labels": labels} for address, labels in targets],
        "relabel_configs": relabel,
    }


def operator_scrape_config(objects: list[dict[str, Any]], address: str) -> dict[str, Any]:
    """The ServiceMonitor's scrape of the operator: job is the Service's name, `namespace` the release's; with
    honorLabels the operator's own `namespace` label (the ModelDeployment's) wins."""
    monitor = one(objects, "ServiceMonitor")
    (endpoint,) = monitor["spec"]["endpoints"]
    service = one(objects, "Service")["metadata"]["name"]
    return {
        "job_name": f"serviceMonitor/{NAMESPACE}/{monitor['metadata']['name']}/0",
        "scrape_interval": "1s",
        "scrape_timeout": "1s",
        "metrics_path": endpoint["path"],
        "honor_labels": endpoint.get("honorLabels", False),
        "static_configs": [{"targets": [address], "labels": {"namespace": NAMESPACE, "job": service}}],
    }


def query(prometheus: str, promql: str) -> list[dict[str, Any]]:
    answer = httpx.get(f"{prometheus}/api/v1/query", params={"query": promql}, timeout=10).json()
    assert answer["status"] == "success", (promql, answer)
    result: list[dict[str, Any]] = answer["data"]["result"]
    return result


def wait_for(condition: Any, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def value(prometheus: str, promql: str) -> float | None:
    result = query(prometheus, promql)
    return float(result[0]["value"][1]) if result else None


@pytest.fixture(scope="module")
def live(tools: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    pytest.importorskip("torch", reason="the model servers load TorchScript models")
    from contextlib import ExitStack

    from prometheus_client import start_http_server

    from modeldeploy.analysis.sources import PodTarget, ScrapeSource
    from modeldeploy.cli import read_documents, render_documents
    from modeldeploy.config import OperatorConfig
    from modeldeploy.labels import MANAGED_BY_LABEL, MODEL_DEPLOYMENT_LABEL, REVISION_LABEL
    from modeldeploy.metrics import OperatorMetrics
    from modeldeploy.sim.scenarios import HIDDEN, IN_FEATURES, OUT_FEATURES
    from modelserve import testing
    from modelserve.config import ServeConfig

    prometheus_bin, _ = tools
    root = tmp_path_factory.mktemp("prometheus")
    objects = monitoring_objects()
    rendered, errors = render_documents(read_documents(str(HERE.parents[1] / "examples" / "canary-with-analysis.yaml")),
                                        OperatorConfig())  # fmt: skip
    assert errors == []
    template = next(o for o in rendered if o["kind"] == "Deployment")["spec"]["template"]
    monitor = one(objects, "PodMonitor")
    models = {STABLE: root / "stable", CANARY: root / "canary"}
    testing.build_torchscript(models[STABLE], IN_FEATURES, HIDDEN, OUT_FEATURES)
    testing.build_torchscript(models[CANARY], IN_FEATURES, HIDDEN, OUT_FEATURES, failing=True)

    operator = OperatorMetrics()
    ready = {"rollout": {"phase": "Progressing"}, "canaryWeight": 20, "conditions": [
        {"type": "Degraded", "status": "False"}]}  # fmt: skip
    operator.record_rollout(MODEL_NAMESPACE, MODEL, ready, ["AnalysisPass", "MeasurementFailed"])
    operator.reconciles.labels("success").inc()
    operator.errors.labels("Conflict").inc()
    operator.duration.observe(0.02)
    operator_server, _ = start_http_server(0, addr="127.0.0.1", registry=operator.registry)

    with ExitStack() as stack:
        stack.callback(operator_server.shutdown)
        pods: list[Pod] = []
        for revision, name in ((STABLE, f"{MODEL}-{STABLE}-a1b2c"), (CANARY, f"{MODEL}-{CANARY}-d3e4f"),
                               (CANARY, f"{MODEL}-{CANARY}-g5h6i")):  # fmt: skip
            config = ServeConfig(model_dir=models[revision], model_name=MODEL, drain_seconds=0.0, torch_threads=1)
            url, _ = stack.enter_context(testing.serve_in_thread(config))
            pods.append(Pod(name, revision, url, int(url.rsplit(":", 1)[1])))
        port = monitor["spec"]["podMetricsEndpoints"][0]["port"]
        targets = []
        for pod in pods:
            labels = pod_meta_labels(pod, template, port)
            # The example's pod labels, as for a ModelDeployment named MODEL at this revision.
            labels[pod_meta_label(REVISION_LABEL)] = pod.revision
            labels[pod_meta_label(MODEL_DEPLOYMENT_LABEL)] = MODEL
            targets.append((f"127.0.0.1:{pod.port}", labels))
        # Pods the PodMonitor must leave alone: another app's, and a model server's other port.
        other = dict(targets[0][1])
        other.pop(pod_meta_label(MANAGED_BY_LABEL, "labelpresent"))
        other[pod_meta_label(MANAGED_BY_LABEL)] = "someone-else"
        targets.append(("127.0.0.1:1", other))
        targets.append(("127.0.0.1:2", {**targets[0][1], "__meta_kubernetes_pod_container_port_name": "grpc"}))
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(write_rules(root, objects))],
            "scrape_configs": [
                pod_monitor_scrape_config(monitor, targets),
                operator_scrape_config(objects, f"127.0.0.1:{operator_server.server_port}"),
            ],
        }
        (root / "prometheus.yml").write_text(yaml.safe_dump(config), encoding="utf-8")
        web = testing.free_socket()
        address = f"127.0.0.1:{web.getsockname()[1]}"
        web.close()
        log = (root / "prometheus.log").open("w")
        process = subprocess.Popen(
            [str(prometheus_bin), f"--config.file={root / 'prometheus.yml'}", f"--storage.tsdb.path={root / 'data'}",
             f"--web.listen-address={address}", "--log.level=warn"],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip

        def stop() -> None:
            process.terminate()
            process.wait(timeout=20)
            log.close()

        stack.callback(stop)
        prometheus = f"http://{address}"

        def ready() -> bool:
            """Prometheus answers 503 in plain text until it has started (slower on a busy machine)."""
            if process.poll() is not None:
                raise AssertionError(f"prometheus exited: {(root / 'prometheus.log').read_text()[-2000:]}")
            try:
                return httpx.get(f"{prometheus}/-/ready", timeout=5).status_code == 200
            except httpx.HTTPError:
                return False

        def scraped(times: int) -> bool:
            counts = query(prometheus, "count_over_time(up[1m])")
            return len(counts) == 4 and all(float(c["value"][1]) >= times for c in counts)

        wait_for(ready, "Prometheus ready", timeout=60)

        wait_for(lambda: scraped(5), "five scrapes of every target")
        before = time.time()

        sent = {STABLE: {"requests": 0, "server_error": 0, "client_error": 0, "probes": 0},
                CANARY: {"requests": 0, "server_error": 0, "client_error": 0, "probes": 0}}  # fmt: skip
        row = [0.5] * IN_FEATURES
        poisoned = [2000.0] + [0.5] * (IN_FEATURES - 1)

        def infer(client: httpx.Client, pod: Pod, data: list[float], width: int, probe: bool = False) -> int:
            body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, width], "data": data}]}
            headers = {"Modeldeploy-Probe": "golden"} if probe else {}
            return client.post(f"{pod.url}/v2/models/{MODEL}/infer", json=body, headers=headers).status_code

        scrape_source_pods = [PodTarget(p.name, "127.0.0.1", p.port) for p in pods if p.revision == CANARY]

        async def scrape_around(traffic: Any) -> Any:
            """The Scrape source's view: rebased before the traffic, measured after it."""
            import aiohttp

            async with aiohttp.ClientSession() as session:
                source = ScrapeSource(session, model=MODEL)
                await source.rebase(CANARY, scrape_source_pods)
                await asyncio.to_thread(traffic)
                return await source.measure(CANARY, scrape_source_pods)

        def traffic() -> None:
            with httpx.Client(timeout=30) as client:
                for index, pod in enumerate(pods):
                    count = (150, 100, 80)[index]  # the stable pod, then the two canary pods
                    for i in range(count):
                        bad = pod.revision == CANARY and i % 10 == 3
                        status = infer(client, pod, poisoned if bad else row, IN_FEATURES)
                        assert status == (500 if bad else 200), (pod.name, i, status)
                        sent[pod.revision]["requests"] += 1
                        sent[pod.revision]["server_error"] += bad
                    for _ in range(index + 1):  # wrong shape: a client error, not a server error
                        assert infer(client, pod, row[:-1], IN_FEATURES - 1) == 400
                        sent[pod.revision]["requests"] += 1
                        sent[pod.revision]["client_error"] += 1
                    for _ in range(6):  # golden requests (failing ones on the canary): probes, not traffic
                        assert infer(client, pod, poisoned, IN_FEATURES, probe=True) in (200, 500)
                        sent[pod.revision]["probes"] += 1

        sample = asyncio.run(scrape_around(traffic))
        total = sent[CANARY]["requests"]

        def arrived() -> bool:
            got = value(prometheus, f'sum(modelserve_requests_total{{revision="{CANARY}"}})')
            return got == total

        wait_for(arrived, "the canary's requests in Prometheus")
        time.sleep(2.5)  # two more scrapes, so every series has samples after the traffic
        yield Live(prometheus, pods, sent, before, sample, objects)


def measure(live: Live, revision: str, **spec: str) -> Any:
    import aiohttp

    from modeldeploy.analysis.sources import PodTarget, PrometheusSource
    from modeldeploy.rollout.config import PrometheusSpec

    window = live.window()

    async def run() -> Any:
        async with aiohttp.ClientSession() as session:
            source = PrometheusSource(session, PrometheusSpec(url=live.prometheus, **spec), namespace=MODEL_NAMESPACE,
                                      interval_seconds=window)  # fmt: skip
            pods = [PodTarget(p.name, "127.0.0.1", p.port) for p in live.pods if p.revision == revision]
            return await source.measure(revision, pods)

    return asyncio.run(run()), window


def test_the_pod_monitor_scrapes_only_model_server_pods_with_the_analysis_labels(live: Live) -> None:
    monitor = one(live.objects, "PodMonitor")["metadata"]
    up = query(live.prometheus, f'up{{job="{monitor["namespace"]}/{monitor["name"]}"}}')
    assert sorted((s["metric"]["pod"], s["metric"]["revision"], s["value"][1]) for s in up) == sorted(
        (p.name, p.revision, "1") for p in live.pods
    )
    for series in up:
        assert series["metric"]["namespace"] == MODEL_NAMESPACE
        assert series["metric"]["model_deployment"] == MODEL and series["metric"]["endpoint"] == "http"
    # The operator's series keep the ModelDeployment's namespace (honorLabels), not the release's.
    assert value(live.prometheus, f'modeldeploy_degraded{{namespace="{MODEL_NAMESPACE}",name="{MODEL}"}}') == 0


def test_the_prometheus_source_measures_the_canary_as_the_scrape_source_does(live: Live) -> None:
    sample, window = measure(live, CANARY)
    sent = live.sent[CANARY]
    # increase() extrapolates each pod's counters to the window's edges: by less than 1.1 scrape intervals each.
    stretch = window / (window - 2.2 * SCRAPE_SECONDS)
    assert sent["requests"] <= sample.requests <= sent["requests"] * stretch, (sample, window)
    assert sample.errors is not None
    assert sent["server_error"] <= sample.errors <= sent["server_error"] * stretch
    assert abs(sample.errors / sample.requests - sent["server_error"] / sent["requests"]) < 0.002
    # The Scrape source counted the same traffic exactly: golden requests and client errors are not errors.
    assert live.scrape_sample.requests == sent["requests"] == 185
    assert live.scrape_sample.errors == sent["server_error"] == 18
    # Both interpolate the p99 within the same latency buckets.
    assert sample.p99_seconds is not None and live.scrape_sample.p99_seconds is not None
    assert sample.p99_seconds == pytest.approx(live.scrape_sample.p99_seconds, rel=0.1)
    probes = value(live.prometheus, f'sum(modelserve_probe_requests_total{{revision="{CANARY}"}})')
    assert probes == sent["probes"] == 12


def test_the_prometheus_source_sees_no_errors_on_the_stable_revision(live: Live) -> None:
    sample, window = measure(live, STABLE)
    assert 151 <= sample.requests <= 151 * window / (window - 2.2 * SCRAPE_SECONDS)
    assert sample.errors == 0 and sample.p99_seconds is not None and sample.p99_seconds < 1


def test_a_custom_query_runs_with_its_placeholders(live: Live) -> None:
    ratio = ('sum(increase(modelserve_requests_total{namespace="{{namespace}}",revision="{{revision}}",'
             'outcome="server_error"}[{{interval}}])) / sum(increase(modelserve_requests_total{'
             'namespace="{{namespace}}",revision="{{revision}}"}[{{interval}}]))')  # fmt: skip
    sample, _ = measure(live, CANARY, error_ratio_query=ratio)
    assert sample.errors is not None and abs(sample.errors / sample.requests - 18 / 185) < 0.002


def test_every_dashboard_query_returns_data(live: Live) -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    window = f"{live.window()}s"
    variables = {"$__rate_interval": window, "$namespace": MODEL_NAMESPACE, "$name": MODEL}

    def substitute(expr: str) -> str:
        for name, replacement in variables.items():
            expr = expr.replace(name, replacement)
        return expr

    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":  # label_values(SELECTOR, LABEL): Grafana asks the series API
            found = re.fullmatch(r"label_values\((.+), (\w+)\)", variable["query"]["query"])
            assert found, variable
            answer = httpx.get(f"{live.prometheus}/api/v1/series",
                               params={"match[]": substitute(found.group(1))}, timeout=10).json()  # fmt: skip
            assert variables[f"${variable['name']}"] in {s[found.group(2)] for s in answer["data"]}, variable
    checked = 0
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            if "gpu_memory" in target["expr"]:  # no GPU here: the model servers export no GPU memory
                continue
            result = query(live.prometheus, substitute(target["expr"]))
            assert result, (panel["title"], target["expr"])
            checked += 1
            if panel["title"] == "Error ratio by revision":
                ratios = {s["metric"]["revision"]: float(s["value"][1]) for s in result}
                assert ratios[STABLE] == 0 and abs(ratios[CANARY] - 18 / 185) < 0.002, ratios
            if panel["title"] == "Requests by revision":
                assert {s["metric"]["revision"] for s in result} == {STABLE, CANARY}
    assert checked >= 18


def test_the_alerts_evaluate_on_live_series(live: Live) -> None:
    def health() -> dict[str, tuple[str, str]]:
        answer = httpx.get(f"{live.prometheus}/api/v1/rules", timeout=10).json()
        return {r["name"]: (r["health"], r["state"]) for g in answer["data"]["groups"] for r in g["rules"]}

    wait_for(lambda: all(h == "ok" for h, _ in health().values()), "every rule evaluated")
    states = health()
    assert set(states) == set(ALERTS)
    # The operator is up, nothing is Degraded, no rollback: nothing fires or is pending.
    assert all(state == "inactive" for _, state in states.values()), states
