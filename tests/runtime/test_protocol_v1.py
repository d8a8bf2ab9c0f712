from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from starlette.testclient import TestClient

from modelserve.testing import reference_forward

from .conftest import IN, OUT, ClientFactory


def test_instances_to_predictions(client: TestClient, models: dict[str, Path]) -> None:
    x = np.random.default_rng(3).standard_normal((2, IN)).astype(np.float32)
    r = client.post("/v1/models/mlp:predict", json={"instances": x.tolist()})
    assert r.status_code == 200, r.text
    got = np.array(r.json()["predictions"], np.float32)
    expected = reference_forward(models["mlp"] / "model.pt", torch.from_numpy(x))
    assert got.shape == (2, OUT)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_columnar_inputs_to_outputs(client: TestClient) -> None:
    r = client.post("/v1/models/mlp:predict", json={"inputs": [[0.0] * IN]})
    assert r.status_code == 200 and np.array(r.json()["outputs"]).shape == (1, OUT)


def test_named_instances_with_two_inputs(models: dict[str, Path], make_client: ClientFactory) -> None:
    client = make_client(models["two_heads"], name="heads")
    body = {"instances": [{"features": [1, 2, 3], "scale": [2]}, {"features": [3, 0, 0], "scale": [1]}]}
    r = client.post("/v1/models/heads:predict", json=body)
    assert r.status_code == 200, r.text
    assert r.json()["predictions"] == [{"total": [12.0], "argmax": 2}, {"total": [3.0], "argmax": 0}]
    r = client.post("/v1/models/heads:predict", json={"instances": [{"features": [1, 2, 3]}]})
    assert r.status_code == 400 and "lacks input 'scale'" in r.json()["error"]


def test_model_status(client: TestClient) -> None:
    status = client.get("/v1/models/mlp").json()["model_version_status"][0]
    assert status["state"] == "AVAILABLE" and status["version"] == "1"
    assert client.get("/v1/models/other").status_code == 404
    assert client.get("/v1/models/mlp:predict").status_code == 405


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"nope", "malformed JSON"),
        (b'{"instances": []}', "non-empty list"),
        (b'{"rows": [1]}', '"instances"'),
        (b'{"instances": [[1, 2]]}', "expected shape [-1, 16]"),
        (b'{"instances": [[1, 2], [1]]}', "not a regular array"),
        (b'{"instances": [["1.5"' + b", 0" * 15 + b"]]}", 'FP32 data cannot hold "1.5"'),
        (b'{"instances": [[null' + b", 0" * 15 + b"]]}", "FP32 data cannot hold null"),
    ],
)
def test_v1_client_mistakes(client: TestClient, body: bytes, message: str) -> None:
    r = client.post("/v1/models/mlp:predict", content=body)
    assert r.status_code == 400 and message in r.json()["error"]
    assert client.post("/v1/models/other:predict", content=body).status_code == 404
