"""The HTTP application: routes of both protocols, health, metrics and OpenAPI, over one served model.

Handlers are thin: read the body, decode (protocol_v1/v2), run (model.ServedModel), encode, and map
errors to `{"error": "..."}` JSON bodies. The model lives in the lifespan state, loaded once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from modelserve import __version__, protocol_v1, protocol_v2
from modelserve.auth import BearerAuth, TokenStore
from modelserve.batching import Result
from modelserve.config import ServeConfig
from modelserve.errors import (
    MethodNotAllowed,
    ModelLoadError,
    ModelNotFound,
    ModelServeError,
    NotReady,
    PayloadTooLarge,
    RequestError,
)
from modelserve.lifecycle import Lifecycle
from modelserve.metrics import CONTENT_TYPE, Metrics, outcome_of
from modelserve.model import EngineLoader, ServedModel, load_from_config
from modelserve.openapi import openapi_document
from modelserve.protocol_v1 import PredictRequest
from modelserve.protocol_v2 import HEADER_LENGTH, InferRequest, Limits

log = logging.getLogger(__name__)

TIMEOUT_HEADER = "modelserve-timeout-ms"
JSON = "application/json"


@dataclass(slots=True)
class State:
    config: ServeConfig
    model: ServedModel
    metrics: Metrics
    lifecycle: Lifecycle
    limits: Limits


def json_response(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(payload), status_code=status, media_type=JSON, headers=headers)


def error_response(exc: ModelServeError) -> Response:
    headers = {"Retry-After": "1"} if exc.status == 503 else None
    return json_response({"error": str(exc)}, exc.status, headers)


def _state(request: Request) -> State:
    state: State = request.state.modelserve
    return state


def _model(state: State, request: Request) -> ServedModel:
    """The served model if the path names it (and its version, when given); ModelNotFound otherwise."""
    name = request.path_params["name"]
    version = request.path_params.get("version")
    model = state.model
    if name != model.name:
        raise ModelNotFound(f"model {name!r} not found; this server serves {model.name!r}")
    if version is not None and version != model.version:
        raise ModelNotFound(f"model {name!r} has no version {version!r}; it serves version {model.version!r}")
    return model


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise PayloadTooLarge(f"request body of {declared} bytes exceeds the {limit}-byte limit")
        except ValueError:
            raise RequestError("invalid Content-Length header") from None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body exceeds the {limit}-byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


def _deadline(state: State, started: float, header: str | None, param_ms: float | None) -> float | None:
    timeout_ms = state.config.request_timeout_ms or None
    if header is not None:
        try:
            timeout_ms = float(header)
        except ValueError:
            raise RequestError(f"{TIMEOUT_HEADER} must be a number of milliseconds, got {header!r}") from None
        if not timeout_ms > 0:
            raise RequestError(f"{TIMEOUT_HEADER} must be positive")
    if param_ms is not None:
        timeout_ms = param_ms
    return None if timeout_ms is None else started + timeout_ms / 1000


Handler = Callable[[Request, State, ServedModel, float], Awaitable[Response]]


async def _inference(request: Request, protocol: str, handler: Handler) -> Response:
    """Accounting shared by both protocols: in-flight gauge, outcome counter, end-to-end latency."""
    started = time.perf_counter()
    state = _state(request)
    try:
        model = _model(state, request)
    except ModelServeError as exc:
        return error_response(exc)  # unknown models are not counted: their names are unbounded
    metrics = state.metrics
    metrics.inflight_gauge.inc()
    status = 500
    try:
        if model.batcher is None:
            raise NotReady(f"model {model.name!r} is not ready")
        response = await handler(request, state, model, started)
        status = response.status_code
        return response
    except ModelServeError as exc:
        status = exc.status
        return error_response(exc)
    except Exception as exc:
        log.exception("Unexpected error in %s inference", protocol)
        return json_response({"error": f"internal error: {type(exc).__name__}"}, 500)
    finally:
        metrics.inflight_gauge.dec()
        metrics.record(protocol, outcome_of(status), time.perf_counter() - started)


R = TypeVar("R", InferRequest, PredictRequest)


async def _decode_and_infer(
    request: Request,
    state: State,
    model: ServedModel,
    started: float,
    decode: Callable[[bytes], tuple[R, float | None]],
) -> tuple[R, Result]:
    """Read and decode the body, then run it through the batcher, timing each stage.

    The batcher is told a request is arriving before the body is read (so a batch may wait for it) and that it has
    arrived once decoded, or failed to.
    """
    assert model.batcher is not None
    batcher, stage = model.batcher, state.metrics.stage
    batcher.arriving()
    arrived = False
    try:
        body = await read_body(request, state.config.max_body_bytes)
        t0 = time.perf_counter()
        req, timeout_ms = decode(body)
        deadline = _deadline(state, started, request.headers.get(TIMEOUT_HEADER), timeout_ms)
        stage["decode"].observe(time.perf_counter() - t0)
        batcher.arrived()
        arrived = True
        result = await model.infer(req.inputs, deadline)
    finally:
        if not arrived:
            batcher.arrived()
    stage["queue"].observe(result.queue_seconds)
    stage["inference"].observe(result.inference_seconds)
    return req, result


async def _infer_v2(request: Request, state: State, model: ServedModel, started: float) -> Response:
    def decode(body: bytes) -> tuple[InferRequest, float | None]:
        header_length = protocol_v2.parse_header_length(request.headers.get(HEADER_LENGTH), len(body))
        req = protocol_v2.decode_request(body, header_length, model.signature, state.limits)
        return req, req.timeout_ms

    req, result = await _decode_and_infer(request, state, model, started, decode)
    t1 = time.perf_counter()
    payload, json_length = protocol_v2.encode_response(
        model.name, model.version, req, model.output_names, result.outputs
    )
    state.metrics.stage["encode"].observe(time.perf_counter() - t1)
    if json_length is None:
        return Response(payload, media_type=JSON)
    return Response(
        payload,
        media_type="application/octet-stream",
        headers={"Inference-Header-Content-Length": str(json_length)},
    )


async def _predict_v1(request: Request, state: State, model: ServedModel, started: float) -> Response:
    def decode(body: bytes) -> tuple[PredictRequest, float | None]:
        return protocol_v1.decode_request(body, model.signature, state.limits), None

    req, result = await _decode_and_infer(request, state, model, started, decode)
    t1 = time.perf_counter()
    payload = protocol_v1.encode_response(req, model.output_names, result.outputs)
    state.metrics.stage["encode"].observe(time.perf_counter() - t1)
    return Response(payload, media_type=JSON)


# ---- route handlers ----


async def infer_v2(request: Request) -> Response:
    return await _inference(request, "v2", _infer_v2)


async def predict_v1(request: Request) -> Response:
    return await _inference(request, "v1", _predict_v1)


async def live(request: Request) -> Response:
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
    return json_response({"error": f"internal error: {type(exc).__name__}"}, 500)


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
    config: ServeConfig, loader: EngineLoader = load_from_config, lifecycle: Lifecycle | None = None
) -> Starlette:
    """The ASGI application. The model loads in the background once the lifespan starts; the server is
    live at once and ready after load and warm-up. A load failure asks the process to exit non-zero.
    With `auth_tokens_file` every route but health (and /metrics unless `auth_metrics`) needs a bearer
    token; an unreadable or empty token source raises auth.TokenSourceError here, before serving."""
    life = lifecycle or Lifecycle(config.drain_seconds)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        model_holder: list[ServedModel] = []
        metrics = Metrics(config.model_name, config.model_version, lambda: model_holder[0].memory())
        model = ServedModel(config, metrics, loader)
        model_holder.append(model)
        limits = Limits(max(1, config.max_body_bytes), config.allow_non_finite)
        state = State(config, model, metrics, life, limits)
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
        try:
            yield {"modelserve": state}
        finally:
            if not task.done():
                task.cancel()
            await model.close()

    middleware = []
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
