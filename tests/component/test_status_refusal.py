"""Tier 2: a status write the API server refuses (here a validating admission; in a cluster an out-of-date CRD, a
policy engine, an object grown too large) is reported on the ModelDeployment as a Warning Event, once, not only in
the operator's log; the rollout goes on as soon as the write is accepted."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from kopf.testing import KopfRunner

from .conftest import EVENTS, MD, ThreadedCluster
from .test_operator import md, ready, status

pytestmark = pytest.mark.component

REFUSAL = "status: refused by the cluster's status policy"


def refusals(emulated: ThreadedCluster) -> list[dict[str, Any]]:
    return [e for e in emulated.list(EVENTS, "ml") if e["reason"] == "StatusWriteRejected"]


def test_a_refused_status_write_is_an_event_once_and_the_rollout_resumes_when_accepted(
    emulated: ThreadedCluster, operator_factory: Callable[[], KopfRunner]
) -> None:
    refusing = threading.Event()
    refusing.set()

    def policy(new: dict[str, Any], old: dict[str, Any] | None) -> list[str]:
        changed = old is not None and new.get("status") != old.get("status")
        return [REFUSAL] if refusing.is_set() and changed else []

    emulated.call(emulated.cluster.emulator.set_admission, MD, policy)
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
