"""Process lifecycle: starting -> ready -> draining -> stopping, and the uvicorn server that drives it.

On SIGTERM the server reports not-ready at once, keeps serving for the drain period (so load balancers
and Endpoints stop sending traffic), then stops accepting connections, finishes in-flight work and exits 0.
A second SIGTERM/SIGINT skips the rest of the drain; a third exits without waiting.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import signal
from collections.abc import Callable
from types import FrameType

import uvicorn

log = logging.getLogger(__name__)


class Phase(enum.StrEnum):
    STARTING = "starting"
    READY = "ready"
    DRAINING = "draining"
    STOPPING = "stopping"
    FAILED = "failed"


class Lifecycle:
    def __init__(self, drain_seconds: float) -> None:
        self.phase = Phase.STARTING
        self.drain_seconds = drain_seconds
        self.exit_code = 0
        self.request_exit: Callable[[], None] = lambda: None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._drain_timer: asyncio.TimerHandle | None = None

    @property
    def ready(self) -> bool:
        return self.phase is Phase.READY

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def mark_ready(self) -> None:
        if self.phase is Phase.STARTING:
            self.phase = Phase.READY
            log.info("Ready")

    def fail(self, exit_code: int) -> None:
        """The model could not be loaded: exit with a non-zero code so the failure is visible."""
        self.phase = Phase.FAILED
        self.exit_code = exit_code
        self.request_exit()

    def begin_drain(self) -> None:
        """Safe to call from a signal handler: the work happens on the event loop."""
        if self._loop is None:
            self._start_drain()
        else:
            self._loop.call_soon_threadsafe(self._start_drain)

    def _start_drain(self) -> None:
        if self.phase in (Phase.DRAINING, Phase.STOPPING):
            self._stop()  # second signal: skip the rest of the drain
            return
        if self.phase is Phase.FAILED:
            self.request_exit()
            return
        if self.phase is Phase.STARTING:  # never ready, so no endpoint sends it traffic: nothing to drain
            self._stop()
            return
        self.phase = Phase.DRAINING
        log.info("Draining for %.1fs before shutdown; readiness is now false", self.drain_seconds)
        if self._loop is None or self.drain_seconds <= 0:
            self._stop()
        else:
            self._drain_timer = self._loop.call_later(self.drain_seconds, self._stop)

    def _stop(self) -> None:
        if self._drain_timer is not None:
            self._drain_timer.cancel()
            self._drain_timer = None
        self.phase = Phase.STOPPING
        log.info("Stopping: finishing in-flight requests")
        self.request_exit()


class Server(uvicorn.Server):
    """uvicorn's server with the drain-on-SIGTERM behaviour instead of its immediate shutdown."""

    def __init__(self, config: uvicorn.Config, lifecycle: Lifecycle, early_signals: list[int] | None = None) -> None:
        super().__init__(config)
        self.lifecycle = lifecycle
        self._signals = 0
        # Signals received before serve() installed the handlers (the caller's own handler appends to this list).
        self._early_signals = early_signals if early_signals is not None else []
        lifecycle.request_exit = self._exit

    def _exit(self) -> None:
        self.should_exit = True

    async def serve(self, sockets: list[object] | None = None) -> None:  # type: ignore[override]
        loop = asyncio.get_running_loop()
        self.lifecycle.attach(loop)
        # Runs at the first await of super().serve(), after its signal handlers replaced the caller's.
        loop.call_soon(self._replay_early_signals)
        await super().serve(sockets)  # type: ignore[arg-type]

    def _replay_early_signals(self) -> None:
        while self._early_signals:
            sig = self._early_signals.pop(0)
            log.info("Replaying %s received during start-up", signal.Signals(sig).name)
            self.handle_exit(sig, None)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self._signals += 1
        log.info("Received %s", signal.Signals(sig).name)
        if self._signals >= 3:
            self.should_exit = True
            self.force_exit = True
        else:
            self.lifecycle.begin_drain()
