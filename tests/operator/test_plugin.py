"""kubectl-modeldeploy: the pure views and patches, parity with the Argo CD actions, and every subcommand
end to end against the emulated API server."""

from __future__ import annotations

import argparse
import asyncio
import copy
import dataclasses
import importlib.util
import io
import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from modeldeploy import plugin
from modeldeploy.analysis.golden import GoldenResult
from modeldeploy.analysis.sample import Sample
from modeldeploy.analysis.webhooks import WebhookResult
from modeldeploy.rollout.state import (
    AnalysisRun,
    HistoryEntry,
    MeasurementRecord,
    Rejection,
    RollbackPin,
    RolloutStatus,
)
from modeldeploy.schema import crd_manifest, validate_object
from modeldeploy.sim.cluster import Cluster, run_cluster

REPO = Path(__file__).resolve().parents[2]
ACTIONS = REPO / "integrations/argocd/resource_customizations/modeldeploy.io/ModelDeployment/actions"
MD = "modeldeploy.io/v1alpha1/modeldeployments"

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
T0 = NOW - timedelta(hours=3)
A, B, C, D = "a1a1a1a1a1", "b2b2b2b2b2", "c3c3c3c3c3", "d4d4d4d4d4"

STEPS = [{"setWeight": 10}, {"analysis": {}}, {"setWeight": 50}, {"pause": {"duration": "2m"}}]


def spec(**rollout: Any) -> dict[str, Any]:
    return {
        "model": {"name": "iris", "version": "3", "storageUri": "s3://models/iris/3", "format": "TorchScript"},
        "replicas": 4,
        "rollout": {
            "strategy": "Canary",
            "canary": {"steps": STEPS},
            "analysis": {"maxErrorRatio": 0.01, "interval": "30s", "count": 2},
            **rollout,
        },
    }


HISTORY = (
    HistoryEntry(C, 3, "3", "tpl-c", T0 + timedelta(hours=2)),
    HistoryEntry(B, 2, "2", "tpl-b", T0 + timedelta(hours=1)),
    HistoryEntry(A, 1, "1", "tpl-a", T0),
)

RUN = AnalysisRun(
    id=f"{C}-step-1-1",
    revision=C,
    gate="step-1",
    started_at=NOW - timedelta(minutes=5),
    phase="Successful",
    measurements=(
        MeasurementRecord(
            NOW - timedelta(minutes=4),
            "Pass",
            "error ratio 0.50% <= 1.00%",
            Sample(requests=200, errors=1, p99_seconds=0.0123, pods=1),
            Sample(requests=1800, errors=3, p99_seconds=0.011, pods=3),
        ),
        MeasurementRecord(
            NOW - timedelta(minutes=3, seconds=30),
            "Pass",
            "error ratio 0.00% <= 1.00%",
            Sample(requests=150, errors=0, p99_seconds=None, pods=1),
        ),
    ),
    message="2 of 2 measurements passed",
)

ROLLOUT = RolloutStatus(
    phase="Paused",
    stable_revision=B,
    canary_revision=C,
    current_step_index=3,
    canary_weight=50,
    step_started_at=NOW - timedelta(seconds=30),
    analysis_runs=(RUN,),
    rejected_revisions=(Rejection(D, "AnalysisFailed", "Analysis at step 1 failed", NOW - timedelta(days=1)),),
    previous_revision=A,
    warm_until=NOW + timedelta(minutes=5),
    message="Step 3: paused for 90s more (weight 50)",
    history=HISTORY,
)


def conditions() -> list[dict[str, Any]]:
    return [
        {
            "type": "Ready",
            "status": "True",
            "reason": "PreviousRevisionServing",
            "message": f"Revision {B} keeps serving.",
            "lastTransitionTime": "2026-01-02T03:00:05Z",
            "observedGeneration": 4,
        },
        {
            "type": "Progressing",
            "status": "True",
            "reason": "NewRevisionRollingOut",
            "message": f"Waiting for revision {C}.",
            "lastTransitionTime": "2026-01-02T02:54:05Z",
            "observedGeneration": 4,
        },
    ]


def status_of(rollout: RolloutStatus, **extra: Any) -> dict[str, Any]:
    return {
        "observedGeneration": 4,
        "phase": "Progressing",
        "conditions": conditions(),
        "replicas": 6,
        "readyReplicas": 6,
        "desiredReplicas": 4,
        "url": "http://iris.default.svc.cluster.local/v2/models/iris",
        "currentRevision": C,
        "stableRevision": rollout.stable_revision,
        "canaryRevision": rollout.canary_revision,
        "canaryWeight": rollout.canary_weight,
        "modelName": "iris",
        "modelVersion": "2",
        "canaryVersion": "3",
        "rollout": rollout.to_status(),
        "history": rollout.history_to_status(),
        **extra,
    }


def md(
    rollout: RolloutStatus = ROLLOUT, *, annotations: Mapping[str, str] | None = None, **spec_extra: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "modeldeploy.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {
            "name": "iris",
            "namespace": "default",
            "generation": 4,
            "creationTimestamp": "2026-01-01T03:04:05Z",
        },
        "spec": {**spec(), **spec_extra},
        "status": status_of(rollout),
    }
    if annotations:
        body["metadata"]["annotations"] = dict(annotations)
    return body


