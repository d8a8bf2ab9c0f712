"""A standard Open Inference Protocol client (tritonclient[http]) works unchanged, JSON and binary."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from modelserve.testing import reference_forward, serve_in_thread

from .conftest import IN, OUT, make_config

httpclient = pytest.importorskip("tritonclient.http")


@pytest.fixture(scope="module")
def triton(models: dict[str, Path]) -> Iterator[object]:
    with serve_in_thread(make_config(models["mlp"])) as (base, _server):
        client = httpclient.InferenceServerClient(url=base.removeprefix("http://"))
        yield client
        client.close()


@pytest.mark.parametrize("binary", [False, True])
def test_infer_json_and_binary(triton: object, models: dict[str, Path], binary: bool) -> None:
    client: httpclient.InferenceServerClient = triton  # type: ignore[assignment]
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("mlp")
    meta = client.get_model_metadata("mlp")
    assert meta["inputs"][0] == {"name": "input", "datatype": "FP32", "shape": [-1, IN]}
    x = np.random.default_rng(4).standard_normal((2, IN)).astype(np.float32)
    inp = httpclient.InferInput("input", [2, IN], "FP32")
    inp.set_data_from_numpy(x, binary_data=binary)
    out = httpclient.InferRequestedOutput("output", binary_data=binary)
    result = client.infer("mlp", [inp], outputs=[out], request_id="abc")
    got = result.as_numpy("output")
    assert got.shape == (2, OUT)
    np.testing.assert_allclose(
        got, reference_forward(models["mlp"] / "model.pt", torch.from_numpy(x)), rtol=1e-5, atol=1e-6
    )
    assert result.get_response()["id"] == "abc"


def test_errors_surface_as_client_exceptions(triton: object) -> None:
    client: httpclient.InferenceServerClient = triton  # type: ignore[assignment]
    from tritonclient.utils import InferenceServerException

    inp = httpclient.InferInput("input", [1, 3], "FP32")
    inp.set_data_from_numpy(np.zeros((1, 3), np.float32))
    with pytest.raises(InferenceServerException, match="expected shape"):
        client.infer("mlp", [inp])
