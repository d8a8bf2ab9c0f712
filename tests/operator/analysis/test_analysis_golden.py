"""Golden requests: the request sent, and whether an answer is the expected one."""

from __future__ import annotations

import base64
import math
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from modeldeploy.analysis.golden import GoldenResult, argmax_rows, assess, caller_token, compare, request_body
from modeldeploy.rollout.config import GoldenCase, GoldenOutput, GoldenSpec, GoldenTensor

INPUT = GoldenTensor("input", "FP32", (2, 2), (1.0, 2.0, 3.0, 4.0))


def case(*outputs: GoldenOutput) -> GoldenCase:
    return GoldenCase("c1", (INPUT,), outputs or (GoldenOutput("scores", data=(0.5, -2.0)),))


def spec(*cases: GoldenCase, atol: float = 1e-5, rtol: float = 1e-4, max_mismatches: int = 0) -> GoldenSpec:
    return GoldenSpec(cases or (case(),), max_mismatches, atol, rtol)


def answer(*outputs: dict[str, Any]) -> dict[str, Any]:
    return {"model_name": "m", "outputs": list(outputs)}


def out(name: str, data: list[Any], shape: list[int] | None = None) -> dict[str, Any]:
    return {"name": name, "datatype": "FP32", "shape": shape or [len(data)], "data": data}


def test_the_request_is_an_open_inference_protocol_v2_body() -> None:
    assert request_body(case()) == {
        "id": "modeldeploy-golden-c1",
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 2], "data": [1.0, 2.0, 3.0, 4.0]}],
    }


CLASSES = GoldenOutput("probabilities", argmax=(1, 0))
PROBS = out("probabilities", [0.1, 0.9, 0.8, 0.2], [2, 2])


@pytest.mark.parametrize(
    ("expected", "status", "body", "problem"),
    [
        # Right answers: exact, within the tolerances, other outputs not checked, any output order.
        ((), 200, answer(out("scores", [0.5, -2.0])), None),
        ((), 200, answer(out("scores", [0.500001, -2.0002])), None),
        ((), 200, answer(out("other", [7.0]), out("scores", [0.5, -2.0])), None),
        ((CLASSES,), 200, answer(PROBS), None),
        ((CLASSES,), 200, answer(out("probabilities", [[0.1, 0.9], [0.8, 0.2]], [2, 2])), None),  # nested rows
        ((), 200, answer(out("scores", [[0.5], [-2.0]])), None),
        ((), 200, answer(out("scores", [[0.5], ["x"]])), "not a list of numbers"),
        ((GoldenOutput("scores", data=(0.5, -2.0)), CLASSES), 200, answer(PROBS, out("scores", [0.5, -2.0])), None),
        ((GoldenOutput("ints", data=(3, 4)),), 200, answer(out("ints", [3, 4])), None),
        # Wrong answers.
        ((), 200, answer(out("scores", [0.5, -2.001])), "output 'scores': value 1 is -2.001, expected -2"),
        ((), 200, answer(out("scores", [math.nan, -2.0])), "value 0 is nan"),
        ((), 200, answer(out("scores", [0.5])), "1 values, expected 2"),
        ((), 200, answer(out("scores", ["0.5", -2.0])), "not a list of numbers"),
        ((), 200, answer(out("scores", [True, -2.0])), "not a list of numbers"),
        ((), 200, answer(out("logits", [0.5, -2.0])), "output 'scores' missing (the model gave: logits)"),
        ((), 200, {"outputs": "none"}, "no outputs list"),
        ((), 200, [], "no outputs list"),
        ((CLASSES,), 200, answer(out("probabilities", [0.9, 0.1, 0.8, 0.2], [2, 2])), "argmax [0, 0], expected [1, 0]"),
        ((CLASSES,), 200, answer(out("probabilities", [0.1, 0.9, 0.8], [3])), "argmax [1], expected [1, 0]"),
        ((CLASSES,), 200, answer(out("probabilities", [0.1, 0.9, 0.8], [2, 2])), "does not hold 3 values"),
        ((CLASSES,), 200, answer(out("probabilities", [math.nan, math.nan, 0.8, 0.2], [2, 2])), "argmax [-1, 0]"),
        # A model that refuses a known-good input is wrong too.
        ((), 400, {"error": "input 'input': expected shape [-1, 3]"}, "HTTP 400: input 'input': expected shape"),
        ((), 500, None, "HTTP 500"),
    ],
)
def test_answers_are_compared(
    expected: tuple[GoldenOutput, ...], status: int, body: object, problem: str | None
) -> None:
    found = compare(case(*expected), spec(), status, body)
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found, found


