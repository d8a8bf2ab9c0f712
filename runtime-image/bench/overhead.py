"""The server's Python cost per inference request, without sockets: raw HTTP requests are fed to the real
connection protocol (`FastPathProtocol`, or uvicorn's with `--fast-path false`) over in-memory transports, 128
connections at a time, each sending its next request when its reply is written.

With `--stub-model` the forward pass returns zeros at once, so CPU time per request is the server's own work
(HTTP parsing, decoding, batching, encoding, metrics); without it the real model runs too. Pin it to one core
for stable numbers: `taskset -c 1 python runtime-image/bench/overhead.py binary --stub-model`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
WORK = ROOT / ".bench"


def request_bytes(payload: str) -> bytes:
    x = np.random.default_rng(0).standard_normal((1, 256)).astype(np.float32)
    if payload == "json":
        body = json.dumps(
            {"inputs": [{"name": "input", "shape": [1, 256], "datatype": "FP32", "data": x.ravel().tolist()}]}
        ).encode()
        extra = b"Content-Type: application/json\r\n"
    else:
        header = json.dumps(
            {
                "inputs": [
                    {"name": "input", "shape": [1, 256], "datatype": "FP32", "parameters": {"binary_data_size": 1024}}
                ],
                "parameters": {"binary_data_output": True},
            }
        ).encode()
        body = header + x.tobytes()
        extra = b"Content-Type: application/octet-stream\r\nInference-Header-Content-Length: %d\r\n" % len(header)
    head = b"POST /v2/models/mlp/infer HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: %d\r\n" % len(body)
    return head + extra + b"\r\n" + body


class Transport(asyncio.Transport):
    """An in-memory connection: a written reply makes the client send its next request."""

    def __init__(self, load: Load) -> None:
        super().__init__()
        self.load = load
        self.protocol: asyncio.Protocol | None = None
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.load.replied(self, bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8080), "peername": ("127.0.0.1", 40000)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class Load:
    def __init__(self, loop: asyncio.AbstractEventLoop, request: bytes, total: int) -> None:
        self.loop, self.request, self.total = loop, request, total
        self.sent = self.done = 0
        self.statuses: dict[bytes, int] = {}
        self.finished = loop.create_future()

    def send(self, transport: Transport) -> None:
        if self.sent < self.total:
            self.sent += 1
            assert transport.protocol is not None
            self.loop.call_soon(transport.protocol.data_received, self.request)

    def replied(self, transport: Transport, data: bytes) -> None:
        if not data.startswith(b"HTTP/1.1 "):
            return  # the rest of a reply (uvicorn's own protocol writes the body separately)
        status = data[9:12]
        self.statuses[status] = self.statuses.get(status, 0) + 1
        self.done += 1
        if self.done == self.total and not self.finished.done():
            self.finished.set_result(None)
        self.send(transport)


def thread_cpu() -> dict[str, float]:
    out = {}
    for task in Path("/proc/self/task").iterdir():
        fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        out[task.name] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return out


async def run(args: argparse.Namespace) -> None:
    import uvicorn

    from modelserve.app import create_app
    from modelserve.cli import http_protocol, tune_interpreter
    from modelserve.config import ServeConfig
    from modelserve.lifecycle import Lifecycle
    from modelserve.testing import build_torchscript

    model = build_torchscript(WORK / "model", 256, 1024, 10)
    config = ServeConfig(
        model_dir=model.parent, model_name="mlp", torch_threads=1, drain_seconds=0, fast_path=args.fast_path
    )
    uv = uvicorn.Config(
        create_app(config, lifecycle=Lifecycle(0)), http=http_protocol(config), lifespan="on", log_level="warning"
    )
    uv.load()
    server = uvicorn.Server(uv)
    lifespan = uv.lifespan_class(uv)
    await lifespan.startup()
    state = lifespan.state["modelserve"]
    for _ in range(2400):
        if state.model.batcher is not None:
            break
        await asyncio.sleep(0.05)
    else:
        raise RuntimeError("the model did not load within 120 s")
    tune_interpreter()
    loop = asyncio.get_running_loop()
    request = request_bytes(args.payload)

    async def drive(total: int) -> Load:
        load = Load(loop, request, total)
        for _ in range(args.connections):
            transport = Transport(load)
            protocol = uv.http_protocol_class(  # type: ignore[call-arg]
                config=uv, server_state=server.server_state, app_state=lifespan.state, _loop=loop
            )
            transport.protocol = protocol
            protocol.connection_made(transport)
            load.send(transport)
        await load.finished
        return load

    await drive(2000)  # warm-up
    before, started = thread_cpu(), time.perf_counter()
    rusage = resource.getrusage(resource.RUSAGE_SELF)
    load = await drive(args.requests)
    elapsed = time.perf_counter() - started
    after, rusage_after = thread_cpu(), resource.getrusage(resource.RUSAGE_SELF)
    cpu = rusage_after.ru_utime + rusage_after.ru_stime - rusage.ru_utime - rusage.ru_stime
    main_tid = str(os.getpid())
    busy = {t: after[t] - before.get(t, 0.0) for t in after}
    others = sorted((b for t, b in busy.items() if t != main_tid and b > 0), reverse=True)
    per_thread = ", ".join(
        [f"event loop {busy[main_tid] / args.requests * 1e6:.1f}"] + [f"{b / args.requests * 1e6:.1f}" for b in others]
    )
    print(
        f"{args.payload} {'stub model' if args.stub_model else 'real model'} "
        f"{'fast path' if args.fast_path else 'ASGI path'}: {args.requests / elapsed:,.0f} req/s, "
        f"CPU {cpu / args.requests * 1e6:.1f} µs per request (by thread: {per_thread}); statuses "
        f"{ {k.decode(): v for k, v in load.statuses.items()} }"
    )
    await lifespan.shutdown()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("payload", choices=["binary", "json"], nargs="?", default="binary")
    parser.add_argument("--stub-model", action="store_true", help="the forward pass returns zeros at once")
    parser.add_argument("--fast-path", default=True, type=lambda v: v.lower() in ("1", "true", "yes"))
    parser.add_argument("--requests", type=int, default=60_000)
    parser.add_argument("--connections", type=int, default=128)
    args = parser.parse_args(argv)
    if args.stub_model:
        from modelserve.engine import Engine

        def stub(self: Engine, inputs: Sequence[Any]) -> list[Any]:
            return [np.zeros((inputs[0].shape[0], 10), np.float32)]

        Engine.predict = stub  # type: ignore[method-assign]
    import uvloop

    uvloop.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
