from __future__ import annotations

import math

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from modeldeploy.rollout.config import CapacityMode
from modeldeploy.rollout.replicas import (
    CanaryScale,
    lowering_scale,
    max_extra_pods,
    neutral_promotion_scale,
    plan_canary_scale,
    plan_gpu_capacity,
    plan_mirror_scale,
    pods_for_weight,
    ratio_granularity,
    ratio_weight,
    rollback_canary_weight,
    rolling_update_step,
    transition_canary,
    transition_stable,
    weight_for_pods,
)


@pytest.mark.parametrize(
    ("total", "weight", "pods"),
    [(10, 10, 1), (10, 15, 2), (4, 25, 1), (4, 26, 2), (3, 50, 2), (1, 1, 1), (0, 50, 0), (5, 0, 0)],
)
def test_pods_for_weight(total: int, weight: int, pods: int) -> None:
    assert pods_for_weight(total, weight) == pods


@pytest.mark.parametrize(
    ("total", "pods", "weight"), [(10, 1, 10), (3, 1, 33), (3, 2, 66), (4, 4, 100), (0, 1, 100), (0, 0, 0)]
)
def test_weight_for_pods(total: int, pods: int, weight: int) -> None:
    assert weight_for_pods(total, pods) == weight


@pytest.mark.parametrize(
    ("total", "weight", "mode", "surge", "exact", "expected"),
    [
        # Exact routing, Surge: the stable keeps everything.
        (10, 10, "Surge", 0, True, CanaryScale(1, 10, 10)),
        (4, 50, "Surge", 0, True, CanaryScale(2, 4, 50)),
        # Exact routing, Neutral: stable + canary within N + surge.
        (4, 25, "Neutral", 0, True, CanaryScale(1, 3, 25)),
        (3, 50, "Neutral", 0, True, CanaryScale(1, 2, 34)),  # 2 + 2 > 3: the canary gets less, weight lowered
        (3, 50, "Neutral", 1, True, CanaryScale(2, 2, 50)),
        (1, 50, "Neutral", 0, True, CanaryScale(0, 1, 0)),  # one pod, no surge: no room for a canary
        # Replica ratio: stable = N - canary (at least 1), weight is the pod ratio.
        (10, 10, "Surge", 0, False, CanaryScale(1, 9, 10)),
        (3, 50, "Surge", 0, False, CanaryScale(2, 1, 67)),
        (1, 50, "Surge", 0, False, CanaryScale(1, 1, 50)),
        (1, 50, "Neutral", 0, False, CanaryScale(0, 1, 0)),
        (4, 100, "Neutral", 0, False, CanaryScale(4, 0, 100)),
    ],
)
def test_plan_canary_scale(total: int, weight: int, mode: str, surge: int, exact: bool, expected: CanaryScale) -> None:
    assert plan_canary_scale(total, weight, mode=mode, surge=surge, exact_routing=exact) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("mode", "surge", "applied", "weight", "stable"),
    [
        ("Surge", 0, 0, 50, 4),  # keeps all pods until promotion
        ("Neutral", 1, 0, 25, 4),  # 1 canary pod fits in the surge: the stable keeps 4
        ("Neutral", 0, 0, 25, 3),  # no surge: the stable gives up one pod before the canary is ready
        ("Neutral", 0, 25, 50, 2),
        ("Neutral", 2, 25, 50, 3),  # keeps its need at 25% (3) since 2 canary + 3 = 5 <= 6
    ],
)
def test_transition_stable(mode: CapacityMode, surge: int, applied: int, weight: int, stable: int) -> None:
    target = plan_canary_scale(4, weight, mode=mode, surge=surge, exact_routing=True)
    got = transition_stable(4, mode=mode, surge=surge, exact_routing=True, applied_weight=applied, target=target)
    assert got == stable
    if mode == "Neutral":
        assert got + target.canary <= 4 + surge


@pytest.mark.parametrize(
    ("mode", "surge", "exact", "applied", "weight", "canary"),
    [
        ("Surge", 0, True, 50, 20, 5),  # keeps its pods (and its traffic) until the stable's are ready
        ("Surge", 0, False, 50, 20, 5),
        ("Neutral", 3, True, 50, 20, 5),  # the stable's 8 and the canary's 5 fit in 10 + 3
        ("Neutral", 2, True, 50, 20, 4),  # 8 + 4 = 12: the canary gives up one pod for the stable's target
        ("Neutral", 0, True, 50, 20, 2),  # no surge: down to its target before the stable's pods are ready
        ("Neutral", 0, False, 50, 20, 2),
        ("Surge", 0, True, 20, 50, 5),  # not lowering: already at (or above) its target
    ],
)
def test_transition_canary(mode: CapacityMode, surge: int, exact: bool, applied: int, weight: int, canary: int) -> None:
    target = plan_canary_scale(10, weight, mode=mode, surge=surge, exact_routing=exact)
    got = transition_canary(10, mode=mode, surge=surge, exact_routing=exact, applied_weight=applied, target=target)
    assert got == canary
    assert got >= target.canary
    if mode == "Neutral":
        assert got + target.stable <= 10 + surge


