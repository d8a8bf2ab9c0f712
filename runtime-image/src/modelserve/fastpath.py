"""The server's HTTP/1.1 connection: uvicorn's httptools protocol, with inference requests carried without ASGI.

With a small model most of a request's time under load goes to HTTP and ASGI plumbing, not to the forward pass
(see docs/runtime.md, "Performance"). For `POST /v2/models/{name}[/versions/{version}]/infer` and
`POST /v1/models/{name}:predict` this protocol collects the body itself, hands it to `modelserve.inference` once
complete, and writes the reply from the batcher's future callback: no ASGI scope, no task, no middleware per
request. Every other request goes through uvicorn's ASGI cycle to the Starlette app, and so do the inference
requests this path does not take: one pipelined behind a response still in progress (uvicorn keeps the order),
one with `Expect: 100-continue`, a percent-encoded path, or any before the app's lifespan state exists. The
Starlette inference routes call the same `inference.begin`/`finish`, so either way the reply is the same; the tests
compare the two byte for byte.

What this path keeps of the server's contract: bearer-token authentication (`auth.authorize`, as the ASGI
middleware does), the body limit (413 at once from `Content-Length`, or as soon as a chunked body passes it;
the connection is then closed rather than reading the rest), keep-alive and `Connection: close`, HTTP/1.0,
uvicorn's `Server` and `Date` headers, the connection limit and the body timeout (`ServerProtocol`), graceful
shutdown (uvicorn's `shutdown()` sees a request in progress and closes the connection after its reply), and the
batcher's arrival accounting (a batch may wait for a body that is still arriving).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from modelserve import inference, protocol_v2
from modelserve.auth import authorize
from modelserve.batching import Batcher, Result
from modelserve.errors import BodyTimeout, ModelServeError, Overloaded, RequestError
from modelserve.inference import (
    Pending,
    Reply,
    State,
    begin,
    body_over_limit,
    check_declared_length,
    error_reply,
    finish,
    json_reply,
    refuse,
)

__all__ = ["MAX_HEAD_BYTES", "FastPathProtocol", "ServerProtocol", "match_route"]

log = logging.getLogger(__name__)

_V2_PREFIX, _V2_SUFFIX = b"/v2/models/", b"/infer"
# The request headers this path reads (the first of each counts, as in Starlette's `headers.get`).
_WANTED = {
    name.encode("latin-1"): name
    for name in (
        "content-length",
        "authorization",
        protocol_v2.HEADER_LENGTH,
        inference.TIMEOUT_HEADER,
        inference.PROBE_HEADER,
    )
}
_V1_PREFIX, _V1_SUFFIX = b"/v1/models/", b":predict"
# The most bytes a request line and header section may take (httptools itself sets no limit, so one connection
# sending header bytes forever would grow the server without bound). Counted per read, so a head that starts in
# the middle of a read may count up to one read's bytes (256 KiB) more than its own.
MAX_HEAD_BYTES = 1024 * 1024
_HEAD_TOO_LARGE = json_reply({"error": f"request line and headers exceed the {MAX_HEAD_BYTES}-byte limit"}, 431)
_V2_LENGTH, _V1_LENGTH = len(_V2_PREFIX) + len(_V2_SUFFIX), len(_V1_PREFIX) + len(_V1_SUFFIX)
_LIMIT_LOG_INTERVAL = 10.0  # seconds between two warnings that the connection limit refuses requests
_limit_logged_at = -_LIMIT_LOG_INTERVAL


def match_route(path: bytes) -> tuple[str, str, str | None] | None:
    """(protocol, model name, version) when `path` is one of the inference routes, as Starlette would match it
    (a `{name}` is one non-empty path segment); None otherwise."""
    # The length checks come first: the compiled module (mypyc) fails on a bytes slice whose end is before its
    # start (b"/v2/models/infer"), where Python gives b"".
    if len(path) > _V2_LENGTH and path.startswith(_V2_PREFIX) and path.endswith(_V2_SUFFIX):
        parts = path[len(_V2_PREFIX) : len(path) - len(_V2_SUFFIX)].split(b"/")
        if len(parts) == 1 and parts[0]:
            return "v2", parts[0].decode("latin-1"), None
        if len(parts) == 3 and parts[0] and parts[1] == b"versions" and parts[2]:
            return "v2", parts[0].decode("latin-1"), parts[2].decode("latin-1")
        return None
    if len(path) > _V1_LENGTH and path.startswith(_V1_PREFIX) and path.endswith(_V1_SUFFIX):
        name = path[len(_V1_PREFIX) : len(path) - len(_V1_SUFFIX)]
        if name and b"/" not in name:
            return "v1", name.decode("latin-1"), None
    return None


_ROUTES: dict[bytes, tuple[str, str, str | None] | None] = {}
_MAX_ROUTES = 256


def _route(url: bytes) -> tuple[str, str, str | None] | None:
    """`match_route` of a request target, remembered for the first few hundred targets seen; None for a
    percent-encoded path (Starlette decodes those, so the ASGI cycle takes them)."""
    try:
        return _ROUTES[url]
    except KeyError:
        pass
    path = url.partition(b"?")[0]
    route = None if b"%" in path else match_route(path)
    if len(_ROUTES) < _MAX_ROUTES:
        _ROUTES[url] = route
    return route


_CONTENT_TYPES = {
    ctype: b"content-type: %s\r\n" % ctype.encode("latin-1") for ctype in (inference.JSON, inference.OCTET_STREAM)
}
_header_block: tuple[list[tuple[bytes, bytes]], bytes] = ([], b"")


def _default_headers(headers: list[tuple[bytes, bytes]]) -> bytes:
    """uvicorn's default headers (Server, Date) as one block; uvicorn replaces the list when the date changes."""
    global _header_block
    if _header_block[0] is not headers:
        _header_block = (headers, b"".join(b"%s: %s\r\n" % pair for pair in headers))
    return _header_block[1]


