"""Tests for modeldeploy.fresh: the overlay of just-written objects over the watch caches."""

from __future__ import annotations

from typing import Any

from modeldeploy.fresh import FreshObjects, key_of


def obj(rv: str, value: int = 0) -> dict[str, Any]:
    return {"kind": "Service", "metadata": {"namespace": "ns", "name": "a", "resourceVersion": rv}, "v": value}


def test_written_object_wins_over_an_older_cached_copy() -> None:
    fresh = FreshObjects()
    fresh.put(obj("10", 1))
    assert fresh.resolve(key_of(obj("9")), obj("9")) == obj("10", 1)


def test_cache_wins_once_it_caught_up_and_overlay_is_dropped() -> None:
    fresh = FreshObjects()
    fresh.put(obj("10", 1))
    assert fresh.resolve(key_of(obj("10")), obj("10", 2)) == obj("10", 2)
    assert len(fresh) == 0
    # A later change by someone else is seen.
    assert fresh.resolve(key_of(obj("11")), obj("11", 3)) == obj("11", 3)


def test_object_not_yet_in_cache_is_known() -> None:
    fresh = FreshObjects()
    fresh.put(obj("5"))
    assert fresh.resolve(key_of(obj("5")), None) == obj("5")
    assert fresh.items_for("ns") == [(key_of(obj("5")), obj("5"))]
    assert fresh.items_for("other") == []
    fresh.forget(key_of(obj("5")))
    assert fresh.resolve(key_of(obj("5")), None) is None


def test_opaque_resource_versions_trust_the_watch() -> None:
    fresh = FreshObjects()
    fresh.put(obj("abc", 1))
    assert fresh.resolve(key_of(obj("xyz")), obj("xyz", 2)) == obj("xyz", 2)
