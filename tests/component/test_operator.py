"""The real operator (kopf, KopfRunner) against the emulated API server: create, converge, update, no-op
resync, invalid specs, autoscaling on and off, ownership, restart and deletion."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from typing import Any

import pytest
from kopf.testing import KopfRunner

from modeldeploy.conditions import find
from modeldeploy.sim.controllers import CrashLoop, PodBehavior

from .conftest import DEPLOYMENTS, DISRUPTION_BUDGETS, EVENTS, HPAS, MD, REVISIONS, SERVICES, ThreadedCluster

pytestmark = pytest.mark.component

IRIS: dict[str, Any] = {
    "apiVersion": "modeldeploy.io/v1alpha1",
    "kind": "ModelDeployment",
    "metadata": {"name": "iris", "namespace": "ml"},
    "spec": {
        "model": {"version": "1", "storageUri": "s3://models/iris/1/model.pt", "format": "TorchScript"},
        "runtime": {"resources": {"requests": {"cpu": "250m", "memory": "256Mi"}}},
        "replicas": 2,
    },
}


def md(**spec: Any) -> dict[str, Any]:
    body = copy.deepcopy(IRIS)
    body["spec"].update(spec)
    return body


def status(emulated: ThreadedCluster, name: str = "iris") -> dict[str, Any]:
    obj = emulated.get(MD, "ml", name) or {}
    return dict(obj.get("status") or {})


def ready(emulated: ThreadedCluster, name: str = "iris", version: str | None = None) -> bool:
    st = status(emulated, name)
    ok = st.get("phase") == "Ready" and st.get("observedGeneration") == (emulated.get(MD, "ml", name) or {}).get(
        "metadata", {}
    ).get("generation")
    return ok and (version is None or st.get("modelVersion") == version)


def condition(emulated: ThreadedCluster, type_: str, name: str = "iris") -> dict[str, Any]:
    found = find(status(emulated, name).get("conditions") or [], type_)
    assert found is not None, f"no {type_} condition in {status(emulated, name)}"
    return dict(found)


def children(emulated: ThreadedCluster, resource: str) -> list[dict[str, Any]]:
    return emulated.list(resource, "ml", "modeldeploy.io/model-deployment=iris")


def events(emulated: ThreadedCluster) -> list[tuple[str, str]]:
    return [(e["type"], e["reason"]) for e in emulated.list(EVENTS, "ml")]


def quiet_period(emulated: ThreadedCluster, seconds: float = 2.5) -> list[Any]:
    """Writes the operator makes while nothing changes for ``seconds`` (several resync periods)."""
    before = len(emulated.requests())
    time.sleep(seconds)
    return emulated.writes(before)


def settle(emulated: ThreadedCluster, seconds: float = 0.5, timeout: float = 20.0) -> None:
    """Wait until the operator has written nothing for ``seconds``. A test that sees a child deleted can look
    before the same reconcile's status patch lands, one request later; a writer that never stops fails here."""
    deadline = time.monotonic() + timeout
    count = len(emulated.writes())
    while True:
        time.sleep(seconds)
        now = len(emulated.writes())
        if now == count:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"the operator kept writing for {timeout}s")
        count = now


def test_create_converges_with_owned_labelled_children(
    emulated: ThreadedCluster, operator_factory: Callable[[], KopfRunner]
) -> None:
    with operator_factory() as runner:
        emulated.create(MD, md())
        emulated.wait_for(lambda: ready(emulated), message="iris Ready")
        st = status(emulated)
        uid = emulated.get(MD, "ml", "iris")["metadata"]["uid"]  # type: ignore[index]
        (deployment,) = children(emulated, DEPLOYMENTS)
        (service,) = children(emulated, SERVICES)
        (revision,) = children(emulated, REVISIONS)
        for child in (deployment, service, revision):
            meta = child["metadata"]
            assert meta["ownerReferences"][0]["uid"] == uid and meta["ownerReferences"][0]["controller"]
            assert meta["labels"]["app.kubernetes.io/managed-by"] == "modeldeploy"
            assert meta["labels"]["app.kubernetes.io/instance"] == "iris"
        assert deployment["metadata"]["name"] == f"iris-{st['stableRevision']}"
        assert deployment["spec"]["replicas"] == 2
        assert "modeldeploy" in [m["manager"] for m in deployment["metadata"].get("managedFields", [])]
        assert st["readyReplicas"] == 2 and st["desiredReplicas"] == 2
        assert st["url"] == "http://iris.ml.svc.cluster.local/v2/models/iris"
        assert condition(emulated, "Ready")["status"] == "True"
        assert condition(emulated, "Progressing")["reason"] == "RolloutComplete"
        assert condition(emulated, "Degraded")["status"] == "False"
        assert ("Normal", "FirstDeploy") in events(emulated)
        assert emulated.list(HPAS, "ml") == []

        assert quiet_period(emulated) == [], "a converged object gets no writes, resyncs included"
    assert runner.exit_code == 0, runner.output
    assert "Traceback" not in runner.output, runner.output


