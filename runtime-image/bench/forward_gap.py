"""The raw batch-32 forward of the benchmark's MLP on one core, back to back and with a pause between calls.

`bench.py`'s raw limit calls the model back to back, so its 5 MB of weights stay in the caches. In a server the
forward pass shares the core with the event loop: between two batches about a millisecond goes to HTTP work. This
measures what such a pause alone costs the next forward, with nothing else running:

- `back-to-back`: the raw limit's loop;
- `idle`: the core sleeps between calls;
- `spin`: the core spins between calls and touches no memory;
- `touch N MB`: the pause writes N MB of other memory, as a busy event loop touches its own.

Usage: python runtime-image/bench/forward_gap.py [--cpu 1] [--pause-ms 1.0] [--calls 1500]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))

from bench import build_model


def per_row_us(model: torch.jit.ScriptModule, pause: Callable[[], None], calls: int, rows: int = 32) -> float:
    """Median forward time per row, in µs, with `pause()` before every call (not timed)."""
    x = torch.randn(rows, 256)
    times = []
    with torch.inference_mode():
        for _ in range(calls):
            pause()
            started = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e6 / rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu", type=int, default=1)
    parser.add_argument("--pause-ms", type=float, default=1.0)
    parser.add_argument("--calls", type=int, default=1500)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    os.sched_setaffinity(0, {args.cpu})
    torch.set_num_threads(1)
    model = torch.jit.load(str(build_model())).eval()
    seconds = args.pause_ms / 1000
    buffers = {mb: np.zeros(mb * 1_000_000 // 8) for mb in (1, 4, 16)}

    def spin() -> None:
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            pass

    def touch(buffer: np.ndarray) -> Callable[[], None]:
        def pause() -> None:
            spin()
            buffer.fill(1.0)

        return pause

    cases: dict[str, Callable[[], None]] = {
        "back-to-back": lambda: None,
        "idle": lambda: time.sleep(seconds),
        "spin": spin,
        **{f"touch {mb} MB": touch(buffer) for mb, buffer in buffers.items()},
    }
    print(f"batch-32 forward on CPU {args.cpu}, one torch thread, {args.pause_ms} ms pause; µs per row (median)")
    for repeat in range(args.repeats):
        row = ", ".join(f"{name} {per_row_us(model, pause, args.calls):.1f}" for name, pause in cases.items())
        print(f"run {repeat + 1}: {row}")


if __name__ == "__main__":
    main()
