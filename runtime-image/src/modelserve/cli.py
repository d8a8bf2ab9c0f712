"""The `modelserve` command: `fetch` (init container) and `serve` (the server)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from types import FrameType

from modelserve import __version__, compiled_modules
from modelserve.config import FETCH_OPTIONS, SERVE_OPTIONS, ServeConfig, add_options, environ, serve_config
from modelserve.errors import ModelServeError
from modelserve.workers import Worker, bind, supervise

log = logging.getLogger("modelserve")


def build_parser(env: Mapping[str, str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="modelserve",
        description="PyTorch inference server. Every flag can also be set by MODELSERVE_<FLAG> "
        "(e.g. --max-batch-size: MODELSERVE_MAX_BATCH_SIZE).",
    )
    parser.add_argument("--version", action="version", version=f"modelserve {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    fetch = sub.add_parser("fetch", help="fetch a model artifact into a directory")
    fetch.add_argument("uri", nargs="?", default=env.get("MODELSERVE_URI"), help="source URI (env MODELSERVE_URI)")
    fetch.add_argument(
        "dest", nargs="?", default=env.get("MODELSERVE_DEST"), help="destination directory (env MODELSERVE_DEST)"
    )
    add_options(fetch, FETCH_OPTIONS, env)

    serve = sub.add_parser("serve", help="serve a model over HTTP")
    add_options(serve, SERVE_OPTIONS, env)
    return parser


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(), stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Stopped(BaseException):
    """A stop signal arrived (SIGTERM, SIGINT). A BaseException, so no `except Exception` in a client library
    swallows it on its way up, and the partial file is removed where it is written (fetch.write_atomically)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_stopped(signum: int, frame: FrameType | None) -> None:
    raise Stopped(signum)


@contextmanager
def _stop_on_signals() -> Iterator[None]:
    """SIGTERM and SIGINT raise Stopped in the main thread. Needed where the process is PID 1: the operator's pods
    run `modelserve` as the container's command (no init process), and the kernel does not deliver a signal to PID 1
    that has no handler for it, so without one a pod deleted during a download would wait out its grace period."""
    previous = {sig: signal.signal(sig, _raise_stopped) for sig in STOP_SIGNALS}
    try:
        if _early_signals:  # received while the command started
            raise Stopped(_early_signals.pop(0))
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_fetch(args: argparse.Namespace) -> int:
    from modelserve.fetch import fetch
    from modelserve.provenance import SignaturePolicy

    if not args.uri or not args.dest:
        log.error("fetch needs a URI and a destination directory")
        return 2
    policy = None
    if args.verify_identity or args.verify_issuer:
        if not (args.verify_identity and args.verify_issuer):
            log.error("--verify-identity and --verify-issuer go together: an identity means little without its issuer")
            return 2
        policy = SignaturePolicy(args.verify_identity, args.verify_issuer, args.signature_bundle, args.trusted_root)
    elif args.signature_bundle or args.trusted_root:
        log.error("--signature-bundle and --trusted-root need --verify-identity and --verify-issuer")
        return 2
    try:
        with _stop_on_signals():
            fetched = fetch(args.uri, Path(args.dest), args.sha256, args.timeout_seconds, policy)
    except ModelServeError as exc:
        log.error("Fetch failed: %s", exc)
        return exc.exit_code
    except Stopped as stop:
        log.error("Fetch stopped by %s; no partial file is left in %s", stop, args.dest)
        return 128 + stop.signum
    for f in fetched:
        print(f"{f.sha256}  {f.size:>12}  {f.path}")
    return 0