def test_writes_per_object_are_few(emulated: ThreadedCluster, operator_factory: Callable[[], KopfRunner]) -> None:
    with operator_factory():
        start = len(emulated.requests())
        emulated.create(MD, md())
        emulated.wait_for(lambda: ready(emulated))
        time.sleep(1.0)
        writes = emulated.writes(start)
    # ControllerRevision, Deployment, Service, PodDisruptionBudget, the status patches and a few Events.
    assert len(writes) <= 9, [f"{w.verb} {w.resource}/{w.subresource or ''} {w.name}" for w in writes]


def test_the_disruption_budget_is_kept_over_every_revision(
    emulated: ThreadedCluster, operator_factory: Callable[[], KopfRunner]
) -> None:
    with operator_factory():
        emulated.create(MD, md())
        emulated.wait_for(lambda: ready(emulated))
        (pdb,) = children(emulated, DISRUPTION_BUDGETS)
        uid = (emulated.get(MD, "ml", "iris") or {})["metadata"]["uid"]
        assert [r["uid"] for r in pdb["metadata"]["ownerReferences"]] == [uid]
        assert pdb["spec"]["maxUnavailable"] == 1
        assert pdb["spec"]["selector"] == {"matchLabels": {"modeldeploy.io/model-deployment": "iris"}}
        assert pdb["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"
        # Deleted by hand: put back.
        emulated.delete(DISRUPTION_BUDGETS, "ml", "iris")
        emulated.wait_for(lambda: len(children(emulated, DISRUPTION_BUDGETS)) == 1, message="budget restored")
        # A new limit is applied to the same object, and a rollout leaves it alone.
        model = {"version": "2", "storageUri": "s3://models/iris/2/model.pt", "format": "TorchScript"}
        emulated.patch(MD, "ml", "iris", {"spec": {"model": model, "disruptionBudget": {"minAvailable": "50%"}}})
        emulated.wait_for(lambda: ready(emulated, version="2"), message="version 2 Ready")
        emulated.wait_for(
            lambda: [(b["spec"].get("minAvailable"), "maxUnavailable" in b["spec"])
                     for b in children(emulated, DISRUPTION_BUDGETS)] == [("50%", False)],
            message="minAvailable applied, maxUnavailable gone",
        )  # fmt: skip
        # Off: deleted.
        emulated.patch(MD, "ml", "iris", {"spec": {"disruptionBudget": {"enabled": False}}})
        emulated.wait_for(lambda: children(emulated, DISRUPTION_BUDGETS) == [], message="budget removed")


def test_new_version_rolls_out_and_old_revision_is_removed(
    emulated: ThreadedCluster, operator_factory: Callable[[], KopfRunner]
) -> None:
    with operator_factory():
        emulated.create(MD, md())
        emulated.wait_for(lambda: ready(emulated))
        first = status(emulated)["stableRevision"]
        model = {"version": "2", "storageUri": "s3://models/iris/2/model.pt", "format": "TorchScript"}
        emulated.patch(MD, "ml", "iris", {"spec": {"model": model}})
        emulated.wait_for(lambda: ready(emulated, version="2"), message="version 2 Ready")
        second = status(emulated)["stableRevision"]
        assert second != first
        emulated.wait_for(
            lambda: [d["metadata"]["name"] for d in children(emulated, DEPLOYMENTS)] == [f"iris-{second}"],
            message="old revision removed",
        )
        history = status(emulated)["history"]
        assert [h["revision"] for h in history][:2] == [second, first]
        assert {r["metadata"]["name"] for r in children(emulated, REVISIONS)} == {f"iris-{first}", f"iris-{second}"}
        assert ("Normal", "Promoted") in events(emulated)


def test_a_canary_whose_model_does_not_load_is_rolled_back_with_the_servers_own_words(
    emulated: ThreadedCluster, operator_factory: Callable[[], KopfRunner], pod_behavior: dict[str, PodBehavior]
) -> None:
    """Version 2's server exits 11 with the runtime's termination message (``modelserve`` writes its load error
    there): the rollback reason and the Degraded condition carry that message, and the Warning event too."""
    load_error = "Cannot load model iris: refused: model.pkl needs pickle; use TorchScript, torch.export or safetensors"
    pod_behavior["version:2"] = CrashLoop(period=0.3, exit_code=11, message=load_error)
    with operator_factory() as runner:
        emulated.create(MD, md())
        emulated.wait_for(lambda: ready(emulated))
        model = {"version": "2", "storageUri": "s3://models/iris/2/model.pt", "format": "TorchScript"}
        emulated.patch(MD, "ml", "iris", {"spec": {"model": model}})
        emulated.wait_for(lambda: status(emulated).get("phase") == "Degraded", message="version 2 rolled back")
        (rejected,) = status(emulated)["rollout"]["rejectedRevisions"]
        assert rejected["reason"] == "CrashLoop"
        assert rejected["message"].startswith(f"Pods of revision {rejected['revision']} are crash-looping: container ")
        assert rejected["message"].endswith(f" exited with code 11: {load_error}"), rejected["message"]
        assert load_error in condition(emulated, "Degraded")["message"]
        warnings = [e for e in emulated.list(EVENTS, "ml") if e["type"] == "Warning"]
        assert any(load_error in e["message"] for e in warnings), [e["message"] for e in warnings]
    assert "Traceback" not in runner.output


def test_a_first_deploy_that_crash_loops_is_degraded_in_the_servers_words(
    emulated: ThreadedCluster, operator_factory: Callable[[], KopfRunner], pod_behavior: dict[str, PodBehavior]
) -> None:
    fetch_error = "Fetch failed: access denied: s3://models/iris/1/model.pt (AccessDenied)"
    pod_behavior["version:1"] = CrashLoop(period=0.3, exit_code=4, message=fetch_error)
    with operator_factory() as runner:
        emulated.create(MD, md())
        emulated.wait_for(lambda: (find(status(emulated).get("conditions") or [], "Degraded") or {}).get("status")
                          == "True", message="Degraded")  # fmt: skip
        degraded = condition(emulated, "Degraded")
        assert degraded["reason"] == "CrashLoop"
        assert degraded["message"].endswith(f" exited with code 4: {fetch_error}"), degraded["message"]
        assert status(emulated)["phase"] == "Pending"
        assert fetch_error in condition(emulated, "Ready")["message"]
        assert len(children(emulated, DEPLOYMENTS)) == 1, "nothing to roll back to: the revision stays"
    assert "Traceback" not in runner.output


def test_invalid_update_reports_and_keeps_the_last_good_children(
    emulated: ThreadedCluster, operator_factory: Callable[[], KopfRunner]
) -> None:
    with operator_factory():
        emulated.create(MD, md())
        emulated.wait_for(lambda: ready(emulated))
        before = {d["metadata"]["name"]: d["metadata"]["resourceVersion"] for d in children(emulated, DEPLOYMENTS)}
        # Passes the schema (the API server accepts it) but only the operator can check it.
        emulated.patch(
            MD, "ml", "iris", {"spec": {"model": {"version": "2", "storageUri": "s3://Models/iris/2/model.pt"}}}
        )
        emulated.wait_for(lambda: condition(emulated, "Ready")["reason"] == "InvalidSpec", message="InvalidSpec")
        ready_condition = condition(emulated, "Ready")
        assert ready_condition["status"] == "False"
        assert "spec.model.storageUri" in ready_condition["message"]
        assert "keeps serving" in ready_condition["message"]
        assert status(emulated)["phase"] == "Failed"
        assert ("Warning", "InvalidSpec") in events(emulated)
        after = {d["metadata"]["name"]: d["metadata"]["resourceVersion"] for d in children(emulated, DEPLOYMENTS)}
        assert after == before, "nothing of the last good spec was changed or deleted"
        assert quiet_period(emulated, 1.5) == [], "the same invalid spec is reported once"


def test_schema_rejects_bad_input_at_admission(emulated: ThreadedCluster) -> None:
    bad = md()
    bad["spec"]["model"]["storageUri"] = "ftp://host/model.pt"
    with pytest.raises(Exception, match=r"spec\.model\.storageUri"):
        emulated.create(MD, bad)


def test_autoscaling_on_then_off(emulated: ThreadedCluster, operator_factory: Callable[[], KopfRunner]) -> None:
    with operator_factory():
        emulated.create(MD, md())
        emulated.wait_for(lambda: ready(emulated))
        emulated.patch(
            MD,
            "ml",
            "iris",
            {
                "spec": {
                    "replicas": None,
                    "autoscaling": {"minReplicas": 2, "maxReplicas": 5, "targetCPUUtilizationPercentage": 60},
                }
            },
        )
        (hpa,) = emulated.wait_for(lambda: children(emulated, HPAS), message="HPA created")
        assert hpa["spec"]["scaleTargetRef"] == {
            "apiVersion": "modeldeploy.io/v1alpha1",
            "kind": "ModelDeployment",
            "name": "iris",
        }
        assert hpa["spec"]["minReplicas"] == 2 and hpa["spec"]["maxReplicas"] == 5
        # The HPA reads the ModelDeployment's Scale: the operator has given it a count to start from.
        scale = emulated.call(emulated.cluster.emulator.get_scale, MD, "ml", "iris")
        assert scale["spec"]["replicas"] == 2
        emulated.patch(MD, "ml", "iris", {"spec": {"autoscaling": None, "replicas": 3}})
        emulated.wait_for(lambda: children(emulated, HPAS) == [], message="HPA removed")
        emulated.wait_for(lambda: children(emulated, DEPLOYMENTS)[0]["spec"].get("replicas") == 3)


def test_objects_of_someone_else_are_left_alone(
    emulated: ThreadedCluster, operator_factory: Callable[[], KopfRunner]
) -> None:
    foreign = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "iris", "namespace": "ml", "labels": {"team": "web"}},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]},
    }
    emulated.create(SERVICES, foreign)
    with operator_factory():
        emulated.create(MD, md())
        emulated.wait_for(lambda: ("Warning", "ChildConflict") in events(emulated), message="ChildConflict event")
        service = emulated.get(SERVICES, "ml", "iris")
        assert service is not None
        assert service["spec"]["selector"] == {"app": "web"}
        assert "ownerReferences" not in service["metadata"]


