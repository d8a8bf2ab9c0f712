"""Waiting for a condition: the one polling loop of the test tiers (emulated cluster, local and kind e2e)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class _Poll(Generic[T]):
    """One check per `attempt`: (True, result) once `check` returns something truthy; `failure()` is raised by
    the first attempt after the deadline that still finds nothing (so a condition met just in time counts)."""

    def __init__(self, check: Callable[[], T], timeout: float, failure: Callable[[], Exception]) -> None:
        self.check, self.failure = check, failure
        self.deadline = time.monotonic() + timeout

    def attempt(self) -> tuple[bool, T]:
        result = self.check()
        if result:
            return True, result
        if time.monotonic() > self.deadline:
            raise self.failure()
        return False, result


def wait_for(check: Callable[[], T], timeout: float, interval: float, failure: Callable[[], Exception]) -> T:
    """Call `check` every `interval` seconds until it returns something truthy, and return that; raise
    `failure()` once `timeout` seconds have passed without it."""
    poll = _Poll(check, timeout, failure)
    while True:
        done, result = poll.attempt()
        if done:
            return result
        time.sleep(interval)


async def eventually(check: Callable[[], T], timeout: float, interval: float, failure: Callable[[], Exception]) -> T:  # noqa: ASYNC109
    """`wait_for` for a coroutine: the sleeps let the event loop run."""
    poll = _Poll(check, timeout, failure)
    while True:
        done, result = poll.attempt()
        if done:
            return result
        await asyncio.sleep(interval)
