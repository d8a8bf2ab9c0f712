"""How long the operator waits before it tries a failed reconcile of one ModelDeployment again.

A pass fails when the API server does not take one of its requests: busy (429 from API Priority and Fairness, 503
while it restarts), timing out (504, or 500 "etcdserver: request timed out"), a conflict (409), or a refusal of the
write itself (422 from a policy, 403 from RBAC). A fixed interval suits none of them: a conflict clears at once, an
overloaded API server needs every client to back off, and a refusal lasts until someone changes something. So the
delay grows with each failure in a row, from ``first`` doubling up to ``cap``, and is drawn at random between half
of that and all of it, so that the objects that failed together (every ModelDeployment, when the API server went
away) do not come back together. The API server's ``Retry-After`` is a floor (up to ``cap``). A pass that goes
through ends the run of failures.

Recovery need not wait for the delay: any change to an object or its children reconciles it at once, and so does a
watch that lists again once the API server is back (kopf hands every listed object to the handlers). Without
either, an object is tried again within its delay: at most ``cap`` after the API server is back.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    """Retry delays, in seconds, for a run of failed passes of one object."""

    first: float = 1.0
    """The delay's ceiling after the first failure in a row; it doubles with each failure after it."""
    cap: float = 60.0
    """The longest delay, ``Retry-After`` included."""

    def ceiling(self, failures: int) -> float:
        """The longest delay after ``failures`` (>= 1) failed passes in a row."""
        return min(self.cap, self.first * 2.0 ** min(max(failures, 1) - 1, 64))

    def delay(self, failures: int, draw: float, retry_after: float | None = None) -> float:
        """The delay after ``failures`` (>= 1) failed passes in a row: between half the ceiling and all of it, by
        ``draw`` (uniform in [0, 1]); at least the API server's ``retry_after`` seconds, at most ``cap``."""
        ceiling = self.ceiling(failures)
        chosen = ceiling * (0.5 + 0.5 * min(max(draw, 0.0), 1.0))
        if retry_after is not None and retry_after > chosen:
            chosen = min(retry_after, self.cap)
        return chosen

    def describe(self) -> str:
        """For messages: ``with backoff from 1s up to 60s``."""
        return f"with backoff from {self.first:g}s up to {self.cap:g}s"


@dataclass(frozen=True)
class Endless:
    """The delays of ``backoff`` after the 1st, 2nd, ... failure, without end, drawn anew on every iteration: a
    sequence of retry delays that never runs out, for a client that must never give up (kopf's watches: one that
    gives up stops the operator)."""

    backoff: Backoff
    draw: Callable[[], float]
    """Uniform in [0, 1], called once per delay (``random.random``)."""

    def __iter__(self) -> Iterator[float]:
        for failures in itertools.count(1):
            yield self.backoff.delay(failures, self.draw())
