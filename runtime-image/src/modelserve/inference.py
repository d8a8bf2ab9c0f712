"""One inference request, from its path, headers and body to a reply, whatever HTTP server carries it.

Both carriers call the same two functions: the ASGI routes of `modelserve.app` and the connection fast path of
`modelserve.fastpath`. `begin` finds the model, decodes the body, computes the deadline and queues the request
with the batcher; it returns either a finished `Reply` (a client error, or a server that is not ready) or a
`Pending` whose future resolves to the batcher's `Result`. `finish` turns a resolved `Pending` into the `Reply`.
The accounting (in-flight gauge, outcome counter, stage and end-to-end latency) happens here, once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import orjson

from modelserve import protocol_v1, protocol_v2
from modelserve.auth import TokenStore
from modelserve.batching import Result
from modelserve.config import ServeConfig
from modelserve.errors import ModelNotFound, ModelServeError, NotReady, PayloadTooLarge, RequestError
from modelserve.lifecycle import Lifecycle
from modelserve.metrics import Metrics, outcome_of
from modelserve.model import ServedModel
from modelserve.protocol_v1 import PredictRequest
from modelserve.protocol_v2 import HEADER_LENGTH, InferRequest, Limits

__all__ = [
    "JSON",
    "PROBE_HEADER",
    "TIMEOUT_HEADER",
    "Pending",
    "Reply",
    "State",
    "begin",
    "body_over_limit",
    "check_declared_length",
    "error_reply",
    "find_model",
    "finish",
    "internal_error_reply",
    "json_reply",
    "refuse",
]

log = logging.getLogger(__name__)

TIMEOUT_HEADER = "modelserve-timeout-ms"
PROBE_HEADER = "modeldeploy-probe"
"""Present on a request that is not client traffic (the operator's golden requests): counted apart (metrics)."""
JSON = "application/json"
OCTET_STREAM = "application/octet-stream"

HeaderLookup = Callable[[str], "str | None"]


@dataclass(slots=True)
class State:
    """What every request of one server needs; created once in the app's lifespan."""

    config: ServeConfig
    model: ServedModel
    metrics: Metrics
    lifecycle: Lifecycle
    limits: Limits
    auth: TokenStore | None = None


# A plain class, not a dataclass: built per request, and a dataclass's generated __init__ is interpreted
# even in the compiled build (about 6x slower there).
class Reply:
    __slots__ = ("body", "content_type", "headers", "status")

    def __init__(
        self, status: int, body: bytes, content_type: str = JSON, headers: tuple[tuple[str, str], ...] = ()
    ) -> None:
        self.status = status
        self.body = body
        self.content_type = content_type
        self.headers = headers

    def __repr__(self) -> str:
        return f"Reply({self.status}, {self.body!r}, {self.content_type!r}, {self.headers!r})"


def json_reply(payload: object, status: int = 200, headers: tuple[tuple[str, str], ...] = ()) -> Reply:
    return Reply(status, orjson.dumps(payload), JSON, headers)


def error_reply(exc: ModelServeError) -> Reply:
    headers = (("Retry-After", "1"),) if exc.status == 503 else ()
    return json_reply({"error": str(exc)}, exc.status, headers)


def internal_error_reply(exc: Exception) -> Reply:
    return json_reply({"error": f"internal error: {type(exc).__name__}"}, 500)


def find_model(state: State, name: str, version: str | None) -> ServedModel:
    """The served model if the path names it (and its version, when given); ModelNotFound otherwise."""
    model = state.model
    if name != model.name:
        raise ModelNotFound(f"model {name!r} not found; this server serves {model.name!r}")
    if version is not None and version != model.version:
        raise ModelNotFound(f"model {name!r} has no version {version!r}; it serves version {model.version!r}")
    return model


def check_declared_length(declared: str | None, limit: int) -> None:
    """Refuse a body by its `Content-Length` before reading it: RequestError when the header is not a number,
    PayloadTooLarge when it exceeds `limit` bytes. The HTTP parsers reject a malformed length first; both carriers
    still check it here so that they answer the same."""
    if declared is None:
        return
    if not declared.isdigit():
        raise RequestError("invalid Content-Length header")
    if int(declared) > limit:
        raise PayloadTooLarge(f"request body of {declared} bytes exceeds the {limit}-byte limit")


def body_over_limit(limit: int) -> PayloadTooLarge:
    """The error for a body that grew past `limit` bytes while it was read (chunked, or no length declared)."""
    return PayloadTooLarge(f"request body exceeds the {limit}-byte limit")


def deadline_of(state: State, started: float, header: str | None, param_ms: float | None) -> float | None:
    """The request's deadline on the `time.perf_counter` clock: the server default, the timeout header, or the
    request's own `timeout` parameter, in that order of precedence; None for no deadline."""
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


class Pending:  # a plain class, as Reply
    """A decoded request waiting for the batcher; `future` resolves to its Result (or a ModelServeError)."""

    __slots__ = ("future", "model", "probe", "protocol", "request", "started", "state")

    def __init__(
        self, state: State, model: ServedModel, protocol: str, request: InferRequest | PredictRequest, started: float,
        future: asyncio.Future[Result], probe: bool = False,
    ) -> None:  # fmt: skip
        self.state = state
        self.model = model
        self.protocol = protocol
        self.request = request
        self.started = started
        self.future = future
        self.probe = probe


def begin(
    state: State, protocol: str, name: str, version: str | None, header: HeaderLookup, body: bytes, started: float,
    on_done: Callable[[asyncio.Future[Result]], None] | None = None,
) -> Reply | Pending:  # fmt: skip
    """Decode and queue one request of `protocol` ("v2" or "v1"); a Reply when it ends here (an error).

    `header` looks up a request header by lower-case name. Requests for an unknown model are answered but not
    counted: their names are unbounded label values. `on_done` is called when the batcher settles the request's
    future (Batcher.submit); it is never called when a Reply is returned.
    """
    try:
        model = find_model(state, name, version)
    except ModelServeError as exc:
        return error_reply(exc)
    metrics = state.metrics
    metrics.inflight_gauge.inc()
    probe = header(PROBE_HEADER) is not None
    try:
        if model.batcher is None:
            raise NotReady(f"model {model.name!r} is not ready")
        t0 = time.perf_counter()
        request: InferRequest | PredictRequest
        if protocol == "v2":
            header_length = protocol_v2.parse_header_length(header(HEADER_LENGTH), len(body))
            request = protocol_v2.decode_request(body, header_length, model.signature, state.limits)
            timeout_ms = request.timeout_ms
        else:
            request = protocol_v1.decode_request(body, model.signature, state.limits)
            timeout_ms = None
        deadline = deadline_of(state, started, header(TIMEOUT_HEADER), timeout_ms)
        metrics.stage["decode"].observe(time.perf_counter() - t0)
        future = model.submit(request.inputs, deadline, on_done)
    except ModelServeError as exc:
        return _done(state, protocol, started, error_reply(exc), probe)
    except Exception as exc:
        log.exception("Unexpected error in %s inference", protocol)
        return _done(state, protocol, started, internal_error_reply(exc), probe)
    return Pending(state, model, protocol, request, started, future, probe)


def finish(pending: Pending) -> Reply:
    """The reply of a request whose future is done."""
    state, model = pending.state, pending.model
    stage = state.metrics.stage
    try:
        result = pending.future.result()
        stage["queue"].observe(result.queue_seconds)
        stage["inference"].observe(result.inference_seconds)
        t1 = time.perf_counter()
        request = pending.request
        if isinstance(request, InferRequest):
            payload, json_length = protocol_v2.encode_response(
                model.name, model.version, request, model.output_names, result.outputs
            )
            if json_length is None:
                reply = Reply(200, payload, JSON)
            else:
                reply = Reply(200, payload, OCTET_STREAM, ((protocol_v2.HEADER_LENGTH, str(json_length)),))
        else:
            reply = Reply(200, protocol_v1.encode_response(request, model.output_names, result.outputs), JSON)
        stage["encode"].observe(time.perf_counter() - t1)
    except ModelServeError as exc:
        reply = error_reply(exc)
    except asyncio.CancelledError:
        reply = json_reply({"error": "request cancelled"}, 499)
    except Exception as exc:
        log.exception("Unexpected error in %s inference", pending.protocol)
        reply = internal_error_reply(exc)
    return _done(state, pending.protocol, pending.started, reply, pending.probe)


def refuse(state: State, protocol: str, started: float, exc: ModelServeError) -> Reply:
    """The reply to a request of a known model refused before `begin` (e.g. a body over the limit), counted."""
    state.metrics.inflight_gauge.inc()
    return _done(state, protocol, started, error_reply(exc))


def _done(state: State, protocol: str, started: float, reply: Reply, probe: bool = False) -> Reply:
    metrics = state.metrics
    metrics.inflight_gauge.dec()
    metrics.record(protocol, outcome_of(reply.status), time.perf_counter() - started, probe)
    return reply
