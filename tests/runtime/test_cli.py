from __future__ import annotations

import gc
import hashlib
import logging
import sys
from pathlib import Path

import pytest

import modelserve
from modelserve import cli
from modelserve.config import SERVE_OPTIONS, env_name, parse_bool, serve_config


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
    }
    config = serve_config(cli.build_parser(env).parse_args(["serve"]))
    assert (config.model_dir, config.model_name, config.model_version) == (Path("/models"), "iris", "7")
    assert (config.max_batch_size, config.max_queue_delay_ms, config.max_queue_size) == (16, 2.5, 10)
    assert config.drain_seconds == 3.0 and config.half_precision is True
    flags = cli.build_parser(env).parse_args(["serve", "--max-batch-size", "4"])
    assert flags.max_batch_size == 4  # a flag wins over the environment
    assert {o.env for o in SERVE_OPTIONS} >= {env_name("--port"), "MODELSERVE_DEVICE_INDEX"}


def test_bad_environment_values_are_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.build_parser({"MODELSERVE_MAX_BATCH_SIZE": "zero"}).parse_args(["serve"])
    assert exc.value.code == 2 and "MODELSERVE_MAX_BATCH_SIZE" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.build_parser({"MODELSERVE_DEVICE": "tpu"}).parse_args(["serve"])
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
