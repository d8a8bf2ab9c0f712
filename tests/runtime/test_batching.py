from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Sequence

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelserve.batching import Batcher, BatchingOptions, Result, batch_key, split_rows
from modelserve.errors import DeadlineExceeded, InferenceFailed, Overloaded
from modelserve.signature import Array


class Recorder:
    """A fake model: doubles its input, records batch shapes and the thread it ran on."""

    def __init__(self, delay: float = 0.0, fail_on: float | None = None) -> None:
        self.shapes: list[tuple[int, ...]] = []
        self.threads: set[str] = set()
        self.delay = delay
        self.fail_on = fail_on

    def __call__(self, inputs: Sequence[Array]) -> list[Array]:
        self.shapes.append(inputs[0].shape)
        self.threads.add(threading.current_thread().name)
        if self.delay:
            time.sleep(self.delay)
        if self.fail_on is not None and (inputs[0] == self.fail_on).any():
            raise InferenceFailed("bad row")
        return [inputs[0] * 2]


def rows(n: int, value: float = 1.0, width: int = 4) -> list[Array]:
    return [np.full((n, width), value, np.float32)]


async def test_concurrent_compatible_requests_share_a_batch() -> None:
    model = Recorder(delay=0.02)
    b = Batcher(model, BatchingOptions(max_batch_size=8, max_queue_delay_s=0.05), batchable=True)
    tokens = [b.arriving() for _ in range(5)]  # keep "arriving" up so the dispatcher waits for company

    async def one(i: int) -> Array:
        b.arrived(tokens[i])
        return (await b.submit(rows(1, float(i)))).outputs[0]

    results = await asyncio.gather(*(one(i) for i in range(5)))
    await b.close()
    assert [r.tolist() for r in results] == [[[2.0 * i] * 4] for i in range(5)]
    assert model.shapes == [(5, 4)]
    assert model.threads and threading.current_thread().name not in model.threads


async def test_shape_incompatible_requests_never_share_a_batch() -> None:
    model = Recorder()
    b = Batcher(model, BatchingOptions(max_batch_size=8, max_queue_delay_s=0.01), batchable=True)
    tokens = b.arriving(), b.arriving()
    a = asyncio.ensure_future(b.submit(rows(1, width=4)))
    c = asyncio.ensure_future(b.submit(rows(2, width=3)))
    b.arrived(tokens[0]), b.arrived(tokens[1])
    ra, rc = await asyncio.gather(a, c)
    await b.close()
    assert ra.outputs[0].shape == (1, 4) and rc.outputs[0].shape == (2, 3)
    assert sorted(model.shapes) == [(1, 4), (2, 3)]


async def test_batches_never_exceed_max_batch_size() -> None:
    model = Recorder(delay=0.01)
    b = Batcher(model, BatchingOptions(max_batch_size=4, max_queue_delay_s=0.05), batchable=True)
    results = await asyncio.gather(*(b.submit(rows(1)) for _ in range(10)))
    await b.close()
    assert all(r.batch_rows <= 4 for r in results)
    assert sum(s[0] for s in model.shapes) == 10 and max(s[0] for s in model.shapes) <= 4


async def test_lone_request_is_dispatched_without_waiting_for_the_delay() -> None:
    b = Batcher(Recorder(), BatchingOptions(max_batch_size=32, max_queue_delay_s=1.0), batchable=True)
    started = time.perf_counter()
    await b.submit(rows(1))
    await b.close()
    assert time.perf_counter() - started < 0.5


async def test_full_queue_is_overloaded() -> None:
    b = Batcher(Recorder(delay=0.2), BatchingOptions(max_batch_size=1, max_queue_size=2), batchable=True)
    first = asyncio.ensure_future(b.submit(rows(1)))
    await asyncio.sleep(0.05)  # first is running; the queue is empty again
    queued = [asyncio.ensure_future(b.submit(rows(1))) for _ in range(2)]
    await asyncio.sleep(0)
    with pytest.raises(Overloaded, match="queue full"):
        await b.submit(rows(1))
    await asyncio.gather(first, *queued)
    await b.close()


