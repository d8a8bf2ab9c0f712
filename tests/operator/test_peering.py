"""Tests for modeldeploy.peering: kopf's pause rule, decided from a peering object's status.

The property test runs kopf's own ``process_peering_event`` on the same status as the oracle: whatever peers a
peering object lists, the operator's timers pause exactly when kopf pauses its watch streams.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modeldeploy.peering import Decision, combine, decide, peers

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def entry(priority: int, seen_ago: float, lifetime: int = 60) -> dict[str, Any]:
    return {"priority": priority, "lifetime": lifetime, "lastseen": (NOW - timedelta(seconds=seen_ago)).isoformat()}


@pytest.mark.parametrize(
    ("status", "active", "reason"),
    [
        (None, True, ""),
        ({}, True, ""),
        ({"me": entry(10, 1)}, True, ""),  # only this process
        ({"me": entry(10, 1), "b": entry(5, 1)}, True, ""),  # outranks the other
        ({"me": entry(10, 1), "b": entry(20, 1)}, False, "peer b has a higher priority (20 > 10)"),
        ({"me": entry(10, 1), "b": entry(20, 61)}, True, ""),  # b's keep-alive expired: dead
        ({"me": entry(10, 1), "b": entry(20, 59)}, False, "peer b has a higher priority (20 > 10)"),
        ({"me": entry(10, 1), "b": entry(20, 100, lifetime=120)}, False, "peer b has a higher priority (20 > 10)"),
        ({"me": entry(10, 1), "b": entry(10, 1)}, False, "peer b has the same priority (10); kopf pauses both"),
        ({"b": entry(20, 1), "c": entry(30, 1)}, False, "peer c has a higher priority (30 > 10)"),
        ({"b": {"priority": 20, "lifetime": 60}}, False, "peer b has a higher priority (20 > 10)"),  # no lastseen
        # Entries kopf could not have written are left out rather than trusted or crashed on.
        ({"b": "garbage", "c": {"priority": "high"}, "d": {"priority": 20, "lastseen": "yesterday"}}, True, ""),
        ({"b": {"priority": True, "lastseen": NOW.isoformat()}}, True, ""),
    ],
)
def test_decide(status: dict[str, Any] | None, active: bool, reason: str) -> None:
    assert decide(status, identity="me", priority=10, now=NOW) == Decision(active, reason)


def test_times_written_with_z_or_without_a_zone_are_read() -> None:
    status = {"b": {"priority": 20, "lifetime": 60, "lastseen": "2026-11-24T11:59:30Z"},
              "c": {"priority": 20, "lifetime": 60, "lastseen": "2026-11-24T11:58:00"}}  # fmt: skip
    assert [(p.identity, p.deadline) for p in peers(status, NOW)] == [
        ("b", datetime(2026, 11, 24, 12, 0, 30, tzinfo=UTC)),
        ("c", datetime(2026, 11, 24, 11, 59, tzinfo=UTC)),
    ]


def test_combine_pauses_when_any_namespace_does() -> None:
    paused = Decision(False, "peer x has a higher priority (2 > 1)")
    assert combine([Decision(True, ""), paused, Decision(True, "")]) == paused
    assert combine([Decision(True, ""), Decision(True, "")]) == Decision(True, "")
    assert combine([]) == Decision(True, "")


def kopf_pauses(status: dict[str, Any], identity: str, priority: int) -> bool:
    """kopf's decision: ``process_peering_event`` on this status, with a conflict toggle that starts off."""
    from kopf._cogs.aiokits.aiotoggles import Toggle
    from kopf._cogs.configs.configuration import OperatorSettings
    from kopf._cogs.structs.references import Resource
    from kopf._core.engines.peering import Identity, process_peering_event

    async def run() -> bool:
        settings = OperatorSettings()
        settings.peering.name = "modeldeploy"
        settings.peering.priority = priority
        toggle = Toggle(False)
        woken = asyncio.Event()
        woken.set()  # return at once instead of sleeping until the next peer's deadline
        event = {"type": "MODIFIED", "object": {"metadata": {"name": "modeldeploy"}, "status": status}}
        await process_peering_event(
            raw_event=event, namespace=None, resource=Resource("kopf.dev", "v1", "clusterkopfpeerings"),
            identity=Identity(identity), settings=settings, autoclean=False, stream_pressure=woken,
            conflicts_found=toggle,
        )  # fmt: skip
        return toggle.is_on()

    return asyncio.run(run())


PEER = st.fixed_dictionaries({
    "priority": st.integers(-3, 3),
    "lifetime": st.sampled_from([10, 60, 120]),
    # Seconds since the keep-alive, kept 5 s away from the deadline: kopf reads the clock itself.
    "age": st.sampled_from([0, 4, 20, 70, 115, 200]),
})  # fmt: skip


@settings(max_examples=150, deadline=None)
@given(
    others=st.dictionaries(st.sampled_from(["a", "b", "c", "d"]), PEER, max_size=4),
    mine=st.one_of(st.none(), PEER),
    priority=st.integers(-3, 3),
)
def test_the_decision_is_kopfs(others: dict[str, dict[str, int]], mine: dict[str, int] | None, priority: int) -> None:
    now = datetime.now(UTC)
    everyone = {**others, **({"me": mine} if mine is not None else {})}
    status = {
        identity: {"priority": p["priority"], "lifetime": p["lifetime"],
                   "lastseen": (now - timedelta(seconds=p["age"])).isoformat()}
        for identity, p in everyone.items()
    }  # fmt: skip
    for p in everyone.values():  # keep away from the deadline, where the two clocks could disagree
        if abs(p["lifetime"] - p["age"]) < 5:
            return
    ours = decide(status, identity="me", priority=priority, now=now)
    assert (not ours.active) == kopf_pauses(status, "me", priority), (status, ours)