def run_serve(config: ServeConfig, worker: Worker | None = None) -> int:
    """One server process: the whole server, or one of `--workers` (then `worker` is set, and the process listens
    on its own SO_REUSEPORT socket once its model is ready: workers.py)."""
    import uvicorn

    from modelserve.app import create_app
    from modelserve.lifecycle import Lifecycle, Phase, Server

    tune_interpreter()
    config = fit_connection_limit(config)
    compiled = compiled_modules()
    log.info("Request path: %s", f"compiled ({', '.join(compiled)})" if compiled else "pure Python")
    lifecycle = Lifecycle(config.drain_seconds)
    try:
        app = create_app(config, lifecycle=lifecycle, worker=worker)
    except ModelServeError as exc:  # e.g. an unreadable token file
        log.error("Cannot start: %s", exc)
        return exc.exit_code
    uv_config = uvicorn.Config(
        app,
        host=config.host,
        port=config.port,
        loop=_best("uvloop", "asyncio"),
        http=http_protocol(config),
        lifespan="on",
        access_log=False,
        log_level=config.log_level,
        timeout_graceful_shutdown=max(30, int(config.request_timeout_ms / 1000)),
        backlog=2048,
    )
    # uvicorn.Config (re)configured its loggers, dropping their handlers: watch its errors again.
    _watch_errors_again(logging.getLogger("modelserve"), logging.getLogger("uvicorn.error"))
    server = Server(uv_config, lifecycle, early_signals=_early_signals)
    if worker is None:
        server.run()
    else:
        try:
            sock = bind(config.host, config.port)
        except OSError as exc:
            log.error("Cannot listen on %s:%d: %s", config.host, config.port, exc)
            return 1
        with sock:
            server.run(sockets=[sock])
    if lifecycle.exit_code:
        return lifecycle.exit_code
    # A worker stopped while its model loaded never listened, and did nothing wrong.
    return 0 if server.started or (worker is not None and lifecycle.phase is Phase.STOPPING) else 1


# Descriptors kept free beside the connections: the listening socket, model and log files, torch's and the
# loop's own (eventfds, pipes), a kubelet probe's connection.
FD_RESERVE = 128


def fit_connection_limit(config: ServeConfig) -> ServeConfig:
    """`--max-connections` within the open-file limit: the 503 of the connection limit needs the connection
    accepted, and an accept that fails for want of a descriptor leaves the client waiting in the backlog instead
    (and the loop retrying). Raises the soft limit towards the hard one when it is too low, and lowers the
    connection limit, with a warning, when even the hard limit is."""
    import resource

    if not config.max_connections:
        return config
    want = config.max_connections + FD_RESERVE
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= want:
        return config
    raised = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if raised > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
            soft = raised
        except (ValueError, OSError) as exc:
            log.warning("Cannot raise the open-file limit from %d to %d: %s", soft, raised, exc)
    if soft >= want:
        return config
    limit = max(1, soft - FD_RESERVE)
    log.warning(
        "--max-connections %d lowered to %d: the open-file limit is %d (hard %s) and %d descriptors stay reserved",
        config.max_connections, limit, soft, "unlimited" if hard == resource.RLIM_INFINITY else hard, FD_RESERVE,
    )  # fmt: skip
    return replace(config, max_connections=limit)


def http_protocol(config: ServeConfig) -> str | type[asyncio.Protocol]:
    """modelserve's connection when httptools is there (the image has it): with the fast path, or with only its
    guards (head limit, slowloris timeout, JSON 400) for `--fast-path false`; uvicorn's h11 protocol otherwise."""
    if _best("httptools", "h11") == "h11":
        return "h11"
    from modelserve.fastpath import FastPathProtocol, ServerProtocol

    return FastPathProtocol if config.fast_path else ServerProtocol