def test_tolerances_are_absolute_plus_relative() -> None:
    wide = spec(atol=0.01, rtol=0.1)
    assert compare(case(), wide, 200, answer(out("scores", [0.509, -2.2]))) is None  # 0.01 + 0.2 = 0.21 at -2
    assert compare(case(), wide, 200, answer(out("scores", [0.509, -2.22]))) is not None
    assert compare(case(), spec(atol=0, rtol=0), 200, answer(out("scores", [0.5, -2.0]))) is None


@settings(max_examples=200, deadline=None)
@given(
    expected=st.lists(st.floats(-1e6, 1e6, allow_nan=False, width=32), min_size=1, max_size=8),
    atol=st.floats(0, 1),
    rtol=st.floats(0, 0.5),
    fraction=st.floats(0, 0.99),
    data=st.data(),
)
def test_a_value_passes_exactly_when_it_is_within_the_tolerance(
    expected: list[float], atol: float, rtol: float, fraction: float, data: st.DataObject
) -> None:
    golden = spec(case(GoldenOutput("y", data=tuple(expected))), atol=atol, rtol=rtol)
    index = data.draw(st.integers(0, len(expected) - 1))
    sign = data.draw(st.sampled_from([-1.0, 1.0]))
    allowed = atol + rtol * abs(expected[index])
    inside = list(expected)
    inside[index] += sign * allowed * fraction
    # Doubles near the value may be further apart than a tolerance of a few ulps: the sum then rounds outside it.
    assume(abs(inside[index] - expected[index]) <= allowed)
    assert compare(golden.cases[0], golden, 200, answer(out("y", inside))) is None
    outside = list(expected)
    outside[index] += sign * (allowed * 1.01 + 1e-3)
    problem = compare(golden.cases[0], golden, 200, answer(out("y", outside)))
    assert problem is not None and f"value {index} is" in problem


@settings(max_examples=200, deadline=None)
@given(
    rows=st.integers(1, 6),
    width=st.integers(1, 6),
    seed=st.integers(0, 2**32 - 1),
)
def test_argmax_rows_is_numpys_argmax_over_the_last_axis(rows: int, width: int, seed: int) -> None:
    values = np.random.default_rng(seed).permutation(rows * width).astype(float)  # distinct: no ties
    expected = np.argmax(values.reshape(rows, width), axis=-1).tolist()
    assert argmax_rows(values.tolist(), [rows, width]) == expected
    assert argmax_rows(values.tolist(), [1, rows, width]) == expected


@pytest.mark.parametrize("shape", [None, [], [0], [2, 0], ["2"], [5], 7])
def test_argmax_rows_refuses_a_shape_that_does_not_fit(shape: object) -> None:
    assert argmax_rows([1.0, 2.0, 3.0, 4.0], shape) is None


def test_results_round_trip_and_malformed_ones_are_refused() -> None:
    result = GoldenResult(checks=6, mismatches=2, pods=3, detail=("case 'a' on pod p: HTTP 500",))
    assert GoldenResult.from_dict(result.to_dict()) == result
    assert GoldenResult(4, 0, 2).to_dict() == {"checks": 4, "mismatches": 0, "pods": 2}
    for bad in ({"checks": 1, "mismatches": 2}, {"checks": -1, "mismatches": 0}, {"mismatches": 0}, {"checks": "x"}):
        with pytest.raises((KeyError, TypeError, ValueError)):
            GoldenResult.from_dict(bad)


