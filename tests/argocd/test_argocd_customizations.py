"""The Argo CD health check and resource actions for ModelDeployment, run as Argo CD runs them."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from argocd_lua import HEALTH_CODES, ArgoLua, LuaScriptError
from hypothesis import given, settings
from hypothesis import strategies as st

REPO = Path(__file__).resolve().parents[2]
ARGOCD = REPO / "integrations" / "argocd"
ROOT = ARGOCD / "resource_customizations" / "modeldeploy.io" / "ModelDeployment"
ACTIONS = ROOT / "actions"
ACTION_NAMES = ("promote", "abort", "pause", "resume", "rollback")
ROLLOUT_PHASES = (
    "Idle",
    "Progressing",
    "Paused",
    "Analyzing",
    "Promoting",
    "RollingBack",
    "RolledBack",
    "Completed",
)
PHASES = ("Pending", "Progressing", "Ready", "Degraded", "Failed")

HEALTH_LUA = (ROOT / "health.lua").read_text(encoding="utf-8")
DISCOVERY_LUA = (ACTIONS / "discovery.lua").read_text(encoding="utf-8")


def load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


HEALTH_CASES = load(ROOT / "health_test.yaml")["tests"]
ACTION_CASES = load(ACTIONS / "action_test.yaml")["actionTests"]


@pytest.fixture
def argo() -> ArgoLua:
    return ArgoLua()


def action_script(name: str) -> str:
    return (ACTIONS / name / "action.lua").read_text(encoding="utf-8")


# -- the emulated environment is as strict as Argo CD's


def test_environment_has_no_string_library(argo: ArgoLua) -> None:
    with pytest.raises(LuaScriptError):
        argo.run('return {x = string.format("%d", 1)}', {})


def test_environment_numbers_are_floats_like_json(argo: ArgoLua) -> None:
    assert argo.run("return {x = tostring(obj.n), y = obj.n + 0.5}", {"n": 3}) == {"x": "3", "y": 3.5}


# -- health


@pytest.mark.parametrize("case", HEALTH_CASES, ids=[c["inputPath"] for c in HEALTH_CASES])
def test_health_fixture(argo: ArgoLua, case: dict[str, Any]) -> None:
    assert argo.health(HEALTH_LUA, load(ROOT / case["inputPath"])) == case["healthStatus"]


def test_health_fixtures_cover_every_status_and_rollout_phase() -> None:
    statuses = {c["healthStatus"]["status"] for c in HEALTH_CASES}
    assert statuses == {"Healthy", "Progressing", "Degraded", "Suspended"}
    phases = {load(ROOT / c["inputPath"]).get("status", {}).get("rollout", {}).get("phase") for c in HEALTH_CASES}
    assert set(ROLLOUT_PHASES) <= phases
    status_phases = {load(ROOT / c["inputPath"]).get("status", {}).get("phase") for c in HEALTH_CASES}
    assert set(PHASES) <= status_phases


def test_every_fixture_file_is_used() -> None:
    used = {c["inputPath"] for c in HEALTH_CASES}
    assert {f"testdata/{p.name}" for p in (ROOT / "testdata").glob("*.yaml")} == used


def test_unobserved_generation_wins_over_a_stale_healthy_status(argo: ArgoLua) -> None:
    obj = load(ROOT / "testdata" / "healthy.yaml")
    assert argo.health(HEALTH_LUA, obj)["status"] == "Healthy"
    obj["metadata"]["generation"] = obj["status"]["observedGeneration"] + 1
    assert argo.health(HEALTH_LUA, obj)["status"] == "Progressing"


def test_a_first_deploy_whose_model_does_not_load_is_degraded_in_the_servers_words(argo: ArgoLua) -> None:
    """The operator's own status (plan_reconcile) for a first deploy whose server crash-loops: Argo CD shows
    Degraded with the server's load error, not an endless Progressing."""
    from datetime import UTC, datetime

    from modeldeploy.config import OperatorConfig
    from modeldeploy.reconcile import Observed, plan_reconcile

    obj: dict[str, Any] = {
        "apiVersion": "modeldeploy.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "iris", "namespace": "ml", "uid": "u1", "generation": 1},
        "spec": {"model": {"version": "1", "storageUri": "s3://models/iris/1/model.pt", "format": "TorchScript"}},
    }
    now = datetime(2026, 11, 23, 3, 0, tzinfo=UTC)
    plan = plan_reconcile(obj, Observed(), OperatorConfig(), now)
    deployment = next(m for m in plan.apply if m["kind"] == "Deployment")
    revision = deployment["metadata"]["labels"]["modeldeploy.io/revision"]
    deployment["metadata"]["ownerReferences"][0]["uid"] = "u1"
    deployment["status"] = {"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1}
    error = "Cannot load model iris: model.pt: not a TorchScript archive"
    pod = {
        "metadata": {"name": f"iris-{revision}-x", "labels": {**deployment["spec"]["template"]["metadata"]["labels"]}},
        "spec": {"nodeName": "n1"},
        "status": {"containerStatuses": [{
            "name": "model-server", "ready": False, "restartCount": 3,
            "state": {"waiting": {"reason": "CrashLoopBackOff"}},
            "lastState": {"terminated": {"exitCode": 10, "reason": "Error", "message": error}},
        }]},
    }  # fmt: skip
    obj["status"] = plan.status
    plan = plan_reconcile(obj, Observed(deployments=[deployment], pods=[pod]), OperatorConfig(), now)
    obj["status"] = plan.status
    health = argo.health(HEALTH_LUA, obj)
    assert health["status"] == "Degraded", health
    assert health["message"].startswith("CrashLoop: Pods of revision ") and health["message"].endswith(error), health


def test_ready_but_not_stable_is_not_healthy(argo: ArgoLua) -> None:
    obj = load(ROOT / "testdata" / "healthy.yaml")
    obj["status"]["stableRevision"] = "0000000000"
    assert argo.health(HEALTH_LUA, obj)["status"] == "Progressing"


condition_st = st.fixed_dictionaries(
    {"type": st.sampled_from(["Ready", "Progressing", "Degraded", "Other"])},
    optional={
        "status": st.sampled_from(["True", "False", "Unknown"]),
        "reason": st.sampled_from(["InvalidSpec", "Available", "PodsNotReady", "RolledBack"]),
        "message": st.text(max_size=20),
    },
)
status_st = st.fixed_dictionaries(
    {},
    optional={
        "observedGeneration": st.integers(0, 5),
        "phase": st.sampled_from(PHASES),
        # The CRD makes conditions a list map keyed by type: the API server refuses two of one type.
        "conditions": st.lists(condition_st, max_size=4, unique_by=lambda c: c["type"]),
        "currentRevision": st.sampled_from(["aaaaaaaaaa", "bbbbbbbbbb"]),
        "stableRevision": st.sampled_from(["aaaaaaaaaa", "bbbbbbbbbb"]),
        "readyReplicas": st.integers(0, 3),
        "replicas": st.integers(0, 3),
        "rollout": st.fixed_dictionaries(
            {},
            optional={
                "phase": st.sampled_from(ROLLOUT_PHASES),
                "message": st.text(max_size=20),
                "currentStepIndex": st.integers(0, 5),
                "canaryWeight": st.integers(0, 100),
                "rejectedRevisions": st.lists(st.fixed_dictionaries({"revision": st.just("bbbbbbbbbb")}), max_size=2),
            },
        ),
    },
)


@settings(max_examples=150, deadline=None)
@given(status=st.none() | status_st, paused=st.none() | st.booleans(), generation=st.integers(1, 5))
def test_health_is_always_a_known_status(status: dict[str, Any] | None, paused: bool | None, generation: int) -> None:
    obj: dict[str, Any] = {"metadata": {"name": "m", "generation": generation}, "spec": {}}
    if paused is not None:
        obj["spec"]["paused"] = paused
    if status is not None:
        obj["status"] = status
    result = ArgoLua().health(HEALTH_LUA, obj)
    assert result["status"] in HEALTH_CODES and result["status"] not in ("Unknown", "Missing")
    assert result["message"]
    observed = status is not None and status.get("observedGeneration", -1) >= generation
    degraded_signals = status is not None and (
        status.get("phase") in ("Failed", "Degraded")
        or status.get("rollout", {}).get("phase") == "RolledBack"
        or any(
            (c["type"] == "Degraded" and c.get("status") == "True")
            or (c["type"] == "Ready" and c.get("status") == "False" and c.get("reason") == "InvalidSpec")
            for c in status.get("conditions", [])
        )
    )
    if not observed:
        assert result["status"] == "Progressing"
    elif degraded_signals:
        assert result["status"] == "Degraded"
    elif paused or (status or {}).get("rollout", {}).get("phase") == "Paused":
        assert result["status"] == "Suspended"


# -- actions


@pytest.mark.parametrize("case", ACTION_CASES, ids=[f"{c['action']}-{c['expectedOutputPath']}" for c in ACTION_CASES])
def test_action_fixture(argo: ArgoLua, case: dict[str, Any]) -> None:
    obj = load(ACTIONS / case["inputPath"])
    result = argo.action(action_script(case["action"]), obj, case.get("parameters"))
    assert result == load(ACTIONS / case["expectedOutputPath"])


def test_action_fixtures_cover_every_action() -> None:
    assert {c["action"] for c in ACTION_CASES} == set(ACTION_NAMES)
    assert {p.name for p in ACTIONS.iterdir() if p.is_dir() and p.name != "testdata"} == set(ACTION_NAMES)


def test_promote_token_changes_with_time() -> None:
    obj = load(ACTIONS / "testdata" / "canary_paused.yaml")
    first = ArgoLua().action(action_script("promote"), copy.deepcopy(obj))
    later = ArgoLua(now=ArgoLua().now.replace(minute=30)).action(action_script("promote"), copy.deepcopy(obj))
    key = "modeldeploy.io/promote"
    assert first["metadata"]["annotations"][key] != later["metadata"]["annotations"][key]


@pytest.mark.parametrize("params", [None, {}, {"revision": ""}])
def test_rollback_without_a_parameter_uses_the_previous_revision(argo: ArgoLua, params: dict[str, str] | None) -> None:
    obj = load(ACTIONS / "testdata" / "canary_paused.yaml")
    result = argo.action(action_script("rollback"), obj, params)
    assert result["metadata"]["annotations"]["modeldeploy.io/rollback-to"] == "1"


@pytest.mark.parametrize(
    ("revision", "error"),
    [
        ("abc", "positive whole number"),
        ("0", "positive whole number"),
        ("-1", "positive whole number"),
        ("2.5", "positive whole number"),
        ("9", "not in status.history"),
    ],
)
def test_rollback_rejects_bad_revisions(argo: ArgoLua, revision: str, error: str) -> None:
    obj = load(ACTIONS / "testdata" / "canary_paused.yaml")
    with pytest.raises(LuaScriptError, match=error):
        argo.action(action_script("rollback"), obj, {"revision": revision})


def test_rollback_without_history_explains(argo: ArgoLua) -> None:
    obj = load(ACTIONS / "testdata" / "canary_paused.yaml")
    del obj["status"]["history"]
    with pytest.raises(LuaScriptError, match="no previous revision"):
        argo.action(action_script("rollback"), obj)


def test_actions_keep_empty_objects(argo: ArgoLua) -> None:
    obj = load(ACTIONS / "testdata" / "canary_paused.yaml")
    obj["spec"]["runtime"] = {"nodeSelector": {}}
    result = argo.action(action_script("pause"), obj)
    assert result["spec"]["runtime"] == {"nodeSelector": {}}


# -- discovery


def enabled(actions: dict[str, dict[str, Any]]) -> set[str]:
    return {name for name, action in actions.items() if not action["disabled"]}


@pytest.mark.parametrize(
    ("fixture", "expected"),
    [
        ("actions/testdata/canary_paused.yaml", {"promote", "abort", "pause", "rollback"}),
        ("testdata/progressing_canary.yaml", {"promote", "abort", "pause", "rollback"}),
        ("testdata/progressing_analyzing.yaml", {"promote", "abort", "pause", "rollback"}),
        ("testdata/progressing_promoting.yaml", {"abort", "pause", "rollback"}),
        ("testdata/progressing_rollingBack.yaml", {"pause"}),
        ("testdata/healthy.yaml", {"pause", "rollback"}),
        ("testdata/suspended_specPaused.yaml", {"resume", "rollback"}),
        ("testdata/progressing_noStatus.yaml", {"pause"}),
    ],
)
def test_discovery_enables_actions_by_status(argo: ArgoLua, fixture: str, expected: set[str]) -> None:
    actions = argo.discovery(DISCOVERY_LUA, load(ROOT / fixture))
    assert set(actions) == set(ACTION_NAMES)
    assert enabled(actions) == expected


def test_discovery_offers_the_rollback_parameter_with_its_default(argo: ArgoLua) -> None:
    actions = argo.discovery(DISCOVERY_LUA, load(ACTIONS / "testdata" / "canary_paused.yaml"))
    assert actions["rollback"]["params"] == [{"name": "revision", "default": "1"}]


def test_discovery_rollback_default_skips_the_stable_revision(argo: ArgoLua) -> None:
    obj = load(ACTIONS / "testdata" / "canary_paused.yaml")
    obj["status"]["rollout"]["previousRevision"] = ""
    actions = argo.discovery(DISCOVERY_LUA, obj)
    # history is newest first: 7c4a8d09ca (3, the canary), 5d41402abc (2, stable), 9b2d5e1f00 (1)
    assert actions["rollback"]["params"] == [{"name": "revision", "default": "3"}]


# -- argocd-cm.yaml is generated from the Lua files


def test_argocd_cm_is_in_sync() -> None:
    result = subprocess.run(
        [sys.executable, str(ARGOCD / "generate_cm.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_argocd_cm_embeds_the_scripts() -> None:
    data = load(ARGOCD / "argocd-cm.yaml")["data"]
    assert data["resource.customizations.health.modeldeploy.io_ModelDeployment"] == HEALTH_LUA
    actions = yaml.safe_load(data["resource.customizations.actions.modeldeploy.io_ModelDeployment"])
    assert actions["discovery.lua"] == DISCOVERY_LUA
    assert {d["name"]: d["action.lua"] for d in actions["definitions"]} == {
        name: action_script(name) for name in ACTION_NAMES
    }
    ignored = yaml.safe_load(data["resource.customizations.ignoreDifferences.modeldeploy.io_ModelDeployment"])
    assert '.metadata.annotations."modeldeploy.io/promote"' in ignored["jqPathExpressions"]


@pytest.mark.parametrize("path", ["application.yaml", "models-application.yaml"])
def test_example_applications_are_well_formed(path: str) -> None:
    app = load(ARGOCD / path)
    assert app["apiVersion"] == "argoproj.io/v1alpha1" and app["kind"] == "Application"
    assert {"project", "source", "destination", "syncPolicy"} <= set(app["spec"])
    assert "RespectIgnoreDifferences=true" in app["spec"]["syncPolicy"]["syncOptions"]
