"""Fixtures for the runtime tests: small demo models built once per session, and app/server factories."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import httpx
import pytest
from hypothesis import strategies as st
from starlette.testclient import TestClient

from modelserve import testing
from modelserve.app import create_app
from modelserve.config import ServeConfig
from modelserve.model import EngineLoader, load_from_config
from modelserve.testing import free_socket

IN, HIDDEN, OUT = 16, 32, 4


@pytest.fixture(autouse=True)
def _no_termination_log(monkeypatch: pytest.MonkeyPatch) -> None:
    """Commands the tests run never write the host's own termination-message file (a test run inside a pod has
    one): the tests that check the message pass --termination-log themselves."""
    monkeypatch.setenv("MODELSERVE_TERMINATION_LOG", "")


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One directory per demo model kind (small sizes keep the suite fast)."""
    root = tmp_path_factory.mktemp("models")
    testing.build_torchscript(root / "mlp", IN, HIDDEN, OUT)
    testing.build_torchscript(root / "failing", IN, HIDDEN, OUT, failing=True)
    testing.build_export(root / "export", IN, HIDDEN, OUT)
    testing.build_safetensors(root / "safetensors", IN, HIDDEN, OUT)
    testing.build_two_heads(root / "two_heads", 3)
    return {p.name: p for p in root.iterdir()}


def make_config(model_dir: Path, name: str = "mlp", **overrides: Any) -> ServeConfig:
    values: dict[str, Any] = {"max_queue_delay_ms": 2.0, "drain_seconds": 0.0, "torch_threads": 1}
    values.update(overrides)
    return ServeConfig(model_dir=model_dir, model_name=name, **values)


def wait_ready(client: TestClient, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while client.get("/v2/health/ready").status_code != 200:
        if time.monotonic() > deadline:
            raise AssertionError("server never became ready")
        time.sleep(0.01)


@contextlib.contextmanager
def serve_subprocess(
    model_dir: Path, name: str, stderr: IO[bytes] | None = None, timeout: float = 120.0, **env: str
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """`modelserve serve` as a real process on a free port, configured through MODELSERVE_* variables (`env`
    overrides, e.g. DEVICE="cuda"); yields (process, base URL) once it is ready, and stops it afterwards if the
    test has not."""
    sock = free_socket()
    port = sock.getsockname()[1]
    sock.close()
    settings = {
        "MODEL_DIR": str(model_dir), "MODEL_NAME": name, "PORT": str(port), "HOST": "127.0.0.1",
        "DRAIN_SECONDS": "0", "TORCH_THREADS": "1", "LOG_LEVEL": "warning", **env,
    }  # fmt: skip
    variables = {**os.environ, **{f"MODELSERVE_{key}": value for key, value in settings.items()}}
    proc = subprocess.Popen([sys.executable, "-m", "modelserve", "serve"], env=variables, stderr=stderr)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(base + "/v2/health/ready", timeout=1).status_code == 200:
                    break
            assert proc.poll() is None and time.monotonic() < deadline, "server did not start"
            time.sleep(0.05)
        yield proc, base
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@contextlib.contextmanager
def keep_sending(base: str, clients: int, model: str = "mlp") -> Iterator[list[int | str]]:
    """`clients` threads, each on its own connection, posting inference requests until the block ends; yields the
    list of outcomes (status codes, or the name of the exception a request raised), filled in as they come."""
    stop = threading.Event()
    results: list[int | str] = []

    def client() -> None:
        with httpx.Client(base_url=base, timeout=10) as c:
            while not stop.is_set():
                try:
                    results.append(c.post(f"/v2/models/{model}/infer", json=v2_body()).status_code)
                except httpx.HTTPError as exc:
                    results.append(type(exc).__name__)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    try:
        yield results
    finally:
        stop.set()
        for t in threads:
            t.join()


ClientFactory = Callable[..., TestClient]

# JSON number texts as clients print them (doubles, float32 values as doubles, integers) and as the grammar allows
# (up to 25 digits and 3 exponent digits): the inputs of the C JSON parser's tests.
json_number_texts = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.floats(width=32, allow_nan=False, allow_infinity=False).map(lambda f: repr(float(f))),
    st.integers(-(2**66), 2**66).map(str),
    st.from_regex(r"\A-?(0|[1-9][0-9]{0,24})(\.[0-9]{1,24})?([eE][+-]?[0-9]{1,3})?\Z"),
)


@pytest.fixture
def make_client() -> Iterator[ClientFactory]:
    """make_client(model_dir, name="mlp", loader=..., ready=True, **config) -> a TestClient with lifespan."""
    opened: list[TestClient] = []

    def factory(
        model_dir: Path, name: str = "mlp", loader: EngineLoader = load_from_config, ready: bool = True, **kw: Any
    ) -> TestClient:
        client = TestClient(create_app(make_config(model_dir, name, **kw), loader), raise_server_exceptions=False)
        client.__enter__()
        opened.append(client)
        if ready:
            wait_ready(client)
        return client

    yield factory
    for client in opened:
        client.__exit__(None, None, None)


@pytest.fixture
def client(models: dict[str, Path], make_client: ClientFactory) -> TestClient:
    return make_client(models["mlp"])


def v2_body(rows: int = 1, features: int = IN, value: float = 0.5, name: str = "input") -> dict[str, Any]:
    return {
        "inputs": [{"name": name, "datatype": "FP32", "shape": [rows, features], "data": [value] * (rows * features)}]
    }


def pid1_available() -> bool:
    """Whether this process may start a command as PID 1 of a new PID namespace (`unshare --pid`, root)."""
    try:
        return subprocess.run(["unshare", "--pid", "--fork", "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def as_pid1(argv: list[str]) -> list[str]:
    """`argv` run as PID 1 of a new PID namespace, as a container's command is: the kernel does not deliver a
    signal to it unless it has a handler for that signal."""
    return ["unshare", "--pid", "--fork", "--kill-child", *argv]


def command_pid(proc: subprocess.Popen[bytes], pid1: bool, timeout: float = 10.0) -> int:
    """The pid (in this namespace) of the command `proc` runs: `proc` itself, or unshare's child."""
    if not pid1:
        return proc.pid
    deadline = time.monotonic() + timeout
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
    while time.monotonic() < deadline:
        found = children.read_text().split() if children.exists() else []
        if found:
            return int(found[0])
        time.sleep(0.01)
    raise AssertionError("unshare started no command")


def handles(pid: int, sig: int) -> bool:
    """Whether process `pid` has a handler installed for `sig` (its SigCgt mask in /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (sig - 1) & 1)
    return False


def metric(text: str, line_start: str) -> float:
    """The value of the first Prometheus sample line in `text` that starts with `line_start`."""
    for line in text.splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{line_start} not in metrics")
