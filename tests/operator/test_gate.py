"""Tests for modeldeploy.gate (the peering gate) and for how the controller and the metrics follow it."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from modeldeploy.config import OperatorConfig
from modeldeploy.controller import Controller, ObjectKey
from modeldeploy.gate import PeeringGate
from modeldeploy.kube import ApiError, KubeClient
from modeldeploy.kube.resources import CLUSTER_PEERINGS, PEERINGS, Resource
from modeldeploy.metrics import OperatorMetrics

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def peering(**priorities: int) -> dict[str, Any]:
    seen = (NOW - timedelta(seconds=5)).isoformat()
    status = {who: {"priority": p, "lifetime": 60, "lastseen": seen} for who, p in priorities.items()}
    return {"metadata": {"name": "modeldeploy"}, "status": status}


class Peerings(KubeClient):
    """Answers reads of peering objects from ``objects`` ((plural, namespace) -> body, or an error to raise)."""

    def __init__(self, objects: dict[tuple[str, str | None], Any]) -> None:
        self.objects = objects
        self.reads: list[tuple[str, str | None, str]] = []

    async def read_object(self, resource: Resource, namespace: str | None, name: str) -> dict[str, Any] | None:
        self.reads.append((resource.plural, namespace, name))
        found = self.objects.get((resource.plural, namespace))
        if isinstance(found, Exception):
            raise found
        return found  # type: ignore[no-any-return]


class Clock:
    def __init__(self) -> None:
        self.seconds = 0.0

    def __call__(self) -> float:
        return self.seconds


def gate(kube: Peerings, clock: Clock, namespaces: tuple[str, ...] = ()) -> PeeringGate:
    return PeeringGate(kube, "modeldeploy", "me", 10, namespaces, ttl=5.0, clock=lambda: NOW, monotonic=clock)


async def test_cluster_wide_it_reads_the_cluster_peering_at_most_once_per_ttl() -> None:
    kube, clock = Peerings({("clusterkopfpeerings", None): peering(me=10, other=5)}), Clock()
    g = gate(kube, clock)
    assert await g.active() and await g.active()
    assert kube.reads == [(CLUSTER_PEERINGS.plural, None, "modeldeploy")]
    kube.objects[("clusterkopfpeerings", None)] = peering(me=10, other=20)
    clock.seconds = 4.9
    assert await g.active()  # cached
    clock.seconds = 5.0
    assert not await g.active()
    assert g.decision.reason == "peer other has a higher priority (20 > 10)"
    assert len(kube.reads) == 2


async def test_namespaced_it_pauses_when_any_namespace_has_a_higher_peer() -> None:
    kube = Peerings({("kopfpeerings", "a"): peering(me=10), ("kopfpeerings", "b"): peering(me=10, x=11)})
    g = gate(kube, Clock(), ("a", "b"))
    assert not await g.active()
    assert [(plural, ns) for plural, ns, _ in kube.reads] == [(PEERINGS.plural, "a"), (PEERINGS.plural, "b")]
    assert "peer x" in g.decision.reason


async def test_a_missing_peering_object_means_no_peers() -> None:
    g = gate(Peerings({}), Clock())
    assert await g.active()


@pytest.mark.parametrize("error", [ApiError(403, "Forbidden", "no"), ApiError(503, "ServiceUnavailable", "down"),
                                   OSError("connection refused")])  # fmt: skip
async def test_an_unreadable_peering_keeps_the_last_decision(
    error: Exception, caplog: pytest.LogCaptureFixture
) -> None:
    kube, clock = Peerings({("clusterkopfpeerings", None): peering(me=10, other=20)}), Clock()
    g = gate(kube, clock)
    assert not await g.active()
    kube.objects[("clusterkopfpeerings", None)] = error
    with caplog.at_level(logging.WARNING, logger="modeldeploy"):
        for step in range(1, 4):
            clock.seconds = 5.0 * step
            assert not await g.active()  # neither a second writer nor a stopped one
    assert len([r for r in caplog.records if "Cannot read the peering object" in r.message]) == 1  # once per error
    kube.objects[("clusterkopfpeerings", None)] = peering(me=10)
    clock.seconds = 20.0
    assert await g.active()


async def test_concurrent_callers_share_one_read() -> None:
    kube, clock = Peerings({("clusterkopfpeerings", None): peering(me=10)}), Clock()
    g = gate(kube, clock)
    assert all(await asyncio.gather(*(g.active() for _ in range(20))))
    assert len(kube.reads) == 1


# -- the controller


class Switch:
    def __init__(self, active: bool) -> None:
        self.is_active = active
        self.asked = 0

    async def active(self) -> bool:
        self.asked += 1
        return self.is_active


def controller(switch: Switch) -> tuple[Controller, list[ObjectKey]]:
    reconciled: list[ObjectKey] = []
    c = Controller(config=OperatorConfig(), kube=Peerings({}), gate=switch, gate_poll_seconds=0.01)

    async def reconcile(key: ObjectKey) -> None:
        reconciled.append(key)

    c.reconcile = reconcile  # type: ignore[method-assign, assignment]
    return c, reconciled


async def test_a_standing_by_controller_reconciles_nothing_and_catches_up_on_resuming() -> None:
    switch = Switch(False)
    c, reconciled = controller(switch)
    for key in (("ml", "a"), ("ml", "b"), ("ml", "a")):
        await c.reconcile_quietly(key)
    c.schedule(("ml", "c"), 0.0)
    await asyncio.sleep(0.05)
    assert reconciled == []
    switch.is_active = True
    await asyncio.sleep(0.05)
    assert sorted(reconciled) == [("ml", "a"), ("ml", "b"), ("ml", "c")]  # each once
    await c.close()


async def test_an_active_controller_reconciles_at_once() -> None:
    c, reconciled = controller(Switch(True))
    await c.reconcile_quietly(("ml", "a"))
    assert reconciled == [("ml", "a")]
    await c.close()


async def test_the_metrics_follow_the_gate() -> None:
    switch = Switch(True)
    c, _ = controller(switch)
    c.metrics.record_rollout("ml", "a", {"rollout": {"phase": "Progressing"}, "conditions": []}, [])
    await c.reconcile_quietly(("ml", "a"))
    assert c.metrics.registry.get_sample_value("modeldeploy_active") == 1
    switch.is_active = False
    await c.reconcile_quietly(("ml", "a"))
    assert c.metrics.registry.get_sample_value("modeldeploy_active") == 0
    await c.close()


def test_a_standing_by_process_exports_no_per_object_gauges() -> None:
    metrics = OperatorMetrics()
    status = {"canaryWeight": 10, "rollout": {"phase": "Progressing"},
              "conditions": [{"type": "Degraded", "status": "True"}]}  # fmt: skip
    metrics.record_rollout("ml", "iris", status, ["RollingBack"])

    per_object = {"modeldeploy_rollout_phase", "modeldeploy_canary_weight", "modeldeploy_degraded"}

    def gauges() -> set[str]:
        return {s.name for m in metrics.registry.collect() for s in m.samples if s.name in per_object}

    assert gauges() == per_object
    metrics.set_active(False)
    assert gauges() == set() and metrics.registry.get_sample_value("modeldeploy_active") == 0
    # Counters stay: they only ever grow, and the active process's own series carry the news.
    assert metrics.registry.get_sample_value(
        "modeldeploy_rollbacks_total", {"namespace": "ml", "name": "iris", "reason": "automatic"}) == 1
    metrics.set_active(True)
    assert gauges() == set()  # stale records are gone; the reconciles after the resume record them anew
    metrics.record_rollout("ml", "iris", status, [])
    assert gauges() == per_object
