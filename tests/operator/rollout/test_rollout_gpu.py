"""GPU arithmetic of the rollout pre-flight: whole pods per node, and the extra pods a rollout runs."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rollout_harness import B, Cluster, spec

from modeldeploy.rollout.replicas import max_extra_pods, plan_gpu_capacity, usable_gpus


@pytest.mark.parametrize(
    ("free", "per_pod", "usable"),
    [
        ([], 1, 0),
        ([4], 1, 4),
        ([3], 2, 2),  # One 2-GPU pod fits; the third GPU stays idle.
        ([1, 1, 1, 1], 2, 0),  # Four free GPUs, but no node holds a 2-GPU pod.
        ([8, 3, 1], 4, 8),
        ([5, -2], 1, 5),  # An over-committed node counts as 0, never as a debt.
        ([8], 0, 0),  # A CPU model uses no GPU.
    ],
)
def test_usable_gpus(free: list[int], per_pod: int, usable: int) -> None:
    assert usable_gpus(free, per_pod) == usable


def test_usable_gpus_refuses_a_negative_pod_size() -> None:
    with pytest.raises(ValueError, match="gpus_per_pod"):
        usable_gpus([1], -1)


@settings(max_examples=60, deadline=None)
@given(free=st.lists(st.integers(-4, 16), max_size=8), per_pod=st.integers(1, 8), extra=st.integers(0, 8))
def test_usable_gpus_properties(free: list[int], per_pod: int, extra: int) -> None:
    usable = usable_gpus(free, per_pod)
    assert usable % per_pod == 0
    assert 0 <= usable <= sum(max(0, f) for f in free)
    # The pre-flight says yes exactly when the extra pods can be placed one node at a time.
    pods_that_fit = sum(max(0, f) // per_pod for f in free)
    assert plan_gpu_capacity(gpus_per_pod=per_pod, extra_pods=extra, gpus_free=usable).ok == (extra <= pods_that_fit)
    # One more free GPU somewhere never makes fewer usable.
    if free:
        assert usable_gpus([free[0] + 1, *free[1:]], per_pod) >= usable


@pytest.mark.parametrize(
    ("kwargs", "extra"),
    [
        ({"strategy": "BlueGreen"}, 4),
        ({"strategy": "RollingUpdate", "rolling_max_surge": 1}, 1),
        ({"strategy": "Canary", "weights": (25, 50), "mode": "Neutral", "surge": 0}, 0),
        ({"strategy": "Canary", "weights": (25, 50), "mode": "Neutral", "surge": 2}, 2),
        ({"strategy": "Canary", "weights": (25, 50), "exact_routing": True}, 4),  # Promotion: N beside N.
        # Replica ratio: the stable shrinks as the canary grows; promotion adds 4 canary pods to its last 2.
        ({"strategy": "Canary", "weights": (25, 50), "exact_routing": False}, 2),
        ({"strategy": "Canary", "weights": (), "exact_routing": False}, 4),
    ],
)
def test_max_extra_pods(kwargs: dict[str, Any], extra: int) -> None:
    assert max_extra_pods(4, **kwargs) == extra


WEIGHTS = st.lists(st.integers(1, 99), min_size=1, max_size=4)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    weights=WEIGHTS,
    replicas=st.integers(1, 6),
    gateway=st.booleans(),
    neutral=st.sampled_from([None, 0, 1, 2]),
)
def test_a_canary_never_runs_more_extra_pods_than_the_preflight_counts(
    weights: list[int], replicas: int, gateway: bool, neutral: int | None
) -> None:
    """Drive the state machine through a whole rollout; at no decision do its pods exceed ``N + extra``."""
    canary: dict[str, Any] = {"steps": [{"setWeight": w} for w in weights]}
    if gateway:
        canary["trafficRouting"] = {"type": "GatewayAPI", "gatewayAPI": {"parentRefs": [{"name": "gw"}]}}
    if neutral is not None:
        canary["capacity"] = {"mode": "Neutral", "maxSurgePods": neutral}
    rollout = spec({"strategy": "Canary", "canary": canary})
    cluster = Cluster(rollout, replicas=replicas, gpus_per_pod=1, gpus_free=0)
    cluster.run()
    cluster.deploy(B)
    extra = max_extra_pods(
        replicas,
        strategy="Canary",
        weights=tuple(weights),
        mode=rollout.capacity.mode,
        surge=rollout.capacity.max_surge_pods,
        exact_routing=gateway,
    )
    final = cluster.run(steps=len(weights) * 4 + 10)
    assert final.status.stable_revision == B
    for decision in cluster.decisions:
        assert sum(decision.replicas.values()) <= replicas + extra, (decision.replicas, extra)
    record = final.status.gpu_preflight
    assert record is not None and record.revision == B and record.extra_pods == extra
    assert record.result == ("Sufficient" if extra == 0 else "Insufficient")
