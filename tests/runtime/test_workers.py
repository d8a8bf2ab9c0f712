"""`--workers N` (modelserve.workers): metrics summed over the worker processes, the supervisor's decisions, and
real supervisor and worker processes serving, restarting, draining and failing."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelserve.lifecycle import Lifecycle, Phase
from modelserve.metrics import OUTCOMES, PROTOCOLS, STAGES, Metrics
from modelserve.testing import free_socket
from modelserve.workers import (
    ENV_DIR,
    ENV_INDEX,
    EXIT_DEVICE_FAILED,
    RESTART_DELAYS_S,
    STABLE_AFTER_S,
    STALL_AFTER_S,
    START_WITHIN_S,
    Supervisor,
    Worker,
    _alive,
    fold,
    threads_per_worker,
    worker_argv,
)

from .conftest import keep_sending, metric, serve_subprocess, v2_body

# --- metrics over several workers -------------------------------------------------------------------------------

seconds = st.floats(min_value=0, max_value=100, allow_nan=False)
events = st.lists(
    st.tuples(st.just("record"), st.sampled_from(PROTOCOLS), st.sampled_from(OUTCOMES), seconds)
    | st.tuples(st.just("stage"), st.sampled_from(STAGES), seconds)
    | st.tuples(st.just("batch"), st.integers(1, 600))
    | st.tuples(st.just("inflight"), st.integers(-3, 3)),
    max_size=40,
)


def _apply(metrics: Metrics, script: list[tuple[Any, ...]]) -> None:
    for event in script:
        match event:
            case ("record", protocol, outcome, value):
                metrics.record(protocol, outcome, value)
            case ("stage", stage, value):
                metrics.stage[stage].observe(value)
            case ("batch", rows):
                metrics.batch.observe(rows)
            case ("inflight", change):
                metrics.inflight_gauge.inc(change)


def _samples(text: str) -> dict[str, float]:
    return {line.rpartition(" ")[0]: float(line.rpartition(" ")[2]) for line in text.splitlines() if line[:1] != "#"}


def _same(a: dict[str, float], b: dict[str, float]) -> bool:
    return a.keys() == b.keys() and all(math.isclose(a[k], b[k], rel_tol=1e-9, abs_tol=1e-9) for k in a)


@settings(max_examples=100, deadline=None)
@given(st.lists(events, min_size=1, max_size=4), st.lists(st.booleans(), min_size=4, max_size=4))
def test_a_scrape_of_any_worker_shows_what_one_process_fed_all_updates_would(
    scripts: list[list[tuple[Any, ...]]], alive: list[bool]
) -> None:
    """Worker 0 is scraped; the others' snapshots go through JSON as in the files. Counters and histograms sum
    over all workers, exited ones included; the in-flight gauge over the live ones only."""
    workers = [Metrics("mlp", "3") for _ in scripts]
    for metrics, script in zip(workers, scripts, strict=True):
        _apply(metrics, script)
    peers = [(alive[i], json.loads(json.dumps(m.snapshot()))) for i, m in enumerate(workers[1:], 1)]
    scraped = Metrics("mlp", "3", peers=lambda: peers)
    _apply(scraped, scripts[0])
    counted = Metrics("mlp", "3")  # one process given every update
    for script in scripts:
        _apply(counted, [e for e in script if e[0] != "inflight"])
    live = [e for i, s in enumerate(scripts) if i == 0 or alive[i] for e in s if e[0] == "inflight"]
    _apply(counted, live)
    assert _same(_samples(scraped.render().decode()), _samples(counted.render().decode()))


def test_gauges_of_exited_workers_drop_out_and_the_load_time_is_the_longest() -> None:
    own, live_peer, dead_peer = (Metrics("m", "1", gpu_memory=lambda: {"cuda:0": {"allocated": 10}}) for _ in "abc")
    own.load_seconds.set(2.0)
    live_peer.load_seconds.set(5.0)
    dead_peer.load_seconds.set(9.0)
    for m, depth in ((own, 1), (live_peer, 2), (dead_peer, 4)):
        m.depth.set(depth)
        m.record("v2", "success", 0.01)
    peers = [(True, live_peer.snapshot()), (False, dead_peer.snapshot())]
    scraped = Metrics("m", "1", gpu_memory=lambda: {"cuda:0": {"allocated": 10}}, peers=lambda: peers)
    scraped.load_seconds.set(2.0)
    scraped.depth.set(1)
    scraped.record("v2", "success", 0.01)
    text = scraped.render().decode()
    assert metric(text, 'modelserve_requests_total{model="m",outcome="success",protocol="v2",version="1"}') == 3
    assert metric(text, 'modelserve_queue_depth{model="m"}') == 3
    assert metric(text, 'modelserve_model_load_seconds{model="m",version="1"}') == 5.0
    assert metric(text, 'modelserve_gpu_memory_bytes{device="cuda:0",kind="allocated"}') == 20


def test_a_snapshot_with_other_buckets_is_left_out_not_mixed_in() -> None:
    peer = Metrics("m", "1")
    peer.batch.observe(4)
    snapshot = json.loads(json.dumps(peer.snapshot()))
    for entry in snapshot["families"]["modelserve_batch_size"]:
        entry[1] = entry[1][:-1]  # one bucket fewer: another server version's layout
    scraped = Metrics("m", "1", peers=lambda: [(True, snapshot)])
    text = scraped.render().decode()
    assert metric(text, 'modelserve_batch_size_count{model="m"}') == 0


def test_worker_files_round_trip_and_skip_what_is_not_a_snapshot(tmp_path: Path) -> None:
    worker = Worker(0, tmp_path)
    metrics = Metrics("m", "1")
    metrics.record("v1", "timeout", 1.0)
    worker.publish(metrics.snapshot())
    assert worker.metrics_file().exists() and not list(tmp_path.glob("*.partial"))
    assert worker.peers() == []  # its own file is not a peer
    (tmp_path / "metrics-1.json").write_text("{not json")
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    exited = int(child.stdout)
    (tmp_path / f"metrics-{exited}.json").write_text(json.dumps({"pid": exited, **metrics.snapshot()}))
    (tmp_path / "metrics-2.json").write_text(json.dumps({"pid": os.getppid(), **metrics.snapshot()}))
    peers = Worker(1, tmp_path).peers()  # in this process: the file written above is its own again
    assert sorted(alive for alive, _ in peers) == [False, True]  # the exited process's and the live parent's
    assert Worker.from_env({ENV_INDEX: "3", ENV_DIR: str(tmp_path)}) == Worker(3, tmp_path)
    assert Worker.from_env({ENV_INDEX: "3"}) is None


def test_exited_workers_fold_into_one_file_and_count_once_meanwhile(tmp_path: Path) -> None:
    a, b = Metrics("m", "1"), Metrics("m", "1")
    for m, n in ((a, 2), (b, 3)):
        for _ in range(n):
            m.record("v2", "success", 0.004)
        m.batch.observe(n)
        m.inflight_gauge.set(5)
    snap_a, snap_b = ({"pid": pid, **m.snapshot()} for pid, m in ((10**7 + 1, a), (10**7 + 2, b)))
    folded = fold(fold({}, snap_a), snap_b)
    assert folded["pid"] == -1 and folded["folded"] == [snap_a["pid"], snap_b["pid"]]
    scraped = Metrics("m", "1", peers=lambda: [(False, folded)])
    text = scraped.render().decode()
    assert metric(text, 'modelserve_requests_total{model="m",outcome="success",protocol="v2",version="1"}') == 5
    assert metric(text, 'modelserve_batch_size_count{model="m"}') == 2
    assert metric(text, 'modelserve_batch_size_sum{model="m"}') == 5
    assert folded["families"]["modelserve_inflight_requests"] == []  # gauges of exited workers are dropped
    # The supervisor writes the folded file before it removes the worker's own: a reader in between counts once.
    (tmp_path / "metrics-exited.json").write_text(json.dumps(folded))
    (tmp_path / f"metrics-{snap_b['pid']}.json").write_text(json.dumps(snap_b))
    peers = Worker(0, tmp_path).peers()
    assert [snapshot["pid"] for _, snapshot in peers] == [-1] and peers[0][0] is False


def _exercise(metrics: Metrics, data: st.DataObject) -> None:
    """Random numbers in every series of every family of ``metrics``, whatever its kind."""
    for family in metrics._families:
        labels = tuple(data.draw(st.sampled_from(["a", "b"])) for _ in family.labels)
        if family.kind == "histogram":
            for value in data.draw(st.lists(st.floats(0, 100, allow_nan=False), max_size=5)):
                family.distribution(*labels).observe(value)
        else:
            family.value(*labels).inc(data.draw(st.integers(0, 1000)))


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_a_folded_file_scrapes_as_the_exited_workers_did(data: st.DataObject) -> None:
    """Two places sum metrics: the scrape adds the workers' snapshots in (``metrics``), and the supervisor folds an
    exited worker's snapshot into one file (``workers.fold``). For every family the server has, of every kind,
    both must give the same numbers, so a new family or kind handled in one place only fails here."""
    exited = [Metrics("m", "1"), Metrics("m", "1")]
    for worker in exited:
        _exercise(worker, data)
    snaps = [{"pid": 10**7 + i, **worker.snapshot()} for i, worker in enumerate(exited)]
    apart = Metrics("m", "1", peers=lambda: [(False, snap) for snap in snaps])
    folded = fold(fold({}, snaps[0]), snaps[1])
    together = Metrics("m", "1", peers=lambda: [(False, folded)])
    assert together.render() == apart.render()


# --- the supervisor's decisions -------------------------------------------------------------------------------------


def test_worker_command_lines_and_threads() -> None:
    assert worker_argv(["serve", "--port", "0"], 8123, 0) == ["serve", "--port", "0", "--port", "8123"]
    assert worker_argv(["serve"], 8123, 2)[-2:] == ["--torch-threads", "2"]
    assert threads_per_worker(0, 4, 16) == 2  # one per two cores, shared
    assert threads_per_worker(0, 4, 4) == 1  # at least one
    assert threads_per_worker(3, 4, 16) == 0  # an explicit setting is kept (0: not overridden)


class _Proc:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.signals: list[int] = []

    def send_signal(self, signum: int) -> None:
        self.signals.append(signum)


@pytest.fixture
def supervisor(tmp_path: Path) -> Iterator[Supervisor]:
    sup = Supervisor(["serve"], 2, "127.0.0.1", 1, 0)
    sup.directory.rmdir()
    sup.directory = tmp_path
    yield sup


def _exit(sup: Supervisor, index: int, pid: int, code: int, served: bool, lived: float = 1.0) -> None:
    proc = _Proc(pid)
    sup.procs[index] = proc  # type: ignore[assignment]
    sup.started_at[index] = time.monotonic() - lived
    if served:
        (sup.directory / f"metrics-{pid}.json").write_text("{}")
    sup._reap(index, proc, code)  # type: ignore[arg-type]


def test_a_worker_that_served_is_restarted_with_a_growing_delay(supervisor: Supervisor) -> None:
    other = _Proc(99)
    supervisor.procs[1] = other  # type: ignore[assignment]
    delays = []
    for attempt in range(len(RESTART_DELAYS_S) + 1):
        _exit(supervisor, 0, 100 + attempt, EXIT_DEVICE_FAILED, served=True)
        delays.append(round(supervisor.restart_at.pop(0) - time.monotonic()))
    assert delays == [round(d) for d in (*RESTART_DELAYS_S, RESTART_DELAYS_S[-1])]
    _exit(supervisor, 0, 200, 1, served=True, lived=STABLE_AFTER_S + 1)  # ran a while: back to the first delay
    assert round(supervisor.restart_at[0] - time.monotonic()) == RESTART_DELAYS_S[0]
    assert not supervisor.stopping and supervisor.exit_code == 0 and other.signals == []


def test_a_worker_that_never_served_stops_all_with_its_code(supervisor: Supervisor) -> None:
    other = _Proc(99)
    supervisor.procs[1] = other  # type: ignore[assignment]
    supervisor.restart_at[1] = time.monotonic() + 5
    _exit(supervisor, 0, 100, 7, served=False)
    assert supervisor.stopping and supervisor.exit_code == 7
    assert other.signals == [signal.SIGTERM] and supervisor.restart_at == {}
    _exit(supervisor, 1, 99, 0, served=True)  # the others' exits after that change nothing
    assert supervisor.exit_code == 7 and supervisor.restart_at == {}


def test_after_a_stop_signal_exits_are_not_restarted(supervisor: Supervisor) -> None:
    procs = [_Proc(10), _Proc(11)]
    supervisor.procs = dict(enumerate(procs))  # type: ignore[arg-type]
    supervisor.on_signal(signal.SIGTERM)
    supervisor.on_signal(signal.SIGTERM)  # a second one is passed on too: it cuts the workers' drain short
    assert [p.signals for p in procs] == [[signal.SIGTERM] * 2] * 2
    _exit(supervisor, 0, 10, 0, served=True)
    _exit(supervisor, 1, 11, 0, served=True)
    assert supervisor.restart_at == {} and supervisor.exit_code == 0


class _Killable(_Proc):
    def __init__(self, pid: int) -> None:
        super().__init__(pid)
        self.kills = 0

    def kill(self) -> None:
        self.kills += 1


def test_a_worker_whose_metrics_file_stops_changing_is_killed_once_and_restarted(supervisor: Supervisor) -> None:
    assert supervisor.stall_seconds == STALL_AFTER_S
    stuck, busy, loading = _Killable(10), _Killable(11), _Killable(12)
    supervisor.procs = {0: stuck, 1: busy, 2: loading}  # type: ignore[dict-item]
    files = {p.pid: supervisor.directory / f"metrics-{p.pid}.json" for p in (stuck, busy)}
    t0 = 1000.0
    for step in range(40):  # one check a second; the busy worker publishes every second, the stuck one stops at 5
        for pid, path in files.items():
            if pid == busy.pid or step <= 5:
                path.write_text(json.dumps({"step": step}))
                os.utime(path, ns=(step * 10**9, step * 10**9))
        supervisor.check_stuck(t0 + step)
        # Killed once, when its file has been unchanged for the whole stall time (steps 5 .. 35), not before.
        assert stuck.kills == (1 if step >= 5 + STALL_AFTER_S else 0), step
    assert busy.kills == 0 and loading.kills == 0  # a worker with no file yet is loading, not stuck
    supervisor.started_at[0] = time.monotonic() - 40
    supervisor._reap(0, stuck, -signal.SIGKILL)  # type: ignore[arg-type]
    assert 0 in supervisor.restart_at and not supervisor.stopping and supervisor.killed == {}


def test_a_worker_that_does_not_start_serving_in_time_is_killed_once_and_restarted(
    supervisor: Supervisor, caplog: pytest.LogCaptureFixture
) -> None:
    assert supervisor.start_seconds == START_WITHIN_S == 600.0  # the operator's startup probe: 120 x 5 s
    supervisor.start_seconds = 20.0
    hung, slow, serving = _Killable(10), _Killable(11), _Killable(12)
    supervisor.procs = {0: hung, 1: slow, 2: serving}  # type: ignore[dict-item]
    t0 = 1000.0
    supervisor.started_at = {0: t0, 1: t0 + 5, 2: t0}
    for step in range(40):
        path = supervisor.directory / "metrics-12.json"  # serving all along, publishing every second
        path.write_text(json.dumps({"step": step}))
        os.utime(path, ns=(step * 10**9, step * 10**9))
        if step == 24:  # the slow one starts serving 19 s after its start, just in time
            (supervisor.directory / "metrics-11.json").write_text("{}")
        supervisor.check_stuck(t0 + step)
        # Killed once, at the first check a whole start time after it was started, not before.
        assert hung.kills == (1 if step >= 20 else 0), step
    assert slow.kills == 0 and serving.kills == 0
    assert "Worker 0 (pid 10) has not started serving 20s after it started" in caplog.text
    # Its exit is a restart, not a failed start-up that stops the others (a worker that exits with an error
    # before it served does that: the model cannot be loaded).
    supervisor._reap(0, hung, -signal.SIGKILL)  # type: ignore[arg-type]
    assert 0 in supervisor.restart_at and not supervisor.stopping and supervisor.killed == {}
    assert "Worker 0 (pid 10) stopped (not serving within 20s); restarting it" in caplog.text


def test_the_start_deadline_is_off_at_zero_and_while_stopping(supervisor: Supervisor) -> None:
    proc = _Killable(10)
    supervisor.procs, supervisor.started_at = {0: proc}, {0: 0.0}  # type: ignore[dict-item]
    supervisor.stopping = True  # a worker stopped while it loads exits on its own
    supervisor.check_stuck(START_WITHIN_S + 1)
    supervisor.stopping, supervisor.start_seconds = False, 0.0
    supervisor.check_stuck(10 * START_WITHIN_S)
    assert proc.kills == 0


def test_a_worker_that_cannot_write_its_snapshot_still_shows_it_is_alive(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    worker = Worker(0, tmp_path)
    worker.publish({"families": {}})
    before = worker.metrics_file().stat().st_mtime_ns
    time.sleep(0.01)

    def full(self: Path, data: bytes) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", full)
    worker.publish({"families": {}})
    assert worker.metrics_file().stat().st_mtime_ns > before  # what the supervisor watches changed


def test_stuck_workers_are_left_alone_when_stopping_or_when_turned_off(supervisor: Supervisor) -> None:
    proc = _Killable(10)
    supervisor.procs = {0: proc}  # type: ignore[dict-item]
    (supervisor.directory / "metrics-10.json").write_text("{}")
    supervisor.check_stuck(0.0)
    supervisor.stopping = True  # a draining worker may take its time: the drain has its own deadline
    supervisor.check_stuck(1000.0)
    supervisor.stopping, supervisor.stall_seconds = False, 0.0
    supervisor.check_stuck(2000.0)
    assert proc.kills == 0


class _Model:
    def __init__(self) -> None:
        self.metrics = Metrics("m", "1")
        self.batcher = None
        self.failed: str | None = None

    def failed_device(self) -> str | None:
        return self.failed


async def test_a_worker_whose_device_failed_asks_to_exit_for_a_restart(tmp_path: Path) -> None:
    from modelserve.app import WorkerPublisher

    exits: list[bool] = []
    life = Lifecycle(drain_seconds=0)
    life.request_exit = lambda: exits.append(True)
    life.mark_ready()
    model = _Model()
    publisher = WorkerPublisher(Worker(0, tmp_path), model, life)  # type: ignore[arg-type]
    assert Worker(0, tmp_path).metrics_file().exists() and not exits
    model.failed = "cuda:0"
    publisher.tick()
    publisher.stop()
    assert life.phase is Phase.FAILED and life.exit_code == EXIT_DEVICE_FAILED and exits == [True]


# --- real processes -------------------------------------------------------------------------------------------------


def _worker_files(tmp: Path) -> list[Path]:
    return sorted(tmp.glob("modelserve-workers-*/metrics-*.json"))


def _wait_for(predicate: Any, timeout: float = 60.0) -> Any:
    """The predicate's first true value, polled every 50 ms."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)
    return value


