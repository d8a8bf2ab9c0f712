"""Benchmark: raw forward vs modelserve vs KServe on one TorchScript MLP (256-1024-1024-10).

Same machine, one run, the same load generator (wrk with a Lua POST script, pinned to its own CPUs) and the
same concurrencies. Every server runs with one torch thread, like the raw forward. On the CPU (the 2-core
machine), two layouts: "core1" pins the server to core 1 alone, so HTTP handling and the forward pass share one
core; "cores01" lets it use both cores, sharing core 0 with wrk, so HTTP handling can run beside the forward pass
(as it does beside a GPU). The raw forward runs on core 1 alone.
With `--device cuda` (a GPU machine) the model runs on the GPU in every server and in the raw forward, which
copies its input to the device and the answer back as a server must; layout "gpu" gives each server CPUs 2-5
(a pod's few cores beside its GPU) and wrk CPUs 8-11, and "modelserve-fp16" adds the server in half precision.
"modelserve" is the server as the image ships it, its request path compiled with mypyc (`make native`);
"modelserve-py" is the same code interpreted, and "modelserve-asgi" the compiled server without its fast path.
"modelserve-b1" is the compiled server with batching off (--max-batch-size 1); `--hidden 16384` widens the MLP so
that on a GPU the forward pass, not HTTP, is the limit (docs/runtime.md, "A model the GPU has to work for").
Usage: python runtime-image/bench/bench.py --kserve-python .venv-kserve/bin/python [--seconds 5]
       python runtime-image/bench/bench.py --device cuda --layouts gpu --kserve-python python3
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[2]
WORK = ROOT / ".bench"
CONCURRENCY = (1, 8, 32, 128)
RAW_CPU = "1"  # the raw forward's CPU on the CPU layouts
LAYOUTS = {"core1": ("1", "0"), "cores01": ("0,1", "0"), "gpu": ("2-5", "8-11")}  # name -> (server, wrk) CPUs

LUA = """
wrk.method = "POST"
local f = io.open("{body}", "rb")
wrk.body = f:read("*all")
f:close()
{headers}
"""


def build_model(hidden: int = 1024) -> Path:
    from modelserve.testing import build_torchscript

    return build_torchscript(WORK / ("model" if hidden == 1024 else f"model-h{hidden}"), 256, hidden, 10)


def cpu_set(cpus: str) -> set[int]:
    """taskset's list syntax ("0,1", "2-5") as a set."""
    out: set[int] = set()
    for part in cpus.split(","):
        first, _, last = part.partition("-")
        out.update(range(int(first), int(last or first) + 1))
    return out


def raw_forward(
    path: Path, seconds: float, device: str, cpus: str, batches: tuple[int, ...] = (1, 32)
) -> dict[str, dict[str, float]]:
    """The limit: in-process forward on the server's CPU, one torch thread. On a GPU each call copies its input
    from host memory to the device and the answer back (as a server must), and waits for it."""
    import torch

    os.sched_setaffinity(0, cpu_set(cpus))
    torch.set_num_threads(1)
    model = torch.jit.load(str(path), map_location=device).eval()
    dev = torch.device(device)

    def forward(x: torch.Tensor) -> None:
        model(x.to(dev)).cpu() if dev.type == "cuda" else model(x)

    results = {}
    for batch in batches:
        x = torch.randn(batch, 256)
        lat = []
        with torch.inference_mode():
            # Warm up: 50 calls on the CPU; on a GPU a full second too, so its clocks leave idle before timing.
            warm_until = time.perf_counter() + (1.0 if dev.type == "cuda" else 0.0)
            for i in itertools.count():
                forward(x)
                if i >= 50 and time.perf_counter() >= warm_until:
                    break
            end = time.perf_counter() + seconds
            while time.perf_counter() < end:
                t = time.perf_counter()
                forward(x)
                lat.append(time.perf_counter() - t)
        total = sum(lat)
        results[f"batch{batch}"] = {
            "throughput": len(lat) * batch / total,
            "p50_ms": statistics.median(lat) * 1000,
            "p99_ms": float(np.percentile(lat, 99)) * 1000,
        }
    os.sched_setaffinity(0, set(range(os.cpu_count() or 2)))
    return results


