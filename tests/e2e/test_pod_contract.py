"""The contract between the operator's pods and the runtime: every MODELSERVE_* variable and argument the operator
puts in a pod is one `modelserve` reads, and it carries what the ModelDeployment asked for. (The two packages do not
import each other; this test holds them together.)"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import save_file

from modeldeploy.build import build_deployment
from modeldeploy.config import OperatorConfig
from modeldeploy.schema import KIND
from modeldeploy.spec import ModelDeployment, parse_model_deployment
from modelserve import cli
from modelserve.config import FETCH_OPTIONS, SERVE_OPTIONS, serve_config
from modelserve.model import load_from_config

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
CONFIG = OperatorConfig()

# Specs beyond the examples: every setting the operator turns into a server variable.
EXTRA = [
    {"model": {"storageUri": "s3://models/1/model.pt"}, "runtime": {"gpu": {"count": 1, "halfPrecision": True}}},
    {
        "model": {"storageUri": "pvc://models/iris/1", "format": "TorchExport"},
        "runtime": {"auth": {"secretRef": {"name": "tokens"}}},
    },
    {
        "model": {"storageUri": "gs://models/x/", "format": "Safetensors", "entryPoint": "a.b:C"},
        "runtime": {"batching": {"maxBatchSize": 1, "maxQueueDelayMs": 0, "maxQueueSize": 7}, "drainSeconds": 0},
    },
]


def _deployments() -> list[tuple[str, ModelDeployment]]:
    found = []
    for path in sorted(EXAMPLES.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if isinstance(doc, dict) and doc.get("kind") == KIND:
                found.append((f"{path.name}:{doc['metadata']['name']}", parse_model_deployment(doc)))
    for i, spec in enumerate(EXTRA):
        body = {
            "apiVersion": "modeldeploy.io/v1alpha1",
            "kind": KIND,
            "metadata": {"name": f"extra{i}", "namespace": "ml", "uid": "u", "generation": 1},
            "spec": {**spec, "model": {"version": "3", **spec["model"]}},
        }
        found.append((f"extra{i}", parse_model_deployment(body)))
    return found


DEPLOYMENTS = _deployments()


def _containers(md: ModelDeployment) -> dict[str, Any]:
    pod = build_deployment(md, CONFIG, "abcdef0123", 1)["spec"]["template"]["spec"]
    return {c["name"]: c for c in [*pod.get("initContainers", []), *pod["containers"]]}


def _server_config(md: ModelDeployment) -> Any:
    server = _containers(md)["model-server"]
    assert server.get("command", ["modelserve"]) == ["modelserve"]
    env = {e["name"]: e["value"] for e in server.get("env", []) if "value" in e}
    return env, serve_config(cli.build_parser(env).parse_args(server["args"]))


@pytest.mark.parametrize(("name", "md"), DEPLOYMENTS, ids=[n for n, _ in DEPLOYMENTS])
def test_every_server_variable_is_a_setting_the_runtime_reads(name: str, md: ModelDeployment) -> None:
    env, config = _server_config(md)
    ours = {key for key in env if key.startswith("MODELSERVE_")}
    assert ours <= {opt.env for opt in SERVE_OPTIONS}, ours - {opt.env for opt in SERVE_OPTIONS}
    runtime, model, batching = md.runtime, md.model, md.runtime.batching
    assert (config.model_name, config.model_version, config.port) == (model.name, model.version, runtime.port)
    assert (config.model_format, config.entry_point) == (model.format, model.entry_point)
    assert (config.max_batch_size, config.max_queue_delay_ms, config.max_queue_size) == (
        batching.max_batch_size,
        batching.max_queue_delay_ms,
        batching.max_queue_size,
    )
    assert (config.drain_seconds, config.half_precision) == (runtime.drain_seconds, runtime.gpu.half_precision)
    assert config.device == ("cuda" if runtime.gpu.count > 0 else "auto")
    assert (config.auth_tokens_file is not None) == bool(runtime.auth_secret_name)


@pytest.mark.parametrize(("name", "md"), DEPLOYMENTS, ids=[n for n, _ in DEPLOYMENTS])
def test_the_fetch_container_runs_a_valid_fetch(name: str, md: ModelDeployment) -> None:
    fetch = _containers(md).get("fetch-model")
    if fetch is None:
        assert not md.model.storage.downloaded
        return
    args = cli.build_parser({}).parse_args(fetch["args"])
    assert (args.command, args.uri, args.sha256) == ("fetch", md.model.storage_uri, md.model.sha256)
    assert {e["name"] for e in fetch.get("env", [])} <= {opt.env for opt in FETCH_OPTIONS}


def test_the_safetensors_example_loads_its_model_as_the_pod_configures_it(tmp_path: Path) -> None:
    """examples/safetensors-model.yaml with examples/models/tabular/ (its module and manifest) and weights made
    here: the server settings from the rendered pod load the model, the entry point imported from the model
    directory, and it answers."""
    ((_, md),) = [(n, m) for n, m in DEPLOYMENTS if n.startswith("safetensors-model.yaml")]
    _, config = _server_config(md)
    model_dir = tmp_path / "model"
    shutil.copytree(EXAMPLES / "models" / "tabular", model_dir)
    namespace: dict[str, Any] = {}
    exec((model_dir / "tabular_net.py").read_text(encoding="utf-8"), namespace)  # the class, as the server builds it
    init = yaml.safe_load((model_dir / "modelserve.json").read_text(encoding="utf-8"))["init"]
    torch.manual_seed(0)
    net = namespace["TabularMLP"](**init).eval()
    save_file(net.state_dict(), str(model_dir / "model.safetensors"))
    engine = load_from_config(dataclasses.replace(config, model_dir=model_dir, device="cpu"))
    assert [s.name for s in engine.signature.inputs] == ["features"]
    x = np.random.default_rng(0).standard_normal((5, init["in_features"])).astype(np.float32)
    (out,) = engine.predict([x])
    with torch.inference_mode():
        expected = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-5)