def test_a_disruption_budget_of_someone_else_is_left_alone(
    emulated: ThreadedCluster, operator_factory: Callable[[], KopfRunner]
) -> None:
    foreign = {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": "iris", "namespace": "ml", "labels": {"team": "web"}},
        "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "web"}}},
    }
    emulated.create(DISRUPTION_BUDGETS, foreign)
    with operator_factory():
        emulated.create(MD, md())
        emulated.wait_for(lambda: ("Warning", "ChildConflict") in events(emulated), message="ChildConflict event")
        emulated.wait_for(lambda: ready(emulated), message="the model serves regardless")
        pdb = emulated.get(DISRUPTION_BUDGETS, "ml", "iris")
        assert pdb is not None and pdb["spec"] == foreign["spec"]
        assert "ownerReferences" not in pdb["metadata"]


def test_restart_resumes_without_writes(emulated: ThreadedCluster, operator_factory: Callable[[], KopfRunner]) -> None:
    with operator_factory():
        emulated.create(MD, md())
        emulated.wait_for(lambda: ready(emulated))
        time.sleep(0.5)
    before = len(emulated.requests())
    with operator_factory():
        time.sleep(3.0)
    assert emulated.writes(before) == [], "a restarted operator finds everything converged"


def test_deleting_the_model_deployment_removes_its_children(
    emulated: ThreadedCluster, operator_factory: Callable[[], KopfRunner]
) -> None:
    with operator_factory():
        emulated.create(MD, md())
        emulated.wait_for(lambda: ready(emulated))
        emulated.delete(MD, "ml", "iris")
        emulated.wait_for(
            lambda: not children(emulated, DEPLOYMENTS) and not children(emulated, SERVICES),
            message="children garbage-collected",
        )
        assert emulated.get(MD, "ml", "iris") is None