async def test_deadline_exceeded_while_waiting() -> None:
    model = Recorder(delay=0.2)
    b = Batcher(model, BatchingOptions(max_batch_size=1), batchable=True)
    first = asyncio.ensure_future(b.submit(rows(1)))
    await asyncio.sleep(0.01)
    with pytest.raises(DeadlineExceeded):
        await b.submit(rows(1, 3.0), deadline=time.perf_counter() + 0.05)
    await first
    await b.close()
    assert len(model.shapes) == 1  # the expired request never ran


async def test_a_failing_request_does_not_fail_its_batch_neighbours() -> None:
    model = Recorder(delay=0.01, fail_on=9.0)
    b = Batcher(model, BatchingOptions(max_batch_size=8, max_queue_delay_s=0.05), batchable=True)
    tokens = [b.arriving() for _ in range(3)]

    async def one(value: float) -> Array:
        b.arrived(tokens.pop())
        return (await b.submit(rows(1, value))).outputs[0]

    good1, bad, good2 = await asyncio.gather(one(1.0), one(9.0), one(2.0), return_exceptions=True)
    await b.close()
    assert isinstance(bad, InferenceFailed)
    assert isinstance(good1, np.ndarray) and good1.tolist() == [[2.0] * 4]
    assert isinstance(good2, np.ndarray) and good2.tolist() == [[4.0] * 4]


async def test_close_finishes_queued_work_then_refuses() -> None:
    b = Batcher(Recorder(delay=0.01), BatchingOptions(max_batch_size=1), batchable=True)
    pending = [asyncio.ensure_future(b.submit(rows(1))) for _ in range(3)]
    await asyncio.sleep(0)
    await b.close()
    assert all(p.done() and not p.exception() for p in pending)
    with pytest.raises(Overloaded, match="shutting down"):
        await b.submit(rows(1))


def test_batch_key_and_split() -> None:
    a = np.zeros((2, 3), np.float32)
    assert batch_key([a], True)[0] == batch_key([np.ones((5, 3), np.float32)], True)[0]
    assert batch_key([a], True) == (batch_key([a], True)[0], 2)
    assert batch_key([a], True)[0] != batch_key([a.astype(np.float64)], True)[0]
    assert batch_key([a], False)[0] != batch_key([a], False)[0]
    parts = split_rows([np.arange(10).reshape(5, 2)], [2, 3])
    assert [p[0].shape for p in parts] == [(2, 2), (3, 2)]
    with pytest.raises(InferenceFailed, match="batch dimension"):
        split_rows([np.zeros(3)], [2, 3])


async def test_deadline_fails_a_running_request_on_time() -> None:
    """The request's future fails when its deadline passes, not when its slow batch ends; the batch's other
    request, with no deadline, still gets its result."""
    model = Recorder(delay=0.3)
    b = Batcher(model, BatchingOptions(max_batch_size=4, max_queue_delay_s=0.05), batchable=True)
    tokens = b.arriving(), b.arriving()
    started = time.perf_counter()
    late = b.submit(rows(1), deadline=started + 0.05)
    b.arrived(tokens[0])
    patient = b.submit(rows(1))
    b.arrived(tokens[1])
    with pytest.raises(DeadlineExceeded):
        await late
    assert time.perf_counter() - started < 0.25
    assert (await patient).outputs[0].tolist() == [[2.0] * 4]
    assert model.shapes == [(2, 4)]  # both ran in one batch
    await b.close()


async def test_a_shorter_deadline_behind_a_longer_one_still_fires_on_time() -> None:
    model = Recorder(delay=0.3)
    b = Batcher(model, BatchingOptions(max_batch_size=1), batchable=True)
    now = time.perf_counter()
    first = b.submit(rows(1), deadline=now + 10)
    second = b.submit(rows(1), deadline=now + 5)
    third = b.submit(rows(1), deadline=now + 0.05)
    with pytest.raises(DeadlineExceeded):
        await third
    assert time.perf_counter() - now < 0.25
    assert not first.done() and not second.done()
    await first
    await second
    await b.close()
    assert len(model.shapes) == 2  # the expired request never ran


