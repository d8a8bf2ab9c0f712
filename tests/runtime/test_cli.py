from __future__ import annotations

import gc
import hashlib
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import modelserve
from modelserve import cli
from modelserve.config import SERVE_OPTIONS, env_name, parse_bool, serve_config
from modelserve.formats import ModelFormat
from modelserve.testing import free_socket, stalling_http_server

from .conftest import as_pid1, command_pid, handles, pid1_available


def test_every_serve_flag_has_an_environment_variable() -> None:
    env = {
        "MODELSERVE_MODEL_DIR": "/models",
        "MODELSERVE_MODEL_NAME": "iris",
        "MODELSERVE_MODEL_VERSION": "7",
        "MODELSERVE_MAX_BATCH_SIZE": "16",
        "MODELSERVE_MAX_QUEUE_DELAY_MS": "2.5",
        "MODELSERVE_MAX_QUEUE_SIZE": "10",
        "MODELSERVE_DRAIN_SECONDS": "3",
        "MODELSERVE_HALF_PRECISION": "true",
        "MODELSERVE_MODEL_FORMAT": "Safetensors",
        "MODELSERVE_ENTRY_POINT": "mypkg.net:Net",
    }
    config = serve_config(cli.build_parser(env).parse_args(["serve"]))
    assert (config.model_format, config.entry_point) == ("Safetensors", "mypkg.net:Net")
    assert (config.model_dir, config.model_name, config.model_version) == (Path("/models"), "iris", "7")
    assert (config.max_batch_size, config.max_queue_delay_ms, config.max_queue_size) == (16, 2.5, 10)
    assert config.drain_seconds == 3.0 and config.half_precision is True
    flags = cli.build_parser(env).parse_args(["serve", "--max-batch-size", "4"])
    assert flags.max_batch_size == 4  # a flag wins over the environment
    assert {o.env for o in SERVE_OPTIONS} >= {env_name("--port"), "MODELSERVE_DEVICE_INDEX"}


def test_the_format_choices_are_the_formats_the_loader_knows() -> None:
    """config.py names them itself (importing formats there would slow the start-up, before the stop signals are
    caught), so they must not drift from ModelFormat."""
    (option,) = [o for o in SERVE_OPTIONS if o.flag == "--model-format"]
    assert option.choices == tuple(f.value for f in ModelFormat)


def test_bad_environment_values_are_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.build_parser({"MODELSERVE_MAX_BATCH_SIZE": "zero"}).parse_args(["serve"])
    assert exc.value.code == 2 and "MODELSERVE_MAX_BATCH_SIZE" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.build_parser({"MODELSERVE_DEVICE": "tpu"}).parse_args(["serve"])
    with pytest.raises(SystemExit):
        cli.build_parser({"MODELSERVE_MODEL_FORMAT": "ONNX"}).parse_args(["serve"])
    for name, value in (
        ("MODELSERVE_WORKERS", "0"),
        ("MODELSERVE_WORKER_STALL_SECONDS", "-1"),
        ("MODELSERVE_WORKER_START_SECONDS", "-5"),
    ):
        with pytest.raises(SystemExit) as exc:
            cli.build_parser({name: value}).parse_args(["serve"])
        assert exc.value.code == 2 and name in capsys.readouterr().err
    assert parse_bool("Yes") is True and parse_bool("0") is False
    with pytest.raises(ValueError, match="true or false"):
        parse_bool("maybe")


def test_fetch_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "model.pt"
    src.write_bytes(b"abc")
    digest = hashlib.sha256(b"abc").hexdigest()
    assert cli.main(["fetch", str(src), str(tmp_path / "out"), "--sha256", digest]) == 0
    assert digest in capsys.readouterr().out
    assert cli.main(["fetch", str(tmp_path / "missing"), str(tmp_path / "out")]) == 3
    assert cli.main(["fetch", str(src), str(tmp_path / "out2"), "--sha256", "0" * 64]) == 5
    assert cli.main(["fetch", "ftp://x/y", str(tmp_path / "out")]) == 6
    assert cli.main(["fetch"]) == 2