def deployment(revision: str, version: str, desired: int, ready: int) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": f"iris-{revision}",
            "namespace": "default",
            "creationTimestamp": "2026-01-02T02:04:05Z",
            "labels": {
                "modeldeploy.io/model-deployment": "iris",
                "modeldeploy.io/revision": revision,
                "app.kubernetes.io/version": version,
            },
        },
        "spec": {"replicas": desired},
        "status": {"replicas": desired, "readyReplicas": ready, "updatedReplicas": desired, "availableReplicas": ready},
    }


# --- pure: text helpers ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (-5, "<invalid>"),
        (0, "0s"),
        (45, "45s"),
        (119, "119s"),
        (120, "2m"),
        (330, "5m30s"),
        (600, "10m"),
        (179 * 60, "179m"),
        (3 * 3600, "3h"),
        (3 * 3600 + 25 * 60, "3h25m"),
        (30 * 3600, "30h"),
        (2 * 86400 + 4 * 3600, "2d4h"),
        (3 * 86400, "3d"),
        (400 * 86400, "400d"),
        (3 * 365 * 86400 + 20 * 86400, "3y20d"),
        (9 * 365 * 86400, "9y"),
    ],
)
def test_human_duration_matches_kubectl(seconds: float, text: str) -> None:
    assert plugin.human_duration(seconds) == text


def test_render_table_pads_columns_without_trailing_spaces() -> None:
    text = plugin.render_table(["NAME", "READY", "X"], [["iris", "2/2", ""], ["resnet-large", "0/1", "y"]])
    assert text == "NAME           READY   X\niris           2/2\nresnet-large   0/1     y\n"


@pytest.mark.parametrize(
    ("step", "text"),
    [
        ({"setWeight": 10}, "setWeight 10"),
        ({"pause": {"duration": "2m"}}, "pause 2m"),
        ({"pause": {}}, "pause (until promoted)"),
        ({"analysis": {}}, "analysis"),
        ({"surprise": 1}, "(unknown step)"),
    ],
)
def test_describe_step(step: dict[str, Any], text: str) -> None:
    assert plugin.describe_step(step) == text


# --- pure: status ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("phase", "canary", "index", "states"),
    [
        ("Paused", C, 3, ["Done", "Done", "Done", "Current"]),
        ("Paused/Promoting", C, 1, ["Done", "Skipped", "Skipped", "Skipped"]),  # a promotion held by spec.paused
        ("Progressing", C, 0, ["Current", "Pending", "Pending", "Pending"]),
        ("Analyzing", C, 1, ["Done", "Current", "Pending", "Pending"]),
        ("Promoting", C, 2, ["Done", "Done", "Skipped", "Skipped"]),
        ("Completed", "", 0, ["-", "-", "-", "-"]),
        ("RolledBack", "", 0, ["-", "-", "-", "-"]),
    ],
)
def test_step_states(phase: str, canary: str, index: int, states: list[str]) -> None:
    phase, _, paused_phase = phase.partition("/")
    rollout = RolloutStatus(
        phase=phase,  # type: ignore[arg-type]
        stable_revision=B,
        canary_revision=canary,
        current_step_index=index,
        paused_phase=paused_phase or None,  # type: ignore[arg-type]
    )
    rows = plugin.step_states(md(rollout))
    assert [r["state"] for r in rows] == states
    assert [r["step"] for r in rows] == ["setWeight 10", "analysis", "setWeight 50", "pause 2m"]


def test_revision_roles() -> None:
    pinned = RolloutStatus(
        stable_revision=B, previous_revision=A, rollback=RollbackPin(1, A, "tpl-a", C), history=HISTORY
    )
    assert plugin.revision_roles(md(ROLLOUT)) == {
        B: ["stable"],
        C: ["canary"],
        A: ["previous"],
        D: ["rejected (AnalysisFailed)"],
    }
    assert plugin.revision_roles(md(pinned)) == {B: ["stable"], A: ["previous", "rollback target"]}


def test_status_summary_is_data() -> None:
    deployments = [deployment(B, "2", 2, 2), deployment(C, "3", 2, 2), deployment(A, "1", 1, 1)]
    summary = plugin.status_summary(md(), deployments)
    assert json.loads(json.dumps(summary)) == summary
    assert summary["stable"] == {"revision": B, "number": 2, "modelVersion": "2"}
    assert summary["canary"] == {"revision": C, "number": 3, "modelVersion": "3", "weight": 50, "mirror": 0}
    assert summary["previous"] == {"revision": A, "number": 1, "modelVersion": "1", "warmUntil": "2026-01-02T03:09:05Z"}
    assert summary["rollout"] == {"phase": "Paused", "message": "Step 3: paused for 90s more (weight 50)"}
    assert summary["analysisRuns"] == [RUN.to_dict()]
    assert [d["roles"] for d in summary["deployments"]] == [["stable"], ["canary"], ["previous"]]
    assert summary["model"] == {"name": "iris", "version": "3", "format": "TorchScript"}


