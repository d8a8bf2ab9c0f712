"""Tests for modeldeploy.fresh: the overlay of just-written objects over the watch caches."""

from __future__ import annotations

from typing import Any

from modeldeploy.fresh import FreshObjects, ghosts, key_of, uid_of


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


def child(name: str, uid: str, rv: str, kind: str = "Deployment") -> dict[str, Any]:
    return {"kind": kind, "metadata": {"namespace": "ns", "name": name, "uid": uid, "resourceVersion": rv}}


def test_ghosts_are_the_cached_objects_a_newer_list_does_not_have() -> None:
    cached = [child("kept", "u1", "5"), child("deleted", "u2", "6"), child("replaced", "u3", "7"),
              child("created-after-the-list", "u4", "21")]  # fmt: skip
    listed = [child("kept", "u1", "5"), child("replaced", "u9", "15")]
    assert [(key_of(obj), uid_of(obj)) for obj in ghosts(cached, listed, "20")] == [
        (("Deployment", "ns", "deleted"), "u2"),
        (("Deployment", "ns", "replaced"), "u3"),
    ]
    assert ghosts(cached, listed, "opaque") == [], "without an order a missing object may just be newer"
    assert ghosts([child("x", "u1", "opaque")], [], "20") == []


def test_a_gone_object_stays_hidden_beside_a_new_one_of_the_same_name() -> None:
    fresh = FreshObjects()
    ghost = child("a", "u1", "5")
    assert fresh.mark_gone(ghost) and not fresh.mark_gone(ghost), "new once"
    assert fresh.is_gone(ghost) and fresh.resolve(key_of(ghost), ghost) is None
    recreated = child("a", "u2", "30")
    assert not fresh.is_gone(recreated) and fresh.resolve(key_of(recreated), recreated) == recreated
    # kopf's caches keep the ghost beside the new object (its index is by uid): the operator's writes of the new
    # one and the new one's deletion leave the ghost hidden.
    fresh.put(recreated)
    fresh.forget(key_of(recreated))
    assert fresh.is_gone(ghost)


def test_marks_go_with_their_objects_from_the_caches() -> None:
    fresh = FreshObjects()
    ghost, pod = child("a", "u1", "5"), child("p", "u2", "5", kind="Pod")
    fresh.mark_gone(ghost)
    fresh.mark_gone(pod)
    fresh.prune_gone("Deployment", [ghost])
    assert fresh.gone == {(key_of(ghost), "u1"), (key_of(pod), "u2")}, "still cached: kept"
    fresh.prune_gone("Deployment", [child("a", "u3", "40")])
    assert fresh.gone == {(key_of(pod), "u2")}, "gone from the caches: dropped, other kinds untouched"
