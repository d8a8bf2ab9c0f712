"""modeldeploy render: the children the operator would create, or a clear error naming the field."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from modeldeploy.cli import InputError, build_parser, main, run_options
from modeldeploy.runner import OperatorProcess

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
REQUIRED = ("cpu-model.yaml", "gpu-model.yaml", "baked-model.yaml", "safetensors-model.yaml")
K8S_VERSION = kubernetes_validate.latest_version()

VALID = """\
apiVersion: modeldeploy.io/v1alpha1
kind: ModelDeployment
metadata: {name: iris}
spec:
  model: {version: "1", storageUri: s3://models/iris/1}
"""


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("name", REQUIRED)
def test_render_prints_complete_objects(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["render", "-f", str(EXAMPLES / name)], capsys)
    assert (code, err) == (0, "")
    objects = [o for o in yaml.safe_load_all(out) if o is not None]
    kinds = [o["kind"] for o in objects]
    # Exactly what the operator applies first: the revision's record, its Deployment, the Service, an HPA, the
    # disruption budget (on by default).
    assert kinds[:3] == ["ControllerRevision", "Deployment", "Service"]
    assert kinds[3:] in (["PodDisruptionBudget"], ["HorizontalPodAutoscaler", "PodDisruptionBudget"])
    for obj in objects:
        assert obj["apiVersion"] and obj["metadata"]["name"] and obj["metadata"]["namespace"]
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def test_namespace_defaults_to_default(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "md.yaml"
    path.write_text(VALID)
    code, out, _ = run(["render", "-f", str(path)], capsys)
    assert code == 0
    assert {o["metadata"]["namespace"] for o in yaml.safe_load_all(out)} == {"default"}


def test_json_output_is_a_list(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["render", "-f", str(EXAMPLES / "gpu-model.yaml"), "-o", "json"], capsys)
    assert code == 0
    document = json.loads(out)
    assert (document["apiVersion"], document["kind"]) == ("v1", "List")
    assert [i["kind"] for i in document["items"]] == [
        "ControllerRevision",
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
    ]


def test_stdin_with_several_documents(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    second = VALID.replace("name: iris", "name: wine")
    monkeypatch.setattr(sys, "stdin", io.StringIO(f"---\n{VALID}---\n{second}\n---\n"))
    code, out, _ = run(["render", "-f", "-"], capsys)
    assert code == 0
    services = [o["metadata"]["name"] for o in yaml.safe_load_all(out) if o["kind"] == "Service"]
    assert services == ["iris", "wine"]


def test_default_runtime_image_flag_and_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "md.yaml"
    path.write_text(VALID)
    monkeypatch.setenv("MODELDEPLOY_RUNTIME_IMAGE", "env/img:1")
    _, out, _ = run(["render", "-f", str(path)], capsys)
    assert "image: env/img:1" in out
    _, out, _ = run(["render", "-f", str(path), "--default-runtime-image", "flag/img:2"], capsys)
    assert "image: flag/img:2" in out and "env/img:1" not in out


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (VALID.replace('version: "1", ', ""), ": ModelDeployment/iris: spec.model.version: Required value"),
        (VALID.replace("s3://models/iris/1", "ftp://x/y"), ": ModelDeployment/iris: spec.model.storageUri: "),
        (
            VALID.replace("s3://models/iris/1", "pvc://Bad_Claim/m"),
            "ModelDeployment/iris: spec.model.storageUri: ",
        ),
        (
            VALID + "  autoscaling: {minReplicas: 4, maxReplicas: 3}\n",
            "ModelDeployment/iris: spec.autoscaling.minReplicas: Invalid value",
        ),
        ("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n", ": ConfigMap/c: not a ModelDeployment"),
        ("- just\n- a list\n", ": document 1: expected a mapping"),
        ("spec: [unclosed\n", ": invalid YAML"),
        ("", ": no ModelDeployment documents found"),
    ],
)
def test_bad_input_exits_2_naming_the_problem(
    text: str, expected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    code, out, err = run(["render", "-f", str(path)], capsys)
    assert code == 2
    assert out == ""
    assert err.startswith(f"error: {path}")
    assert expected in err


def test_every_error_is_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.yaml"
    bad = VALID.replace("storageUri: s3://models/iris/1", "storageUri: s3://models/iris/1, format: Safetensors")
    path.write_text(bad + "  autoscaling: {minReplicas: 4, maxReplicas: 3}\n")
    code, _, err = run(["render", "-f", str(path)], capsys)
    assert code == 2
    assert "spec.model.entryPoint" in err
    assert "spec.autoscaling.minReplicas: Invalid value: minReplicas must not exceed maxReplicas" in err


def test_missing_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["render", "-f", str(tmp_path / "nope.yaml")], capsys)
    assert code == 2
    assert "cannot read" in err


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert main(["render"]) == 2
    assert main(["render", "-f", "x", "-o", "xml"]) == 2
    capsys.readouterr()


def test_console_script_renders_an_example() -> None:
    script = Path(sys.executable).parent / "modeldeploy"
    result = subprocess.run(
        [str(script), "render", "-f", str(EXAMPLES / "cpu-model.yaml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "kind: Deployment" in result.stdout


def run_process(argv: list[str], monkeypatch: pytest.MonkeyPatch, **env: str) -> OperatorProcess:
    for name in ("MODELDEPLOY_LOG_LEVEL", "MODELDEPLOY_PEERING_LIFETIME_SECONDS", "MODELDEPLOY_POD_IP",
                 "MODELDEPLOY_RESYNC_PERIOD_SECONDS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return run_options(build_parser().parse_args(["run", *argv]))


@pytest.mark.parametrize(
    ("argv", "env", "level", "lifetime"),
    [
        ([], {}, "INFO", 60),
        ([], {"MODELDEPLOY_LOG_LEVEL": "WARNING", "MODELDEPLOY_PEERING_LIFETIME_SECONDS": "30"}, "WARNING", 30),
        ([], {"MODELDEPLOY_LOG_LEVEL": "error"}, "ERROR", 60),
        (["--log-level", "debug", "--peering-lifetime", "90"], {"MODELDEPLOY_LOG_LEVEL": "ERROR"}, "DEBUG", 90),
        (["--verbose"], {"MODELDEPLOY_LOG_LEVEL": "WARNING"}, "DEBUG", 60),
    ],
)
def test_run_reads_the_log_level_and_the_peering_lifetime(
    argv: list[str], env: dict[str, str], level: str, lifetime: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    process = run_process(argv, monkeypatch, **env)
    assert (process.log_level, process.peering_lifetime) == (level, lifetime)
    assert process.verbose is (level == "DEBUG")
    options = process.kopf_kwargs()["memo"].options  # type: ignore[attr-defined]
    assert options.peering_lifetime == lifetime


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"MODELDEPLOY_LOG_LEVEL": "TRACE"}, "MODELDEPLOY_LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR"),
        ({"MODELDEPLOY_PEERING_LIFETIME_SECONDS": "soon"}, "MODELDEPLOY_PEERING_LIFETIME_SECONDS must be an integer"),
        ({"MODELDEPLOY_PEERING_LIFETIME_SECONDS": "5"}, "at least 10 seconds"),
    ],
)
def test_run_refuses_a_bad_log_level_or_peering_lifetime(
    env: dict[str, str], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(InputError, match=message):
        run_process([], monkeypatch, **env)


@pytest.mark.parametrize(
    ("raw", "message"),
    [("soon", "MODELDEPLOY_RESYNC_PERIOD_SECONDS must be a number"), ("0", "must be positive")],
)
def test_run_refuses_a_bad_resync_period(raw: str, message: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(InputError, match=message):
        run_process([], monkeypatch, MODELDEPLOY_RESYNC_PERIOD_SECONDS=raw)
    assert run_process(["--resync-period", "5"], monkeypatch, MODELDEPLOY_RESYNC_PERIOD_SECONDS=raw).resync_period == 5