async def test_every_deadline_fires_while_requests_keep_completing() -> None:
    """The shared timer re-arms for the earliest deadline left after each sweep: every request that misses its
    deadline fails at that deadline, not up to a 100 ms batch later (while queued, handed over or running)."""
    b = Batcher(Recorder(delay=0.1), BatchingOptions(max_batch_size=1), batchable=True)
    now = time.perf_counter()
    deadlines = [now + 0.12 + 0.025 * i for i in range(8)]
    futures = [b.submit(rows(1), deadline=d) for d in deadlines]
    done_at: dict[int, float] = {}
    for i, f in enumerate(futures):
        f.add_done_callback(lambda _f, i=i: done_at.setdefault(i, time.perf_counter()))
    outcomes = await asyncio.gather(*futures, return_exceptions=True)
    await b.close()
    expired = [isinstance(o, DeadlineExceeded) for o in outcomes]
    assert expired == [False] + [True] * 7  # the first is done after 100 ms, before its 120 ms deadline
    for i in range(1, 8):
        assert deadlines[i] <= done_at[i] < deadlines[i] + 0.05


async def test_a_full_batch_is_handed_over_while_one_runs() -> None:
    """Two batches in flight: a full one goes to the inference thread at once (it starts the moment the running
    one ends); a partial one waits in the queue until the running batch ends, and may still fill up."""
    model = Recorder(delay=0.1)
    b = Batcher(model, BatchingOptions(max_batch_size=2, max_queue_delay_s=0.001), batchable=True)
    first = [b.submit(rows(1)) for _ in range(2)]
    await asyncio.sleep(0.02)  # the first batch is running
    second = [b.submit(rows(1)) for _ in range(2)]
    await asyncio.sleep(0.01)
    assert b.depth == 2 and len(b._queue) == 0  # handed over, waiting behind the running batch
    third = b.submit(rows(1))
    await asyncio.sleep(0.01)
    assert b.depth == 3 and len(b._queue) == 1  # partial: kept in the queue
    await asyncio.gather(*first)
    fourth = b.submit(rows(1))  # joins the partial batch, now full
    await asyncio.gather(*second, third, fourth)
    await b.close()
    assert model.shapes == [(2, 4), (2, 4), (2, 4)]


async def test_on_done_is_called_once_when_the_future_settles() -> None:
    model = Recorder(delay=0.05, fail_on=9.0)
    b = Batcher(model, BatchingOptions(max_batch_size=1), batchable=True)
    seen: list[tuple[str, bool]] = []

    def on_done(label: str) -> Callable[[asyncio.Future[Result]], None]:
        return lambda f: seen.append((label, f.done()))

    ok = b.submit(rows(1), on_done=on_done("ok"))
    bad = b.submit(rows(1, 9.0), on_done=on_done("bad"))
    late = b.submit(rows(1), deadline=time.perf_counter() + 0.01, on_done=on_done("late"))
    boom = b.submit(rows(1), on_done=lambda f: 1 / 0)  # a failing callback is logged, the batcher goes on
    after = b.submit(rows(1), on_done=on_done("after"))
    await asyncio.gather(ok, bad, late, boom, after, return_exceptions=True)
    await b.close()
    assert sorted(seen) == [("after", True), ("bad", True), ("late", True), ("ok", True)]
    assert seen[0] == ("late", True)  # at its deadline, before the first batch ended
    assert isinstance(bad.exception(), InferenceFailed) and isinstance(late.exception(), DeadlineExceeded)


class CountingEvent(asyncio.Event):
    """The dispatcher's wake-up event, counting the times a waiter is woken."""

    def __init__(self) -> None:
        super().__init__()
        self.wakes = 0

    def set(self) -> None:
        if not self.is_set() and self._waiters:  # type: ignore[attr-defined]
            self.wakes += 1
        super().set()