def test_fields_the_rollout_drops_are_deleted_from_status(
    emulated: ThreadedCluster, operator_factory: Callable[[], KopfRunner]
) -> None:
    """Status is a merge patch: keys of status.rollout that exist only mid-rollout (waitingSince, the progress
    deadline's clock) must be nulled when the rollout ends, or they would linger and be read back."""
    canary = {"strategy": "Canary", "canary": {"steps": [{"setWeight": 50}, {"pause": {}}]}}
    with operator_factory():
        emulated.create(MD, md(rollout=canary))
        emulated.wait_for(lambda: ready(emulated), message="iris Ready")
        model = {"version": "2", "storageUri": "s3://models/iris/2/model.pt", "format": "TorchScript"}
        emulated.patch(MD, "ml", "iris", {"spec": {"model": model}})
        emulated.wait_for(
            lambda: (status(emulated).get("rollout") or {}).get("currentStepIndex") == 1,
            message="canary holding at its indefinite pause",
        )
        # waitingSince was set when the rollout started and dropped once the canary's pods were ready.
        assert "waitingSince" not in status(emulated)["rollout"], status(emulated)["rollout"]
        emulated.patch(MD, "ml", "iris", {"metadata": {"annotations": {"modeldeploy.io/promote": "go"}}})
        emulated.wait_for(lambda: ready(emulated, version="2"), message="version 2 promoted")
        emulated.wait_for(lambda: len(children(emulated, DEPLOYMENTS)) == 1, message="old revision removed")
        settle(emulated)  # the deletion's reconcile writes status after it
        rollout = status(emulated)["rollout"]
        lingering = {"pausedAt", "waitingSince"} & set(rollout)
        assert not lingering, {k: rollout[k] for k in lingering}
        assert [(w.verb, w.resource, w.subresource) for w in quiet_period(emulated)] == []
