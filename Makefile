# modeldeploy — every target sets up what it needs; `make demo` and `make test` work on a fresh machine.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
STAMP := .stamps/setup
TOOLS := $(CURDIR)/.tools

.PHONY: setup demo test lint unit component e2e e2e-local bench bench-operator bench-runtime run serve tools clean

setup: $(STAMP)

$(STAMP): operator/pyproject.toml runtime-image/pyproject.toml requirements-dev.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# CPU build of PyTorch first (from the local wheel cache where present), so nothing pulls a CUDA build.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e 'operator[sim]' -e 'runtime-image[s3]' -r requirements-dev.txt
	mkdir -p .stamps && touch $(STAMP)

demo: setup
	$(BIN)/modeldeploy demo

# Everything, then the runtime's tests again against its compiled request path (as the image ships it).
test: setup lint
	$(BIN)/pytest -q
	$(MAKE) --no-print-directory test-native
	$(MAKE) --no-print-directory test-native-asan

lint: setup
	$(BIN)/ruff check operator runtime-image tests benchmarks integrations charts/scripts docs
	$(BIN)/mypy
	$(BIN)/lint-imports

unit: setup
	$(BIN)/pytest -q tests/operator tests/runtime

component: setup
	$(BIN)/pytest -q tests/component

run: setup
	$(BIN)/modeldeploy run

clean:
	rm -rf $(VENV) .stamps .tools .build .mypy_cache .pytest_cache .ruff_cache runtime-image/build runtime-image/.mypy_cache

# Targets owned by the parts of the project.
-include runtime-image/runtime.mk
-include charts/chart.mk
-include operator/operator.mk