def test_serve_without_a_model_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MODELSERVE_MODEL_DIR", raising=False)
    monkeypatch.delenv("MODELSERVE_MODEL_NAME", raising=False)
    assert cli.main(["serve"]) == 2


def test_serve_exits_with_the_load_error_code(tmp_path: Path) -> None:
    (tmp_path / "model.pkl").write_bytes(b"\x80\x04N.")
    code = cli.main(["serve", "--model-dir", str(tmp_path), "--model-name", "m", "--port", "0", "--host", "127.0.0.1"])
    assert code == 11  # UnsafeFormat: refused pickle


def test_serve_says_which_request_path_it_runs(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "model.pkl").write_bytes(b"\x80\x04N.")  # refused at load: the server starts and stops at once
    with caplog.at_level(logging.INFO, logger="modelserve"):
        cli.main(["serve", "--model-dir", str(tmp_path), "--model-name", "m", "--port", "0", "--host", "127.0.0.1"])
    compiled = modelserve.compiled_modules()  # all of COMPILED under make test-native, none otherwise
    expected = f"compiled ({', '.join(compiled)})" if compiled else "pure Python"
    assert f"Request path: {expected}" in caplog.messages


def _empty(path: Path) -> Path:
    path.write_bytes(b"")  # as the kubelet leaves it at each start of a container
    return path


def test_a_failed_fetch_leaves_its_error_as_the_termination_message(tmp_path: Path) -> None:
    src = tmp_path / "model.pt"
    src.write_bytes(b"abc")
    log = _empty(tmp_path / "termination-log")
    argv = ["fetch", str(src), str(tmp_path / "out"), "--sha256", "0" * 64]
    assert cli.main([*argv, "--termination-log", str(log)]) == 5
    message = log.read_text()
    assert message.startswith("Fetch failed: ") and "sha256" in message and "0" * 64 in message, message
    assert "Traceback" not in message


def test_a_model_that_does_not_load_leaves_its_error_as_the_termination_message(tmp_path: Path) -> None:
    (tmp_path / "model.pkl").write_bytes(b"\x80\x04N.")
    log = _empty(tmp_path.parent / f"{tmp_path.name}-termination-log")
    argv = ["serve", "--model-dir", str(tmp_path), "--model-name", "m", "--port", "0", "--host", "127.0.0.1"]
    assert cli.main([*argv, "--termination-log", str(log)]) == 11
    assert log.read_text().startswith("Cannot load model m: "), log.read_text()
    assert "pickle" in log.read_text()


def test_success_and_a_stop_signal_leave_no_termination_message(tmp_path: Path) -> None:
    src = tmp_path / "model.pt"
    src.write_bytes(b"abc")
    log = _empty(tmp_path / "termination-log")
    assert cli.main(["fetch", str(src), str(tmp_path / "out"), "--termination-log", str(log)]) == 0
    assert log.read_bytes() == b""


def test_the_termination_message_is_only_written_into_an_empty_file_that_exists(tmp_path: Path) -> None:
    missing = tmp_path / "termination-log"
    assert not cli.write_termination_message(missing, "boom")
    assert not missing.exists()  # outside Kubernetes nothing is created
    assert not cli.write_termination_message(None, "boom")
    assert not cli.write_termination_message(_empty(missing), "")
    assert cli.write_termination_message(missing, "the worker's own error")
    assert not cli.write_termination_message(missing, "Worker 0 exited")  # the first failure's message stays
    assert missing.read_text() == "the worker's own error"
    long = _empty(tmp_path / "long")
    assert cli.write_termination_message(long, "é" * 5000)  # 2 bytes each: cut at the kubelet's 4096 bytes
    assert long.read_bytes() == ("é" * 2048).encode()
    odd = _empty(tmp_path / "odd")
    assert cli.write_termination_message(odd, "x" + "é" * 3000)  # a cut inside a character drops the character
    assert odd.read_bytes() == ("x" + "é" * 2047).encode()


