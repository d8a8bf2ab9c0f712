"""The OpenAPI 3 description of the HTTP surface, served at /openapi.json."""

from __future__ import annotations

from typing import Any

_ERROR = {
    "description": "error",
    "content": {
        "application/json": {
            "schema": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}
        }
    },
}
_TENSOR_IN = {
    "type": "object",
    "required": ["name", "shape", "datatype"],
    "properties": {
        "name": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
        "datatype": {
            "type": "string",
            "enum": [
                "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
                "FP16", "FP32", "FP64", "BYTES", "BF16",
            ],
        },
        "parameters": {"type": "object"},
        "data": {"type": "array"},
    },
}  # fmt: skip
_INFER_REQUEST = {
    "type": "object",
    "required": ["inputs"],
    "properties": {
        "id": {"type": "string"},
        "parameters": {
            "type": "object",
            "properties": {
                "binary_data_output": {"type": "boolean"},
                "timeout_ms": {"type": "number", "minimum": 0, "exclusiveMinimum": True},
            },
        },
        "inputs": {"type": "array", "items": _TENSOR_IN},
        "outputs": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name"],
                "properties": {"name": {"type": "string"}, "parameters": {"type": "object"}},
            },
        },
    },
}
_INFER_RESPONSE = {
    "type": "object",
    "required": ["model_name", "outputs"],
    "properties": {
        "model_name": {"type": "string"},
        "model_version": {"type": "string"},
        "id": {"type": "string"},
        "outputs": {"type": "array", "items": {"type": "object"}},
    },
}
_INFER_ERRORS = {code: _ERROR for code in ("400", "404", "408", "413", "415", "500", "503", "504")}
_NAME = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
_VERSION = {"name": "version", "in": "path", "required": True, "schema": {"type": "string"}}
_TIMEOUT = {
    "name": "Modelserve-Timeout-Ms",
    "in": "header",
    "required": False,
    "description": "per-request deadline in milliseconds",
    "schema": {"type": "string"},
}
_PROBE = {
    "name": "Modeldeploy-Probe",
    "in": "header",
    "required": False,
    "description": "marks a request that is not client traffic (the operator's golden requests): it is counted in "
    "modelserve_probe_requests_total, not in modelserve_requests_total or the request latency",
    "schema": {"type": "string"},
}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _get(summary: str, schema: dict[str, Any], params: list[dict[str, Any]], errors: tuple[str, ...]) -> Any:
    return {
        "get": {
            "summary": summary,
            "parameters": params,
            "responses": {"200": _json(schema), **{c: _ERROR for c in errors}},
        }
    }


def _infer(params: list[dict[str, Any]]) -> Any:
    return {
        "post": {
            "summary": "Run inference (Open Inference Protocol v2; JSON or the binary tensor data extension)",
            "parameters": [*params, _TIMEOUT, _PROBE],
            "requestBody": {"required": True, "content": {"application/json": {"schema": _INFER_REQUEST}}},
            "responses": {"200": _json(_INFER_RESPONSE), **_INFER_ERRORS},
        }
    }


def openapi_document(version: str) -> dict[str, Any]:
    ready = {"type": "object"}
    meta = {"type": "object", "required": ["name", "inputs", "outputs"]}
    return {
        "openapi": "3.0.3",
        "info": {"title": "modelserve", "version": version},
        "paths": {
            "/v2/health/live": _get("Liveness", {"type": "object"}, [], ()),
            "/v2/health/ready": _get("Readiness", ready, [], ("503",)),
            "/v2": _get("Server metadata", {"type": "object"}, [], ()),
            "/v2/models/{name}": _get("Model metadata", meta, [_NAME], ("404", "503")),
            "/v2/models/{name}/versions/{version}": _get("Model metadata", meta, [_NAME, _VERSION], ("404", "503")),
            "/v2/models/{name}/ready": _get("Model readiness", ready, [_NAME], ("404", "503")),
            "/v2/models/{name}/versions/{version}/ready": _get(
                "Model readiness", ready, [_NAME, _VERSION], ("404", "503")
            ),
            "/v2/models/{name}/infer": _infer([_NAME]),
            "/v2/models/{name}/versions/{version}/infer": _infer([_NAME, _VERSION]),
            "/v1/models/{name}:predict": {
                "post": {
                    "summary": "Predict (TensorFlow Serving style)",
                    "parameters": [_NAME, _TIMEOUT, _PROBE],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "properties": {"instances": {"type": "array"}, "inputs": {}},
                                }
                            }
                        },
                    },
                    "responses": {
                        "200": _json({"type": "object"}),
                        **_INFER_ERRORS,
                    },
                }
            },
            "/v1/models/{name}": _get("Model status (TensorFlow Serving style)", {"type": "object"}, [_NAME], ("404",)),
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics",
                    "responses": {
                        "200": {"description": "OK", "content": {"text/plain": {"schema": {"type": "string"}}}}
                    },
                }
            },
        },
    }
