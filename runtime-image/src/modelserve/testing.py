"""Demo models and an in-process server, for tests, the benchmark and `make serve`.

This module builds models, so it imports torch; the server itself only imports torch in engine.py.
Build a demo model from the shell:
    python -m modelserve.testing DIR [--kind torchscript|export|safetensors|failing|swapped]
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import torch
from safetensors.torch import save_file

from modelserve.app import create_app
from modelserve.config import ServeConfig
from modelserve.formats import MANIFEST_NAME
from modelserve.lifecycle import Lifecycle, Server
from modelserve.model import EngineLoader, load_from_config

warnings.filterwarnings("ignore", message=r"`torch\.jit\.\w+` is deprecated", category=DeprecationWarning)

POISON = 1000.0  # FailingMLP raises on inputs whose first feature is at least this


class DemoMLP(torch.nn.Module):
    """in_features -> hidden -> hidden -> out_features with ReLU; the benchmark's 256-1024-1024-10 by default."""

    def __init__(self, in_features: int = 256, hidden: int = 1024, out_features: int = 10) -> None:
        super().__init__()
        self.fc1 = torch.nn.Linear(in_features, hidden)
        self.fc2 = torch.nn.Linear(hidden, hidden)
        self.fc3 = torch.nn.Linear(hidden, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))
        return out


class FailingMLP(DemoMLP):
    """Raises on any row whose first feature is >= POISON: a model that fails on some inputs."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if bool((x[:, 0] >= 1000.0).any()):
            raise RuntimeError("poisoned input")
        out: torch.Tensor = self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))
        return out


class TwoHeads(torch.nn.Module):
    """Two inputs (features FP32, scale FP32) and two outputs, for multi-tensor protocol tests."""

    def forward(self, features: torch.Tensor, scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        total = features.sum(dim=1, keepdim=True) * scale
        return total, features.argmax(dim=1)


class Lookup(torch.nn.Module):
    """Reads rows of a table by index (INT64 [-1, 1] -> FP32 [-1, 1]). An index past the table's end is an
    IndexError on the CPU and a device-side assert on CUDA, which leaves the device unusable for the process."""

    def __init__(self, rows: int = 8) -> None:
        super().__init__()
        self.table = torch.nn.Parameter(torch.arange(rows, dtype=torch.float32).reshape(rows, 1), requires_grad=False)

    def forward(self, index: torch.Tensor) -> torch.Tensor:
        return self.table[index.view(-1)]


def _signature(in_features: int, out_features: int) -> dict[str, Any]:
    return {
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, in_features]}],
        "outputs": [{"name": "output", "datatype": "FP32", "shape": [-1, out_features]}],
    }


def _model(in_features: int, hidden: int, out_features: int, cls: type[DemoMLP] = DemoMLP) -> DemoMLP:
    torch.manual_seed(0)
    return cls(in_features, hidden, out_features).eval()


def build_torchscript(
    directory: Path,
    in_features: int = 256,
    hidden: int = 1024,
    out_features: int = 10,
    failing: bool = False,
    swapped: bool = False,
) -> Path:
    """TorchScript model with its signature embedded as the extra file `modelserve.json`.

    `failing`: raises on poisoned rows (FailingMLP). `swapped`: the same weights with classes 0 and 1 exchanged in
    the last layer, a label-map bug: it never fails and is as fast, but answers those two classes the wrong way
    round."""
    directory.mkdir(parents=True, exist_ok=True)
    model = _model(in_features, hidden, out_features, FailingMLP if failing else DemoMLP)
    if swapped:
        with torch.no_grad():
            model.fc3.weight[[0, 1]] = model.fc3.weight[[1, 0]].clone()
            model.fc3.bias[[0, 1]] = model.fc3.bias[[1, 0]].clone()
    scripted = torch.jit.script(model) if failing else torch.jit.trace(model, torch.zeros(1, in_features))  # type: ignore[no-untyped-call]
    path = directory / "model.pt"
    extra = {MANIFEST_NAME: orjson.dumps(_signature(in_features, out_features))}
    torch.jit.save(scripted, str(path), _extra_files=extra)
    return path


def build_export(directory: Path, in_features: int = 16, hidden: int = 32, out_features: int = 4) -> Path:
    """torch.export program (.pt2) with a dynamic batch dimension; the signature comes from the program."""
    directory.mkdir(parents=True, exist_ok=True)
    model = _model(in_features, hidden, out_features)
    batch = torch.export.Dim("batch", min=1, max=4096)
    program = torch.export.export(model, (torch.zeros(2, in_features),), dynamic_shapes={"x": {0: batch}})
    path = directory / "model.pt2"
    torch.export.save(program, str(path))
    return path


def build_safetensors(directory: Path, in_features: int = 16, hidden: int = 32, out_features: int = 4) -> Path:
    """safetensors weights of DemoMLP plus a manifest naming the entry point and the signature."""
    directory.mkdir(parents=True, exist_ok=True)
    model = _model(in_features, hidden, out_features)
    path = directory / "model.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    manifest = {
        "format": "Safetensors",
        "entryPoint": "modelserve.testing:DemoMLP",
        "init": {"in_features": in_features, "hidden": hidden, "out_features": out_features},
        **_signature(in_features, out_features),
    }
    (directory / MANIFEST_NAME).write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
    return path


def build_two_heads(directory: Path, features: int = 3) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    scripted = torch.jit.script(TwoHeads())
    path = directory / "model.pt"
    torch.jit.save(scripted, str(path))
    manifest = {
        "inputs": [
            {"name": "features", "datatype": "FP32", "shape": [-1, features]},
            {"name": "scale", "datatype": "FP32", "shape": [-1, 1]},
        ],
        "outputs": [
            {"name": "total", "datatype": "FP32", "shape": [-1, 1]},
            {"name": "argmax", "datatype": "INT64", "shape": [-1]},
        ],
    }
    (directory / MANIFEST_NAME).write_bytes(orjson.dumps(manifest))
    return path


def build_lookup(directory: Path, rows: int = 8) -> Path:
    """TorchScript `Lookup` with its signature embedded: a model that faults the device on a bad index."""
    directory.mkdir(parents=True, exist_ok=True)
    signature = {
        "inputs": [{"name": "index", "datatype": "INT64", "shape": [-1, 1]}],
        "outputs": [{"name": "value", "datatype": "FP32", "shape": [-1, 1]}],
    }
    path = directory / "model.pt"
    scripted = torch.jit.script(Lookup(rows))
    torch.jit.save(scripted, str(path), _extra_files={MANIFEST_NAME: orjson.dumps(signature)})
    return path


def reference_forward(path: Path, batch: torch.Tensor) -> Any:
    """Run a TorchScript file directly, to compare the server's answers against."""
    with torch.inference_mode():
        return torch.jit.load(str(path))(batch).numpy()  # type: ignore[no-untyped-call]


