from __future__ import annotations

import os

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from modelserve import signature
from modelserve.signature import Array, has_non_finite

floats = hnp.arrays(
    st.sampled_from([np.float16, np.float32, np.float64]),
    hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5),
    elements={"allow_nan": True, "allow_infinity": True},
)
integers = hnp.arrays(st.sampled_from([np.int8, np.int64, np.uint8, np.bool_]), hnp.array_shapes(min_dims=0))


@given(floats)
def test_has_non_finite_agrees_with_numpy_for_floats(array: Array) -> None:
    assert has_non_finite(array) is (not bool(np.isfinite(array).all()))


@given(integers)
def test_integer_and_boolean_arrays_are_always_finite(array: Array) -> None:
    assert has_non_finite(array) is False


def test_one_nan_or_infinity_anywhere_is_found() -> None:
    for bad in (np.nan, np.inf, -np.inf):
        x = np.zeros((4, 8), np.float32)
        x[3, 7] = bad
        assert has_non_finite(x) is True
        assert has_non_finite(x[:, :7]) is False  # a view without it


def test_the_compiled_build_checks_finiteness_in_c() -> None:
    assert (signature._NON_FINITE is not None) == (os.environ.get("MODELSERVE_EXPECT_COMPILED") == "1")
