# Targets of the inference runtime (runtime-image/). Included by the top-level Makefile.
RUNTIME_DEMO_DIR := .bench/demo-model
KSERVE_VENV := .venv-kserve
RUNTIME_IMAGE ?= modelserve:dev

.PHONY: serve bench-runtime bench-overhead test-runtime test-native native runtime-image kserve-venv

## Serve a small demo model built locally (no download) on http://localhost:8080 (see docs/runtime.md).
serve: setup
	$(BIN)/python -m modelserve.testing $(RUNTIME_DEMO_DIR) --kind torchscript
	$(BIN)/modelserve serve --model-dir $(RUNTIME_DEMO_DIR) --model-name demo --port $${PORT:-8080} --drain-seconds 0

test-runtime: setup
	$(BIN)/pytest -q tests/runtime

# The request path compiled with mypyc, as the image ships it (runtime-image/setup.py), unpacked into
# $(NATIVE_DIR); PYTHONPATH=$(NATIVE_DIR) runs it in place of the editable, pure-Python install.
NATIVE_DIR := .build/native
$(NATIVE_DIR)/.stamp: $(STAMP) runtime-image/setup.py runtime-image/pyproject.toml $(wildcard runtime-image/src/modelserve/*.py runtime-image/src/modelserve/*.[ch])
	rm -rf $(NATIVE_DIR) .build/wheels runtime-image/build  # build/: setuptools would pack stale files left there
	cd runtime-image && MODELSERVE_COMPILE=1 $(BIN)/pip wheel -q --no-build-isolation --no-deps -w $(CURDIR)/.build/wheels .
	$(BIN)/python -m zipfile -e .build/wheels/modelserve-*.whl $(NATIVE_DIR)
	touch $@

native: $(NATIVE_DIR)/.stamp

## The runtime's tests again, against the compiled request path.
test-native: native
	MODELSERVE_EXPECT_COMPILED=1 PYTHONPATH=$(CURDIR)/$(NATIVE_DIR) $(BIN)/pytest -q tests/runtime

$(KSERVE_VENV)/.stamp: runtime-image/runtime.mk
	$(PY) -m venv $(KSERVE_VENV)
	$(KSERVE_VENV)/bin/pip install -q --upgrade pip
	$(KSERVE_VENV)/bin/pip install -q torch==2.13.0 'kserve==0.21.*'
	touch $@

kserve-venv: $(KSERVE_VENV)/.stamp

## Raw forward vs modelserve (compiled and pure Python) vs KServe 0.21: wrk on core 0; servers on core 1, then on
## both cores (bench.py).
bench-runtime: setup native kserve-venv
	@command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk) || \
	  (sudo apt-get update -qq && sudo apt-get install -y -qq wrk)
	$(BIN)/python runtime-image/bench/bench.py --kserve-python $(KSERVE_VENV)/bin/python

## The server's own CPU cost per inference request, in process and without sockets (bench/overhead.py), for the
## pure-Python install and the compiled build.
bench-overhead: setup native
	for build in pure compiled; do \
	  path=$$([ $$build = compiled ] && echo $(CURDIR)/$(NATIVE_DIR)); echo "--- $$build"; \
	  for args in "binary --stub-model" "json --stub-model" "binary --stub-model --fast-path false" "binary"; do \
	    PYTHONPATH=$$path taskset -c $$(( $$(nproc) - 1 )) $(BIN)/python runtime-image/bench/overhead.py $$args \
	      || exit 1; done; done

runtime-image:
	docker build -t $(RUNTIME_IMAGE) runtime-image