def test_an_unexpected_error_is_logged_and_becomes_the_termination_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(args: object) -> int:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(cli, "run_fetch", broken)
    log = _empty(tmp_path / "termination-log")
    assert cli.main(["fetch", "/x", str(tmp_path / "out"), "--termination-log", str(log)]) == 1
    assert log.read_text() == "modelserve fetch failed: disk on fire"
    assert any(r.exc_info for r in caplog.records if r.levelno == logging.CRITICAL)  # the traceback is logged


def test_a_port_in_use_is_the_termination_message_of_a_single_server(tmp_path: Path, models: dict[str, Path]) -> None:
    log = _empty(tmp_path / "termination-log")
    with free_socket() as busy:
        busy.listen()
        port = busy.getsockname()[1]
        argv = ["serve", "--model-dir", str(models["mlp"]), "--model-name", "mlp", "--host", "127.0.0.1"]
        code = cli.main([*argv, "--port", str(port), "--termination-log", str(log), "--warmup", "false"])
    assert code != 0  # uvicorn's start-up failure (3 in uvicorn 0.3x)
    assert "address already in use" in log.read_text() and str(port) in log.read_text(), log.read_text()


def test_tune_interpreter_sets_the_gil_switch_and_collector() -> None:
    interval, threshold = sys.getswitchinterval(), gc.get_threshold()
    try:
        cli.tune_interpreter()
        assert sys.getswitchinterval() == pytest.approx(0.0001)  # the inference thread gets the GIL back sooner
        assert gc.get_threshold() == (100_000, 50, 100)
        assert gc.get_freeze_count() > 0
    finally:
        sys.setswitchinterval(interval)
        gc.set_threshold(*threshold)
        gc.unfreeze()


