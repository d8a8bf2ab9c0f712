"""Golden requests: known inputs sent to a revision's pods, and whether their answers are the expected ones.

Pure functions; ``modeldeploy.analysis.sources.check_golden`` sends the requests. A wrong answer is a *mismatch*:
values outside the tolerances, another class (``argmax``), a missing output or an HTTP error answer (a model that
refuses a known-good input is as wrong as one that answers it wrongly). A pod that cannot be reached at all is not
a mismatch but a measurement that could not be taken.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from modeldeploy.analysis import secretdata
from modeldeploy.rollout.config import GoldenCase, GoldenOutput, GoldenSpec

PROBE_HEADERS = {"Modeldeploy-Probe": "golden"}
"""Sent with every golden request: ``modelserve`` counts such requests in ``modelserve_probe_requests_total``, not
in ``modelserve_requests_total`` or its latency, so they are never the revision's traffic to the analysis (Scrape
or Prometheus alike)."""
MAX_DETAIL = 3
"""Mismatches described in a result; the count covers them all."""
MAX_DETAIL_TEXT = 300
"""Characters kept of each described mismatch (a status holds the latest measurements of its last 10 runs)."""


@dataclass(frozen=True)
class GoldenResult:
    """Golden requests of one measurement: ``checks`` answers compared (cases times pods), ``mismatches`` of them
    wrong, ``detail`` describing the first few."""

    checks: int
    mismatches: int
    pods: int
    detail: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"checks": self.checks, "mismatches": self.mismatches, "pods": self.pods}
        if self.detail:
            out["detail"] = list(self.detail)
        return out

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> GoldenResult:
        """Inverse of ``to_dict``; raises ``ValueError`` (or ``TypeError``) on malformed data."""
        checks, mismatches, pods = int(raw["checks"]), int(raw["mismatches"]), int(raw.get("pods", 0))
        if checks < 0 or not 0 <= mismatches <= checks or pods < 0:
            raise ValueError(f"inconsistent golden result {dict(raw)!r}")
        return cls(checks, mismatches, pods, tuple(str(d) for d in raw.get("detail") or ()))


def caller_token(data: Mapping[str, object]) -> str:
    """The bearer token golden requests carry to a model server with ``runtime.auth``: from the Secret's ``data``
    (base64 values), the first token the server itself accepts (``modelserve.auth.read_tokens`` on the mounted
    Secret: keys in sorted order, hidden ``.`` keys skipped, surrounding whitespace stripped, empty ones skipped).
    ``ValueError`` when it holds none, or when that token could not be sent; messages name keys, never values."""
    for key in sorted(str(k) for k in data):
        if key.startswith("."):
            continue
        token = secretdata.decoded(data, key)
        if not token:
            continue
        if not secretdata.is_token(token):
            raise ValueError(f"the token in key {key!r} holds whitespace or non-printable characters")
        return token.decode("ascii")
    raise ValueError("it holds no token (every key empty)" if data else "it holds no keys")


def request_body(case: GoldenCase) -> dict[str, Any]:
    """The Open Inference Protocol v2 JSON request of ``case``."""
    return {
        "id": f"modeldeploy-golden-{case.name}",
        "inputs": [
            {"name": t.name, "datatype": t.datatype, "shape": list(t.shape), "data": list(t.data)} for t in case.inputs
        ],
    }


def _short(values: Sequence[object], limit: int = 6) -> str:
    shown = ", ".join(f"{v:.6g}" if isinstance(v, float) else str(v) for v in values[:limit])
    return f"[{shown}{', ...' if len(values) > limit else ''}]"


def compare(case: GoldenCase, spec: GoldenSpec, status: int, answer: object) -> str | None:
    """Why the answer (HTTP ``status``, decoded JSON body) to ``case`` is wrong; None when it is the expected one."""
    if status != 200:
        error = answer.get("error") if isinstance(answer, Mapping) else None
        return f"HTTP {status}" + (f": {str(error)[:200]}" if error else "")
    outputs = answer.get("outputs") if isinstance(answer, Mapping) else None
    if not isinstance(outputs, list):
        return "the answer has no outputs list"
    by_name = {o.get("name"): o for o in outputs if isinstance(o, Mapping)}
    for expected in case.outputs:
        got = by_name.get(expected.name)
        if got is None:
            names = ", ".join(sorted(str(n) for n in by_name)) or "none"
            return f"output {expected.name!r} missing (the model gave: {names})"
        problem = _compare_output(expected, spec, got)
        if problem:
            return f"output {expected.name!r}: {problem}"
    return None


def _compare_output(expected: GoldenOutput, spec: GoldenSpec, got: Mapping[str, Any]) -> str | None:
    values, shape = flat_numbers(got.get("data")), got.get("shape")
    if values is None:
        return "data is not a list of numbers"
    if expected.data is not None:
        if len(values) != len(expected.data):
            return f"{len(values)} values, expected {len(expected.data)}"
        for i, (value, want) in enumerate(zip(values, expected.data, strict=True)):
            if not math.isfinite(value) or abs(value - want) > spec.absolute_tolerance + spec.relative_tolerance * abs(
                want
            ):
                return (
                    f"value {i} is {value:.6g}, expected {want:.6g} (absoluteTolerance {spec.absolute_tolerance:g}, "
                    f"relativeTolerance {spec.relative_tolerance:g}); got {_short(values)}"
                )
        return None
    assert expected.argmax is not None
    classes = argmax_rows(values, shape)
    if classes is None:
        return f"shape {shape!r} does not hold {len(values)} values in rows"
    if tuple(classes) != expected.argmax:
        return f"argmax {_short(classes)}, expected {_short(list(expected.argmax))}"
    return None


def flat_numbers(data: object) -> list[float] | None:
    """The values of an output's ``data``: a flat list of numbers, or nested lists of them (row-major, as some
    servers write tensors); None for anything else."""
    if not isinstance(data, list):
        return None
    out: list[float] = []
    stack: list[object] = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(reversed(item))
        elif isinstance(item, int | float) and not isinstance(item, bool):
            out.append(float(item))
        else:
            return None
    return out


def argmax_rows(values: Sequence[float], shape: object) -> list[int] | None:
    """The index of the largest value of each row (the last axis of ``shape``); None when the shape does not fit.
    A NaN is never the largest value: a row of NaNs has no class (-1)."""
    if not isinstance(shape, list) or not shape or not all(isinstance(d, int) and d > 0 for d in shape):
        return None
    width = shape[-1]
    if math.prod(shape) != len(values):
        return None
    out = []
    for start in range(0, len(values), width):
        row = values[start : start + width]
        best, best_value = -1, -math.inf
        for i, value in enumerate(row):
            if value > best_value:  # NaN compares False
                best, best_value = i, value
        out.append(best)
    return out


def assess(spec: GoldenSpec, result: GoldenResult) -> tuple[bool, str]:
    """(passed, a note for the measurement's message)."""
    ok = result.mismatches <= spec.max_mismatches
    pods = f"{result.pods} pod" + ("" if result.pods == 1 else "s")
    note = (
        f"golden requests: {result.mismatches} of {result.checks} answers wrong on {pods} "
        f"{'<=' if ok else '>'} maxMismatches {spec.max_mismatches}"
    )
    if result.detail:
        # The first wrong answer only: status keeps up to 11 measurements of each of 10 runs, so each stays small;
        # the measurement's golden.detail lists up to three.
        more = f"; {result.mismatches - 1} more" if result.mismatches > 1 else ""
        note += f" (first: {result.detail[0]}{more})"
    return ok, note