async def test_requests_wake_the_dispatcher_only_when_they_can_change_what_it_does() -> None:
    """Under load most requests arrive while the dispatcher waits for the inference thread; waking it for each
    cost the event loop 1-2 µs per request. A request wakes it only when it fills the next batch, and not at all
    while every slot of the inference thread is taken; the batches are the same."""
    release = threading.Event()

    def blocked(inputs: Sequence[Array]) -> list[Array]:
        release.wait(10)
        return [inputs[0] * 2]

    b = Batcher(blocked, BatchingOptions(max_batch_size=4, max_queue_delay_s=0.05), batchable=True)
    wakeup = CountingEvent()
    b._wakeup = wakeup
    futures: list[asyncio.Future[Result]] = []

    async def trickle(values: range) -> None:
        """Requests one at a time, the loop running between them, as they come from separate connections."""
        for i in values:
            futures.append(b.submit(rows(1, float(i))))
            for _ in range(3):
                await asyncio.sleep(0)

    futures += [b.submit(rows(1, float(i))) for i in range(4)]  # one full batch at once: it runs (and blocks)
    await asyncio.sleep(0.02)
    assert b.depth == 0 and len(b._running) == 1
    wakes = wakeup.wakes
    await trickle(range(4, 7))
    # the first into the empty queue wakes it (to wait for that batch); the next two cannot fill it
    assert wakeup.wakes == wakes + 1
    await trickle(range(7, 8))  # the fourth fills it: handed over as the second batch
    await asyncio.sleep(0.02)
    assert wakeup.wakes == wakes + 2 and len(b._running) == 2
    await trickle(range(8, 13))  # both slots taken: no wake at all
    await asyncio.sleep(0.02)
    assert wakeup.wakes == wakes + 2 and b.depth == 9  # five queued, four handed over behind the running batch
    release.set()
    results = await asyncio.gather(*futures)
    await b.close()
    assert [r.outputs[0][0, 0] for r in results] == [2.0 * i for i in range(13)]
    assert [r.batch_rows for r in results] == [4] * 12 + [1]


async def test_a_body_arriving_for_longer_than_the_delay_stops_holding_batches() -> None:
    """A body that drips in (a slow or hostile client) holds batches back only while it is recent: once it has
    been arriving for two delays, a request at low load goes at once instead of waiting the whole delay. A body
    that just started arriving still holds the batch until it arrives or the delay is spent."""
    model = Recorder()
    delay = 0.1
    b = Batcher(model, BatchingOptions(max_batch_size=8, max_queue_delay_s=delay), batchable=True)
    slow = b.arriving()
    await asyncio.sleep(2.5 * delay)
    started = time.perf_counter()
    result = await b.submit(rows(1))
    assert time.perf_counter() - started < delay / 2
    assert result.queue_seconds < delay / 2

    fresh = b.arriving()
    waiting = b.submit(rows(1))
    await asyncio.sleep(delay / 4)
    assert not waiting.done()  # held for the fresh arrival
    b.arrived(fresh)
    started = time.perf_counter()
    await waiting
    assert time.perf_counter() - started < delay / 2  # released by its arrival, not by the delay
    b.arrived(slow)  # late, and harmless
    await b.close()
    assert model.shapes == [(1, 4), (1, 4)]


_WINDOW = 0.005


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["arrive", "done", "check"]),
            st.floats(0, 3 * _WINDOW),  # time passing before the step
            st.floats(0, 3 * _WINDOW),  # how long before "now" an arrival started
            st.integers(0, 1000),  # which outstanding arrival is done
        ),
        max_size=80,
    ),
    st.floats(1.0, 1e5),
)
def test_arrival_accounting_counts_recent_arrivals_and_forgets_old_ones(
    steps: list[tuple[str, float, float, int]], start: float
) -> None:
    """Whatever the order of announcements, completions and checks: an arrival that started less than one delay
    ago always holds a batch back, one that started two delays ago or more never does, and once every arrival is
    done nothing does."""
    b = Batcher(Recorder(), BatchingOptions(max_batch_size=8, max_queue_delay_s=_WINDOW), batchable=True)
    now = start
    outstanding: list[tuple[float, int]] = []
    for kind, elapsed, lag, pick in steps:
        now += elapsed
        if kind == "arrive":
            began = now - lag
            outstanding.append((began, b.arriving(began)))
        elif kind == "done" and outstanding:
            b.arrived(outstanding.pop(pick % len(outstanding))[1])
        else:
            held = b._still_arriving(now)
            ages = [now - began for began, _ in outstanding]
            if any(age < 0.99 * _WINDOW for age in ages):
                assert held
            if all(age >= 2.01 * _WINDOW for age in ages):
                assert not held
    for _, token in outstanding:
        b.arrived(token)
    assert not b._still_arriving(now)
    assert b._arriving >= 0 and b._arriving_before >= 0
