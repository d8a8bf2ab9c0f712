"""The simulated Deployment/Pod controller."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from modeldeploy.sim.cluster import Cluster
from modeldeploy.sim.controllers import BEHAVIOR_ANNOTATION, CrashLoop, DeploymentController, NeverReady, Ready
from modeldeploy.sim.emulator import ClusterEmulator
from modeldeploy.sim.resources import standard_resources

DEPLOYMENTS = "apps/v1/deployments"


def deployment(
    name: str, replicas: int | None = 1, annotations: dict[str, str] | None = None, image: str = "model:1", **spec: Any
) -> dict[str, Any]:
    template_meta: dict[str, Any] = {"labels": {"app": name}}
    if annotations:
        template_meta["annotations"] = annotations
    body: dict[str, Any] = {
        "metadata": {"name": name},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": template_meta, "spec": {"containers": [{"name": "main", "image": image}]}},
            **spec,
        },
    }
    if replicas is not None:
        body["spec"]["replicas"] = replicas
    return body


def pods(cluster: Cluster, app: str) -> list[dict[str, Any]]:
    return cluster.emulator.list_objects("v1/pods", "default", label_selector=f"app={app}")


def status(cluster: Cluster, name: str) -> dict[str, Any]:
    obj = cluster.emulator.get_object(DEPLOYMENTS, "default", name)
    return (obj or {}).get("status") or {}


def condition(cluster: Cluster, name: str, ctype: str) -> dict[str, Any]:
    return next((c for c in status(cluster, name).get("conditions", []) if c["type"] == ctype), {})


async def test_deployment_becomes_ready(cluster: Cluster, eventually: Any) -> None:
    cluster.emulator.create_object(DEPLOYMENTS, deployment("web", replicas=None), namespace="default")
    await eventually(lambda: status(cluster, "web").get("readyReplicas") == 1)
    final = status(cluster, "web")
    assert final["observedGeneration"] == 1
    assert (final["replicas"], final["updatedReplicas"], final["availableReplicas"]) == (1, 1, 1)
    assert "unavailableReplicas" not in final
    assert condition(cluster, "web", "Available")["status"] == "True"
    assert condition(cluster, "web", "Progressing")["reason"] == "NewReplicaSetAvailable"
    [pod] = pods(cluster, "web")
    owner = cluster.emulator.get_object(DEPLOYMENTS, "default", "web")
    assert owner is not None
    assert pod["metadata"]["ownerReferences"][0]["uid"] == owner["metadata"]["uid"]
    template_hash = pod["metadata"]["labels"]["pod-template-hash"]
    assert pod["metadata"]["name"].startswith(f"web-{template_hash}-")
    assert pod["status"]["phase"] == "Running" and pod["status"]["podIP"]


async def test_steady_state_writes_nothing(cluster: Cluster, eventually: Any) -> None:
    cluster.emulator.create_object(DEPLOYMENTS, deployment("web"), namespace="default")
    await eventually(lambda: status(cluster, "web").get("availableReplicas") == 1)
    await asyncio.sleep(0.1)
    version = cluster.emulator.resource_version
    await asyncio.sleep(0.3)  # many controller ticks
    assert cluster.emulator.resource_version == version


async def test_not_ready_at_first(cluster: Cluster, eventually: Any) -> None:
    cluster.controller.ready_delay = 0.5
    cluster.emulator.create_object(DEPLOYMENTS, deployment("web"), namespace="default")
    await eventually(lambda: pods(cluster, "web"))
    assert status(cluster, "web").get("readyReplicas") is None
    assert condition(cluster, "web", "Available")["reason"] == "MinimumReplicasUnavailable"
    await eventually(lambda: status(cluster, "web").get("readyReplicas") == 1)


async def test_never_ready_exceeds_the_progress_deadline(cluster: Cluster, eventually: Any) -> None:
    body = deployment("stuck", annotations={BEHAVIOR_ANNOTATION: "never-ready"}, progressDeadlineSeconds=1)
    cluster.emulator.create_object(DEPLOYMENTS, body, namespace="default")
    await eventually(lambda: condition(cluster, "stuck", "Progressing").get("reason") == "ReplicaSetUpdated")
    progressing = await eventually(
        lambda: (c := condition(cluster, "stuck", "Progressing")).get("reason") == "ProgressDeadlineExceeded" and c,
        timeout=4,
    )
    assert progressing["status"] == "False"
    assert status(cluster, "stuck").get("unavailableReplicas") == 1
    [pod] = pods(cluster, "stuck")
    assert pod["status"]["phase"] == "Running"
    assert pod["status"]["containerStatuses"][0]["ready"] is False


async def test_crashloop_restart_counts_grow(cluster: Cluster, eventually: Any) -> None:
    cluster.controller.behavior_for = lambda d: CrashLoop(period=0.1) if d["metadata"]["name"] == "bad" else None
    cluster.emulator.create_object(DEPLOYMENTS, deployment("bad"), namespace="default")

    def restarts() -> int:
        found = pods(cluster, "bad")
        return found[0]["status"]["containerStatuses"][0]["restartCount"] if found and "status" in found[0] else 0

    await eventually(lambda: restarts() >= 3)
    container = pods(cluster, "bad")[0]["status"]["containerStatuses"][0]
    assert container["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    assert container["lastState"]["terminated"]["exitCode"] == 1
    assert status(cluster, "bad").get("readyReplicas") is None


async def test_crashloop_reports_its_exit_code_and_termination_message(cluster: Cluster, eventually: Any) -> None:
    crash = CrashLoop(period=0.1, exit_code=11, message="Cannot load model m: needs pickle")
    cluster.controller.behavior_for = lambda d: crash if d["metadata"]["name"] == "bad" else None
    cluster.emulator.create_object(DEPLOYMENTS, deployment("bad"), namespace="default")

    def last() -> dict[str, Any]:
        found = pods(cluster, "bad")
        statuses = (found[0].get("status") or {}).get("containerStatuses") or [{}] if found else [{}]
        return dict((statuses[0].get("lastState") or {}).get("terminated") or {})

    await eventually(lambda: last() != {})
    assert last() == {"exitCode": 11, "reason": "Error", "message": "Cannot load model m: needs pickle"}


async def test_crashloop_by_annotation(cluster: Cluster, eventually: Any) -> None:
    body = deployment("bad", annotations={BEHAVIOR_ANNOTATION: "crashloop"})
    cluster.emulator.create_object(DEPLOYMENTS, body, namespace="default")
    await eventually(
        lambda: (
            (found := pods(cluster, "bad"))
            and "status" in found[0]
            and found[0]["status"]["containerStatuses"][0]["state"].get("waiting", {}).get("reason")
            == "CrashLoopBackOff"
        )
    )


async def test_scale_down_deletes_pods(cluster: Cluster, eventually: Any) -> None:
    cluster.emulator.create_object(DEPLOYMENTS, deployment("web", replicas=3), namespace="default")
    await eventually(lambda: status(cluster, "web").get("readyReplicas") == 3)
    cluster.emulator.patch_object(DEPLOYMENTS, "default", "web", {"spec": {"replicas": 1}})
    await eventually(lambda: len(pods(cluster, "web")) == 1 and status(cluster, "web").get("replicas") == 1)
    assert status(cluster, "web")["observedGeneration"] == 2


async def test_scale_to_zero(cluster: Cluster, eventually: Any) -> None:
    cluster.emulator.create_object(DEPLOYMENTS, deployment("web", replicas=2), namespace="default")
    await eventually(lambda: len(pods(cluster, "web")) == 2)
    cluster.emulator.patch_object(DEPLOYMENTS, "default", "web", {"spec": {"replicas": 0}})
    await eventually(lambda: not pods(cluster, "web") and "replicas" not in status(cluster, "web"))


async def test_template_change_rolls_pods(cluster: Cluster, eventually: Any) -> None:
    cluster.emulator.create_object(DEPLOYMENTS, deployment("web", replicas=2), namespace="default")
    await eventually(lambda: status(cluster, "web").get("readyReplicas") == 2)
    old_names = {p["metadata"]["name"] for p in pods(cluster, "web")}
    patch = {"spec": {"template": {"spec": {"containers": [{"name": "main", "image": "model:2"}]}}}}
    cluster.emulator.patch_object(DEPLOYMENTS, "default", "web", patch)

    def rolled() -> bool:
        current = pods(cluster, "web")
        return (
            len(current) == 2
            and not old_names & {p["metadata"]["name"] for p in current}
            and all(p["spec"]["containers"][0]["image"] == "model:2" for p in current)
            and status(cluster, "web").get("updatedReplicas") == 2
            and condition(cluster, "web", "Progressing").get("reason") == "NewReplicaSetAvailable"
        )

    await eventually(rolled)
    assert status(cluster, "web")["observedGeneration"] == 2


async def test_deleting_a_deployment_removes_its_pods(cluster: Cluster, eventually: Any) -> None:
    stopped: list[str] = []
    cluster.controller.on_pod_stopped = lambda pod: stopped.append(pod["metadata"]["name"])
    cluster.emulator.create_object(DEPLOYMENTS, deployment("web", replicas=2), namespace="default")
    await eventually(lambda: status(cluster, "web").get("readyReplicas") == 2)
    names = sorted(p["metadata"]["name"] for p in pods(cluster, "web"))
    cluster.emulator.delete_object(DEPLOYMENTS, "default", "web")
    await eventually(lambda: not pods(cluster, "web"))
    await eventually(lambda: sorted(stopped) == names)


async def test_running_hook_is_the_kubelet_seam(cluster: Cluster, eventually: Any) -> None:
    started: list[str] = []

    async def on_running(pod: dict[str, Any]) -> None:
        started.append(pod["metadata"]["name"])

    cluster.controller.on_pod_running = on_running
    cluster.emulator.create_object(DEPLOYMENTS, deployment("web", replicas=2), namespace="default")
    await eventually(lambda: len(started) == 2)
    assert sorted(started) == sorted(p["metadata"]["name"] for p in pods(cluster, "web"))


@pytest.mark.parametrize(
    ("behavior", "age", "expected"),
    [
        (Ready(0.5), 0.1, ("Pending", False, 0)),
        (Ready(0.5), 0.6, ("Running", True, 0)),
        (NeverReady(), 10.0, ("Running", False, 0)),
        (CrashLoop(1.0), 3.5, ("Running", False, 3)),
    ],
)
def test_behaviors(behavior: Any, age: float, expected: tuple[str, bool, int]) -> None:
    state = behavior.state(age)
    assert (state.phase, state.ready, state.restart_count) == expected


async def test_stop_ends_the_loop_even_when_an_event_wakes_it_at_the_same_moment() -> None:
    """The cancel that ``stop`` sends must not be lost when a watch event completes the loop's wait in the same
    turn of the event loop (asyncio.wait_for lost it on Python 3.11, and ``stop`` then waited forever: the
    tier-2 teardown hang)."""
    for _ in range(200):
        emulator = ClusterEmulator()
        emulator.register(*standard_resources())
        controller = DeploymentController(emulator, tick=0.05)
        await controller.start()
        await asyncio.sleep(0)  # the loop is waiting
        controller._wake.set()  # an event wakes it ...
        async with asyncio.timeout(2):  # (not wait_for: its own task would cancel one turn later)
            await controller.stop()  # ... as the cancel arrives
