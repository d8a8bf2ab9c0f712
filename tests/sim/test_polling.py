"""The polling loop: returns the first truthy result, raises the caller's error after the timeout."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from modeldeploy.sim.polling import eventually, wait_for


class NotReachedError(Exception):
    pass


def counter(ready_at: int) -> tuple[list[int], Callable[[], int]]:
    calls: list[int] = []

    def check() -> int:
        calls.append(1)
        return len(calls) if len(calls) >= ready_at else 0

    return calls, check


def test_wait_for_returns_the_first_truthy_result() -> None:
    calls, check = counter(3)
    assert wait_for(check, 5.0, 0.001, NotReachedError) == 3
    assert len(calls) == 3


def test_wait_for_raises_the_callers_failure_after_the_timeout() -> None:
    started = time.monotonic()
    with pytest.raises(NotReachedError):
        wait_for(lambda: None, 0.05, 0.01, NotReachedError)
    assert 0.05 <= time.monotonic() - started < 1.0


def test_a_condition_met_on_the_last_check_counts() -> None:
    deadline = time.monotonic() + 0.05
    assert wait_for(lambda: time.monotonic() > deadline and "late", 0.05, 0.02, NotReachedError) == "late"


async def test_eventually_lets_the_loop_run() -> None:
    flag: list[str] = []
    asyncio.get_running_loop().call_later(0.02, flag.append, "set")
    assert await eventually(lambda: flag, 5.0, 0.005, NotReachedError) == ["set"]
    with pytest.raises(NotReachedError):
        await eventually(lambda: None, 0.03, 0.01, NotReachedError)
