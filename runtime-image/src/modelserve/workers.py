"""`--workers N`: N server processes on one port (docs/runtime.md, "Worker processes").

One server process handles HTTP, decoding and encoding on one event loop thread, so a model that needs little time
per request (a small model on a GPU) leaves the process CPU-bound long before the device is busy. With
`--workers N` the `modelserve serve` process becomes a supervisor: it starts N worker processes, each a whole
server with its own copy of the model, its own batcher and its own event loop, listening on the same port with
SO_REUSEPORT, so the kernel spreads new connections over them.

- A worker listens only once its model is loaded and warmed up, so a connection never reaches a worker that cannot
  answer it, at start-up or after a restart. The pod is live and ready once the first worker is.
- The supervisor holds the port from the start (bound, never listening: such a socket receives no connections), so
  a port already in use fails at once with a clear message, and `--port 0` picks one port for all workers.
- SIGTERM and SIGINT go to every worker, which drains as a single server does (lifecycle.py); the supervisor exits
  once all have, with 0 if all exited 0.
- A worker that exits on its own after it has served is restarted, with a delay that doubles from 1 s to 30 s
  while restarts keep failing. One whose device fails (a sticky CUDA error) exits so that its restart gets a fresh
  CUDA context: the other workers keep serving, where a single server can only fail liveness. A worker that exits
  before it has ever served (the model cannot be loaded) stops all the others, and the supervisor exits with its
  code, as a single server would.
- A worker that stops answering without exiting (its event loop blocked, a deadlock) stops writing its metrics file
  (below), which it does every second from that loop; once the file has not changed for `--worker-stall-seconds`
  the supervisor kills the worker, which is then restarted like any worker that exited after it served. A single
  server leaves this to the liveness probe, which cannot find one stuck worker among several: the kernel would keep
  sending it its share of the connections.
- A worker that has not started serving `--worker-start-seconds` after it was started (its model load hangs: a
  stuck read from a network volume, a device that never initialises) is killed and restarted in the same way,
  whether it is a first start or a restart: the others keep serving meanwhile. The default, 600 s, is the budget
  of the startup probe the operator gives the pod.
- Metrics: each worker writes its numbers (metrics.Metrics.snapshot) to a file in a directory the supervisor makes
  under $TMPDIR, every second and when it stops; /metrics, whichever worker answers it, adds the other workers'
  files to its own numbers, so a scrape sees the whole pod, up to one second behind for the other workers.
  Counters and histograms of a worker that exited stay in the sums; gauges count only live workers.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

log = logging.getLogger(__name__)

# Set by the supervisor in each worker's environment (not flags: a user never sets them).
ENV_INDEX = "MODELSERVE_WORKER_INDEX"
ENV_DIR = "MODELSERVE_WORKER_DIR"
PUBLISH_INTERVAL_S = 1.0
RESTART_DELAYS_S = (1.0, 2.0, 4.0, 8.0, 16.0, 30.0)
# A worker that ran this long before exiting starts its restarts from the first delay again.
STABLE_AFTER_S = 60.0
# How long a serving worker may leave its metrics file unchanged before it counts as stuck (--worker-stall-seconds).
STALL_AFTER_S = 30.0
# How long a worker may take from its start to serving (loading and warming up its model): --worker-start-seconds.
START_WITHIN_S = 600.0
# The exit code of a worker whose device failed (sysexits' EX_SOFTWARE): restarted, not a start-up failure.
EXIT_DEVICE_FAILED = 70


def metrics_file(directory: Path, pid: int) -> Path:
    """The metrics file of worker process `pid`: it exists once that worker serves (see the module's docstring)."""
    return directory / f"metrics-{pid}.json"


@dataclass(frozen=True, slots=True)
class Worker:
    """What a worker process knows of its place among the workers (from the supervisor's environment)."""

    index: int
    directory: Path

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Worker | None:
        index, directory = env.get(ENV_INDEX), env.get(ENV_DIR)
        if index is None or directory is None:
            return None
        return cls(int(index), Path(directory))

    def metrics_file(self, pid: int | None = None) -> Path:
        return metrics_file(self.directory, os.getpid() if pid is None else pid)

    def publish(self, snapshot: Mapping[str, Any]) -> None:
        """Write this worker's metrics snapshot for the others (atomically: a reader never sees half a file)."""
        path = self.metrics_file()
        partial = path.with_suffix(".partial")
        try:
            partial.write_bytes(json.dumps({"pid": os.getpid(), **snapshot}).encode())
            partial.replace(path)
        except OSError as exc:  # a full or vanished directory costs the other workers' view, not the server
            log.warning("Cannot write the metrics snapshot %s: %s", path, exc)
            # The supervisor reads a file that stops changing as a stuck worker: a full disk must not look like one.
            with contextlib.suppress(OSError):
                os.utime(path)

    def peers(self) -> list[tuple[bool, Mapping[str, Any]]]:
        """The other workers' last snapshots, each with whether its process is alive."""
        found: list[tuple[int, Mapping[str, Any]]] = []
        own = self.metrics_file().name
        for path in sorted(self.directory.glob("metrics-*.json")):
            if path.name == own:
                continue
            try:
                snapshot = json.loads(path.read_bytes())
                found.append((int(snapshot["pid"]), snapshot))
            except (OSError, ValueError, KeyError, TypeError):
                continue  # removed meanwhile, or not ours
        # The supervisor writes the exited workers' file, naming the worker it folded in, before it removes that
        # worker's own file: whichever of the two a reader saw, the worker counts once.
        folded = {pid for _, snapshot in found for pid in snapshot.get("folded", ())}
        return [(_alive(pid), snapshot) for pid, snapshot in found if pid not in folded]


def fold(total: Mapping[str, Any], snapshot: Mapping[str, Any]) -> dict[str, Any]:
    """`total` plus an exited worker's counters and histograms, as one snapshot of a process that is not alive (pid
    -1): the supervisor keeps one such file rather than one per exited worker, so restarts do not pile up files for
    every scrape to read. Gauges are dropped: those of exited workers never count."""
    families: dict[str, dict[tuple[str, ...], list[Any]]] = {}
    kinds = {**total.get("kinds", {}), **snapshot.get("kinds", {})}
    for source in (total, snapshot):
        for name, entries in source.get("families", {}).items():
            series = families.setdefault(name, {})
            for entry in entries:
                labels = tuple(entry[0])
                if len(entry) == 3:  # a histogram: [labels, bucket counts, sum]
                    have = series.get(labels)
                    if have is None:
                        series[labels] = [list(labels), list(entry[1]), entry[2]]
                    elif len(have[1]) == len(entry[1]):
                        have[1] = [a + b for a, b in zip(have[1], entry[1], strict=True)]
                        have[2] += entry[2]
                elif kinds.get(name) == "counter":
                    have = series.setdefault(labels, [list(labels), 0.0])
                    have[1] += entry[1]
    folded = [*total.get("folded", ()), snapshot.get("pid")]
    return {
        "pid": -1,
        "folded": folded,
        "kinds": kinds,
        "families": {name: list(series.values()) for name, series in families.items()},
        "gpu": {},
    }


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A worker that exited but is not reaped yet is a zombie: its snapshot no longer counts as live.
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return True


def bind(host: str, port: int) -> socket.socket:
    """A TCP socket bound to host:port with SO_REUSEPORT, not yet listening (uvicorn listens on it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    sock.set_inheritable(False)
    return sock


def worker_argv(argv: Sequence[str], port: int, torch_threads: int) -> list[str]:
    """A worker's command line: the supervisor's own, on the port the supervisor holds, with the torch threads
    set when the supervisor's were left to the default (one per two cores, shared among the workers)."""
    out = [*argv, "--port", str(port)]
    if torch_threads:
        out += ["--torch-threads", str(torch_threads)]
    return out


def threads_per_worker(configured: int, workers: int, cpus: int) -> int:
    """`--torch-threads 0` (one per two cores) divided among the workers; 0 keeps an explicit setting."""
    return 0 if configured else max(1, cpus // 2 // workers)


class Supervisor:
    def __init__(
        self,
        argv: Sequence[str],
        workers: int,
        host: str,
        port: int,
        torch_threads: int,
        stall_seconds: float = STALL_AFTER_S,
        start_seconds: float = START_WITHIN_S,
    ) -> None:
        self.argv = list(argv)
        self.count = workers
        self.host = host
        self.port = port
        self.torch_threads = torch_threads
        self.stall_seconds = stall_seconds
        self.start_seconds = start_seconds
        # Per worker index: (pid, what its metrics file looked like, monotonic time when that was first seen).
        self.last_publish: dict[int, tuple[int, tuple[int, int, int], float]] = {}
        self.killed: dict[int, str] = {}  # pid -> why the supervisor killed it (stuck, or not serving in time)
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.started_at: dict[int, float] = {}
        self.failures: dict[int, int] = {}
        self.restart_at: dict[int, float] = {}
        self.stopping = False
        self.exit_code = 0
        self.directory = Path(tempfile.mkdtemp(prefix="modelserve-workers-"))

    def spawn(self, index: int) -> None:
        env = {**os.environ, ENV_INDEX: str(index), ENV_DIR: str(self.directory)}
        argv = worker_argv(self.argv, self.port, self.torch_threads)
        proc = subprocess.Popen([sys.executable, "-m", "modelserve", *argv], env=env)
        self.procs[index] = proc
        self.started_at[index] = time.monotonic()
        log.info("Worker %d started (pid %d)", index, proc.pid)

    def signal_all(self, signum: int) -> None:
        for proc in self.procs.values():
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signum)

    def on_signal(self, signum: int, frame: FrameType | None = None) -> None:
        if not self.stopping:
            log.info("Received %s: stopping the workers", signal.Signals(signum).name)
        self.stopping = True
        self.restart_at.clear()
        self.signal_all(signum)

    def _archive(self, path: Path) -> None:
        """Fold an exited worker's metrics file into the one file of all exited workers (see `fold`)."""
        archive = self.directory / "metrics-exited.json"
        try:
            total = json.loads(archive.read_bytes()) if archive.exists() else {}
            folded = fold(total, json.loads(path.read_bytes()))
            partial = archive.with_suffix(".partial")
            partial.write_bytes(json.dumps(folded).encode())
            partial.replace(archive)
            path.unlink()
        except (OSError, ValueError, TypeError, IndexError) as exc:  # the file stays, and counts as it is
            log.warning("Cannot fold %s into %s: %s", path, archive, exc)

    def check_stuck(self, now: float) -> None:
        """Kill each serving worker whose metrics file has not changed for `stall_seconds`, and each worker that
        has no metrics file yet `start_seconds` after it was started (see the module's docstring). Change, not
        age, is what counts, on the monotonic clock: a wall-clock step kills nothing."""
        if self.stopping:
            return
        for index, proc in self.procs.items():
            if proc.pid in self.killed:
                continue
            try:
                stat = metrics_file(self.directory, proc.pid).stat()
            except OSError:  # not serving yet (still loading its model)
                started = self.started_at.get(index)
                if self.start_seconds and started is not None and now - started >= self.start_seconds:
                    self._kill(
                        index,
                        proc,
                        f"not serving within {self.start_seconds:.0f}s",
                        f"has not started serving {now - started:.0f}s after it started (its model load hangs?)",
                    )
                continue
            if not self.stall_seconds:
                continue
            seen = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
            last = self.last_publish.get(index)
            if last is None or last[0] != proc.pid or last[1] != seen:
                self.last_publish[index] = (proc.pid, seen, now)
            elif now - last[2] >= self.stall_seconds:
                self._kill(index, proc, "stuck", f"has not published its metrics for {now - last[2]:.0f}s: it is stuck")

    def _kill(self, index: int, proc: subprocess.Popen[bytes], reason: str, what: str) -> None:
        """SIGKILL a worker the supervisor gave up on, once; `_reap` restarts it, logging `reason`."""
        log.error("Worker %d (pid %d) %s; killing it", index, proc.pid, what)
        self.killed[proc.pid] = reason
        with contextlib.suppress(ProcessLookupError):
            proc.kill()

    def _reap(self, index: int, proc: subprocess.Popen[bytes], code: int) -> None:
        del self.procs[index]
        self.last_publish.pop(index, None)
        killed = self.killed.pop(proc.pid, None)
        path = metrics_file(self.directory, proc.pid)
        served = path.exists()
        if served:
            self._archive(path)
        if self.stopping:
            if code and not self.exit_code:
                self.exit_code = code
            return
        if not served and killed is None:
            log.error("Worker %d (pid %d) exited with %d before it served; stopping", index, proc.pid, code)
            self.exit_code = code or 1
            self.stopping = True
            self.restart_at.clear()
            self.signal_all(signal.SIGTERM)
            return
        lived = time.monotonic() - self.started_at[index]
        failures = 0 if lived >= STABLE_AFTER_S else self.failures.get(index, 0)
        delay = RESTART_DELAYS_S[min(failures, len(RESTART_DELAYS_S) - 1)]
        self.failures[index] = failures + 1
        if killed is not None:
            reason = killed
        else:
            reason = "its device failed" if code == EXIT_DEVICE_FAILED else f"exit code {code}"
        log.warning("Worker %d (pid %d) stopped (%s); restarting it in %.0fs", index, proc.pid, reason, delay)
        self.restart_at[index] = time.monotonic() + delay

    def run(self, early_signals: list[int]) -> int:
        previous = {sig: signal.signal(sig, self.on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            for index in range(self.count):
                self.spawn(index)
            while early_signals:
                self.on_signal(early_signals.pop(0))
            while self.procs or self.restart_at:
                for index, proc in list(self.procs.items()):
                    code = proc.poll()
                    if code is not None:
                        self._reap(index, proc, code)
                now = time.monotonic()
                self.check_stuck(now)
                for index, due in list(self.restart_at.items()):
                    if due <= now:
                        del self.restart_at[index]
                        self.spawn(index)
                time.sleep(0.05)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            for proc in self.procs.values():  # only after an error in this loop
                proc.kill()
            shutil.rmtree(self.directory, ignore_errors=True)
        return self.exit_code


def supervise(argv: Sequence[str], workers: int, host: str, port: int, torch_threads: int,
              early_signals: list[int], stall_seconds: float = STALL_AFTER_S,
              start_seconds: float = START_WITHIN_S) -> int:  # fmt: skip
    """Run `workers` server processes on host:port (see the module's docstring); the supervisor's exit code."""
    try:
        guard = bind(host, port)
    except OSError as exc:
        log.error("Cannot listen on %s:%d: %s", host, port, exc)
        return 1
    with guard:
        port = guard.getsockname()[1]
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 2)
        threads = threads_per_worker(torch_threads, workers, cpus)
        log.info("Starting %d workers on %s:%d", workers, host, port)
        return Supervisor(argv, workers, host, port, threads, stall_seconds, start_seconds).run(early_signals)
