"""create_merge_patch: applying the patch it computes (RFC 7386) always yields the desired document."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from modeldeploy.mergepatch import create_merge_patch
from modeldeploy.sim.patching import merge_patch

scalars = st.one_of(st.booleans(), st.integers(-5, 5), st.text(max_size=3))
keys = st.sampled_from(["a", "b", "c", "pausedAt", "rollback"])
documents = st.recursive(
    scalars | st.lists(scalars, max_size=3),
    lambda inner: st.dictionaries(keys, inner, max_size=4),
    max_leaves=12,
)
objects = st.dictionaries(keys, documents, max_size=5)


@settings(max_examples=300)
@given(objects, objects)
def test_applying_the_patch_gives_the_desired_document(current: dict[str, Any], desired: dict[str, Any]) -> None:
    patch = create_merge_patch(current, desired)
    assert merge_patch(current, patch) == desired


@settings(max_examples=100)
@given(objects)
def test_no_change_is_an_empty_patch(document: dict[str, Any]) -> None:
    assert create_merge_patch(document, document) == {}


def test_dropped_nested_keys_are_nulled_and_unchanged_keys_left_out() -> None:
    current = {"phase": "Progressing", "rollout": {"phase": "Paused", "pausedAt": "t0", "step": 1}, "keep": [1]}
    desired = {"phase": "Progressing", "rollout": {"phase": "Progressing", "step": 1}, "keep": [1]}
    assert create_merge_patch(current, desired) == {"rollout": {"phase": "Progressing", "pausedAt": None}}


def test_a_map_replacing_a_scalar_is_sent_whole() -> None:
    assert create_merge_patch({"a": 1}, {"a": {"b": 2}}) == {"a": {"b": 2}}
    assert create_merge_patch({"a": {"b": 2}}, {"a": 3}) == {"a": 3}