@pytest.mark.parametrize(
    ("mode", "surge", "exact", "stable_ready", "canary_desired", "expected"),
    [
        # N = 10, lowering 50 -> 20 (target: 2 canary, 8 stable pods).
        ("Neutral", 2, True, 5, 5, CanaryScale(canary=5, stable=7, weight=50)),  # the budget lets 2 more start
        ("Neutral", 2, True, 7, 5, CanaryScale(canary=3, stable=8, weight=30)),  # 7 ready take 70%
        ("Neutral", 0, True, 5, 5, CanaryScale(canary=2, stable=8, weight=50)),  # no room: the canary gives first
        ("Neutral", 0, True, 7, 2, CanaryScale(canary=2, stable=8, weight=30)),
        ("Surge", 0, False, 5, 5, CanaryScale(canary=5, stable=8, weight=50)),  # ratio: 10 ready pods in all
        ("Surge", 0, False, 7, 5, CanaryScale(canary=3, stable=8, weight=50)),
        ("Neutral", 2, True, 5, 3, CanaryScale(canary=3, stable=8, weight=50)),  # never scales the canary up
    ],
)
def test_lowering_scale(
    mode: CapacityMode, surge: int, exact: bool, stable_ready: int, canary_desired: int, expected: CanaryScale
) -> None:
    target = plan_canary_scale(10, 20, mode=mode, surge=surge, exact_routing=exact)
    got = lowering_scale(
        10, mode=mode, surge=surge, exact_routing=exact, applied_weight=50, target=target,
        stable_ready=stable_ready, canary_desired=canary_desired,
    )  # fmt: skip
    assert got == expected
    assert target.canary <= got.canary <= max(canary_desired, target.canary)
    if exact:
        assert pods_for_weight(10, 100 - got.weight) <= stable_ready  # the stable's share is served
    if mode == "Neutral":
        assert got.canary + got.stable <= 10 + surge


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        (
            dict(max_surge=1, max_unavailable=0, new_desired=0, new_ready=0, old_desired=4, old_ready=4),
            (1, 4),
        ),
        (
            dict(max_surge=1, max_unavailable=0, new_desired=1, new_ready=1, old_desired=4, old_ready=4),
            (1, 3),
        ),
        (
            dict(max_surge=1, max_unavailable=0, new_desired=1, new_ready=1, old_desired=3, old_ready=3),
            (2, 3),
        ),
        (
            dict(max_surge=0, max_unavailable=1, new_desired=0, new_ready=0, old_desired=4, old_ready=4),
            (0, 3),
        ),
        (
            dict(max_surge=0, max_unavailable=1, new_desired=0, new_ready=0, old_desired=3, old_ready=3),
            (1, 3),
        ),
        (
            dict(max_surge=2, max_unavailable=0, new_desired=4, new_ready=4, old_desired=2, old_ready=2),
            (4, 0),
        ),
        (
            dict(max_surge=0, max_unavailable=0, new_desired=0, new_ready=0, old_desired=4, old_ready=4),
            (0, 3),
        ),
        (
            dict(max_surge=1, max_unavailable=0, new_desired=1, new_ready=0, old_desired=4, old_ready=2),
            (1, 2),
        ),
    ],
)
def test_rolling_update_step(kwargs: dict[str, int], expected: tuple[int, int]) -> None:
    assert rolling_update_step(4, **kwargs) == expected


def test_ratio_helpers() -> None:
    assert ratio_weight(1, 3) == 25 and ratio_weight(0, 0) == 0 and ratio_weight(2, 1) == 67
    assert ratio_granularity(4) == 25.0 and ratio_granularity(0) == 100.0