def test_status_shows_a_mirror_and_its_step() -> None:
    obj = md()
    obj["spec"]["rollout"]["canary"]["steps"] = [{"setMirror": 50}, *STEPS]
    obj["status"]["mirrorWeight"] = 50
    summary = plugin.status_summary(obj, [deployment(B, "2", 2, 2), deployment(C, "3", 2, 1)])
    assert summary["canary"]["mirror"] == 50 and summary["steps"][0]["step"] == "setMirror 50"
    text = plugin.format_status(summary, NOW)
    assert "Mirror:          50% of the requests copied to the canary (answers discarded)" in text.splitlines()


def test_status_text_shows_the_rollout() -> None:
    deployments = [deployment(B, "2", 2, 2), deployment(C, "3", 2, 1)]
    text = plugin.format_status(plugin.status_summary(md(), deployments), NOW)
    head = text.split("\n\n")[0].splitlines()
    assert head == [
        "Name:            iris",
        "Namespace:       default",
        "Model:           iris version 3 (TorchScript)",
        "Strategy:        Canary",
        "Traffic routing: Replicas",
        "Phase:           Progressing",
        "Rollout:         Paused: Step 3: paused for 90s more (weight 50)",
        f"Stable:          {B} (#2, model version 2)",
        f"Canary:          {C} (#3, model version 3)",
        "Weights:         stable 50%, canary 50%",
        f"Previous:        {A} (#1, model version 1), kept warm until 2026-01-02T03:09:05Z",
        "Replicas:        6 ready, 6 total, 4 desired",
        "URL:             http://iris.default.svc.cluster.local/v2/models/iris",
    ]
    assert (
        "Steps:\n"
        "    STEP   ACTION         STATE\n"
        "    0      setWeight 10   Done\n"
        "    1      analysis       Done\n"
        "    2      setWeight 50   Done\n"
        "  > 3      pause 2m       Current\n"
    ) in text
    assert f"  {C}-step-1-1  revision {C}  gate step-1  Successful  started 2026-01-02T02:59:05Z\n" in text
    assert "    2 of 2 measurements passed\n" in text
    runs = text.split("Analysis runs:\n")[1].split("\n\n")[0]
    measurement_lines = runs.splitlines()[3:]
    assert measurement_lines[0].split() == [
        "1", "2026-01-02T03:00:05Z", "Pass", "200", "0.50%", "12.3ms", "1800", "0.17%", "11.0ms",
        "error", "ratio", "0.50%", "<=", "1.00%",
    ]  # fmt: skip
    assert measurement_lines[1].split()[:9] == ["2", "2026-01-02T03:00:35Z", "Pass", "150", "0.00%", "-", "-", "-", "-"]
    assert f"  {D}   AnalysisFailed   2026-01-01T03:04:05Z   Analysis at step 1 failed\n" in text
    assert "  Ready         True     PreviousRevisionServing   4m    Revision" in text
    assert "  Progressing   True     NewRevisionRollingOut     10m   Waiting" in text
    assert f"  iris-{C}   {C}   3         canary   1/2     2            1           60m\n" in text


@pytest.mark.parametrize(
    ("change", "expected", "absent"),
    [
        ({"spec": {"paused": True}}, "Paused:          yes (spec.paused)", None),
        ({"metadata": {"generation": 5}}, "Generation:      5 (operator has observed 4 so far)", None),
        (
            {"status": {"rollout": None, "history": None, "canaryRevision": ""}},
            "Weights:         stable 100%",
            "Rollout:",
        ),
    ],
)
def test_status_text_optional_lines(change: dict[str, Any], expected: str, absent: str | None) -> None:
    obj = md()
    for key, values in change.items():
        obj[key].update(values)
    text = plugin.format_status(plugin.status_summary(obj), NOW)
    assert expected in text
    assert "Deployments: none" in text
    if absent:
        assert absent not in text


def test_status_of_a_fresh_object_without_status() -> None:
    obj = md()
    del obj["status"]
    text = plugin.format_status(plugin.status_summary(obj), NOW)
    assert "Phase:           -" in text
    assert "Stable:          -" in text
    assert "Conditions" not in text


def test_status_of_a_damaged_status_does_not_crash() -> None:
    obj = md()
    obj["status"] = {"rollout": {"phase": 7, "analysisRuns": "x", "history": 3}, "history": [1, {"number": "x"}],
                     "conditions": "bad", "replicas": "two"}  # fmt: skip
    summary = plugin.status_summary(obj, [{"metadata": None}])
    text = plugin.format_status(summary, NOW)
    assert "Rollout:         Idle" in text
    assert summary["analysisRuns"] == [] and summary["conditions"] == []


# --- pure: history and list ------------------------------------------------------------------------------


def test_history_table() -> None:
    assert plugin.format_history(plugin.history_records(md())) == (
        "NUMBER   REVISION     MODEL VERSION   CREATED                STATUS\n"
        f"3        {C}   3               2026-01-02T02:04:05Z   canary\n"
        f"2        {B}   2               2026-01-02T01:04:05Z   stable\n"
        f"1        {A}   1               2026-01-02T00:04:05Z   previous\n"
    )


