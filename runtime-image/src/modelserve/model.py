"""The served model: an engine behind its batcher, with readiness and the per-request deadline."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from modelserve.batching import Batcher, BatchingOptions, Result
from modelserve.config import ServeConfig
from modelserve.errors import ModelLoadError, NotReady
from modelserve.metrics import Metrics
from modelserve.signature import Array, Signature

log = logging.getLogger(__name__)

_DEVICE_PROBE_INTERVAL_S = 5.0


class EngineLike(Protocol):
    """What the server needs from an engine (engine.Engine; fakes in tests)."""

    signature: Signature
    device: str
    healthy: bool
    load_seconds: float

    def predict(self, inputs: Sequence[Array]) -> list[Array]: ...
    def warm_up(self, batch_sizes: Sequence[int] = (1,)) -> None: ...
    def check_device(self) -> bool: ...
    def memory_stats(self) -> dict[str, int]: ...


EngineLoader = Callable[[ServeConfig], EngineLike]


def load_from_config(config: ServeConfig) -> EngineLike:
    """The default loader: resolve the model directory and load it with the engine (imports torch)."""
    from modelserve.engine import EngineOptions, load_engine
    from modelserve.formats import resolve

    options = EngineOptions(config.device, config.device_index, config.half_precision, config.torch_threads)
    return load_engine(resolve(config.model_dir, config.model_format, config.entry_point), options)


class ServedModel:
    def __init__(self, config: ServeConfig, metrics: Metrics, loader: EngineLoader = load_from_config) -> None:
        self.name = config.model_name
        self.version = config.model_version
        self.config = config
        self.metrics = metrics
        self._loader = loader
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
        self.engine: EngineLike | None = None
        self.batcher: Batcher | None = None
        self.load_error: Exception | None = None
        self._last_probe = 0.0

    @property
    def loaded(self) -> bool:
        return self.batcher is not None

    @property
    def signature(self) -> Signature:
        if self.engine is None:
            raise NotReady(f"model {self.name!r} is not loaded yet")
        return self.engine.signature

    @property
    def output_names(self) -> list[str]:
        return [s.name for s in self.signature.outputs]

    async def load(self) -> None:
        """Load and warm up on the inference thread; raises ModelLoadError (also kept in load_error)."""
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        try:
            engine = await loop.run_in_executor(self.executor, self._loader, self.config)
            if self.config.warmup:
                sizes = sorted({1, self.config.max_batch_size}) if engine.signature.batchable else [1]
                await loop.run_in_executor(self.executor, engine.warm_up, sizes)
        except Exception as exc:
            self.load_error = exc if isinstance(exc, ModelLoadError) else ModelLoadError(f"{exc}")
            raise self.load_error from exc
        self.engine = engine
        self.batcher = Batcher(
            engine.predict,
            BatchingOptions(
                self.config.max_batch_size, self.config.max_queue_delay_ms / 1000, self.config.max_queue_size
            ),
            engine.signature.batchable,
            executor=self.executor,
            on_batch=self.metrics.batch.observe,
        )
        seconds = time.perf_counter() - started
        self.metrics.load_seconds.set(seconds)
        log.info("Model %s version %s loaded on %s in %.2fs", self.name, self.version, engine.device, seconds)

    def failed_device(self) -> str | None:
        """The device's name once it has failed (liveness then fails), else None."""
        engine = self.engine
        return engine.device if engine is not None and not engine.healthy else None

    async def probe_device(self) -> bool:
        """Readiness check of the device: at most every few seconds, on the inference thread."""
        engine, batcher = self.engine, self.batcher
        if engine is None or batcher is None or not engine.healthy:
            return False
        if engine.device == "cpu":
            return True
        now = time.monotonic()
        if now - self._last_probe >= _DEVICE_PROBE_INTERVAL_S:
            self._last_probe = now
            await batcher.run_on_thread(engine.check_device)
        return engine.healthy

    def submit(
        self,
        inputs: Sequence[Array],
        deadline: float | None,
        on_done: Callable[[asyncio.Future[Result]], None] | None = None,
    ) -> asyncio.Future[Result]:
        """Queue a request with the batcher; the future holds its Result (see Batcher.submit)."""
        if self.batcher is None:
            raise NotReady(f"model {self.name!r} is not ready")
        return self.batcher.submit(inputs, deadline, on_done)

    def memory(self) -> dict[str, dict[str, int]]:
        engine = self.engine
        if engine is None:
            return {}
        stats = engine.memory_stats()
        return {engine.device: stats} if stats else {}

    async def close(self) -> None:
        if self.batcher is not None:
            await self.batcher.close()
        self.executor.shutdown(wait=True)
