"""The runtime image's Dockerfile, read: a build stage that makes a virtual environment with the torch release and
the mypy version the tests use and the wheel with its request path compiled, and a final stage without a compiler
that copies that environment, runs as uid 1000 and starts through tini. `make image-check`
(runtime-image/image_check.py) builds it with buildah and runs it with podman where the machine allows (root)."""

from __future__ import annotations

import json
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = (REPO / "runtime-image" / "Dockerfile").read_text(encoding="utf-8")
BUILD, FINAL = re.split(r"^FROM \$\{BASE_IMAGE\}$", DOCKERFILE.split("AS build", 1)[1], maxsplit=1, flags=re.M)


def instructions(text: str, name: str) -> list[str]:
    return re.findall(rf"^{name}\s+(.+)$", text, flags=re.MULTILINE)


def test_two_stages_on_the_same_base() -> None:
    assert instructions(DOCKERFILE, "FROM") == ["${BASE_IMAGE} AS build", "${BASE_IMAGE}"]


def pinned(package: str) -> str:
    (version,) = re.findall(rf"^{package}==(\S+)$", (REPO / "requirements-dev.txt").read_text(), flags=re.M)
    return str(version)


def test_the_build_stage_compiles_with_the_tested_mypy_and_torch() -> None:
    assert f"ARG MYPY_VERSION={pinned('mypy')}" in BUILD
    assert f"ARG TORCH_VERSION={pinned('torch')}" in BUILD
    assert '"torch==${TORCH_VERSION}"' in BUILD
    assert "ARG MODELSERVE_COMPILE=1" in BUILD
    assert "COPY pyproject.toml setup.py ./" in BUILD
    assert "gcc" in BUILD
    assert "MODELSERVE_COMPILE=${MODELSERVE_COMPILE} pip wheel --no-build-isolation --no-deps -w /wheels ." in BUILD


def test_the_plain_install_before_the_compile_does_not_compile() -> None:
    """A stage's ARG is in the environment of its RUN steps: the plain install of the package that brings the
    dependencies for mypyc is built by pip in an isolated environment without mypyc, so it must not see
    MODELSERVE_COMPILE=1 (the image once failed to build this way)."""
    (install,) = [line for line in BUILD.splitlines() if '".[s3]"' in line]
    assert install.startswith("RUN MODELSERVE_COMPILE=0 pip install ")


def test_the_final_stage_copies_the_environment_without_a_compiler() -> None:
    assert "gcc" not in FINAL
    assert "COPY --from=build /opt/modelserve /opt/modelserve" in FINAL
    assert "ENV PATH=/opt/modelserve/bin:$PATH" in FINAL
    assert "m.compiled_modules()" in FINAL and "m.COMPILED" in FINAL  # the build fails if it is not compiled
    assert "COPY src" not in FINAL and "pip install" not in FINAL


def test_non_root_and_tini() -> None:
    assert instructions(FINAL, "USER") == ["1000:1000"]
    (entrypoint,) = instructions(FINAL, "ENTRYPOINT")
    assert json.loads(entrypoint) == ["/usr/bin/tini", "--", "modelserve"]


def test_the_build_context_has_what_the_build_stage_copies() -> None:
    ignored = (REPO / "runtime-image" / ".dockerignore").read_text(encoding="utf-8").split()
    assert not {"setup.py", "pyproject.toml", "src"} & set(ignored)
    assert "build" in ignored and "**/*.so" in ignored  # no local build output in the image


def test_gpu_containers_get_the_cuda_driver_libraries() -> None:
    """Without a CUDA base image, the image itself must ask NVIDIA's container toolkit for the compute libraries;
    it must not expose every GPU to containers that did not request one."""
    assert "ENV NVIDIA_DRIVER_CAPABILITIES=compute,utility" in FINAL
    assert "NVIDIA_VISIBLE_DEVICES=" not in FINAL
