"""The retry delay of a failed reconcile: doubling from 1 s to 60 s, jittered down to half, never under the API
server's Retry-After (up to the cap)."""

from __future__ import annotations

import itertools
import random
from collections.abc import Sized

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modeldeploy.backoff import Backoff, Endless

BACKOFF = Backoff()


@pytest.mark.parametrize(
    ("failures", "ceiling"),
    [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 16.0), (6, 32.0), (7, 60.0), (8, 60.0), (10_000, 60.0)],
)
def test_the_ceiling_doubles_from_the_first_delay_up_to_the_cap(failures: int, ceiling: float) -> None:
    assert BACKOFF.ceiling(failures) == ceiling


@pytest.mark.parametrize(
    ("failures", "draw", "retry_after", "delay"),
    [
        (1, 0.0, None, 0.5),  # the least a draw gives: half the ceiling
        (1, 1.0, None, 1.0),  # the most: all of it
        (3, 0.5, None, 3.0),
        (1, 0.0, 3.0, 3.0),  # the API server asked for more: that
        (4, 1.0, 3.0, 8.0),  # for less: the backoff stands
        (1, 0.0, 600.0, 60.0),  # never beyond the cap, whatever it asks
        (1, 0.0, 0.0, 0.5),
        (2, -1.0, None, 1.0),  # a draw outside [0, 1] is clamped
        (2, 7.0, None, 2.0),
    ],
)
def test_delays(failures: int, draw: float, retry_after: float | None, delay: float) -> None:
    assert BACKOFF.delay(failures, draw, retry_after) == delay


@given(
    first=st.floats(0.01, 30),
    cap=st.floats(0.01, 3600),
    failures=st.integers(1, 10**6),
    draw=st.floats(0, 1),
    retry_after=st.none() | st.floats(0, 10**7),
)
def test_a_delay_lies_between_half_the_ceiling_and_the_cap_and_honours_retry_after(
    first: float, cap: float, failures: int, draw: float, retry_after: float | None
) -> None:
    backoff = Backoff(first=first, cap=cap)
    ceiling = backoff.ceiling(failures)
    delay = backoff.delay(failures, draw, retry_after)
    assert ceiling / 2 <= delay <= cap
    assert ceiling <= cap and ceiling <= backoff.ceiling(failures + 1)
    if retry_after is None or retry_after <= ceiling / 2:
        assert delay <= ceiling
    else:
        assert delay >= min(retry_after, cap)


def test_objects_that_failed_together_come_back_spread_out() -> None:
    """500 objects at their fifth failure in a row (ceiling 16 s): no second of the 8 s the delays span gets more
    than a fifth of them, where a fixed interval would bring all 500 back in the same instant."""
    draw = random.Random(7).random
    delays = [BACKOFF.delay(5, draw()) for _ in range(500)]
    assert min(delays) >= 8.0 and max(delays) <= 16.0
    per_second = [sum(1 for d in delays if second <= d < second + 1) for second in range(8, 16)]
    assert max(per_second) <= 100, per_second
    assert min(per_second) >= 30, per_second


def test_the_description_names_the_bounds() -> None:
    assert Backoff(first=0.5, cap=120).describe() == "with backoff from 0.5s up to 120s"


def test_endless_delays_follow_the_backoff_failure_after_failure_and_never_run_out() -> None:
    draws = itertools.cycle([0.0, 1.0])
    delays = list(itertools.islice(Endless(Backoff(first=1, cap=10), lambda: next(draws)), 10_000))
    assert delays[:6] == [0.5, 2.0, 2.0, 8.0, 5.0, 10.0]  # half or all of 1, 2, 4, 8, then the cap of 10
    assert len(delays) == 10_000 and set(delays[6:]) == {5.0, 10.0}


def test_endless_delays_start_over_on_every_iteration() -> None:
    """kopf iterates its ``error_backoffs`` anew for every request: each request's retries start from the first."""
    endless = Endless(Backoff(first=1, cap=10), lambda: 1.0)
    first = list(itertools.islice(endless, 5))
    assert list(itertools.islice(endless, 5)) == first == [1.0, 2.0, 4.0, 8.0, 10.0]
    assert not isinstance(endless, Sized)  # kopf counts the tries of a sized sequence and gives up after them


@given(seed=st.integers(0, 2**32 - 1), count=st.integers(1, 200))
def test_endless_delays_lie_within_the_backoff_bounds(seed: int, count: int) -> None:
    backoff = Backoff(first=1, cap=10)
    rng = random.Random(seed)
    for failures, delay in enumerate(itertools.islice(Endless(backoff, rng.random), count), start=1):
        assert backoff.ceiling(failures) / 2 <= delay <= backoff.ceiling(failures) <= backoff.cap
