"""Tests for modeldeploy.conditions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from modeldeploy.conditions import Condition, changed, find, merge_conditions, rfc3339

T0 = datetime(2026, 1, 2, 3, 4, 5, 678, tzinfo=UTC)


def test_rfc3339_is_utc_seconds() -> None:
    assert rfc3339(T0) == "2026-01-02T03:04:05Z"


def test_transition_time_kept_while_status_unchanged() -> None:
    first = merge_conditions([], [Condition("Ready", "False", "A", "a")], generation=1, now=T0)
    later = T0 + timedelta(minutes=5)
    second = merge_conditions(first, [Condition("Ready", "False", "B", "b")], generation=2, now=later)
    assert second[0]["lastTransitionTime"] == "2026-01-02T03:04:05Z"
    assert second[0]["observedGeneration"] == 2
    third = merge_conditions(second, [Condition("Ready", "True", "C", "c")], generation=2, now=later)
    assert third[0]["lastTransitionTime"] == rfc3339(later)


def test_foreign_conditions_are_kept() -> None:
    old = [{"type": "Custom", "status": "True", "reason": "X", "message": "m"}]
    merged = merge_conditions(old, [Condition("Ready", "True", "R", "r")], generation=1, now=T0)
    assert [c["type"] for c in merged] == ["Ready", "Custom"]
    assert find(merged, "Custom") == old[0]


def test_changed_ignores_message_unless_asked() -> None:
    a = [{"type": "Ready", "status": "False", "reason": "Wait", "message": "0/2"}]
    b = [{"type": "Ready", "status": "False", "reason": "Wait", "message": "1/2"}]
    assert not changed(a, b, "Ready")
    assert changed(a, b, "Ready", include_message=True)
    assert changed([], b, "Ready")
    assert not changed([], [], "Ready")
