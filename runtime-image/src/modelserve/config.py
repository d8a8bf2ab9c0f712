"""Settings of the `modelserve` command: every flag has an environment variable MODELSERVE_<FLAG>."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelserve.workers import STALL_AFTER_S, START_WITHIN_S

ENV_PREFIX = "MODELSERVE_"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_name(flag: str) -> str:
    """--max-batch-size -> MODELSERVE_MAX_BATCH_SIZE"""
    return ENV_PREFIX + flag.lstrip("-").replace("-", "_").upper()


def parse_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"expected true or false, got {text!r}")


@dataclass(frozen=True, slots=True)
class Option:
    flag: str
    type: Callable[[str], Any]
    default: Any
    help: str
    choices: tuple[str, ...] | None = None

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")

    @property
    def env(self) -> str:
        return env_name(self.flag)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(f"expected an integer >= 1, got {text}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise ValueError(f"expected a number >= 0, got {text}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError(f"expected an integer >= 0, got {text}")
    return value


def _optional_str(text: str) -> str | None:
    return text.strip() or None


def _optional_path(text: str) -> Path | None:
    return Path(text) if text.strip() else None


TERMINATION_LOG = Path("/dev/termination-log")
"""Where the kubelet reads a container's termination message from (the pod's default terminationMessagePath)."""
TERMINATION_LOG_OPTION = Option(
    "--termination-log",
    _optional_path,
    TERMINATION_LOG,
    "on a failure exit, write the error here when the file exists and is empty (the kubelet's termination "
    "message); empty: never",
)

SERVE_OPTIONS: tuple[Option, ...] = (
    Option("--model-dir", Path, None, "directory holding the model (or the model file itself)"),
    Option("--model-name", str, None, "name the model is served under"),
    Option("--model-version", str, "1", "version label served in metadata and metric labels"),
    Option(
        "--model-format",
        _optional_str,
        None,
        "the model's format (default: the manifest's, else the file's extension)",
        ("TorchScript", "TorchExport", "Safetensors"),
    ),
    Option(
        "--entry-point",
        _optional_str,
        None,
        "Safetensors: the 'package.module:Class' the weights belong to (default: the manifest's entryPoint)",
    ),
    Option("--host", str, "0.0.0.0", "address to listen on"),
    Option("--port", _non_negative_int, 8080, "port to listen on (0: any free port)"),
    Option("--max-batch-size", _positive_int, 32, "most rows run in one forward pass (1 disables batching)"),
    Option("--max-queue-delay-ms", _non_negative_float, 5.0, "longest a request waits for a batch to fill"),
    Option("--max-queue-size", _positive_int, 1024, "queued requests beyond which requests get 503"),
    Option("--request-timeout-ms", _non_negative_float, 30000.0, "default per-request deadline (0: none)"),
    Option("--max-body-bytes", _positive_int, 64 * 1024 * 1024, "largest request body accepted (413 above)"),
    Option(
        "--body-timeout-seconds",
        _non_negative_float,
        30.0,
        "longest a request body may go without a byte arriving (408, then close; 0: no limit)",
    ),
    Option(
        "--max-connections",
        _non_negative_int,
        4096,
        "open connections beyond which inference requests get 503 and the connection closes (0: no limit)",
    ),
    Option("--drain-seconds", _non_negative_float, 15.0, "seconds to keep serving after SIGTERM"),
    Option("--device", str, "auto", "where to run the model", ("auto", "cpu", "cuda")),
    Option("--device-index", _non_negative_int, 0, "CUDA device index"),
    Option("--half-precision", parse_bool, False, "run the model in float16 on CUDA"),
    Option("--torch-threads", _non_negative_int, 0, "torch intra-op threads (0: half the cores, at least 1)"),
    Option("--warmup", parse_bool, True, "run the model before reporting ready"),
    Option("--allow-non-finite", parse_bool, False, "accept NaN and Inf in floating-point inputs"),
    Option("--log-level", str, "info", "log level", ("debug", "info", "warning", "error")),
    Option("--auth-tokens-file", _optional_path, None, "bearer tokens: a file (one per line) or a Secret directory"),
    Option("--auth-metrics", parse_bool, False, "also require a bearer token for /metrics"),
    Option("--fast-path", parse_bool, True, "carry inference requests without ASGI (same replies, less overhead)"),
    Option(
        "--workers",
        _positive_int,
        1,
        "server processes sharing the port, each with its own copy of the model (for a model so fast that one "
        "process's HTTP handling is the limit)",
    ),
    Option(
        "--worker-stall-seconds",
        _non_negative_float,
        STALL_AFTER_S,
        "with --workers: kill and restart a worker whose event loop has been stuck this long (0: never)",
    ),
    Option(
        "--worker-start-seconds",
        _non_negative_float,
        START_WITHIN_S,
        "with --workers: kill and restart a worker that is not serving this long after it started (0: never)",
    ),
    TERMINATION_LOG_OPTION,
)

FETCH_OPTIONS: tuple[Option, ...] = (
    Option("--sha256", str, None, "expected sha256 of the artifact (hex)"),
    Option("--timeout-seconds", _non_negative_float, 300.0, "network timeout per operation"),
    Option("--verify-identity", str, None, "require a Sigstore signature by this identity (e-mail or URI)"),
    Option("--verify-issuer", str, None, "OIDC issuer the signing identity must come from"),
    Option("--signature-bundle", str, None, "Sigstore bundle URI or path (default: <URI>.sigstore.json)"),
    Option("--trusted-root", _optional_path, None, "Sigstore trusted_root.json (default: the public-good root)"),
    TERMINATION_LOG_OPTION,
)


@dataclass(frozen=True, slots=True)
class ServeConfig:
    model_dir: Path
    model_name: str
    model_version: str = "1"
    model_format: str | None = None
    entry_point: str | None = None
    host: str = "0.0.0.0"
    port: int = 8080
    max_batch_size: int = 32
    max_queue_delay_ms: float = 5.0
    max_queue_size: int = 1024
    request_timeout_ms: float = 30000.0
    max_body_bytes: int = 64 * 1024 * 1024
    body_timeout_seconds: float = 30.0
    max_connections: int = 4096
    drain_seconds: float = 15.0
    device: str = "auto"
    device_index: int = 0
    half_precision: bool = False
    torch_threads: int = 0
    warmup: bool = True
    allow_non_finite: bool = False
    log_level: str = "info"
    auth_tokens_file: Path | None = None
    auth_metrics: bool = False
    fast_path: bool = True
    workers: int = 1
    worker_stall_seconds: float = STALL_AFTER_S
    worker_start_seconds: float = START_WITHIN_S
    termination_log: Path | None = TERMINATION_LOG


def add_options(parser: argparse.ArgumentParser, options: tuple[Option, ...], env: Mapping[str, str]) -> None:
    """Add flags whose defaults come from the environment; a bad environment value is a usage error."""
    for opt in options:
        default = opt.default
        raw = env.get(opt.env)
        if raw is not None:
            try:
                default = opt.type(raw)
            except (ValueError, TypeError) as exc:
                parser.error(f"{opt.env}={raw!r}: {exc}")
            if opt.choices and default is not None and default not in opt.choices:
                parser.error(f"{opt.env}={raw!r}: expected one of {', '.join(opt.choices)}")
        shown = f" (env {opt.env}, default {opt.default})"
        parser.add_argument(
            opt.flag, dest=opt.dest, type=opt.type, default=default, choices=opt.choices, help=opt.help + shown
        )


def serve_config(args: argparse.Namespace) -> ServeConfig:
    values = {opt.dest: getattr(args, opt.dest) for opt in SERVE_OPTIONS}
    return ServeConfig(**values)


def environ() -> Mapping[str, str]:
    return os.environ
