"""One measurement of a revision's traffic over a window: what the metric sources return."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Sample:
    """Requests served by one revision during a measurement window, summed over its pods.

    ``errors`` is ``None`` when unknown (a Prometheus error-ratio query without data): no data is never taken for
    zero errors. ``error_ratio`` is ``errors / requests`` (``None`` with no requests or unknown errors);
    ``p99_seconds`` is the 99th percentile latency (``None`` when unknown, e.g. no observations). ``pods`` is how
    many pods contributed.
    """

    requests: float = 0.0
    errors: float | None = 0.0
    p99_seconds: float | None = None
    pods: int = 0

    def __post_init__(self) -> None:
        for name, value in (("requests", self.requests), ("errors", self.errors)):
            if value is not None and (not math.isfinite(value) or value < 0):
                raise ValueError(f"Sample.{name} must be a finite non-negative number, got {value!r}")
        if self.errors is not None and self.errors > self.requests:
            raise ValueError(f"Sample.errors ({self.errors}) must not exceed requests ({self.requests})")
        if self.p99_seconds is not None and (not math.isfinite(self.p99_seconds) or self.p99_seconds < 0):
            raise ValueError(f"Sample.p99_seconds must be a finite non-negative number, got {self.p99_seconds!r}")

    @property
    def error_ratio(self) -> float | None:
        if self.errors is None or self.requests <= 0:
            return None
        return self.errors / self.requests

    def to_dict(self) -> dict[str, Any]:
        """JSON form; unknown values (errors, p99) are left out."""
        out: dict[str, Any] = {"requests": self.requests, "pods": self.pods}
        if self.errors is not None:
            out["errors"] = self.errors
        if self.error_ratio is not None:
            out["errorRatio"] = round(self.error_ratio, 6)
        if self.p99_seconds is not None:
            out["p99Seconds"] = round(self.p99_seconds, 6)
        return out

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Sample:
        """Inverse of ``to_dict``; raises ``ValueError`` on malformed data. No ``errors`` key: unknown."""
        errors, p99 = raw.get("errors"), raw.get("p99Seconds")
        return cls(
            requests=float(raw.get("requests", 0)),
            errors=float(errors) if errors is not None else None,
            p99_seconds=float(p99) if p99 is not None else None,
            pods=int(raw.get("pods", 0)),
        )