def test_gpu_preflight() -> None:
    ok = plan_gpu_capacity(gpus_per_pod=2, extra_pods=1, gpus_free=2)
    assert ok.ok and ok.gpus_needed == 2
    short = plan_gpu_capacity(gpus_per_pod=2, extra_pods=2, gpus_free=3)
    assert not short.ok and "4 GPUs" in short.message and "3 are free" in short.message
    assert max_extra_pods(4, strategy="BlueGreen") == 4
    assert max_extra_pods(4, strategy="Canary", weights=(25, 50), mode="Neutral", surge=0) == 0
    assert max_extra_pods(4, strategy="Canary", weights=(25, 50), mode="Surge", exact_routing=True) == 4
    assert max_extra_pods(4, strategy="RollingUpdate", rolling_max_surge=1) == 1
    # Lowering 90 -> 10 (replica ratio) keeps the canary's 9 beside the stable's 9 (8 extra); the promotion from
    # 10 is what needs the most: 10 new pods beside the stable's 9.
    assert max_extra_pods(10, strategy="Canary", weights=(90, 10), mode="Surge", exact_routing=False) == 9
    with pytest.raises(ValueError):
        plan_gpu_capacity(gpus_per_pod=-1, extra_pods=1, gpus_free=0)


@pytest.mark.parametrize(
    ("applied", "stable_ready", "stable_target", "canary_ready", "exact", "weight"),
    [
        # Replica ratio (one Service over both revisions): the canary's share of the ready pods.
        (25, 3, 4, 1, False, 25),  # the stable's 4th pod is not ready: the canary keeps serving
        (25, 4, 4, 1, False, 0),  # the stable can take everything back
        (25, 3, 4, 0, False, 0),  # a canary without ready pods gives nothing: do not wait for it
        (0, 3, 4, 1, False, 0),  # the canary had no traffic
        (75, 1, 4, 3, False, 75),  # a rolling update far along: the new pods keep serving
        (50, 0, 4, 1, False, 99),  # the stable has no ready pod: the canary serves (the selector keeps both)
        # Exact weights: the stable takes back what its ready pods can serve, the canary keeps the rest.
        (25, 3, 4, 1, True, 25),
        (50, 3, 4, 2, True, 25),
        (50, 2, 3, 2, True, 50),  # Neutral budget: the stable can have 3 pods while the canary keeps 2
        (50, 3, 3, 2, True, 0),  # ... once those 3 are ready, nothing more comes by waiting
        (20, 0, 4, 1, True, 20),
        (20, 4, 4, 1, True, 0),
    ],
)
def test_rollback_canary_weight(
    applied: int, stable_ready: int, stable_target: int, canary_ready: int, exact: bool, weight: int
) -> None:
    got = rollback_canary_weight(
        4,
        applied_weight=applied,
        stable_ready=stable_ready,
        stable_target=stable_target,
        canary_ready=canary_ready,
        exact_routing=exact,
    )
    assert got == weight


def test_rollback_canary_weight_keeps_a_sliver_of_traffic_in_the_selector() -> None:
    assert (
        rollback_canary_weight(
            200, applied_weight=1, stable_ready=198, stable_target=200, canary_ready=1, exact_routing=False
        )
        == 1
    )


@given(
    total=st.integers(1, 50),
    applied=st.integers(0, 100),
    stable_ready=st.integers(0, 60),
    target=st.integers(0, 50),
    canary_ready=st.integers(0, 50),
    exact=st.booleans(),
)
def test_rollback_canary_weight_properties(
    total: int, applied: int, stable_ready: int, target: int, canary_ready: int, exact: bool
) -> None:
    weight = rollback_canary_weight(
        total,
        applied_weight=applied,
        stable_ready=stable_ready,
        stable_target=target,
        canary_ready=canary_ready,
        exact_routing=exact,
    )
    assert 0 <= weight <= 100
    if weight == 0:
        return
    # The canary keeps traffic only while it has ready pods, had traffic, and the stable cannot serve it all yet.
    assert canary_ready > 0 and applied > 0 and stable_ready < min(total, target)
    if exact:
        # Never more than it had, and the stable is never asked for more than its ready pods serve, unless it
        # served that much already.
        assert weight <= applied
        assert 100 - weight <= max(100 - applied, weight_for_pods(total, stable_ready))


