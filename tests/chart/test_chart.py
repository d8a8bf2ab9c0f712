"""The Helm chart: lint, render with several value sets, validate every object, security and RBAC."""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import promql_parser
import pytest
import yaml
from chart_tools import (
    CHART,
    DASHBOARD,
    NAMESPACE,
    REPO,
    ToolsUnavailableError,
    ensure_helm,
    helm,
    of_kind,
    one,
    pod_meta_label,
    render,
    template,
)
from network_policy import NAMESPACE_NAME_LABEL, Pod, ingress_admitted, isolating_for_ingress, selector_matches
from pod_security import check_restricted

K8S_VERSION = kubernetes_validate.latest_version()
CRD_SOURCE = REPO / "crds" / "modeldeploy.io_modeldeployments.yaml"
RULES = yaml.safe_load((CHART / "rbac" / "rules.yaml").read_text(encoding="utf-8"))

VALUE_SETS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "namespaced": {"watchNamespaces": ["team-a", "team-b"]},
    "no-gpu-preflight": {"watchNamespaces": ["team-a"], "gpuPreflight": {"enabled": False}},
    "monitoring-and-network-policy": {
        "metrics": {
            "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
            "podMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
            "grafanaDashboard": {"enabled": True, "annotations": {"grafana_folder": "Models"}},
            "prometheusRule": {
                "enabled": True,
                "labels": {"release": "prometheus"},
                "alertLabels": {"team": "ml-platform"},
                "extraRules": [{"alert": "TooManyCanaries", "expr": "sum(modeldeploy_canary_weight > 0) > 10"}],
            },
        },
        "networkPolicy": {
            "enabled": True,
            "metricsFrom": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}],
            "apiServer": {"cidrs": ["10.96.0.1/32", "172.18.0.2/32"], "ports": [6443]},
            "extraEgress": [{"to": [{"ipBlock": {"cidr": "10.20.0.0/16"}}], "ports": [{"port": 9090}]}],
            "defaultForModels": {
                "enabled": True,
                "ingressFrom": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "gateway"}}}],
                "monitoringNamespace": "monitoring",
            },
        },
    },
    "ha-3": {"replicas": 3, "peering": {"enabled": True, "name": "md-peering", "lifetimeSeconds": 30}},
    "single-standalone": {
        "replicas": 1,
        "peering": {"enabled": False, "name": "", "lifetimeSeconds": 60},
        "podDisruptionBudget": {"defaultForModels": {"enabled": False}},
    },
    "policy-and-overrides": {
        "policy": {
            "requireSha256": True,
            "allowedSchemes": ["s3", "https"],
            "allowedHosts": ["*.example.com"],
        },
        "image": {
            "repository": "registry.local/md/operator",
            "tag": "",
            "digest": "sha256:" + "a" * 64,
            "pullPolicy": "Always",
        },
        "imagePullSecrets": [{"name": "regcred"}],
        "extraEnv": [{"name": "EXTRA", "value": "1"}],
        "serviceAccount": {"create": True, "name": "md-operator", "annotations": {"example.com/role": "x"}},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ops", "effect": "NoSchedule"}],
        "priorityClassName": "system-cluster-critical",
    },
    "read-secrets": {"rbac": {"create": True, "readSecrets": {"ml": ["iris-tokens"], "team-b": ["a", "b.c"]}}},
}


@pytest.fixture(scope="session", autouse=True)
def helm_binary() -> None:
    try:
        ensure_helm()
    except ToolsUnavailableError as error:
        pytest.skip(f"helm is not available: {error}")


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    return {name: render(values) for name, values in VALUE_SETS.items()}


# -- lint


def test_helm_lint_strict() -> None:
    result = helm("lint", "--strict", str(CHART))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[WARNING]" not in result.stdout and "[ERROR]" not in result.stdout