class _NoEvent:
    """uvicorn sets a cycle's `message_event` when the connection drops; nothing waits on it here."""

    __slots__ = ()

    def set(self) -> None:
        pass


_NO_EVENT = _NoEvent()


class _Request:
    """One inference request on the fast path. It stands in for uvicorn's RequestResponseCycle as the
    protocol's `cycle`, whose `response_complete`, `keep_alive`, `disconnected` and `message_event` uvicorn reads
    (pipelining, shutdown, connection loss)."""

    __slots__ = (
        "announced",
        "arrival",
        "chunks",
        "denial",
        "disconnected",
        "headers",
        "keep_alive",
        "name",
        "pending",
        "protocol",
        "response_complete",
        "size",
        "started",
        "state",
        "version",
    )

    message_event = _NO_EVENT

    def __init__(
        self, state: State, protocol: str, name: str, version: str | None, headers: dict[str, str], keep_alive: bool,
        started: float,
    ) -> None:  # fmt: skip
        self.state = state
        self.protocol = protocol
        self.name = name
        self.version = version
        self.headers = headers
        self.keep_alive = keep_alive
        self.started = started
        self.chunks: list[bytes] = []
        self.size = 0
        self.denial: Reply | None = None
        self.announced: Batcher | None = None
        self.arrival = 0  # the token `announced.arriving` returned
        self.pending: Pending | None = None
        self.response_complete = False
        self.disconnected = False


class ServerProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the guards every connection of this server needs, with or without the fast
    path: request heads over MAX_HEAD_BYTES get a JSON 431, a connection that does not complete a request head
    within the keep-alive timeout is closed (slowloris), a request body that stops arriving for
    `--body-timeout-seconds` gets a JSON 408, inference requests beyond `--max-connections` open connections get a
    JSON 503, malformed HTTP gets a JSON 400, and one keep-alive timer per idle period. Pass as
    `uvicorn.Config(http=ServerProtocol)` (`--fast-path false`)."""

    def __init__(
        self, config: Config, server_state: ServerState, app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:  # fmt: skip
        super().__init__(config, server_state, app_state, _loop)
        self._idle_since: float | None = None  # loop time the last response completed; None while in use
        self._head_bytes = 0  # bytes read while a request head was incomplete; -1 once its headers are in
        self._body_read_at = 0.0  # loop time of the last read that ended inside a request body
        self._head_at = 0.0  # perf_counter when the headers of a request left to the ASGI cycle were in

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # Idle from the start: a connection that never completes a request head is closed after the keep-alive
        # timeout, as one idle after a response is (slowloris).
        self._idle_since = self.loop.time()
        self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive, self._keep_alive_expired)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._head_bytes >= 0:  # this read ended inside a request head
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES and not self.transport.is_closing():
                self._head_bytes = -1
                self._write(_HEAD_TOO_LARGE, keep_alive=False)
                self.transport.close()
        elif not self.transport.is_closing():  # this read ended inside a request body
            self._body_read_at = self.loop.time()
            if self.timeout_keep_alive_task is None:
                self._check_body(self._body_read_at)

    def send_400_response(self, msg: str) -> None:
        """Malformed HTTP (uvicorn calls this when the parser fails): a JSON 400 like every other client error,
        then close, as uvicorn does."""
        if self.transport.is_closing():
            return
        self._write(json_reply({"error": msg}, 400), keep_alive=False)
        self.transport.close()

    # Keep-alive: uvicorn arms a timer after every response and cancels it on the next data, a timer per
    # request. Here one timer per idle period is armed; when it fires it closes the connection only if it has
    # been idle for the whole keep-alive timeout, and otherwise re-arms for the time left. A connection is in
    # use from the end of a request's head to its response: bytes of a head still arriving do not keep it open.

    def _unset_keepalive_if_required(self) -> None:
        pass  # uvicorn calls it on every read; the connection is in use once a head is complete (_in_use)

    def _in_use(self) -> None:
        self._idle_since = None
        self._head_bytes = -1

    def on_response_complete(self) -> None:
        if self.pipeline or self.transport.is_closing():
            super().on_response_complete()  # uvicorn starts the pipelined request (and marks the connection in use)
            return
        self.server_state.total_requests += 1
        flow = self.flow
        if flow.read_paused:  # FlowControl.resume_reading's own test, without its interpreted call per request
            flow.resume_reading()
        self._idle_since = self.loop.time()
        if self.timeout_keep_alive_task is None:
            self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive, self._keep_alive_expired)

    def _keep_alive_expired(self) -> None:
        self.timeout_keep_alive_task = None
        if self._idle_since is None:
            # In use: while a body arrives the same timer watches it; while a reply is pending nothing does, and
            # the next completed response arms the timer again.
            if self._head_bytes < 0 and not self.transport.is_closing():
                self._check_body(self.loop.time())
            return
        left = self._idle_since + self.timeout_keep_alive - self.loop.time()
        if left > 0:
            self.timeout_keep_alive_task = self.loop.call_later(left, self._keep_alive_expired)
        else:
            self.timeout_keep_alive_handler()

    # Body timeout: a request whose head is in and whose body stops arriving would hold its connection (and the
    # body read so far) for as long as the client keeps it open. The keep-alive timer watches it too: no byte for
    # `--body-timeout-seconds` is a 408 and the connection closes. Time in which the server itself stopped
    # reading (uvicorn pauses a connection whose request is pipelined behind a reply in progress) does not count.

    def _check_body(self, now: float) -> None:
        state = self.app_state.get("modelserve")
        timeout = state.config.body_timeout_seconds if isinstance(state, State) else 0.0
        if timeout <= 0:
            return
        if self.flow.read_paused:
            self._body_read_at = now
        left = self._body_read_at + timeout - now
        if left > 0:
            self.timeout_keep_alive_task = self.loop.call_later(left, self._keep_alive_expired)
        else:
            self._body_timed_out(BodyTimeout(f"no byte of the request body arrived for {timeout:g} s"))

    def _body_timed_out(self, error: BodyTimeout) -> None:
        """408 for a request left to the ASGI cycle whose body stopped arriving; the app sees a disconnect."""
        cycle = self.cycle
        answered = cycle is not None and (cycle.response_complete or cycle.response_started)
        if cycle is not None:
            cycle.disconnected = True  # the app's `receive` returns http.disconnect and its `send` does nothing
            cycle.message_event.set()
        if not answered:
            self._write(self._refusal(error, self._head_at, self._inference_route()), keep_alive=False)
        self.transport.close()

    def _inference_route(self) -> tuple[str, str, str | None] | None:
        """``match_route`` of the request target just parsed (query string left out)."""
        return match_route(self.url.partition(b"?")[0])

    def _refusal(self, error: ModelServeError, started: float, route: tuple[str, str, str | None] | None) -> Reply:
        """The reply refusing the request whose head was just parsed: counted when it is an inference request
        (``route``, from ``_inference_route``)."""
        state = self.app_state.get("modelserve")
        if isinstance(state, State) and route is not None:
            return refuse(state, route[0], started, error)
        return error_reply(error)

    # Connection limit: past `--max-connections` open connections an inference request gets a 503 with
    # Retry-After and its connection is closed, so the count comes back under the limit. Health, metadata and
    # metrics requests are still answered: kubelet probes open a connection each, and a probe refused under load
    # would take the pod out of its Service or restart it.

    def _over_limit(self) -> Overloaded | None:
        """Overloaded when this request must be refused for the connection limit; None otherwise."""
        state = self.app_state.get("modelserve")
        if not isinstance(state, State):
            return None
        limit = state.config.max_connections
        if not limit or len(self.connections) <= limit:
            return None
        return _connection_limit_error(limit, len(self.connections))

    def on_url(self, url: bytes) -> None:
        # uvicorn's own on_url and on_header, restated so that the compiled build runs them as C (they run once
        # per request target and header line).
        self.url = self.url + url  # not +=: mypyc 2.4 fails on an augmented assignment to an inherited attribute

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name == b"expect" and value.lower() == b"100-continue":
            self.expect_100_continue = True
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._in_use()
        self._head_at = time.perf_counter()
        refused = self._over_limit()
        route = None if refused is None else self._inference_route()
        if refused is None or route is None:
            super().on_headers_complete()
            return
        reply = self._refusal(refused, self._head_at, route)
        app, self.app = self.app, functools.partial(_send_reply, reply)
        try:
            super().on_headers_complete()  # uvicorn's cycle runs `_send_reply` instead of the app
        finally:
            self.app = app

    def on_message_complete(self) -> None:
        self._head_bytes = 0  # what follows is the next request's head
        super().on_message_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timeout_keep_alive_task is not None:
            self.timeout_keep_alive_task.cancel()
            self.timeout_keep_alive_task = None
        super().connection_lost(exc)

    def _write(self, reply: Reply, keep_alive: bool) -> None:
        """The reply's status line, headers and body, in one write."""
        status = STATUS_LINE.get(reply.status) or b"HTTP/1.1 %d \r\n" % reply.status
        head = [status, _default_headers(self.server_state.default_headers)]
        content_type = _CONTENT_TYPES.get(reply.content_type)
        if content_type is None:
            content_type = b"content-type: %s\r\n" % reply.content_type.encode("latin-1")
        head += (content_type, b"content-length: %d\r\n" % len(reply.body))
        for name_s, value_s in reply.headers:
            head += (name_s.encode("latin-1"), b": ", value_s.encode("latin-1"), b"\r\n")
        if not keep_alive:
            head.append(b"connection: close\r\n")
        head += (b"\r\n", reply.body)
        self.transport.write(b"".join(head))