@pytest.mark.parametrize(
    ("total", "percent", "mode", "surge", "expected"),
    [
        (4, 50, "Surge", 0, CanaryScale(canary=2, stable=4, weight=50)),  # the stable keeps all of its pods
        (4, 100, "Surge", 0, CanaryScale(canary=4, stable=4, weight=100)),
        (10, 5, "Surge", 0, CanaryScale(canary=1, stable=10, weight=5)),  # one pod at least for any share
        (4, 0, "Surge", 0, CanaryScale(canary=0, stable=4, weight=0)),
        (4, 50, "Neutral", 2, CanaryScale(canary=2, stable=4, weight=50)),
        (4, 60, "Neutral", 1, CanaryScale(canary=1, stable=4, weight=25)),  # what one surge pod can serve
        (200, 10, "Neutral", 1, CanaryScale(canary=1, stable=200, weight=0)),  # one pod cannot serve 1%
        (4, 50, "Neutral", 0, CanaryScale(canary=0, stable=4, weight=0)),
        (0, 50, "Surge", 0, CanaryScale(canary=0, stable=0, weight=50)),
    ],
)
def test_plan_mirror_scale(total: int, percent: int, mode: CapacityMode, surge: int, expected: CanaryScale) -> None:
    assert plan_mirror_scale(total, percent, mode=mode, surge=surge) == expected


@given(total=st.integers(0, 500), percent=st.integers(0, 100), surge=st.integers(0, 50), neutral=st.booleans())
def test_a_mirrors_pods_can_serve_the_share_applied(total: int, percent: int, surge: int, neutral: bool) -> None:
    mode: CapacityMode = "Neutral" if neutral else "Surge"
    scale = plan_mirror_scale(total, percent, mode=mode, surge=surge)
    assert scale.stable == total and scale.weight <= percent
    assert scale.canary >= pods_for_weight(total, scale.weight)
    if neutral:
        assert scale.canary <= surge
    else:
        assert scale.weight == percent


@pytest.mark.parametrize(
    ("total", "surge", "weight", "ready", "expected"),
    [
        # No surge: the stable gives up one pod for the canary's first, then the canary takes each next pod's share
        # ahead of that pod, so the stable keeps a pod for as long as it has a share.
        (4, 0, 0, 0, CanaryScale(canary=1, stable=3, weight=0)),
        (4, 0, 0, 1, CanaryScale(canary=2, stable=2, weight=50)),
        (4, 0, 50, 1, CanaryScale(canary=2, stable=2, weight=50)),  # the next pod is not ready yet: held
        (4, 0, 50, 2, CanaryScale(canary=3, stable=1, weight=75)),
        (4, 0, 75, 3, CanaryScale(canary=4, stable=0, weight=100)),
        (4, 0, 100, 4, CanaryScale(canary=4, stable=0, weight=100)),
        # One pod of surge: the canary's next pod has room, nobody serves short.
        (4, 1, 0, 0, CanaryScale(canary=1, stable=4, weight=0)),
        (4, 1, 0, 1, CanaryScale(canary=2, stable=3, weight=25)),
        (4, 1, 25, 3, CanaryScale(canary=4, stable=1, weight=75)),
        # Surge for all: the canary scales to N at once, the stable keeps what fits.
        (4, 4, 0, 0, CanaryScale(canary=4, stable=4, weight=0)),
        # A step's weight the canary already holds (3 pods, 50 %: whole percents favour the stable).
        (3, 0, 34, 1, CanaryScale(canary=2, stable=1, weight=67)),
        (1, 0, 0, 0, CanaryScale(canary=1, stable=0, weight=0)),  # one pod, no surge: a swap, nothing else fits
    ],
)
def test_neutral_promotion_scale(total: int, surge: int, weight: int, ready: int, expected: CanaryScale) -> None:
    assert neutral_promotion_scale(total, surge=surge, weight=weight, canary_ready=ready) == expected


@given(total=st.integers(1, 200), surge=st.integers(0, 50), weight=st.integers(0, 100), ready=st.integers(0, 200))
def test_a_neutral_promotion_stays_in_budget_and_never_leaves_a_share_without_pods(
    total: int, surge: int, weight: int, ready: int
) -> None:
    assume(ready <= total)
    scale = neutral_promotion_scale(total, surge=surge, weight=weight, canary_ready=ready)
    assert scale.canary + scale.stable <= total + surge or ready >= total
    assert scale.weight >= weight or ready >= total, "a promotion never lowers the canary's weight"
    assert scale.canary <= total and scale.canary >= ready
    if ready < total:
        assert scale.canary > ready, "every pass has a canary pod coming up: the promotion always progresses"
    if scale.weight > weight:
        # The share the canary gains is served by its ready pods, at most one pod short (whole percents favour
        # the stable: up to one percent more).
        assert scale.weight <= math.ceil(100 * (ready + 1) / total)
    if scale.weight < 100 and (total > 1 or surge > 0):
        # The stable's share has pods, at most one short, and at least one.
        assert scale.stable >= 1 and scale.stable >= pods_for_weight(total, 100 - scale.weight) - 1