def tune_interpreter() -> None:
    """Latency tuning for a long-running server: the objects alive after imports never become garbage, so
    freeze them out of the collector and collect less often (full collections caused ~70 ms p99 stalls), and
    hand the GIL between the event loop and the inference thread after 0.1 ms instead of the default 5 ms: the
    inference thread needs it back after every forward pass, and the busy loop would hold it for a whole
    interval, leaving the model idle."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(100_000, 50, 100)
    sys.setswitchinterval(0.0001)


def _best(preferred: str, fallback: str) -> str:
    try:
        __import__(preferred)
    except ImportError:
        return fallback
    return preferred


# Stop signals that arrive while `serve` starts, before uvicorn installs its handlers; replayed to the server once
# it has (lifecycle.Server.serve). Without a handler such a signal would kill the process, or, for PID 1, be dropped.
_early_signals: list[int] = []


def _remember_signal(signum: int, frame: FrameType | None) -> None:
    _early_signals.append(signum)


TERMINATION_MESSAGE_BYTES = 4096
"""The most of a container's termination message the kubelet keeps."""
ERROR_LOGGERS = ("modelserve", "uvicorn.error")
"""The loggers whose last error becomes the termination message: ours, and uvicorn's (which does not propagate to
the root logger); `run_serve` attaches to uvicorn's again once uvicorn has configured its logging."""


class LastError(logging.Handler):
    """Remembers the message of the last error the command logged (without its traceback): what a failed command
    leaves as its termination message."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.message = ""

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(Exception):  # a malformed record (arguments that do not fit its format)
            self.message = record.getMessage()


def _watch_errors_again(ours: logging.Logger, theirs: logging.Logger) -> None:
    for handler in ours.handlers:
        if isinstance(handler, LastError) and handler not in theirs.handlers:
            theirs.addHandler(handler)


def write_termination_message(path: Path | None, message: str) -> bool:
    """Write `message` (cut to the kubelet's 4096 bytes) into the container's termination-message file.

    The kubelet creates that file empty for each start of a container (`/dev/termination-log`) and copies it
    into the pod's status when the container exits (`lastState.terminated.message`), where `kubectl describe
    pod` and the operator's status conditions show it: a model that does not load says why without anyone
    reading logs. Writes only into a file that exists (outside Kubernetes there is none, and none is created) and
    is still empty: with `--workers` the worker that failed writes first, and the supervisor's own message,
    which only says that a worker failed, does not replace it."""
    if path is None or not message:
        return False
    data = message.encode("utf-8", "replace")[:TERMINATION_MESSAGE_BYTES].decode("utf-8", "ignore").encode()
    try:
        with path.open("r+b") as log_file:  # never creates the file
            if log_file.seek(0, os.SEEK_END):
                return False
            log_file.write(data)
    except OSError:
        return False
    return True


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None and threading.current_thread() is threading.main_thread():
        for sig in STOP_SIGNALS:
            signal.signal(sig, _remember_signal)
    env = environ()
    args = build_parser(env).parse_args(argv)
    _setup_logging(getattr(args, "log_level", "info"))
    last_error = LastError()
    loggers = [logging.getLogger(name) for name in ERROR_LOGGERS]
    for logger in loggers:
        logger.addHandler(last_error)
    try:
        try:
            code = _run(args, env, argv)
        except SystemExit as exit_:  # uvicorn exits this way, e.g. when it cannot bind
            code = exit_.code if isinstance(exit_.code, int) else 1
        except Exception as exc:
            log.critical("modelserve %s failed: %s", args.command, exc, exc_info=True)
            code = 1
        if code and code not in {128 + sig for sig in STOP_SIGNALS}:  # a stop signal is not a failure
            write_termination_message(args.termination_log, last_error.message or f"exit code {code}")
        return code
    finally:
        for logger in loggers:
            logger.removeHandler(last_error)


def _run(args: argparse.Namespace, env: Mapping[str, str], argv: Sequence[str] | None) -> int:
    if args.command == "fetch":
        return run_fetch(args)
    if args.model_dir is None or not args.model_name:
        log.error("serve needs --model-dir and --model-name (or MODELSERVE_MODEL_DIR and MODELSERVE_MODEL_NAME)")
        return 2
    config = serve_config(args)
    worker = Worker.from_env(env)
    if config.workers > 1 and worker is None:
        return supervise(
            list(sys.argv[1:] if argv is None else argv),
            config.workers,
            config.host,
            config.port,
            config.torch_threads,
            _early_signals,
            config.worker_stall_seconds,
            config.worker_start_seconds,
        )
    return run_serve(config, worker)


if __name__ == "__main__":
    sys.exit(main())
