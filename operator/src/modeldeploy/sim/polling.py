"""Waiting for a condition: the one polling loop of the test tiers (emulated cluster, local and kind e2e)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(check: Callable[[], T], timeout: float, interval: float, failure: Callable[[], Exception]) -> T:
    """Call `check` every `interval` seconds until it returns something truthy, and return that; raise
    `failure()` once `timeout` seconds have passed without it (`check` always runs at least once more after the
    last sleep, so a condition met just in time counts)."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise failure()
        time.sleep(interval)


async def eventually(check: Callable[[], T], timeout: float, interval: float, failure: Callable[[], Exception]) -> T:  # noqa: ASYNC109
    """`wait_for` for a coroutine: the sleeps let the event loop run."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise failure()
        await asyncio.sleep(interval)
