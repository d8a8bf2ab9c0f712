"""The body-size checks both carriers (the fast path and the ASGI routes) share."""

from __future__ import annotations

import pytest

from modelserve.errors import PayloadTooLarge, RequestError
from modelserve.inference import body_over_limit, check_declared_length


@pytest.mark.parametrize("declared", [None, "0", "1024", "01024"])
def test_a_declared_length_within_the_limit_passes(declared: str | None) -> None:
    check_declared_length(declared, 1024)


@pytest.mark.parametrize("declared", ["", "x", "-1", "+5", " 5", "1e3", "5_0"])
def test_a_length_that_is_not_a_number_is_a_400(declared: str) -> None:
    with pytest.raises(RequestError, match="invalid Content-Length header") as info:
        check_declared_length(declared, 1024)
    assert info.value.status == 400 and not isinstance(info.value, PayloadTooLarge)


def test_a_declared_length_over_the_limit_is_a_413_naming_both_sizes() -> None:
    with pytest.raises(PayloadTooLarge, match="request body of 1025 bytes exceeds the 1024-byte limit") as info:
        check_declared_length("1025", 1024)
    assert info.value.status == 413


def test_a_body_that_grows_past_the_limit_is_a_413() -> None:
    exc = body_over_limit(64)
    assert isinstance(exc, PayloadTooLarge) and exc.status == 413
    assert str(exc) == "request body exceeds the 64-byte limit"