class FastPathProtocol(ServerProtocol):
    """ServerProtocol that carries inference requests itself. Pass as `uvicorn.Config(http=FastPathProtocol)`."""

    def __init__(
        self, config: Config, server_state: ServerState, app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:  # fmt: skip
        super().__init__(config, server_state, app_state, _loop)
        self._fast: _Request | None = None  # the fast request whose body is being received

    # ---- uvicorn's per-request work that the fast path does not need ----

    def on_message_begin(self) -> None:
        # uvicorn builds the ASGI scope here (a dict and a copy of the lifespan state per request); a fast
        # request never needs it, so `_asgi_scope` builds it only for a request left to the ASGI cycle.
        self.url = b""
        self.expect_100_continue = False
        self.headers = []

    def _asgi_scope(self) -> None:
        url, headers, expect = self.url, self.headers, self.expect_100_continue
        super().on_message_begin()
        self.url, self.headers, self.expect_100_continue = url, headers, expect
        self.scope["headers"] = headers

    # ---- parser callbacks ----

    def on_headers_complete(self) -> None:
        request = self._take()
        if request is None:
            self._asgi_scope()
            super().on_headers_complete()  # marks the connection in use
            return
        self._in_use()
        self._fast = request
        self.cycle = request  # type: ignore[assignment]  # read by uvicorn as a cycle; see _Request
        state = request.state
        limit = state.config.max_connections
        if limit and len(self.connections) > limit:
            error = _connection_limit_error(limit, len(self.connections))
            self._reply(request, refuse(state, request.protocol, request.started, error), close=True)
            return
        try:
            check_declared_length(request.headers.get("content-length"), state.config.max_body_bytes)
        except RequestError as exc:
            self._reply(request, refuse(state, request.protocol, request.started, exc), close=True)
            return
        if state.auth is not None:
            authorization = request.headers.get("authorization")
            denial = authorize(state.auth, None if authorization is None else authorization.encode("latin-1"))
            if denial is not None:
                challenge = denial.challenge.decode("latin-1")
                request.denial = Reply(denial.status, denial.body, headers=(("WWW-Authenticate", challenge),))
                return
        batcher = state.model.batcher
        if batcher is not None and state.model.name == request.name:
            request.arrival = batcher.arriving(request.started)
            request.announced = batcher

    def on_body(self, body: bytes) -> None:
        request = self._fast
        if request is None:
            super().on_body(body)
            return
        if request.response_complete or request.denial is not None:
            return  # answered already (413) or refused: the body is discarded
        request.size += len(body)
        limit = request.state.config.max_body_bytes
        if request.size > limit:
            self._arrived(request)
            refusal = refuse(request.state, request.protocol, request.started, body_over_limit(limit))
            self._reply(request, refusal, close=True)
            return
        request.chunks.append(body)

    def on_message_complete(self) -> None:
        request = self._fast
        if request is None:
            super().on_message_complete()
            return
        self._head_bytes = 0  # what follows is the next request's head
        self._fast = None
        if request.response_complete:
            return
        if request.denial is not None:
            self._reply(request, request.denial)
            return
        body = request.chunks[0] if len(request.chunks) == 1 else b"".join(request.chunks)
        request.chunks = []
        self._arrived(request)  # `begin` queues it before anything else runs on the loop
        outcome = begin(
            request.state, request.protocol, request.name, request.version, request.headers.get, body, request.started,
            functools.partial(self._reply_when_done, request),
        )  # fmt: skip
        if isinstance(outcome, Reply):
            self._reply(request, outcome)
        else:
            request.pending = outcome  # the batcher calls _reply_when_done later, never from within `begin`

    def connection_lost(self, exc: Exception | None) -> None:
        if self._fast is not None:
            self._arrived(self._fast)
            self._fast = None
        super().connection_lost(exc)

    def _body_timed_out(self, error: BodyTimeout) -> None:
        request = self._fast
        if request is None or request.response_complete:
            super()._body_timed_out(error)
            return
        self._arrived(request)
        reply = request.denial or refuse(request.state, request.protocol, request.started, error)
        self._reply(request, reply, close=True)

    # ---- helpers ----

    def _take(self) -> _Request | None:
        """The fast-path request for the headers just parsed, or None to leave it to the ASGI cycle."""
        if self.expect_100_continue or self.parser.get_method() != b"POST":
            return None
        if self.cycle is not None and not self.cycle.response_complete:
            return None  # pipelined behind a response in progress: uvicorn queues it in order
        state = self.app_state.get("modelserve")
        if not isinstance(state, State) or self.parser.should_upgrade():
            return None
        route = _route(self.url)
        if route is None:
            return None
        headers: dict[str, str] = {}
        for name, value in self.headers:
            key = _WANTED.get(name)
            if key is not None and key not in headers:
                headers[key] = value.decode("latin-1")
        http_version = self.parser.get_http_version()
        keep_alive = http_version != "1.0" and self.parser.should_keep_alive()
        return _Request(state, *route, headers, keep_alive, time.perf_counter())

    def _arrived(self, request: _Request) -> None:
        if request.announced is not None:
            request.announced.arrived(request.arrival)
            request.announced = None

    def _reply_when_done(self, request: _Request, _future: asyncio.Future[Result]) -> None:
        pending, request.pending = request.pending, None
        assert pending is not None
        self._reply(request, finish(pending))

    def _reply(self, request: _Request, reply: Reply, close: bool = False) -> None:
        request.response_complete = True
        transport = self.transport
        if transport.is_closing():
            return
        keep_alive = request.keep_alive and not close
        self._write(reply, keep_alive)
        if not keep_alive:
            self._fast = None
            transport.close()
        self.on_response_complete()


def _connection_limit_error(limit: int, open_connections: int) -> Overloaded:
    global _limit_logged_at
    now = time.monotonic()
    if now - _limit_logged_at >= _LIMIT_LOG_INTERVAL:
        _limit_logged_at = now
        log.warning(
            "%d connections are open, over --max-connections %d: inference requests get 503 and their connections "
            "close (logged at most every %g s)",
            open_connections, limit, _LIMIT_LOG_INTERVAL,
        )  # fmt: skip
    return Overloaded(f"the server has more than {limit} open connections; retry later")


async def _send_reply(reply: Reply, scope: Any, receive: Any, send: Any) -> None:
    """An ASGI app that answers `reply` and closes the connection (the request's body is not read)."""
    headers = [
        (b"content-type", reply.content_type.encode("latin-1")),
        (b"content-length", b"%d" % len(reply.body)),
        (b"connection", b"close"),
    ]
    headers += [(name.encode("latin-1"), value.encode("latin-1")) for name, value in reply.headers]
    await send({"type": "http.response.start", "status": reply.status, "headers": headers})
    await send({"type": "http.response.body", "body": reply.body})
