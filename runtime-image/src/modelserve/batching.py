"""Dynamic batching: a bounded queue, shape-compatible batches, one dedicated inference thread.

The event loop only queues requests and hands batches over; concatenation, the forward pass and
splitting happen on the inference thread, so health checks and metrics stay responsive under load.

A batch is dispatched when it is full, when its oldest request has waited `max_queue_delay`, or at once
when no other request is being decoded (nothing could join it soon), so a lone client pays no delay. A
body that has been arriving for more than one or two delays no longer counts as "being decoded", so a client
that drips a body in cannot make every batch wait the whole delay.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from modelserve.errors import DeadlineExceeded, DeviceFailed, InferenceFailed, ModelServeError, Overloaded
from modelserve.signature import Array

log = logging.getLogger(__name__)

Predict = Callable[[Sequence[Array]], list[Array]]
_BatchOutcome = tuple[list[list[Array] | BaseException], float, float]
# Batches handed to the inference thread at once. With two, the thread starts the next batch as soon as it ends
# one, while the event loop answers the finished batch's requests: the model never waits for the loop. A second
# batch is handed over only when full, so light traffic still gets the lowest latency.
_IN_FLIGHT = 2
_unique = itertools.count()


@dataclass(frozen=True, slots=True)
class BatchingOptions:
    max_batch_size: int = 32
    max_queue_delay_s: float = 0.005
    max_queue_size: int = 1024


# A plain class, not a dataclass: built per request, and a dataclass's generated __init__ is interpreted
# even in the compiled build (about 6x slower there).
class Result:
    __slots__ = ("batch_rows", "inference_seconds", "outputs", "queue_seconds")

    def __init__(self, outputs: list[Array], queue_seconds: float, inference_seconds: float, batch_rows: int) -> None:
        self.outputs = outputs
        self.queue_seconds = queue_seconds
        self.inference_seconds = inference_seconds
        self.batch_rows = batch_rows

    def __repr__(self) -> str:
        return (
            f"Result(outputs={self.outputs!r}, queue_seconds={self.queue_seconds!r}, "
            f"inference_seconds={self.inference_seconds!r}, batch_rows={self.batch_rows!r})"
        )


class _Item:
    __slots__ = ("deadline", "enqueued", "future", "inputs", "key", "on_done", "rows")

    def __init__(
        self, inputs: Sequence[Array], rows: int, key: Hashable, future: asyncio.Future[Result], enqueued: float,
        deadline: float | None, on_done: Callable[[asyncio.Future[Result]], None] | None,
    ) -> None:  # fmt: skip
        self.inputs = inputs
        self.rows = rows
        self.key = key
        self.future = future
        self.enqueued = enqueued
        self.deadline = deadline
        self.on_done = on_done

    def notify(self) -> None:
        """Call `on_done` now that the future is settled (see Batcher.submit)."""
        if self.on_done is not None:
            on_done, self.on_done = self.on_done, None
            try:
                on_done(self.future)
            except Exception:
                log.exception("A request's completion callback failed")


def batch_key(inputs: Sequence[Array], batchable: bool) -> tuple[Hashable, int]:
    """(compatibility key, rows): requests share a batch only when their keys are equal."""
    if batchable and len(inputs) == 1:  # the common case, without the generators below
        a = inputs[0]
        if a.ndim >= 1:
            return ((a.dtype.str, a.shape[1:]),), a.shape[0]
    elif batchable and inputs and all(a.ndim >= 1 for a in inputs):
        rows = inputs[0].shape[0]
        if all(a.shape[0] == rows for a in inputs):
            return tuple((a.dtype.str, a.shape[1:]) for a in inputs), rows
    return ("alone", next(_unique)), 1


def split_rows(arrays: Sequence[Array], sizes: Sequence[int]) -> list[list[Array]]:
    """Split each batched output along its first dimension into one list of outputs per request (views)."""
    bounds = [0, *itertools.accumulate(sizes)]
    total = bounds[-1]
    for out in arrays:
        if out.ndim == 0 or out.shape[0] != total:
            raise InferenceFailed(
                f"model output of shape {list(out.shape)} does not keep the batch dimension ({total} rows)"
            )
    return [[out[start:end] for out in arrays] for start, end in itertools.pairwise(bounds)]


class Batcher:
    """Queue of inference requests for one model, served by one inference thread."""

    def __init__(
        self,
        predict: Predict,
        options: BatchingOptions,
        batchable: bool,
        executor: ThreadPoolExecutor | None = None,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self._predict = predict
        self.options = options
        self.batchable = batchable and options.max_batch_size > 1
        self._own_executor = executor is None
        self.executor = executor or ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
        self._on_batch = on_batch
        self._queue: deque[_Item] = deque()
        self._rows_by_key: dict[Hashable, int] = {}
        # Requests whose bodies are still arriving, counted by the delay-long window their head completed in: the
        # current one and the one before. An arrival older than that no longer holds a batch back (see `arriving`).
        self._window = max(options.max_queue_delay_s, 1e-6)
        self._epoch = 0
        self._arriving = 0  # announced in window `_epoch`
        self._arriving_before = 0  # announced in window `_epoch - 1`
        self._wakeup = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._running: list[list[_Item]] = []  # batches handed to the inference thread, oldest first
        self._behind = 0  # requests in the handed-over batches after the first (waiting for the thread)
        # One timer for every deadline: it fires at the earliest deadline of the requests it covers, fails the
        # ones due, and re-arms for the next (see _sweep). A timer per request cost more than its inference.
        self._sweep_at = math.inf
        self._sweep_timer: asyncio.TimerHandle | None = None

    # ---- producer side (event loop) ----

    @property
    def depth(self) -> int:
        """Requests waiting: queued, or handed over in a batch behind the one running."""
        return len(self._queue) + self._behind

    def _running_changed(self) -> None:
        self._behind = sum(len(b) for b in self._running[1:])

    def arriving(self, started: float | None = None) -> int:
        """A request's head is in and its body is arriving (since `started`, a `time.perf_counter` value; now when
        not given): a batch may wait a little for it. Returns the token to pass to `arrived`.

        Only bodies that started arriving within the last one or two `max_queue_delay`s hold a batch back. A body
        that drips in more slowly than that (a slow or hostile client) would otherwise make every batch wait the
        whole delay for as long as it lasts."""
        epoch = self._roll(time.perf_counter() if started is None else started)
        if epoch == self._epoch:
            self._arriving += 1
        elif epoch == self._epoch - 1:
            self._arriving_before += 1
        return epoch

    def arrived(self, token: int) -> None:
        """The request announced by `arriving` (which returned `token`) was submitted or given up."""
        if token == self._epoch:
            self._arriving -= 1
        elif token == self._epoch - 1:
            self._arriving_before -= 1
        else:
            return  # too old to hold anything back any more
        if self._arriving + self._arriving_before == 0 and self._queue:
            self._wakeup.set()

    def _roll(self, at: float) -> int:
        """The arrival window of time `at`, after moving the windows forward to it if it is newer; arrivals older
        than the window before the current one stop counting. A time from before the current window (a late
        caller) moves nothing."""
        epoch = int(at / self._window)
        if epoch > self._epoch:
            self._arriving_before = self._arriving if epoch == self._epoch + 1 else 0
            self._arriving = 0
            self._epoch = epoch
        return epoch

    def _still_arriving(self, now: float) -> bool:
        self._roll(now)
        return self._arriving + self._arriving_before > 0

    def submit(
        self,
        inputs: Sequence[Array],
        deadline: float | None = None,
        on_done: Callable[[asyncio.Future[Result]], None] | None = None,
    ) -> asyncio.Future[Result]:
        """Queue one request (arrays in signature order) and return the future of its outputs, without waiting
        (call on the event loop).

        The future fails with DeadlineExceeded once `deadline` (a `time.perf_counter` value) passes, whether
        the request is still queued or its batch is running; Overloaded is raised at once when the queue is full.
        `on_done`, when given, is called with the future right after the batcher settles it (its result, error
        or deadline), in the same loop iteration; unlike a done callback it costs no scheduled call. It is not
        called if someone else cancels the future.
        """
        if self._closing:
            raise Overloaded("the server is shutting down")
        if len(self._queue) + self._behind >= self.options.max_queue_size:
            raise Overloaded(f"queue full ({self.options.max_queue_size} requests waiting); retry later")
        if self._task is None:
            self.start()
        key, rows = batch_key(inputs, self.batchable)
        loop = self._loop if self._loop is not None else asyncio.get_running_loop()
        now = time.perf_counter()
        item = _Item(inputs, rows, key, loop.create_future(), now, deadline, on_done)
        if deadline is not None and deadline < self._sweep_at:
            self._arm_sweep(loop, deadline, now)
        was_empty = not self._queue
        self._queue.append(item)
        queued = self._rows_by_key.get(key, 0) + rows
        self._rows_by_key[key] = queued
        # Wake the dispatcher only when this request can change what it does. Waking it costs a task step, and under
        # load most requests arrive while it waits for something a request cannot change (waking it for each cost
        # the event loop 1-2 µs per request at 128 connections). With every slot of the inference thread taken it
        # waits for a batch to end (_batch_done wakes it); while one batch runs it waits for the next to fill;
        # otherwise (an empty queue, or nothing running) any request may matter.
        running = len(self._running)
        if running < _IN_FLIGHT and (was_empty or not running or queued >= self.options.max_batch_size):
            self._wakeup.set()
        return item.future

    def _arm_sweep(self, loop: asyncio.AbstractEventLoop, when: float, now: float) -> None:
        if self._sweep_timer is not None:
            self._sweep_timer.cancel()
        self._sweep_at = when
        self._sweep_timer = loop.call_at(loop.time() + max(when - now, 0.0), self._sweep)

    def _sweep(self) -> None:
        """Fail every waiting or running request whose deadline has passed; re-arm for the earliest left."""
        self._sweep_timer, self._sweep_at = None, math.inf
        now = time.perf_counter()
        earliest = math.inf
        for item in itertools.chain(self._queue, *self._running):
            deadline = item.deadline
            if deadline is None or item.future.done():
                continue
            if deadline <= now:
                _expire(item)
            elif deadline < earliest:
                earliest = deadline
        if earliest < math.inf:
            self._arm_sweep(asyncio.get_running_loop(), earliest, now)

    def start(self) -> None:
        if self._task is None:
            self._loop = asyncio.get_running_loop()
            self._task = self._loop.create_task(self._dispatch_forever(), name="batcher")

    async def close(self) -> None:
        """Refuse new requests, finish every queued one, then stop the inference thread."""
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            await self._task
        if self._sweep_timer is not None:
            self._sweep_timer.cancel()
            self._sweep_timer, self._sweep_at = None, math.inf
        if self._own_executor:
            self.executor.shutdown(wait=True)

    async def run_on_thread(self, fn: Callable[[], object]) -> object:
        """Run `fn` on the inference thread (between batches), e.g. a device probe."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn)

    # ---- dispatcher (event loop) ----

    async def _dispatch_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue or len(self._running) >= _IN_FLIGHT:
                if self._closing and not self._queue and not self._running:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            if not await self._wait_for_batch(loop):
                continue
            batch = self._take()
            if not batch:
                continue
            self._running.append(batch)
            self._running_changed()
            future = loop.run_in_executor(self.executor, self._run_batch, batch)
            future.add_done_callback(functools.partial(self._batch_done, batch))

    def _batch_done(self, batch: list[_Item], future: asyncio.Future[_BatchOutcome]) -> None:
        """Settle the requests of a batch the inference thread finished (on the event loop)."""
        self._running.remove(batch)
        self._running_changed()
        self._wakeup.set()
        try:
            results, ran_from, ran_to = future.result()
        except (Exception, asyncio.CancelledError) as exc:  # the batch function maps errors; this is a last resort
            log.error("Inference thread failed: %s", exc, exc_info=exc)
            now = time.perf_counter()
            results, ran_from, ran_to = [InferenceFailed(f"inference failed: {exc}")] * len(batch), now, now
        rows = sum(i.rows for i in batch)
        if self._on_batch is not None:
            self._on_batch(rows)
        elapsed = ran_to - ran_from
        for item, res in zip(batch, results, strict=True):
            if item.future.done():
                continue  # timed out or cancelled while running
            if isinstance(res, BaseException):
                item.future.set_exception(res)
            else:
                item.future.set_result(Result(res, ran_from - item.enqueued, elapsed, rows))
            if item.on_done is not None:
                item.notify()

    async def _wait_for_batch(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Wait until the oldest request's batch should go (True): it is full, nothing more is arriving, or its
        delay is spent. While a batch runs only a full one goes; False when a running batch ends first, so that
        the caller decides again."""
        first = self._queue[0]
        opts = self.options
        running = len(self._running)
        while not self._closing:
            if not self.batchable or self._rows_by_key.get(first.key, 0) >= opts.max_batch_size:
                return True
            if running:
                if len(self._running) < running:
                    return False
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            now = time.perf_counter()
            if not self._still_arriving(now):
                return True
            remaining = first.enqueued + opts.max_queue_delay_s - now
            if remaining <= 0:
                return True
            self._wakeup.clear()
            timer = loop.call_later(remaining, self._wakeup.set)
            try:
                await self._wakeup.wait()
            finally:
                timer.cancel()
        return True

    def _take(self) -> list[_Item]:
        """Pop the oldest live request and every compatible one that fits in the batch, in FIFO order."""
        while self._queue and self._queue[0].future.done():
            self._forget(self._queue.popleft())
        if not self._queue:
            return []
        first = self._queue.popleft()
        self._forget(first)
        batch, rows = [first], first.rows
        if self.batchable:
            keep: deque[_Item] = deque()
            while self._queue:
                item = self._queue.popleft()
                if item.future.done():
                    self._forget(item)
                elif item.key == first.key and rows + item.rows <= self.options.max_batch_size:
                    batch.append(item)
                    rows += item.rows
                    self._forget(item)
                else:
                    keep.append(item)
                    if rows >= self.options.max_batch_size:
                        break
            keep.extend(self._queue)
            self._queue = keep
        now = time.perf_counter()
        live = []
        for item in batch:
            if item.deadline is not None and item.deadline <= now:
                _expire(item, "deadline exceeded while queued")
            else:
                live.append(item)
        return live

    def _forget(self, item: _Item) -> None:
        left = self._rows_by_key.get(item.key, 0) - item.rows
        if left > 0:
            self._rows_by_key[item.key] = left
        else:
            self._rows_by_key.pop(item.key, None)

    # ---- inference thread ----

    def _run_batch(self, batch: list[_Item]) -> _BatchOutcome:
        """(per-request outputs or errors, when the batch started and ended on this thread).

        A batch may wait behind the one before it; requests whose deadline passed meanwhile do not run (their
        futures have failed already, or fail at the sweep that is due)."""
        started = time.perf_counter()
        live = [i for i in batch if not ((i.deadline is not None and i.deadline <= started) or i.future.done())]
        if len(live) == len(batch):
            results = self._run_items(batch)
        else:
            by_item = dict(zip(map(id, live), self._run_items(live), strict=True)) if live else {}
            expired = DeadlineExceeded("deadline exceeded while queued")
            results = [by_item.get(id(i), expired) for i in batch]
        return results, started, time.perf_counter()

    def _run_items(self, batch: list[_Item]) -> list[list[Array] | BaseException]:
        if len(batch) == 1:
            return [self._run_one(batch[0])]
        try:
            columns = [np.concatenate(parts) for parts in zip(*(i.inputs for i in batch), strict=True)]
            outputs = self._predict(columns)
            return list(split_rows(outputs, [i.rows for i in batch]))
        except DeviceFailed as exc:
            return [exc] * len(batch)
        except ModelServeError:
            # One bad request must not fail its neighbours: run each alone to find out which failed.
            return [self._run_one(item) for item in batch]

    def _run_one(self, item: _Item) -> list[Array] | BaseException:
        try:
            return self._predict(item.inputs)
        except ModelServeError as exc:
            return exc
        except Exception as exc:
            return InferenceFailed(f"model raised {type(exc).__name__}: {exc}")


def _expire(item: _Item, message: str | None = None) -> None:
    if not item.future.done():
        waited = _ms(item.deadline - item.enqueued) if item.deadline is not None else "its deadline"
        item.future.set_exception(DeadlineExceeded(message or f"deadline exceeded: no result within {waited}"))
        item.notify()


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"
