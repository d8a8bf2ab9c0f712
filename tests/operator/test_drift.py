"""Tests for modeldeploy.drift: when a child still matches what would be applied."""

from __future__ import annotations

import copy
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modeldeploy.drift import GATED_FIELDS, contains, dropped_fields, needs_apply, parse_quantity, stamp


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1", Decimal(1)),
        ("500m", Decimal("0.5")),
        ("1000m", Decimal(1)),
        ("1Gi", Decimal(2**30)),
        ("1024Mi", Decimal(2**30)),
        ("2k", Decimal(2000)),
        ("1e3", Decimal(1000)),
        (3, Decimal(3)),
    ],
)
def test_parse_quantity(text: object, value: Decimal) -> None:
    assert parse_quantity(text) == value


@pytest.mark.parametrize("text", ["", "abc", "1Zi", "http", True, None, [1]])
def test_parse_quantity_rejects_non_quantities(text: object) -> None:
    assert parse_quantity(text) is None


def test_server_normalized_quantities_are_equal() -> None:
    desired = {"spec": {"resources": {"limits": {"cpu": "1000m", "memory": "1024Mi"}}}}
    observed = {"spec": {"resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}, "status": {"x": 1}}
    assert contains(observed, desired)
    assert not needs_apply(desired, observed)


def test_extra_server_fields_do_not_count_as_drift() -> None:
    desired = {"metadata": {"name": "a", "labels": {"x": "1"}}, "spec": {"ports": [{"port": 80}]}}
    observed = {
        "metadata": {"name": "a", "labels": {"x": "1"}, "resourceVersion": "7", "uid": "u"},
        "spec": {"ports": [{"port": 80, "protocol": "TCP"}], "clusterIP": "10.0.0.1"},
    }
    assert not needs_apply(desired, observed)


@pytest.mark.parametrize(
    "observed",
    [
        None,
        {"metadata": {"name": "a", "labels": {"x": "2"}}, "spec": {"ports": [{"port": 80}]}},
        {"metadata": {"name": "a"}, "spec": {"ports": [{"port": 80}]}},
        {"metadata": {"name": "a", "labels": {"x": "1"}}, "spec": {"ports": [{"port": 80}, {"port": 81}]}},
        {"metadata": {"name": "a", "labels": {"x": "1"}}, "spec": {"ports": []}},
    ],
)
def test_drift_is_detected(observed: dict[str, Any] | None) -> None:
    desired = {"metadata": {"name": "a", "labels": {"x": "1"}}, "spec": {"ports": [{"port": 80}]}}
    assert needs_apply(desired, observed)


def test_booleans_are_not_numbers() -> None:
    assert not contains({"a": 1}, {"a": True})
    assert not contains({"a": True}, {"a": 1})


def test_status_is_never_compared() -> None:
    assert not needs_apply({"metadata": {"name": "a"}, "status": {"x": 1}}, {"metadata": {"name": "a"}})


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=3), children, max_size=3),
    max_leaves=10,
)


@given(json_values)
def test_every_value_contains_itself(value: Any) -> None:
    assert contains(value, value)


@given(st.dictionaries(st.text(max_size=3), json_values, max_size=4), st.text(max_size=3), json_values)
def test_a_superset_contains_the_original(base: dict[str, Any], key: str, extra: Any) -> None:
    bigger = {**base}
    if key not in bigger:
        bigger[key] = extra
    assert contains(bigger, base)


def test_a_field_no_longer_applied_is_noticed_through_the_digest() -> None:
    from modeldeploy.drift import APPLIED_ANNOTATION, stamp

    before = stamp({"kind": "Service", "metadata": {"name": "a"}, "spec": {"selector": {"app": "a", "rev": "1"}}})
    observed = {**before, "metadata": {**before["metadata"], "resourceVersion": "5"}}
    assert not needs_apply(before, observed)
    after = stamp({"kind": "Service", "metadata": {"name": "a"}, "spec": {"selector": {"app": "a"}}})
    assert contains(observed, {k: v for k, v in after.items() if k != "metadata"}), "a subset check alone misses it"
    assert after["metadata"]["annotations"][APPLIED_ANNOTATION] != before["metadata"]["annotations"][APPLIED_ANNOTATION]
    assert needs_apply(after, observed)


# --- fields behind a feature gate: dropped by an API server without it ---------------------------------------


def _hpa(tolerance: object = "0.05", window: int = 600) -> dict[str, Any]:
    rules: dict[str, Any] = {"stabilizationWindowSeconds": window}
    if tolerance is not None:
        rules["tolerance"] = tolerance
    return stamp(
        {
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "iris", "namespace": "ml"},
            "spec": {"maxReplicas": 4, "behavior": {"scaleDown": rules}},
        }
    )


def _stored(desired: dict[str, Any], *, keep_tolerance: bool, canonical: str = "50m") -> dict[str, Any]:
    """What the API server stores for ``desired``: the quantity in canonical form, or the field dropped."""
    stored = copy.deepcopy(desired)
    stored["metadata"]["resourceVersion"] = "7"
    rules = stored["spec"]["behavior"]["scaleDown"]
    if keep_tolerance:
        rules["tolerance"] = canonical
    else:
        del rules["tolerance"]
    return stored


SCALE_DOWN = next(f for f in GATED_FIELDS if f.dotted == "spec.behavior.scaleDown.tolerance")


def test_a_tolerance_stored_in_canonical_form_is_no_drift() -> None:
    desired = _hpa("0.05")
    assert not needs_apply(desired, _stored(desired, keep_tolerance=True, canonical="50m"))
    assert needs_apply(desired, _stored(desired, keep_tolerance=True, canonical="60m")), "a changed value is drift"


def test_dropped_fields_names_the_gated_fields_the_answer_lacks() -> None:
    desired = _hpa()
    assert dropped_fields(desired, _stored(desired, keep_tolerance=False)) == (SCALE_DOWN,)
    assert dropped_fields(desired, _stored(desired, keep_tolerance=True)) == ()
    assert dropped_fields(_hpa(tolerance=None), _stored(desired, keep_tolerance=False)) == (), "not asked for"
    service = {"kind": "Service", "spec": {"behavior": {"scaleDown": {"tolerance": "1"}}}}
    assert dropped_fields(service, {"kind": "Service", "spec": {}}) == (), "gated for HPAs only"


def test_a_field_the_server_is_known_to_drop_is_not_applied_again() -> None:
    desired = _hpa()
    stored = _stored(desired, keep_tolerance=False)
    assert needs_apply(desired, stored), "not known to be dropped: missing, so applied"
    assert not needs_apply(desired, stored, dropped=(SCALE_DOWN,))
    assert not needs_apply(desired, stored, dropped=GATED_FIELDS), "the scale-up field is not asked for"


def test_a_known_dropped_field_hides_no_other_drift() -> None:
    desired = _hpa()
    stored = _stored(desired, keep_tolerance=False)
    edited = copy.deepcopy(stored)
    edited["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] = 60
    assert needs_apply(desired, edited, dropped=(SCALE_DOWN,)), "another field edited"
    changed = _hpa("0.1")
    assert needs_apply(changed, stored, dropped=(SCALE_DOWN,)), "a new configuration: the digests differ"
    kept = _stored(desired, keep_tolerance=True, canonical="70m")
    assert needs_apply(desired, kept, dropped=(SCALE_DOWN,)), "stored with another value: drift, dropped or not"
    unstamped = {k: v for k, v in desired.items() if k != "metadata"} | {"metadata": {"name": "iris"}}
    assert needs_apply(unstamped, stored, dropped=(SCALE_DOWN,)), "without a digest, nothing is known to match"
