"""Tier 2: a rollback with Neutral capacity (``plan._hand_back_plan``) keeps N ready pods serving all the way,
with the real operator (KopfRunner) on the emulated API server. The budget N + maxSurgePods leaves the stable one
pod beside the canary's; the canary gives back a pod once the stable's new pod is ready, so the stable can grow to
N, and the traffic moves only once it has. The stable's new pods take 3 s to become ready."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from kopf.testing import KopfRunner

from modeldeploy.labels import ABORT_ANNOTATION
from modeldeploy.sim.controllers import PodBehavior

from .conftest import MD, SlowFrom, ThreadedCluster, counts, rollout_with_counts
from .test_operator import md, ready, status

pytestmark = pytest.mark.component


def test_a_neutral_rollback_never_has_fewer_than_n_ready_pods(
    emulated: ThreadedCluster, operator_factory: Callable[[], KopfRunner], pod_behavior: dict[str, PodBehavior]
) -> None:
    canary_spec = {"steps": [{"setWeight": 50}, {"pause": {}}], "capacity": {"mode": "Neutral", "maxSurgePods": 1}}
    with operator_factory() as runner:
        emulated.create(MD, md(replicas=4, rollout={"strategy": "Canary", "canary": canary_spec}))
        emulated.wait_for(lambda: ready(emulated), message="iris Ready")
        stable = f"iris-{status(emulated)['stableRevision']}"
        model = {"version": "2", "storageUri": "s3://models/iris/2/model.pt", "format": "TorchScript"}
        emulated.patch(MD, "ml", "iris", {"spec": {"model": model}})

        def at_the_pause() -> bool:
            rollout = status(emulated).get("rollout") or {}
            now = counts(emulated)
            return rollout.get("phase") == "Paused" and sorted(now.values()) == [(2, 2), (2, 2)]

        emulated.wait_for(at_the_pause, message="canary at 50% on 2 of 4 pods, paused")
        canary = next(name for name in counts(emulated) if name != stable)
        pod_behavior[stable] = SlowFrom(time.monotonic())  # the stable's pods started from now on are slow
        emulated.patch(MD, "ml", "iris", {"metadata": {"annotations": {ABORT_ANNOTATION: "true"}}})

        # Sampled from the abort to the end: never fewer than N ready pods that take traffic (the stable's, and the
        # canary's while it has a share: the Service selects it only then), from samples whose status and counts
        # belong together (``rollout_with_counts``).
        samples: list[tuple[str, int, dict[str, tuple[int, int]]]] = []
        deadline = time.monotonic() + 40
        while True:
            rollout, before, now = rollout_with_counts(emulated)
            if now == before:
                phase, weight = rollout.get("phase", ""), rollout.get("canaryWeight", 0)
                samples.append((phase, weight, now))
                serving = now[stable][1] + (now.get(canary, (0, 0))[1] if weight > 0 else 0)
                assert serving >= 4, samples[-3:]
            if rollout.get("phase") == "RolledBack" and now.get(canary, (0, 0))[0] == 0:
                break
            assert time.monotonic() < deadline, samples[-3:]
            time.sleep(0.05)
        # The steps in between: the stable grows to 3 beside the canary's 2, then to 4 beside the canary's 1
        # (traffic still shared), then the canary goes.
        shapes = [(c[stable][0], c[canary][0]) for phase, _, c in samples if phase == "RollingBack"]
        assert (3, 2) in shapes and (4, 1) in shapes, shapes
        assert any(
            phase == "RollingBack" and weight > 0 and c[stable][0] == 4 and c[canary][0] == 1
            for phase, weight, c in samples
        ), samples
        assert counts(emulated)[stable] == (4, 4)
    assert runner.exit_code == 0, runner.output
    assert "Traceback" not in runner.output, runner.output
