"""Tier 2: a canary step that lowers the weight waits for the stable's ready pods (``plan._lowered``), with the
real operator (KopfRunner) on the emulated API server. The stable's new pods take 3 s to become ready; the
canary must keep its pods (and its traffic) until they are."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from kopf.testing import KopfRunner

from modeldeploy.sim.controllers import PodBehavior

from .conftest import MD, SlowFrom, ThreadedCluster, counts, rollout_with_counts
from .test_operator import events, md, ready, status

pytestmark = pytest.mark.component


def test_a_step_that_lowers_the_weight_waits_for_the_stable_pods(
    emulated: ThreadedCluster, operator_factory: Callable[[], KopfRunner], pod_behavior: dict[str, PodBehavior]
) -> None:
    steps = [{"setWeight": 50}, {"pause": {"duration": "1s"}}, {"setWeight": 25}, {"pause": {}}]
    with operator_factory() as runner:
        emulated.create(MD, md(replicas=4, rollout={"strategy": "Canary", "canary": {"steps": steps}}))
        emulated.wait_for(lambda: ready(emulated), message="iris Ready")
        stable = f"iris-{status(emulated)['stableRevision']}"
        pod_behavior[stable] = SlowFrom(time.monotonic())  # the stable's pods started from now on are slow
        model = {"version": "2", "storageUri": "s3://models/iris/2/model.pt", "format": "TorchScript"}
        emulated.patch(MD, "ml", "iris", {"spec": {"model": model}})

        # Replica ratio, N = 4: at 50% the stable runs 2 pods and the canary 2. Step 2 (25%) needs 3 stable pods;
        # the third takes 3 s, and meanwhile the canary keeps both of its pods. Sampled from the version change
        # to the end of step 2: never fewer than N ready pods across the two revisions.
        samples: list[tuple[int, str, dict[str, tuple[int, int]]]] = []
        deadline = time.monotonic() + 30
        while True:
            rollout, before, now = rollout_with_counts(emulated)
            if now == before:  # a status whose Deployments changed around its read pairs a message with wrong counts
                samples.append((rollout.get("currentStepIndex", 0), rollout.get("message", ""), now))
            assert sum(ready for _, ready in before.values()) >= 4, (before, samples[-3:])
            assert sum(ready for _, ready in now.values()) >= 4, (now, samples[-3:])
            if rollout.get("currentStepIndex") == 3 and now.get(stable, (0, 0))[1] >= 3 and len(now) == 2:
                break
            assert time.monotonic() < deadline, samples[-3:]
            time.sleep(0.05)
        canary = next(name for name in samples[-1][2] if name != stable)
        waiting = [c for index, message, c in samples if index == 2 and "to lower the canary's weight" in message]
        assert waiting, "step 2 waited for the stable's pods"
        # While it waits the stable runs 3 pods and the canary keeps enough for N ready in all (both of its pods
        # until the stable's third is ready, then one: the pass that sees it scales the canary before the status
        # says the step is done), and never more than it had.
        assert [c for c in waiting if c[stable][0] != 3 or not 4 - c[stable][1] <= c[canary][0] <= 2] == []
        assert any(c[canary][0] == 2 and c[stable][1] == 2 for c in waiting), waiting
        emulated.wait_for(lambda: counts(emulated)[canary][0] == 1, message="canary down to its 25% pod")
        assert ("Normal", "StepCompleted") in events(emulated)
    assert runner.exit_code == 0, runner.output
    assert "Traceback" not in runner.output, runner.output