@pytest.mark.parametrize("name", [n for n in VALUE_SETS if n != "defaults"])
def test_helm_lint_strict_with_values(name: str, tmp_path: Any) -> None:
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(VALUE_SETS[name]))
    result = helm("lint", "--strict", str(CHART), "-f", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


# -- every object is valid Kubernetes


CRD_KINDS = {"ServiceMonitor", "PodMonitor", "PrometheusRule", "ClusterKopfPeering", "KopfPeering"}


def check_custom_kind(obj: dict[str, Any]) -> None:
    """Objects of CRD kinds kubernetes-validate has no schema for, checked by structure."""
    metadata = obj["metadata"]
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", metadata["name"])
    if obj["kind"] == "ServiceMonitor":
        assert obj["apiVersion"] == "monitoring.coreos.com/v1"
        assert set(obj) == {"apiVersion", "kind", "metadata", "spec"}
        spec = obj["spec"]
        assert set(spec) <= {"selector", "namespaceSelector", "endpoints", "jobLabel"}
        assert spec["selector"]["matchLabels"]
        for endpoint in spec["endpoints"]:
            assert set(endpoint) <= {"port", "path", "interval", "scrapeTimeout", "scheme", "honorLabels"}
            assert endpoint["port"] == "metrics"
            for key in ("interval", "scrapeTimeout"):
                assert re.fullmatch(r"([0-9]+(ms|s|m|h))+", endpoint[key])
    elif obj["kind"] == "PodMonitor":
        assert obj["apiVersion"] == "monitoring.coreos.com/v1"
        assert set(obj) == {"apiVersion", "kind", "metadata", "spec"}
        spec = obj["spec"]
        assert set(spec) == {"selector", "namespaceSelector", "podMetricsEndpoints"}
        assert set(spec["namespaceSelector"]) in ({"any"}, {"matchNames"})
        for endpoint in spec["podMetricsEndpoints"]:
            assert set(endpoint) <= {"port", "path", "interval", "scrapeTimeout", "relabelings"}
            for key in ("interval", "scrapeTimeout"):
                assert re.fullmatch(r"([0-9]+(ms|s|m|h))+", endpoint[key])
            for relabeling in endpoint["relabelings"]:
                assert set(relabeling) <= {"sourceLabels", "targetLabel", "action", "regex", "replacement"}
                assert all(re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_]*", label) for label in relabeling["sourceLabels"])
    elif obj["kind"] == "PrometheusRule":
        assert obj["apiVersion"] == "monitoring.coreos.com/v1"
        assert set(obj) == {"apiVersion", "kind", "metadata", "spec"} and set(obj["spec"]) == {"groups"}
        for group in obj["spec"]["groups"]:
            assert set(group) == {"name", "rules"}
            for rule in group["rules"]:
                assert set(rule) <= {"alert", "record", "expr", "for", "labels", "annotations"}
                assert ("alert" in rule) != ("record" in rule) and isinstance(rule["expr"], str)
                if "for" in rule:
                    assert re.fullmatch(r"([0-9]+(ms|s|m|h|d|w|y))+", rule["for"])
                assert all(isinstance(v, str) for v in (*rule.get("labels", {}).values(),
                                                        *rule.get("annotations", {}).values()))  # fmt: skip
    else:
        assert obj["apiVersion"] == "kopf.dev/v1"
        assert set(obj) == {"apiVersion", "kind", "metadata"}
        assert ("namespace" in metadata) == (obj["kind"] == "KopfPeering")


@pytest.mark.parametrize("name", list(VALUE_SETS))
def test_every_object_validates_strictly(rendered: dict[str, list[dict[str, Any]]], name: str) -> None:
    for obj in rendered[name]:
        if obj["kind"] in CRD_KINDS:
            check_custom_kind(obj)
        else:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def test_strict_validation_catches_unknown_fields(rendered: dict[str, list[dict[str, Any]]]) -> None:
    deployment = json.loads(json.dumps(one(rendered["defaults"], "Deployment")))
    deployment["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)


def test_expected_objects(rendered: dict[str, list[dict[str, Any]]]) -> None:
    kinds = sorted(o["kind"] for o in rendered["defaults"])
    assert kinds == sorted(
        [
            "CustomResourceDefinition",
            "CustomResourceDefinition",
            "CustomResourceDefinition",
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "Deployment",
            "PodDisruptionBudget",
            "Service",
            "ClusterKopfPeering",
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "Pod",  # helm test hook
        ]
    )
    assert {o["kind"] for o in rendered["monitoring-and-network-policy"]} >= {
        "ServiceMonitor",
        "NetworkPolicy",
    }
    assert not of_kind(rendered["single-standalone"], "PodDisruptionBudget")
    assert not of_kind(rendered["single-standalone"], "ClusterKopfPeering")


# -- CRDs


def test_chart_crd_is_a_byte_identical_copy() -> None:
    if not CRD_SOURCE.exists():
        pytest.skip(f"{CRD_SOURCE} does not exist yet")
    copy = CHART / "crds" / CRD_SOURCE.name
    assert copy.read_bytes() == CRD_SOURCE.read_bytes(), "run `make sync-crds`"


def test_peering_crds(rendered: dict[str, list[dict[str, Any]]]) -> None:
    crds = {o["metadata"]["name"]: o for o in of_kind(rendered["defaults"], "CustomResourceDefinition")}
    assert set(crds) == {
        "modeldeployments.modeldeploy.io",
        "clusterkopfpeerings.kopf.dev",
        "kopfpeerings.kopf.dev",
    }
    assert crds["clusterkopfpeerings.kopf.dev"]["spec"]["scope"] == "Cluster"
    assert crds["kopfpeerings.kopf.dev"]["spec"]["scope"] == "Namespaced"
    for name in ("clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev"):
        version = crds[name]["spec"]["versions"][0]
        assert version["name"] == "v1" and version["served"] and version["storage"]
        assert version["schema"]["openAPIV3Schema"]["properties"]["status"]["x-kubernetes-preserve-unknown-fields"]


# -- the operator Deployment


def operator_container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    containers = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    container: dict[str, Any] = containers[0]
    return container


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_operator_command_ports_and_probes(rendered: dict[str, list[dict[str, Any]]]) -> None:
    c = operator_container(rendered["defaults"])
    assert c["command"] == ["modeldeploy", "run"]
    assert c["args"] == ["--health-port=8080", "--metrics-port=9090"]
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"health": 8080, "metrics": 9090}
    for probe in ("livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert c["resources"]["requests"]["cpu"] and c["resources"]["requests"]["memory"]
    assert c["image"] == "ghcr.io/modeldeploy/operator:0.1.0"


def test_operator_environment(rendered: dict[str, list[dict[str, Any]]]) -> None:
    env = env_of(operator_container(rendered["defaults"]))
    assert env["MODELDEPLOY_WATCH_NAMESPACES"] == ""
    assert env["MODELDEPLOY_RESYNC_PERIOD_SECONDS"] == "300"
    assert env["MODELDEPLOY_LOG_LEVEL"] == "INFO" and env["MODELDEPLOY_PEERING_LIFETIME_SECONDS"] == "60"
    assert env["MODELDEPLOY_WRITE_FAILURE_SECONDS"] == "120"
    assert env["MODELDEPLOY_METRICS_PORT"] == "9090"
    assert env["MODELDEPLOY_HEALTH_PORT"] == "8080"
    assert env["MODELDEPLOY_RUNTIME_IMAGE"] == "ghcr.io/modeldeploy/modelserve:0.1.0"
    assert env["MODELDEPLOY_PEERING_NAME"] == "modeldeploy"
    assert env["POD_ID"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["MODELDEPLOY_POD_IP"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    assert env["MODELDEPLOY_POLICY_REQUIRE_SHA256"] == "false"
    assert env["MODELDEPLOY_MODEL_NETWORK_POLICY"] == "false"
    assert json.loads(env["MODELDEPLOY_MODEL_NETWORK_POLICY_INGRESS_FROM"]) == []
    assert env["MODELDEPLOY_MODEL_DISRUPTION_BUDGET"] == "true"
    assert env_of(operator_container(rendered["single-standalone"]))["MODELDEPLOY_MODEL_DISRUPTION_BUDGET"] == "false"

    env = env_of(operator_container(rendered["namespaced"]))
    assert env["MODELDEPLOY_WATCH_NAMESPACES"] == "team-a,team-b"
    env = env_of(operator_container(rendered["policy-and-overrides"]))
    assert env["MODELDEPLOY_POLICY_REQUIRE_SHA256"] == "true"
    assert env["MODELDEPLOY_POLICY_ALLOWED_SCHEMES"] == "s3,https"
    assert env["MODELDEPLOY_POLICY_ALLOWED_HOSTS"] == "*.example.com"
    assert env["EXTRA"] == "1"
    env = env_of(operator_container(rendered["monitoring-and-network-policy"]))
    assert env["MODELDEPLOY_MODEL_NETWORK_POLICY"] == "true"
    assert (
        json.loads(env["MODELDEPLOY_MODEL_NETWORK_POLICY_INGRESS_FROM"])
        == (VALUE_SETS["monitoring-and-network-policy"]["networkPolicy"]["defaultForModels"]["ingressFrom"])
    )
    env = env_of(operator_container(rendered["single-standalone"]))
    assert env["MODELDEPLOY_PEERING_NAME"] == ""


def test_the_monitoring_namespace_reaches_the_operator_and_its_model_network_policies(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    """networkPolicy.defaultForModels.monitoringNamespace becomes MODELDEPLOY_MONITORING_NAMESPACE, which the
    operator reads into its configuration; the model NetworkPolicies it then builds admit Prometheus' scrapes from
    that namespace on the port the PodMonitor scrapes, and no other namespace."""
    from modeldeploy.cli import read_documents, render_documents
    from modeldeploy.config import OperatorConfig

    assert env_of(operator_container(rendered["defaults"]))["MODELDEPLOY_MONITORING_NAMESPACE"] == ""
    objects = rendered["monitoring-and-network-policy"]
    env = env_of(operator_container(objects))
    assert env["MODELDEPLOY_MONITORING_NAMESPACE"] == "monitoring"
    # The container's environment as the operator reads it (the downward API gives the operator's namespace).
    environ = {name: value for name, value in env.items() if isinstance(value, str)}
    environ["MODELDEPLOY_OPERATOR_NAMESPACE"] = NAMESPACE
    config = OperatorConfig.from_env(environ)
    assert config.monitoring_namespace == "monitoring" and config.model_network_policy

    def model_server_and_policies(config: OperatorConfig) -> tuple[Pod, list[dict[str, Any]]]:
        children, errors = render_documents(read_documents(str(REPO / "examples" / "canary-with-analysis.yaml")),
                                            config)  # fmt: skip
        assert errors == []
        deployment = one(children, "Deployment")
        template = deployment["spec"]["template"]
        pod = Pod(deployment["metadata"]["namespace"], template["metadata"]["labels"], container_ports(template))
        return pod, of_kind(children, "NetworkPolicy")

    model, policies = model_server_and_policies(config)
    (endpoint,) = one(objects, "PodMonitor")["spec"]["podMetricsEndpoints"]
    port = model.ports[endpoint["port"]]
    prometheus = {"app.kubernetes.io/name": "prometheus"}
    assert ingress_admitted(policies, Pod("monitoring", prometheus), model, port)
    assert not ingress_admitted(policies, Pod("elsewhere", prometheus), model, port)
    model, policies = model_server_and_policies(
        OperatorConfig.from_env(environ | {"MODELDEPLOY_MONITORING_NAMESPACE": ""})
    )
    assert not ingress_admitted(policies, Pod("monitoring", prometheus), model, port)


def test_image_digest_wins(rendered: dict[str, list[dict[str, Any]]]) -> None:
    c = operator_container(rendered["policy-and-overrides"])
    assert c["image"] == "registry.local/md/operator@sha256:" + "a" * 64
    assert c["imagePullPolicy"] == "Always"


@pytest.mark.parametrize(("name", "replicas"), [("defaults", 2), ("ha-3", 3), ("single-standalone", 1)])
def test_replicas_and_disruption_budget(rendered: dict[str, list[dict[str, Any]]], name: str, replicas: int) -> None:
    objects = rendered[name]
    deployment = one(objects, "Deployment")
    assert deployment["spec"]["replicas"] == replicas
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    if replicas > 1:
        pdb = one(objects, "PodDisruptionBudget")
        assert pdb["spec"]["maxUnavailable"] == 1
        assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
        assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_metrics_service_selects_the_operator(rendered: dict[str, list[dict[str, Any]]]) -> None:
    objects = rendered["monitoring-and-network-policy"]
    service = one(objects, "Service")
    pod_labels = one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert service["spec"]["ports"] == [{"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP"}]
    monitor = one(objects, "ServiceMonitor")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}


def test_metrics_keep_the_model_deployments_namespace_label(rendered: dict[str, list[dict[str, Any]]]) -> None:
    (endpoint,) = one(rendered["monitoring-and-network-policy"], "ServiceMonitor")["spec"]["endpoints"]
    assert endpoint["honorLabels"] is True


def test_the_pod_monitor_scrapes_the_model_servers_with_the_labels_the_analysis_queries_use(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    """The PodMonitor selects the pods the operator renders, on their port, and relabels their pod labels into the
    `revision` label the default Prometheus queries select by (`namespace` is a PodMonitor target label)."""
    from modeldeploy.analysis.sources import DEFAULT_ERROR_RATIO_QUERY, DEFAULT_P99_QUERY, DEFAULT_REQUESTS_QUERY
    from modeldeploy.cli import read_documents, render_documents
    from modeldeploy.config import OperatorConfig
    from modeldeploy.labels import MODEL_DEPLOYMENT_LABEL, REVISION_LABEL

    monitor = one(rendered["monitoring-and-network-policy"], "PodMonitor")
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert monitor["spec"]["namespaceSelector"] == {"any": True}
    objects, errors = render_documents(read_documents(str(REPO / "examples" / "canary-with-analysis.yaml")),
                                       OperatorConfig())  # fmt: skip
    assert errors == []
    pod = next(o for o in objects if o["kind"] == "Deployment")["spec"]["template"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    ports = {p["name"] for c in pod["spec"]["containers"] for p in c.get("ports", [])}
    assert endpoint["port"] in ports and endpoint["path"] == "/metrics"

    targets = {r["targetLabel"]: r["sourceLabels"] for r in endpoint["relabelings"]}
    revision, instance = pod_meta_label(REVISION_LABEL), pod_meta_label(MODEL_DEPLOYMENT_LABEL)
    assert targets == {"revision": [revision], "model_deployment": [instance]}
    for query in (DEFAULT_REQUESTS_QUERY, DEFAULT_ERROR_RATIO_QUERY, DEFAULT_P99_QUERY):
        assert 'revision="{{revision}}"' in query and 'namespace="{{namespace}}"' in query
    assert of_kind(rendered["namespaced"], "PodMonitor") == []  # off by default; with watchNamespaces, only those:
    only = render({"watchNamespaces": ["team-a"], "metrics": {"podMonitor": {"enabled": True}}})
    assert one(only, "PodMonitor")["spec"]["namespaceSelector"] == {"matchNames": ["team-a"]}


GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$namespace": ".*", "$name": ".*"}
POD_MONITOR_LABELS = {"namespace", "pod", "container", "endpoint", "job", "instance", "revision", "model_deployment"}


def _operator_series() -> dict[str, set[str]]:
    """Every series name the operator exports (each labelled family with a series), with its label names."""
    from modeldeploy.metrics import OperatorMetrics

    operator = OperatorMetrics()
    operator.record_rollout("ml", "iris", {"rollout": {"phase": "Completed"}, "conditions": []}, [])
    operator.errors.labels("Invalid").inc()
    operator.reconciles.labels("changed").inc()
    out: dict[str, set[str]] = {}
    for family in operator.registry.collect():
        for sample in family.samples:
            out.setdefault(sample.name, set()).update(sample.labels)
    return out


def _series_labels() -> dict[str, set[str]]:
    """Every series name the operator and the runtime (with a GPU) export, with the label names it can carry in
    Prometheus: its own, and for the runtime's the PodMonitor's target labels."""
    from prometheus_client.parser import text_string_to_metric_families

    from modelserve.metrics import Metrics

    out = _operator_series()
    runtime = Metrics("mlp", "1", gpu_memory=lambda: {"cuda:0": {"allocated": 1, "reserved": 2}})
    for family in text_string_to_metric_families(runtime.render().decode()):
        for sample in family.samples:
            out.setdefault(sample.name, set(POD_MONITOR_LABELS)).update(sample.labels)
    return out


def _selectors(expr: str) -> list[tuple[str, set[str]]]:
    """(metric name, label names matched) of every selector in a PromQL expression (which must parse)."""
    found: list[tuple[str, set[str]]] = []

    def visit(node: Any) -> bool:
        if isinstance(node, promql_parser.VectorSelector):
            found.append((node.name, {m.name for m in node.matchers.matchers}))
        return True

    promql_parser.walk(promql_parser.parse(expr), visit)
    return found


def test_the_dashboard_queries_parse_and_select_series_that_exist() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert dashboard["uid"] == "modeldeploy" and dashboard["schemaVersion"] >= 36
    series = _series_labels()
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    cells: set[tuple[int, int]] = set()  # the 24-column grid: panels side by side, never overlapping
    for panel in panels:
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, panel["title"]
        mine = {(x, y) for x in range(pos["x"], pos["x"] + pos["w"]) for y in range(pos["y"], pos["y"] + pos["h"])}
        assert not cells & mine, panel["title"]
        cells |= mine
    queries = [(p["title"], t["expr"]) for p in panels for t in p.get("targets", [])]
    variables = dashboard["templating"]["list"]
    for variable in variables:
        if variable["type"] == "query":  # label_values(SELECTOR, LABEL)
            found = re.fullmatch(r"label_values\((.+), (\w+)\)", variable["query"]["query"])
            assert found, variable
            queries.append((variable["name"], found.group(1)))
    assert {v["name"] for v in variables} == {"datasource", "namespace", "name"}
    assert len(queries) >= 20
    for title, expr in queries:
        for name, variable in GRAFANA_VARIABLES.items():
            expr = expr.replace(name, variable)
        for metric, labels in _selectors(expr):
            assert metric in series, (title, metric)
            assert labels <= series[metric], (title, metric, labels - series[metric])
    for panel in panels:
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"} and panel["description"]


def test_the_dashboard_config_map_carries_the_file(rendered: dict[str, list[dict[str, Any]]]) -> None:
    config_map = next(o for o in rendered["monitoring-and-network-policy"]
                      if o["kind"] == "ConfigMap" and o["metadata"]["name"].endswith("-dashboard"))  # fmt: skip
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config_map["metadata"]["annotations"] == {"grafana_folder": "Models"}
    assert json.loads(config_map["data"]["modeldeploy.json"]) == json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert not [o for o in rendered["defaults"] if o["metadata"]["name"].endswith("-dashboard")]


def test_the_alerts_parse_and_use_only_metrics_the_operator_exports(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    # The ServiceMonitor's target labels come with every series (the operator's own `namespace` wins: honorLabels).
    target = {"job", "namespace", "instance", "pod", "service", "endpoint", "container"}
    exported = {name: labels | target for name, labels in {**_operator_series(), "up": set()}.items()}
    rule = one(rendered["monitoring-and-network-policy"], "PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "prometheus"
    (group,) = rule["spec"]["groups"]
    alerts = {r["alert"]: r for r in group["rules"]}
    assert len(alerts) == len(group["rules"]) == 6
    assert alerts["TooManyCanaries"]["expr"] == "sum(modeldeploy_canary_weight > 0) > 10"  # extraRules, as given
    for name, alert in alerts.items():
        used = _selectors(alert["expr"])
        assert used, name
        for metric, labels in used:
            assert metric in exported, (name, metric)
            assert labels <= exported[metric], (name, metric, labels - exported[metric])
        if name == "TooManyCanaries":
            continue
        assert alert["labels"]["severity"] in ("warning", "critical") and alert["labels"]["team"] == "ml-platform"
        assert alert["annotations"]["summary"] and alert["annotations"]["description"]
    down = alerts["ModelDeployOperatorDown"]["expr"]
    service = one(rendered["monitoring-and-network-policy"], "Service")["metadata"]["name"]
    assert f'job="{service}"' in down and f'namespace="{NAMESPACE}"' in down  # the ServiceMonitor's job: the Service
    assert "modeldeploy_active" in down  # up and active: a standby, or two that pause each other, reconcile nothing
    # Per-object alerts read the ModelDeployment's labels, kept by honorLabels (above).
    assert "$labels.namespace" in alerts["ModelDeploymentRolledBack"]["annotations"]["summary"]
    assert not of_kind(rendered["defaults"], "PrometheusRule")


def test_network_policy(rendered: dict[str, list[dict[str, Any]]]) -> None:
    objects = rendered["monitoring-and-network-policy"]
    policy = one(objects, "NetworkPolicy")
    pod_labels = one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    ingress, helm_test = policy["spec"]["ingress"]
    assert ingress["ports"] == helm_test["ports"] == [{"port": "metrics", "protocol": "TCP"}]
    assert ingress["from"] == VALUE_SETS["monitoring-and-network-policy"]["networkPolicy"]["metricsFrom"]
    (peer,) = helm_test["from"]
    assert set(peer) == {"podSelector"}  # the release's namespace only
    assert peer["podSelector"]["matchLabels"].items() <= one(objects, "Pod")["metadata"]["labels"].items()
    egress = policy["spec"]["egress"]
    api = [rule for rule in egress if any(p.get("port") == 6443 for p in rule.get("ports", []))]
    assert api and api[0]["to"] == [
        {"ipBlock": {"cidr": "10.96.0.1/32"}},
        {"ipBlock": {"cidr": "172.18.0.2/32"}},
    ]
    assert egress[-1] == VALUE_SETS["monitoring-and-network-policy"]["networkPolicy"]["extraEgress"][0]


MONITORING = {"namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: "monitoring"}}}


def container_ports(template: dict[str, Any]) -> dict[str, int]:
    """The named container ports of a pod template."""
    return {p["name"]: p["containerPort"] for c in template["spec"]["containers"] for p in c.get("ports", [])}


def helm_test_connection(objects: list[dict[str, Any]]) -> tuple[Pod, Pod, int]:
    """The `helm test` pod, the operator pod its metrics check reaches and the container port it reaches there:
    the METRICS_URL's Service, resolved to its target port on the pods it selects."""
    test_pod = one(objects, "Pod")
    env = {e["name"]: e["value"] for e in test_pod["spec"]["containers"][0]["env"]}
    url = urlsplit(env["METRICS_URL"])
    service_name, service_namespace = (url.hostname or "").split(".")[:2]
    service = one(objects, "Service", service_name)
    assert service["metadata"]["namespace"] == service_namespace
    (service_port,) = [p for p in service["spec"]["ports"] if p["port"] == url.port]
    deployment = one(objects, "Deployment")
    template = deployment["spec"]["template"]
    assert selector_matches({"matchLabels": service["spec"]["selector"]}, template["metadata"]["labels"])
    operator = Pod(deployment["metadata"]["namespace"], template["metadata"]["labels"], container_ports(template))
    target = service_port["targetPort"]
    port = operator.ports[target] if isinstance(target, str) else target
    return Pod(test_pod["metadata"]["namespace"], test_pod["metadata"]["labels"]), operator, port


@pytest.mark.parametrize(
    "metrics_from",
    [[], [MONITORING], [MONITORING, {"podSelector": {"matchLabels": {"app": "prometheus"}}}]],
    ids=["anyone", "a-namespace", "a-namespace-and-local-pods"],
)
def test_the_network_policy_admits_the_helm_test_pod(metrics_from: list[dict[str, Any]]) -> None:
    """`helm test` checks the metrics endpoint through the metrics Service: the operator's NetworkPolicy admits the
    test pod on that port whoever metricsFrom admits, or the test fails wherever NetworkPolicy is enforced."""
    objects = render({"networkPolicy": {"enabled": True, "metricsFrom": metrics_from}})
    source, operator, port = helm_test_connection(objects)
    policies = of_kind(objects, "NetworkPolicy")
    assert isolating_for_ingress(policies, operator)
    assert ingress_admitted(policies, source, operator, port)


def test_metrics_from_still_restricts_everyone_but_its_peers_and_the_helm_test_pod() -> None:
    objects = render({"networkPolicy": {"enabled": True, "metricsFrom": [MONITORING]}})
    source, operator, port = helm_test_connection(objects)
    policies = of_kind(objects, "NetworkPolicy")
    assert ingress_admitted(policies, Pod("monitoring", {"app": "prometheus"}), operator, port)
    # The test pod's labels in another namespace, another release's test pod, any other pod of the namespace.
    assert not ingress_admitted(policies, Pod("team-a", source.labels), operator, port)
    other_release = {**source.labels, "app.kubernetes.io/instance": "other"}
    assert not ingress_admitted(policies, Pod(NAMESPACE, other_release), operator, port)
    assert not ingress_admitted(policies, Pod(NAMESPACE, {"app": "debug"}), operator, port)
    # The test pod reaches the metrics port only.
    assert not ingress_admitted(policies, source, operator, operator.ports["health"])
    # Its labels are its own: no policy isolates it, and the metrics Service does not send requests to it.
    assert not isolating_for_ingress(policies, source)
    assert not selector_matches({"matchLabels": one(objects, "Service")["spec"]["selector"]}, source.labels)
    # Without the metrics Service the test does not call the endpoint, and only metricsFrom is admitted.
    objects = render(
        {"networkPolicy": {"enabled": True, "metricsFrom": [MONITORING]}, "metrics": {"service": {"enabled": False}}}
    )
    pod = one(objects, "Pod")
    assert {"name": "METRICS_URL", "value": ""} in pod["spec"]["containers"][0]["env"]
    source = Pod(NAMESPACE, pod["metadata"]["labels"])
    assert not ingress_admitted(of_kind(objects, "NetworkPolicy"), source, operator, port)


class _UniqueKeyLoader(yaml.SafeLoader):
    """A YAML loader that refuses a mapping repeating a key: parsers disagree on which of the two wins."""


def _unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    keys = [loader.construct_object(key, deep=True) for key, _ in node.value]
    repeated = sorted({str(key) for key in keys if keys.count(key) > 1})
    if repeated:
        raise yaml.constructor.ConstructorError(None, None, f"repeated keys {repeated}", node.start_mark)
    return loader.construct_mapping(node, deep=True)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


@pytest.mark.parametrize("name", list(VALUE_SETS))
def test_no_rendered_mapping_repeats_a_key(name: str) -> None:
    """A repeated key holds whichever value the client parsing it keeps: a test pod label `app.kubernetes.io/component`
    given twice (the operator's, then helm-test) would let a client keeping the first put the test pod behind the
    operator's Service and under its NetworkPolicy."""
    result = template(VALUE_SETS[name])
    assert result.returncode == 0, result.stderr
    assert [doc for doc in yaml.load_all(result.stdout, Loader=_UniqueKeyLoader) if doc]


# -- security


def pod_specs(objects: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    specs = [
        (f"Deployment/{o['metadata']['name']}", o["spec"]["template"]["spec"]) for o in of_kind(objects, "Deployment")
    ]
    specs += [(f"Pod/{o['metadata']['name']}", o["spec"]) for o in of_kind(objects, "Pod")]
    return specs


@pytest.mark.parametrize("name", list(VALUE_SETS))
def test_pods_meet_pod_security_restricted(rendered: dict[str, list[dict[str, Any]]], name: str) -> None:
    specs = pod_specs(rendered[name])
    assert len(specs) == 2
    for where, spec in specs:
        assert check_restricted(spec) == [], where
        for container in spec["containers"]:
            assert container["securityContext"]["readOnlyRootFilesystem"] is True
            assert container["resources"]["requests"]


def test_restricted_check_catches_violations(rendered: dict[str, list[dict[str, Any]]]) -> None:
    spec = json.loads(json.dumps(one(rendered["defaults"], "Deployment")["spec"]["template"]["spec"]))
    spec["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True
    spec["hostNetwork"] = True
    spec["volumes"].append({"name": "h", "hostPath": {"path": "/"}})
    assert len(check_restricted(spec)) == 3


# -- RBAC


def all_rules(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [rule for o in objects if o["kind"] in ("Role", "ClusterRole") for rule in o["rules"]]


@pytest.mark.parametrize("name", list(VALUE_SETS))
def test_rbac_has_no_wildcards_or_escalation(rendered: dict[str, list[dict[str, Any]]], name: str) -> None:
    rules = all_rules(rendered[name])
    assert rules
    for rule in rules:
        for key in ("apiGroups", "resources", "verbs", "resourceNames", "nonResourceURLs"):
            assert "*" not in rule.get(key, []), rule
            assert not any("*" in item for item in rule.get(key, [])), rule
        assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"]), rule
        if "secrets" in rule["resources"]:  # only the names rbac.readSecrets lists (test_read_secrets_...)
            assert name == "read-secrets" and rule["resources"] == ["secrets"] and rule["resourceNames"], rule
            assert rule["verbs"] == ["get"], rule


def test_read_secrets_grants_get_on_the_named_secrets_only(rendered: dict[str, list[dict[str, Any]]]) -> None:
    """rbac.readSecrets: a Role per namespace with get on exactly the names listed, bound to the operator's
    ServiceAccount; nothing else about Secrets anywhere (the defaults read none)."""
    objects = rendered["read-secrets"]
    sa = one(objects, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"]
    roles = {
        r["metadata"]["namespace"]: r for r in of_kind(objects, "Role") if r["metadata"]["name"].endswith("-secrets")
    }
    assert sorted(roles) == ["ml", "team-b"]
    (rule,) = RULES["secrets"]
    assert roles["ml"]["rules"] == [{**rule, "resourceNames": ["iris-tokens"]}]
    assert roles["team-b"]["rules"] == [{**rule, "resourceNames": ["a", "b.c"]}]
    bindings = [b for b in of_kind(objects, "RoleBinding") if b["metadata"]["name"].endswith("-secrets")]
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["ml", "team-b"]
    for binding in bindings:
        assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                      "name": roles[binding["metadata"]["namespace"]]["metadata"]["name"]}  # fmt: skip
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa, "namespace": NAMESPACE}]
    # The rest of the RBAC is the defaults'.
    rest = [o for o in objects if not o["metadata"]["name"].endswith("-secrets")]
    assert all_rules(rest) == all_rules(rendered["defaults"])


@pytest.mark.parametrize(
    ("read_secrets", "named"),
    [
        ({"ml": []}, "readSecrets/ml"),
        ({"ML": ["x"]}, "'ML'"),  # helm names the bad key, not where it is
        ({"ml": ["Bad_Name"]}, "readSecrets/ml/0"),
        ({"ml": ["x", "x"]}, "readSecrets/ml"),
        ({"ml": "x"}, "readSecrets/ml"),
    ],
    ids=["empty", "namespace-name", "secret-name", "twice", "not-a-list"],
)
def test_read_secrets_is_checked_at_install(read_secrets: dict[str, Any], named: str) -> None:
    result = template({"rbac": {"create": True, "readSecrets": read_secrets}})
    assert result.returncode != 0, f"accepted {read_secrets}"
    assert named in result.stderr, result.stderr


def test_cluster_wide_rbac_is_the_rules_file(rendered: dict[str, list[dict[str, Any]]]) -> None:
    objects = rendered["defaults"]
    role = one(objects, "ClusterRole", "modeldeploy")
    assert role["rules"] == RULES["namespaced"] + RULES["cluster"] + RULES["gpuPreflight"] + RULES["peering"]["cluster"]
    binding = one(objects, "ClusterRoleBinding", "modeldeploy")
    assert binding["roleRef"]["name"] == "modeldeploy"
    sa = one(objects, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa, "namespace": NAMESPACE}]
    assert not of_kind(objects, "Role")


def test_namespaced_rbac(rendered: dict[str, list[dict[str, Any]]]) -> None:
    objects = rendered["namespaced"]
    roles = of_kind(objects, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    for role in roles:
        assert role["rules"] == RULES["namespaced"] + RULES["peering"]["namespaced"]
    bindings = of_kind(objects, "RoleBinding")
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["team-a", "team-b"]
    for binding in bindings:
        assert binding["subjects"][0]["namespace"] == NAMESPACE
    cluster_role = one(objects, "ClusterRole", "modeldeploy-cluster")
    assert cluster_role["rules"] == RULES["cluster"] + RULES["gpuPreflight"]
    peerings = of_kind(objects, "KopfPeering")
    assert sorted(p["metadata"]["namespace"] for p in peerings) == ["team-a", "team-b"]
    assert not of_kind(objects, "ClusterKopfPeering")


def test_gpu_preflight_off_drops_its_cluster_wide_reads(rendered: dict[str, list[dict[str, Any]]]) -> None:
    objects = rendered["no-gpu-preflight"]
    assert one(objects, "ClusterRole", "modeldeploy-cluster")["rules"] == RULES["cluster"]
    env = {
        e["name"]: e.get("value")
        for e in one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["MODELDEPLOY_GPU_PREFLIGHT"] == "false"
    default_env = one(rendered["defaults"], "Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "MODELDEPLOY_GPU_PREFLIGHT", "value": "true"} in default_env


def test_rules_file_grants_what_the_operator_needs() -> None:
    granted: dict[tuple[str, str], set[str]] = {}
    for rule in (
        RULES["namespaced"]
        + RULES["cluster"]
        + RULES["gpuPreflight"]
        + RULES["peering"]["cluster"]
        + RULES["peering"]["namespaced"]
        + RULES["secrets"]
    ):
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                granted.setdefault((group, resource), set()).update(rule["verbs"])
    # Server-side apply (patch) creates and updates children; tests/component/test_security.py proves that the
    # operator makes exactly these calls.
    child = {"get", "list", "watch", "patch", "delete"}
    expected = {
        ("modeldeploy.io", "modeldeployments"): {"get", "list", "watch"},  # get: is one the cache holds gone?
        ("modeldeploy.io", "modeldeployments/status"): {"patch"},
        ("modeldeploy.io", "modeldeployments/scale"): {"patch"},
        ("apps", "deployments"): child,
        ("apps", "controllerrevisions"): child,
        ("", "services"): child,
        ("autoscaling", "horizontalpodautoscalers"): child,
        ("networking.k8s.io", "networkpolicies"): child,
        ("policy", "poddisruptionbudgets"): child,
        ("", "pods"): {"list", "watch"},  # list also cluster-wide: the GPU pre-flight (rules.yaml, gpuPreflight)
        ("", "nodes"): {"list"},  # the GPU pre-flight's allocatable GPUs
        ("", "events"): {"create"},
        ("", "secrets"): {"get"},  # only the names of rbac.readSecrets: golden requests' caller tokens
        ("apiextensions.k8s.io", "customresourcedefinitions"): {"list", "watch"},
        ("", "namespaces"): {"list", "watch"},
        ("gateway.networking.k8s.io", "httproutes"): {"get", "patch", "update"},
        ("kopf.dev", "clusterkopfpeerings"): {"get", "list", "watch", "patch"},
        ("kopf.dev", "kopfpeerings"): {"get", "list", "watch", "patch"},
    }
    assert granted == expected


def test_rbac_can_be_disabled() -> None:
    objects = render({"rbac": {"create": False}, "serviceAccount": {"create": False, "name": "existing"}})
    assert not [o for o in objects if o["kind"].endswith("Role") and "test" not in o["metadata"]["name"]]
    assert one(objects, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "existing"


# -- bad values are refused


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"replicas": 0}, "/replicas"),
        ({"unknownKey": 1}, "unknownKey"),
        ({"image": {"repository": "x", "pullPolicy": "Sometimes"}}, "pullPolicy"),
        ({"image": {"repository": "x", "pullPolicy": "Always", "digest": "sha256:abc"}}, "digest"),
        ({"watchNamespaces": ["Team_A"]}, "watchNamespaces"),
        ({"watchNamespaces": ["a", "a"]}, "must not repeat"),
        (
            {"policy": {"requireSha256": True, "allowedSchemes": ["ftp"], "allowedHosts": []}},
            "allowedSchemes",
        ),
        ({"policy": {"requireSha256": "yes", "allowedSchemes": [], "allowedHosts": []}}, "requireSha256"),
        ({"securityContext": {"privileged": True}}, "privileged"),
        ({"podSecurityContext": {"runAsUser": 0}}, "runAsUser"),
        ({"resources": {"requests": {"cpu": "lots"}}}, "cpu"),
        ({"metrics": {"port": 70000}}, "port"),
        ({"health": {"port": 9090}}, "must differ"),
        ({"replicas": 3, "peering": {"enabled": False}}, "needs peering.enabled"),
        (
            {"metrics": {"service": {"enabled": False}, "serviceMonitor": {"enabled": True}}},
            "needs metrics.service",
        ),
        ({"logLevel": "TRACE"}, "logLevel"),
        (
            {"networkPolicy": {"enabled": True, "apiServer": {"cidrs": ["not-a-cidr"], "ports": [443]}}},
            "cidrs",
        ),
        ({"resyncPeriodSeconds": 0}, "resyncPeriodSeconds"),
        ({"resyncSeconds": 10}, "resyncSeconds"),  # the old value, which did nothing: an error, not ignored
        ({"writeFailureSeconds": -1}, "writeFailureSeconds"),
        ({"peering": {"enabled": True, "name": "Bad Name", "lifetimeSeconds": 60}}, "name"),
        ({"metrics": {"serviceMonitor": {"enabled": True, "interval": "often"}}}, "interval"),
    ],
)
def test_bad_values_are_refused(values: dict[str, Any], message: str) -> None:
    result = template(values)
    assert result.returncode != 0, f"accepted {values}"
    assert message in result.stderr, result.stderr


@pytest.mark.parametrize("namespace", ["Monitoring", "monitoring.svc", "-monitoring", "m_1", "m" * 64])
def test_monitoring_namespace_must_be_a_namespace_name(namespace: str) -> None:
    """A namespace name is a DNS label; the operator refuses any other (OperatorConfig), so the chart refuses it at
    install time instead of leaving the operator crash-looping."""
    values = {"networkPolicy": {"defaultForModels": {"monitoringNamespace": namespace}}}
    result = template(values)
    assert result.returncode != 0, f"accepted {values}"
    assert "monitoringNamespace" in result.stderr and "additional properties" not in result.stderr, result.stderr


def test_schema_is_strict_everywhere() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text(encoding="utf-8"))

    def walk(node: dict[str, Any], path: str) -> None:
        if (
            node.get("type") == "object"
            and "properties" in node
            and path not in ("securityContext", "podSecurityContext")
        ):
            assert node.get("additionalProperties") is False, path
        for key, child in node.get("properties", {}).items():
            walk(child, f"{path}.{key}".strip("."))

    walk(schema, "")
    defaults = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))
    assert set(defaults) == set(schema["properties"])


# -- the helm test hook


def test_helm_test_hook(rendered: dict[str, list[dict[str, Any]]]) -> None:
    pod = one(rendered["defaults"], "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    env = {e["name"]: e["value"] for e in pod["spec"]["containers"][0]["env"]}
    assert env["METRICS_URL"] == f"http://modeldeploy-metrics.{NAMESPACE}.svc:9090/metrics"
    script = pod["spec"]["containers"][0]["args"][0]
    compile(script, "helm-test", "exec")  # the embedded check is valid Python
    assert "modeldeployments.modeldeploy.io" in script
    role = one(rendered["defaults"], "ClusterRole", "modeldeploy-test")
    assert role["rules"] == [
        {
            "apiGroups": ["apiextensions.k8s.io"],
            "resources": ["customresourcedefinitions"],
            "resourceNames": ["modeldeployments.modeldeploy.io"],
            "verbs": ["get"],
        }
    ]


def test_notes_render() -> None:
    result = helm(
        "install",
        "md",
        str(CHART),
        "--dry-run=client",
        "-n",
        "ns",
        "--set",
        "watchNamespaces={a,b}",
        "--kubeconfig",
        "/dev/null",
    )
    assert result.returncode == 0, result.stderr
    notes = result.stdout.split("NOTES:", 1)[1]
    assert 'kopf peering "md-modeldeploy"' in notes
    assert "Serving: namespaces a, b." in notes
    assert "kubectl -n a get kopfpeering md-modeldeploy" in notes
