# Targets of the inference runtime (runtime-image/). Included by the top-level Makefile.
RUNTIME_DEMO_DIR := .bench/demo-model
KSERVE_VENV := .venv-kserve
RUNTIME_IMAGE ?= modelserve:dev

.PHONY: serve bench-runtime bench-runtime-gpu bench-overhead test-runtime test-native test-native-asan native runtime-image image-check kserve-venv

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

# The C JSON tensor parser (_jsontensor.c) built with AddressSanitizer and UBSan, in a copy of the compiled build,
# and its tests run against it; every allocation goes through malloc so that ASan sees them all.
ASAN_DIR := .build/asan
PY_INCLUDE = $$($(BIN)/python -c "import sysconfig; print(sysconfig.get_paths()['include'])")
EXT_SUFFIX = $$($(BIN)/python -c "import sysconfig; print(sysconfig.get_config_var('EXT_SUFFIX'))")
test-native-asan: native
	rm -rf $(ASAN_DIR) && cp -r $(NATIVE_DIR) $(ASAN_DIR)
	gcc -shared -fPIC -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined \
	  -std=c11 -I$(PY_INCLUDE) runtime-image/src/modelserve/_jsontensor.c -o $(ASAN_DIR)/modelserve/_jsontensor$(EXT_SUFFIX)
	LD_PRELOAD="$$(gcc -print-file-name=libasan.so):$$(gcc -print-file-name=libubsan.so)" ASAN_OPTIONS=detect_leaks=0 \
	  PYTHONMALLOC=malloc MODELSERVE_EXPECT_COMPILED=1 PYTHONPATH=$(CURDIR)/$(ASAN_DIR) \
	  $(BIN)/pytest -q -p no:warnings tests/runtime/test_jsontensor.py tests/runtime/test_protocol_v2.py

$(KSERVE_VENV)/.stamp: runtime-image/runtime.mk
	$(PY) -m venv $(KSERVE_VENV)
	$(KSERVE_VENV)/bin/pip install -q --upgrade pip
	$(KSERVE_VENV)/bin/pip install -q torch==2.13.0 'kserve==0.21.*'
	touch $@

kserve-venv: $(KSERVE_VENV)/.stamp

## Raw forward vs modelserve (compiled and pure Python) vs KServe 0.21: wrk on core 0; servers on core 1, then on
## both cores (bench.py).
WRK_INSTALL = command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk) || \
	  (sudo apt-get update -qq && sudo apt-get install -y -qq wrk)
bench-runtime: setup native kserve-venv
	@$(WRK_INSTALL)
	$(BIN)/python runtime-image/bench/bench.py --kserve-python $(KSERVE_VENV)/bin/python

## The same with the model on a CUDA GPU, for a machine with one and at least 12 CPUs: servers on CPUs 2-5, wrk
## on 8-11, plus the server in half precision (docs/runtime.md, "GPU").
bench-runtime-gpu: setup native kserve-venv
	@$(WRK_INSTALL)
	$(BIN)/python runtime-image/bench/bench.py --device cuda --kserve-python $(KSERVE_VENV)/bin/python

## The server's own CPU cost per inference request, in process and without sockets (bench/overhead.py), for the
## pure-Python install and the compiled build.
bench-overhead: setup native
	for build in pure compiled; do \
	  path=$$([ $$build = compiled ] && echo $(CURDIR)/$(NATIVE_DIR)); echo "--- $$build"; \
	  for args in "binary --stub-model" "json --stub-model" "binary --stub-model --fast-path false" "binary"; do \
	    PYTHONPATH=$$path taskset -c $$(( $$(nproc) - 1 )) $(BIN)/python runtime-image/bench/overhead.py $$args \
	      || exit 1; done; done

# TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu builds a CPU-only image (about 1.5 GB instead of 5.5).
runtime-image:
	docker build $(if $(TORCH_INDEX_URL),--build-arg TORCH_INDEX_URL=$(TORCH_INDEX_URL)) -t $(RUNTIME_IMAGE) runtime-image

## Build the image from its Dockerfile with buildah (no Docker engine needed) on a stand-in for its base image, and
## run it with podman as the operator's pod runs it and as `docker run` does (root; runtime-image/image_check.py).
image-check: setup
	$(BIN)/python runtime-image/image_check.py