@pytest.mark.parametrize("pid1", [False, True], ids=["process", "pid1"])
def test_sigterm_stops_a_download_and_leaves_no_partial_file(tmp_path: Path, pid1: bool) -> None:
    """The operator's init container runs `modelserve fetch` as its command, so as PID 1: SIGTERM must stop it at
    once (not after the pod's grace period), remove the partial file and exit 128+15."""
    if pid1 and not pid1_available():
        pytest.skip("cannot create a PID namespace here (unshare --pid needs root)")
    dest = tmp_path / "models"
    with stalling_http_server() as base:
        argv = [sys.executable, "-m", "modelserve", "fetch", base + "/model.pt", str(dest), "--timeout-seconds", "60"]
        proc = subprocess.Popen(as_pid1(argv) if pid1 else argv, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 60
            while not list(dest.glob(".model.pt.*.partial")):  # the download has started
                assert proc.poll() is None and time.monotonic() < deadline, "the download never started"
                time.sleep(0.02)
            pid = command_pid(proc, pid1)
            assert handles(pid, signal.SIGTERM)
            sent = time.monotonic()
            os.kill(pid, signal.SIGTERM)
            code = proc.wait(timeout=10)
            stopped_in = time.monotonic() - sent
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.stderr is not None
        err = proc.stderr.read().decode()
    assert code == 128 + signal.SIGTERM, err
    assert stopped_in < 5, stopped_in
    assert "Fetch stopped by SIGTERM" in err
    assert list(dest.iterdir()) == []  # no partial file, no model


@pytest.mark.parametrize("pid1", [False, True], ids=["process", "pid1"])
def test_a_signal_during_start_up_is_not_lost(tmp_path: Path, models: dict[str, Path], pid1: bool) -> None:
    """SIGTERM while `serve` is still starting (before uvicorn's handlers exist): the server stops at once, exit 0,
    instead of being killed mid-start or, as PID 1, ignoring the signal until the grace period ends."""
    script = (
        "import signal, sys\n"
        "import modelserve.app as app\n"
        "create = app.create_app\n"
        "def create_app(*a, **k):\n"
        "    signal.raise_signal(signal.SIGTERM)  # arrives while the app is being built\n"
        "    return create(*a, **k)\n"
        "app.create_app = create_app\n"
        "from modelserve import cli\n"
        f"sys.argv = ['modelserve', 'serve', '--model-dir', {str(models['mlp'])!r}, '--model-name', 'mlp',\n"
        "            '--host', '127.0.0.1', '--port', '0', '--drain-seconds', '30']\n"
        "sys.exit(cli.main())\n"
    )
    if pid1 and not pid1_available():
        pytest.skip("cannot create a PID namespace here (unshare --pid needs root)")
    argv = [sys.executable, "-c", script]
    started = time.monotonic()
    done = subprocess.run(as_pid1(argv) if pid1 else argv, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "Replaying SIGTERM received during start-up" in done.stderr
    assert time.monotonic() - started < 30  # stopped at once: no 30 s drain for a server that was never ready


class FakeLimits:
    """resource.getrlimit/setrlimit for RLIMIT_NOFILE; `settable` bounds what setrlimit accepts."""

    def __init__(self, soft: int, hard: int, settable: bool = True) -> None:
        self.soft, self.hard, self.settable = soft, hard, settable

    def getrlimit(self, which: int) -> tuple[int, int]:
        import resource

        assert which == resource.RLIMIT_NOFILE
        return self.soft, self.hard

    def setrlimit(self, which: int, limits: tuple[int, int]) -> None:
        import resource

        if not self.settable or (self.hard != resource.RLIM_INFINITY and limits[0] > self.hard):
            raise ValueError("not allowed")
        self.soft, self.hard = limits


@pytest.mark.parametrize(
    ("soft", "hard", "settable", "wanted", "expected_limit", "expected_soft"),
    [
        (1_048_576, 1_048_576, True, 4096, 4096, 1_048_576),  # plenty: nothing changes
        (1024, 1_048_576, True, 4096, 4096, 4096 + cli.FD_RESERVE),  # the soft limit is raised for it
        (1024, 2048, True, 4096, 2048 - cli.FD_RESERVE, 2048),  # raised to the hard limit, the rest lowered
        (1024, 1_048_576, False, 4096, 1024 - cli.FD_RESERVE, 1024),  # cannot raise: lowered
        (1024, 1024, True, 0, 0, 1024),  # no connection limit: left alone
        (64, 64, True, 4096, 1, 64),  # absurdly low: still a limit, not 0 (which would mean none)
    ],
)
def test_the_connection_limit_fits_the_open_file_limit(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, soft: int, hard: int, settable: bool,
    wanted: int, expected_limit: int, expected_soft: int,
) -> None:  # fmt: skip
    """The connection limit's 503 needs the connection accepted: `--max-connections` plus a reserve must fit in
    the open-file limit, raised when it can be, and the connection limit is lowered (with a warning) when not."""
    import resource

    limits = FakeLimits(soft, hard, settable)
    monkeypatch.setattr(resource, "getrlimit", limits.getrlimit)
    monkeypatch.setattr(resource, "setrlimit", limits.setrlimit)
    config = serve_config(cli.build_parser({}).parse_args(["serve", "--max-connections", str(wanted)]))
    with caplog.at_level(logging.WARNING, logger="modelserve"):
        fitted = cli.fit_connection_limit(config)
    assert (fitted.max_connections, limits.soft) == (expected_limit, expected_soft)
    assert ("lowered" in caplog.text) == (expected_limit != wanted)


def test_connection_and_body_limits_are_flags_and_variables() -> None:
    env = {"MODELSERVE_MAX_CONNECTIONS": "10", "MODELSERVE_BODY_TIMEOUT_SECONDS": "2.5"}
    config = serve_config(cli.build_parser(env).parse_args(["serve"]))
    assert (config.max_connections, config.body_timeout_seconds) == (10, 2.5)
    defaults = serve_config(cli.build_parser({}).parse_args(["serve"]))
    assert (defaults.max_connections, defaults.body_timeout_seconds) == (4096, 30.0)
