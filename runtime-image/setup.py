"""Optional native build: with MODELSERVE_COMPILE=1 the request-path modules are compiled to C extensions with
mypyc (the same sources, type-checked and compiled; see docs/runtime.md, "Compiled request path"). Without it the
package is pure Python, with the same behaviour. The runtime image builds the compiled wheel:

    MODELSERVE_COMPILE=1 pip wheel --no-build-isolation --no-deps ./runtime-image

`--no-build-isolation` because mypyc type-checks the modules against the installed dependencies (numpy, torch,
uvicorn, orjson, prometheus_client); install those and mypy first.
"""

from __future__ import annotations

import ast
import os
import sys
from pathlib import Path

from setuptools import Extension, setup

# The request-path modules (modelserve.REQUEST_PATH, read here without importing the package and its
# dependencies). errors.py stays interpreted: its exception classes override class attributes in subclasses,
# which compiled (native) classes do not support.
_INIT = Path(__file__).with_name("src") / "modelserve" / "__init__.py"
REQUEST_PATH = next(
    ast.literal_eval(node.value)
    for node in ast.parse(_INIT.read_text()).body
    if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "REQUEST_PATH" for t in node.targets)
)

ext_modules = []
# pip runs this file once for the metadata and once for the wheel; only the second needs the (slow) compile.
metadata_only = bool({"egg_info", "dist_info"} & set(sys.argv[1:]))
if os.environ.get("MODELSERVE_COMPILE", "0") == "1" and not metadata_only:
    from mypyc.build import mypycify

    ext_modules = mypycify(
        [f"src/modelserve/{name}.py" for name in REQUEST_PATH],
        opt_level=os.environ.get("MODELSERVE_COMPILE_OPT", "3"),
    )
    # The JSON tensor parser (protocol_v2 uses it where it is built); C99, no dependency beyond Python's headers.
    ext_modules.append(
        Extension(
            "modelserve._jsontensor",
            ["src/modelserve/_jsontensor.c"],
            depends=["src/modelserve/_pow10.h"],
            extra_compile_args=["-O3", "-std=c11", "-fno-fast-math", "-ffp-contract=off"],
        )
    )

setup(ext_modules=ext_modules)
