"""The runtime image's Dockerfile (this machine cannot build it): a compile stage that builds the wheel with the
request path compiled by the same mypy version the tests use, and a final stage without a compiler that installs
that wheel, runs as uid 1000 and starts through tini."""

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


def test_the_build_stage_compiles_with_the_tested_mypy() -> None:
    (pinned,) = re.findall(r"^mypy==(\S+)$", (REPO / "requirements-dev.txt").read_text(), flags=re.M)
    assert f"ARG MYPY_VERSION={pinned}" in BUILD
    assert "ARG MODELSERVE_COMPILE=1" in BUILD
    assert "COPY pyproject.toml setup.py ./" in BUILD
    assert "gcc" in BUILD
    assert "MODELSERVE_COMPILE=${MODELSERVE_COMPILE} pip wheel --no-build-isolation --no-deps -w /wheels ." in BUILD


def test_the_final_stage_installs_the_wheel_without_a_compiler() -> None:
    assert "gcc" not in FINAL
    assert "COPY --from=build /wheels /wheels" in FINAL
    assert "m.compiled_modules()" in FINAL and "m.COMPILED" in FINAL  # the build fails if it is not compiled
    assert "COPY src" not in FINAL


def test_non_root_and_tini() -> None:
    assert instructions(FINAL, "USER") == ["1000:1000"]
    (entrypoint,) = instructions(FINAL, "ENTRYPOINT")
    assert json.loads(entrypoint) == ["/usr/bin/tini", "--", "modelserve"]


def test_the_build_context_has_what_the_build_stage_copies() -> None:
    ignored = (REPO / "runtime-image" / ".dockerignore").read_text(encoding="utf-8").split()
    assert not {"setup.py", "pyproject.toml", "src"} & set(ignored)
    assert "build" in ignored and "**/*.so" in ignored  # no local build output in the image
