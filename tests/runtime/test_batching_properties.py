"""Property test of the batcher under random traffic: every request is settled once, with its own outputs or the
right error, and no batch breaks the rules (size, shape compatibility, deadlines)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelserve.batching import Batcher, BatchingOptions, Result
from modelserve.errors import DeadlineExceeded, InferenceFailed, Overloaded
from modelserve.signature import Array

POISON = -1.0  # a row holding this value makes the model fail


@dataclass(frozen=True)
class Req:
    at_ms: int  # when it is submitted, after the previous one
    rows: int
    width: int  # requests of different widths never share a batch
    deadline_ms: int | None
    poisoned: bool


class Model:
    """Doubles its input after a short pause; records every batch; fails on a poisoned row."""

    def __init__(self) -> None:
        self.batches: list[tuple[int, set[int]]] = []  # (rows, the requests in it: row values are id + 1)
        self.lock = threading.Lock()

    def __call__(self, inputs: Sequence[Array]) -> list[Array]:
        values = {int(v) - 1 for v in np.unique(inputs[0]) if v != POISON}
        with self.lock:
            self.batches.append((inputs[0].shape[0], values))
        time.sleep(0.002)
        if (inputs[0] == POISON).any():
            raise InferenceFailed("poisoned row")
        return [inputs[0] * 2]


requests = st.lists(
    st.builds(
        Req,
        at_ms=st.integers(0, 4),
        rows=st.integers(1, 3),
        width=st.sampled_from([2, 3]),
        deadline_ms=st.none() | st.integers(1, 25),
        poisoned=st.sampled_from([False, False, False, True]),
    ),
    min_size=1,
    max_size=25,
)
options = st.builds(
    BatchingOptions,
    max_batch_size=st.integers(1, 6),
    max_queue_delay_s=st.sampled_from([0.0, 0.001, 0.004]),
    max_queue_size=st.integers(1, 30),
)


async def drive(opts: BatchingOptions, script: list[Req]) -> None:
    model = Model()
    b = Batcher(model, opts, batchable=True)
    futures: dict[int, asyncio.Future[Result]] = {}
    inputs: dict[int, Array] = {}
    deadlines: dict[int, float] = {}
    settled: dict[int, list[float]] = {}
    overloaded: set[int] = set()
    for i, req in enumerate(script):
        await asyncio.sleep(req.at_ms / 1000)
        x = np.full((req.rows, req.width), float(i + 1), np.float32)
        if req.poisoned:
            x[0, 0] = POISON
        inputs[i] = x
        deadline = None if req.deadline_ms is None else time.perf_counter() + req.deadline_ms / 1000
        if deadline is not None:
            deadlines[i] = deadline

        def on_done(future: asyncio.Future[Result], i: int = i) -> None:
            assert future.done()
            settled.setdefault(i, []).append(time.perf_counter())

        try:
            futures[i] = b.submit([x], deadline, on_done)
        except Overloaded:
            overloaded.add(i)
    outcomes = await asyncio.wait_for(asyncio.gather(*futures.values(), return_exceptions=True), 10)
    await b.close()

    assert b.depth == 0
    for rows, members in model.batches:
        if len(members) > 1:  # a request bigger than the limit runs alone; requests share only within it
            assert rows <= opts.max_batch_size
            assert len({script[i].width for i in members}) == 1
            assert rows == sum(script[i].rows for i in members)
    for i, outcome in zip(futures, outcomes, strict=True):
        assert settled.get(i) and len(settled[i]) == 1, f"request {i}: on_done called {settled.get(i)}"
        req = script[i]
        if isinstance(outcome, DeadlineExceeded):
            assert i in deadlines and settled[i][0] >= deadlines[i] - 0.0005
        elif isinstance(outcome, InferenceFailed):
            assert req.poisoned
        else:
            assert isinstance(outcome, Result), outcome
            assert not req.poisoned
            np.testing.assert_array_equal(outcome.outputs[0], inputs[i] * 2)  # its own rows, nobody else's
            assert outcome.batch_rows <= max(opts.max_batch_size, req.rows)
    assert len(futures) + len(overloaded) == len(script)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(options, requests)
def test_random_traffic_keeps_every_promise(opts: BatchingOptions, script: list[Req]) -> None:
    asyncio.run(drive(opts, script))