def test_history_records_carry_roles_and_an_empty_history_says_so() -> None:
    records = plugin.history_records(md())
    assert [(r["number"], r["roles"]) for r in records] == [(3, ["canary"]), (2, ["stable"]), (1, ["previous"])]
    assert plugin.format_history([]) == "No revisions in status.history yet.\n"


def test_list_uses_the_crd_printer_columns() -> None:
    other = md()
    other["metadata"].update(name="bert", namespace="nlp")
    other["status"].update(
        phase="Ready",
        canaryWeight=0,
        readyReplicas=2,
        desiredReplicas=2,
        modelName="bert",
        modelVersion="7",
        canaryVersion="",
        stableRevision="",
    )
    other["spec"]["model"]["version"] = "7"
    # Sorted by namespace, then name, as kubectl get does.
    assert plugin.format_list([other, md()], NOW) == (
        "NAME   MODEL   STABLE   CANARY   READY   DESIRED   PHASE         WEIGHT   AGE\n"
        "iris   iris    2        3        6       4         Progressing   50       24h\n"
        "bert   bert    7                 2       2         Ready         0        24h\n"
    )
    wide = plugin.format_list([md()], NOW, wide=True, all_namespaces=True).splitlines()
    assert wide[0].split() == ["NAMESPACE", "NAME", "MODEL", "STABLE", "CANARY", "READY", "DESIRED", "PHASE",
                               "WEIGHT", "REVISION", "URL", "MIRROR", "AGE"]  # fmt: skip
    assert wide[1].split()[:2] == ["default", "iris"] and B in wide[1]


# --- pure: controls --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rollout", "requested", "expected"),
    [
        (ROLLOUT, None, 1),  # previousRevision's number
        (ROLLOUT, 2, 2),
        (ROLLOUT, 3, 3),
        # no previousRevision: the newest entry that is neither stable, canary nor the spec's revision
        (RolloutStatus(stable_revision=B, canary_revision=C, history=HISTORY), None, 1),
        (RolloutStatus(stable_revision=A, history=HISTORY), None, 2),
    ],
)
def test_rollback_target(rollout: RolloutStatus, requested: int | None, expected: int) -> None:
    assert plugin.rollback_target(md(rollout), requested) == expected


@pytest.mark.parametrize(
    ("rollout", "requested", "message"),
    [
        (ROLLOUT, 9, 'revision 9 is not in status.history of modeldeployment "iris" (available: 3, 2, 1)'),
        (RolloutStatus(), 1, "(available: none)"),
        (RolloutStatus(stable_revision=B, history=HISTORY[:2]), None, "no previous revision to roll back to"),
        (RolloutStatus(), None, "(status.history: empty); pass --to-revision N"),
    ],
)
def test_rollback_target_errors(rollout: RolloutStatus, requested: int | None, message: str) -> None:
    with pytest.raises(plugin.PluginError, match=None) as caught:
        plugin.rollback_target(md(rollout), requested)
    assert message in str(caught.value)


def test_promote_token_is_fresh() -> None:
    first = plugin.promote_patch(md(), NOW)
    assert first == {"metadata": {"annotations": {"modeldeploy.io/promote": "2026-01-02T03:04:05Z"}}}
    used = md(annotations={"modeldeploy.io/promote": "2026-01-02T03:04:05Z"})
    second = plugin.promote_patch(used, NOW.replace(microsecond=250))
    assert second["metadata"]["annotations"]["modeldeploy.io/promote"] == "2026-01-02T03:04:05.000250Z"
    handled = md(RolloutStatus(last_promote_token="2026-01-02T03:04:05Z", history=HISTORY))
    assert plugin.promote_patch(handled, NOW) != first


# --- parity with the Argo CD actions ---------------------------------------------------------------------


def _argocd_lua() -> ModuleType:
    spec_ = importlib.util.spec_from_file_location("argocd_lua", REPO / "tests/argocd/argocd_lua.py")
    assert spec_ is not None and spec_.loader is not None
    module = importlib.util.module_from_spec(spec_)
    spec_.loader.exec_module(module)
    return module


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


@pytest.mark.parametrize(
    ("action", "params", "patch"),
    [
        ("promote", None, lambda obj: plugin.promote_patch(obj, NOW)),
        ("abort", None, lambda obj: plugin.abort_patch()),
        ("pause", None, lambda obj: plugin.pause_patch(True)),
        ("resume", None, lambda obj: plugin.pause_patch(False)),
        ("rollback", None, lambda obj: plugin.rollback_patch(plugin.rollback_target(obj, None))),
        ("rollback", {"revision": "2"}, lambda obj: plugin.rollback_patch(plugin.rollback_target(obj, 2))),
    ],
)
def test_controls_match_the_argocd_actions(action: str, params: dict[str, str] | None, patch: Any) -> None:
    argocd = _argocd_lua()
    obj = md(annotations={"team": "vision"}, paused=action == "resume")
    assert argocd.NOW == NOW
    expected = argocd.ArgoLua().action((ACTIONS / action / "action.lua").read_text(), copy.deepcopy(obj), params)
    assert merge_patch(obj, patch(obj)) == expected