def test_assess_counts_mismatches_against_the_limit() -> None:
    ok, note = assess(spec(max_mismatches=1), GoldenResult(4, 1, 2, ("case 'c1' on pod p: HTTP 500",)))
    assert ok and note.startswith("golden requests: 1 of 4 answers wrong on 2 pods <= maxMismatches 1")
    assert "HTTP 500" in note
    ok, note = assess(spec(), GoldenResult(4, 1, 2))
    assert not ok and "> maxMismatches 0" in note


def test_the_note_names_the_first_wrong_answer_only() -> None:
    """Status keeps every measurement of its last 10 runs: the message stays short, golden.detail has three."""
    detail = tuple(f"case 'c{i}' on pod p: " + "x" * 250 for i in range(3))
    ok, note = assess(spec(), GoldenResult(8, 5, 2, detail))
    assert not ok and f"(first: {detail[0]}; 4 more)" in note and "c1" not in note
    assert len(note) < 400


# -- the caller token of a model server with runtime.auth


def secret_data(values: dict[str, bytes]) -> dict[str, str]:
    """A Secret's ``data`` as the API server returns it (base64 values)."""
    return {key: base64.b64encode(value).decode() for key, value in values.items()}


@pytest.mark.parametrize(
    ("values", "token"),
    [
        ({"token": b"abc"}, "abc"),
        ({"b-new": b"new", "a-old": b"old"}, "old"),  # keys in sorted order, as the mounted files are read
        ({"a": b"  \n", "b": b"tok\n"}, "tok"),  # whitespace stripped, empty keys skipped
        ({".hidden": b"no", "z": b"yes"}, "yes"),  # hidden keys are not mounted as token files
    ],
)
def test_the_caller_token_is_the_first_the_server_accepts(values: dict[str, bytes], token: str) -> None:
    assert caller_token(secret_data(values)) == token


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({}, "it holds no keys"),
        (secret_data({"a": b"", "b": b"  "}), "it holds no token"),
        (secret_data({"a": b"two words"}), "key 'a' holds whitespace or non-printable"),
        (secret_data({"a": "pässword".encode()}), "key 'a' holds whitespace or non-printable"),
        ({"a": "not base64!"}, "key 'a' is not valid base64"),
    ],
)
def test_a_secret_without_a_usable_token_says_why_without_its_values(data: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        caller_token(data)
    assert "two words" not in str(info.value) and "pässword" not in str(info.value)


TOKEN_CHARS = st.characters(min_codepoint=0x21, max_codepoint=0x7E)


SECRET_VALUES = st.builds(
    lambda pad, token, tail: pad + token + tail,
    st.sampled_from(["", " ", "\n"]),
    st.text(TOKEN_CHARS, min_size=0, max_size=12),
    st.sampled_from(["", "\n", " \n"]),
)
SECRET_KEYS = st.from_regex(r"[-._a-zA-Z0-9]{1,20}", fullmatch=True).filter(lambda k: k not in (".", ".."))


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(SECRET_KEYS, SECRET_VALUES, min_size=1, max_size=5))
def test_the_caller_token_is_one_modelserve_accepts_from_the_mounted_secret(values: dict[str, str]) -> None:
    """The token golden requests carry is the first one ``modelserve`` reads from the same Secret mounted as files
    (``read_tokens`` on the directory): so the server accepts it."""
    from modelserve.auth import TokenSourceError, read_tokens

    with tempfile.TemporaryDirectory() as mount:
        for key, value in values.items():
            (Path(mount) / key).write_text(value, encoding="ascii")
        try:
            accepted = read_tokens(Path(mount))
        except TokenSourceError:
            accepted = ()
        data = secret_data({key: value.encode() for key, value in values.items()})
        if accepted:
            assert caller_token(data) == accepted[0].decode()
        else:
            with pytest.raises(ValueError):
                caller_token(data)
