"""Why a revision's pods are not ready: podhealth reads it from pod and Deployment status as the kubelet, the
scheduler and the Deployment controller write them."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modeldeploy.podhealth import (
    CANNOT_START,
    CRASH_LOOP_RESTARTS,
    DETAIL_CHARS,
    container_trouble,
    crash_looping,
    revision_trouble,
)

FETCH_ERROR = (
    "Fetch failed: sha256 mismatch for s3://models/iris/2.pt: expected "
    "0000000000000000000000000000000000000000000000000000000000000000, got "
    "3f1b1c7d5e0a0e6b8f7c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f60718293a4b5c6"
)


def pod(
    name: str = "iris-abc-1",
    *,
    init: list[dict[str, Any]] | None = None,
    containers: list[dict[str, Any]] | None = None,
    conditions: list[dict[str, Any]] | None = None,
    node: str | None = "node-1",
) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": "Pending" if node is None else "Running"}
    if init is not None:
        status["initContainerStatuses"] = init
    if containers is not None:
        status["containerStatuses"] = containers
    if conditions is not None:
        status["conditions"] = conditions
    spec: dict[str, Any] = {"containers": [{"name": "server"}]}
    if node is not None:
        spec["nodeName"] = node
    return {"metadata": {"name": name}, "spec": spec, "status": status}


def container(
    name: str = "server",
    *,
    ready: bool = False,
    restarts: int = 0,
    waiting: tuple[str, str] | None = None,
    running: bool = False,
    terminated: dict[str, Any] | None = None,
    last: dict[str, Any] | None = None,
) -> dict[str, Any]:
    state: dict[str, Any] = {}
    if waiting is not None:
        state["waiting"] = {"reason": waiting[0], "message": waiting[1]}
    elif running:
        state["running"] = {"startedAt": "2026-11-23T03:00:00Z"}
    elif terminated is not None:
        state["terminated"] = terminated
    out: dict[str, Any] = {"name": name, "ready": ready, "restartCount": restarts, "state": state, "image": "x"}
    if last is not None:
        out["lastState"] = {"terminated": last}
    return out


def failed(code: int, message: str = "", reason: str = "Error") -> dict[str, Any]:
    out: dict[str, Any] = {"exitCode": code, "reason": reason}
    if message:
        out["message"] = message
    return out


def deployment(*conditions: dict[str, Any]) -> dict[str, Any]:
    return {"spec": {"replicas": 2}, "status": {"conditions": list(conditions)}}


UNSCHEDULABLE = {
    "type": "PodScheduled",
    "status": "False",
    "reason": "Unschedulable",
    "message": "0/5 nodes are available: 2 Insufficient nvidia.com/gpu, 3 node(s) had untolerated taint "
    "{dedicated: batch}. preemption: 0/5 nodes are available: 5 No preemption victims found for incoming pod.",
}
QUOTA = {
    "type": "ReplicaFailure",
    "status": "True",
    "reason": "FailedCreate",
    "message": 'pods "iris-5d4f8c7b9-" is forbidden: exceeded quota: gpu-quota, requested: '
    "requests.nvidia.com/gpu=1, used: requests.nvidia.com/gpu=4, limited: requests.nvidia.com/gpu=4",
}

FETCH_CRASH = pod(
    init=[container("fetch", restarts=4, waiting=("CrashLoopBackOff", "back-off 1m20s"), last=failed(5, FETCH_ERROR))],
    containers=[container(waiting=("PodInitializing", ""))],
)


CASES: dict[str, tuple[dict[str, Any] | None, list[dict[str, Any]], str]] = {
    "nothing to say": (deployment(), [pod(containers=[container(ready=True, running=True)])], ""),
    "starting is not trouble": (
        deployment(),
        [pod(containers=[container(waiting=("ContainerCreating", ""))])],
        "",
    ),
    "the model fetch keeps failing": (
        deployment(),
        [FETCH_CRASH],
        f"container fetch of pod iris-abc-1 exited with code 5: {FETCH_ERROR}",
    ),
    "an init container that just failed": (
        deployment(),
        [pod(init=[container("fetch", terminated=failed(3, "Fetch failed: not found: s3://m/x.pt"))])],
        "container fetch of pod iris-abc-1 exited with code 3: Fetch failed: not found: s3://m/x.pt",
    ),
    "the server does not load the model": (
        deployment(),
        [
            pod(
                init=[container("fetch", ready=True, terminated=failed(0, reason="Completed"))],
                containers=[
                    container(
                        restarts=2,
                        waiting=("CrashLoopBackOff", "back-off 40s restarting failed container"),
                        last=failed(11, "Cannot load model iris: refused: the file needs pickle"),
                    )
                ],
            )
        ],
        "container server of pod iris-abc-1 exited with code 11: Cannot load model iris: refused: the file needs "
        "pickle",
    ),
    "out of memory": (
        deployment(),
        [pod(containers=[container(restarts=1, running=True, last=failed(137, reason="OOMKilled"))])],
        "container server of pod iris-abc-1 exited with code 137 (OOMKilled)",
    ),
    "a ready container's past is not trouble": (
        deployment(),
        [pod(containers=[container(ready=True, restarts=1, running=True, last=failed(1, "once"))])],
        "",
    ),
    "the image cannot be pulled": (
        deployment(),
        [
            pod(
                containers=[
                    container(waiting=("ImagePullBackOff", 'Back-off pulling image "ghcr.io/x/modelserve:typo"'))
                ]
            )
        ],
        "container server of pod iris-abc-1 cannot start: ImagePullBackOff: Back-off pulling image "
        '"ghcr.io/x/modelserve:typo"',
    ),
    "a missing secret": (
        deployment(),
        [pod(containers=[container(waiting=("CreateContainerConfigError", 'secret "s3-creds" not found'))])],
        'container server of pod iris-abc-1 cannot start: CreateContainerConfigError: secret "s3-creds" not found',
    ),
    "the quota forbids the pods": (deployment(QUOTA), [], f"pods cannot be created: {QUOTA['message']}"),
    "a replica failure that is over": (deployment({**QUOTA, "status": "False"}), [], ""),
    "no node has room": (
        deployment(),
        [
            pod("iris-abc-2", conditions=[UNSCHEDULABLE], node=None),
            pod("iris-abc-1", conditions=[UNSCHEDULABLE], node=None),
            pod("iris-abc-3", containers=[container(ready=True, running=True)]),
        ],
        f"2 pods cannot be scheduled: {UNSCHEDULABLE['message']}",
    ),
    "one pod waits for a node": (
        None,
        [pod(conditions=[{**UNSCHEDULABLE, "message": "0/1 nodes are available: 1 Insufficient memory."}], node=None)],
        "1 pod cannot be scheduled: 0/1 nodes are available: 1 Insufficient memory.",
    ),
    "a pod the scheduler has not seen yet": (
        deployment(),
        [pod(conditions=[{"type": "PodScheduled", "status": "False", "reason": "SchedulingGated"}], node=None)],
        "",
    ),
    "a failing container comes before a waiting pod": (
        deployment(QUOTA),
        [pod("iris-abc-9", conditions=[UNSCHEDULABLE], node=None), FETCH_CRASH],
        f"container fetch of pod iris-abc-1 exited with code 5: {FETCH_ERROR}",
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_revision_trouble(case: str) -> None:
    deploy, pods, expected = CASES[case]
    assert revision_trouble(deploy, pods) == expected


def test_the_answer_does_not_depend_on_the_order_pods_are_listed_in() -> None:
    crashing = [pod(f"iris-abc-{i}", containers=[container(terminated=failed(i))]) for i in (3, 1, 2)]
    assert revision_trouble(None, crashing) == revision_trouble(None, crashing[::-1])
    assert revision_trouble(None, crashing) == "container server of pod iris-abc-1 exited with code 1"


def test_a_long_message_is_cut_and_put_on_one_line() -> None:
    message = "Traceback (most recent call last):\n  File x\n" + "y" * 2000
    trouble = container_trouble(pod(containers=[container(terminated=failed(1, message))]))
    detail = trouble.split(": ", 1)[1]
    assert len(detail) == DETAIL_CHARS and detail.endswith("…")
    assert "\n" not in trouble and detail.startswith("Traceback (most recent call last): File x yyy")


@pytest.mark.parametrize("key", ["initContainerStatuses", "containerStatuses"])
@pytest.mark.parametrize("restarts", [CRASH_LOOP_RESTARTS - 1, CRASH_LOOP_RESTARTS])
def test_crash_looping_counts_init_containers(key: str, restarts: int) -> None:
    status = container("fetch", restarts=restarts, waiting=("CrashLoopBackOff", ""), last=failed(5))
    looping = {"metadata": {"name": "p"}, "status": {key: [status]}}
    assert crash_looping([looping]) is (restarts >= CRASH_LOOP_RESTARTS)


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20) | st.sampled_from(sorted(CANNOT_START)),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)
STATUS_KEYS = st.sampled_from(
    [
        "initContainerStatuses",
        "containerStatuses",
        "conditions",
        "state",
        "lastState",
        "terminated",
        "waiting",
        "ready",
        "exitCode",
        "reason",
        "message",
        "name",
        "status",
        "type",
    ]
)


@given(
    st.recursive(
        JSONISH,
        lambda inner: st.dictionaries(STATUS_KEYS, inner, max_size=5) | st.lists(inner, max_size=3),
        max_leaves=30,
    ),
    st.dictionaries(STATUS_KEYS, JSONISH, max_size=4),
)
def test_malformed_status_never_raises(status: Any, deploy_status: Any) -> None:
    """Status is written by other components (and by anyone with rights on pods/status): whatever shape it has,
    reading it gives a string, never an exception that would stop the reconcile."""
    pods = [{"metadata": {"name": "p"}, "spec": {}, "status": status}] if isinstance(status, dict) else []
    trouble = revision_trouble({"status": deploy_status}, pods)
    assert isinstance(trouble, str)
    crash_looping(pods)