def free_socket(host: str = "127.0.0.1") -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    return sock


@contextlib.contextmanager
def stalling_http_server() -> Iterator[str]:
    """An HTTP server that answers every GET with 200 and a 100 MB body, sends its first 64 KiB and then nothing: a
    download that is in progress whenever the caller stops it. Yields its base URL (http://127.0.0.1:PORT)."""
    listener = free_socket()
    listener.listen()
    conns: list[socket.socket] = []

    def serve() -> None:
        with contextlib.suppress(OSError):  # the listener closed
            while True:
                conn, _ = listener.accept()
                conns.append(conn)
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000000\r\n\r\n" + b"\0" * 65536)

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        listener.close()
        for conn in conns:
            conn.close()


@contextlib.contextmanager
def serve_in_thread(
    config: ServeConfig, loader: EngineLoader = load_from_config, wait_ready: bool = True, timeout: float = 60.0,
    keep_alive_s: int = 5,
) -> Iterator[tuple[str, Server]]:  # fmt: skip
    """Run the real HTTP server (uvicorn, with the fast path unless `config.fast_path` is off) in a thread on a
    free port; yields (base URL, server). `keep_alive_s` is uvicorn's idle keep-alive timeout."""
    import httpx
    import uvicorn

    from modelserve.cli import http_protocol

    sock = free_socket()
    port = sock.getsockname()[1]
    config = replace(config, host="127.0.0.1", port=port)
    lifecycle = Lifecycle(config.drain_seconds)
    uv = uvicorn.Config(
        create_app(config, loader, lifecycle), lifespan="on", access_log=False, log_level="warning",
        http=http_protocol(config), loop="asyncio", timeout_graceful_shutdown=10, timeout_keep_alive=keep_alive_s,
    )  # fmt: skip
    server = Server(uv, lifecycle)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        path = "/v2/health/ready" if wait_ready else "/v2/health/live"
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(base + path, timeout=1.0).status_code == 200:
                    break
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError(f"server at {base} did not become {'ready' if wait_ready else 'live'}")
            time.sleep(0.02)
        yield base, server
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


def main() -> None:
    parser = argparse.ArgumentParser(description="Build a demo model into a directory")
    parser.add_argument("directory", type=Path)
    kinds = ["torchscript", "export", "safetensors", "failing", "swapped"]
    parser.add_argument("--kind", choices=kinds, default="torchscript")
    args = parser.parse_args()
    if args.kind == "torchscript":
        path = build_torchscript(args.directory)
    elif args.kind == "failing":
        path = build_torchscript(args.directory, failing=True)
    elif args.kind == "swapped":
        path = build_torchscript(args.directory, swapped=True)
    elif args.kind == "export":
        path = build_export(args.directory)
    else:
        path = build_safetensors(args.directory)
    print(path)


if __name__ == "__main__":
    main()
