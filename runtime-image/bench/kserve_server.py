"""KServe 0.21 ModelServer serving the benchmark's TorchScript model (runs in .venv-kserve).

Usage: kserve_server.py MODEL_PATH PORT [DEVICE]  (DEVICE: cpu, the default, or cuda)
"""

from __future__ import annotations

import logging
import sys
import uuid

import kserve
import torch
from kserve import InferOutput, InferRequest, InferResponse, ModelServer


class TorchScriptModel(kserve.Model):  # type: ignore[misc]
    def __init__(self, name: str, path: str, device: str) -> None:
        super().__init__(name)
        self.path = path
        self.device = torch.device(device)
        self.load()

    def load(self) -> bool:
        torch.set_num_threads(1)
        self.model = torch.jit.load(self.path, map_location=self.device).eval()
        self.ready = True
        return True

    async def predict(
        self, payload: InferRequest, headers: object = None, response_headers: object = None
    ) -> InferResponse:
        x = payload.inputs[0].as_numpy()
        with torch.inference_mode():
            y = self.model(torch.from_numpy(x).to(self.device)).cpu().numpy()
        out = InferOutput(name="output", shape=list(y.shape), datatype="FP32")
        out.set_data_from_numpy(y, binary_data=payload.use_binary_outputs)
        return InferResponse(model_name=self.name, infer_outputs=[out], response_id=payload.id or str(uuid.uuid4()))


if __name__ == "__main__":
    path, port, device = sys.argv[1], int(sys.argv[2]), (sys.argv[3:] or ["cpu"])[0]
    sys.argv = sys.argv[:1]
    # By default KServe logs every request: an access-log line and latency lines (`kserve.trace`), about 11 % of
    # its throughput on the 2-core machine. modelserve logs none (its latencies go to /metrics). Both off, so that
    # the two servers do the same work per request.
    server = ModelServer(http_port=port, workers=1, enable_grpc=False, enable_latency_logging=False)
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    logging.getLogger("kserve.trace").setLevel(logging.WARNING)
    server.start([TorchScriptModel("mlp", path, device)])
