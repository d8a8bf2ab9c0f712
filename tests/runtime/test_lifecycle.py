from __future__ import annotations

import signal
import time
from pathlib import Path

import httpx

from modelserve.lifecycle import Lifecycle, Phase

from .conftest import keep_sending, serve_subprocess


def test_phases_and_second_signal() -> None:
    exits: list[bool] = []
    life = Lifecycle(drain_seconds=100)
    life.request_exit = lambda: exits.append(True)
    assert not life.ready
    life.mark_ready()
    assert life.ready
    life.begin_drain()  # no loop attached: drains at once when asked twice
    assert life.phase is Phase.DRAINING or life.phase is Phase.STOPPING
    life.begin_drain()
    assert life.phase is Phase.STOPPING and exits


def test_a_signal_before_ready_stops_without_draining() -> None:
    """A server that never became ready has no endpoint sending it traffic: a drain would only delay the exit."""
    exits: list[bool] = []
    life = Lifecycle(drain_seconds=100)
    life.request_exit = lambda: exits.append(True)
    life.begin_drain()
    assert life.phase is Phase.STOPPING and exits


def test_load_failure_requests_exit_with_its_code() -> None:
    life = Lifecycle(drain_seconds=1)
    exits: list[bool] = []
    life.request_exit = lambda: exits.append(True)
    life.fail(11)
    assert life.phase is Phase.FAILED and life.exit_code == 11 and exits


def test_sigterm_drains_with_zero_failed_requests(models: dict[str, Path]) -> None:
    """A real server process and a client that keeps sending through SIGTERM: nothing fails, exit 0."""
    # The client keeps sending for the first half of the drain period (endpoints not yet updated), timed from the
    # signal, as in test_workers: on a loaded machine a fixed sleep after the checks could reach the drain's end.
    drain, send_for = 3.0, 1.5
    with serve_subprocess(models["mlp"], "mlp", timeout=60, DRAIN_SECONDS=str(drain)) as (proc, base):
        with keep_sending(base, clients=4) as results:
            time.sleep(0.3)
            sent_before = len(results)
            proc.send_signal(signal.SIGTERM)
            stop_at = time.monotonic() + send_for
            time.sleep(0.1)
            assert httpx.get(base + "/v2/health/ready", timeout=2).status_code == 503  # not ready at once
            assert httpx.get(base + "/v2/health/live", timeout=2).status_code == 200
            assert time.monotonic() < stop_at, "the health checks outlasted the client's sending window"
            time.sleep(stop_at - time.monotonic())
        assert proc.wait(timeout=30) == 0
    assert sent_before > 0 and len(results) > sent_before
    failures = [r for r in results if r != 200]
    assert failures == []