def write_bodies() -> dict[str, tuple[Path, dict[str, str]]]:
    """The request body of each payload, written to a file for wrk, and its headers."""
    x = np.random.default_rng(0).standard_normal((1, 256)).astype(np.float32)
    json_body = json.dumps(
        {"inputs": [{"name": "input", "shape": [1, 256], "datatype": "FP32", "data": x.ravel().tolist()}]}
    ).encode()
    header = json.dumps(
        {
            "inputs": [
                {"name": "input", "shape": [1, 256], "datatype": "FP32", "parameters": {"binary_data_size": x.nbytes}}
            ],
            "parameters": {"binary_data_output": True},
        }
    ).encode()
    (WORK / "body.json").write_bytes(json_body)
    (WORK / "body.bin").write_bytes(header + x.tobytes())
    return {
        "json": (WORK / "body.json", {"Content-Type": "application/json"}),
        "binary": (
            WORK / "body.bin",
            {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(header))},
        ),
    }


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} not ready")


def wrk(url: str, lua: Path, conc: int, seconds: float, cpus: str) -> dict[str, float]:
    threads = 1 if conc < 4 else min(conc, max(2, len(cpu_set(cpus))))
    cmd = [
        "taskset",
        "-c",
        cpus,
        "wrk",
        f"-t{threads}",
        f"-c{conc}",
        f"-d{max(1, round(seconds))}s",
        "--latency",
        "-s",
        str(lua),
        url,
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    pct = {m[0]: _ms(m[1]) for m in re.findall(r"^\s+(50|99)%\s+(\S+)", out, re.M)}
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: (.*)", out)
    return {
        "rps": rps,
        "p50_ms": pct.get("50", float("nan")),
        "p99_ms": pct.get("99", float("nan")),
        "errors": int(errors.group(1)) if errors else 0,
        "socket_errors": sock.group(1) if sock else "",  # type: ignore[dict-item]
    }


def _ms(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(\w+)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def run_server(
    name: str, cmd: list[str], port: int, bodies: dict[str, tuple[Path, dict[str, str]]], seconds: float,
    cpus: tuple[str, str], env: dict[str, str] | None = None, limit: Callable[[], float] | None = None,
) -> dict[str, dict[int, dict[str, float]]]:  # fmt: skip
    """wrk at each concurrency against one server. With `limit` (the raw batch-32 forward's samples/s, measured
    while the server idles), the c=128 result also holds the mean of that limit just before and just after it
    ("raw_batch32_adjacent"): this machine's speed drifts over minutes, and the ratio to the limit should not."""
    log = (WORK / f"{name}.log").open("wb")
    server_cpus, client_cpus = cpus
    proc = subprocess.Popen(["taskset", "-c", server_cpus, *cmd], stdout=log, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    results: dict[str, dict[int, dict[str, float]]] = {}
    try:
        wait_ready(f"{base}/v2/health/ready", proc)
        wait_ready(f"{base}/v2/models/mlp/ready", proc)
        for payload, (body, headers) in bodies.items():
            lua = WORK / f"{payload}.lua"
            lua_headers = "\n".join(f'wrk.headers["{key}"] = "{value}"' for key, value in headers.items())
            lua.write_text(LUA.format(body=body, headers=lua_headers))
            url = f"{base}/v2/models/mlp/infer"
            check = httpx.post(url, content=body.read_bytes(), headers=headers, timeout=30)
            if check.status_code != 200:
                print(f"{name} {payload}: HTTP {check.status_code} {check.text[:300]}; skipped", file=sys.stderr)
                continue
            results[payload] = {}
            wrk(url, lua, 8, 1, client_cpus)  # warm-up
            for conc in CONCURRENCY:
                before = limit() if limit is not None and conc == 128 else None
                results[payload][conc] = wrk(url, lua, conc, seconds, client_cpus)
                if limit is not None and before is not None:
                    results[payload][conc]["raw_batch32_adjacent"] = (before + limit()) / 2
                print(name, payload, conc, results[payload][conc], file=sys.stderr)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kserve-python", default=str(ROOT / ".venv-kserve/bin/python"))
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument(
        "--servers",
        default="modelserve,modelserve-py,modelserve-asgi,kserve",
        help="comma-separated subset of the servers to run",
    )
    parser.add_argument(
        "--native-dir",
        default=str(ROOT / ".build/native"),
        help="the mypyc-compiled build (make native) that 'modelserve' runs, as the image ships it; "
        "'modelserve-py' runs the pure-Python install",
    )
    parser.add_argument(
        "--layouts",
        default=None,
        help=f"comma-separated CPU layouts, of {', '.join(LAYOUTS)} (default: core1,cores01 "
        "on the CPU, gpu with --device cuda)",
    )
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where every server runs the model")
    parser.add_argument(
        "--hidden",
        type=int,
        default=1024,
        help="width of the MLP's two hidden layers (256-H-H-10); a wide one makes the forward pass, not HTTP, the "
        "limit on a GPU (add 'modelserve-b1', the server with batching off, to --servers to see what batching is "
        "worth there)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=0,
        help="N > 1 adds 'modelserve-wN' and 'modelserve-py-wN' (name them in --servers): the same servers with "
        "--workers N",
    )
    args = parser.parse_args()
    layouts = [n.strip() for n in (args.layouts or ("gpu" if args.device == "cuda" else "core1,cores01")).split(",")]
    available = os.sched_getaffinity(0)
    for layout in layouts:
        missing = set().union(*map(cpu_set, LAYOUTS[layout])) - available
        if missing:
            sys.exit(f"layout {layout} needs CPUs {sorted(missing)}, which this machine does not have")
    WORK.mkdir(exist_ok=True)
    model = build_model(args.hidden)
    bodies = write_bodies()
    raw_cpus = LAYOUTS["gpu"][0] if args.device == "cuda" else RAW_CPU
    raw = raw_forward(model, 3.0, args.device, raw_cpus)
    servers = {
        "modelserve": [
            sys.executable,
            "-m",
            "modelserve",
            "serve",
            "--model-dir",
            str(model.parent),
            "--model-name",
            "mlp",
            "--port",
            "18080",
            "--host",
            "127.0.0.1",
            "--torch-threads",
            "1",
            "--drain-seconds",
            "0",
            "--log-level",
            "warning",
            "--device",
            args.device,
        ],
        "kserve": [
            args.kserve_python,
            str(Path(__file__).parent / "kserve_server.py"),
            str(model),
            "18081",
            args.device,
        ],
    }
    # The same server with uvicorn's own protocol: what the fast path (docs/runtime.md) is worth.
    servers["modelserve-asgi"] = [*servers["modelserve"], "--fast-path", "false", "--port", "18082"]
    # The same server, pure Python: what compiling the request path is worth.
    servers["modelserve-py"] = [*servers["modelserve"], "--port", "18083"]
    # On a GPU: the compiled server with the model in float16.
    servers["modelserve-fp16"] = [*servers["modelserve"], "--half-precision", "true", "--port", "18084"]
    # The compiled server with batching off: each request its own forward pass.
    servers["modelserve-b1"] = [*servers["modelserve"], "--max-batch-size", "1", "--port", "18087"]
    ports = {
        "modelserve-b1": 18087,
        "modelserve": 18080,
        "kserve": 18081,
        "modelserve-asgi": 18082,
        "modelserve-py": 18083,
        "modelserve-fp16": 18084,
    }
    if args.workers > 1:  # N processes on one port (docs/runtime.md, "Worker processes")
        for offset, base in enumerate(("modelserve", "modelserve-py")):
            name, port = f"{base}-w{args.workers}", 18085 + offset
            servers[name] = [*servers[base], "--workers", str(args.workers), "--port", str(port)]
            ports[name] = port
    pythonpath = os.pathsep.join(p for p in (args.native_dir, os.environ.get("PYTHONPATH")) if p)
    native_env = {**os.environ, "PYTHONPATH": pythonpath}
    envs = {name: native_env for name in ("modelserve", "modelserve-asgi", "modelserve-fp16", "modelserve-b1")}
    envs[f"modelserve-w{args.workers}"] = native_env
    check = "import modelserve; print(','.join(modelserve.compiled_modules()) or 'none')"
    wanted = [name.strip() for name in args.servers.split(",") if name.strip()]
    if args.device != "cuda":
        wanted = [name for name in wanted if name != "modelserve-fp16"]
    for name in [n for n in ("modelserve", "modelserve-py") if n in wanted]:
        compiled = subprocess.run(
            [sys.executable, "-c", check], env=envs.get(name), capture_output=True, text=True, check=True
        ).stdout.strip()
        print(f"{name}: compiled request-path modules: {compiled}", file=sys.stderr)
        if (compiled == "none") != (name == "modelserve-py"):
            sys.exit(f"{name} should {'not ' if name == 'modelserve-py' else ''}run compiled; see `make native`")
    results: dict[str, dict[str, dict[str, dict[int, dict[str, float]]]]] = {}

    def limit() -> float:
        return raw_forward(model, 2.0, args.device, raw_cpus, batches=(32,))["batch32"]["throughput"]

    for layout in layouts:
        # The ASGI path only shows what the fast path is worth: one layout is enough.
        names = [n for n in wanted if n != "modelserve-asgi" or layout == layouts[0]]
        results[layout] = {
            name: run_server(
                f"{name}-{layout}",
                servers[name],
                ports[name],
                bodies,
                args.seconds,
                LAYOUTS[layout],
                envs.get(name),
                limit if name == "modelserve" else None,
            )
            for name in names
        }
    # This machine's speed drifts over minutes: the limit is measured before and after the servers, and the
    # ratios use the mean of the two.
    raw_after = raw_forward(model, 3.0, args.device, raw_cpus)
    (WORK / "results.json").write_text(
        json.dumps({"device": args.device, "raw": raw, "raw_after": raw_after, "layouts": results}, indent=2)
    )
    print(f"\nRaw in-process forward (device {args.device}, CPU {raw_cpus}, one torch thread), before and after:")
    for key in raw:
        for when, r in (("before", raw[key]), ("after", raw_after[key])):
            print(
                f"  {key:8} {when:6} {r['throughput']:10.0f} samples/s   p50 {r['p50_ms']:.3f} ms   "
                f"p99 {r['p99_ms']:.3f} ms"
            )
    raw = {key: {m: (raw[key][m] + raw_after[key][m]) / 2 for m in ("throughput", "p50_ms", "p99_ms")} for key in raw}
    for layout, by_server in results.items():
        print(f"\n=== layout {layout}: servers on CPU {LAYOUTS[layout][0]}, wrk on CPU {LAYOUTS[layout][1]} ===")
        report(raw, by_server)


def report(raw: dict[str, dict[str, float]], results: dict[str, dict[str, dict[int, dict[str, float]]]]) -> None:
    print(f"{'server':15} {'payload':7} {'conc':>4} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>7}")
    for name, by_payload in results.items():
        for payload, by_conc in by_payload.items():
            for conc, r in by_conc.items():
                row = f"{name:15} {payload:7} {conc:>4} {r['rps']:9.0f} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f}"
                print(f"{row} {r['errors']:7}")
    ms, ks = results.get("modelserve", {}), results.get("kserve", {})
    print("\nRatios:")
    for payload in ("json", "binary"):
        if payload in ms and payload in ks:
            for conc in CONCURRENCY:
                m, k = ms[payload][conc], ks[payload][conc]
                print(
                    f"  {payload:6} c={conc:<3} modelserve/kserve throughput {m['rps'] / k['rps']:.2f}x, "
                    f"p99 {m['p99_ms']:.2f} vs {k['p99_ms']:.2f} ms"
                )
    # What one difference from the shipped server is worth: its throughput over that of the server without it.
    comparisons = {"modelserve-asgi": "fast path / ASGI path", "modelserve-b1": "batching on / off",
                   "modelserve-py": "compiled / pure-Python"}  # fmt: skip
    for other, label in comparisons.items():
        without = results.get(other, {})
        for payload in ("json", "binary"):
            if payload in ms and payload in without:
                ratios = (ms[payload][c]["rps"] / without[payload][c]["rps"] for c in CONCURRENCY)
                gains = ", ".join(f"c={c} {ratio:.2f}x" for c, ratio in zip(CONCURRENCY, ratios, strict=True))
                print(f"  {payload:6} {label} throughput: {gains}")
    if "json" in ms:
        added = ms["json"][1]["p50_ms"] - raw["batch1"]["p50_ms"]
        print(f"  c=1 JSON p50 added over raw forward: {added:.3f} ms (target <= 1 ms)")
        for payload in ("json", "binary"):
            if payload in ms:
                r = ms[payload][128]
                share = r["rps"] / raw["batch32"]["throughput"]
                print(f"  c=128 {payload} throughput vs raw batch-32 forward (mean): {share:.0%} (target >= 50%)")
                if "raw_batch32_adjacent" in r:
                    near = r["raw_batch32_adjacent"]
                    print(
                        f"  c=128 {payload} throughput vs raw batch-32 forward just before and after that run "
                        f"({near:.0f} samples/s): {r['rps'] / near:.0%}"
                    )


if __name__ == "__main__":
    main()