# --- kubeconfig and arguments ----------------------------------------------------------------------------


def test_find_kubeconfig_precedence(tmp_path: Path) -> None:
    home, first, second = tmp_path / "home", tmp_path / "one", tmp_path / "two"
    (home / ".kube").mkdir(parents=True)
    (home / ".kube" / "config").write_text("{}")
    second.write_text("{}")
    assert plugin.find_kubeconfig(None, {}, home) == home / ".kube" / "config"
    assert plugin.find_kubeconfig(None, {"KUBECONFIG": f"{first}:{second}"}, home) == second
    assert plugin.find_kubeconfig(str(second), {"KUBECONFIG": str(first)}, home) == second
    assert plugin.find_kubeconfig(None, {}, tmp_path / "nobody") is None
    with pytest.raises(plugin.PluginError, match=f"kubeconfig file {first} not found"):
        plugin.find_kubeconfig(str(first), {}, home)


def _kubeconfig(path: Path, server: str = "http://127.0.0.1:1") -> Path:
    contexts = [
        {"name": "dev", "context": {"cluster": "c", "user": "u", "namespace": "team-a"}},
        {"name": "bare", "context": {"cluster": "c", "user": "u"}},
    ]
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": server}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": contexts,
        "current-context": "dev",
    }
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize(
    ("argv", "namespace", "context"),
    [
        (["list"], "team-a", None),
        (["list", "--context", "bare"], "default", "bare"),
        (["--context", "bare", "-n", "x", "list"], "x", "bare"),
        (["-n", "x", "status", "iris"], "x", None),
        (["status", "iris", "-n", "y"], "y", None),
    ],
)
def test_namespace_comes_from_the_flag_else_the_context(
    tmp_path: Path, argv: list[str], namespace: str, context: str | None
) -> None:
    path = _kubeconfig(tmp_path / "config")
    args = plugin.build_parser().parse_args([*argv, "--kubeconfig", str(path)])
    target = plugin.resolve_target(args, {}, tmp_path)
    assert target == plugin.Target(path, context, namespace)


@pytest.mark.parametrize(
    ("argv", "contents", "message"),
    [
        (["list"], None, "no Kubernetes configuration found: pass --kubeconfig, set KUBECONFIG"),
        (["list", "--context", "nope"], "config", "Context 'nope' not found"),
        (["list"], "not: [a, kubeconfig", "cannot be read"),
        (["list"], "apiVersion: v1\nkind: Config\n", "cannot be read"),
    ],
)
def test_configuration_errors_are_one_line(tmp_path: Path, argv: list[str], contents: str | None, message: str) -> None:
    if contents == "config":
        argv = [*argv, "--kubeconfig", str(_kubeconfig(tmp_path / "config"))]
    elif contents is not None:
        (tmp_path / "bad").write_text(contents)
        argv = [*argv, "--kubeconfig", str(tmp_path / "bad")]
    args = plugin.build_parser().parse_args(argv)
    with pytest.raises(plugin.PluginError) as caught:
        plugin.resolve_target(args, {}, tmp_path / "home")
    assert message in str(caught.value)


@pytest.mark.parametrize(
    "argv",
    [[], ["status"], ["rollback", "iris", "--to-revision", "0"], ["rollback", "iris", "--to-revision", "x"],
     ["history", "iris", "-o", "table"], ["frobnicate", "iris"]],
)  # fmt: skip
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert plugin.main(argv) == 2
    assert "usage: kubectl modeldeploy" in capsys.readouterr().err


def test_unreachable_server_is_a_clear_error(tmp_path: Path) -> None:
    path = _kubeconfig(tmp_path / "config")
    out, err = io.StringIO(), io.StringIO()
    assert plugin.main(["status", "iris", "--kubeconfig", str(path)], out=out, err=err) == 1
    assert err.getvalue().startswith("Error: cannot reach the API server")
    assert "Traceback" not in err.getvalue() and out.getvalue() == ""


# --- end to end against the emulated API server ----------------------------------------------------------


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    async with run_cluster(crds=[crd_manifest()], ready_delay=0.05) as running:
        yield running


def seed(cluster: Cluster, rollout: RolloutStatus = ROLLOUT, **metadata: Any) -> None:
    obj = md(rollout)
    del obj["status"]
    obj["metadata"] = {"name": "iris", "namespace": "default", **metadata}
    assert validate_object(obj) == []
    cluster.emulator.create_object(MD, obj)
    cluster.emulator.patch_object(MD, "default", "iris", {"status": status_of(rollout)}, subresource="status")


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str
    requests: list[tuple[str, str, str | None]]
    """(verb, resource, subresource) of every API request the command made."""


