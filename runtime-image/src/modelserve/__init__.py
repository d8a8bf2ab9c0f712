"""modelserve: a PyTorch inference server speaking the Open Inference Protocol v2 and TF-Serving-style v1."""

from __future__ import annotations

import importlib
import importlib.machinery

__version__ = "0.1.0"

# The modules every inference request runs through; the runtime image compiles them with mypyc (setup.py).
REQUEST_PATH = (
    "batching", "fastpath", "inference", "metrics", "model", "protocol_v1", "protocol_v2", "signature",
)  # fmt: skip
# Written in C and built with them (absent from the pure-Python build, which does without).
NATIVE = ("_jsontensor",)
COMPILED = REQUEST_PATH + NATIVE


def compiled_modules() -> list[str]:
    """The modules of COMPILED that this installation loads as compiled extensions (empty: pure Python)."""
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    compiled = []
    for name in COMPILED:
        try:
            module = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError:
            if name in NATIVE:
                continue
            raise
        if (getattr(module, "__file__", None) or "").endswith(suffixes):
            compiled.append(name)
    return compiled
