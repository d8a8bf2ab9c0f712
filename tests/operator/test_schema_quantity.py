"""The Kubernetes quantity library in modeldeploy.schema: quantities parsed and compared as the API server does."""

from __future__ import annotations

from decimal import Decimal

import pytest

from modeldeploy import schema
from modeldeploy.schema import QuantityError, parse_quantity

FORMAT_WRONG = "quantities must match the regular expression"
SUFFIX = "unable to parse quantity's suffix"


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("0", "0"),
        ("1", "1"),
        ("500m", "0.5"),
        ("1Gi", "1073741824"),
        ("1G", "1000000000"),
        ("1e3", "1000"),
        ("1E3", "1000"),
        ("1e+3", "1000"),
        ("1E-3", "0.001"),
        ("1k", "1000"),
        ("1Ki", "1024"),
        ("1.5Gi", "1610612736"),
        ("0.5Ki", "512"),
        ("100m", "0.1"),
        (".5", "0.5"),
        ("5.", "5"),
        ("+1", "1"),
        ("-1", "-1"),
        ("-0", "0"),
        ("007", "7"),
        ("1n", "0.000000001"),
        ("1u", "0.000001"),
        ("1E", "1000000000000000000"),  # E alone is exa, not an exponent
        # A non-zero value is rounded away from zero to whole nano units.
        ("0.0000000001", "0.000000001"),
        ("-0.0000000001", "-0.000000001"),
        ("1.0000000001", "1.000000001"),
        ("0.000000000001Ki", "0.000000002"),
        # Binary quantities are capped at the largest int64; decimal ones are not.
        ("8Ei", str(2**63 - 1)),
        ("9223372036854775807", str(2**63 - 1)),
        ("9223372036854775808", str(2**63)),
        # Exact, however many digits.
        ("12345678901234567890123.000000001", "12345678901234567890123.000000001"),
    ],
)
def test_parse_quantity(text: str, value: str) -> None:
    assert parse_quantity(text) == Decimal(value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", FORMAT_WRONG),
        ("abc", FORMAT_WRONG),
        ("1.5.5", FORMAT_WRONG),
        ("1e1.5", FORMAT_WRONG),  # the CRD's pattern admits a fractional exponent, Go's parser does not
        (" 1", FORMAT_WRONG),
        ("1 ", FORMAT_WRONG),
        ("1K", SUFFIX),
        ("1ki", SUFFIX),
        ("1e", SUFFIX),
        ("1Gi3", SUFFIX),
        ("1e99999999999999999999", SUFFIX),  # beyond int64
    ],
)
def test_parse_quantity_rejects_as_go_does(text: str, message: str) -> None:
    with pytest.raises(QuantityError, match=message):
        parse_quantity(text)


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ("quantity('500m').compareTo(quantity('1')) == -1", True),
        ("quantity('1').compareTo(quantity('500m')) == 1", True),
        ("quantity('1').compareTo(quantity('1000m')) == 0", True),
        ("quantity('1Gi').compareTo(quantity('1G')) == 1", True),
        ("quantity('1Gi').isGreaterThan(quantity('1G'))", True),
        ("quantity('1G').isLessThan(quantity('1Gi'))", True),
        ("quantity('1e3').compareTo(quantity('1k')) == 0", True),
        ("quantity('1e3').isLessThan(quantity('1k'))", False),
        ("quantity('1k') == quantity('1e3')", True),
        ("quantity('1Ki') == quantity('1k')", False),
        ("quantity('-1').sign() == -1 && quantity('0').sign() == 0 && quantity('2').sign() == 1", True),
        ("isQuantity('2Gi') && !isQuantity('1e1.5') && !isQuantity('')", True),
    ],
)
def test_cel_quantity_functions(rule: str, expected: bool) -> None:
    assert schema.evaluate_rule(rule, {}) is expected


def test_a_quantity_go_refuses_is_an_error_with_gos_message() -> None:
    with pytest.raises(ValueError) as info:
        schema.evaluate_rule("quantity(self).sign() >= 0", "1e1.5")
    assert str(info.value) == f"{FORMAT_WRONG} '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"


def test_a_quantity_error_does_not_decide_what_another_operand_decides() -> None:
    """As in cel-go, an error value is absorbed by || and && when the other operand decides the result."""
    assert schema.evaluate_rule("true || quantity(self).sign() == 1", "1e1.5") is True
    assert schema.evaluate_rule("quantity(self).sign() == 1 && false", "1e1.5") is False


def test_quantity_takes_strings_only() -> None:
    """An int-or-string value written as an integer must be turned into a string first, as with cel-go."""
    with pytest.raises(ValueError, match="no such overload"):
        schema.evaluate_rule("quantity(self).sign() == 1", 2)
    assert schema.evaluate_rule("quantity(string(self)).sign() == 1", 2) is True