async def run(cluster: Cluster, *argv: str) -> Result:
    """Run the plugin in a thread (it owns its event loop)."""
    out, err = io.StringIO(), io.StringIO()
    start = len(cluster.requests)
    argv_ = [*argv, "--kubeconfig", str(cluster.kubeconfig_path)]
    code = await asyncio.to_thread(plugin.main, argv_, out=out, err=err)
    requests = [(r.verb, r.resource, r.subresource) for r in cluster.requests[start:]]
    return Result(code, out.getvalue(), err.getvalue(), requests)


def stored(cluster: Cluster) -> dict[str, Any]:
    obj = cluster.emulator.get_object(MD, "default", "iris")
    assert obj is not None
    return obj


READ = ("get", "modeldeployments", None)
PATCH = ("patch", "modeldeployments", None)


async def test_status_end_to_end(cluster: Cluster) -> None:
    seed(cluster)
    r = await run(cluster, "status", "iris")
    assert (r.code, r.err) == (0, "")
    assert "Rollout:         Paused: Step 3: paused for 90s more (weight 50)" in r.out
    assert f"Canary:          {C} (#3, model version 3)" in r.out
    assert r.requests == [READ, ("list", "deployments", None), ("list", "events", None)]
    assert "Recent warnings" not in r.out  # none posted
    r = await run(cluster, "status", "iris", "-o", "json")
    assert r.code == 0 and json.loads(r.out)["canary"]["weight"] == 50
    r = await run(cluster, "status", "iris", "-o", "yaml")
    assert r.code == 0 and yaml.safe_load(r.out)["stable"]["revision"] == B


async def test_status_lists_the_children(cluster: Cluster) -> None:
    seed(cluster)
    child = deployment(B, "2", 1, 0)
    del child["status"]
    cluster.emulator.create_object("apps/v1/deployments", child)
    r = await run(cluster, "status", "iris")
    assert r.code == 0
    assert f"  iris-{B}   {B}   2         stable" in r.out


def _event(involved: Mapping[str, Any], type_: str, reason: str, at: str, message: str, **extra: Any) -> dict[str, Any]:
    meta = involved["metadata"]
    return {
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"generateName": "iris.", "namespace": meta["namespace"]},
        "involvedObject": {"apiVersion": involved["apiVersion"], "kind": involved["kind"], "name": meta["name"],
                           "namespace": meta["namespace"], "uid": meta["uid"]},
        "type": type_, "reason": reason, "message": message, "lastTimestamp": at, **extra,
    }  # fmt: skip


async def test_status_shows_the_latest_warnings_about_the_object(cluster: Cluster) -> None:
    seed(cluster)
    obj = stored(cluster)
    other = {**obj, "metadata": {**obj["metadata"], "name": "other", "uid": "uid-of-another-object"}}
    refused = "The API server refused the status update (422 Invalid: status.rollout: policy)"
    for event in (
        _event(obj, "Warning", "StatusWriteRejected", "2026-01-01T12:09:00Z", refused, count=3),
        _event(obj, "Normal", "StepCompleted", "2026-01-01T12:09:30Z", "step 2 done"),
        _event(obj, "Warning", "MeasurementFailed", "2026-01-01T12:05:00Z", "Prometheus query failed"),
        _event(other, "Warning", "AnalysisFailed", "2026-01-01T12:09:50Z", "not about iris"),
        *(_event(obj, "Warning", f"Old{n}", f"2026-01-01T11:0{n}:00Z", "older") for n in range(5)),
    ):
        cluster.emulator.create_object("v1/events", event)
    r = await run(cluster, "status", "iris")
    assert r.code == 0
    section = r.out.split("Recent warnings:\n", 1)[1].splitlines()
    assert section[0].split() == ["REASON", "COUNT", "LAST", "SEEN", "MESSAGE"]
    assert [line.split()[0] for line in section[1:]] == ["StatusWriteRejected", "MeasurementFailed", "Old4", "Old3",
                                                         "Old2"]  # fmt: skip
    assert section[1].split()[1] == "3" and section[1].endswith(refused)
    r = await run(cluster, "status", "iris", "-o", "json")
    assert json.loads(r.out)["warnings"][0] == {
        "reason": "StatusWriteRejected", "count": 3, "lastSeen": "2026-01-01T12:09:00Z", "message": refused,
    }  # fmt: skip


async def test_status_without_access_to_events_says_so_and_shows_the_rest(cluster: Cluster) -> None:
    seed(cluster)
    cluster.emulator.forbid("v1/events", "list")
    r = await run(cluster, "status", "iris")
    assert (r.code, r.err) == (0, "")
    assert "Recent warnings: events could not be read (403 Forbidden)" in r.out and "Canary:" in r.out


async def test_history_and_list_end_to_end(cluster: Cluster) -> None:
    seed(cluster)
    r = await run(cluster, "history", "iris")
    assert r.code == 0 and r.out == plugin.format_history(plugin.history_records(md()))
    r = await run(cluster, "history", "iris", "-o", "json")
    assert [h["number"] for h in json.loads(r.out)] == [3, 2, 1]
    r = await run(cluster, "list")
    assert r.code == 0 and r.out.splitlines()[1].split()[:7] == ["iris", "iris", "2", "3", "6", "4", "Progressing"]
    assert r.requests == [("list", "modeldeployments", None)]
    r = await run(cluster, "list", "-n", "kube-system")
    assert (r.code, r.out, r.err) == (0, "", 'No modeldeployments found in namespace "kube-system".\n')
    r = await run(cluster, "list", "-A", "-o", "yaml")
    assert [o["metadata"]["name"] for o in yaml.safe_load(r.out)["items"]] == ["iris"]


