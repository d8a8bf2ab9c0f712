"""The per-ModelDeployment PodDisruptionBudget: spec, schema, builder and reconcile wiring."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from reconcile_kit import Objects, apply_plan, assert_valid_k8s, body, observed

from modeldeploy.build import build_disruption_budget, wants_disruption_budget
from modeldeploy.config import OperatorConfig
from modeldeploy.reconcile import Observed, plan_reconcile
from modeldeploy.schema import SpecError
from modeldeploy.spec import parse_model_deployment

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("block", "limits"),
    [
        (None, {"maxUnavailable": 1}),
        ({}, {"maxUnavailable": 1}),
        ({"enabled": True}, {"maxUnavailable": 1}),
        ({"maxUnavailable": 2}, {"maxUnavailable": 2}),
        ({"maxUnavailable": "25%"}, {"maxUnavailable": "25%"}),
        ({"maxUnavailable": 0}, {"maxUnavailable": 0}),
        ({"minAvailable": 2}, {"minAvailable": 2}),
        ({"minAvailable": "50%"}, {"minAvailable": "50%"}),
        ({"minAvailable": 0}, {"minAvailable": 0}),
    ],
)
def test_the_budget_covers_every_revision_and_never_holds_unready_pods(
    block: dict[str, Any] | None, limits: dict[str, Any]
) -> None:
    md = parse_model_deployment(body(**({"disruptionBudget": block} if block is not None else {})))
    pdb = build_disruption_budget(md)
    assert_valid_k8s(pdb)
    assert pdb["metadata"]["name"] == "iris" and pdb["metadata"]["namespace"] == "ml"
    # Every revision's pods: the revision label is not in the selector.
    assert pdb["spec"]["selector"] == {"matchLabels": {"modeldeploy.io/model-deployment": "iris"}}
    assert pdb["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"
    assert {k: v for k, v in pdb["spec"].items() if k in ("maxUnavailable", "minAvailable")} == limits


@pytest.mark.parametrize(
    ("block", "config", "wanted"),
    [
        (None, OperatorConfig(), True),
        ({"maxUnavailable": 2}, OperatorConfig(), True),
        ({"enabled": False}, OperatorConfig(), False),
        (None, OperatorConfig(model_disruption_budget=False), False),
        ({"maxUnavailable": 2}, OperatorConfig(model_disruption_budget=False), False),
        # The ModelDeployment's own choice wins over the operator's default, either way.
        ({"enabled": True}, OperatorConfig(model_disruption_budget=False), True),
        ({"enabled": False}, OperatorConfig(model_disruption_budget=True), False),
    ],
)
def test_who_decides_whether_there_is_a_budget(
    block: dict[str, Any] | None, config: OperatorConfig, wanted: bool
) -> None:
    md = parse_model_deployment(body(**({"disruptionBudget": block} if block is not None else {})))
    assert wants_disruption_budget(md, config) is wanted


@pytest.mark.parametrize(
    ("block", "field"),
    [
        ({"maxUnavailable": 1, "minAvailable": 1}, "spec.disruptionBudget"),
        ({"maxUnavailable": -1}, "spec.disruptionBudget.maxUnavailable"),
        ({"minAvailable": -2}, "spec.disruptionBudget.minAvailable"),
        ({"maxUnavailable": "5"}, "spec.disruptionBudget.maxUnavailable"),  # a string must be a percentage
        ({"maxUnavailable": "101%"}, "spec.disruptionBudget.maxUnavailable"),
        ({"minAvailable": "-5%"}, "spec.disruptionBudget.minAvailable"),
        ({"minAvailable": 1.5}, "spec.disruptionBudget.minAvailable"),
        ({"enabled": "yes"}, "spec.disruptionBudget.enabled"),
        ({"maxUnavailabe": 1}, "spec.disruptionBudget"),
    ],
)
def test_the_schema_rejects_a_budget_kubernetes_would_refuse(block: dict[str, Any], field: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse_model_deployment(body(disruptionBudget=block))
    assert caught.value.field.startswith(field), caught.value


def test_reconcile_keeps_then_removes_the_budget() -> None:
    objects: Objects = {}
    obj = body()
    plan = plan_reconcile(obj, Observed(), OperatorConfig(), NOW)
    kinds = [m["kind"] for m in plan.apply]
    # In place with the first pods' Deployment, in the same pass.
    assert "PodDisruptionBudget" in kinds and "Deployment" in kinds
    apply_plan(plan, objects)
    obj["status"] = plan.status
    again = plan_reconcile(obj, observed(objects.values()), OperatorConfig(), NOW)
    assert not any(m["kind"] == "PodDisruptionBudget" for m in again.apply), "an unchanged budget is not re-applied"
    # A changed limit is applied to the same object.
    obj["spec"]["disruptionBudget"] = {"maxUnavailable": "50%"}
    changed = plan_reconcile(obj, observed(objects.values()), OperatorConfig(), NOW)
    (pdb,) = [m for m in changed.apply if m["kind"] == "PodDisruptionBudget"]
    assert pdb["spec"]["maxUnavailable"] == "50%" and "minAvailable" not in pdb["spec"]
    apply_plan(changed, objects)
    # Deleted by someone: put back.
    del objects[("PodDisruptionBudget", "iris")]
    restored = plan_reconcile(obj, observed(objects.values()), OperatorConfig(), NOW)
    assert [m["metadata"]["name"] for m in restored.apply if m["kind"] == "PodDisruptionBudget"] == ["iris"]
    apply_plan(restored, objects)
    # Switched off: the operator deletes its own, and nothing else.
    obj["spec"]["disruptionBudget"] = {"enabled": False}
    off = plan_reconcile(obj, observed(objects.values()), OperatorConfig(), NOW)
    assert [(r.kind, r.name) for r in off.delete] == [("PodDisruptionBudget", "iris")]
    assert not any(m["kind"] == "PodDisruptionBudget" for m in off.apply)


def test_the_operator_wide_default_off_removes_budgets_the_spec_does_not_ask_for() -> None:
    objects: Objects = {}
    obj = body()
    apply_plan(plan_reconcile(obj, Observed(), OperatorConfig(), NOW), objects)
    off = plan_reconcile(obj, observed(objects.values()), OperatorConfig(model_disruption_budget=False), NOW)
    assert [(r.kind, r.name) for r in off.delete] == [("PodDisruptionBudget", "iris")]
    obj["spec"]["disruptionBudget"] = {"enabled": True}
    kept = plan_reconcile(obj, observed(objects.values()), OperatorConfig(model_disruption_budget=False), NOW)
    assert not any(r.kind == "PodDisruptionBudget" for r in kept.delete)


def test_a_budget_not_owned_is_never_deleted_or_taken_over() -> None:
    foreign = {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {
            "name": "iris",
            "namespace": "ml",
            "uid": "someone-else",
            "labels": {"modeldeploy.io/model-deployment": "iris"},
        },
        "spec": {"minAvailable": 3, "selector": {"matchLabels": {"app": "iris"}}},
    }
    plan = plan_reconcile(body(disruptionBudget={"enabled": False}), Observed(disruption_budgets=[foreign]),
                          OperatorConfig(), NOW)  # fmt: skip
    assert not any(r.kind == "PodDisruptionBudget" for r in plan.delete)


@pytest.mark.parametrize(
    ("block", "admitted"),
    [
        # The structural schema (a string that is no percentage) is checked on every pass.
        ({"maxUnavailable": "5"}, True),
        # CEL rules are the API server's; the offline render (not admitted) checks them too.
        ({"maxUnavailable": 1, "minAvailable": 1}, False),
    ],
)
def test_an_invalid_budget_changes_nothing(block: dict[str, Any], admitted: bool) -> None:
    objects: Objects = {}
    obj = body()
    first = plan_reconcile(obj, Observed(), OperatorConfig(), NOW)
    apply_plan(first, objects)
    obj["status"] = first.status
    obj["spec"]["disruptionBudget"] = block
    plan = plan_reconcile(obj, observed(objects.values()), OperatorConfig(), NOW, admitted=admitted)
    assert plan.apply == [] and plan.delete == []
    assert plan.status is not None
    ready = next(c for c in plan.status["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "InvalidSpec" and "disruptionBudget" in ready["message"]