SUCCESSES = 'modelserve_requests_total{model="mlp",outcome="success",protocol="v2",version="1"}'


def _successes(snapshot_file: Path) -> float:
    families = json.loads(snapshot_file.read_text())["families"]
    return float(sum(e[1] for e in families["modelserve_requests"] if e[0][3] == "success"))


def test_two_workers_share_the_port_and_the_metrics(
    models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # where the supervisor makes the workers' directory
    with serve_subprocess(models["mlp"], "mlp", WORKERS="2") as (proc, base):
        _wait_for(lambda: len(_worker_files(tmp_path)) == 2)  # both listen once loaded
        sent: list[int] = []

        def client() -> None:  # one connection each: the kernel spreads connections, not requests
            with httpx.Client(base_url=base, timeout=10) as c:
                sent.extend(c.post("/v2/models/mlp/infer", json=v2_body()).status_code for _ in range(10))

        threads = [threading.Thread(target=client) for _ in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sent == [200] * 160
        time.sleep(1.5)  # every worker has published since
        per_worker = [_successes(f) for f in _worker_files(tmp_path)]
        assert sum(per_worker) == 160 and all(n > 0 for n in per_worker), per_worker
        for _ in range(4):  # whichever worker answers the scrape, it counts the whole server
            text = httpx.get(base + "/metrics").text
            assert metric(text, SUCCESSES) == 160

        # A worker killed outright is restarted; the server keeps its counts.
        victim = int(_worker_files(tmp_path)[0].name.split("-")[1].split(".")[0])
        os.kill(victim, signal.SIGKILL)
        exited = next(tmp_path.glob("modelserve-workers-*")) / "metrics-exited.json"
        _wait_for(lambda: exited.exists() and len(_worker_files(tmp_path)) == 3, timeout=30)  # folded; replaced
        assert json.loads(exited.read_text())["folded"] == [victim]
        with httpx.Client(base_url=base, timeout=10) as c:
            assert c.post("/v2/models/mlp/infer", json=v2_body()).status_code == 200
            text = c.get("/metrics").text
        assert metric(text, SUCCESSES) >= 160
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    assert not list(tmp_path.glob("modelserve-workers-*"))  # the supervisor cleans up


def test_sigterm_drains_every_worker_with_zero_failed_requests(
    models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    # Clients keep sending for the first half of the drain period (the time endpoints take to update), however
    # long the health checks below take on a loaded machine: the drain's end, not the clients', is what is tested.
    drain, send_for = 4.0, 2.0
    with serve_subprocess(models["mlp"], "mlp", WORKERS="2", DRAIN_SECONDS=str(drain)) as (proc, base):
        _wait_for(lambda: len(_worker_files(tmp_path)) == 2)
        with keep_sending(base, clients=6) as results:
            time.sleep(0.3)
            sent_before = len(results)
            proc.send_signal(signal.SIGTERM)
            stop_at = time.monotonic() + send_for
            time.sleep(0.1)
            for _ in range(4):  # every worker reports not-ready at once, and stays live
                assert httpx.get(base + "/v2/health/ready", timeout=2).status_code == 503
                assert httpx.get(base + "/v2/health/live", timeout=2).status_code == 200
            assert time.monotonic() < stop_at, "the health checks outlasted the clients' sending window"
            time.sleep(stop_at - time.monotonic())
        assert proc.wait(timeout=30) == 0
    assert sent_before > 0 and len(results) > sent_before
    assert [r for r in results if r != 200] == []


def _run(args: list[str], tmp_path: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TMPDIR": str(tmp_path), "MODELSERVE_LOG_LEVEL": "info"}
    cmd = [sys.executable, "-m", "modelserve", "serve", "--host", "127.0.0.1", "--drain-seconds", "0", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


def test_a_model_that_cannot_load_stops_the_server_with_its_exit_code(tmp_path: Path) -> None:
    (tmp_path / "model.pt").write_bytes(b"not a model")
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "workers").write_bytes(b"")
    (logs / "single").write_bytes(b"")
    args = ["--model-dir", str(tmp_path), "--model-name", "m", "--port", "0"]
    done = _run([*args, "--workers", "3", "--termination-log", str(logs / "workers")], tmp_path)
    single = _run([*args, "--termination-log", str(logs / "single")], tmp_path)
    assert done.returncode == single.returncode != 0, done.stderr[-2000:]
    assert "before it served; stopping" in done.stderr
    # The termination message is the worker's own load error, as a single server's, not the supervisor's.
    assert (logs / "single").read_text().startswith("Cannot load model m: ")
    assert (logs / "workers").read_text() == (logs / "single").read_text()
    assert not list(tmp_path.glob("modelserve-workers-*"))


def test_a_port_in_use_fails_at_once(models: dict[str, Path], tmp_path: Path) -> None:
    with free_socket() as busy:
        busy.listen()
        port = busy.getsockname()[1]
        done = _run(["--model-dir", str(models["mlp"]), "--model-name", "mlp", "--port", str(port), "--workers", "2"],
                    tmp_path, timeout=30)  # fmt: skip
    assert done.returncode == 1 and "Cannot listen on 127.0.0.1" in done.stderr, done.stderr[-2000:]
    assert "Worker 0 started" not in done.stderr


def test_port_zero_gives_every_worker_the_same_port(models: dict[str, Path], tmp_path: Path) -> None:
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    cmd = [sys.executable, "-m", "modelserve", "serve", "--model-dir", str(models["mlp"]), "--model-name", "mlp",
           "--host", "127.0.0.1", "--port", "0", "--workers", "2", "--drain-seconds", "0"]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        line = next(line for line in proc.stderr if "Starting 2 workers on" in line)
        port = int(line.rsplit(":", 1)[1])
        _wait_for(lambda: len(_worker_files(tmp_path)) == 2)
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
        assert httpx.get(f"http://127.0.0.1:{port}/v2/health/ready", timeout=5).status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def test_a_stuck_worker_is_killed_and_replaced_while_the_other_serves(
    models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    log = tmp_path / "server.log"
    with (
        log.open("wb") as stderr,
        serve_subprocess(
            models["mlp"],
            "mlp",
            stderr=stderr,
            WORKERS="2",
            WORKER_STALL_SECONDS="2",
            WORKER_START_SECONDS="8",
            LOG_LEVEL="info",
        ) as (proc, base),
    ):
        _wait_for(lambda: len(_worker_files(tmp_path)) == 2)
        victim = int(_worker_files(tmp_path)[0].name.split("-")[1].split(".")[0])
        os.kill(victim, signal.SIGSTOP)  # from outside, a process that never runs again: a blocked event loop
        _wait_for(lambda: not _alive(victim), timeout=30)
        # Its replacement hangs too, before it serves (a model load that never returns): stopped as soon as the
        # supervisor names it, it has not even imported torch, and is killed 8 s after its start.
        started = re.compile(r"Worker \d+ started \(pid (\d+)\)")
        replacement = _wait_for(lambda: ([int(p) for p in started.findall(log.read_text())][2:] or [0])[0], 30)
        os.kill(replacement, signal.SIGSTOP)
        assert not list(tmp_path.glob(f"modelserve-workers-*/metrics-{replacement}.json"))
        _wait_for(lambda: not _alive(replacement), timeout=30)
        _wait_for(lambda: len([f for f in _worker_files(tmp_path) if f.name != "metrics-exited.json"]) == 2, 60)
        with httpx.Client(base_url=base, timeout=5) as c:  # 20 new connections, every one answered
            for _ in range(20):
                with httpx.Client(base_url=base, timeout=5) as fresh:
                    assert fresh.post("/v2/models/mlp/infer", json=v2_body()).status_code == 200
            assert c.get("/v2/health/ready").status_code == 200
        assert proc.poll() is None
    text = log.read_text()
    assert f"(pid {victim}) has not published its metrics" in text and "stopped (stuck); restarting it" in text
    assert f"(pid {replacement}) has not started serving" in text
    assert f"(pid {replacement}) stopped (not serving within 8s); restarting it" in text