async def test_promote_end_to_end(cluster: Cluster) -> None:
    seed(cluster)
    r = await run(cluster, "promote", "iris")
    assert (r.code, r.err) == (0, "")
    token = stored(cluster)["metadata"]["annotations"]["modeldeploy.io/promote"]
    assert r.out == (
        f'Promotion of modeldeployment "iris" in namespace "default" requested (modeldeploy.io/promote={token}).\n'
    )
    assert r.requests == [READ, PATCH]
    r = await run(cluster, "promote", "iris")
    assert r.code == 0 and stored(cluster)["metadata"]["annotations"]["modeldeploy.io/promote"] != token


async def test_abort_and_retry_end_to_end(cluster: Cluster) -> None:
    seed(cluster)
    r = await run(cluster, "abort", "iris")
    assert r.code == 0 and "retry iris" in r.out
    assert stored(cluster)["metadata"]["annotations"] == {"modeldeploy.io/abort": "true"}
    assert r.requests == [READ, PATCH]
    r = await run(cluster, "abort", "iris")
    assert r.code == 0 and "already aborted" in r.out and r.requests == [READ]
    r = await run(cluster, "retry", "iris")
    assert r.code == 0 and "modeldeploy.io/abort" not in (stored(cluster)["metadata"].get("annotations") or {})
    assert r.requests == [READ, PATCH]
    r = await run(cluster, "retry", "iris")
    assert r.code == 0 and "nothing to retry" in r.out and r.requests == [READ]


async def test_retry_refuses_an_abort_in_the_spec(cluster: Cluster) -> None:
    seed(cluster)
    cluster.emulator.patch_object(MD, "default", "iris", {"spec": {"rollout": {"abort": True}}})
    r = await run(cluster, "retry", "iris")
    assert r.code == 1 and r.err.startswith('Error: spec.rollout.abort is true in modeldeployment "iris"')
    assert r.requests == [READ]


async def test_pause_and_resume_end_to_end(cluster: Cluster) -> None:
    seed(cluster)
    generation = stored(cluster)["metadata"]["generation"]
    r = await run(cluster, "pause", "iris")
    assert r.code == 0 and r.out == 'modeldeployment "iris" in namespace "default" paused (spec.paused=true).\n'
    assert stored(cluster)["spec"]["paused"] is True
    assert stored(cluster)["metadata"]["generation"] == generation + 1
    assert r.requests == [READ, PATCH]
    r = await run(cluster, "pause", "iris")
    assert "already paused" in r.out and r.requests == [READ]
    r = await run(cluster, "resume", "iris")
    assert r.code == 0 and stored(cluster)["spec"]["paused"] is False and r.requests == [READ, PATCH]
    # The controls leave the status alone.
    assert stored(cluster)["status"]["rollout"] == ROLLOUT.to_status()


async def test_rollback_end_to_end(cluster: Cluster) -> None:
    seed(cluster)
    r = await run(cluster, "rollback", "iris")
    assert r.code == 0 and f"to revision 1 ({A}, model version 1) requested" in r.out
    assert stored(cluster)["metadata"]["annotations"] == {"modeldeploy.io/rollback-to": "1"}
    assert r.requests == [READ, PATCH]
    r = await run(cluster, "rollback", "iris", "--to-revision", "2")
    assert r.code == 0 and stored(cluster)["metadata"]["annotations"] == {"modeldeploy.io/rollback-to": "2"}


async def test_rollback_already_handled(cluster: Cluster) -> None:
    pinned = RolloutStatus(
        stable_revision=A, last_rollback_to=1, rollback=RollbackPin(1, A, "tpl-a", C), history=HISTORY
    )
    seed(cluster, pinned, annotations={"modeldeploy.io/rollback-to": "1"})
    r = await run(cluster, "rollback", "iris", "--to-revision", "1")
    assert r.code == 0 and "already rolled back to revision 1" in r.out and r.requests == [READ]
    released = status_of(RolloutStatus(stable_revision=C, last_rollback_to=1, history=HISTORY))
    released["rollout"]["rollback"] = None  # merge patch: delete the pin
    cluster.emulator.patch_object(MD, "default", "iris", {"status": released}, subresource="status")
    r = await run(cluster, "rollback", "iris", "--to-revision", "1")
    assert r.code == 1 and "was already requested and handled" in r.err and r.requests == [READ]


async def test_bad_revision_is_an_error(cluster: Cluster) -> None:
    seed(cluster)
    r = await run(cluster, "rollback", "iris", "--to-revision", "7")
    assert (r.code, r.out) == (1, "")
    assert r.err == 'Error: revision 7 is not in status.history of modeldeployment "iris" (available: 3, 2, 1)\n'
    assert r.requests == [READ]
    assert "annotations" not in stored(cluster)["metadata"]


