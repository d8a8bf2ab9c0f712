"""Tier 2: a write the API server refuses (here a validating admission; in a cluster a policy engine, an
out-of-date CRD, missing RBAC, a value the object's own validation refuses) is reported on the ModelDeployment as a
Warning Event, once, not only in the operator's log; the ModelDeployment goes on as soon as the write is accepted."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from kopf.testing import KopfRunner

from .conftest import DEPLOYMENTS, EVENTS, MD, ThreadedCluster
from .test_operator import condition, md, ready, status

pytestmark = pytest.mark.component

REFUSAL = "status: refused by the cluster's status policy"


def refusals(emulated: ThreadedCluster, reason: str = "StatusWriteRejected") -> list[dict[str, Any]]:
    return [e for e in emulated.list(EVENTS, "ml") if e["reason"] == reason]


Write = Callable[[dict[str, Any], "dict[str, Any] | None"], bool]


def refuse(emulated: ThreadedCluster, resource: str, message: str, applies: Write) -> threading.Event:
    """Refuse writes of ``resource`` that ``applies(new, old)`` picks with ``message`` (422 Invalid), as a
    validating webhook would, until the returned event is cleared."""
    refusing = threading.Event()
    refusing.set()

    def policy(new: dict[str, Any], old: dict[str, Any] | None) -> list[str]:
        return [message] if refusing.is_set() and applies(new, old) else []

    emulated.call(emulated.cluster.emulator.set_admission, resource, policy)
    return refusing


def test_a_refused_status_write_is_an_event_once_and_the_rollout_resumes_when_accepted(
    emulated: ThreadedCluster, operator_factory: Callable[[], KopfRunner]
) -> None:
    def status_change(new: dict[str, Any], old: dict[str, Any] | None) -> bool:
        return old is not None and new.get("status") != old.get("status")

    refusing = refuse(emulated, MD, REFUSAL, status_change)
    with operator_factory() as runner:
        emulated.create(MD, md())
        emulated.wait_for(lambda: refusals(emulated), message="a StatusWriteRejected event")
        time.sleep(3.0)  # three resyncs at least, each refused again
        (event,) = refusals(emulated)
        assert event["type"] == "Warning" and REFUSAL in event["message"]
        assert event["message"].startswith("The API server refused the status update (422 Invalid: ")
        assert status(emulated) == {}, "nothing was written"

        refusing.clear()
        emulated.wait_for(lambda: ready(emulated), message="iris Ready once the status write is accepted")
        time.sleep(1.5)
        assert len(refusals(emulated)) == 1
    assert runner.exit_code == 0, runner.output
    assert "Traceback" not in runner.output, runner.output


POLICY = 'admission webhook "validate.kyverno.svc" denied the request: label team is required'


def test_a_refused_child_is_an_event_once_and_the_model_deployment_converges_when_accepted(
    emulated: ThreadedCluster, operator_factory: Callable[[], KopfRunner]
) -> None:
    refusing = refuse(emulated, DEPLOYMENTS, POLICY, lambda new, old: old is None)  # creations
    with operator_factory() as runner:
        emulated.create(MD, md())
        emulated.wait_for(lambda: refusals(emulated, "WriteRejected"), message="a WriteRejected event")
        time.sleep(3.0)  # resyncs and retries, each refused again
        (event,) = refusals(emulated, "WriteRejected")
        revision = event["message"].split("apply Deployment ml/iris-", 1)[1].split(" ", 1)[0]
        assert event["type"] == "Warning" and POLICY in event["message"] and revision
        assert event["message"].startswith(f"The API server refused to apply Deployment ml/iris-{revision} (422 ")
        assert emulated.list(DEPLOYMENTS, "ml") == []
        # Where kubectl and Argo CD's health look: Degraded, at the generation observed, even with no status before.
        degraded = condition(emulated, "Degraded")
        assert (degraded["status"], degraded["reason"]) == ("True", "WriteRejected") and POLICY in degraded["message"]
        assert status(emulated)["observedGeneration"] == 1

        refusing.clear()
        emulated.wait_for(lambda: ready(emulated), message="iris Ready once its Deployment is accepted")
        assert status(emulated)["stableRevision"] == revision
        assert condition(emulated, "Degraded")["status"] == "False"
        assert len(refusals(emulated, "WriteRejected")) == 1
    assert runner.exit_code == 0, runner.output
    assert "Traceback" not in runner.output, runner.output
