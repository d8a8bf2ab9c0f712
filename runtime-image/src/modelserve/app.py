"""The HTTP application: routes of both protocols, health, metrics and OpenAPI, over one served model.

Handlers are thin: the inference routes hand the body to `modelserve.inference` (decode, batch, encode, errors
as `{"error": "..."}` JSON bodies), which `modelserve.fastpath` also calls for the requests it carries without
ASGI. The model lives in the lifespan state, loaded once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from modelserve import __version__, protocol_v1, protocol_v2
from modelserve.auth import BearerAuth, TokenStore
from modelserve.config import ServeConfig
from modelserve.errors import MethodNotAllowed, ModelLoadError, ModelServeError, NotReady
from modelserve.inference import (
    JSON,
    Reply,
    State,
    begin,
    body_over_limit,
    check_declared_length,
    error_reply,
    find_model,
    finish,
    internal_error_reply,
    json_reply,
    refuse,
)
from modelserve.lifecycle import Lifecycle, Phase
from modelserve.metrics import CONTENT_TYPE, Metrics
from modelserve.model import EngineLoader, ServedModel, load_from_config
from modelserve.openapi import openapi_document
from modelserve.protocol_v2 import Limits
from modelserve.workers import EXIT_DEVICE_FAILED, PUBLISH_INTERVAL_S, Worker

__all__ = ["JSON", "State", "create_app", "error_response", "json_response", "read_body"]

log = logging.getLogger(__name__)


def json_response(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return _response(json_reply(payload, status, tuple((headers or {}).items())))


def error_response(exc: ModelServeError) -> Response:
    return _response(error_reply(exc))


def _response(reply: Reply) -> Response:
    return Response(reply.body, status_code=reply.status, media_type=reply.content_type, headers=dict(reply.headers))


def _state(request: Request) -> State:
    state: State = request.state.modelserve
    return state


def _model(state: State, request: Request) -> ServedModel:
    return find_model(state, request.path_params["name"], request.path_params.get("version"))


async def read_body(request: Request, limit: int) -> bytes:
    check_declared_length(request.headers.get("content-length"), limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise body_over_limit(limit)
        chunks.append(chunk)
    return b"".join(chunks)


async def _serve_inference(request: Request, protocol: str) -> Response:
    """An inference request carried by ASGI (modelserve.fastpath carries most of them without ASGI)."""
    started = time.perf_counter()
    state = _state(request)
    name, version = request.path_params["name"], request.path_params.get("version")
    try:
        find_model(state, name, version)
    except ModelServeError as exc:
        return error_response(exc)  # unknown models are not counted: their names are unbounded
    batcher = state.model.batcher
    arrival = batcher.arriving(started) if batcher is not None else 0  # a batch may wait for this body
    try:
        body = await read_body(request, state.config.max_body_bytes)
    except ModelServeError as exc:
        return _response(refuse(state, protocol, started, exc))
    except ClientDisconnect:  # gone mid-body: nobody to answer, and not counted (as on the fast path)
        return Response(status_code=499)
    finally:
        if batcher is not None:
            batcher.arrived(arrival)  # `begin` queues it (or gives up) before anything else runs on the loop
    outcome = begin(state, protocol, name, version, request.headers.get, body, started)
    if isinstance(outcome, Reply):
        return _response(outcome)
    try:
        await outcome.future
    except asyncio.CancelledError:
        finish(outcome)  # counts it
        raise
    except Exception:  # finish() reads the error from the future
        pass
    return _response(finish(outcome))


# ---- route handlers ----


async def infer_v2(request: Request) -> Response:
    return await _serve_inference(request, "v2")


async def predict_v1(request: Request) -> Response:
    return await _serve_inference(request, "v1")


async def live(request: Request) -> Response:
    """200 while the process can serve, draining included. 503 once the accelerator has failed: a CUDA context
    that reported a sticky error (a device-side assert, an illegal access) stays broken for the rest of the
    process, so only a restart of the container brings the replica back."""
    failed = _state(request).model.failed_device()
    if failed is not None:
        return json_response({"live": False, "reason": f"device {failed} failed; the process must restart"}, 503)
    return json_response({"live": True})


async def _is_ready(state: State) -> bool:
    return state.lifecycle.ready and state.model.loaded and await state.model.probe_device()


async def ready(request: Request) -> Response:
    state = _state(request)
    ok = await _is_ready(state)
    return json_response({"ready": ok, "phase": state.lifecycle.phase.value}, 200 if ok else 503)


async def server_metadata(request: Request) -> Response:
    return json_response({"name": "modelserve", "version": __version__, "extensions": ["binary_tensor_data"]})


async def model_metadata(request: Request) -> Response:
    state = _state(request)
    try:
        model = _model(state, request)
        if model.load_error is not None:
            raise NotReady(f"model {model.name!r} failed to load: {model.load_error}")
        meta = protocol_v2.model_metadata(model.name, model.version, model.signature, "pytorch")
    except ModelServeError as exc:
        return error_response(exc)
    return json_response(meta)


async def model_ready(request: Request) -> Response:
    state = _state(request)
    try:
        model = _model(state, request)
    except ModelServeError as exc:
        return error_response(exc)
    ok = await _is_ready(state)
    return json_response({"name": model.name, "ready": ok}, 200 if ok else 503)


async def model_status_v1(request: Request) -> Response:
    state = _state(request)
    if request.path_params["name"].endswith(":predict"):
        return error_response(MethodNotAllowed("use POST for :predict"))
    try:
        model = _model(state, request)
    except ModelServeError as exc:
        return error_response(exc)
    return json_response(protocol_v1.model_status(model.name, model.version, await _is_ready(state)))


class WorkerPublisher:
    """One of `--workers`: writes this worker's metrics for the others every second (and once more when it stops),
    and asks the process to exit once its device has failed, so that the supervisor restarts it."""

    def __init__(self, worker: Worker, model: ServedModel, lifecycle: Lifecycle) -> None:
        self.worker, self.model, self.lifecycle = worker, model, lifecycle
        self._timer: asyncio.TimerHandle | None = None
        self.tick()

    def publish(self) -> None:
        if self.model.batcher is not None:
            self.model.metrics.depth.set(self.model.batcher.depth)
        self.worker.publish(self.model.metrics.snapshot())

    def tick(self) -> None:
        self.publish()
        failed = self.model.failed_device()
        if failed is not None and self.lifecycle.phase is Phase.READY:
            log.error("Device %s failed; this worker exits so that it restarts with a fresh device context", failed)
            self.lifecycle.fail(EXIT_DEVICE_FAILED)
        self._timer = asyncio.get_running_loop().call_later(PUBLISH_INTERVAL_S, self.tick)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self.publish()


async def metrics(request: Request) -> Response:
    state = _state(request)
    if state.model.batcher is not None:
        state.metrics.depth.set(state.model.batcher.depth)
    return Response(state.metrics.render(), media_type=CONTENT_TYPE)


async def openapi(request: Request) -> Response:
    return json_response(openapi_document(__version__))


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    message = {404: "no such endpoint", 405: f"method {request.method} not allowed here"}.get(
        exc.status_code, exc.detail
    )
    return json_response({"error": message}, exc.status_code, dict(exc.headers or {}))


async def internal_error(request: Request, exc: Exception) -> Response:
    return _response(internal_error_reply(exc))


ROUTES = [
    Route("/v2/health/live", live, methods=["GET"]),
    Route("/v2/health/ready", ready, methods=["GET"]),
    Route("/v2", server_metadata, methods=["GET"]),
    Route("/v2/models/{name}", model_metadata, methods=["GET"]),
    Route("/v2/models/{name}/versions/{version}", model_metadata, methods=["GET"]),
    Route("/v2/models/{name}/ready", model_ready, methods=["GET"]),
    Route("/v2/models/{name}/versions/{version}/ready", model_ready, methods=["GET"]),
    Route("/v2/models/{name}/infer", infer_v2, methods=["POST"]),
    Route("/v2/models/{name}/versions/{version}/infer", infer_v2, methods=["POST"]),
    Route("/v1/models/{name}:predict", predict_v1, methods=["POST"]),
    Route("/v1/models/{name}", model_status_v1, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
    Route("/openapi.json", openapi, methods=["GET"]),
]


def create_app(
    config: ServeConfig,
    loader: EngineLoader = load_from_config,
    lifecycle: Lifecycle | None = None,
    worker: Worker | None = None,
) -> Starlette:
    """The ASGI application. The model loads in the background once the lifespan starts; the server is
    live at once and ready after load and warm-up. A load failure asks the process to exit non-zero.
    With `auth_tokens_file` every route but health (and /metrics unless `auth_metrics`) needs a bearer
    token; an unreadable or empty token source raises auth.TokenSourceError here, before serving.
    One of `--workers` (`worker` set) instead loads the model before the lifespan's start-up ends, so it listens
    only once it is ready, shares its metrics with the other workers, and exits when its device fails
    (workers.py)."""
    life = lifecycle or Lifecycle(config.drain_seconds)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        model_holder: list[ServedModel] = []
        peers = worker.peers if worker is not None else None
        metrics = Metrics(config.model_name, config.model_version, lambda: model_holder[0].memory(), peers)
        model = ServedModel(config, metrics, loader)
        model_holder.append(model)
        limits = Limits(max(1, config.max_body_bytes), config.allow_non_finite)
        state = State(config, model, metrics, life, limits, store)
        life.attach(asyncio.get_running_loop())

        async def load() -> None:
            try:
                await model.load()
            except ModelLoadError as exc:
                log.error("Cannot load model %s: %s", config.model_name, exc)
                life.fail(exc.exit_code)
                return
            life.mark_ready()

        task = asyncio.create_task(load(), name="load-model")
        app.state.modelserve = state  # for tests and embedding
        publisher: WorkerPublisher | None = None
        if worker is not None:
            # uvicorn listens once the lifespan has started: a worker joins the port only when it can serve, or
            # (load failed, or stopped meanwhile) for the moment it takes to shut down.
            while not task.done() and life.phase is Phase.STARTING:
                await asyncio.wait({task}, timeout=0.1)
            if life.ready:
                publisher = WorkerPublisher(worker, model, life)
        try:
            yield {"modelserve": state}
        finally:
            if not task.done():
                task.cancel()
            if publisher is not None:
                publisher.stop()
            await model.close()

    middleware = []
    store: TokenStore | None = None
    if config.auth_tokens_file is not None:
        store = TokenStore(config.auth_tokens_file)
        log.info("Bearer token authentication on: %d token(s) from %s", len(store.tokens), store.path)
        middleware.append(Middleware(BearerAuth, store=store, protect_metrics=config.auth_metrics))
    return Starlette(
        routes=ROUTES,
        lifespan=lifespan,
        middleware=middleware,
        exception_handlers={HTTPException: http_error, Exception: internal_error},
    )