@pytest.mark.parametrize(
    "argv",
    [["status", "ghost"], ["history", "ghost"], ["promote", "ghost"], ["abort", "ghost"], ["retry", "ghost"],
     ["pause", "ghost"], ["resume", "ghost"], ["rollback", "ghost"], ["status", "iris", "-n", "kube-system"]],
)  # fmt: skip
async def test_not_found(cluster: Cluster, argv: list[str]) -> None:
    seed(cluster)
    r = await run(cluster, *argv)
    name, namespace = ("iris", "kube-system") if "iris" in argv else ("ghost", "default")
    assert (r.code, r.out) == (1, "")
    assert r.err == f'Error: modeldeployment "{name}" not found in namespace "{namespace}"\n'
    assert r.requests == [READ]


async def test_unknown_resource_type_is_explained(cluster: Cluster) -> None:
    cluster.emulator.unregister(cluster.emulator.resource_type(MD))
    r = await run(cluster, "list")
    assert (r.code, r.out) == (1, "")
    assert r.err.startswith("Error: the server does not know ModelDeployments")


async def test_api_errors_carry_the_server_message(cluster: Cluster) -> None:
    seed(cluster)

    def frozen(new: dict[str, Any], old: dict[str, Any] | None) -> list[str]:
        return ["spec.paused: changes are frozen for the release"] if new["spec"].get("paused") else []

    cluster.emulator.set_admission(MD, frozen)
    r = await run(cluster, "pause", "iris")
    assert (r.code, r.out) == (1, "")
    assert r.err.startswith("Error from server (Invalid): ")
    assert "spec.paused: changes are frozen for the release" in r.err and r.err.count("\n") == 1
    assert r.requests == [READ, PATCH]


def test_parser_has_every_subcommand() -> None:
    parser = plugin.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert set(sub.choices) == {"status", "history", "list", "promote", "abort", "retry", "pause", "resume", "rollback"}


def test_a_long_run_shows_its_counts_and_numbers_its_kept_measurements() -> None:
    run = dataclasses.replace(RUN, measurements=(), passed=0, phase="Running", message="")
    for n in range(1, 16):
        outcome = "Fail" if n == 3 else "Pass"
        run = run.record(MeasurementRecord(NOW, outcome, f"measurement {n}", Sample(requests=100, errors=0)))
    lines = plugin.format_analysis_run(json.loads(json.dumps(run.to_dict()))).splitlines()
    assert lines[1].strip() == "15 measurements: 14 passed, 1 failed, 0 inconclusive; 11 kept (the latest)"
    numbers = [line.split()[0] for line in lines[3:]]
    assert numbers == ["3", *map(str, range(6, 16))]
    assert "Fail" in lines[3].split() and lines[3].endswith("measurement 3")


def test_analysis_runs_with_golden_requests_show_their_wrong_answers() -> None:
    golden = GoldenResult(checks=6, mismatches=3, pods=1, detail=("case 'row-3' on pod p: argmax [0], expected [1]",))
    run = dataclasses.replace(
        RUN,
        phase="Failed",
        measurements=(
            MeasurementRecord(NOW, "Fail", "Failed goldenRequests: ...", Sample(requests=0), None, golden),
            MeasurementRecord(NOW, "Pass", "Passed ...", Sample(requests=10, errors=0)),
        ),
        passed=0,  # counted from these records
    )
    lines = plugin.format_analysis_run(json.loads(json.dumps(run.to_dict()))).splitlines()
    assert lines[2].split()[-3:] == ["GOLDEN", "WRONG", "MESSAGE"]
    assert lines[3].split()[-4:] == ["3/6", "Failed", "goldenRequests:", "..."]
    assert lines[4].split()[-3:] == ["-", "Passed", "..."]  # a measurement without golden requests
    # Without golden requests the table keeps its columns.
    assert "GOLDEN" not in plugin.format_analysis_run(RUN.to_dict())


def test_analysis_runs_with_webhooks_show_their_answers() -> None:
    no = WebhookResult(checks=2, failures=1, detail=("webhook 'evals' answered HTTP 412: accuracy 0.71",))
    golden = GoldenResult(checks=1, mismatches=0, pods=1)
    run = dataclasses.replace(
        RUN,
        phase="Failed",
        measurements=(
            MeasurementRecord(NOW, "Fail", "Failed webhooks: ...", Sample(requests=0), None, golden, webhooks=no),
            MeasurementRecord(NOW, "Pass", "Passed ...", Sample(requests=10, errors=0)),
        ),
        passed=0,
    )
    lines = plugin.format_analysis_run(json.loads(json.dumps(run.to_dict()))).splitlines()
    assert lines[2].split()[-5:] == ["GOLDEN", "WRONG", "WEBHOOKS", "NO", "MESSAGE"]
    assert lines[3].split()[-5:] == ["0/1", "1/2", "Failed", "webhooks:", "..."]
    assert lines[4].split()[-4:] == ["-", "-", "Passed", "..."]
    assert "WEBHOOKS" not in plugin.format_analysis_run(RUN.to_dict())
