"""``modeldeploy golden record|check`` against a small model server on loopback (tests/e2e/test_golden_cli.py runs
them against real modelserve processes)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from modeldeploy.cli import main
from modeldeploy.rollout.config import parse_rollout


class Model:
    """Answers output ``y`` = the input (shape kept), or reversed per row when ``swapped``; ``status`` != 200
    answers an error."""

    def __init__(self) -> None:
        self.swapped, self.status, self.requests = False, 200, []  # type: ignore[var-annotated]

    def answer(self, body: dict[str, Any]) -> tuple[int, Any]:
        self.requests.append(body)
        if self.status != 200:
            return self.status, {"error": "input 'input': expected shape [-1, 3]"}
        tensor = body["inputs"][0]
        width = tensor["shape"][-1]
        data = tensor["data"]
        if self.swapped:
            data = [v for i in range(0, len(data), width) for v in reversed(data[i : i + width])]
        return 200, {"model_name": "m", "outputs": [{"name": "y", "datatype": "FP32", "shape": tensor["shape"],
                                                     "data": data}]}  # fmt: skip


@pytest.fixture
def server() -> Iterator[tuple[str, Model]]:
    model = Model()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            if self.path != "/v2/models/m/infer":
                status, body = 404, {"error": "unknown model"}
            else:
                status, body = model.answer(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            raw = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", model
    finally:
        httpd.shutdown()
        httpd.server_close()


INPUTS = [
    {"name": "first", "inputs": [{"name": "input", "shape": [1, 3], "data": [0.1, 0.9, 0.2]}]},
    {"inputs": [{"name": "input", "shape": [2, 3], "data": [0.7, 0.1, 0.2, 0.3, 0.3, 0.9]}]},
]


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def record(tmp_path: Path, url: str, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str, str]:
    inputs = tmp_path / "inputs.yaml"
    inputs.write_text(yaml.safe_dump(INPUTS))
    return run(["golden", "record", "--url", url, "--model", "m", "-f", str(inputs), *extra], capsys)


def test_record_prints_a_block_the_operator_accepts(
    server: tuple[str, Model], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url, model = server
    code, out, err = record(tmp_path, url, capsys)
    assert code == 0, err
    block = yaml.safe_load(out)
    cases = block["goldenRequests"]["cases"]
    assert [c["name"] for c in cases] == ["first", "case-2"]
    assert cases[0]["outputs"] == [{"name": "y", "argmax": [1]}]
    assert cases[1]["outputs"] == [{"name": "y", "argmax": [0, 2]}]
    assert cases[1]["inputs"] == INPUTS[1]["inputs"]
    analysis = parse_rollout({"analysis": block}).analysis
    assert analysis is not None and analysis.golden is not None and len(analysis.golden.cases) == 2
    assert model.requests[0]["id"] == "modeldeploy-golden-first"


def test_record_by_value_with_tolerances_as_json(
    server: tuple[str, Model], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url, _ = server
    code, out, err = record(
        tmp_path, url, capsys, "--expect", "data", "--absolute-tolerance", "0.001", "--max-mismatches", "1", "-o",
        "json",
    )  # fmt: skip
    assert code == 0, err
    block = json.loads(out)["goldenRequests"]
    assert block["absoluteTolerance"] == 0.001 and block["maxMismatches"] == 1
    assert block["cases"][1]["outputs"] == [{"name": "y", "data": [0.7, 0.1, 0.2, 0.3, 0.3, 0.9]}]


def test_check_passes_the_same_model_and_fails_a_swapped_one(
    server: tuple[str, Model], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url, model = server
    code, out, _ = record(tmp_path, url, capsys)
    golden = tmp_path / "golden.yaml"
    golden.write_text(out)
    code, out, err = run(["golden", "check", "--url", url, "--model", "m", "-f", str(golden)], capsys)
    assert code == 0, err
    assert out.splitlines() == ["ok     first", "ok     case-2", "0 of 2 answers wrong <= maxMismatches 0: passed"]
    model.swapped = True
    code, out, _ = run(["golden", "check", "--url", url, "--model", "m", "-f", str(golden)], capsys)
    assert code == 1
    assert out.splitlines()[0] == "ok     first"  # [0.2, 0.9, 0.1]: still class 1
    assert out.splitlines()[1] == "WRONG  case-2: output 'y': argmax [2, 0], expected [0, 2]"
    assert out.splitlines()[-1] == "1 of 2 answers wrong > maxMismatches 0: failed"
    # The same cases inside a ModelDeployment.
    md = yaml.safe_load((Path(__file__).parents[2] / "examples" / "golden-requests.yaml").read_text())
    md["spec"]["rollout"]["analysis"]["goldenRequests"] = yaml.safe_load(golden.read_text())["goldenRequests"]
    golden.write_text(yaml.safe_dump(md))
    model.swapped = False
    assert run(["golden", "check", "--url", url, "--model", "m", "-f", str(golden)], capsys)[0] == 0


@pytest.mark.parametrize(
    ("argv", "setup", "message"),
    [
        (["record"], "error-500", "answered HTTP 500: input 'input': expected shape [-1, 3]"),
        (["record", "--model", "other"], "", "answered HTTP 404: unknown model"),
        (["record"], "bad-inputs", "case 'first': shape [1, 3] holds 3 values, not 2"),
        (["record"], "not-a-list", "expected a non-empty list of cases"),
        (["check"], "invalid-block", "exactly one of data or argmax"),
        (["record", "--url", "http://127.0.0.1:9"], "", "cannot reach http://127.0.0.1:9/v2/models/m/infer"),
    ],
)
def test_bad_input_and_unusable_servers_are_errors(
    server: tuple[str, Model], tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], setup: str,
    message: str,
) -> None:  # fmt: skip
    url, model = server
    cases: Any = INPUTS
    if setup == "error-500":
        model.status = 500
    elif setup == "bad-inputs":
        cases = [{"name": "first", "inputs": [{"name": "input", "shape": [1, 3], "data": [0.1, 0.9]}]}]
    elif setup == "not-a-list":
        cases = {"cases": "x"}
    elif setup == "invalid-block":
        cases = {"goldenRequests": {"cases": [{**INPUTS[0], "outputs": [{"name": "y"}]}]}}
    path = tmp_path / "in.yaml"
    path.write_text(yaml.safe_dump(cases))
    action, *rest = argv
    options = dict(zip(rest[::2], rest[1::2], strict=True))
    full = ["golden", action, "--url", options.get("--url", url), "--model", options.get("--model", "m"), "-f",
            str(path)]  # fmt: skip
    code, out, err = run(full, capsys)
    assert code == 2 and out == ""
    assert message in err, err
